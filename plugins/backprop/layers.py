"""Building blocks the built-in models share: dense and convolutional layers (real or
BinaryConnect), 2x2 pooling (quadratic mean, average, max), initialisation schemes, image
inputs, and :class:`LayeredSequential` (a model whose ``blocks()`` serve layer-local
trainers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from untied_plugins.backprop.binary_layers import BinaryConv2d, BinaryLinear

from bench_core.layered import Block

# ---- building blocks -----------------------------------------------------------------------
QUADRATIC_POOL_EPS = 1e-12
"""Added inside the square root of quadratic-mean pooling: sqrt'(0) is infinite, and a window of
zeros (common after ReLU or a step activation) would otherwise give a NaN gradient. The forward
value of an all-zero window becomes sqrt(1e-12) = 1e-6; any other window is changed by at most
~1e-12 / (2 y). With the eps the gradient is bounded: |dy/dx_i| = |x_i| / (4 y) <= 1/2."""


class QuadraticMeanPool2d(nn.Module):
    """Quadratic-mean (root-mean-square) pooling ``y = sqrt(mean_window(x^2) + eps)`` over
    non-overlapping ``kernel_size`` windows: LeNet5's pooling in Troiano et al., Section 4.1.

    Computed as ``avg_pool2d(x * x)`` then ``sqrt``, one fused pass each; see
    :data:`QUADRATIC_POOL_EPS` for why the gradient stays finite at ``x = 0``.
    """

    def __init__(self, kernel_size: int = 2, eps: float = QUADRATIC_POOL_EPS,
                 total: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or eps <= 0:
            raise ValueError(f"need kernel_size >= 1 and eps > 0 (got {kernel_size}, {eps})")
        self.kernel_size, self.eps, self.total = kernel_size, eps, total

    def forward(self, x: Tensor) -> Tensor:
        y = torch.sqrt(F.avg_pool2d(x * x, self.kernel_size) + self.eps)
        return y * self.kernel_size if self.total else y

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, eps={self.eps}"
                + (", total=True" if self.total else ""))


def pooling(kind: str) -> nn.Module:
    """A 2x2, stride-2 pooling layer: ``quadratic`` (the root mean square of the window),
    ``quadratic_sum`` (the root of its sum of squares, ``nn.LPPool2d(2, 2)``: twice the quadratic
    mean, with the same ``eps``), ``avg`` or ``max``."""
    if kind == "quadratic":
        return QuadraticMeanPool2d(2)
    if kind == "quadratic_sum":
        return QuadraticMeanPool2d(2, total=True)
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "max":
        return nn.MaxPool2d(2)
    raise ValueError(f"unknown pooling '{kind}' (expected quadratic, quadratic_sum, avg or max)")


def dense(n_in: int, n_out: int, *, bias: bool = True, binary: bool = False) -> nn.Linear:
    """A dense layer, BinaryConnect when ``binary``."""
    return BinaryLinear(n_in, n_out, bias=bias) if binary else nn.Linear(n_in, n_out, bias=bias)


def conv(c_in: int, c_out: int, kernel: int, padding: int, *, binary: bool = False) -> nn.Conv2d:
    """A square-kernel 2-d convolution, BinaryConnect when ``binary``."""
    if binary:
        return BinaryConv2d(c_in, c_out, kernel, padding=padding)
    return nn.Conv2d(c_in, c_out, kernel, padding=padding)


def _initialise(model: nn.Module, layer_types: tuple[type, ...], init_weight) -> nn.Module:
    """``init_weight(weight)`` on every layer of ``layer_types`` in ``model``, biases 0."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, layer_types):
                init_weight(layer.weight)
                if layer.bias is not None:
                    layer.bias.zero_()
    return model


def he_normal_(model: nn.Module) -> nn.Module:
    """He-normal initialisation of every dense layer: ``W ~ N(0, 2 / fan_in)``, bias 0."""
    return _initialise(model, (nn.Linear,),
                       lambda w: w.normal_(0.0, math.sqrt(2.0 / w.shape[1])))


def xavier_uniform_(model: nn.Module) -> nn.Module:
    """Glorot-uniform initialisation of every conv and dense layer (gain 1), bias 0."""
    return _initialise(model, (nn.Linear, nn.Conv2d), nn.init.xavier_uniform_)


def image_shape(input_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input; a flat perfect-square input ``(s*s,)`` -> ``(1, s, s)``."""
    if len(input_shape) == 3:
        return tuple(int(d) for d in input_shape)  # type: ignore[return-value]
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side == input_shape[0]:
            return (1, side, side)
    raise ValueError(f"{model} needs an image input (C, H, W), or a flat input whose size is a "
                     f"perfect square (read as one s x s image); got shape {tuple(input_shape)}")


def image_input(input_shape: tuple[int, ...], chw: tuple[int, int, int]) -> list[nn.Module]:
    """The layer turning a flat batch ``(N, s*s)`` into images ``(N, 1, s, s)``, if needed."""
    return [] if tuple(input_shape) == chw else [nn.Unflatten(1, chw)]


class LayeredSequential(nn.Sequential):
    """An ``nn.Sequential`` that also exposes its hidden layers as blocks
    (:mod:`bench_core.layered`). ``spans`` holds, per block, plain indices into the sequence:
    ``(name, pre, layer, post, width, spatial)`` with ``pre``/``post`` tuples of indices; no module
    is registered twice, so ``state_dict`` and ``parameters()`` are the ``nn.Sequential``'s."""

    def __init__(self, *layers: nn.Module, spans: list[tuple] = ()) -> None:
        super().__init__(*layers)
        self.spans = list(spans)

    def blocks(self) -> list[Block]:
        def seq(indices: tuple[int, ...]) -> nn.Module:
            if not indices:
                return nn.Identity()
            return self[indices[0]] if len(indices) == 1 else nn.Sequential(
                *(self[i] for i in indices))

        return [Block(name=name, layer=self[layer], width=width, spatial=spatial,
                      pre=seq(pre), post=seq(post))
                for name, pre, layer, post, width, spatial in self.spans]
