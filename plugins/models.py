"""Architectures of Troiano et al. (2025), Section 4.1, and a configurable CNN.

``suc``: the single-unit classifier; ``mlp``: dense layers; ``lenet5``: LeNet-5 with the paper's
quadratic-mean pooling; ``cnn``: conv blocks then a dense head (used by later methods).

Every activation site calls ``activation()``, which returns the run's forward activation with
its surrogate backward, so any model trains under any surrogate.

Options shared by several models (METHODS.md section 1):

``batchnorm``
    BatchNorm after each hidden conv/dense layer, before its activation (the paper's
    "ReLU/H+BN", Table 11). The output layer gets none.
``binary_weights``
    BinaryConnect layers (:mod:`untied_plugins.binary_layers`, Section 5): every conv and dense
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

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import Tensor, nn

from bench_core.hookspecs import hookimpl
from bench_core.layered import Block
from untied_plugins.binary_layers import BinaryConv2d, BinaryLinear


# ---- parameters ----------------------------------------------------------------------------
class SUCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # one output unit: the conformance kit (untied check-plugin) checks it on a binary task
    conformance_run: ClassVar[dict] = {"dataset": {"name": "kit_blobs", "single_output": True}}
    bias: bool = True
    binary_weights: bool = Field(False, description="BinaryConnect sign(W) weights (Section 5)")


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64],
                                      description="hidden layer widths")
    bias: bool = True
    output_activation: bool = Field(False, description="apply the activation to the outputs too")
    batchnorm: bool = Field(False, description="BatchNorm1d after each hidden layer")
    binary_weights: bool = Field(False, description="BinaryConnect sign(W) weights (Section 5)")
    init: Literal["torch", "he_normal"] = Field(
        "torch", description="torch: nn.Linear's default; he_normal: W ~ N(0, 2/fan_in), b = 0 "
                             "(He et al. 2015; the dual-weight paper's init)")


class LeNet5Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: Literal["quadratic", "avg", "max"] = Field(
        "quadratic", description="2x2 pooling: quadratic mean sqrt(mean(x^2)) (the paper's), "
                                 "average or max")
    batchnorm: bool = Field(False, description="BatchNorm after each conv/FC before activation")
    binary_weights: bool = Field(False, description="BinaryConnect sign(W) weights (Section 5)")
    conv2_padding: int | None = Field(
        None, ge=0, description="padding of the second conv; default 0, or the least padding "
                                "that leaves a 2x2 map for small inputs (8x8 digits: 1)")
    init: Literal["torch", "xavier_uniform"] = Field(
        "torch", description="torch: the layers' default (Kaiming-uniform with a = sqrt(5)); "
                             "xavier_uniform: W ~ U(+-sqrt(6 / (fan_in + fan_out))), b = 0 "
                             "(Glorot & Bengio 2010, for logistic units)")


class CNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1,
                                        description="output channels of each conv block")
    kernel: int = Field(3, ge=1, description="square kernel size ('same' padding kernel // 2)")
    hidden: int = Field(128, ge=1, description="width of the dense hidden layer")
    pool: Literal["max", "avg"] = Field("max", description="2x2 pooling after each conv")
    batchnorm: bool = Field(False, description="BatchNorm after each conv/FC before activation")


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

    def __init__(self, kernel_size: int = 2, eps: float = QUADRATIC_POOL_EPS) -> None:
        super().__init__()
        if kernel_size < 1 or eps <= 0:
            raise ValueError(f"need kernel_size >= 1 and eps > 0 (got {kernel_size}, {eps})")
        self.kernel_size, self.eps = kernel_size, eps

    def forward(self, x: Tensor) -> Tensor:
        return torch.sqrt(F.avg_pool2d(x * x, self.kernel_size) + self.eps)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, eps={self.eps}"


def pooling(kind: str) -> nn.Module:
    """A 2x2, stride-2 pooling layer: ``quadratic``, ``avg`` or ``max``."""
    if kind == "quadratic":
        return QuadraticMeanPool2d(2)
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "max":
        return nn.MaxPool2d(2)
    raise ValueError(f"unknown pooling '{kind}' (expected quadratic, avg or max)")


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


# ---- models --------------------------------------------------------------------------------
def suc(params: SUCParams, *, data, activation, ctx) -> nn.Module:
    """Single-unit classifier: y = f(w.x + b), one output (Troiano et al. Fig. 3)."""
    return nn.Sequential(nn.Flatten(),
                         dense(math.prod(data.input_shape), 1, bias=params.bias,
                               binary=params.binary_weights),
                         activation())


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
    return he_normal_(model) if params.init == "he_normal" else model


def lenet5(params: LeNet5Params, *, data, activation, ctx) -> nn.Module:
    """LeNet-5 with quadratic-mean pooling by default (Troiano et al. Section 4.1)."""
    c, h, w = image_shape(data.input_shape, "lenet5")
    if min(h, w) < 2:
        raise ValueError(f"lenet5 needs images of at least 2x2 (got {h}x{w})")
    h1, w1 = h // 2, w // 2  # conv1 keeps the size (5x5, padding 2), then 2x2 pooling
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

    layers: list[nn.Module] = [
        *image_input(data.input_shape, (c, h, w)),
        conv(c, 6, 5, 2, binary=binary), *norm2d(6), activation(), pooling(params.pool),
        conv(6, 16, 5, pad2, binary=binary), *norm2d(16), activation(), pooling(params.pool),
        nn.Flatten(),
        dense(flat, 120, binary=binary), *norm1d(120), activation(),
        dense(120, 84, binary=binary), *norm1d(84), activation(),
        dense(84, data.num_outputs, binary=binary),
    ]
    model = nn.Sequential(*layers)
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


@hookimpl
def register_models(register):
    register("suc", suc, params=SUCParams)
    register("mlp", mlp, params=MLPParams)
    register("lenet5", lenet5, params=LeNet5Params)
    register("cnn", cnn, params=CNNParams)
