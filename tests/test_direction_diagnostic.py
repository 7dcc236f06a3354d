"""The backprop trainer's direction diagnostic (Troiano et al. Propositions 1-3: a surrogate
changes the magnitude, not the direction, of the weight updates) and the RunContext services it
relies on (``preserve_random_state``, ``log_epoch(diagnostics=...)``)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.backprop.direction import DirectionProbe, compare_directions
from untied_plugins.troiano.surrogates import ConstantParams, constant

from bench_core.errors import Diverged
from bench_core.execution.runner import execute_task
from bench_core.hookspecs import hookimpl
from bench_core.interfaces import (
    DataBundle,
    DataInfo,
    NativeActivation,
    RunContext,
    TrainingSession,
)
from bench_core.plugins import PluginHost, get_host
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def run(host: PluginHost | None = None, entries: list[dict] | None = None, **overrides
        ) -> dict | list[dict]:
    """One run through the host: a small logistic MLP on digits, diagnostic on (with
    ``entries``: one run per entry, all in the same cell, so with the same seed)."""
    defaults = {
        "dataset": {"name": "digits", "train_subset": 300},
        "model": {"name": "mlp", "hidden": [16]},
        "activation": {"name": "logistic"},
        "surrogate": {"name": "constant"},
        "rule": {"name": "sgd", "lr": 0.2},
        "trainer": {"name": "backprop", "epochs": 2, "batch_size": 32,
                    "direction_diagnostic": True},
    }
    for key, value in overrides.items():
        defaults[key] = {**defaults[key], **value} if key == "trainer" else value
    name, spec = parse_spec({"title": "direction", "entries": entries or [{"label": "x"}],
                             "defaults": defaults})
    host = host or get_host()
    rows = [execute_task(task, host=host) for task in expand(host, name, spec).tasks]
    return rows if entries else rows[0]


# ---- the measurement itself -------------------------------------------------------------------
def test_cosine_and_sign_agreement_by_hand():
    surrogate = {"a": torch.tensor([[1.0, -2.0], [0.0, 0.0]]), "b": torch.ones(2, 2)}
    tied = {"a": torch.tensor([[2.0, -1.0], [0.0, 3.0]]), "b": torch.zeros(2, 2)}
    m = compare_directions(surrogate, tied)
    assert float(m["cos/a"]) == pytest.approx(4 / (math.sqrt(5) * math.sqrt(14)))
    assert float(m["sign/a"]) == 0.75  # +/+, -/-, 0/0 agree; 0/3 does not
    assert math.isnan(float(m["cos/b"]))  # tied gradient all zero: direction undefined
    assert float(m["sign/b"]) == 0.0
    assert float(m["direction_cosine"]) == pytest.approx(float(m["cos/a"]))  # finite layers only
    assert float(m["direction_sign_agreement"]) == pytest.approx(0.375)


def toy_session(seed: int = 0) -> TrainingSession:
    """A tanh MLP with BatchNorm and a constant-1 surrogate, built like the runner builds it."""
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 5, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    data = DataBundle(DataInfo("toy", (5,), 3), x, y, x[:8], y[:8])
    tanh = ACTIVATIONS["tanh"][1]

    def build_model(tied: bool = False) -> nn.Module:
        torch.manual_seed(1)
        act = NativeActivation(tanh) if tied else constant(ConstantParams(), activation=tanh, ctx=ctx)
        return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), act, nn.Linear(6, 3))

    return TrainingSession(ctx=ctx, data=data, build_model=build_model,
                           build_rule=lambda model: None, spec={})


def test_probe_matches_plain_backprop_and_leaves_the_model_untouched():
    session = toy_session()
    model = session.build_model()
    with torch.no_grad():  # move away from the initial weights the probes were built with
        for w in model.parameters():
            w.add_(0.1)
    model.train()
    loss_fn = nn.functional.cross_entropy
    probe = DirectionProbe(session, loss_fn, batch_size=16)
    before = copy.deepcopy(model.state_dict())
    counters = copy.deepcopy(session.ctx.counters)
    m = probe.measure(model)

    # The run model: same weights, same BatchNorm running statistics, no gradients, no counts.
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(w.grad is None for w in model.parameters())
    assert session.ctx.counters == counters

    # By hand: back-propagate through copies of the run model and of a tied model.
    tied = session.build_model(tied=True)
    tied.load_state_dict(before)
    x, y = session.data.x_train[:16], session.data.y_train[:16]
    grads = {}
    for label, net in (("surrogate", copy.deepcopy(model)), ("tied", tied)):
        net.train()
        loss_fn(net(x), y).backward()
        grads[label] = {name: net[int(name)].weight.grad for name in ("0", "3")}
    for name in ("0", "3"):
        a, b = grads["surrogate"][name].flatten(), grads["tied"][name].flatten()
        assert float(m[f"cos/{name}"]) == pytest.approx(float(a @ b / (a.norm() * b.norm())),
                                                        abs=1e-5)
    assert float(m["cos/3"]) == pytest.approx(1.0, abs=1e-5)  # no activation after layer 3
    assert 0 < float(m["cos/0"]) < 0.9999


def test_preserve_random_state_restores_and_forgets_generators():
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    stream = ctx.generator("jamming")
    torch.manual_seed(9)
    expected_stream = torch.rand(4, generator=copy.deepcopy(stream))
    expected_global = torch.rand(4)
    torch.manual_seed(9)
    with ctx.preserve_random_state():
        torch.rand(10, generator=stream)
        torch.rand(10, generator=ctx.generator("fresh"))
        torch.rand(10)
    assert torch.equal(torch.rand(4, generator=ctx.generator("jamming")), expected_stream)
    assert torch.equal(torch.rand(4), expected_global)
    fresh = RunContext(seed=0, device=torch.device("cpu")).generator("fresh")
    assert torch.equal(torch.rand(3, generator=ctx.generator("fresh")), torch.rand(3, generator=fresh))


def test_log_epoch_skips_divergence_check_only_for_diagnostics():
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    values = ctx.log_epoch(1, diagnostics={"cos/0"}, loss=torch.tensor(0.5),
                           **{"cos/0": torch.tensor(float("nan"))})
    assert math.isnan(values["cos/0"]) and math.isnan(ctx.curves["cos/0"][0])
    with pytest.raises(Diverged, match="loss"):
        ctx.log_epoch(2, diagnostics={"cos/0"}, loss=float("nan"), **{"cos/0": 1.0})


# ---- through the host -------------------------------------------------------------------------
def test_tied_surrogate_has_cosine_and_sign_agreement_one():
    row = run(surrogate={"name": "tied"})
    assert row["status"] == "ok", row["error"]
    layers = [k for k in row if k.startswith("curve_cos/")]
    assert layers == ["curve_cos/1", "curve_cos/3"]
    for key in layers + [k for k in row if k.startswith("curve_sign/")]:
        assert row[key] == pytest.approx([1.0, 1.0], abs=1e-5), key
    assert row["m_direction_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert row["m_direction_sign_agreement"] == 1.0


def test_constant_surrogate_keeps_direction_roughly_but_not_exactly():
    row = run()
    assert row["status"] == "ok", row["error"]
    assert 0 < row["m_direction_cosine"] < 1
    assert all(0 < c < 0.9999 for c in row["curve_cos/1"])  # the hidden layer's direction moves
    assert 0.5 < row["m_direction_sign_agreement"] <= 1
    assert row["curve_direction_cosine"][-1] == row["m_direction_cosine"]


def test_zero_tied_gradient_gives_nan_cosine_without_divergence():
    row = run(dataset={"name": "ones", "dim": 10, "n_samples": 200}, model={"name": "suc"},
              activation={"name": "step"}, trainer={"loss": "mse"})
    assert row["status"] == "ok", row["error"]
    assert all(math.isnan(c) for c in row["curve_cos/1"])
    assert all(math.isnan(c) for c in row["curve_direction_cosine"])
    assert "m_direction_cosine" not in row  # no finite layer: no final mean
    assert 0 <= row["m_direction_sign_agreement"] <= 1


class _RandomBackward(torch.autograd.Function):
    """Forward f; backward multiplies by U[0, 1) from a run generator (draws in every pass)."""

    @staticmethod
    def forward(x, f, generator):
        return f(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.generator = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        noise = torch.rand(grad.shape, generator=ctx.generator, device=grad.device)
        return grad * noise, None, None


class _RandomSurrogate(nn.Module):
    def __init__(self, activation, generator):
        super().__init__()
        self.activation, self.generator = activation, generator

    def forward(self, x):
        return _RandomBackward.apply(x, self.activation.native, self.generator)


def random_backward(params, *, activation, ctx):
    """g(x) = u ~ U[0, 1) from the run's ``test_jam`` stream (test plugin)."""
    return _RandomSurrogate(activation, ctx.generator("test_jam"))


class RandomSurrogatePlugin:
    @hookimpl
    def register_surrogates(self, register):
        register("test_random_backward", random_backward)


def test_diagnostic_does_not_change_training():
    """Same seed with and without the diagnostic: identical curves and pass counts, even with a
    surrogate and a rule that draw from the run's random streams."""
    host = PluginHost()
    host.load_entry_points()
    host.add_plugin(RandomSurrogatePlugin(), "test_random_surrogate")
    common = dict(surrogate={"name": "test_random_backward"},
                  rule={"name": "sgd", "lr": 0.2, "grad_noise_std": 0.01})
    with_diag, without = run(host, entries=[
        {"label": "with"},
        {"label": "without", "overrides": {"trainer.direction_diagnostic": False}},
    ], **common)
    assert with_diag["status"] == without["status"] == "ok", with_diag["error"]
    assert with_diag["seed"] == without["seed"]
    for key in ("curve_train_loss", "curve_test_loss", "curve_test_accuracy"):
        assert with_diag[key] == without[key], key
    for key in ("forward_passes", "backward_passes", "forward_samples", "backward_samples"):
        assert with_diag[key] == without[key], key
    assert "curve_direction_cosine" not in without
    assert 0 < with_diag["m_direction_cosine"] < 1
