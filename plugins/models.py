"""Dense architectures of Troiano et al. (Section 4.1): the single-unit classifier and the MLP.

Every activation site calls ``activation()``, which returns the run's forward activation with
its surrogate backward, so any model trains under any surrogate.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench_core.hookspecs import hookimpl


class SUCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bias: bool = True


class MLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[int] = Field(default_factory=lambda: [64], description="hidden layer widths")
    bias: bool = True
    output_activation: bool = Field(False, description="apply the activation to the outputs too")


def suc(params: SUCParams, *, data, activation, ctx) -> nn.Module:
    """Single-unit classifier: y = f(w.x + b), one output (Troiano et al. Fig. 3)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), 1, bias=params.bias),
                         activation())


def mlp(params: MLPParams, *, data, activation, ctx) -> nn.Module:
    """Multi-layer perceptron: dense layers with the run's activation, linear outputs."""
    if any(h < 1 for h in params.hidden):
        raise ValueError(f"hidden widths must be >= 1 (got {params.hidden})")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(data.input_shape)
    for h in params.hidden:
        layers += [nn.Linear(width, h, bias=params.bias), activation()]
        width = h
    layers.append(nn.Linear(width, data.num_outputs, bias=params.bias))
    if params.output_activation:
        layers.append(activation())
    return nn.Sequential(*layers)


@hookimpl
def register_models(register):
    register("suc", suc, params=SUCParams)
    register("mlp", mlp, params=MLPParams)
