"""An in-process test plugin for the function-slice capability (no built-in involved).

``toy_wave``: y = sin(x) on [-2, 2] (one input), declaring the slice along x1;
``toy_line``: y = w x + b; ``toy_lstsq``: sets the model's w, b by least squares on the
training split (closed form, in place) and reports ``test_mse``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench_core.data import axis_slice
from bench_core.hookspecs import hookimpl
from bench_core.interfaces import DataBundle, DataInfo


class WaveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(64, ge=4)


def toy_wave(params: WaveParams, *, ctx) -> DataBundle:
    gen = ctx.generator("data", device="cpu")
    x = 4 * torch.rand(params.n, 1, generator=gen, dtype=torch.float64) - 2
    y = torch.sin(x)
    half = params.n // 2
    bundle = DataBundle(DataInfo("toy_wave", (1,), 1, "regression"), x[:half].float(),
                        y[:half].float(), x[half:].float(), y[half:].float())
    bundle.slices["x1"] = axis_slice(lambda t: torch.sin(t[:, 0]), -2.0, 2.0, 1, points=41)
    return bundle


def toy_line(params, *, data, activation, ctx) -> nn.Module:
    return nn.Linear(1, 1)


class ToyLstsq:
    def __init__(self, params) -> None:
        self.p = params

    def fit(self, session):
        model = session.build_model()
        x, y = session.data.x_train, session.data.y_train
        design = torch.cat([x, torch.ones_like(x)], 1)
        coef = torch.linalg.lstsq(design, y).solution
        with torch.no_grad():
            model.weight.copy_(coef[:1].t())
            model.bias.copy_(coef[1])
        mse = (model(session.data.x_test) - session.data.y_test).square().mean()
        return session.ctx.log_epoch(1, test_mse=mse)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@hookimpl
def register_datasets(register):
    register("toy_wave", toy_wave, params=WaveParams, description="sin(x) with a slice")


@hookimpl
def register_models(register):
    register("toy_line", toy_line, params=NoParams, description="w x + b")


@hookimpl
def register_trainers(register):
    register("toy_lstsq", ToyLstsq, params=NoParams, description="least squares, in place")
