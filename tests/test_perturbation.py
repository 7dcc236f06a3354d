"""The perturbation trainers (plugin ``perturbation``, docs/methods/perturbation.md): the forward
gradient is unbiased and comes from forward mode alone; SPSA/MeZO perturbs in place, regenerates
its direction from the step's seed, restores the parameters, steps along the two-point estimate
with the run's SGD settings, and holds no parameter-sized buffer; both conform to the kit and
learn digits."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from untied_plugins.perturbation import forward_gradient as fg
from untied_plugins.perturbation.spsa import (
    SGDSettings,
    SPSAParams,
    SPSATrainer,
    draw,
    perturb_,
)

from bench_core.interfaces import RunContext
from bench_core.kit.memory import LiveStorages
from bench_core.testing import assert_plugin_conforms


def ctx_on_cpu(seed: int = 0) -> RunContext:
    return RunContext(seed=seed, device=torch.device("cpu"))


# ---- forward gradient ------------------------------------------------------------------------
def quadratic():
    """f(theta) = 1/2 sum_k theta_k^T A_k theta_k - b_k . theta_k over two tensors, and its
    gradient, in float64."""
    gen = torch.Generator().manual_seed(1)
    shapes = {"w": (2, 3), "b": (4,)}
    theta = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    mats = {k: (lambda m: m @ m.T + torch.eye(len(m), dtype=torch.float64))(
        torch.randn(math.prod(s), math.prod(s), generator=gen, dtype=torch.float64))
        for k, s in shapes.items()}
    shifts = {k: torch.randn(math.prod(s), generator=gen, dtype=torch.float64)
              for k, s in shapes.items()}

    def f(params):
        return sum(0.5 * params[k].reshape(-1) @ mats[k] @ params[k].reshape(-1)
                   - shifts[k] @ params[k].reshape(-1) for k in params)

    grad = {k: (mats[k] @ theta[k].reshape(-1) - shifts[k]).reshape(theta[k].shape)
            for k in theta}
    return f, theta, grad


def test_the_forward_gradient_is_unbiased_on_a_quadratic():
    f, theta, grad = quadratic()
    gen = torch.Generator().manual_seed(0)
    draws = 2000
    total = {k: torch.zeros_like(v) for k, v in theta.items()}
    for _ in range(draws):
        _, estimate = fg.forward_gradient(f, theta, gen)
        for k in total:
            total[k] += estimate[k]
    squared_norm = sum(g.square().sum() for g in grad.values())
    for k, g in grad.items():
        # Var[(grad . v) v_i] = |grad|^2 + grad_i^2 for v ~ N(0, I): the mean's error within 5
        # standard errors, element by element
        stderr = ((squared_norm + g.square()) / draws).sqrt()
        assert ((total[k] / draws - g).abs() <= 5 * stderr).all(), (k, total[k] / draws, g)


def test_one_draw_is_the_directional_derivative_times_the_tangent():
    f, theta, grad = quadratic()
    gen = torch.Generator().manual_seed(3)
    tangent = fg.draw_tangent(theta, torch.Generator().manual_seed(3))
    loss, estimate = fg.forward_gradient(f, theta, gen)
    derivative = sum((grad[k] * tangent[k]).sum() for k in theta)
    assert loss == pytest.approx(float(f(theta)))
    for k in theta:
        torch.testing.assert_close(estimate[k], derivative * tangent[k])


def test_the_forward_gradient_trainer_uses_jvp_and_never_a_backward_pass(monkeypatch):
    calls = []
    real_jvp = fg.jvp
    monkeypatch.setattr(fg, "jvp", lambda *a, **k: calls.append(1) or real_jvp(*a, **k))
    monkeypatch.setattr(torch.Tensor, "backward", lambda *a, **k: pytest.fail("backward"))
    monkeypatch.setattr(torch.autograd, "backward", lambda *a, **k: pytest.fail("backward"))
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    trainer = fg.ForwardGradientTrainer(fg.ForwardGradientParams())
    trainer.task = "classification"
    session = SimpleNamespace(ctx=ctx_on_cpu(), build_rule=lambda m: torch.optim.SGD(
        m.parameters(), lr=0.1))
    trainer.prepare(session, model)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    saved = []  # what autograd would keep for a backward pass: nothing
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = trainer.step(model, x, y)
    assert calls == [1] and saved == [] and loss.grad_fn is None
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_a_surrogate_without_a_forward_mode_rule_is_refused_in_one_line():
    class BackwardOnly(torch.autograd.Function):  # a surrogate: no jvp rule
        @staticmethod
        def forward(x):
            return (x > 0).to(x.dtype)

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return grad

    class Step(nn.Module):
        def forward(self, x):
            return BackwardOnly.apply(x)

    model = nn.Sequential(nn.Linear(4, 8), Step(), nn.Linear(8, 3))
    trainer = fg.ForwardGradientTrainer(fg.ForwardGradientParams())
    trainer.task = "classification"
    trainer.prepare(SimpleNamespace(ctx=ctx_on_cpu(), build_rule=lambda m: torch.optim.SGD(
        m.parameters(), lr=0.1)), model)
    with pytest.raises(ValueError, match="a surrogate replaces only the backward pass"):
        trainer.step(model, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))


# ---- SPSA / MeZO -----------------------------------------------------------------------------
DIRECTIONS = ["gaussian", "rademacher"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_perturbation_is_regenerated_from_the_step_seed_in_place(direction):
    params = [torch.zeros(3, 4), torch.zeros(5)]
    storages = [p.data_ptr() for p in params]
    gen = torch.Generator().manual_seed(7)
    seed = gen.get_state()
    perturb_(params, gen, seed, 0.5, direction=direction)
    replay = torch.Generator().manual_seed(7)
    for p in params:  # exactly eps z, z drawn tensor by tensor from the seed
        assert torch.equal(p, 0.5 * draw(p, replay, direction))
    perturb_(params, gen, seed, -0.5, direction=direction)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in params)
    assert [p.data_ptr() for p in params] == storages  # the same storage: in place


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_large_tensor_is_perturbed_chunk_by_chunk_from_the_same_seed(direction):
    params = [torch.zeros(12), torch.zeros(3)]
    gen = torch.Generator().manual_seed(5)
    seed = gen.get_state()
    perturb_(params, gen, seed, 1.0, chunk_size=5, direction=direction)
    replay = torch.Generator()
    replay.set_state(seed)
    drawn = [draw(torch.zeros(n), replay, direction) for n in (5, 5, 2, 3)]
    assert torch.equal(torch.cat([*params]), torch.cat(drawn))
    perturb_(params, gen, seed, -1.0, chunk_size=5, direction=direction)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in params)


def spsa_trainer(model, *, loss="mse", task="regression", epsilon=1e-3, update="sgd",
                 chunk_size=2**18, direction="gaussian", **sgd):
    trainer = SPSATrainer(SPSAParams(loss=loss, epsilon=epsilon, update=update,
                                     chunk_size=chunk_size, direction=direction))
    trainer.task = task
    session = SimpleNamespace(ctx=ctx_on_cpu(), build_rule=lambda m: torch.optim.SGD(
        m.parameters(), **{"lr": 0.1, **sgd}))
    trainer.prepare(session, model)
    return trainer


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_parameters_come_back_after_the_two_evaluations_when_the_update_is_zero(direction):
    model = nn.Sequential(nn.Linear(30, 20), nn.Tanh(), nn.Linear(20, 1))
    trainer = spsa_trainer(model, epsilon=1e-3, direction=direction)
    before = [p.detach().clone() for p in model.parameters()]
    seed = trainer.gen.get_state()
    perturb_(trainer.params, trainer.gen, seed, 1e-3, direction=direction)
    perturb_(trainer.params, trainer.gen, seed, -2e-3, direction=direction)
    trainer.restore_and_update_(seed, torch.zeros(()))  # a zero estimate: no update
    replay = torch.Generator()
    replay.set_state(seed)
    for p, p0 in zip(model.parameters(), before):
        z = draw(p, replay, direction)
        # float rounding of +eps z, -2 eps z, +eps z: within 1.5 ulp of the largest magnitude
        # the element took (docs/methods/perturbation.md section 3)
        largest = p0.abs() + 2e-3 * z.abs()
        ulp = torch.finfo(torch.float32).eps * 2.0 ** torch.floor(torch.log2(largest))
        assert ((p.detach() - p0).abs() <= 1.5 * ulp).all()


@pytest.mark.parametrize("direction, dtype", [
    ("gaussian", torch.float64), ("rademacher", torch.float64), ("rademacher", torch.float32)])
def test_a_step_is_the_two_point_estimate_applied_by_sgd(direction, dtype):
    # the loss of a linear model under mse is quadratic in theta, so the central difference is
    # the directional derivative exactly (up to rounding): theta' = theta - lr (grad . z) z
    torch.manual_seed(0)
    model = nn.Linear(6, 2).to(dtype)
    x, y = torch.randn(8, 6, dtype=dtype), torch.randn(8, 2, dtype=dtype)
    trainer = spsa_trainer(model, epsilon=1e-2, lr=0.05, direction=direction)
    before = [p.detach().clone() for p in model.parameters()]
    loss = trainer.batch_loss(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    replay = torch.Generator()
    replay.set_state(trainer.gen.get_state())
    zs = [draw(p, replay, direction) for p in model.parameters()]
    if direction == "rademacher":
        assert all(torch.equal(z.abs(), torch.ones_like(z)) for z in zs)
    step_loss = trainer.step(model, x, y)
    derivative = sum((g * z).sum() for g, z in zip(grads, zs))
    for p, p0, z in zip(model.parameters(), before, zs):
        torch.testing.assert_close(p.detach(), p0 - 0.05 * derivative * z,
                                   **({"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32
                                      else {}))
    assert float(step_loss) == pytest.approx(loss.item(), rel=1e-3)


@pytest.mark.parametrize("update, sgd", [
    ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("sgd", {"weight_decay": 0.01}), ("sign", {}), ("sign", {"momentum": 0.5})])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_momentum_decay_and_sign_variants_match_torch_sgd_on_the_estimate(update, sgd,
                                                                        direction):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    twin = nn.Linear(5, 3)
    twin.load_state_dict(model.state_dict())
    reference = torch.optim.SGD(twin.parameters(), lr=0.1, **sgd)
    trainer = spsa_trainer(model, update=update, direction=direction, **sgd)
    for projected in (0.7, -0.3, 1.1):
        seed = trainer.gen.get_state()
        trainer.restore_and_update_(seed, torch.tensor(projected))
        replay = torch.Generator()
        replay.set_state(seed)
        for p in twin.parameters():  # theta is restored first: p - eps z + eps z ...
            z = draw(p, replay, direction)
            estimate = projected * z
            p.grad = estimate.sign() if update == "sign" else estimate
        # ... so restore_and_update_ alone moves theta by +eps z before the step
        with torch.no_grad():
            replay.set_state(seed)
            for p in twin.parameters():
                p.add_(draw(p, replay, direction), alpha=1e-3)
        if update == "sign" and sgd.get("weight_decay"):
            pytest.skip("sign after decay has no torch twin")
        reference.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p.detach(), q.detach())


def test_spsa_refuses_a_rule_it_cannot_apply_in_place():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="rule must be 'sgd'"):
        SGDSettings(torch.optim.Adam(model.parameters()))


@pytest.mark.parametrize("chunk_size", [2**18, 1024])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_an_spsa_step_holds_no_parameter_sized_buffer(chunk_size, direction):
    torch.manual_seed(0)
    width, depth = 64, 5
    layers = [nn.Linear(width, width) for _ in range(depth)]
    model = nn.Sequential(*[m for layer in layers for m in (layer, nn.ReLU())],
                          nn.Linear(width, 10))
    x, y = torch.randn(16, width), torch.randint(0, 10, (16,))
    trainer = spsa_trainer(model, loss="cross_entropy", task="classification",
                           chunk_size=chunk_size, direction=direction)
    existing = [*model.parameters(), x, y]
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    largest_param = max(p.numel() * 4 for p in model.parameters())
    largest_chunk = min(largest_param, 4 * chunk_size)
    if direction == "rademacher":  # 31 signs per drawn word: up to 30 padding entries, and the
        largest_chunk = 4 * (largest_chunk // 4 + 30) * 32 // 31  # words beside the signs
    with torch.no_grad(), LiveStorages(existing) as inference:
        trainer.batch_loss(model(x), y)
    trainer.step(model, x, y)  # warm-up
    with LiveStorages(existing) as step:
        trainer.step(model, x, y)
    assert step.largest <= max(largest_chunk, 16 * width * 4) and largest_param < param_bytes / 4
    # the larger of inference's own peak and one chunk of the direction (they are never alive
    # together), plus a few scalars (the losses); a stored direction would add param_bytes
    # (85,800 here; measured without chunks: 16,652 against 8,192 and 16,384)
    assert step.peak <= max(inference.peak, largest_chunk) + 1024, (step.peak, inference.peak)


# ---- both --------------------------------------------------------------------------------------
def test_the_plugin_conforms():
    assert_plugin_conforms("untied_plugins.perturbation")


def test_both_trainers_learn_digits(run_leaderboard):
    spec = {
        "name": "perturbation-digits-test", "title": "FG and SPSA learn",
        "metric": "test_accuracy", "baseline": "BP", "seeds": 1,
        "defaults": {"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]},
                     "activation": {"name": "tanh"}, "rule": {"name": "sgd", "lr": 0.1},
                     "trainer": {"name": "backprop", "epochs": 5, "batch_size": 16}},
        "entries": [
            {"label": "BP"},
            {"label": "FG", "overrides": {"trainer": {"name": "forward_gradient", "epochs": 5,
                                                      "batch_size": 16}, "rule": {"lr": 0.01}}},
            {"label": "SPSA", "overrides": {"trainer": {"name": "spsa", "epochs": 5,
                                                        "batch_size": 16}, "rule": {"lr": 0.01}}},
        ]}
    table = run_leaderboard(spec, seeds=1)
    means = dict(zip(table["entry"], table["mean"]))
    # chance is 0.1; here BP scores 0.93, FG 0.33, SPSA 0.42 (5 epochs: zeroth order is slow)
    assert means["BP"] > 0.8 and means["FG"] > 0.25 and means["SPSA"] > 0.25, means
