"""signSGD as an untied-bench update rule (Bernstein et al. 2018, Algorithm 1).

The update keeps only the sign of each gradient element: ``w <- w - lr * sign(g)``, with
optional momentum on the gradient before the sign (Signum, Algorithm 2). A complete plugin:
a parameter model, a factory and one hook implementation.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench_core.hookspecs import hookimpl


class SignSGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0, description="step size")
    momentum: float = Field(0.0, ge=0, lt=1, description="Signum momentum (0 = signSGD)")


class SignSGD(torch.optim.Optimizer):
    """w <- w - lr * sign(m), m = momentum * m + (1 - momentum) * g (m = g without momentum)."""

    def __init__(self, params, lr: float, momentum: float) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["momentum"] > 0:
                bufs = [self.state[p].setdefault("m", torch.zeros_like(p)) for p in params]
                torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
                grads = bufs
            torch._foreach_add_(params, torch._foreach_sign(grads), alpha=-group["lr"])


def sign_sgd(params: SignSGDParams, *, model, ctx):
    """signSGD: step against the sign of each gradient element (Bernstein et al. 2018)."""
    return SignSGD(model.parameters(), params.lr, params.momentum)


@hookimpl
def register_update_rules(register):
    register("sign_sgd", sign_sgd, params=SignSGDParams)
