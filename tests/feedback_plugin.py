"""A toy third-party plugin that changes the backward pass of dense layers, written the way
CONTRIBUTING describes (a reparametrization), for the tests of grouped runs, random streams, the
direction diagnostic and several reparametrizations per run. No built-in method is involved in
what it does.

``toy_feedback``: feedback alignment in miniature. Every ``nn.Linear`` gets a fixed random
feedback matrix ``B`` (the layer's weight shape, drawn from the run's ``toy_feedback`` stream
while the model is built) and a ``forward`` replaced on the instance by an autograd function
whose backward sends ``grad @ B`` to the layer below instead of ``grad @ W``. It declares
``tied``: the tied twin (the diagnostic's true gradient) is the model unchanged.

``toy_halve_grad``: a gradient hook halving every dense weight's gradient, without ``tied``
(so the conformance kit fails it: its forward is the model's but its gradients differ).

``toy_scale``: multiplies every dense layer's output by ``factor`` (a forward change), to test
that several reparametrizations apply in order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench_core.hookspecs import hookimpl

FEEDBACK_STREAM = "toy_feedback"


class _Feedback(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, feedback):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, bias, feedback = inputs
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        grad_bias = grad.sum(0) if ctx.has_bias else None
        return grad @ feedback, grad.t() @ x, grad_bias, None


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def toy_feedback(params, *, model, ctx, tied=False):
    """Fixed random feedback matrices for every dense layer (feedback alignment)."""
    if tied:
        return model
    gen = ctx.generator(FEEDBACK_STREAM, device="cpu")
    for layer in [m for m in model.modules() if type(m) is nn.Linear]:
        scale = 1.0 / layer.in_features ** 0.5
        feedback = torch.randn(layer.weight.shape, generator=gen) * scale
        layer.register_buffer("feedback", feedback.to(layer.weight.device))
        layer.forward = (lambda x, layer=layer: _Feedback.apply(x, layer.weight, layer.bias,
                                                                 layer.feedback))
    return model


def toy_halve_grad(params, *, model, ctx):
    """Halve every dense weight's gradient (a hook; undeclared backward change)."""
    for layer in [m for m in model.modules() if type(m) is nn.Linear]:
        layer.weight.register_hook(lambda g: g * 0.5)
    return model


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(2.0, gt=0)


class _Scaled(nn.Module):
    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


def toy_scale(params: ScaleParams, *, model, ctx):
    """Scale the model's output (a forward change)."""
    return _Scaled(model, params.factor)


@hookimpl
def register_reparametrizations(register):
    register("toy_feedback", toy_feedback, description="fixed random feedback (toy FA)")
    register("toy_halve_grad", toy_halve_grad, description="halved weight gradients")
    register("toy_scale", toy_scale, params=ScaleParams, description="scaled outputs")
