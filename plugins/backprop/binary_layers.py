"""BinaryConnect layers (Courbariaux, Bengio & David 2015), the binary-weight option of the BNN
experiments in Troiano et al. (2025), Section 5 and docs/methods/troiano.md "BNN".

Each layer keeps *latent* real-valued weights ``W`` (what the optimiser updates) and computes its
forward pass with ``W_b = sign(W)``, where ``sign(0) = +1`` (the same tie-break as the ``sign``
activation). Back-propagation treats the binarisation as a straight-through estimator clipped to
the latent range: ``dL/dW = dL/dW_b * 1{|W| <= 1}``. After every update the trainer calls
:meth:`constrain_` (see :func:`bench_core.interfaces.constraint_hooks`), which clips the latent
weights to ``[-1, 1]``; outside that range ``sign(W)`` could no longer change, so the weights
would drift for nothing. Biases stay real-valued and are neither binarised nor clipped.

The layers are imported by :mod:`untied_plugins.backprop.models`; they are not a component of their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _BinarizeStraightThrough(torch.autograd.Function):
    """``sign(w)`` (+1 at 0) forward; gradient passed through where ``|w| <= 1``, 0 elsewhere.

    Saves nothing beyond the latent weight tensor, which the layer holds anyway.
    """

    @staticmethod
    def forward(latent: Tensor) -> Tensor:
        return torch.where(latent >= 0, 1.0, -1.0).to(latent.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (latent,) = inputs
        ctx.save_for_backward(latent)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (latent,) = ctx.saved_tensors
        return grad * (latent.abs() <= 1).to(grad.dtype)


def binarize(latent: Tensor) -> Tensor:
    """BinaryConnect's deterministic binarisation ``sign(W)`` with the clipped straight-through
    gradient ``1{|W| <= 1}`` (Courbariaux et al. 2015, Section 2)."""
    return _BinarizeStraightThrough.apply(latent)


class BinaryConnectMixin:
    """Shared part of the BinaryConnect layers: the latent-weight clip after each update."""

    weight: nn.Parameter

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clip the latent weights to ``[-1, 1]`` in place (called after every rule step)."""
        self.weight.clamp_(-1.0, 1.0)

    def binary_weight(self) -> Tensor:
        """The weights the forward pass uses: ``sign(W)`` in {-1, +1}."""
        return binarize(self.weight)


class BinaryLinear(BinaryConnectMixin, nn.Linear):
    """``y = x sign(W)^T + b`` with latent real weights ``W`` (BinaryConnect)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.constrain_()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", binary_weights=True"


class BinaryConv2d(BinaryConnectMixin, nn.Conv2d):
    """2-d convolution with kernel ``sign(W)`` and latent real weights ``W`` (BinaryConnect)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.constrain_()

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", binary_weights=True"
