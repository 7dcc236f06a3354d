"""An in-process test plugin with a trainer that implements grouped runs (no built-in used).

``toy_regression``: y = x w* + noise from the run's ``data`` stream; ``toy_linear``: a bias-free
linear model; ``toy_gd``: full-batch gradient descent on 1/2 mean squared error, written out by
hand, with ``fit`` (one run) and ``fit_group`` (the runs stacked on a leading model axis, one
``bmm`` per step). ``lr`` lives on the trainer so that runs of one group may differ by it.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench_core.errors import DataError, Diverged
from bench_core.hookspecs import hookimpl
from bench_core.interfaces import DataBundle, DataInfo

CALLS: list[int] = []
"""Sizes of the fit_group calls made in this process (tests inspect it)."""


class ToyDataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = 3
    n: int = 64
    missing: bool = Field(False, description="raise as a dataset whose files are missing")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToyTrainerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = 20
    explode_at_lr: float = Field(100.0, description="lr at or above which a run diverges")
    fail_group: bool = False
    lone_rounding: bool = Field(False, description="fit_group divides the gradient by 0.7 n "
                                "and multiplies it by 0.7 where fit (one run) divides it by n: "
                                "a lone path that rounds differently from the stacked one, as "
                                "real ones may")


def toy_regression(params: ToyDataParams, *, ctx) -> DataBundle:
    if params.missing:
        raise DataError("toy_regression: no such file")
    gen = ctx.generator("data", device="cpu")
    w = torch.randn(params.dim, 1, generator=gen)
    x = torch.randn(params.n, params.dim, generator=gen)
    y = x @ w + 0.01 * torch.randn(params.n, 1, generator=gen)
    info = DataInfo("toy_regression", (params.dim,), 1, "regression")
    half = params.n // 2
    return DataBundle(info, x[:half], y[:half], x[half:], y[half:])


def toy_linear(params, *, data, activation, ctx) -> nn.Module:
    return nn.Linear(data.input_shape[0], 1, bias=False)


class ToyGD:
    """Gradient descent on 1/2 MSE; the learning rate is the rule's ``lr``."""

    max_group_size = 3

    def __init__(self, params: ToyTrainerParams) -> None:
        self.p = params

    def group_key(self, spec):
        return spec["dataset"]["dim"]

    @staticmethod
    def _lr(session) -> float:
        return float(session.spec["rule"]["lr"])

    def fit(self, session):
        return self.fit_group([session], alone=True)[0]

    def fit_group(self, sessions, alone=False):
        CALLS.append(len(sessions))
        if self.p.fail_group:
            raise RuntimeError("planned group failure")
        models = [s.build_model() for s in sessions]
        w = torch.stack([m.weight.detach().t().clone() for m in models])      # (K, d, 1)
        x = torch.stack([s.data.x_train for s in sessions])                   # (K, n, d)
        y = torch.stack([s.data.y_train for s in sessions])
        lr = torch.tensor([self._lr(s) for s in sessions]).view(-1, 1, 1)
        for _ in range(self.p.steps):
            grad = x.transpose(1, 2) @ (x @ w - y)
            grad = (grad / x.shape[1] if alone or not self.p.lone_rounding
                    else grad / (0.7 * x.shape[1]) * 0.7)
            w = w - lr * grad
        results = []
        for k, s in enumerate(sessions):
            xt, yt = s.data.x_test, s.data.y_test
            mse = ((xt @ w[k] - yt) ** 2).mean()
            s.ctx.counters.forward(len(xt))
            try:
                if self._lr(s) >= self.p.explode_at_lr:
                    raise Diverged("planned divergence")
                results.append(s.ctx.log_epoch(1, test_mse=mse))
            except Diverged as exc:
                results.append(exc)
        return results


class ToyRuleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = 0.1


@hookimpl
def register_datasets(register):
    register("toy_regression", toy_regression, params=ToyDataParams,
             description="y = x w + noise")


@hookimpl
def register_models(register):
    register("toy_linear", toy_linear, params=NoParams, description="bias-free linear")


@hookimpl
def register_update_rules(register):
    register("toy_lr", lambda params, *, model, ctx: None, params=ToyRuleParams,
             description="carries a learning rate for toy_gd")


@hookimpl
def register_trainers(register):
    register("toy_gd", ToyGD, params=ToyTrainerParams, description="grouped gradient descent")
