"""The synthetic Ones task of Troiano et al. (2025), Section 4.4: x in {0,1}^dim, label 1 iff the
share of ones exceeds a threshold; split 80/20 with the run's ``data`` stream.
"""

from __future__ import annotations

import torch
from pydantic import Field

from bench_core.data import SplitParams, finish_split
from bench_core.interfaces import DataInfo


class OnesParams(SplitParams):
    dim: int = Field(10, ge=1, description="input dimension")
    n_samples: int = Field(2000, ge=10)
    threshold: float = Field(0.7, gt=0, lt=1, description="label 1 iff mean(x) > threshold")


def ones(params: OnesParams, *, ctx):
    """Synthetic Ones task: x in {0,1}^dim, label 1 iff the share of ones exceeds threshold.

    Per sample p ~ U[0,1], then bits ~ Bernoulli(p) (docs/methods/troiano.md), so both classes
    occur at every dimension. Generated from the run's ``data`` stream.
    """
    gen = ctx.generator("data", device="cpu")
    p = torch.rand(params.n_samples, 1, generator=gen)
    x = (torch.rand(params.n_samples, params.dim, generator=gen) < p).float()
    y = (x.mean(1) > params.threshold).long()
    return finish_split(DataInfo("ones", (params.dim,), 1, "classification", 2), x, y, params, ctx, None)
