"""The ``function_approx`` dataset: approximate an analytic function of 2 or 3 variables
(Podoprosvetov et al., Section 15: "neural network approximation tasks for analytically defined
vector functions"; the paper names no function, so :mod:`.targets` holds ours).

Inputs ``x`` cover the domain ``[low, high]^dim`` (the target's own unless ``domain`` is set):

- training set: ``sampling = "random"``: ``n_train`` points drawn uniformly; ``"grid"``: a
  regular grid of ``k`` points per axis, endpoints included, ``k = max(2, round(n_train^(1/dim)))``
  (so ``n_train = 1024`` gives 32 x 32 in 2-d and 10 x 10 x 10 = 1000 points in 3-d);
- test set (held out): ``n_test`` points drawn uniformly, independently of the training set.

Targets ``y = f(x)`` are computed in float64 and stored as float32 of shape ``(N, outputs)``
(1 for a scalar target; vector-valued targets have more, the paper's "vector functions")
(``task = "regression"``: train with ``trainer.loss = "mse"``; the ``backprop`` trainer reports
``test_mse`` and ``test_max_abs_error``). ``noise > 0`` adds ``N(0, noise^2)`` to the *training*
targets only: the test set measures the error against the exact function.

All draws come from the run's ``data`` stream (noise from ``label_noise``), so every entry of a
leaderboard cell sees the same points for a given seed.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bench_core.data import make_bundle
from bench_core.interfaces import DataInfo
from untied_plugins.separated.targets import get_target


class FunctionApproxParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field("sin_cos", description="target function: relu_ridge, sin_cos, "
                        "gaussian_bump, saddle, their *_3d versions, or one a package registered")
    n_train: int = Field(1024, ge=2, description="training points (grid: rounded to k^dim)")
    n_test: int = Field(1024, ge=1, description="held-out test points, uniform in the domain")
    sampling: Literal["random", "grid"] = Field("random", description="training inputs: "
                                                "uniform random or a regular grid")
    domain: tuple[float, float] | None = Field(None, description="[low, high] on every axis; "
                                               "None: the target's own")
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise on the training targets")

    @field_validator("target")
    @classmethod
    def _registered(cls, name: str) -> str:
        get_target(name)
        return name

    @field_validator("domain")
    @classmethod
    def _interval(cls, domain: tuple[float, float] | None) -> tuple[float, float] | None:
        if domain is not None and not (math.isfinite(domain[0]) and math.isfinite(domain[1])
                                       and domain[0] < domain[1]):
            raise ValueError(f"domain must be finite [low, high] with low < high (got "
                             f"{list(domain)})")
        return domain


def grid_points(low: float, high: float, n: int, dim: int) -> torch.Tensor:
    """A regular grid of ``k = max(2, round(n^(1/dim)))`` points per axis, ``(k^dim, dim)``."""
    k = max(2, round(n ** (1 / dim)))
    axis = torch.linspace(low, high, k, dtype=torch.float64)
    return torch.cartesian_prod(*[axis] * dim).reshape(-1, dim)


def function_approx(params: FunctionApproxParams, *, ctx):
    """Approximate an analytic function of 2-3 variables (grid or random samples, held-out test set)."""
    target = get_target(params.target)
    low, high = params.domain or target.domain
    gen = ctx.generator("data", device="cpu")

    def uniform(n: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, target.dim, generator=gen, dtype=torch.float64)

    x_train = (grid_points(low, high, params.n_train, target.dim) if params.sampling == "grid"
               else uniform(params.n_train))
    x_test = uniform(params.n_test)
    y_train = target.fn(x_train).reshape(-1, target.outputs)
    y_test = target.fn(x_test).reshape(-1, target.outputs)
    if params.noise > 0:
        noise_gen = ctx.generator("label_noise", device="cpu")
        y_train = y_train + params.noise * torch.randn(y_train.shape, generator=noise_gen,
                                                       dtype=torch.float64)
    info = DataInfo(f"function_approx:{target.name}", (target.dim,), target.outputs,
                    "regression")
    return make_bundle(info, x_train.float(), y_train.float(), x_test.float(), y_test.float(),
                       ctx)
