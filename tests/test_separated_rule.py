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
