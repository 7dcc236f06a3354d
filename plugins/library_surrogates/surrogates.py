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
activation keeps) and multiplies the incoming gradient by ``g(x)``; each surrogate is an
elementwise module (:class:`untied_plugins.troiano.surrogates.SurrogateActivation`) that also
gives ``g`` as ``local_gradient``. ``approx_sign`` is the triangle ``height = 2, width = 1`` of
the ``triangular`` surrogate and reuses its backward.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from untied_plugins.troiano.surrogates import (
    SurrogateActivation,
    TriangularSurrogate,
    apply_forward,
)

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
# g(x) in closed form
# ---------------------------------------------------------------------------------------------
def atan_derivative(x: Tensor, alpha: float) -> Tensor:
    """``(alpha/2) / (1 + (pi alpha x / 2)^2)``."""
    return (alpha / 2) / (x * (math.pi * alpha / 2)).square_().add_(1)


def superspike_derivative(x: Tensor, slope: float) -> Tensor:
    """``1 / (1 + slope |x|)^2``."""
    return x.abs().mul_(slope).add_(1).square_().reciprocal_()


def sigmoid_slope_derivative(x: Tensor, slope: float) -> Tensor:
    """``slope s(slope x) (1 - s(slope x))`` (``sigmoid_backward`` of ``s(slope x)``)."""
    s = torch.sigmoid(x * slope)
    return torch.ops.aten.sigmoid_backward(torch.full_like(s, slope), s)


def swish_sign_derivative(x: Tensor, beta: float) -> Tensor:
    """``beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))``. The denominator overflows to
    ``inf`` for ``|beta x| > 89`` (float32), where ``g`` is 0 to float precision: the quotient is
    then an exact 0, never NaN (the numerator is finite)."""
    bx = x * beta
    numerator = (bx * torch.tanh(bx * 0.5)).neg_().add_(2).mul_(beta)
    return numerator.div_(torch.cosh(bx).add_(1))


# ---------------------------------------------------------------------------------------------
# f forward, g backward
# ---------------------------------------------------------------------------------------------
Native = Callable[[Tensor], Tensor]
Derivative = Callable[[Tensor, float], Tensor]


class ClosedFormBackward(torch.autograd.Function):
    """``f(x)`` forward; ``dL/dx = dL/dy * g(x; k)`` backward, ``g`` a closed form with one
    parameter ``k``. Saves ``x``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, derivative: Derivative, k: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, ctx.derivative, ctx.k = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return ctx.derivative(x, ctx.k) * grad, None, None, None


class ClosedFormSurrogate(SurrogateActivation):
    """An activation site with a closed-form ``g`` of one parameter (``k``)."""

    def __init__(self, activation: Activation, label: str, derivative: Derivative,
                 parameter: str, k: float) -> None:
        super().__init__(activation)
        self.label, self.derivative, self.parameter, self.k = label, derivative, parameter, k

    def settings(self) -> str:
        return f"{self.parameter}={self.k}"

    def forward(self, x: Tensor) -> Tensor:
        return ClosedFormBackward.apply(x, self.activation.native, self.derivative, self.k)

    def local_gradient(self, x: Tensor) -> Tensor:
        return self.derivative(x, self.k)


# ---------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------
def atan(params: ATanParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = (alpha/2)/(1 + (pi alpha x/2)^2): snnTorch's arctan surrogate (Fang et al. 2021)."""
    return ClosedFormSurrogate(activation, "atan", atan_derivative, "alpha", params.alpha)


def superspike(params: SlopeParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = 1/(1 + slope|x|)^2: snnTorch's fast sigmoid (SuperSpike, Zenke & Ganguli 2018)."""
    return ClosedFormSurrogate(activation, "superspike", superspike_derivative, "slope",
                               params.slope)


def sigmoid_slope(params: SlopeParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = slope s(slope x)(1 - s(slope x)): snnTorch's sigmoid surrogate."""
    return ClosedFormSurrogate(activation, "sigmoid_slope", sigmoid_slope_derivative, "slope",
                               params.slope)


def approx_sign(params: BaseModel, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = max(0, 2 - 2|x|): Larq's ApproxSign gradient (Bi-Real Net, Liu et al. 2018)."""
    surrogate = TriangularSurrogate(activation, width=1.0, height=2.0)
    surrogate.label = "approx_sign"
    return surrogate


def swish_sign(params: SwishSignParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = beta(2 - beta x tanh(beta x/2))/(1 + cosh(beta x)): Larq's SwishSign (BNN+ 2018)."""
    return ClosedFormSurrogate(activation, "swish_sign", swish_sign_derivative, "beta",
                               params.beta)


SURROGATES: dict[str, tuple[Callable[..., nn.Module], type[BaseModel] | None]] = {
    "atan": (atan, ATanParams),
    "superspike": (superspike, SlopeParams),
    "sigmoid_slope": (sigmoid_slope, SlopeParams),
    "approx_sign": (approx_sign, None),
    "swish_sign": (swish_sign, SwishSignParams),
}
"""Name -> (factory, parameter model)."""
