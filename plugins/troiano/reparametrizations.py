"""Weight re-parametrisations named in Troiano et al. (2025), Section 2.2 (docs/methods/troiano.md):
weight normalisation (eq. 13), weight standardisation (eq. 14) and weight centralisation
(eq. 15), for any model and any update rule.

A run names one in its ``reparametrization`` table, e.g.
``reparametrization = {name = "weight_standardization"}``. Every weight tensor of the model with
two or more dimensions (dense ``(out, in)`` and convolution ``(out, in, kh, kw)`` weights; not
biases, not BatchNorm's affine vectors) is then computed at every forward pass from latent
parameters through ``torch.nn.utils.parametrize``; the update rule, built afterwards, updates
the latent parameters:

======================== ==================================================== ==============
name                     effective weight                                     latent
======================== ==================================================== ==============
``weight_normalization`` ``W = g V / ||V||``                                  ``g``, ``V``
``weight_standardization`` ``W = (V - mean(V)) / (std(V) + eps)``             ``V``
``weight_centralization`` ``W = V - mean(V)``                                 ``V``
======================== ==================================================== ==============

``over``: the statistics are taken per output unit (``"output"``: each row of a dense weight,
each filter of a convolution, over all its other dimensions - the form of the methods the
paper cites: Salimans & Kingma 2016 with one ``g`` per unit, Qiao et al. 2019, and gradient/
weight centralisation per unit), or over the whole tensor (``"tensor"``: eqs. 13-15 as the paper
writes them, with one scalar ``g``). ``std`` is the population standard deviation; ``eps`` is
added to it as in eq. 14. Weight normalisation starts from the model's initial weights (``V = W``,
``g = ||W||``), so it changes the parametrisation, not the starting point; standardisation and
centralisation change the initial effective weights too (standardised rows have unit variance,
much larger than the usual ``1/fan_in``-scaled initialisation: pre-activations grow by about
``sqrt(fan_in)``; Qiao et al. pair it with normalised activations).

Why a component of its own, applied by the host to the built model, rather than a rule wrapper:
a wrapper would have to carry the wrapped rule's table inside its own, so grid keys such as
``rule.lr`` would no longer reach the rule, and a model option would have to be added to every
model. Re-parametrising is editing the model by definition; the dual-weight rule's promise never
to change a model concerns that rule only. Rules that write dense weights themselves (the
dual-weight rule) cannot be combined with it and say so; BinaryConnect layers (which clip their
latent weights in place) are refused here.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn.utils import parametrize

from bench_core.interfaces import RunContext

Over = Literal["output", "tensor"]


class ReparametrizationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    over: Over = Field("output", description="statistics per output unit (row / filter) or over "
                       "the whole tensor (eqs. 13-15 as written)")


class WeightStandardizationParams(ReparametrizationParams):
    eps: float = Field(1e-5, gt=0, description="added to the standard deviation (eq. 14)")


def reduce_dims(weight: Tensor, over: Over) -> tuple[int, ...]:
    """The dimensions a statistic of ``weight`` is taken over: all but the output dimension
    (``"output"``), or all (``"tensor"``)."""
    return tuple(range(1 if over == "output" else 0, weight.dim()))


class WeightNorm(nn.Module):
    """``W = g V / ||V||`` (eq. 13); latent ``g`` (per output unit or scalar) and ``V``."""

    def __init__(self, over: Over) -> None:
        super().__init__()
        self.over = over

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return v * (g / torch.linalg.vector_norm(v, dim=reduce_dims(v, self.over), keepdim=True))

    def right_inverse(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return torch.linalg.vector_norm(w, dim=reduce_dims(w, self.over), keepdim=True), w


class WeightStandardization(nn.Module):
    """``W = (V - mean(V)) / (std(V) + eps)`` (eq. 14), population std."""

    def __init__(self, over: Over, eps: float) -> None:
        super().__init__()
        self.over, self.eps = over, eps

    def forward(self, v: Tensor) -> Tensor:
        dims = reduce_dims(v, self.over)
        std, mean = torch.std_mean(v, dim=dims, correction=0, keepdim=True)
        return (v - mean) / (std + self.eps)


class WeightCentralization(nn.Module):
    """``W = V - mean(V)`` (eq. 15)."""

    def __init__(self, over: Over) -> None:
        super().__init__()
        self.over = over

    def forward(self, v: Tensor) -> Tensor:
        return v - v.mean(dim=reduce_dims(v, self.over), keepdim=True)


def weight_tensors(model: nn.Module, name: str) -> list[nn.Module]:
    """The modules owning a parameter ``weight`` with two or more dimensions."""
    owners = []
    for path, module in model.named_modules():
        weight = dict(module.named_parameters(recurse=False)).get("weight")
        if weight is None or weight.dim() < 2:
            continue
        if callable(getattr(module, "constrain_", None)):
            raise ValueError(f"{name}: layer '{path}' constrains its latent weights in place "
                             f"(BinaryConnect); it cannot be re-parametrised")
        owners.append(module)
    if not owners:
        raise ValueError(f"{name}: the model has no weight tensor with two or more dimensions")
    return owners


def reparametrize(model: nn.Module, make: Callable[..., nn.Module], name: str,
                  **options) -> nn.Module:
    """Register a fresh ``make(**options)`` parametrisation on every weight of ``model``."""
    for module in weight_tensors(model, name):
        parametrize.register_parametrization(module, "weight", make(**options))
    return model


def weight_normalization(params: ReparametrizationParams, *, model: nn.Module,
                         ctx: RunContext) -> nn.Module:
    """Weight normalisation W = g V/||V|| (Salimans & Kingma 2016; Troiano et al. eq. 13)."""
    return reparametrize(model, WeightNorm, "weight_normalization", over=params.over)


def weight_standardization(params: WeightStandardizationParams, *, model: nn.Module,
                           ctx: RunContext) -> nn.Module:
    """Weight standardisation (W - mean)/(std + eps) (Qiao et al. 2019; Troiano et al. eq. 14)."""
    return reparametrize(model, WeightStandardization, "weight_standardization",
                         over=params.over, eps=params.eps)


def weight_centralization(params: ReparametrizationParams, *, model: nn.Module,
                          ctx: RunContext) -> nn.Module:
    """Weight centralisation W - mean(W) (Troiano et al. eq. 15)."""
    return reparametrize(model, WeightCentralization, "weight_centralization", over=params.over)
