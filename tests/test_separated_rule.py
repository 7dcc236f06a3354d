"""The separated rule (Podoprosvetov et al. eqs. 17-24, docs/methods/separated.md): dq and dd against
a hand computation and against a plain-Python transcription of the formulas (empty sides, r near
0), the rule's hooks and its composition with the base rule, and the paper's Fig. 3: a ReLU
neuron whose linear activation grows against the target dies under back-propagation, the
separated neuron trained by the rule from the same start does not."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.separated.neuron import SeparatedDense
from untied_plugins.separated.rule import SeparatedRuleParams, semi_sum_steps, separated

from bench_core.interfaces import NativeActivation, RunContext

CTX = RunContext(seed=0, device=torch.device("cpu"))


def relu_layer(n_in: int = 2, width: int = 1, **kw) -> SeparatedDense:
    return SeparatedDense(n_in, width, NativeActivation(ACTIVATIONS["relu"][1]), **kw)


def make_rule(model: nn.Module, lr: float = 0.1, base: str = "sgd", **options):
    params = SeparatedRuleParams(base={"name": base, "lr": lr}, **options)
    return separated(params, model=model, ctx=CTX)


# ---- the formulas ----------------------------------------------------------------------------
# One ReLU-analog neuron, W = (2, 0) (p = 2), b = 0, q = 0.5, c = 1, d = 0.5; five samples.
A = [-2.0, -1.0, 0.0, 1.0, 3.0]        # a + q = -1.5, -0.5 | 0.5, 1.5, 3.5  (left | right)
DELTA = [0.2, -0.4, 0.1, 0.3, -0.1]    # per-sample errors at the output


def hand_steps() -> tuple[float, float]:
    """dq and dd for A, DELTA by hand (gamma_q = gamma_d = 1)."""
    s_left, s_right = 0.2 - 0.4, 0.1 + 0.3 - 0.1                 # -0.2, 0.3
    r_left, r_right = 2 - 0.5, 2 + 0.5                            # eq. 20
    dq_left, dq_right = 0.2 / (2 * r_left), -0.3 / (3 * r_right)  # eq. 22: 1/15, -1/25
    dq = (dq_left * 0.2 + dq_right * 0.3) / 0.5                   # eq. 23: 1/375
    # do/dd = |v|; arms |a + q|: left 1.5 + 0.5, right 0.5 + 1.5 + 3.5
    dd_left = -(0.2 * 1.5 - 0.4 * 0.5) / 2.0                      # -0.05
    dd_right = -(0.1 * 0.5 + 0.3 * 1.5 - 0.1 * 3.5) / 5.5        # -3/110
    dd = (dd_left * 0.2 + dd_right * 0.3) / 0.5                   # -2/55
    return dq, dd


def test_hand_computed_steps():
    dq, dd = hand_steps()
    assert (dq, dd) == (pytest.approx(1 / 375), pytest.approx(-2 / 55))
    a = torch.tensor(A).unsqueeze(1)
    got = semi_sum_steps(a, torch.tensor(DELTA).unsqueeze(1), q=torch.tensor([0.5]),
                         c=torch.tensor([1.0]), d=torch.tensor([0.5]), p=torch.tensor([2.0]),
                         do_dd=(a + 0.5).abs(), gamma_q=1.0, gamma_d=1.0)
    assert got[0].item() == pytest.approx(dq) and got[1].item() == pytest.approx(dd)


def test_the_rule_applies_them_through_its_hooks_with_per_sample_errors():
    """A loss mean(o * delta) gives dE/do = delta / N: the rule must recover the per-sample
    delta, take a from the forward pass, p from W, and move q, d by exactly the hand steps."""
    layer = relu_layer(q_init=0.5, d_init=0.5)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[2.0, 0.0]]))
        layer.linear.bias.zero_()
    model = nn.Sequential(layer)
    rule = make_rule(model, lr=0.3, gamma_q=0.7, gamma_d=0.2)
    x = torch.tensor([[a / 2, 5.0] for a in A])  # a = 2 x_0
    rule.zero_grad()
    (model(x).squeeze(1) * torch.tensor(DELTA)).mean().backward()
    with torch.no_grad():
        model(x + 1)  # an evaluation pass between backward and step changes nothing
    w_grad = layer.linear.weight.grad.clone()
    rule.step()
    dq, dd = hand_steps()
    assert layer.q.item() == pytest.approx(0.5 + 0.7 * dq)
    assert layer.d.item() == pytest.approx(0.5 + 0.2 * dd)
    # the base rule (sgd, lr 0.3) moved W by its gradient and never touched q or d
    torch.testing.assert_close(layer.linear.weight, torch.tensor([[2.0, 0.0]]) - 0.3 * w_grad)
    assert len(rule.base.param_groups[0]["params"]) == 2  # W and b only


def reference_steps(a, delta, q, c, d, p, do_dd, gamma_q, gamma_d, eps=1e-8):
    """docs/methods/separated.md transcribed in plain Python, one neuron at a time."""
    dqs, dds = [], []
    for i in range(len(q)):
        sides = {"left": [], "right": []}
        for k in range(len(a)):
            v = c[i] * (a[k][i] + q[i])
            sides["right" if v >= 0 else "left"].append(k)
        r = {"left": p[i] - c[i] * d[i], "right": p[i] + c[i] * d[i]}
        q_parts, d_parts = [], []
        for side, ks in sides.items():
            s = sum(delta[k][i] for k in ks)
            if ks and abs(r[side]) >= eps:
                q_parts.append((-gamma_q * s / (len(ks) * r[side]), abs(s)))
            arm = sum(abs(a[k][i] + q[i]) for k in ks)
            if ks and arm >= eps:
                moment = sum(delta[k][i] * do_dd[k][i] for k in ks)
                d_parts.append((-gamma_d * moment / arm, abs(s)))
        for parts, out in ((q_parts, dqs), (d_parts, dds)):
            weight = sum(w for _, w in parts)
            out.append(sum(x * w for x, w in parts) / weight if weight > 0 else 0.0)
    return dqs, dds


def test_matches_the_transcription_with_empty_sides_and_flat_slopes():
    gen = torch.Generator().manual_seed(5)
    n, h = 9, 6
    a = torch.randn(n, h, generator=gen, dtype=torch.float64)
    a[:, 0] = a[:, 0].abs() + 0.1     # neuron 0: every sample right of the kink (left empty)
    a[:, 1] = -a[:, 1].abs() - 0.1    # neuron 1: every sample left of it (right empty)
    delta = torch.randn(n, h, generator=gen, dtype=torch.float64)
    q = torch.zeros(h, dtype=torch.float64)
    c = torch.tensor([1.0, 1.0, 0.5, 2.0, 1.0, 1.5], dtype=torch.float64)
    d = torch.tensor([0.3, -0.4, 0.8, 0.25, 1.0, -0.2], dtype=torch.float64)
    p = torch.tensor([1.0, 1.0, 0.4, 0.5 + 1e-10, 2.0, 1.1], dtype=torch.float64)
    # neuron 2: r_left = 0.4 - 0.4 = 0 exactly; neuron 3: r_left = 1e-10 (below 1e-8): no step
    do_dd = (c * (a + q)).abs()
    dq, dd = semi_sum_steps(a, delta, q=q, c=c, d=d, p=p, do_dd=do_dd, gamma_q=0.3,
                            gamma_d=0.7)
    ref_q, ref_d = reference_steps(a.tolist(), delta.tolist(), q.tolist(), c.tolist(),
                                   d.tolist(), p.tolist(), do_dd.tolist(), 0.3, 0.7)
    torch.testing.assert_close(dq, torch.tensor(ref_q, dtype=torch.float64))
    torch.testing.assert_close(dd, torch.tensor(ref_d, dtype=torch.float64))
    # an empty side leaves the other side's step alone
    right = a[:, 0]
    assert dq[0].item() == pytest.approx(-0.3 * delta[:, 0].sum().item() / (n * (1.0 + 0.3)))
    assert dd[0].item() == pytest.approx(-0.7 * (delta[:, 0] * right).sum().item()
                                         / right.sum().item())
    # r_left = 0: only the right side's offset step counts, the angle still uses both sides
    on_right = a[:, 2] >= 0
    s_right = delta[on_right, 2].sum().item()
    assert dq[2].item() == pytest.approx(-0.3 * s_right / (on_right.sum().item() * 0.8))
    assert torch.isfinite(dq).all() and torch.isfinite(dd).all()


def test_no_step_without_errors_or_without_a_training_pass():
    zero = torch.zeros(4, 2)
    dq, dd = semi_sum_steps(torch.randn(4, 2), zero, q=torch.zeros(2), c=torch.ones(2),
                            d=torch.ones(2), p=torch.ones(2), do_dd=torch.ones(4, 2),
                            gamma_q=1.0, gamma_d=1.0)
    assert dq.eq(0).all() and dd.eq(0).all()
    model = nn.Sequential(relu_layer())
    rule = make_rule(model)
    rule.step()  # nothing captured yet: q, d unchanged, no error
    assert model[0].q.eq(0).all() and model[0].d.eq(1).all()


def test_softplus_curvature_follows_its_gradient_and_base_adam_skips_neuron_parameters():
    layer = SeparatedDense(2, 3, NativeActivation(ACTIVATIONS["softplus"][1]))
    model = nn.Sequential(layer, nn.Linear(3, 1))
    rule = make_rule(model, base="adam", lr=1e-3, lr_c=0.5)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    rule.zero_grad()
    model(x).square().mean().backward()
    c_raw, grad = layer.c_raw.detach().clone(), layer.c_raw.grad.clone()
    rule.step()
    torch.testing.assert_close(layer.c_raw.detach(), c_raw - 0.5 * grad)
    base = {id(w) for w in rule.base.param_groups[0]["params"]}
    assert base == {id(w) for w in (layer.linear.weight, layer.linear.bias,
                                    *model[1].parameters())}


def test_a_model_without_separated_neurons_is_a_clear_error():
    with pytest.raises(ValueError, match="rule 'separated' needs a model with separated neurons"):
        make_rule(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_the_base_rule_is_validated_with_its_own_parameters():
    from pydantic import ValidationError

    assert SeparatedRuleParams().base.name == "adam"
    assert SeparatedRuleParams(base={"name": "sgd", "momentum": 0.9}).base.momentum == 0.9
    with pytest.raises(ValidationError, match="momentum"):
        SeparatedRuleParams(base={"name": "adam", "momentum": 0.9})
    with pytest.raises(ValidationError):
        SeparatedRuleParams(base={"name": "lion"})


# ---- options: the q step with the neuron's own derivative, delta = dE/da ----------------------
def one_side_step(side: str, q_step: str, gamma_q: float = 0.5) -> tuple[float, float]:
    """One ReLU-analog neuron (W = (2, 0): p = 2, q = 0, c = 1, d = 0.5) whose three samples lie
    on one side of the kink, with per-sample errors o - y summing to S = 0.6; only q moves
    (the base rule's and gamma_d's steps are negligible). Returns (S before, S after)."""
    layer = relu_layer(d_init=0.5)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[2.0, 0.0]]))
        layer.linear.bias.zero_()
    model = nn.Sequential(layer)
    x = torch.tensor([[u, 0.0] for u in (0.5, 1.0, 1.5)]) * (1 if side == "right" else -1)
    with torch.no_grad():
        y = model(x) - torch.tensor([[0.1], [0.2], [0.3]])
    rule = make_rule(model, lr=1e-12, gamma_q=gamma_q, gamma_d=1e-12, q_step=q_step)
    rule.zero_grad()
    (0.5 * (model(x) - y).square().mean()).backward()
    rule.step()
    with torch.no_grad():
        return 0.6, (model(x) - y).sum().item()


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_neuron_derivative_q_step_removes_gamma_of_each_sides_error_sum(side):
    """q_step = "neuron": a side's summed error shrinks by exactly gamma_q (first order, exact
    for the ReLU analog while no sample crosses the kink), on either side. The paper's r = p -+
    c d (eqs. 20-22) removes less on the right and, on the left (r = 1.5 > 0 where do/dq = -c d
    < 0), makes the error sum grow: the wrong way."""
    before, after = one_side_step(side, "neuron")
    assert after == pytest.approx(0.5 * before, rel=1e-5)
    before, paper = one_side_step(side, "paper")
    if side == "right":   # dq = -0.5 S / (3 * 2.5): S' = S (1 - 0.5 * 0.5 / 2.5)
        assert paper == pytest.approx(0.9 * before, rel=1e-5)
    else:                 # dq = -0.5 S / (3 * 1.5), o moves by -c d dq: S' = S (1 + 0.5 / 3)
        assert paper == pytest.approx(before * (1 + 0.5 / 3), rel=1e-5)


def test_the_neuron_derivative_q_step_uses_summed_do_dq_in_the_formula():
    """Hand values for A, DELTA: do/dq = -c d = -0.5 left, +0.5 right."""
    a = torch.tensor(A).unsqueeze(1)
    shifted = a + 0.5
    do_dq = 0.5 * torch.sign(shifted)
    got, _ = semi_sum_steps(a, torch.tensor(DELTA).unsqueeze(1), q=torch.tensor([0.5]),
                            c=torch.tensor([1.0]), d=torch.tensor([0.5]), p=torch.tensor([2.0]),
                            do_dd=shifted.abs(), gamma_q=1.0, gamma_d=1.0, do_dq=do_dq)
    dq_left, dq_right = 0.2 / (2 * -0.5), -0.3 / (3 * 0.5)       # -0.2, -0.2
    assert got.item() == pytest.approx((dq_left * 0.2 + dq_right * 0.3) / 0.5)
    # d = 0: q has no effect on o, so neither side gives a q step
    got, _ = semi_sum_steps(a, torch.tensor(DELTA).unsqueeze(1), q=torch.tensor([0.5]),
                            c=torch.tensor([1.0]), d=torch.tensor([0.0]), p=torch.tensor([2.0]),
                            do_dd=shifted.abs(), gamma_q=1.0, gamma_d=1.0, do_dq=0 * do_dq)
    assert got.item() == 0.0


def test_delta_activation_takes_dE_da_which_is_zero_on_the_dead_side_at_d_1():
    """delta = "activation" (eq. 5): the per-sample errors are B dE/da = B dE/do (1 -+ c d);
    with d = 1 (the default start) the left side's are 0, so only the right side steps."""
    layer = relu_layer(q_init=0.5, d_init=1.0)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[2.0, 0.0]]))
        layer.linear.bias.zero_()
    model = nn.Sequential(layer)
    x = torch.tensor([[a / 2, 5.0] for a in A])
    rule = make_rule(model, lr=1e-12, gamma_q=1.0, gamma_d=1.0, delta="activation")
    rule.zero_grad()
    (model(x).squeeze(1) * torch.tensor(DELTA)).mean().backward()
    cap = rule.captures[0]
    slope = 1 + torch.sign(torch.tensor(A) + 0.5)                  # do/da: 0 left, 2 right
    torch.testing.assert_close(cap.delta_a.squeeze(1) * len(A), torch.tensor(DELTA) * slope)
    rule.step()
    a = torch.tensor(A).unsqueeze(1)
    want_q, want_d = semi_sum_steps(a, (torch.tensor(DELTA) * slope).unsqueeze(1),
                                    q=torch.tensor([0.5]), c=torch.tensor([1.0]),
                                    d=torch.tensor([1.0]), p=torch.tensor([2.0]),
                                    do_dd=(a + 0.5).abs(), gamma_q=1.0, gamma_d=1.0)
    assert layer.q.item() == pytest.approx(0.5 + want_q.item())
    assert layer.d.item() == pytest.approx(1.0 + want_d.item())
    # the right side alone: dq = -S_right / (n r_right) = -(2 * 0.3) / (3 * 3)
    assert want_q.item() == pytest.approx(-0.6 / 9)


def test_plain_gradient_descent_base_moves_w_and_b_by_lr_times_their_gradient_every_step():
    """base = sgd (defaults: no momentum, no weight decay) is the paper's plain
    back-propagation for W and b (eq. 6): each step is -lr * gradient, with no memory."""
    layer = relu_layer(n_in=2, width=3, d_init=0.5)
    model = nn.Sequential(layer, nn.Linear(3, 1))
    rule = make_rule(model, lr=0.05, base="sgd")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    for _ in range(2):
        rule.zero_grad()
        model(x).square().mean().backward()
        before = [w.detach().clone() for w in (layer.linear.weight, model[1].weight)]
        grads = [w.grad.clone() for w in (layer.linear.weight, model[1].weight)]
        rule.step()
        for w, w0, g in zip((layer.linear.weight, model[1].weight), before, grads):
            torch.testing.assert_close(w.detach(), w0 - 0.05 * g)


# ---- Fig. 3: the dead ReLU and the separated neuron from the same start ----------------------
U = torch.linspace(-1, 1, 201).unsqueeze(1)
TARGET = torch.relu(U)  # a ReLU ridge growing with u


def fit(model: nn.Module, rule, steps: int = 1500) -> float:
    for _ in range(steps):
        loss = 0.5 * (model(U) - TARGET).square().mean()
        rule.zero_grad()
        loss.backward()
        rule.step()
    with torch.no_grad():
        return (model(U) - TARGET).square().mean().item()


def test_fig3_relu_neuron_growing_against_the_target_dies_and_the_separated_one_recovers():
    """Start: a = -u, o = relu(a) (Fig. 3d: the linear activation grows against the target).
    Back-propagation lowers the error on the active side by switching the neuron off (Fig. 3f):
    its output ends at 0 everywhere, the error of predicting 0 (E[relu(u)^2] = 1/6), and no
    gradient is left to undo it. The separated neuron starts as the same function
    (W = -1/2, d = 1: o = -u/2 + |u|/2 = relu(-u)) and, trained by the rule with the same SGD
    step for W and b, stays active and ends far below the dead neuron's error.

    What we observe beyond the test: it settles in a V-shaped fit (MSE ~0.02) with W still
    negative: with o = a + d|a + q| the sign of the linear part is W's, so the exact fit needs W
    to cross 0, through worse fits; plain autograd on q, d gets stuck there as well."""
    plain = nn.Linear(1, 1)
    with torch.no_grad():
        plain.weight.fill_(-1.0)
        plain.bias.zero_()
    relu_net = nn.Sequential(plain, nn.ReLU())
    dead_mse = fit(relu_net, torch.optim.SGD(relu_net.parameters(), lr=0.5))
    assert dead_mse == pytest.approx((TARGET ** 2).mean().item(), rel=1e-3)
    assert relu_net(U).abs().max().item() < 1e-3  # dead: zero output on (almost) every input

    layer = relu_layer(1, 1)
    with torch.no_grad():
        layer.linear.weight.fill_(-0.5)
        layer.linear.bias.zero_()
    torch.testing.assert_close(layer(U), torch.relu(-U))  # the same starting function
    model = nn.Sequential(layer)
    # lr 0.2: at 0.5 the rule sits at its edge of stability, where the machine's rounding decides
    # (it blew up at step 185 on an AVX-512 machine and trained on the CI machine)
    mse = fit(model, make_rule(model, lr=0.2, gamma_q=0.1, gamma_d=0.1))
    assert math.isfinite(mse) and mse < dead_mse / 5
    with torch.no_grad():
        out = model(U).squeeze(1)
    assert (out[U.squeeze(1) > 0.5] > 0.2).all()  # it now rises where the target does
