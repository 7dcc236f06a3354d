"""Three deliberately broken components (see README.md): each works when run, but breaks a
contract the conformance kit checks."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import NativeActivation


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListTrainer:
    """Mistake: fit returns a list of values instead of a dict of metric name -> float."""

    def __init__(self, params) -> None:
        self.params = params

    def fit(self, session):
        model = session.build_model()
        rule = session.build_rule(model)
        x, y = session.data.x_train, session.data.y_train
        loss = nn.functional.cross_entropy(model(x), y)
        rule.zero_grad()
        loss.backward()
        rule.step()
        accuracy = (model(session.data.x_test).argmax(-1) == session.data.y_test).float().mean()
        session.ctx.log_epoch(1, test_accuracy=accuracy)
        return [float(accuracy)]


class JitterySGD(torch.optim.SGD):
    """Mistake: the noise comes from the global torch RNG, not from ctx.generator("rule")."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(torch.randn_like(p.grad), alpha=0.1)
        return super().step(closure)


class AnythingParams(BaseModel):
    """Mistake: unknown parameters are kept and `scale` has no type, so a spec with
    `scale = "large"` or `scael = 2` validates and fails (or is ignored) only at run time."""

    model_config = ConfigDict(extra="allow")
    scale: Any = 1.0


class ScaledNative(NativeActivation):
    def __init__(self, activation, scale) -> None:
        super().__init__(activation)
        self.scale = scale

    def forward(self, x):
        return self.activation.native(x)


@hookimpl
def register_trainers(register):
    register("list_trainer", ListTrainer, params=NoParams, description="returns a list")


@hookimpl
def register_update_rules(register):
    register("jittery_sgd", lambda params, *, model, ctx: JitterySGD(model.parameters(), lr=0.05),
             params=NoParams, description="SGD with noise from the global RNG")


@hookimpl
def register_surrogates(register):
    register("anything_goes", lambda params, *, activation, ctx: ScaledNative(activation,
                                                                               params.scale),
             params=AnythingParams, description="a parameter model that accepts anything")
