"""Weight-update rules: plain SGD (with momentum and weight decay) and Adam."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench_core.hookspecs import hookimpl


class SGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.01, gt=0, description="learning rate eta")
    momentum: float = Field(0.0, ge=0, lt=1, description="heavy-ball momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty coefficient (decoupled: no)")
    nesterov: bool = False


class AdamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)


def sgd(params: SGDParams, *, model, ctx):
    """Stochastic gradient descent: w <- w - lr * (grad + weight_decay * w), optional momentum."""
    if params.nesterov and params.momentum == 0:
        raise ValueError("nesterov needs momentum > 0")
    return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                           weight_decay=params.weight_decay, nesterov=params.nesterov)


def adam(params: AdamParams, *, model, ctx):
    """Adam (Kingma & Ba 2015)."""
    return torch.optim.Adam(model.parameters(), lr=params.lr, betas=(params.beta1, params.beta2),
                            eps=params.eps, weight_decay=params.weight_decay)


@hookimpl
def register_update_rules(register):
    register("sgd", sgd, params=SGDParams)
    register("adam", adam, params=AdamParams)
