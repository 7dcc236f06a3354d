"""The partner components of the conformance kit (:mod:`bench_core.kit.check`).

To exercise one component, the kit runs it inside a tiny run whose other parts are these, so
that the kit depends on no built-in method: dataset ``kit_blobs`` (seeded Gaussian blobs, flat
or image-shaped, classification or regression), model ``kit_mlp`` (flatten, dense, activation,
dense), activation ``kit_tanh``, rule ``kit_sgd`` (``torch.optim.SGD``) and trainer
``kit_steps`` (a few mini-batch steps, then the test metrics). The kit registers them in its
own plugin host only; they never appear in ``untied list``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import Activation, DataBundle, DataInfo

PLUGIN = "untied_conformance_kit"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlobsParams(_Strict):
    shape: list[int] = Field(default_factory=lambda: [6], description="input shape")
    classes: int = Field(3, ge=1, description="classes (regression: outputs)")
    task: Literal["classification", "regression"] = "classification"
    single_output: bool = Field(False, description="two classes as one output, 0/1 targets")
    n: int = Field(48, ge=4, description="samples, split in half for train and test")


def kit_blobs(params: BlobsParams, *, ctx) -> DataBundle:
    """Gaussian blobs around seeded class centres (regression: a seeded linear target)."""
    gen = ctx.generator("data", device="cpu")
    dim = math.prod(params.shape)
    centres = 2 * torch.randn(params.classes, dim, generator=gen)
    labels = torch.randint(params.classes, (params.n,), generator=gen)
    # |x| ~ 1 whatever the shape, so that any sane step size trains stably (a chaotic run
    # would amplify rounding and hide a real difference between two code paths)
    x = (centres[labels] + torch.randn(params.n, dim, generator=gen)) / math.sqrt(5 * dim)
    if params.single_output:
        y = labels % 2
        info = DataInfo("kit_blobs", tuple(params.shape), 1, "classification", 2)
    elif params.task == "classification":
        y = labels
        info = DataInfo("kit_blobs", tuple(params.shape), params.classes, "classification",
                        params.classes)
    else:
        y = x @ torch.randn(dim, params.classes, generator=gen)
        info = DataInfo("kit_blobs", tuple(params.shape), params.classes, "regression")
    x = x.reshape(params.n, *params.shape).to(ctx.device)
    y = y.to(ctx.device)
    half = params.n // 2
    return DataBundle(info, x[:half], y[:half], x[half:], y[half:])


class MLPParams(_Strict):
    hidden: int = Field(8, ge=1)


def kit_mlp(params: MLPParams, *, data, activation, ctx) -> nn.Module:
    """Flatten, dense, the run's activation, dense."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(data.input_shape), params.hidden),
                         activation(), nn.Linear(params.hidden, data.num_outputs))


class SGDParams(_Strict):
    lr: float = Field(0.1, gt=0)


def kit_sgd(params: SGDParams, *, model, ctx):
    """Plain SGD."""
    return torch.optim.SGD(model.parameters(), lr=params.lr)


class StepsParams(_Strict):
    steps: int = Field(2, ge=1, description="mini-batch steps")
    batch_size: int = Field(16, ge=1)


def batch_loss(out, y, task: str):
    """MSE (regression), cross-entropy, or binary cross-entropy on a single output."""
    if task == "regression":
        return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
    if out.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))
    return F.cross_entropy(out, y)


def hits(out, y):
    """Correct predictions: argmax, or a logit >= 0 for a single output."""
    guess = (out.squeeze(-1) >= 0).long() if out.shape[-1] == 1 else out.argmax(-1)
    return (guess == y).float()


class KitSteps:
    """A few mini-batch steps with the run's rule, then ``train_loss``, ``test_loss`` and
    (classification) ``test_accuracy``, logged as epoch 1."""

    def __init__(self, params: StepsParams) -> None:
        self.p = params

    def fit(self, session):
        data, ctx = session.data, session.ctx
        model = session.build_model()
        rule = session.build_rule(model)
        task = data.info.task
        gen = ctx.generator("batches")
        loss = torch.zeros((), device=ctx.device)
        for _ in range(self.p.steps):
            idx = torch.randperm(len(data.x_train), generator=gen,
                                 device=ctx.device)[:self.p.batch_size]
            loss = batch_loss(model(data.x_train[idx]), data.y_train[idx], task)
            rule.zero_grad(set_to_none=True)
            loss.backward()
            rule.step()
            ctx.counters.forward(len(idx))
            ctx.counters.backward(len(idx))
        with torch.no_grad():
            out = model(data.x_test)
            metrics = {"train_loss": loss.detach(), "test_loss": batch_loss(out, data.y_test, task)}
            if task == "classification":
                metrics["test_accuracy"] = hits(out, data.y_test).mean()
        return ctx.log_epoch(1, **metrics)


def kit_steps(params: StepsParams) -> KitSteps:
    """A few mini-batch steps, then the test metrics."""
    return KitSteps(params)


def _d_tanh(x):
    return 1 - torch.tanh(x) ** 2


@hookimpl
def register_datasets(register):
    register("kit_blobs", kit_blobs, params=BlobsParams)


@hookimpl
def register_models(register):
    register("kit_mlp", kit_mlp, params=MLPParams)


@hookimpl
def register_activations(register):
    register("kit_tanh", lambda params: Activation("kit_tanh", torch.tanh, _d_tanh, "output"),
             description="tanh")


@hookimpl
def register_update_rules(register):
    register("kit_sgd", kit_sgd, params=SGDParams)


@hookimpl
def register_trainers(register):
    register("kit_steps", kit_steps, params=StepsParams)
