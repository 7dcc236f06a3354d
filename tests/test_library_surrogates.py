"""The surrogates of the spiking and binary libraries (plugin ``library_surrogates``,
docs/methods/perturbation.md section 4): each backward against its closed form at chosen points,
and against the derivative of the smooth function it stands for (by autograd, in float64); the
forward is the activation's; ``torch.func.vmap`` works; the conformance kit passes. The fused
(compiled) backward: equal to the eager formula to float32 rounding (bitwise where it is IEEE
arithmetic only) and to the closed form in float64; the eager formula where compilation fails
(a missing C++ compiler included), in a double backward and inside a compiled model."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.library_surrogates.fused import MIN_ELEMENTS, FusedProduct
from untied_plugins.library_surrogates.surrogates import (
    CLOSED_FORMS,
    SURROGATES,
    atan_product,
    sigmoid_slope_derivative,
)

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


# ---- the fused backward (untied_plugins.library_surrogates.fused) ------------------------------
PARAMETERS = {"atan": 2.0, "superspike": 25.0, "sigmoid_slope": 25.0, "approx_sign": 0.0,
              "swish_sign": 5.0}
ARITHMETIC_ONLY = ("atan", "superspike", "approx_sign")  # no exp: IEEE operations only


def fused_and_eager(name: str, dtype=torch.float32):
    """``grad * g(x)`` by the compiled kernel and by the eager formula, on inputs spread over
    g's tails (|x| up to ~15) and large enough for the fused path."""
    gen = torch.Generator().manual_seed(1)
    n = 2 * MIN_ELEMENTS + 3  # not a multiple of the vector width: the kernel's tail too
    x = (torch.randn(n, generator=gen, dtype=torch.float64) * 3).to(dtype)
    grad = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
    backward = CLOSED_FORMS[name].backward
    with torch.no_grad():
        assert backward.applies(grad, x)
        fused = backward(grad, x, PARAMETERS[name])
    if backward.failure is not None:
        pytest.skip(f"no compiled kernel here ({backward.failure}): the eager formula is used")
    assert backward.kernel.compiled is not None
    return x, grad, fused, backward.product(grad, x, PARAMETERS[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_backward_agrees_with_the_eager_formula(name):
    x, grad, fused, eager = fused_and_eager(name)
    torch.testing.assert_close(fused, eager)  # float32 rounding
    if name in ARITHMETIC_ONLY:  # same IEEE operations in the same order, no contraction
        assert torch.equal(fused, eager)


# the closed forms of CASES at any parameter value
CASES_AT = {
    "atan": lambda x, a: (a / 2) / (1 + (math.pi * a * x / 2) ** 2),
    "superspike": lambda x, k: 1 / (1 + k * x.abs()) ** 2,
    "sigmoid_slope": lambda x, k: k * torch.sigmoid(k * x) * torch.sigmoid(-k * x),
    "approx_sign": lambda x, _: torch.where(x.abs() <= 1, 2 - 2 * x.abs(), torch.zeros_like(x)),
    "swish_sign": lambda x, b: b * (2 - b * x * torch.tanh(b * x / 2)) / (1 + torch.cosh(b * x)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_backward_is_the_closed_form_in_float64(name):
    x, grad, fused, _ = fused_and_eager(name, torch.float64)
    expected = grad * CASES_AT[name](x, PARAMETERS[name])
    torch.testing.assert_close(fused, expected, rtol=1e-12, atol=1e-12)


def test_exp_floor_gives_exact_zeros_and_no_denormals():
    x = torch.tensor([0.0, 2.0, 2.4, 2.6, 3.0, 4.0, 1e4])  # slope 25: a = 0 .. 2.5e5
    g = sigmoid_slope_derivative(x, 25.0)
    assert g[0] == 6.25 and (g[1:3] > 0).all() and (g[3:] == 0).all()  # 0 from a > 62.2
    tiny = torch.finfo(torch.float32).tiny
    assert not ((g > 0) & (g < tiny)).any()


def test_a_failed_compilation_falls_back_to_the_eager_formula(monkeypatch):
    def broken_compile(*args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler\nsecond line")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    backward = FusedProduct(atan_product)  # a fresh one: the plugin's own are left alone
    x = torch.randn(MIN_ELEMENTS, generator=torch.Generator().manual_seed(0))
    grad = torch.ones_like(x)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="no C.. compiler.*eager formula"):
        got = backward(grad, x, 2.0)
    assert backward.failure == "RuntimeError: no C++ compiler"
    assert torch.equal(got, atan_product(grad, x, 2.0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: later calls go straight to eager
        assert torch.equal(backward(grad, x, 2.0), got)


def test_a_missing_cpp_compiler_never_breaks_a_backward(tmp_path):
    """A real inductor failure: no compiler under $CXX and no cached kernel to reuse."""
    script = f"""
import warnings, torch
from untied_plugins.library_surrogates.surrogates import CLOSED_FORMS, swish_sign_product
x = torch.linspace(-4, 4, {MIN_ELEMENTS}, requires_grad=True)
from untied_plugins.library_surrogates.surrogates import ClosedFormBackward
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    y = ClosedFormBackward.apply(x, torch.sign, CLOSED_FORMS["swish_sign"].backward, 5.0)
    y.backward(torch.ones_like(x))
assert CLOSED_FORMS["swish_sign"].backward.failure is not None
assert any("eager formula" in str(w.message) for w in caught), [str(w.message) for w in caught]
assert torch.equal(x.grad, swish_sign_product(torch.ones_like(x), x.detach(), 5.0))
print("fallback ok")
"""
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
           "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "fallback ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_of_rows_large_enough_for_the_fused_path(name):
    module = surrogate(CASES[name][0], "sign")
    x = torch.randn(2, MIN_ELEMENTS, generator=torch.Generator().manual_seed(4))
    grads = torch.func.vmap(torch.func.grad(lambda row: module(row).sum()))(x)
    torch.testing.assert_close(grads, module.local_gradient(x))


@pytest.mark.parametrize("name", sorted(CASES))
def test_double_backward_takes_the_eager_formula(name):
    module = surrogate(CASES[name][0], "tanh")
    x = torch.randn(MIN_ELEMENTS, generator=torch.Generator().manual_seed(2), requires_grad=True)
    (dx,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    assert dx.requires_grad  # autograd recorded the formula: a double backward can run
    torch.testing.assert_close(dx, module.local_gradient(x.detach()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_model_with_the_surrogate_has_no_graph_break_and_matches_eager(name):
    import torch._dynamo

    module = surrogate(CASES[name][0], "sign")
    layer = torch.nn.Linear(12, 9)
    model = torch.nn.Sequential(layer, module, torch.nn.Linear(9, 3))
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(3))

    def step(x):
        return model(x).square().sum()

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    step(x).backward()
    eager = layer.weight.grad.clone()
    layer.weight.grad = None
    torch.compile(step, fullgraph=True)(x).backward()
    torch.testing.assert_close(layer.weight.grad, eager)
