"""A toy third-party plugin whose layer type says how its instances stack
(:func:`bench_core.grouping.stack_rule`), for the tests of that host capability. No built-in
method is involved.

``toy_plain_mlp``: a plain ``nn.Sequential`` (Flatten, dense, activation, dense), the kind of
model the ``backprop`` trainer's grouped form stacks. ``toy_scaled``: replaces every
``nn.Linear`` by :class:`ScaledLinear`, ``y = s (x W^T + b)`` with a fixed ``s``, a type the
grouped form does not know; it defines ``stack`` and ``stack_signature`` (``stackable = false``
makes every instance decline, so such runs train alone).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from bench_core.hookspecs import hookimpl

STACKS: list[int] = []
"""Sizes of the stacks built in this process (tests inspect it)."""


class ScaledLinear(nn.Module):
    def __init__(self, layer: nn.Linear, scale: float, stackable: bool) -> None:
        super().__init__()
        self.weight, self.bias, self.scale, self.stackable = layer.weight, layer.bias, scale, \
            stackable

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias) * self.scale

    def stack_signature(self):
        return (tuple(self.weight.shape), self.scale) if self.stackable else None

    @classmethod
    def stack(cls, layers: list["ScaledLinear"]) -> "StackedScaled":
        STACKS.append(len(layers))
        return StackedScaled(layers)


class StackedScaled:
    def __init__(self, layers: list[ScaledLinear]) -> None:
        self.layers, self.scale = layers, layers[0].scale
        self.weight = torch.stack([m.weight.detach() for m in layers]).requires_grad_()
        self.bias = torch.stack([m.bias.detach() for m in layers]).requires_grad_()

    def __call__(self, h):
        return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2)) * self.scale

    def parameters(self):
        return [self.weight, self.bias]

    def write_back(self):
        with torch.no_grad():
            for k, m in enumerate(self.layers):
                m.weight.copy_(self.weight[k])
                m.bias.copy_(self.bias[k])


class PlainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = 16


class ScaledParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 0.5
    stackable: bool = True


def toy_plain_mlp(params: PlainParams, *, data, activation, ctx):
    """Flatten, dense, activation, dense: a plain nn.Sequential."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), params.hidden),
                         activation(), nn.Linear(params.hidden, data.num_outputs))


def toy_scaled(params: ScaledParams, *, model, ctx):
    """Every dense layer scaled by a fixed factor, as a layer type that knows how it stacks."""
    for name, layer in [(n, m) for n, m in model.named_children() if type(m) is nn.Linear]:
        setattr(model, name, ScaledLinear(layer, params.scale, params.stackable))
    return model


@hookimpl
def register_models(register):
    register("toy_plain_mlp", toy_plain_mlp, params=PlainParams)


@hookimpl
def register_reparametrizations(register):
    register("toy_scaled", toy_scaled, params=ScaledParams, description="scaled dense layers")
