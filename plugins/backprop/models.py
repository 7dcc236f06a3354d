"""Architectures of Troiano et al. (2025), Section 4.1, and a configurable CNN.

``suc``: the single-unit classifier; ``mlp``: dense layers; ``lenet5``: LeNet-5 with the paper's
quadratic-mean pooling; ``cnn``: conv blocks then a dense head (used by later methods).

Every activation site calls ``activation()``, which returns the run's forward activation with
its surrogate backward, so any model trains under any surrogate.

Options shared by several models (docs/methods/backprop.md):

``batchnorm``
    BatchNorm after each hidden conv/dense layer, before its activation (the paper's
    "ReLU/H+BN", Table 11). The output layer gets none.
``binary_weights``
    BinaryConnect layers (:mod:`untied_plugins.backprop.binary_layers`, Section 5): every conv and dense
    layer, the output layer included as in Courbariaux et al. (2015), computes with ``sign(W)``
    of latent weights clipped to [-1, 1]; biases stay real. Binary weights make pre-activations
    large (a sum of +-x over the fan-in), so narrow backward windows such as ``rect`` with
    width 1 rarely fire unless ``batchnorm = true`` rescales them, as Courbariaux et al. do.
    The step activation of a BNN comes from the spec (``activation = {name = "step"}``).

Layer-local training (:mod:`bench_core.layered`): ``mlp`` and ``cnn`` are
:class:`LayeredSequential` models whose ``blocks()`` are their hidden layers (``mlp``: each dense
layer with its [BN and] activation; ``cnn``: each conv with its [BN,] activation and pooling, then
the dense hidden layer); the output layer is not a block. The models compute exactly what the
plain ``nn.Sequential`` did, with the same parameters in the same order.

Image inputs: ``lenet5`` and ``cnn`` take a ``(C, H, W)`` input shape; a flat input whose size
is a perfect square ``s*s`` (the 8x8 ``digits`` come as ``(64,)``) is read as one ``(1, s, s)``
image, as in the paper's LeNet5-on-DIGITS experiment (Section 4.8). Any other shape is an error.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import nn
from untied_plugins.backprop.layers import (
    LayeredSequential,
    dense,
    he_normal_,
    image_input,
    image_shape,
    pooling,
    xavier_uniform_,
)


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64],
                                      description="hidden layer widths")
    bias: bool = True
    output_activation: bool = Field(False, description="apply the activation to the outputs too")
    batchnorm: bool = Field(False, description="BatchNorm1d after each hidden layer")
    binary_weights: bool = Field(False, description="BinaryConnect sign(W) weights (Section 5)")
    init: Literal["torch", "he_normal", "xavier_uniform"] = Field(
        "torch", description="torch: nn.Linear's default; he_normal: W ~ N(0, 2/fan_in), b = 0 "
                             "(He et al. 2015; the dual-weight paper's init); xavier_uniform: "
                             "Glorot-uniform W, b = 0 (Keras' default)")


class CNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stackable: ClassVar[bool] = False
    """Runs of this model are never grouped (convolutions are compute-bound: stacking gains
    little on a CPU, and each run recorded as it finishes is worth more)."""
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1,
                                        description="output channels of each conv block")
    kernel: int = Field(3, ge=1, description="square kernel size ('same' padding kernel // 2)")
    hidden: int = Field(128, ge=1, description="width of the dense hidden layer")
    pool: Literal["max", "avg"] = Field("max", description="2x2 pooling after each conv")
    batchnorm: bool = Field(False, description="BatchNorm after each conv/FC before activation")


def mlp(params: MLPParams, *, data, activation, ctx) -> nn.Module:
    """Multi-layer perceptron: dense layers with the run's activation, linear outputs."""
    layers: list[nn.Module] = [nn.Flatten()]
    spans: list[tuple] = []
    width = math.prod(data.input_shape)
    for i, h in enumerate(params.hidden):
        pre = (0,) if i == 0 else ()
        at = len(layers)
        layers.append(dense(width, h, bias=params.bias, binary=params.binary_weights))
        if params.batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(activation())
        spans.append((str(at), pre, at, tuple(range(at + 1, len(layers))), h, False))
        width = h
    layers.append(dense(width, data.num_outputs, bias=params.bias, binary=params.binary_weights))
    if params.output_activation:
        layers.append(activation())
    model = LayeredSequential(*layers, spans=spans)
    if params.init == "he_normal":
        return he_normal_(model)
    return xavier_uniform_(model) if params.init == "xavier_uniform" else model


def cnn(params: CNNParams, *, data, activation, ctx) -> nn.Module:
    """CNN: blocks of conv ('same' padding), [BN], activation, 2x2 pool; then FC hidden, FC out."""
    c, h, w = image_shape(data.input_shape, "cnn")
    k = params.kernel
    pad = k // 2
    layers: list[nn.Module] = [*image_input(data.input_shape, (c, h, w))]
    spans: list[tuple] = []
    for i, out_channels in enumerate(params.channels):
        h, w = (h + 2 * pad - k + 1) // 2, (w + 2 * pad - k + 1) // 2
        if min(h, w) < 1:
            raise ValueError(f"cnn: the input {tuple(data.input_shape)} is too small for "
                             f"{len(params.channels)} conv blocks (empty map after block {i + 1})")
        pre = tuple(range(len(layers))) if i == 0 else ()
        at = len(layers)
        layers.append(nn.Conv2d(c, out_channels, k, padding=pad))
        if params.batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers += [activation(), pooling(params.pool)]
        spans.append((str(at), pre, at, tuple(range(at + 1, len(layers))), out_channels, True))
        c = out_channels
    layers.append(nn.Flatten())
    at = len(layers)
    layers.append(nn.Linear(c * h * w, params.hidden))
    if params.batchnorm:
        layers.append(nn.BatchNorm1d(params.hidden))
    layers.append(activation())
    spans.append((str(at), (at - 1,), at, tuple(range(at + 1, len(layers))), params.hidden, False))
    layers.append(nn.Linear(params.hidden, data.num_outputs))
    return LayeredSequential(*layers, spans=spans)
