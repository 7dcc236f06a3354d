"""Jamming surrogates (Troiano et al. 2025, Section 4, Experiment 5, Fig. 8): the backward
magnitude ``g`` is random, ``u ~ U[0, 1)`` on a window of the pre-activation ``x``.

=====================  ===================================================  ============
name                   g(x)                                                 paper
=====================  ===================================================  ============
``full_jamming``       ``u k``                                              ``/FJ`` Fig. 8a
``positive_jamming``   ``u k if x >= 0 else 0``                             ``/PJ`` Fig. 8b
``rect_jamming``       ``u k if |x| <= window else 0`` (closed window)      ``/RJ`` Fig. 8c
=====================  ===================================================  ============

Jamming (Section 4, Experiment 5): ``u ~ U[0, 1)`` is drawn afresh for every element at every
backward pass from the run's seeded ``surrogate`` stream (``ctx.generator("surrogate")`` on the
gradient's device), never from the global RNG. The paper scales the noise "such that [its] mean
aligns with the average gradient magnitude observed in traditional gradient configurations"
(docs/methods/troiano.md, as corrected): with ``normalize="batch"``, over the current tensor,

    ``k = 2 mean(f'(x)) / share(window)``,

``share(window)`` being the fraction of the tensor's elements inside the window (1 for full
jamming), so that the mean of ``g`` over the *whole* tensor, ``E[u] k share = k share / 2``,
equals the mean tied derivative ``mean(f'(x))`` for all three families (without the division,
positive jamming of a linear net would back-propagate half the tied magnitude). For
``identity`` full jamming has ``k = 2``; for ``step``/``sign``, whose ``f'`` is 0, ``k = 0`` and
nothing is learnt - use ``normalize="none"`` (``k = 1``) there. A window with no element inside
gives ``g = 0`` (the share is bounded below by ``1/numel`` so that ``k`` stays finite).

Where the window is taken (``window_on``, PJ and RJ): the paper's text puts it on the *feedback
gradient* ``dL/dy`` ("exclusively when the feedback gradient is non-negative"), the caption of
its Fig. 8 on the pre-activation ``x``. ``window_on="input"`` (the default, docs/methods/troiano.md) windows
``x``: ``k`` is computed in the forward pass (one scalar kept for backward) and ``x`` (or a
1-byte mask, ``low_memory``) is kept for the window. ``window_on="gradient"`` windows ``dL/dy``:
only the scalar ``2 mean(f'(x))`` is kept, and the share of the gradient's elements inside the
window is taken in the backward pass.

Jamming draws go through the custom operator ``untied_surrogates::uniform_like``: dynamo cannot
trace a ``torch.Generator`` argument, so compiled graphs carry the integer key of the site's
:class:`JammingStream` instead, and the operator (opaque to the compiler, tagged
``nondeterministic_seeded`` so it is never deduplicated) looks the generator up at run time.
Under ``torch.func.vmap`` it follows vmap's ``randomness`` argument (``"different"``: one draw
per batch entry; ``"same"``: one draw shared; ``"error"``, the default: raises).

Speed: on large float32/float64 tensors in a plain eager run, the window's count for ``k``
(forward) and the product after the draw (backward) are one compiled pass each
(:data:`COUNT_IN_WINDOW`, :data:`JAM_PRODUCT`, :data:`WINDOW_JAM_PRODUCT`), bitwise the eager
passes' result; elsewhere the eager passes run.

The deterministic surrogates, the shared ``SurrogateActivation`` base and the memory and speed
conventions are in :mod:`untied_plugins.troiano.surrogates`.
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn
from untied_plugins.troiano.surrogates import (
    POSITIVE_FINITE,
    Native,
    SurrogateActivation,
    apply_forward,
    eager_in_place,
)

from bench_core.interfaces import Activation, RunContext
from bench_core.kit.compiled import FusedElementwise

Normalize = Literal["batch", "none"]
"""Jamming scale ``k``: ``"batch"`` = ``2 mean(f'(x)) / share(window)`` over the current tensor,
``"none"`` = 1."""
WindowOn = Literal["input", "gradient"]
"""What the PJ/RJ window tests: the pre-activation ``x`` or the feedback gradient ``dL/dy``."""
_NORMALIZE = "k = 2 mean(f'(x)) / share in window ('batch') or 1 ('none')"
ScaleOf = Callable[[Tensor, Tensor], Tensor]
"""``k`` (or its numerator) from the input ``x`` and the output ``y = f(x)`` of a site, computed
in the Function's ``setup_context``, after ``f``: :meth:`JammingSurrogate.jamming_scale`."""


class FullJammingParams(BaseModel):
    """``g = u k``."""

    model_config = ConfigDict(extra="forbid")
    normalize: Normalize = Field("batch", description=_NORMALIZE)


class _WindowJammingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    normalize: Normalize = Field("batch", description=_NORMALIZE)
    window_on: WindowOn = Field("input", description="window on the pre-activation x (Fig. 8) "
                                "or on the feedback gradient dL/dy (the paper's text)")
    low_memory: bool = Field(False, description="keep a 1-byte window mask instead of x "
                             "(window_on = 'input' only)")

    @model_validator(mode="after")
    def _memory_option(self):
        if self.low_memory and self.window_on == "gradient":
            raise ValueError("low_memory keeps a mask of x; with window_on = 'gradient' nothing "
                             "but a scalar is kept anyway")
        return self


class PositiveJammingParams(_WindowJammingParams):
    """``g = u k if x >= 0 else 0`` (``window_on="gradient"``: if ``dL/dy >= 0``)."""


class _RectWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: float = Field(5.0, **POSITIVE_FINITE, description="half-width of the closed window")


class RectJammingParams(_WindowJammingParams, _RectWindow):
    """``g = u k if |x| <= window else 0`` (``window_on="gradient"``: if ``|dL/dy| <= window``).
    (Pydantic lists the last base's fields first: ``window`` comes first.)"""


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


def draw_uniform(like: Tensor, stream: int) -> Tensor:
    """The jamming draw: :func:`uniform_like`, called straight (the same two calls) in a plain
    eager backward, where the custom operator's dispatch would cost more than a small draw
    (about 0.2 ms a call on the CPU, measured in a LeNet5 step); through the operator under
    ``torch.compile`` and ``torch.func`` transforms, which need it."""
    if eager_in_place():
        return torch.empty_like(like).uniform_(generator=_STREAMS[stream].generator(like.device))
    return uniform_like(like, stream)


def closed_window_mask(x: Tensor, window: float | None) -> Tensor:
    """``|x| <= window`` (``window=None``: ``x >= 0``) as a ``uint8`` tensor."""
    inside = x >= 0 if window is None else x.abs() <= window
    return inside.view(torch.uint8)


# ---------------------------------------------------------------------------------------------
# autograd Functions and the module
# ---------------------------------------------------------------------------------------------
def _jam_product(u: Tensor, grad: Tensor, mask: Tensor | None, scale: Tensor | None) -> Tensor:
    """``((u * dL/dy) * mask) * k``, left to right, in place on the draw ``u``."""
    u.mul_(grad)
    if mask is not None:
        u.mul_(mask)
    if scale is not None:
        u.mul_(scale)
    return u


def _window_jam_product(u: Tensor, x: Tensor, grad: Tensor, lo: float, hi: float,
                        scale: Tensor | None) -> Tensor:
    """``(u [lo < x < hi] * dL/dy) * k`` in place on the draw ``u``: ``aten.hardtanh_backward``'s
    window (``u`` where ``lo < x < hi``, else 0: a NaN ``x`` gives 0), then the products in
    order."""
    dx = torch.where((x > lo) & (x < hi), u, 0.0) * grad
    return u.copy_(dx if scale is None else dx * scale)


JAM_PRODUCT = FusedElementwise(_jam_product)
WINDOW_JAM_PRODUCT = FusedElementwise(_window_jam_product)
"""The jamming backward after its draw ``u`` as one compiled pass (float32/float64, large
tensors, plain eager backward: :class:`bench_core.kit.compiled.FusedElementwise`), where the
eager form makes two to three. In place on the draw (a fresh output of this size would cost its
page faults every call). Only multiplications and a selection, in the eager form's order:
bitwise the eager result."""


def _jam(grad: Tensor, stream: int, scale: Tensor | None, mask: Tensor | None) -> Tensor:
    """``dL/dy * u * mask * k`` with one fresh draw ``u``: one fused pass over the draw
    (:data:`JAM_PRODUCT`), else in place on the draw."""
    u = draw_uniform(grad, stream)
    if mask is None:
        return JAM_PRODUCT((u, grad), None, scale)
    return JAM_PRODUCT((u, grad, mask), scale)


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
    def forward(x: Tensor, native: Native, scale_of: ScaleOf | None, stream: int) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, scale_of, ctx.stream = inputs
        scale = None if scale_of is None else scale_of(x, output)
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
    def forward(x: Tensor, native: Native, scale_of: ScaleOf | None, stream: int, lo: float,
                hi: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, scale_of, ctx.stream, ctx.lo, ctx.hi = inputs
        scale = None if scale_of is None else scale_of(x, output)
        ctx.has_scale = scale is not None
        ctx.save_for_backward(x, *([scale] if ctx.has_scale else []))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, *scale = ctx.saved_tensors
        u = draw_uniform(grad, ctx.stream)
        if WINDOW_JAM_PRODUCT.applies(u, x, grad):
            dx = WINDOW_JAM_PRODUCT((u, x, grad), ctx.lo, ctx.hi, scale[0] if scale else None)
            return dx, None, None, None, None, None
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
    def forward(x: Tensor, native: Native, scale_of: ScaleOf | None, stream: int,
                window: float | None) -> tuple[Tensor, Tensor]:
        return apply_forward(native, x), closed_window_mask(x, window)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, scale_of, ctx.stream, _ = inputs
        scale = None if scale_of is None else scale_of(x, output[0])
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


class GradientWindowJammingBackward(torch.autograd.Function):
    """``f`` forward, ``dL/dx = dL/dy * u * k * [dL/dy in window]`` backward: the window of
    positive or rectangular jamming taken on the feedback gradient (the paper's text), given as
    open bounds ``lo < dL/dy < hi`` (:func:`closed_window_bounds`). ``numerator`` is
    ``2 mean(f'(x))`` from the forward pass (``None``: ``k = 1``); the share of the gradient's
    elements inside the window is taken here, so ``k = numerator / share``. Saves one scalar."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, native: Native, numerator_of: ScaleOf | None, stream: int,
                lo: float, hi: float) -> Tensor:
        return apply_forward(native, x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, _, numerator_of, ctx.stream, ctx.lo, ctx.hi = inputs
        numerator = None if numerator_of is None else numerator_of(x, output)
        ctx.has_scale = numerator is not None
        if ctx.has_scale:
            ctx.save_for_backward(numerator)

    @staticmethod
    def backward(ctx, grad: Tensor):
        inside = torch.logical_and(grad > ctx.lo, grad < ctx.hi)
        dx = draw_uniform(grad, ctx.stream).mul_(grad).mul_(inside)
        if ctx.has_scale:
            share = window_share(inside)
            dx = dx.mul_(ctx.saved_tensors[0] / share)
        return dx, None, None, None, None, None


def window_share(inside: Tensor) -> Tensor:
    """The fraction of ``inside``'s elements that are true (or non-zero), bounded below by
    ``1 / numel``: a window with no element inside then has a finite ``k`` and ``g = 0``."""
    return share_of_count(torch.count_nonzero(inside), inside.numel())


def share_of_count(count: Tensor, numel: int) -> Tensor:
    """:func:`window_share` from the count of elements inside."""
    return count.to(torch.float32).clamp_min(1.0).div(max(numel, 1))


def _count_in_window(x: Tensor, window: float | None) -> Tensor:
    """The number of elements of ``x`` in the closed window (:func:`closed_window_mask`)."""
    return (x >= 0 if window is None else x.abs() <= window).sum()


COUNT_IN_WINDOW = FusedElementwise(_count_in_window)
"""The window's count in one compiled pass over ``x`` (an integer count: exact, the same as the
eager mask's ``count_nonzero``), where the eager form writes a mask and reads it again."""


def window_share_of(x: Tensor, window: float | None) -> Tensor:
    """:func:`window_share` of :func:`closed_window_mask` ``(x, window)``, from
    :data:`COUNT_IN_WINDOW` where it applies."""
    with torch.no_grad():
        if COUNT_IN_WINDOW.applies(x):
            return share_of_count(COUNT_IN_WINDOW((x,), window), x.numel())
    return window_share(closed_window_mask(x, window))


class JammingSurrogate(SurrogateActivation):
    """Jamming (Fig. 8): ``g = u k`` on a window, ``u ~ U[0, 1)`` fresh per element and
    backward pass, ``k = 2 mean(f'(x)) / share(window)`` (``normalize="batch"``) or 1.

    ``window``: ``"all"`` (full jamming), ``"positive"`` (``>= 0``) or a half-width ``w``
    (``|.| <= w``), tested on ``x`` (``window_on="input"``) or on ``dL/dy`` (``"gradient"``)."""

    label = "jamming"
    elementwise = False  # k normalises over the tensor; u comes from the run's own generator
    local_gradient = None

    def __init__(self, activation: Activation, ctx: RunContext, window: str | float,
                 normalize: Normalize, low_memory: bool = False,
                 window_on: WindowOn = "input") -> None:
        super().__init__(activation)
        self.window, self.normalize, self.low_memory = window, normalize, low_memory
        self.window_on = window_on
        self.mask_window = None if window == "positive" else window
        self.bounds = ({} if window == "all" else
                       {dt: closed_window_bounds(self.mask_window, dt) for dt in WINDOW_DTYPES})
        self.stream = JammingStream(ctx)
        self.label = {"all": "full_jamming", "positive": "positive_jamming"}.get(
            str(window), "rect_jamming")

    def settings(self) -> str:
        window = "" if isinstance(self.window, str) else f"window={self.window}, "
        where = "" if self.window == "all" else f", window_on={self.window_on}"
        memory = "" if self.window == "all" else f", low_memory={self.low_memory}"
        return f"{window}normalize={self.normalize}{where}{memory}"

    def jamming_scale(self, x: Tensor, y: Tensor | None = None) -> Tensor | None:
        """``k`` over the current tensor: ``2 mean(f'(x)) / share(x in window)`` for a window
        on ``x`` (1 for full jamming), the numerator ``2 mean(f'(x))`` alone for a window on
        the gradient (whose share is known in backward only); None for ``normalize="none"``
        (``k = 1``). With the output ``y = f(x)``, ``f'`` comes from it where the activation
        gives ``derivative_of_output`` (the same values, without evaluating ``f`` again)."""
        if self.normalize == "none":
            return None
        x = x.detach()
        of_output = self.activation.derivative_of_output
        if y is not None and of_output is not None:
            derivative = of_output(y.detach())
        else:
            derivative = self.activation.derivative(x)
        k = derivative.mean().mul(2)
        if self.window == "all" or self.window_on == "gradient":
            return k
        return k / window_share_of(x, self.mask_window)

    def forward(self, x: Tensor) -> Tensor:
        native, key = self.activation.native, self.stream.key
        scale_of = None if self.normalize == "none" else self.jamming_scale
        if self.window == "all":
            return FullJammingBackward.apply(x, native, scale_of, key)
        if self.window_on == "gradient":
            lo, hi = self.bounds[x.dtype]
            return GradientWindowJammingBackward.apply(x, native, scale_of, key, lo, hi)
        if self.low_memory:
            y, _mask = WindowJammingMaskBackward.apply(x, native, scale_of, key, self.mask_window)
            return y
        lo, hi = self.bounds[x.dtype]
        return WindowJammingBackward.apply(x, native, scale_of, key, lo, hi)


def full_jamming(params: FullJammingParams, *, activation: Activation,
                 ctx: RunContext) -> nn.Module:
    """g = u*k, u ~ U[0,1] fresh per element and backward (the paper's /FJ, Fig. 8a)."""
    return JammingSurrogate(activation, ctx, "all", params.normalize)


def positive_jamming(params: PositiveJammingParams, *, activation: Activation,
                     ctx: RunContext) -> nn.Module:
    """g = u*k if x >= 0 else 0, u ~ U[0,1] (the paper's /PJ, Fig. 8b)."""
    return JammingSurrogate(activation, ctx, "positive", params.normalize, params.low_memory,
                            params.window_on)


def rect_jamming(params: RectJammingParams, *, activation: Activation,
                 ctx: RunContext) -> nn.Module:
    """g = u*k if |x| <= window else 0, u ~ U[0,1] (the paper's /RJ, Fig. 8c)."""
    return JammingSurrogate(activation, ctx, params.window, params.normalize, params.low_memory,
                            params.window_on)
