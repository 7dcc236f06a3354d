"""Weight re-parametrisations (Troiano et al. Section 2.2, eqs. 13-15): each one's defining
property on dense and convolution weights, before and after training with sgd and adam; the
host applies a run's ``reparametrization`` to every model it builds, before the rule, whatever
the model and rule; combinations that cannot work fail with a clear message."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bench_core.errors import SpecError
from bench_core.execution.runner import execute_task
from bench_core.interfaces import RunContext
from bench_core.plugins import get_host
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand, resolve_component

CTX = RunContext(seed=0, device=torch.device("cpu"))


def apply(table: dict, model: nn.Module) -> nn.Module:
    comp, params = resolve_component(get_host(), "reparametrization", table)
    return comp.factory(params, model=model, ctx=CTX)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
                         nn.ReLU(), nn.Linear(5, 3))


def effective_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def rows(w: torch.Tensor, over: str) -> torch.Tensor:
    """(units, fan-in) view for per-output statistics, (1, all) for the whole tensor."""
    return w.reshape(w.shape[0], -1) if over == "output" else w.reshape(1, -1)


def check_property(name: str, over: str, model: nn.Module) -> None:
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        w = rows(m.weight.detach(), over)
        if name == "weight_normalization":
            latent = m.parametrizations.weight
            g, v = latent.original0.detach(), latent.original1.detach()
            torch.testing.assert_close(w.norm(dim=1), g.reshape(-1).abs())
            direction = rows(v, over) / rows(v, over).norm(dim=1, keepdim=True)
            torch.testing.assert_close(w / w.norm(dim=1, keepdim=True), direction * g.reshape(
                -1, 1).sign())
        elif name == "weight_standardization":
            torch.testing.assert_close(w.mean(dim=1), torch.zeros(len(w)), atol=1e-6, rtol=0)
            torch.testing.assert_close(w.var(dim=1, correction=0), torch.ones(len(w)),
                                       atol=1e-3, rtol=0)
        else:
            torch.testing.assert_close(w.mean(dim=1), torch.zeros(len(w)), atol=1e-6, rtol=0)
        assert m.bias is not None and m.bias.dim() == 1  # biases are left alone


NAMES = ["weight_normalization", "weight_standardization", "weight_centralization"]


@pytest.mark.parametrize("over", ["output", "tensor"])
@pytest.mark.parametrize("name", NAMES)
def test_defining_property_holds_at_start(name, over):
    before = [w.detach().clone() for w in effective_weights(small_net())]
    model = apply({"name": name, "over": over}, small_net())
    check_property(name, over, model)
    if name == "weight_normalization":  # same starting point: V = W, g = ||W||
        for w, w0 in zip(effective_weights(model), before):
            torch.testing.assert_close(w.detach(), w0)


@pytest.mark.parametrize("rule", [{"name": "sgd", "lr": 0.05, "momentum": 0.9},
                                  {"name": "adam", "lr": 0.01}], ids=["sgd", "adam"])
@pytest.mark.parametrize("name", NAMES)
def test_training_updates_the_latent_weights_and_keeps_the_property(name, rule):
    model = apply({"name": name}, small_net())
    comp, params = resolve_component(get_host(), "rule", rule)
    opt = comp.factory(params, model=model, ctx=CTX)
    latent = {n for n, _ in model.named_parameters()}
    assert any("parametrizations.weight.original" in n for n in latent)
    assert not any(n.endswith(".weight") for n in latent)  # the rule sees only latent weights
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(3, (64,), generator=gen)
    start = [w.detach().clone() for w in effective_weights(model)]
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert any(not torch.equal(w.detach(), s) for w, s in zip(effective_weights(model), start))
    check_property(name, "output", model)


def run_spec(host, reparam: dict, model: dict, trainer: dict | None = None) -> dict:
    raw = {"title": "r", "seeds": [0], "defaults": {
        "dataset": {"name": "digits", "train_subset": 300}, "model": model,
        "activation": {"name": "relu"}, "rule": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "trainer": trainer or {"name": "backprop", "epochs": 12, "batch_size": 32}},
        "entries": [{"label": "plain"},
                    {"label": "reparam", "overrides": {"reparametrization": reparam}}]}
    name, spec = parse_spec(raw, stem="r")
    return {t.entry: execute_task(t, host) for t in expand(host, name, spec).tasks}


@pytest.mark.parametrize("model", [{"name": "mlp", "hidden": [32]},
                                   {"name": "lenet5", "pool": "max"}], ids=["mlp", "lenet5"])
@pytest.mark.parametrize("name", NAMES)
def test_runs_compose_with_any_model_through_the_spec(untied_host, name, model):
    rows_ = run_spec(untied_host, {"name": name}, model)
    for entry, row in rows_.items():
        assert row["status"] == "ok", (entry, row["error"])
        assert row.get("p_reparametrization.name") == (name if entry == "reparam" else None)
        curve = json.loads(row["curves_json"])["train_loss"]
        assert curve[-1] < curve[0]
    if model["name"] == "mlp":  # (standardised LeNet5 weights need more than 12 epochs here)
        assert rows_["reparam"]["value"] > 0.5  # 10 classes: far above chance
    assert rows_["reparam"]["curves_json"] != rows_["plain"]["curves_json"]


def test_incompatible_combinations_fail_with_a_clear_message(untied_host):
    binary = run_spec(untied_host, {"name": "weight_centralization"},
                      {"name": "mlp", "hidden": [8], "binary_weights": True})["reparam"]
    assert binary["status"] == "failed" and "BinaryConnect" in binary["error"]
    dual = run_spec(untied_host, {"name": "weight_normalization"}, {"name": "mlp", "hidden": [8]},
                    {"name": "online", "iterations": 20, "eval_every": 10,
                     "loss": "cross_entropy"})
    assert dual["reparam"]["status"] == "ok"  # sgd under the online trainer composes
    raw = {"title": "d", "seeds": [0], "defaults": {
        "dataset": {"name": "digits", "train_subset": 50}, "model": {"name": "mlp"},
        "activation": {"name": "relu"}, "rule": {"name": "dual_weight"},
        "reparametrization": {"name": "weight_normalization"},
        "trainer": {"name": "backprop", "epochs": 1}}, "entries": [{"label": "x"}]}
    name, spec = parse_spec(raw, stem="d")
    row = execute_task(expand(untied_host, name, spec).tasks[0], untied_host)
    assert row["status"] == "failed" and "re-parametrised" in row["error"]
    with pytest.raises(SpecError, match="reparametrization.over"):
        resolve_component(get_host(), "reparametrization",
                          {"name": "weight_normalization", "over": "row"})
