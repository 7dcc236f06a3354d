"""What each method of the family sends down a layer in place of ``W^T``: the feedback objects
that :class:`~untied_plugins.feedback_alignment.layers.FeedbackLinear` and
:class:`~untied_plugins.feedback_alignment.layers.FeedbackConv2d` consult in their backward
pass (docs/methods/feedback-alignment.md gives the equations and the choices made here).

Scales, where the papers leave them open (``init``): a random matrix for a layer of fan-in ``n``
is drawn from ``U(-a, a)`` with ``a = 1/sqrt(n)`` (``init = "torch"``, the bound of torch's default
initialisation of that layer's ``W``, so ``B`` starts with ``W``'s scale) or
``a = sqrt(6 / (n + m))`` with ``m`` the fan-out (``init = "xavier_uniform"``, Glorot & Bengio
2010: BioTorch's default for ``W`` and ``B``). Sign symmetry's magnitudes are ``|M|`` with ``M``
from the same distribution (``U(0, a)``); its uniform variant uses their root-mean-square,
``a / sqrt(3)``, so the three variants send errors of the same size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

SignMagnitude = Literal["uniform", "batchwise_random", "fixed_random"]
FeedbackInit = Literal["torch", "xavier_uniform"]


def uniform_bound(fan_in: int, fan_out: int, init: FeedbackInit) -> float:
    """``a`` of ``U(-a, a)``: ``1/sqrt(fan_in)`` (torch's default) or ``sqrt(6 / (fan_in +
    fan_out))`` (Xavier/Glorot uniform)."""
    if init == "xavier_uniform":
        return math.sqrt(6.0 / (fan_in + fan_out))
    return 1.0 / math.sqrt(fan_in)


def init_bound(weight: Tensor, init: FeedbackInit = "torch") -> float:
    """The bound for a matrix of ``weight``'s shape: fan-in = one output unit's inputs (a conv
    filter's ``C k k``), fan-out = ``weight.shape[0]`` times the kernel area (torch's count)."""
    fan_in = weight[0].numel()
    fan_out = weight.shape[0] * (weight[0][0].numel() if weight.dim() > 2 else 1)
    return uniform_bound(fan_in, fan_out, init)


def draw_uniform(shape: torch.Size | tuple, bound: float, gen: torch.Generator) -> Tensor:
    """``U(-bound, bound)`` of ``shape`` from ``gen`` (on the generator's device)."""
    return (torch.rand(shape, generator=gen, device=gen.device) * 2 - 1) * bound


def alignment(weight: Tensor, backward_weight: Tensor) -> dict[str, Tensor]:
    """The angle in degrees between ``W`` and the backward weights ``B`` (both flattened; 0:
    ``B`` is a positive multiple of ``W``, as in back-propagation) and the norm ratio
    ``||W||_F / ||B||_F``, as 0-d tensors (no host sync)."""
    with torch.no_grad():
        w, b = weight.flatten(), backward_weight.flatten()
        norm_w, norm_b = torch.linalg.vector_norm(w), torch.linalg.vector_norm(b)
        cosine = ((w @ b) / (norm_w * norm_b)).clamp(-1.0, 1.0)
        return {"alignment_angle": torch.rad2deg(torch.arccos(cosine)),
                "norm_ratio": norm_w / norm_b}


class WeightShapedFeedback(nn.Module):
    """A feedback with ``W``'s shape: the error goes down as through ``W``, with
    :meth:`backward_weight` in its place (``delta_{l-1} = B^T delta_l``, up to the activation).
    ``used``: whether it has carried an error yet; the first layer's never does (its input is
    the data), so it reports no alignment (a ``B`` that never acts stays at ~90 degrees)."""

    used = False

    def backward_weight(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def input_gradient(self, layer: nn.Module, grad: Tensor, x: Tensor,
                       weight: Tensor | None = None) -> Tensor:
        """The error sent to ``layer``'s input; ``weight``: ``W``'s current value when it is
        not the layer's own (a stacked copy, :meth:`FeedbackLinear.stack`)."""
        weight = layer.weight.detach() if weight is None else weight
        self.used = True
        return layer.transposed(grad, self.backward_weight(weight), x)

    def measurements(self, weight: Tensor) -> dict[str, Tensor]:
        if not self.used:
            return {}
        return alignment(weight, self.backward_weight(weight.detach()))


class RandomFeedback(WeightShapedFeedback):
    """Feedback alignment: a fixed random ``B`` (Lillicrap et al. 2016), stored in ``W``'s
    shape (the paper's ``B`` is its transpose)."""

    def __init__(self, weight: Tensor, gen: torch.Generator, init: FeedbackInit = "torch") -> None:
        super().__init__()
        self.register_buffer("matrix", draw_uniform(weight.shape, init_bound(weight, init), gen))

    def backward_weight(self, weight: Tensor) -> Tensor:
        return self.matrix


class SignFeedback(WeightShapedFeedback):
    """Sign symmetry: ``B = sign(W) o M`` (Liao, Leibo & Poggio 2016; Moskovitz et al. 2018),
    ``M`` uniform, redrawn for every backward pass (``batchwise_random``: once per mini-batch)
    or drawn once (``fixed_random``)."""

    def __init__(self, weight: Tensor, magnitude: SignMagnitude, gen: torch.Generator,
                 init: FeedbackInit = "torch") -> None:
        super().__init__()
        self.kind, self.bound = magnitude, init_bound(weight, init)
        self.scale = self.bound / math.sqrt(3.0)    # rms of |U(-bound, bound)|
        self.generator = gen if magnitude == "batchwise_random" else None
        if magnitude == "fixed_random":
            self.register_buffer("magnitude", draw_uniform(weight.shape, self.bound, gen).abs())

    def signed(self, weight: Tensor) -> tuple[Tensor, float]:
        """``(S, c)`` with ``B = c S``: the constant factor kept apart, so that the backward
        can apply it to whichever of the error or ``S`` is smaller. ``copysign(|M|, W)`` is
        ``sign(W) o |M|`` in one pass (``W = 0`` exactly, which a continuous initialisation
        never gives, would count as +0)."""
        if self.kind == "fixed_random":
            return torch.copysign(self.magnitude, weight), 1.0
        if self.kind == "batchwise_random":
            gen = self.generator
            draw = torch.rand(weight.shape, generator=gen, device=gen.device, dtype=weight.dtype)
            return torch.copysign(draw, weight), self.bound
        return torch.sign(weight), self.scale

    def backward_weight(self, weight: Tensor) -> Tensor:
        signed, factor = self.signed(weight)
        return signed * factor if factor != 1.0 else signed

    def input_gradient(self, layer: nn.Module, grad: Tensor, x: Tensor,
                       weight: Tensor | None = None) -> Tensor:
        signed, factor = self.signed(layer.weight.detach() if weight is None else weight)
        self.used = True
        if factor != 1.0:
            if grad.numel() <= signed.numel():
                grad = grad * factor
            else:
                signed = signed.mul_(factor)
        return layer.transposed(grad, signed, x)

    def measurements(self, weight: Tensor) -> dict[str, Tensor]:
        # a batchwise draw here would move the run's random stream: its expected-size
        # magnitude (the rms) stands for it, so the angle is that of sign(W) with W
        if self.kind == "batchwise_random" and self.used:
            return alignment(weight, torch.sign(weight.detach()) * self.scale)
        return super().measurements(weight)


class OutputError:
    """The output error ``e`` of the current backward pass, shared by one model's layers."""

    error: Tensor | None = None


class DirectFeedback(nn.Module):
    """Direct feedback alignment (Noekland 2016): the gradient sent to a layer's input
    is ``B e``, the output error ``e = dL/da_L`` (what reached the output layer) through a fixed
    random matrix ``B`` of shape ``(input size, outputs)``, whatever the layers above did. The
    output layer records ``e`` first (backward runs from the top). ``B`` is drawn when first
    needed (its shape depends on the input size) from the generator the layer got at build."""

    def __init__(self, shared: OutputError, is_output: bool, gen: torch.Generator,
                 init: FeedbackInit = "torch") -> None:
        super().__init__()
        self.shared, self.is_output, self.generator, self.init = shared, is_output, gen, init
        self.register_buffer("matrix", None)

    def input_gradient(self, layer: nn.Module, grad: Tensor, x: Tensor) -> Tensor:
        if self.is_output:
            self.shared.error = grad.reshape(grad.shape[0], -1)
        error = self.shared.error
        if error is None:
            raise RuntimeError("direct feedback alignment: no output error recorded (the "
                               "output layer must be the model's last dense/conv layer)")
        if self.matrix is None:
            size = x[0].numel()
            bound = uniform_bound(size, error.shape[1], self.init)
            self.matrix = draw_uniform((size, error.shape[1]), bound,
                                       self.generator).to(x.device, x.dtype)
        return (error @ self.matrix.t()).view(x.shape)

    def measurements(self, weight: Tensor) -> dict[str, Tensor]:
        return {}   # B has no W shape: the direction diagnostic measures DFA's alignment
