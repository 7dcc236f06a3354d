"""A toy plugin for the tests of the judgement rules (no built-in method involved).

``toy_curve`` logs a training-loss curve given in its parameters (so a test decides whether a
run explodes), a test accuracy, a loss and the seconds it "trained", and reports a time to a
target when ``reach_at`` is set. ``toy_other`` is a second trainer name, so an entry can replace
the trainer table; ``toy_points`` and ``toy_identity`` are the smallest dataset and model.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import DataBundle, DataInfo


class CurveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    losses: list[float] = Field(default_factory=lambda: [1.0, 0.5, 0.25],
                                description="train_loss per epoch")
    accuracy: float = 0.9
    seconds: float = 2.0
    lr: float = 0.1
    reach_at: int | None = Field(None, description="epoch at which the target is reached")
    steps_per_epoch: int = 10


class CurveTrainer:
    def __init__(self, params: CurveParams) -> None:
        self.p = params

    def fit(self, session):
        values: dict[str, float] = {}
        for epoch, loss in enumerate(self.p.losses, 1):
            values = session.ctx.log_epoch(epoch, train_loss=loss, test_accuracy=self.p.accuracy,
                                           test_loss=1.0 - self.p.accuracy,
                                           train_seconds=self.p.seconds)
        steps = len(self.p.losses) * self.p.steps_per_epoch
        out = {**values, "target_reached": float(self.p.reach_at is not None),
               "steps_trained": float(steps)}
        if self.p.reach_at is not None:
            out["steps_to_target"] = float(self.p.reach_at * self.p.steps_per_epoch)
        return out


class SensitiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gain: float = Field(1.0, description="how strongly the outcome follows the initial weights")


class SensitiveTrainer:
    """An outcome that is a function of the initial weights: ``0.5 + 0.5 sin(gain * sum(w))``.
    With a huge gain a one-ulp change of the weights moves it anywhere (a chaotic cell);
    with gain 1 it does not move."""

    def __init__(self, params: SensitiveParams) -> None:
        self.p = params

    def fit(self, session):
        model = session.build_model()
        total = sum(p.detach().double().sum() for p in model.parameters())
        accuracy = 0.5 + 0.5 * torch.sin(self.p.gain * total).item()
        return session.ctx.log_epoch(1, train_loss=1.0, test_accuracy=accuracy)


def toy_points(params, *, ctx) -> DataBundle:
    x = torch.zeros(4, 1)
    return DataBundle(DataInfo("toy_points", (1,), 1, "regression"), x, x, x, x)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@hookimpl
def register_trainers(register):
    register("toy_curve", CurveTrainer, params=CurveParams,
             description="logs the loss curve it is given")
    register("toy_other", CurveTrainer, params=CurveParams,
             description="the same, under another name")
    register("toy_sensitive", SensitiveTrainer, params=SensitiveParams,
             description="an outcome that follows the initial weights")


@hookimpl
def register_datasets(register):
    register("toy_points", toy_points, params=NoParams, description="four zeros")


@hookimpl
def register_models(register):
    register("toy_identity", lambda params, *, data, activation, ctx: torch.nn.Identity(),
             params=NoParams, description="identity")
    register("toy_weights", lambda params, *, data, activation, ctx: torch.nn.Linear(1, 16),
             params=NoParams, description="a linear layer (weights to perturb)")


SPEC = {
    "title": "judgements", "metric": "test_accuracy", "baseline": "calm", "seeds": 2,
    "defaults": {"dataset": {"name": "toy_points"}, "model": {"name": "toy_identity"},
                 "trainer": {"name": "toy_curve"}},
    "entries": [
        {"label": "calm"},
        {"label": "boom", "overrides": {"trainer": {"losses": [1.0, 50.0, 1.1e23],
                                                    "accuracy": 0.1, "seconds": 0.5}}},
    ],
}
"""Two entries: ``calm`` trains; ``boom``'s finite loss explodes to 1.1e23 and it is faster."""
