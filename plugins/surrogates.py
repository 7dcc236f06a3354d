"""Backward functions ``g`` that replace ``f'`` in back-propagation (METHODS.md section 1).

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
``full_jamming``       ``u k``                                              ``/FJ`` Fig. 8a
``positive_jamming``   ``u k if x >= 0 else 0``                             ``/PJ`` Fig. 8b
``rect_jamming``       ``u k if |x| <= window else 0`` (closed window)      ``/RJ`` Fig. 8c
=====================  ===================================================  ============

Jamming (Section 4, Experiment 5): ``u ~ U[0, 1)`` is drawn afresh for every element at every
backward pass from the run's seeded ``surrogate`` stream (``ctx.generator("surrogate")`` on the
gradient's device), never from the global RNG. The paper scales the noise "such that [its] mean
aligns with the average gradient magnitude observed in traditional gradient configurations":
with ``normalize="batch"``, ``k = 2 mean(f'(x))`` over the current tensor (``E[u k]`` is then
the mean tied derivative; for ``identity`` ``k = 2``; for ``step``/``sign``, whose ``f'`` is 0,
``k = 0`` and nothing is learnt - use ``normalize="none"``, ``k = 1``, there). ``k`` is computed
in the forward pass, so full jamming keeps one scalar for backward, not a tensor.

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
:func:`closed_window_bounds`; ``sigmoid_backward`` is ``grad * s (1 - s)``) and in-place
updates of fresh temporaries, and masks are multiplied as ``uint8`` (a byte view of the
``bool`` mask), which is several times faster on CPU than a ``bool`` multiply, ``where`` or
``masked_fill``. The low-memory mode pays one extra pass in forward to build the mask.

Jamming draws go through the custom operator ``untied_surrogates::uniform_like``: dynamo cannot
trace a ``torch.Generator`` argument, so compiled graphs carry the integer key of the site's
:class:`JammingStream` instead, and the operator (opaque to the compiler, tagged
``nondeterministic_seeded`` so it is never deduplicated) looks the generator up at run time.
Under ``torch.func.vmap`` it follows vmap's ``randomness`` argument (``"different"``: one draw
per batch entry; ``"same"``: one draw shared; ``"error"``, the default: raises).
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import Activation, NativeActivation, RunContext

Normalize = Literal["batch", "none"]
"""Jamming scale ``k``: ``"batch"`` = ``2 mean(f'(x))`` over the current tensor, ``"none"`` = 1."""

_POSITIVE_FINITE = dict(gt=0, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# Parameter models
# ---------------------------------------------------------------------------------------------
class ConstantParams(BaseModel):
    """``g(x) = scale``."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, **_POSITIVE_FINITE, description="the constant g")


class RectParams(BaseModel):
    """``g(x) = height if |x| < width else 0``."""

    model_config = ConfigDict(extra="forbid")
    width: float = Field(1.0, **_POSITIVE_FINITE, description="half-width of the open window")
    height: float = Field(1.0, **_POSITIVE_FINITE, description="g inside the window")
    low_memory: bool = Field(False, description="keep a 1-byte window mask instead of x")


class TriangularParams(BaseModel):
    """``g(x) = max(0, 1 - |x| / width)``; no ``low_memory``: g is not a 0/1 mask."""

    model_config = ConfigDict(extra="forbid")
    width: float = Field(1.0, **_POSITIVE_FINITE, description="half-width of the triangle's base")


class FullJammingParams(BaseModel):
    """``g = u k``."""

    model_config = ConfigDict(extra="forbid")
    normalize: Normalize = Field("batch", description="k = 2 mean(f'(x)) ('batch') or 1 ('none')")


class PositiveJammingParams(BaseModel):
    """``g = u k if x >= 0 else 0``."""

    model_config = ConfigDict(extra="forbid")
    normalize: Normalize = Field("batch", description="k = 2 mean(f'(x)) ('batch') or 1 ('none')")
    low_memory: bool = Field(False, description="keep a 1-byte mask of x >= 0 instead of x")


class RectJammingParams(BaseModel):
    """``g = u k if |x| <= window else 0``."""

    model_config = ConfigDict(extra="forbid")
    window: float = Field(5.0, **_POSITIVE_FINITE, description="half-width of the closed window")
    normalize: Normalize = Field("batch", description="k = 2 mean(f'(x)) ('batch') or 1 ('none')")
    low_memory: bool = Field(False, description="keep a 1-byte window mask instead of x")


# ---------------------------------------------------------------------------------------------
# The jamming random stream, reachable from compiled graphs
# ---------------------------------------------------------------------------------------------
_STREAMS: "weakref.WeakValueDictionary[int, JammingStream]" = weakref.WeakValueDictionary()
_STREAM_KEYS = itertools.count()


class JammingStream:
    """The run's ``surrogate`` random stream as seen by one jamming site.

    Registered under an integer ``key`` (held weakly) so that the ``uniform_like`` operator can
    find the generator from inside a compiled graph; the generator is created lazily on the
    device of the tensor being drawn for (``ctx.generator("surrogate", device=...)``), so every
    site of a run draws from the same seeded sequence.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.key = next(_STREAM_KEYS)
        _STREAMS[self.key] = self

    def generator(self, device: torch.device) -> torch.Generator:
        return self.ctx.generator("surrogate", device=device)

    def __getstate__(self) -> dict[str, Any]:
        return {"ctx": self.ctx}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ctx"])  # a copy registers under a key of its own


@torch.library.custom_op("untied_surrogates::uniform_like", mutates_args=(),
                         tags=(torch.Tag.nondeterministic_seeded,))
def uniform_like(like: Tensor, stream: int) -> Tensor:
    """``u ~ U[0, 1)`` shaped like ``like``, drawn from the generator of :class:`JammingStream`
    ``stream`` on ``like``'s device."""
    return torch.empty_like(like).uniform_(generator=_STREAMS[stream].generator(like.device))


@uniform_like.register_fake
def _uniform_like_fake(like: Tensor, stream: int) -> Tensor:
    return torch.empty_like(like)


def _uniform_like_vmap(info, in_dims, like: Tensor, stream: int):
    """Batching rule: always returns a batched (materialised) draw, so the backward can update it
    in place whether or not the incoming gradient is batched."""
    (like_dim, _) = in_dims
    if info.randomness == "error":
        raise RuntimeError("untied_surrogates::uniform_like (a jamming surrogate's draw) under "
                           "torch.func.vmap needs randomness='different' or 'same'")
    if info.randomness == "same":
        shape = list(like.shape)
        if like_dim is not None:
            del shape[like_dim]
        one = uniform_like(like.new_empty(shape), stream)
        return one.unsqueeze(0).expand(info.batch_size, *shape).clone(), 0
    if like_dim is None:
        return uniform_like(like.new_empty(info.batch_size, *like.shape), stream), 0
    return uniform_like(like, stream), like_dim


uniform_like.register_vmap(_uniform_like_vmap)


# ---------------------------------------------------------------------------------------------
# Window masks (1 byte per element)
# ---------------------------------------------------------------------------------------------
def open_window_mask(x: Tensor, width: float) -> Tensor:
    """``|x| < width`` as a ``uint8`` tensor (a byte view of the ``bool`` comparison)."""
    return (x.abs() < width).view(torch.uint8)


def closed_window_mask(x: Tensor, window: float | None) -> Tensor:
    """``|x| <= window`` (``window=None``: ``x >= 0``) as a ``uint8`` tensor."""
    inside = x >= 0 if window is None else x.abs() <= window
    return inside.view(torch.uint8)


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


class TriangularBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = dL/dy * max(0, 1 - |x| / width)`` backward (Fig. 6d).

    Saves ``x``. Computed as ``(w - min(|x|, w)) / w`` in place on one temporary, so that
    ``g`` is exactly 1 at ``x = 0`` and exactly (+)0 for ``|x| >= w``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, width: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.width = inputs[2]
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        w = ctx.width
        g = x.abs().clamp_max_(w).neg_().add_(w)
        if w != 1.0:
            g = g.div_(w)
        return g.mul_(grad), None, None


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


def _jam(grad: Tensor, stream: int, scale: Tensor | None, mask: Tensor | None) -> Tensor:
    """``dL/dy * u * mask * k`` with one fresh draw ``u``, all in place on the draw."""
    dx = uniform_like(grad, stream).mul_(grad)
    if mask is not None:
        dx = dx.mul_(mask)
    if scale is not None:
        dx = dx.mul_(scale)
    return dx


def closed_window_bounds(window: float | None, dtype: torch.dtype) -> tuple[float, float]:
    """Open bounds ``(lo, hi)`` with ``lo < x < hi`` exactly when ``x`` (of ``dtype``) lies in
    the closed window ``|x| <= window`` (``None``: ``x >= 0``): the neighbours in ``dtype`` of
    the window's ends (the ends rounded to ``dtype`` first, as a comparison with a Python float
    does). For ``x >= 0``, ``lo`` is minus the smallest subnormal, so the tie at 0 is inside -
    unless the process flushes subnormals to zero (``torch.set_flush_denormal(True)``)."""
    inf = torch.tensor(math.inf, dtype=dtype)
    if window is None:
        return torch.nextafter(torch.tensor(0.0, dtype=dtype), -inf).item(), math.inf
    hi = torch.nextafter(torch.tensor(window, dtype=dtype), inf).item()
    return -hi, hi


WINDOW_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class FullJammingBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = dL/dy * u * k`` backward, ``u ~ U[0, 1)`` (Fig. 8a).

    Saves only the scalar ``k`` (``None`` for ``normalize="none"``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, scale: Tensor | None, stream: int) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, _, scale, ctx.stream = inputs
        ctx.has_scale = scale is not None
        if ctx.has_scale:
            ctx.save_for_backward(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        scale = ctx.saved_tensors[0] if ctx.has_scale else None
        return _jam(grad, ctx.stream, scale, None), None, None, None


class WindowJammingBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = dL/dy * u * k * [x in window]`` backward (Fig. 8b, 8c): the
    window is ``x >= 0`` (positive jamming) or ``|x| <= window`` (rectangular jamming), given
    as the open bounds ``lo < x < hi`` of :func:`closed_window_bounds`. Saves ``x`` (and the
    scalar ``k``); the window is applied to the draw by one fused ``aten.hardtanh_backward``,
    in place on the draw in eager mode (:func:`eager_in_place`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, scale: Tensor | None, stream: int, lo: float,
                hi: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, scale, ctx.stream, ctx.lo, ctx.hi = inputs
        ctx.has_scale = scale is not None
        ctx.save_for_backward(x, *([scale] if ctx.has_scale else []))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, *scale = ctx.saved_tensors
        u = uniform_like(grad, ctx.stream)
        if eager_in_place():
            u = torch.ops.aten.hardtanh_backward.grad_input(u, x, ctx.lo, ctx.hi, grad_input=u)
        else:
            u = torch.ops.aten.hardtanh_backward(u, x, ctx.lo, ctx.hi)
        dx = u.mul_(grad)
        if scale:
            dx = dx.mul_(scale[0])
        return dx, None, None, None, None, None


class WindowJammingMaskBackward(torch.autograd.Function):
    """:class:`WindowJammingBackward` keeping the window as a 1-byte mask built in forward
    (a second, non-differentiable output) instead of ``x``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, scale: Tensor | None, stream: int,
                window: float | None) -> tuple[Tensor, Tensor]:
        return apply_forward(native, x), closed_window_mask(x, window)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, _, scale, ctx.stream, _ = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.has_scale = scale is not None
        ctx.save_for_backward(output[1], *([scale] if ctx.has_scale else []))

    @staticmethod
    def backward(ctx, grad: Tensor | None, _mask_grad: None):
        if grad is None:
            return None, None, None, None, None
        mask, *scale = ctx.saved_tensors
        return _jam(grad, ctx.stream, scale[0] if scale else None, mask), None, None, None, None


# ---------------------------------------------------------------------------------------------
# Modules (one per activation site)
# ---------------------------------------------------------------------------------------------
class SurrogateActivation(nn.Module):
    """An activation site: ``f`` forward, the surrogate ``g`` backward (the paper's ``f/g``)."""

    label = "g"

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


class TriangularSurrogate(SurrogateActivation):
    """``f/Triang``: ``g = max(0, 1 - |x| / width)``."""

    label = "triangular"

    def __init__(self, activation: Activation, width: float) -> None:
        super().__init__(activation)
        self.width = width

    def settings(self) -> str:
        return f"width={self.width}"

    def forward(self, x: Tensor) -> Tensor:
        return TriangularBackward.apply(x, self.activation.native, self.width)


class DLogisticSurrogate(SurrogateActivation):
    """``f/d(Log)``: ``g`` = the logistic's derivative whatever ``f`` is."""

    label = "d_logistic"

    def forward(self, x: Tensor) -> Tensor:
        from_output = self.activation.native is torch.sigmoid
        return DLogisticBackward.apply(x, self.activation.native, from_output)


class JammingSurrogate(SurrogateActivation):
    """Jamming (Fig. 8): ``g = u k`` on a window of ``x``, ``u ~ U[0, 1)`` fresh per element
    and backward pass, ``k = 2 mean(f'(x))`` (``normalize="batch"``) or 1.

    ``window``: ``"all"`` (full jamming), ``"positive"`` (``x >= 0``) or a half-width ``w``
    (``|x| <= w``)."""

    label = "jamming"

    def __init__(self, activation: Activation, ctx: RunContext, window: str | float,
                 normalize: Normalize, low_memory: bool = False) -> None:
        super().__init__(activation)
        self.window, self.normalize, self.low_memory = window, normalize, low_memory
        self.mask_window = None if window == "positive" else window
        self.bounds = ({} if window == "all" else
                       {dt: closed_window_bounds(self.mask_window, dt) for dt in WINDOW_DTYPES})
        self.stream = JammingStream(ctx)
        self.label = {"all": "full_jamming", "positive": "positive_jamming"}.get(
            str(window), "rect_jamming")

    def settings(self) -> str:
        window = "" if isinstance(self.window, str) else f"window={self.window}, "
        memory = "" if self.window == "all" else f", low_memory={self.low_memory}"
        return f"{window}normalize={self.normalize}{memory}"

    def jamming_scale(self, x: Tensor) -> Tensor | None:
        """``k = 2 mean(f'(x))`` over the current tensor (``normalize="batch"``), else None
        (``k = 1``)."""
        if self.normalize == "none":
            return None
        return self.activation.derivative(x.detach()).mean().mul(2)

    def forward(self, x: Tensor) -> Tensor:
        native, scale, key = self.activation.native, self.jamming_scale(x), self.stream.key
        if self.window == "all":
            return FullJammingBackward.apply(x, native, scale, key)
        if self.low_memory:
            y, _mask = WindowJammingMaskBackward.apply(x, native, scale, key, self.mask_window)
            return y
        lo, hi = self.bounds[x.dtype]
        return WindowJammingBackward.apply(x, native, scale, key, lo, hi)


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
    """g(x) = max(0, 1 - |x|/width) (the paper's /Triang, Fig. 6d)."""
    return TriangularSurrogate(activation, params.width)


def d_logistic(params: BaseModel, *, activation: Activation, ctx: RunContext) -> nn.Module:
    """g(x) = s(x)(1 - s(x)), the logistic's derivative, for any forward (the paper's /d(Log))."""
    return DLogisticSurrogate(activation)


def full_jamming(params: FullJammingParams, *, activation: Activation,
                 ctx: RunContext) -> nn.Module:
    """g = u*k, u ~ U[0,1] fresh per element and backward (the paper's /FJ, Fig. 8a)."""
    return JammingSurrogate(activation, ctx, "all", params.normalize)


def positive_jamming(params: PositiveJammingParams, *, activation: Activation,
                     ctx: RunContext) -> nn.Module:
    """g = u*k if x >= 0 else 0, u ~ U[0,1] (the paper's /PJ, Fig. 8b)."""
    return JammingSurrogate(activation, ctx, "positive", params.normalize, params.low_memory)


def rect_jamming(params: RectJammingParams, *, activation: Activation,
                 ctx: RunContext) -> nn.Module:
    """g = u*k if |x| <= window else 0, u ~ U[0,1] (the paper's /RJ, Fig. 8c)."""
    return JammingSurrogate(activation, ctx, params.window, params.normalize, params.low_memory)


SURROGATES: dict[str, tuple[Callable[..., nn.Module], type[BaseModel] | None]] = {
    "tied": (tied, None),
    "constant": (constant, ConstantParams),
    "rect": (rect, RectParams),
    "triangular": (triangular, TriangularParams),
    "d_logistic": (d_logistic, None),
    "full_jamming": (full_jamming, FullJammingParams),
    "positive_jamming": (positive_jamming, PositiveJammingParams),
    "rect_jamming": (rect_jamming, RectJammingParams),
}
"""Name -> (factory, parameter model) of every built-in surrogate."""


@hookimpl
def register_surrogates(register):
    for name, (factory, params) in SURROGATES.items():
        register(name, factory, params=params)
