"""The surrogates of the spiking and binary libraries (plugin ``library_surrogates``,
docs/methods/perturbation.md section 4): each backward against its closed form at chosen points,
and against the derivative of the smooth function it stands for (by autograd, in float64); the
forward is the activation's; ``torch.func.vmap`` works; the conformance kit passes."""

from __future__ import annotations

import math

import pytest
import torch
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.library_surrogates.surrogates import SURROGATES

from bench_core.interfaces import RunContext
from bench_core.plugins import get_host
from bench_core.specs.plan import resolve_component
from bench_core.testing import assert_plugin_conforms

POINTS = torch.tensor([-3.0, -1.0, -0.5, -0.04, 0.0, 0.04, 0.5, 1.0, 1.5, 3.0],
                      dtype=torch.float64)


def surrogate(table: dict, activation: str = "step"):
    comp, params = resolve_component(get_host(), "surrogate", table)
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    return comp.factory(params, activation=ACTIVATIONS[activation][1], ctx=ctx)


def backward_of(module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    module(x).backward(torch.ones_like(x))
    return x.grad


def derivative_of(smooth, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    smooth(x).sum().backward()
    return x.grad


# (table, closed form g, the smooth function whose derivative g is)
CASES = {
    "atan": ({"name": "atan", "alpha": 3.0},
             lambda x: 1.5 / (1 + (math.pi * 3.0 * x / 2) ** 2),
             lambda x: 0.5 + torch.atan(math.pi * 3.0 * x / 2) / math.pi),
    "superspike": ({"name": "superspike", "slope": 10.0},
                   lambda x: 1 / (1 + 10.0 * x.abs()) ** 2,
                   lambda x: x / (1 + 10.0 * x.abs())),
    "sigmoid_slope": ({"name": "sigmoid_slope", "slope": 4.0},
                      lambda x: 4.0 * torch.exp(-4.0 * x) / (1 + torch.exp(-4.0 * x)) ** 2,
                      lambda x: torch.sigmoid(4.0 * x)),
    "approx_sign": ({"name": "approx_sign"},
                    lambda x: torch.where(x.abs() <= 1, 2 - 2 * x.abs(), torch.zeros_like(x)),
                    lambda x: torch.where(x.abs() <= 1, 2 * x - x * x.abs(), torch.sign(x))),
    "swish_sign": ({"name": "swish_sign", "beta": 2.0},
                   lambda x: 2.0 * (2 - 2.0 * x * torch.tanh(x)) / (1 + torch.cosh(2.0 * x)),
                   lambda x: 2 * torch.sigmoid(2.0 * x)
                   * (1 + 2.0 * x * (1 - torch.sigmoid(2.0 * x))) - 1),
}


def test_every_surrogate_of_the_plugin_is_tested():
    assert set(CASES) == set(SURROGATES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_is_the_closed_form_and_the_derivative_of_its_smooth_function(name):
    table, closed_form, smooth = CASES[name]
    module = surrogate(table)
    got = backward_of(module, POINTS)
    torch.testing.assert_close(got, closed_form(POINTS), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, derivative_of(smooth, POINTS), rtol=1e-10, atol=1e-12)
    x = POINTS.float().requires_grad_(True)  # float32 too, with the gradient flowing in scaled
    module(x).backward(torch.full_like(x, 0.5))
    torch.testing.assert_close(x.grad, 0.5 * closed_form(POINTS).float())
    torch.testing.assert_close(module.local_gradient(POINTS), closed_form(POINTS))


def test_values_the_libraries_document():
    # snnTorch's defaults: atan alpha = 2 peaks at alpha/2 = 1; fast sigmoid slope 25 at x = 0.04
    # is 1/(1+1)^2; sigmoid slope 25 at 0 is 25/4. Larq: ApproxSign 2 at 0, 1 at |x| = 1/2,
    # 0 from |x| = 1; SwishSign beta = 5 at 0 is beta (2 - 0) / (1 + 1) = 5.
    x = torch.tensor([0.0, 0.04, 0.5, 1.0])
    assert backward_of(surrogate({"name": "atan"}), x)[0] == 1.0
    assert backward_of(surrogate({"name": "superspike"}), x)[1] == pytest.approx(0.25)
    assert backward_of(surrogate({"name": "sigmoid_slope"}), x)[0] == pytest.approx(6.25)
    torch.testing.assert_close(backward_of(surrogate({"name": "approx_sign"}), x),
                               torch.tensor([2.0, 1.92, 1.0, 0.0]))
    assert backward_of(surrogate({"name": "swish_sign"}), x)[0] == pytest.approx(5.0)


def test_swish_sign_is_zero_not_nan_far_in_its_tails():
    g = backward_of(surrogate({"name": "swish_sign", "beta": 5.0}), torch.tensor([-1e4, 1e4]))
    assert g.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("activation", ["step", "sign", "relu", "tanh"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_is_the_activation(name, activation):
    x = torch.linspace(-3, 3, 25)
    native = ACTIVATIONS[activation][1].native
    assert torch.equal(surrogate(CASES[name][0], activation)(x), native(x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_works_under_vmap(name):
    module = surrogate(CASES[name][0], "sign")
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    grads = torch.func.vmap(torch.func.grad(lambda row: module(row).sum()))(x)
    torch.testing.assert_close(grads, CASES[name][1](x.double()).float())


def test_the_plugin_conforms():
    assert_plugin_conforms("untied_plugins.library_surrogates")
