"""Backward functions ``g`` that replace ``f'`` in back-propagation (docs/methods/troiano.md).

A surrogate activation computes the forward activation ``f(x)`` unchanged and, in the backward
pass, ``dL/dx = dL/dy * g(x)`` with ``x`` the pre-activation (Troiano et al. 2025, Section 4,
the untied configuration ``f/g``). Every ``g`` here is non-negative, so the sign of each
incoming gradient component is kept (Proposition 3). The catalogue:

=====================  ===================================================  ============
name                   g(x)                                                 paper
=====================  ===================================================  ============
``tied``               ``f'(x)`` (the activation's own autograd)            ``f/d(f)``
``constant``           ``scale``                                            ``/1`` Fig. 6a
``rect``               ``height if |x| < width else 0`` (open window)       ``/Rect`` Fig. 6c
``triangular``         ``max(0, 1 - |x| / width)``                          ``/Triang`` Fig. 6d
``d_logistic``         ``s(x) (1 - s(x))``, ``s`` = sigmoid                 ``/d(Log)``
``full_jamming``       ``u k`` (in :mod:`untied_plugins.troiano.jamming`)           ``/FJ`` Fig. 8a
``positive_jamming``   ``u k if x >= 0 else 0`` (jamming)                   ``/PJ`` Fig. 8b
``rect_jamming``       ``u k if |x| <= window else 0`` (jamming)            ``/RJ`` Fig. 8c
=====================  ===================================================  ============

Implementation. Each family is a ``torch.autograd.Function`` in ``setup_context`` style with
``generate_vmap_rule = True``: it works under ``torch.func`` transforms and compiles with
``torch.compile(fullgraph=True)``. ``f`` itself is evaluated inside the Function's forward, so
autograd records no graph of ``f``. Memory: at most the native activation's 4 bytes per element
(float32) are kept for backward - the pre-activation ``x`` (or, for ``d_logistic`` after a
logistic forward, the output ``s(x)``) - nothing for ``constant``, and with ``low_memory=true``
the window families (``rect``, ``positive_jamming``, ``rect_jamming``) keep a 1-byte mask of the
window instead of ``x``. ``triangular`` has no mask mode: its ``g`` takes a continuum of values
inside the window, which a 1-bit mask cannot encode. Speed: the backward formulas use fused aten
kernels (``hardtanh_backward`` is exactly the open-window product ``grad * [lo < x < hi]``;
the closed jamming windows use as ``lo``/``hi`` the neighbouring floats of their ends, see
:func:`untied_plugins.troiano.jamming.closed_window_bounds`; ``sigmoid_backward`` is ``grad * s (1 - s)``) and in-place
updates of fresh temporaries, and masks are multiplied as ``uint8`` (a byte view of the
``bool`` mask), which is several times faster on CPU than a ``bool`` multiply, ``where`` or
``masked_fill``. The low-memory mode pays one extra pass in forward to build the mask.
``triangular``'s five eager passes are one compiled kernel on large float32/float64 tensors
(:data:`TRIANGULAR_PRODUCT`, bitwise the eager result).
"""

from __future__ import annotations

from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench_core.interfaces import Activation, NativeActivation, RunContext
from bench_core.kit.compiled import FusedElementwise, kernel_scalar

# ---------------------------------------------------------------------------------------------
# Parameter models
# ---------------------------------------------------------------------------------------------
POSITIVE_FINITE = dict(gt=0, allow_inf_nan=False)


class ConstantParams(BaseModel):
    """``g(x) = scale``."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, **POSITIVE_FINITE, description="the constant g")


class RectParams(BaseModel):
    """``g(x) = height if |x| < width else 0``."""

    model_config = ConfigDict(extra="forbid")
    width: float = Field(1.0, **POSITIVE_FINITE, description="half-width of the open window")
    height: float = Field(1.0, **POSITIVE_FINITE, description="g inside the window")
    low_memory: bool = Field(False, description="keep a 1-byte window mask instead of x")


class TriangularParams(BaseModel):
    """``g(x) = height max(0, 1 - |x| / width)``; no ``low_memory``: g is not a 0/1 mask. The
    paper's Fig. 6d shows the shape only: ``height = 0.25, width = 4`` is the triangle under the
    logistic's derivative ``s(1 - s)`` (same peak, same area), the reading that would make the
    paper's Triang and d(Log) columns agree."""

    model_config = ConfigDict(extra="forbid")
    width: float = Field(1.0, **POSITIVE_FINITE, description="half-width of the triangle's base")
    height: float = Field(1.0, **POSITIVE_FINITE, description="g at x = 0 (the peak)")


# ---------------------------------------------------------------------------------------------
# Window masks (1 byte per element)
# ---------------------------------------------------------------------------------------------
def open_window_mask(x: Tensor, width: float) -> Tensor:
    """``|x| < width`` as a ``uint8`` tensor (a byte view of the ``bool`` comparison)."""
    return (x.abs() < width).view(torch.uint8)





# ---------------------------------------------------------------------------------------------
# autograd Functions: f forward, g backward
# ---------------------------------------------------------------------------------------------
Native = Callable[[Tensor], Tensor]


def eager_in_place() -> bool:
    """Whether backward formulas may write into their own temporaries with in-place and ``out=``
    kernels: in eager mode, yes; under ``torch.compile`` (which fuses the out-of-place form
    anyway) or ``torch.func`` transforms (no batching rules for ``out=``/some in-place ops), no."""
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())


def apply_forward(native: Native, x: Tensor) -> Tensor:
    """``f(x)`` for a Function's forward; an ``f`` that returns its input (``identity``) gets a
    view of it, since autograd cannot save an input that a ``setup_context`` Function returns
    as-is."""
    y = native(x)
    return y.view_as(y) if y is x else y


class ConstantBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = scale * dL/dy`` backward (Fig. 6a). Saves nothing."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, scale: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.scale = inputs[2]

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad if ctx.scale == 1.0 else grad * ctx.scale), None, None


class RectBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = height * dL/dy * [|x| < width]`` backward (Fig. 6c).

    Saves ``x``; the window product is one fused ``aten.hardtanh_backward`` pass (it keeps the
    gradient exactly where ``-width < x < width``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, width: float, height: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, ctx.width, ctx.height = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        dx = torch.ops.aten.hardtanh_backward(grad, x, -ctx.width, ctx.width)
        if ctx.height != 1.0:
            dx = dx.mul_(ctx.height)
        return dx, None, None, None


class RectMaskBackward(torch.autograd.Function):
    """:class:`RectBackward` keeping the window ``|x| < width`` as a 1-byte mask (returned as a
    second, non-differentiable output so that it can be saved under ``torch.func``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, width: float, height: float) -> tuple[Tensor, Tensor]:
        return apply_forward(native, x), open_window_mask(x, width)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.height = inputs[3]
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx, grad: Tensor | None, _mask_grad: None):
        if grad is None:
            return None, None, None, None
        (mask,) = ctx.saved_tensors
        dx = grad * mask
        if ctx.height != 1.0:
            dx = dx.mul_(ctx.height)
        return dx, None, None, None


def _triangular_product(x: Tensor, grad: Tensor, w: Tensor, ratio: Tensor | None) -> Tensor:
    """``((w - min(|x|, w)) * (h / w)) * dL/dy`` (``ratio = h / w``, None when 1), the eager
    passes of :class:`TriangularBackward` in their order (``w`` and ``ratio`` 0-d tensors)."""
    g = torch.minimum(x.abs(), w).neg().add(w)
    if ratio is not None:
        g = g.mul(ratio)
    return g.mul(grad)


TRIANGULAR_PRODUCT = FusedElementwise(_triangular_product)
"""The triangular backward as one compiled pass over ``x`` and ``dL/dy`` (large float32/float64
tensors, plain eager backward: :class:`bench_core.kit.compiled.FusedElementwise`), where eager
makes five; bitwise the eager passes' result."""


class TriangularBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = dL/dy * max(0, 1 - |x| / width)`` backward (Fig. 6d).

    Saves ``x``. Computed as ``(w - min(|x|, w)) / w`` in place on one temporary, so that
    ``g`` is exactly 1 at ``x = 0`` and exactly (+)0 for ``|x| >= w`` (one compiled pass,
    :data:`TRIANGULAR_PRODUCT`, where it applies)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, width: float, height: float = 1.0) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.width = inputs[2]
        ctx.height = inputs[3] if len(inputs) > 3 else 1.0
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        w, h = ctx.width, ctx.height
        if TRIANGULAR_PRODUCT.applies(x, grad):
            ratio = None if w == h else kernel_scalar(h / w, x)
            return TRIANGULAR_PRODUCT((x, grad), kernel_scalar(w, x), ratio), None, None, None
        g = x.abs().clamp_max_(w).neg_().add_(w)
        if w != h:
            g = g.mul_(h / w)
        return g.mul_(grad), None, None, None


class DLogisticBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = dL/dy * s(x) (1 - s(x))`` backward, ``s`` = sigmoid.

    Always through ``sigmoid`` (``s`` saturates to exactly 0 or 1, so ``g`` is a finite 0 in the
    far tails; ``exp`` would overflow). When ``f`` is itself the logistic (``from_output``) the
    output ``s(x)`` is saved, as native autograd does, and ``g`` is one
    ``aten.sigmoid_backward`` pass; otherwise ``x`` is saved, ``s(x)`` recomputed and turned
    into ``(s - s s) dL/dy`` in place on that one temporary (see :func:`eager_in_place`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, from_output: bool) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, ctx.from_output = inputs
        ctx.save_for_backward(output if ctx.from_output else x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (saved,) = ctx.saved_tensors
        if ctx.from_output or not eager_in_place():
            s = saved if ctx.from_output else torch.sigmoid(saved)
            return torch.ops.aten.sigmoid_backward(grad, s), None, None
        s = torch.sigmoid(saved)
        return s.addcmul_(s, s, value=-1).mul_(grad), None, None


# ---------------------------------------------------------------------------------------------
# Modules (one per activation site)
# ---------------------------------------------------------------------------------------------
class SurrogateActivation(nn.Module):
    """An activation site: ``f`` forward, the surrogate ``g`` backward (the paper's ``f/g``).
    The deterministic surrogates act element by element (``elementwise``) and give ``g(x)``
    itself as ``local_gradient(x)`` (see :class:`bench_core.interfaces.NativeActivation`); the
    jamming family does neither."""

    label = "g"
    elementwise = True

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.activation = activation

    def settings(self) -> str:
        return ""

    def extra_repr(self) -> str:
        settings = self.settings()
        return f"{self.activation.name}/{self.label}" + (f", {settings}" if settings else "")


class ConstantSurrogate(SurrogateActivation):
    """``f/1``: the gradient passes through scaled by a constant (straight-through)."""

    label = "constant"

    def __init__(self, activation: Activation, scale: float) -> None:
        super().__init__(activation)
        self.scale = scale

    def settings(self) -> str:
        return f"scale={self.scale}"

    def forward(self, x: Tensor) -> Tensor:
        return ConstantBackward.apply(x, self.activation.native, self.scale)

    def local_gradient(self, x: Tensor) -> Tensor:
        return torch.full_like(x, self.scale)


class RectSurrogate(SurrogateActivation):
    """``f/Rect``: ``g = height`` inside the open window ``|x| < width``, 0 outside."""

    label = "rect"

    def __init__(self, activation: Activation, width: float, height: float,
                 low_memory: bool) -> None:
        super().__init__(activation)
        self.width, self.height, self.low_memory = width, height, low_memory

    def settings(self) -> str:
        return f"width={self.width}, height={self.height}, low_memory={self.low_memory}"

    def forward(self, x: Tensor) -> Tensor:
        if self.low_memory:
            y, _mask = RectMaskBackward.apply(x, self.activation.native, self.width, self.height)
            return y
        return RectBackward.apply(x, self.activation.native, self.width, self.height)

    def local_gradient(self, x: Tensor) -> Tensor:
        return (x.abs() < self.width).to(x.dtype).mul_(self.height)


class TriangularSurrogate(SurrogateActivation):
    """``f/Triang``: ``g = height max(0, 1 - |x| / width)``."""

    label = "triangular"

    def __init__(self, activation: Activation, width: float, height: float = 1.0) -> None:
        super().__init__(activation)
        self.width, self.height = width, height

    def settings(self) -> str:
        return f"width={self.width}" + (f", height={self.height}" if self.height != 1.0 else "")

    def forward(self, x: Tensor) -> Tensor:
        return TriangularBackward.apply(x, self.activation.native, self.width, self.height)

    def local_gradient(self, x: Tensor) -> Tensor:
        return (x.abs().clamp_max_(self.width).neg_().add_(self.width)
                .mul_(self.height / self.width))


class DLogisticSurrogate(SurrogateActivation):
    """``f/d(Log)``: ``g`` = the logistic's derivative whatever ``f`` is."""

    label = "d_logistic"

    def forward(self, x: Tensor) -> Tensor:
        from_output = self.activation.native is torch.sigmoid
        return DLogisticBackward.apply(x, self.activation.native, from_output)

    def local_gradient(self, x: Tensor) -> Tensor:
        return torch.ops.aten.sigmoid_backward(torch.ones_like(x), torch.sigmoid(x))


# ---------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------
def tied(params: BaseModel, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g = f': the forward activation's own derivative (plain back-propagation, f/d(f))."""
    return NativeActivation(activation)


def constant(params: ConstantParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = scale: straight-through gradient (the paper's /1, Fig. 6a)."""
    return ConstantSurrogate(activation, params.scale)


def rect(params: RectParams, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = height if |x| < width else 0 (the paper's /Rect, Fig. 6c)."""
    return RectSurrogate(activation, params.width, params.height, params.low_memory)


def triangular(params: TriangularParams, *, activation: Activation,
               ctx: RunContext) -> nn.Module:
    """g(x) = height max(0, 1 - |x|/width) (the paper's /Triang, Fig. 6d)."""
    return TriangularSurrogate(activation, params.width, params.height)


def d_logistic(params: BaseModel, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = s(x)(1 - s(x)), the logistic's derivative, for any forward (the paper's /d(Log))."""
    return DLogisticSurrogate(activation)


SURROGATES: dict[str, tuple[Callable[..., nn.Module], type[BaseModel] | None]] = {
    "tied": (tied, None),
    "constant": (constant, ConstantParams),
    "rect": (rect, RectParams),
    "triangular": (triangular, TriangularParams),
    "d_logistic": (d_logistic, None),
}
"""Name -> (factory, parameter model) of the deterministic surrogates (jamming: jamming.py)."""
