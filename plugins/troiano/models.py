"""The models of Troiano et al. (2025), Section 4.1: the single-unit classifier ``suc`` and
``lenet5`` with the paper's quadratic-mean pooling. Their options (batchnorm, BinaryConnect
weights, initialisation) are described in :mod:`untied_plugins.backprop.models`.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from untied_plugins.backprop.layers import (
    conv,
    dense,
    image_input,
    image_shape,
    pooling,
    xavier_uniform_,
)


# ---- parameters ----------------------------------------------------------------------------
class SUCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # one output unit: the conformance kit (untied check-plugin) checks it on a binary task
    conformance_run: ClassVar[dict] = {"dataset": {"name": "kit_blobs", "single_output": True}}
    bias: bool = True
    binary_weights: bool = Field(False, description="BinaryConnect sign(W) weights (Section 5)")


class LeNet5Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stackable: ClassVar[bool] = False
    """Runs of this model are never grouped (convolutions are compute-bound: stacking gains
    little on a CPU, and each run recorded as it finishes is worth more)."""
    pool: Literal["quadratic", "quadratic_sum", "avg", "max"] = Field(
        "quadratic", description="2x2 pooling: quadratic mean sqrt(mean(x^2)) (the paper's), "
                                 "sqrt(sum(x^2)) (nn.LPPool2d(2, 2): twice it), average or max")
    batchnorm: bool = Field(False, description="BatchNorm after each conv/FC before activation")
    binary_weights: bool = Field(False, description="BinaryConnect sign(W) weights (Section 5)")
    conv1_padding: int = Field(
        2, ge=0, description="padding of the first conv: 2 keeps the input size (28x28 in, "
                             "LeNet-5 on MNIST); 0 for 32x32 inputs (LeNet-5's original, "
                             "BioTorch's LeNet MNIST)")
    conv2_padding: int | None = Field(
        None, ge=0, description="padding of the second conv; default 0, or the least padding "
                                "that leaves a 2x2 map for small inputs (8x8 digits: 1)")
    c5: Literal["dense", "conv"] = Field(
        "dense", description="the 120-unit layer: dense on the flattened maps, or LeNet-5's C5, "
                             "a convolution whose kernel covers the whole pooled map (the same "
                             "function and parameters; Xavier's fan-out then counts the kernel "
                             "area, as in BioTorch's LeNet MNIST)")
    init: Literal["torch", "xavier_uniform"] = Field(
        "torch", description="torch: the layers' default (Kaiming-uniform with a = sqrt(5)); "
                             "xavier_uniform: W ~ U(+-sqrt(6 / (fan_in + fan_out))), b = 0 "
                             "(Glorot & Bengio 2010, for logistic units)")


# ---- models --------------------------------------------------------------------------------
def suc(params: SUCParams, *, data, activation, ctx) -> nn.Module:
    """Single-unit classifier: y = f(w.x + b), one output (Troiano et al. Fig. 3)."""
    return nn.Sequential(nn.Flatten(),
                         dense(math.prod(data.input_shape), 1, bias=params.bias,
                               binary=params.binary_weights),
                         activation())


def lenet5(params: LeNet5Params, *, data, activation, ctx) -> nn.Module:
    """LeNet-5 with quadratic-mean pooling by default (Troiano et al. Section 4.1)."""
    c, h, w = image_shape(data.input_shape, "lenet5")
    if min(h, w) < 2:
        raise ValueError(f"lenet5 needs images of at least 2x2 (got {h}x{w})")
    pad1 = params.conv1_padding  # 2: conv1 (5x5) keeps the size; then 2x2 pooling
    h0, w0 = h + 2 * pad1 - 4, w + 2 * pad1 - 4
    if min(h0, w0) < 2:
        raise ValueError(f"lenet5: with conv1_padding={pad1} the first conv gives a {h0}x{w0} "
                         f"map on {h}x{w} inputs; it needs at least 2x2 (raise conv1_padding)")
    h1, w1 = h0 // 2, w0 // 2
    pad2 = params.conv2_padding
    if pad2 is None:  # 0 as in LeNet-5; more only when the map would drop below 2x2
        pad2 = max(0, math.ceil((6 - min(h1, w1)) / 2))
    h2, w2 = h1 + 2 * pad2 - 4, w1 + 2 * pad2 - 4
    if min(h2, w2) < 2:
        raise ValueError(f"lenet5: with conv2_padding={pad2} the second conv gives a {h2}x{w2} "
                         f"map on {h}x{w} inputs; it needs at least 2x2 (raise conv2_padding)")
    flat = 16 * (h2 // 2) * (w2 // 2)
    binary, bn = params.binary_weights, params.batchnorm

    def norm2d(n: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(n)] if bn else []

    def norm1d(n: int) -> list[nn.Module]:
        return [nn.BatchNorm1d(n)] if bn else []

    if params.c5 == "conv" and h2 // 2 != w2 // 2:
        raise ValueError(f"lenet5: c5 = 'conv' needs a square pooled map (got "
                         f"{h2 // 2}x{w2 // 2})")

    def c5() -> list[nn.Module]:
        """C5, built after the convs (layers draw their initial weights in build order)."""
        if params.c5 == "conv":   # LeCun et al. 1998's C5: a 120-map conv over the whole map
            return [conv(16, 120, h2 // 2, 0, binary=binary), *norm2d(120), activation(),
                    nn.Flatten()]
        return [nn.Flatten(), dense(flat, 120, binary=binary), *norm1d(120), activation()]

    layers: list[nn.Module] = [
        *image_input(data.input_shape, (c, h, w)),
        conv(c, 6, 5, pad1, binary=binary), *norm2d(6), activation(), pooling(params.pool),
        conv(6, 16, 5, pad2, binary=binary), *norm2d(16), activation(), pooling(params.pool),
        *c5(),
        dense(120, 84, binary=binary), *norm1d(84), activation(),
        dense(84, data.num_outputs, binary=binary),
    ]
    model = nn.Sequential(*layers)
    return xavier_uniform_(model) if params.init == "xavier_uniform" else model
