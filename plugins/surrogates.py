"""Backward functions ``g`` that replace ``f'`` in back-propagation (METHODS.md section 1)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import NativeActivation


class ConstantParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, gt=0)


class RectParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: float = Field(1.0, gt=0)
    height: float = Field(1.0, gt=0)


class _Constant(torch.autograd.Function):
    @staticmethod
    def forward(x, f, scale):
        return f(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.scale = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None, None


class _Rect(torch.autograd.Function):
    @staticmethod
    def forward(x, f, width, height):
        return f(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, width, height = inputs
        ctx.save_for_backward(x)
        ctx.width, ctx.height = width, height

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.width) * ctx.height, None, None, None


class Surrogate(nn.Module):
    def __init__(self, fn, activation, *args):
        super().__init__()
        self.fn, self.activation, self.args = fn, activation, args

    def forward(self, x):
        return self.fn.apply(x, self.activation.native, *self.args)


def tied(params, *, activation, ctx):
    """g = f': the forward activation's own derivative (plain back-propagation)."""
    return NativeActivation(activation)


def constant(params: ConstantParams, *, activation, ctx):
    """g(x) = scale (the paper's /1, /I)."""
    return Surrogate(_Constant, activation, params.scale)


def rect(params: RectParams, *, activation, ctx):
    """g(x) = height if |x| < width else 0 (the paper's /Rect)."""
    return Surrogate(_Rect, activation, params.width, params.height)


@hookimpl
def register_surrogates(register):
    register("tied", tied)
    register("constant", constant, params=ConstantParams)
    register("rect", rect, params=RectParams)
