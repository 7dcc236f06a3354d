"""The separated neuron and separated_mlp (Podoprosvetov et al. eqs. 13-16): the ReLU and
SoftPlus analogs against the paper's formulas, stability at large |v|, c > 0, the refusal of
activations without the asymptotes 0 and v, and initial weights paired with mlp's."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.backprop.models import MLPParams, mlp
from untied_plugins.separated.neuron import (
    C_MIN,
    SeparatedDense,
    SeparatedMLPParams,
    separated_mlp,
)

from bench_core.interfaces import DataInfo, NativeActivation, RunContext

INFO = DataInfo("f", (3,), 2, "regression")


def site(name: str):
    return lambda: NativeActivation(ACTIVATIONS[name][1])


def layer_with(name: str, q: list[float], c: list[float], d: list[float],
               curvature: str = "learned") -> SeparatedDense:
    """A 1-input layer with W = 1, b = 0 (so a = x) and the given per-neuron q, c, d."""
    layer = SeparatedDense(1, len(q), site(name)(), curvature=curvature)
    with torch.no_grad():
        layer.linear.weight.fill_(1.0)
        layer.linear.bias.zero_()
        layer.q.copy_(torch.tensor(q))
        layer.d.copy_(torch.tensor(d))
        layer.c_raw.copy_(torch.log(torch.expm1(torch.tensor(c) - C_MIN)))
    return layer


A = torch.linspace(-3, 3, 13).unsqueeze(1)
Q, C, D = [0.5, -0.2, 0.0], [1.0, 0.7, 2.5], [0.8, -1.3, 0.4]


def test_relu_analog_is_eq_15():
    layer = layer_with("relu", Q, C, D)
    a, q, c, d = A, torch.tensor(Q), torch.tensor(C), torch.tensor(D)
    v = c * (a + q)
    expected = a + d * (2 * torch.clamp(v, min=0) - v)  # eqs. 13-15
    torch.testing.assert_close(layer(a), expected)


def test_softplus_analog_is_eq_16():
    layer = layer_with("softplus", Q, C, D)
    a, q, c, d = A.double(), *(torch.tensor(t, dtype=torch.float64) for t in (Q, C, D))
    v = c * (a + q)
    expected = a + d * (2 * torch.log1p(torch.exp(v)) - 2 * math.log(2) - v)  # eqs. 13, 14, 16
    torch.testing.assert_close(layer(A), expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["relu", "softplus"])
def test_large_arguments_stay_finite_with_the_asymptote_slopes(name):
    layer = layer_with(name, [0.0], [1.0], [0.5])
    # |v| = 2e38: the textbook form 2 f(v) - v overflows float32 (max 3.4e38) there
    a = torch.tensor([[-2e38], [-1e6], [1e6], [2e38]], requires_grad=True)
    o = layer(a)
    assert torch.isfinite(o).all()
    # asymptotes: o ~ a + d |v| (minus 2 d f(0)), so slopes 1 - d on the left, 1 + d on the right
    expected = a.detach() + 0.5 * a.detach().abs() - (math.log(2) if name == "softplus" else 0)
    torch.testing.assert_close(o.detach(), expected)
    o.sum().backward()
    torch.testing.assert_close(a.grad.squeeze(1), torch.tensor([0.5, 0.5, 1.5, 1.5]))
    layer.zero_grad()
    layer(torch.tensor([[-1e6], [1e6]])).sum().backward()  # (at 1e38 the sums themselves overflow)
    assert all(torch.isfinite(w.grad).all() for w in layer.parameters())


def test_c_is_fixed_at_one_for_relu_and_learned_for_softplus():
    relu = SeparatedDense(2, 4, site("relu")())
    soft = SeparatedDense(2, 4, site("softplus")())
    assert not relu.learns_c and "c_raw" not in dict(relu.named_parameters())
    torch.testing.assert_close(relu.c, torch.ones(4))
    assert soft.learns_c and "c_raw" in dict(soft.named_parameters())
    assert {n for n, _ in soft.named_parameters()} == {"linear.weight", "linear.bias", "q", "d",
                                                       "c_raw"}
    fixed = SeparatedDense(2, 4, site("softplus")(), curvature="fixed", c_init=0.3)
    assert not fixed.learns_c and torch.allclose(fixed.c, torch.full((4,), 0.3))


def test_c_stays_positive_whatever_an_update_does():
    layer = SeparatedDense(1, 3, site("softplus")())
    with torch.no_grad():
        layer.c_raw.copy_(torch.tensor([-1e4, -50.0, 0.0]))
    assert (layer.c >= C_MIN).all() and torch.isfinite(layer(A)).all()


@pytest.mark.parametrize("name", ["logistic", "tanh", "identity"])
def test_activations_without_the_asymptotes_are_refused(name):
    with pytest.raises(ValueError, match=f"f\\(v\\) - f\\(-v\\) = v .*'{name}' is not one"):
        SeparatedDense(2, 3, site(name)())


@pytest.mark.parametrize("hidden", [[5], [8, 4, 6]])
def test_separated_mlp_starts_from_mlp_weights_and_every_parameter_learns(hidden):
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    torch.manual_seed(3)
    plain = mlp(MLPParams(hidden=hidden), data=INFO, activation=site("softplus"), ctx=ctx)
    torch.manual_seed(3)
    model = separated_mlp(SeparatedMLPParams(hidden=hidden), data=INFO,
                          activation=site("softplus"), ctx=ctx)
    plain_linear = [m for m in plain.modules() if isinstance(m, nn.Linear)]
    model_linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(model_linear) == len(hidden) + 1
    for p, m in zip(plain_linear, model_linear):
        assert torch.equal(p.weight, m.weight) and torch.equal(p.bias, m.bias)
    x = torch.randn(7, 3)
    # d = 1, q = 0, c = 1: each hidden unit computes 2 softplus(a) - 2 ln 2
    first = model[1]
    a = first.linear(x)
    torch.testing.assert_close(first(x), 2 * torch.nn.functional.softplus(a) - 2 * math.log(2))
    model(x).square().sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.parameters())
    assert model(x).shape == (7, 2)


@pytest.mark.parametrize("d_init, left, right", [(0.0, 1.0, 1.0), (0.5, 0.5, 1.5),
                                                  (1.0, 0.0, 2.0)])
def test_d_init_sets_the_starting_slopes_one_minus_and_plus_c_d(d_init, left, right):
    """d_init = 0: o = a (no kink); 0.5: slopes 0.5 | 1.5; 1 (default): 0 | 2, the plain ReLU's
    dead left half, doubled."""
    layer = SeparatedDense(1, 1, site("relu")(), d_init=d_init)
    with torch.no_grad():
        layer.linear.weight.fill_(1.0)
        layer.linear.bias.zero_()
    a = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], requires_grad=True)
    o = layer(a)
    slope, = torch.autograd.grad(o.sum(), a, torch.ones(()))
    torch.testing.assert_close(slope.squeeze(1), torch.tensor([left, left, right, right]))
    assert SeparatedMLPParams(d_init=d_init).d_init == d_init
