"""Surrogate derivatives of the spiking- and binary-network libraries (docs/methods/perturbation.md
section 4): the forward activation ``f`` is unchanged, the backward uses ``dL/dx = dL/dy * g(x)``
with a closed-form ``g`` of the pre-activation ``x``. They are meant for non-differentiable
forwards (``step`` for a spike, ``sign`` for a binary unit) but, like every surrogate, apply to
any ``f``.

=================  ==========================================================  =============
name               g(x)                                                        library
=================  ==========================================================  =============
``atan``           ``(alpha/2) / (1 + (pi alpha x / 2)^2)``                    snnTorch [1]
``superspike``     ``1 / (1 + slope |x|)^2``                                   snnTorch [2]
``sigmoid_slope``  ``slope s(slope x) (1 - s(slope x))``, ``s`` = sigmoid      snnTorch [3]
``approx_sign``    ``2 - 2|x|`` for ``|x| <= 1``, else 0                       Larq [4]
``swish_sign``     ``beta (2 - beta x tanh(beta x/2)) / (1 + cosh(beta x))``   Larq [5]
=================  ==========================================================  =============

[1] ``snntorch.surrogate.atan`` (Fang et al. 2021, "Incorporating learnable membrane time
constant", the arctangent surrogate); [2] ``snntorch.surrogate.fast_sigmoid`` (Zenke & Ganguli
2018, "SuperSpike"); [3] ``snntorch.surrogate.sigmoid``; [4] ``larq.quantizers.ApproxSign``
(Liu et al. 2018, "Bi-Real Net"); [5] ``larq.quantizers.SwishSign`` (Darabi et al. 2018,
"BNN+", the SignSwish).

Each is the derivative of a smooth stand-in for the step or the sign: ``atan`` of
``1/2 + arctan(pi alpha x / 2) / pi``, ``superspike`` of ``x / (1 + slope |x|)``,
``sigmoid_slope`` of ``s(slope x)``, ``approx_sign`` of the piecewise quadratic ``ApproxSign``
and ``swish_sign`` of ``2 s(beta x)(1 + beta x (1 - s(beta x))) - 1``. The defaults are the
libraries' (``alpha = 2``, ``slope = 25``, ``beta = 5``). snnTorch's documentation writes the
arctan derivative as ``1/pi * 1/(1 + (pi U alpha/2)^2)``; its code (and SpikingJelly's ``ATan``)
computes ``alpha/2 / (1 + (pi U alpha / 2)^2)``, the true derivative of its smooth function: that
is what ``atan`` computes.

Implementation: one ``torch.autograd.Function`` (:class:`ClosedFormBackward`, ``setup_context``
style, ``generate_vmap_rule``) saves ``x`` (4 bytes per element in float32, what a native
activation keeps) and returns ``dL/dy * g(x)``; each surrogate is an elementwise module
(:class:`untied_plugins.troiano.surrogates.SurrogateActivation`) that also gives ``g`` as
``local_gradient`` (grouped runs multiply by it by hand). The product is one compiled elementwise
kernel where that is possible and pays, else the same formula op by op
(:mod:`untied_plugins.library_surrogates.fused`, which says when and why). Eager, the formulas
take 4-11 passes over memory: version 1 measured up to 7.3 times the native activation's forward
+ backward (``benchmarks/surrogates.py``, one thread, loaded machine); compiled, one pass.
``sigmoid_slope`` and ``swish_sign`` are written with one ``exp`` of ``-|.|``
(:func:`exp_of_minus`) instead of ``sigmoid``/``tanh`` and ``cosh``: inductor's loop is AVX-512
vectorised (no compile flag is missing) but calls SLEEF's 1-ulp ``tanh``, measured ~5 times
slower than ATen's ``tanh`` here, while its ``exp`` is on par with ATen's; and an argument
``<= 0`` cannot overflow. ``approx_sign`` uses the operations of the ``triangular`` surrogate
(``height = 2, width = 1``), so its values are that surrogate's. Component version 2
(:data:`VERSION`): the rounding of the fused kernels and of the new ``sigmoid_slope`` and
``swish_sign`` formulas is not version 1's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from untied_plugins.library_surrogates.fused import FusedProduct
from untied_plugins.troiano.surrogates import SurrogateActivation, apply_forward

from bench_core.interfaces import Activation, RunContext

POSITIVE_FINITE = dict(gt=0, allow_inf_nan=False)


class ATanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(2.0, **POSITIVE_FINITE, description="g(0) = alpha/2; width ~ 1/alpha")


class SlopeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slope: float = Field(25.0, **POSITIVE_FINITE, description="steepness k of the smooth step")


class SwishSignParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = Field(5.0, **POSITIVE_FINITE, description="steepness of the SignSwish")


# ---------------------------------------------------------------------------------------------
# g(x) in closed form (eager formulas: in place on their own temporaries)
# ---------------------------------------------------------------------------------------------
EXP_FLOOR = 1e-27
""":func:`exp_of_minus` is 0 where ``exp(-a)`` would be below this (``a > 62.2``)."""


def exp_of_minus(a: Tensor) -> Tensor:
    """``exp(-a)`` for ``a >= 0``, set to 0 where below :data:`EXP_FLOOR`; the argument is
    clamped at ``-64`` first. Both keep float32 denormals (``exp(-a)`` below ``1.2e-38`` from
    ``a = 87.3``) and special values out of the formulas: a CPU takes ~100 times longer over
    each of them (the whole backward was several times slower on spread-out inputs). What the
    floor drops is at most ~1e-25 of the peak of ``g`` (``sigmoid_slope``, ``swish_sign``): no
    weight moves by that."""
    return F.threshold(a.neg().clamp_min_(-64.0).exp_(), EXP_FLOOR, 0.0, inplace=True)


def atan_derivative(x: Tensor, alpha: float) -> Tensor:
    """``(alpha/2) / (1 + (pi alpha x / 2)^2)``."""
    return (alpha / 2) / (x * (math.pi * alpha / 2)).square_().add_(1)


def superspike_derivative(x: Tensor, slope: float) -> Tensor:
    """``1 / (1 + slope |x|)^2``."""
    return x.abs().mul_(slope).add_(1).square_().reciprocal_()


def sigmoid_slope_derivative(x: Tensor, slope: float) -> Tensor:
    """``slope s(slope x) (1 - s(slope x)) = slope e / (1 + e)^2`` with ``e = exp(-slope |x|)``
    (``s(z)(1 - s(z)) = e^-z / (1 + e^-z)^2`` is even in ``z``): one ``exp`` of a non-positive
    argument (:func:`exp_of_minus`), never overflowing."""
    e = exp_of_minus(x.abs().mul_(slope))
    return e.mul(slope).div_(e.add(1).square_())


def approx_sign_derivative(x: Tensor, _unused: float = 0.0) -> Tensor:
    """``2 - 2|x|`` for ``|x| <= 1``, else 0: ``(1 - min(|x|, 1)) * 2``, the operations of the
    ``triangular`` surrogate with ``width = 1, height = 2``, so exactly 2 at 0 and (+)0 outside."""
    return x.abs().clamp_max_(1.0).neg_().add_(1.0).mul_(2.0)


def swish_sign_derivative(x: Tensor, beta: float) -> Tensor:
    """``beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))``, computed as
    ``2 beta u (1 - u) (2 - a (1 - 2u))`` with ``a = beta |x|`` and ``u = e / (1 + e) = s(-a)``,
    ``e = exp(-a)`` (:func:`exp_of_minus`): ``1 / (1 + cosh(a)) = 2 e / (1 + e)^2 = 2 u (1 - u)``,
    ``tanh(a / 2) = (1 - e) / (1 + e) = 1 - 2u``, and ``x tanh(beta x / 2)`` is even. One ``exp``
    and one division instead of ``tanh``, ``cosh`` and a quotient; ``u`` keeps its relative
    precision in the tails; no overflow, never NaN for finite ``x``."""
    a = x.abs().mul_(beta)
    e = exp_of_minus(a)
    u = e.div_(e.add(1))
    inner = u.mul(2).sub_(1).mul_(a).add_(2)  # 2 - a tanh(a/2)
    return u.neg().add_(1).mul_(u).mul_(2 * beta).mul_(inner)


# grad * g(x): one function per surrogate, each compiled into its own kernel (fused.py)
def atan_product(grad: Tensor, x: Tensor, alpha: float) -> Tensor:
    return atan_derivative(x, alpha) * grad


def superspike_product(grad: Tensor, x: Tensor, slope: float) -> Tensor:
    return superspike_derivative(x, slope) * grad


def sigmoid_slope_product(grad: Tensor, x: Tensor, slope: float) -> Tensor:
    return sigmoid_slope_derivative(x, slope) * grad


def approx_sign_product(grad: Tensor, x: Tensor, _unused: float = 0.0) -> Tensor:
    return approx_sign_derivative(x) * grad


def swish_sign_product(grad: Tensor, x: Tensor, beta: float) -> Tensor:
    return swish_sign_derivative(x, beta) * grad


# ---------------------------------------------------------------------------------------------
# f forward, g backward
# ---------------------------------------------------------------------------------------------
Native = Callable[[Tensor], Tensor]
Derivative = Callable[[Tensor, float], Tensor]


@dataclass(frozen=True)
class ClosedForm:
    """A surrogate's ``g``: ``derivative(x, k)`` and the backward product ``grad * g(x; k)``
    (fused where it pays)."""

    derivative: Derivative
    backward: FusedProduct


CLOSED_FORMS = {
    "atan": ClosedForm(atan_derivative, FusedProduct(atan_product)),
    "superspike": ClosedForm(superspike_derivative, FusedProduct(superspike_product)),
    "sigmoid_slope": ClosedForm(sigmoid_slope_derivative, FusedProduct(sigmoid_slope_product)),
    "approx_sign": ClosedForm(approx_sign_derivative, FusedProduct(approx_sign_product)),
    "swish_sign": ClosedForm(swish_sign_derivative, FusedProduct(swish_sign_product)),
}
"""Name -> closed form; one :class:`FusedProduct` (one compiled kernel) per surrogate and
process."""


class ClosedFormBackward(torch.autograd.Function):
    """``f(x)`` forward; ``dL/dx = dL/dy * g(x; k)`` backward, ``g`` a closed form with one
    parameter ``k``, the product computed by :class:`FusedProduct`. Saves ``x``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, backward: FusedProduct, k: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, ctx.backward, ctx.k = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return ctx.backward(grad, x, ctx.k), None, None, None


class ClosedFormSurrogate(SurrogateActivation):
    """An activation site with a closed-form ``g`` of at most one parameter (``k``)."""

    def __init__(self, activation: Activation, label: str, parameter: str | None = None,
                 k: float = 0.0) -> None:
        super().__init__(activation)
        self.label, self.parameter, self.k = label, parameter, k
        self.closed_form = CLOSED_FORMS[label]

    def settings(self) -> str:
        return f"{self.parameter}={self.k}" if self.parameter else ""

    def forward(self, x: Tensor) -> Tensor:
        return ClosedFormBackward.apply(x, self.activation.native, self.closed_form.backward,
                                        self.k)

    def local_gradient(self, x: Tensor) -> Tensor:
        return self.closed_form.derivative(x, self.k)


# ---------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------
def atan(params: ATanParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = (alpha/2)/(1 + (pi alpha x/2)^2): snnTorch's arctan surrogate (Fang et al. 2021)."""
    return ClosedFormSurrogate(activation, "atan", "alpha", params.alpha)


def superspike(params: SlopeParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = 1/(1 + slope|x|)^2: snnTorch's fast sigmoid (SuperSpike, Zenke & Ganguli 2018)."""
    return ClosedFormSurrogate(activation, "superspike", "slope", params.slope)


def sigmoid_slope(params: SlopeParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = slope s(slope x)(1 - s(slope x)): snnTorch's sigmoid surrogate."""
    return ClosedFormSurrogate(activation, "sigmoid_slope", "slope", params.slope)


def approx_sign(params: BaseModel, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = max(0, 2 - 2|x|): Larq's ApproxSign gradient (Bi-Real Net, Liu et al. 2018)."""
    return ClosedFormSurrogate(activation, "approx_sign")


def swish_sign(params: SwishSignParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = beta(2 - beta x tanh(beta x/2))/(1 + cosh(beta x)): Larq's SwishSign (BNN+ 2018)."""
    return ClosedFormSurrogate(activation, "swish_sign", "beta", params.beta)


SURROGATES: dict[str, tuple[Callable[..., nn.Module], type[BaseModel] | None]] = {
    "atan": (atan, ATanParams),
    "superspike": (superspike, SlopeParams),
    "sigmoid_slope": (sigmoid_slope, SlopeParams),
    "approx_sign": (approx_sign, None),
    "swish_sign": (swish_sign, SwishSignParams),
}
"""Name -> (factory, parameter model)."""

VERSION = "2"
"""Component version of every surrogate here (part of the run ids): 2 = the backward product
computed by :class:`FusedProduct` (``sigmoid_slope`` and ``swish_sign`` through one ``exp``),
whose rounding can differ from version 1's op-by-op formulas."""
