"""A toy plugin for the tests of parameter selection on a validation split (no built-in
method involved).

``toy_split`` has 100 training samples (inputs 0..99) and 20 test samples whose inputs are all
-1, so a trainer can tell which split it is evaluated on. ``toy_bowl`` reports a loss that is
smallest at ``lr = best`` (a bowl in log10(lr)) on whatever split it is evaluated on, plus what
it saw: the sizes of its splits and whether its evaluation split held test samples; its
training loss explodes when ``lr > explode_above``.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import DataBundle, DataInfo

TEST_MARK = -1.0


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def toy_split(params, *, ctx) -> DataBundle:
    x_train = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    x_test = torch.full((20, 1), TEST_MARK)
    return DataBundle(DataInfo("toy_split", (1,), 1, "regression"), x_train,
                      torch.zeros(100, 1), x_test, torch.zeros(20, 1))


class BowlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.01, gt=0)
    best: float = Field(0.02, gt=0, description="the rate with the lowest loss")
    explode_above: float | None = Field(None, description="rates above this explode")
    second_bad_above: float | None = Field(
        None, description="rates above this make the second loss (`test_loss_second`) 10 more")


class BowlTrainer:
    def __init__(self, params: BowlParams) -> None:
        self.p = params

    def fit(self, session):
        data = session.data
        loss = (math.log10(self.p.lr) - math.log10(self.p.best)) ** 2
        exploding = self.p.explode_above is not None and self.p.lr > self.p.explode_above
        curve = [1.0, 1e6] if exploding else [1.0, 0.5]
        values = {}
        for epoch, train_loss in enumerate(curve, 1):
            bad = self.p.second_bad_above is not None and self.p.lr > self.p.second_bad_above
            values = session.ctx.log_epoch(epoch, train_loss=train_loss, test_loss=loss,
                                           test_accuracy=1.0 - loss,
                                           test_loss_second=loss + (10.0 if bad else 0.0))
        saw_test = float(bool((data.x_test == TEST_MARK).any()))
        return {**values, "n_train": float(len(data.x_train)),
                "n_evaluated": float(len(data.x_test)), "evaluated_on_test": saw_test}


class NestedBowlParams(BaseModel):
    """``toy_bowl``'s parameters one level down (``trainer.inner.lr``), as a composed update
    rule nests its base rule's (``rule.base.lr``)."""

    model_config = ConfigDict(extra="forbid")
    inner: BowlParams = Field(default_factory=BowlParams)


@hookimpl
def register_trainers(register):
    register("toy_bowl", BowlTrainer, params=BowlParams,
             description="a loss smallest at lr = best, on the split it is evaluated on")
    register("toy_nested_bowl", lambda params: BowlTrainer(params.inner),
             params=NestedBowlParams, description="toy_bowl with its parameters in `inner`")


@hookimpl
def register_datasets(register):
    register("toy_split", toy_split, params=NoParams,
             description="100 training samples, 20 marked test samples")


@hookimpl
def register_models(register):
    register("toy_nothing", lambda params, *, data, activation, ctx: torch.nn.Identity(),
             params=NoParams, description="identity")


SPEC = {
    "title": "selection", "metric": "test_loss", "baseline": "bowl", "seeds": 2,
    "metrics": ["n_train", "n_evaluated", "evaluated_on_test"],
    "defaults": {"dataset": {"name": "toy_split"}, "model": {"name": "toy_nothing"},
                 "trainer": {"name": "toy_bowl"}},
    "select": {"parameter": "trainer.lr", "values": [0.005, 0.01, 0.02, 0.05],
               "metric": "test_loss", "validation_fraction": 0.1},
    "entries": [
        {"label": "bowl"},
        {"label": "shifted", "overrides": {"trainer": {"best": 0.05, "explode_above": 0.03}}},
        {"label": "fixed", "select_values": [0.01]},
    ],
}
"""``bowl`` should get 0.02; ``shifted`` would like 0.05, but its training explodes above 0.03,
so it gets 0.02 (the best rate that does not explode); ``fixed`` has one value: no selection."""
