"""An in-process test plugin whose components fail on purpose."""

import torch
from pydantic import BaseModel, ConfigDict

from bench_core.hookspecs import hookimpl


class PoisonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = 0.1


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = "raise"


class PoisonRule:
    """SGD that turns every weight into NaN on its first step."""

    def __init__(self, model):
        self.params = list(model.parameters())

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            p.fill_(float("nan"))


class FailingTrainer:
    def __init__(self, params):
        self.kind = params.kind

    def fit(self, session):
        if self.kind == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("planned failure inside a plugin")


@hookimpl
def register_update_rules(register):
    register("poison", lambda params, *, model, ctx: PoisonRule(model), params=PoisonParams,
             description="sets weights to NaN")


@hookimpl
def register_trainers(register):
    register("failing", lambda params: FailingTrainer(params), params=FailParams,
             description="raises")
