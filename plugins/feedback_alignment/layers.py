"""Dense and convolutional layers whose backward pass sends the error down through feedback
weights instead of ``W^T`` (docs/methods/feedback-alignment.md).

:class:`FeedbackLinear` and :class:`FeedbackConv2d` compute exactly what the ``nn.Linear`` /
``nn.Conv2d`` they replace computes, with the same ``weight`` and ``bias`` parameters (same
names, same tensors). Only the gradient they send to their input changes: it is
``feedback.input_gradient(...)``, where ``feedback`` (:mod:`.feedback`) is

* fixed random ``B`` (feedback alignment, Lillicrap et al. 2016: ``delta_{l-1} = B_l^T delta_l``),
* ``sign(W) o M`` (sign symmetry, Liao et al. 2016; Moskovitz et al. 2018), or
* the output error through a fixed random matrix (direct feedback alignment, Noekland 2016,
  ``delta a_l = (B_l e) o f'(a_l)``).

The weight and bias gradients are the usual local ones, ``dL/dW = delta^T x`` (for a
convolution, torch's ``conv2d_weight``): every method of the family changes only *which* error
``delta`` reaches a layer, never how a layer turns its error into an update. ``W`` enters the
backward pass only through what the feedback takes from it (sign symmetry's ``sign(W)``); the
autograd functions below do not save it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_weight


class _FeedbackLinearFn(torch.autograd.Function):
    """``y = x W^T + b``; backward: ``dL/dx`` from the feedback, ``dL/dW = delta^T x``."""

    @staticmethod
    def forward(x, weight, bias, layer):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, bias, layer = inputs
        ctx.save_for_backward(x)
        ctx.layer, ctx.has_bias = layer, bias is not None

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad_x = ctx.layer.feedback.input_gradient(ctx.layer, grad, x) \
            if ctx.needs_input_grad[0] else None
        grad_w = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        grad_b = grad.reshape(-1, grad.shape[-1]).sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


class _FeedbackConv2dFn(torch.autograd.Function):
    """A 2-d convolution; backward: ``dL/dx`` from the feedback, ``dL/dW`` the usual one."""

    @staticmethod
    def forward(x, weight, bias, layer):
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation,
                        layer.groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, layer = inputs
        ctx.save_for_backward(x)
        ctx.layer, ctx.has_bias, ctx.weight_shape = layer, bias is not None, weight.shape

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        layer = ctx.layer
        grad_x = layer.feedback.input_gradient(layer, grad, x) if ctx.needs_input_grad[0] \
            else None
        grad_w = conv2d_weight(x, ctx.weight_shape, grad, layer.stride, layer.padding,
                               layer.dilation, layer.groups)
        grad_b = grad.sum((0, 2, 3)) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


class FeedbackLinear(nn.Module):
    """``nn.Linear``'s forward with the backward of ``feedback`` (module docstring)."""

    def __init__(self, layer: nn.Linear, feedback: nn.Module) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight, self.bias = layer.weight, layer.bias
        self.feedback = feedback

    def forward(self, x: Tensor) -> Tensor:
        return _FeedbackLinearFn.apply(x, self.weight, self.bias, self)

    def transposed(self, grad: Tensor, backward_weight: Tensor, x: Tensor) -> Tensor:
        """``grad`` sent down through ``backward_weight`` in place of ``W`` (``grad @ B``)."""
        return grad @ backward_weight

    def epoch_measurements(self) -> dict[str, Tensor]:
        return self.feedback.measurements(self.weight)

    def stack_signature(self):
        """Layers of grouped runs stack when shapes and feedback kind agree; direct feedback
        alignment's layers share one output error per model and do not stack."""
        if not hasattr(self.feedback, "backward_weight"):
            return None
        return (tuple(self.weight.shape), self.bias is not None, type(self.feedback).__name__,
                getattr(self.feedback, "kind", None))

    @classmethod
    def stack(cls, layers: list["FeedbackLinear"]) -> "StackedFeedbackLinear":
        return StackedFeedbackLinear(layers)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class _StackedFeedbackLinearFn(torch.autograd.Function):
    """K dense feedback layers on ``(K, B, in)`` inputs: ``h W_k^T + b_k`` per run (one batched
    product); backward: each run's input error from its own feedback, exactly as alone."""

    @staticmethod
    def forward(h, weight, bias, stacked):
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)) if bias is not None \
            else torch.bmm(h, weight.transpose(1, 2))

    @staticmethod
    def setup_context(ctx, inputs, output):
        h, weight, bias, stacked = inputs
        ctx.save_for_backward(h, weight)
        ctx.stacked, ctx.has_bias = stacked, bias is not None

    @staticmethod
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        grad_h = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.stack([layer.feedback.input_gradient(layer, grad[k], h[k], weight[k])
                                  for k, layer in enumerate(ctx.stacked.layers)])
        grad_w = torch.bmm(grad.transpose(1, 2), h)
        return grad_h, grad_w, grad.sum(1) if ctx.has_bias else None, None


class StackedFeedbackLinear:
    """:class:`FeedbackLinear` layers of K runs stacked (``bench_core.grouping.stack_rule``)."""

    def __init__(self, layers: list[FeedbackLinear]) -> None:
        self.layers = layers
        self.weight = torch.stack([m.weight.detach() for m in layers]).requires_grad_()
        self.bias = torch.stack([m.bias.detach() for m in layers]).requires_grad_() \
            if layers[0].bias is not None else None

    def __call__(self, h: Tensor) -> Tensor:
        return _StackedFeedbackLinearFn.apply(h, self.weight, self.bias, self)

    def parameters(self) -> list[Tensor]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def write_back(self) -> None:
        with torch.no_grad():
            for k, layer in enumerate(self.layers):
                layer.weight.copy_(self.weight[k])
                if self.bias is not None:
                    layer.bias.copy_(self.bias[k])


class FeedbackConv2d(nn.Module):
    """``nn.Conv2d``'s forward (zero padding) with the backward of ``feedback``."""

    def __init__(self, layer: nn.Conv2d, feedback: nn.Module) -> None:
        super().__init__()
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(f"feedback layers support numeric zero padding only (got "
                             f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r})")
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.stride, \
            layer.padding
        self.dilation, self.groups = layer.dilation, layer.groups
        self.weight, self.bias = layer.weight, layer.bias
        self.feedback = feedback

    def forward(self, x: Tensor) -> Tensor:
        return _FeedbackConv2dFn.apply(x, self.weight, self.bias, self)

    def transposed(self, grad: Tensor, backward_weight: Tensor, x: Tensor) -> Tensor:
        """The transposed convolution of ``grad`` with ``backward_weight`` in place of ``W``."""
        return torch.nn.grad.conv2d_input(x.shape, backward_weight, grad, self.stride,
                                          self.padding, self.dilation, self.groups)

    def epoch_measurements(self) -> dict[str, Tensor]:
        return self.feedback.measurements(self.weight)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
               f"stride={self.stride}, padding={self.padding}"
