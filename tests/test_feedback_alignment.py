"""The feedback-alignment family (untied_plugins.feedback_alignment): each method's defining
property on the built-in models' layers, the tied twin, training through the host with the
alignment measurements, and the host's generic per-module measurements (toy plugin)."""

from __future__ import annotations

import copy
import math

import measurement_plugin
import polars as pl
import pytest
import torch
from torch import nn
from untied_plugins.feedback_alignment.layers import FeedbackConv2d, FeedbackLinear

from bench_core.execution.runner import build_session, execute_task, run_plan
from bench_core.interfaces import RunContext, module_measurements
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand

FA = {"name": "feedback_alignment"}
DFA = {"name": "direct_feedback_alignment"}


def sign_sym(magnitude: str) -> dict:
    return {"name": "sign_symmetry", "magnitude": magnitude}


def spec(reparam: dict | None, model: dict | None = None, **trainer) -> dict:
    entry = {"label": "x", **({"overrides": {"reparametrization": reparam}} if reparam else {})}
    return {"title": "fa", "entries": [entry], "defaults": {
        "dataset": {"name": "digits", "train_subset": 300, "normalize": "unit"},
        "model": model or {"name": "mlp", "hidden": [16, 12]},
        "activation": {"name": "tanh"}, "rule": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "trainer": {"name": "backprop", "epochs": 2, "batch_size": 32, **trainer}}}


def session_for(host, reparam, model=None):
    name, parsed = parse_spec(spec(reparam, model), stem="fa")
    task = expand(host, name, parsed).tasks[0]
    return build_session(host, task, RunContext(seed=task.seed, device=torch.device("cpu")))


def feedback_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (FeedbackLinear, FeedbackConv2d))]


def input_gradient(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    layer(x).backward(grad)
    return x.grad


def check_backward_weight(layer, expected: torch.Tensor, x: torch.Tensor) -> None:
    """The gradient ``layer`` sends to its input is ``W``'s transposed op with ``expected`` in
    ``W``'s place, and it does not change when ``W`` does (the backward never reads ``W``
    beyond what ``expected`` takes from it)."""
    out = layer(x)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    got = input_gradient(layer, x, grad)
    if isinstance(layer, FeedbackLinear):
        want = grad @ expected
    else:
        want = torch.nn.grad.conv2d_input(x.shape, expected, grad, layer.stride, layer.padding)
    torch.testing.assert_close(got, want)


# ---- defining properties ----------------------------------------------------------------------
@pytest.mark.parametrize("model", [{"name": "mlp", "hidden": [16, 12]},
                                   {"name": "cnn", "channels": [3, 4], "hidden": 8},
                                   {"name": "lenet5"}])
def test_feedback_alignment_sends_the_error_through_B_never_W(untied_host, model):
    session = session_for(untied_host, FA, model)
    net, twin = session.build_model(), session.build_model(tied=True)
    x = session.data.x_train[:5]
    torch.testing.assert_close(net(x), twin(x))           # the forward is the model's
    layers = feedback_layers(net)
    assert len(layers) == sum(type(m) in (nn.Linear, nn.Conv2d) for m in twin.modules())
    assert not feedback_layers(twin)                       # the tied twin keeps W^T
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0].detach()))
             for m in layers]
    net(x)
    for h in hooks:
        h.remove()
    for layer in layers:
        B = layer.feedback.matrix
        assert B.shape == layer.weight.shape and not torch.equal(B, layer.weight.detach())
        check_backward_weight(layer, B, inputs[layer])
        before = input_gradient(layer, inputs[layer], torch.ones_like(layer(inputs[layer])))
        with torch.no_grad():
            layer.weight.mul_(-3.0).add_(1.0)              # any other W: same input gradient
        after = input_gradient(layer, inputs[layer], torch.ones_like(layer(inputs[layer])))
        torch.testing.assert_close(before, after)
    # weight gradients stay the local ones: delta^T x (checked against autograd on the twin)
    grad = torch.randn(net(x).shape)
    w_fa = torch.autograd.grad((net(x) * grad).sum(), layers[-1].weight)[0]
    twin.load_state_dict(net.state_dict(), strict=False)
    last = [m for m in twin.modules() if type(m) in (nn.Linear, nn.Conv2d)][-1]
    w_bp = torch.autograd.grad((twin(x) * grad).sum(), last.weight)[0]
    torch.testing.assert_close(w_fa, w_bp)                 # the top layer's update is BP's


def test_the_same_B_for_every_build_and_a_different_one_per_layer(untied_host):
    session = session_for(untied_host, FA)
    first, second = session.build_model(), session.build_model()
    for a, b in zip(feedback_layers(first), feedback_layers(second)):
        assert torch.equal(a.feedback.matrix, b.feedback.matrix)
    bound = 1 / math.sqrt(64)
    assert feedback_layers(first)[0].feedback.matrix.abs().max() <= bound


@pytest.mark.parametrize("magnitude", ["uniform", "batchwise_random", "fixed_random"])
@pytest.mark.parametrize("model", [{"name": "mlp", "hidden": [16]}, {"name": "lenet5"}])
def test_sign_symmetry_uses_sign_W_with_the_stated_magnitudes(untied_host, magnitude, model):
    session = session_for(untied_host, sign_sym(magnitude), model)
    net = session.build_model()
    layer = feedback_layers(net)[0 if model["name"] == "mlp" else 1]
    fan_in = layer.weight[0].numel()
    bound = 1 / math.sqrt(fan_in)
    sign = torch.sign(layer.weight.detach())
    n_out = layer.weight.shape[0]
    if isinstance(layer, FeedbackLinear):        # one-hot errors read B's rows one by one
        x = torch.randn(n_out, layer.in_features)
        rows = [input_gradient(layer, x, torch.eye(n_out))]
        rows.append(input_gradient(layer, x, torch.eye(n_out)))
    else:                                        # B itself, read back through conv2d_input
        rows = [layer.feedback.backward_weight(layer.weight.detach()) for _ in range(2)]
        if magnitude != "batchwise_random":
            check_backward_weight(layer, rows[0], torch.randn(2, layer.in_channels, 10, 10))
    for B in rows:
        assert torch.equal(torch.sign(B), sign)                # sign(W), always
        assert B.abs().max() <= bound
    if magnitude == "uniform":
        torch.testing.assert_close(rows[0].abs(), torch.full_like(sign, bound / math.sqrt(3)))
    elif magnitude == "fixed_random":
        assert torch.equal(rows[0], rows[1])                   # drawn once, kept
        assert rows[0].abs().unique().numel() > 1              # a random magnitude
        assert torch.equal(rows[0].abs(), layer.feedback.magnitude)
    else:
        assert not torch.equal(rows[0], rows[1])               # redrawn every batch
        assert rows[0].abs().mean() == pytest.approx(bound / 2, rel=0.2)


def test_direct_feedback_alignment_hidden_updates_do_not_depend_on_the_layers_above(
        untied_host):
    """With the output error held fixed (a loss linear in the outputs), the first hidden
    layer's update is ((B e) o f'(a_1))^T x (Noekland 2016) whatever the weights above;
    under back-propagation it changes with them."""
    session = session_for(untied_host, DFA)
    net, twin = session.build_model(), session.build_model(tied=True)
    x = session.data.x_train[:8]
    error = torch.randn(8, 10, generator=torch.Generator().manual_seed(3))
    first, second, third = feedback_layers(net)

    def first_update(model, w1) -> torch.Tensor:
        return torch.autograd.grad((model(x) * error).sum(), w1)[0]

    dfa_before = first_update(net, first.weight)
    bp_before = first_update(twin, twin[1].weight)
    a1 = x @ first.weight.t() + first.bias
    B = second.feedback.matrix                              # (16 inputs of layer 2, 10 outputs)
    delta = (error @ B.t()) * (1 - torch.tanh(a1) ** 2)
    torch.testing.assert_close(dfa_before, delta.t() @ x)
    with torch.no_grad():
        for w in (second.weight, third.weight, twin[3].weight, twin[5].weight):
            w.mul_(-2.0)
    torch.testing.assert_close(first_update(net, first.weight), dfa_before)
    assert not torch.allclose(first_update(twin, twin[1].weight), bp_before)


def test_direct_feedback_alignment_on_a_convolutional_model(untied_host):
    session = session_for(untied_host, DFA, {"name": "lenet5"})
    net = session.build_model()
    x = session.data.x_train[:4]
    error = torch.randn(4, 10)
    layers = feedback_layers(net)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.setdefault(m, a[0])) for m in layers]
    out = net(x)
    for h in hooks:
        h.remove()
    conv2 = layers[1]
    grad_in = torch.autograd.grad((out * error).sum(), seen[conv2], retain_graph=True)[0]
    B = conv2.feedback.matrix
    torch.testing.assert_close(grad_in, (error @ B.t()).view(grad_in.shape))
    assert layers[0].feedback.matrix is None               # the input needs no error


def test_derived_layers_are_refused(untied_host):
    session = session_for(untied_host, FA, {"name": "mlp", "hidden": [8],
                                            "binary_weights": True})
    with pytest.raises(ValueError, match="derived type"):
        session.build_model()


# ---- through the host: training, measurements, diagnostic ------------------------------------
@pytest.mark.parametrize("reparam", [FA, DFA, sign_sym("uniform"),
                                     sign_sym("batchwise_random"), sign_sym("fixed_random")])
def test_every_method_trains_and_reports_its_alignment(untied_host, reparam):
    name, parsed = parse_spec(spec(reparam, direction_diagnostic=True, epochs=8), stem="fa")
    row = execute_task(expand(untied_host, name, parsed).tasks[0], host=untied_host)
    assert row["status"] == "ok", row.get("error")
    assert row["m_test_accuracy"] > 0.5                    # 10 classes: chance is 0.1
    assert row["m_direction_cosine"] < 0.999               # not back-propagation
    curves = {k.removeprefix("curve_"): v for k, v in row.items() if k.startswith("curve_")}
    assert len(curves["cos/1"]) == 8
    if reparam is DFA:                                     # B_l has no W shape: no angle
        assert "m_alignment_angle" not in row and "alignment_angle/3" not in curves
        return
    assert set(curves) >= {"alignment_angle/3", "alignment_angle/5", "norm_ratio/3",
                           "alignment_angle"}
    assert "alignment_angle/1" not in curves      # the first layer's B never carries an error
    assert row["m_alignment_angle"] == curves["alignment_angle"][-1]
    assert row["m_norm_ratio"] > 0
    if reparam is FA:       # W comes to align with B (Lillicrap et al.): from ~90 degrees down
        assert 80 < curves["alignment_angle"][0] and row["m_alignment_angle"] < 80
    else:                   # sign(W) o M is never more than 90 degrees from W
        assert row["m_alignment_angle"] < 60


def test_grouped_runs_equal_lone_runs(untied_host, tmp_path, monkeypatch):
    """On a plain nn.Sequential (the models the grouped form stacks) the dense feedback layers
    stack (FeedbackLinear.stack); DFA's do not (one output error per model) and train alone."""
    import stack_plugin

    untied_host.add_plugin(stack_plugin, "stack")
    stacked: list[int] = []
    original = FeedbackLinear.stack.__func__
    monkeypatch.setattr(FeedbackLinear, "stack", classmethod(
        lambda cls, layers: stacked.append(len(layers)) or original(cls, layers)))
    base = spec(None, {"name": "toy_plain_mlp", "hidden": 16}, epochs=2)
    base["seeds"] = 2
    base["entries"] = [{"label": "bp"}] + [
        {"label": n, "overrides": {"reparametrization": r}}
        for n, r in [("fa", FA), ("dfa", DFA), ("usf", sign_sym("uniform")),
                     ("brsf", sign_sym("batchwise_random")), ("frsf", sign_sym("fixed_random"))]]

    def records(folder, group):
        name, parsed = parse_spec(copy.deepcopy(base), stem="fg")
        run_plan(expand(untied_host, name, parsed), folder, host=untied_host, progress=False,
                 group=group)
        frame = pl.concat([pl.read_parquet(p) for p in record_files(folder / "fg")],
                          how="diagonal_relaxed").sort("entry", "seed_index")
        return {c: frame[c].to_list() for c in ("entry", "m_test_accuracy", "m_test_loss",
                                                  "m_alignment_angle")}

    grouped = records(tmp_path / "g", True)
    assert stacked == [2, 2] * 4                  # FA and three sign variants, 2 layers each
    alone = records(tmp_path / "a", False)
    assert grouped["m_test_accuracy"] == alone["m_test_accuracy"]
    assert grouped["m_test_loss"] == pytest.approx(alone["m_test_loss"], rel=1e-5)
    angles = [(a, b) for a, b in zip(grouped["m_alignment_angle"], alone["m_alignment_angle"])
              if a is not None or b is not None]
    assert len(angles) == 8                       # BP and DFA report none
    assert [a for a, _ in angles] == pytest.approx([b for _, b in angles], rel=1e-4)
    by_entry = dict(zip(zip(grouped["entry"], range(12)), grouped["m_test_loss"]))
    bp = [v for (e, _), v in by_entry.items() if e == "bp"]
    for entry in ("fa", "dfa", "usf", "brsf", "frsf"):
        assert [v for (e, _), v in by_entry.items() if e == entry] != bp


# ---- the host's per-module measurements (generic; toy plugin) ---------------------------------
def test_module_measurements_by_hand():
    class Reporter(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def epoch_measurements(self):
            return {"m": torch.tensor(self.value)}

    model = nn.Sequential(Reporter(1.0), nn.ReLU(), Reporter(float("nan")), Reporter(5.0))
    got = {k: float(v) for k, v in module_measurements(model).items()}
    assert got["m/0"] == 1.0 and got["m/3"] == 5.0 and math.isnan(got["m/2"])
    assert got["m"] == 3.0                                  # the mean leaves NaNs out
    assert module_measurements(nn.Sequential(nn.Linear(2, 2))) == {}


def test_modules_report_measurements_into_the_curves(untied_host, tmp_path):
    untied_host.add_plugin(measurement_plugin, "measurement")
    name, parsed = parse_spec(spec({"name": "toy_weight_norms"}, epochs=3), stem="ms")
    run_plan(expand(untied_host, name, parsed), tmp_path, host=untied_host, progress=False)
    frame = pl.concat([pl.read_parquet(p) for p in record_files(tmp_path / "ms")],
                      how="diagonal_relaxed")
    row = frame.row(0, named=True)
    assert row["status"] == "ok"                           # a NaN measurement is no divergence
    per_layer = [c for c in frame.columns if c.startswith("curve_weight_norm/")]
    assert sorted(per_layer) == ["curve_weight_norm/1", "curve_weight_norm/3",
                                 "curve_weight_norm/5"]
    assert len(row["curve_weight_norm/1"]) == 3
    assert row["m_weight_norm"] == pytest.approx(
        sum(row[c][-1] for c in per_layer) / 3, rel=1e-6)


def test_plot_draws_the_curves_of_a_specs_columns(untied_host, tmp_path):
    """A measurement a spec lists in ``columns`` gets its per-epoch curve plot."""
    import tomli_w

    from bench_core.cli import main

    untied_host.add_plugin(measurement_plugin, "measurement")
    raw = {**spec({"name": "toy_weight_norms"}, epochs=3), "name": "ms",
           "columns": ["weight_norm"]}
    spec_file = tmp_path / "ms.toml"
    spec_file.write_text(tomli_w.dumps(raw))
    name, parsed = parse_spec(raw, stem="ms")
    run_plan(expand(untied_host, name, parsed), tmp_path / "results", host=untied_host,
             progress=False)
    code = main(["plot", str(spec_file), "--results", str(tmp_path / "results"), "--output",
                 str(tmp_path / "plots")])
    assert code == 0
    assert (tmp_path / "plots" / "curves-weight-norm.png").is_file()


@pytest.mark.parametrize("reparam", [FA, sign_sym("fixed_random"), sign_sym("uniform")])
def test_xavier_feedback_init_draws_at_glorots_bound(untied_host, reparam):
    """``init = "xavier_uniform"`` (BioTorch's): B, |M| or the uniform magnitude at
    sqrt(6 / (fan_in + fan_out)), fan-out counting a conv's kernel area."""
    session = session_for(untied_host, {**reparam, "init": "xavier_uniform"}, {"name": "lenet5"})
    for layer in feedback_layers(session.build_model()):
        w = layer.weight
        fan_out = w.shape[0] * (w[0][0].numel() if w.dim() > 2 else 1)
        bound = math.sqrt(6 / (w[0].numel() + fan_out))
        B = layer.feedback.backward_weight(w.detach()).abs()
        if reparam.get("magnitude") == "uniform":
            torch.testing.assert_close(B, torch.full_like(B, bound / math.sqrt(3)))
        else:
            assert B.max() <= bound and B.max() > 0.9 * bound   # fills U(0, bound)


def test_xavier_feedback_init_of_direct_feedback_alignment(untied_host):
    session = session_for(untied_host, {**DFA, "init": "xavier_uniform"})
    net = session.build_model()
    x = session.data.x_train[:8]
    net(x).sum().backward()                     # B_l is drawn at the first backward
    hidden = feedback_layers(net)[1]            # 16 -> 12: its input is 16 wide, 10 outputs
    B = hidden.feedback.matrix
    assert B.shape == (16, 10)
    bound = math.sqrt(6 / (16 + 10))
    assert B.abs().max() <= bound and B.abs().max() > 0.8 * bound
