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
    """kind: raise | interrupt | hang | mutate_state (changes global torch settings, then
    trains nothing and reports accuracy 0.5)."""

    def __init__(self, params):
        self.kind = params.kind

    def fit(self, session):
        if self.kind == "interrupt":
            raise KeyboardInterrupt
        if self.kind == "hang":
            import time

            while True:
                time.sleep(0.05)
        if self.kind == "mutate_state":
            torch.set_default_dtype(torch.float64)
            torch.set_grad_enabled(False)
            torch.set_num_threads(max(1, torch.get_num_threads() + 1))
            return {"test_accuracy": 0.5}
        raise RuntimeError("planned failure inside a plugin")


class ExplodingSurrogate(torch.nn.Module):
    """f(x) = x forward, g = 1e30 backward: gradients overflow within a step or two."""

    elementwise = False

    def forward(self, x):
        return _Explode.apply(x)


class _Explode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1e30


@hookimpl
def register_update_rules(register):
    register("poison", lambda params, *, model, ctx: PoisonRule(model), params=PoisonParams,
             description="sets weights to NaN")


@hookimpl
def register_surrogates(register):
    register("exploding", lambda params, *, activation, ctx: ExplodingSurrogate(),
             params=FailParams, description="g = 1e30")


@hookimpl
def register_models(register):
    register("returns_none", lambda params, *, data, activation, ctx: None, params=FailParams,
             description="a model factory that returns None")


@hookimpl
def register_trainers(register):
    register("failing", lambda params: FailingTrainer(params), params=FailParams,
             description="raises")


def nan_digits(params, *, ctx):
    """The digits with NaN in some training inputs."""
    from untied_plugins.datasets.digits import DigitsParams, digits

    data = digits(DigitsParams(train_subset=200), ctx=ctx)
    data.x_train[::7, 3] = float("nan")
    return data


@hookimpl
def register_datasets(register):
    register("nan_digits", nan_digits, params=FailParams, description="NaN in the inputs")
