"""The one-ulp perturbation of a run's initial weights (``untied stability``,
:mod:`bench_core.results.stability`).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def perturb(model: nn.Module, ctx) -> None:
    """Move every floating parameter of ``model`` by one ulp, up or down at random (the run's
    ``perturbation`` stream, which restarts for every build: a model built twice is perturbed
    alike; ``init-ulp/k`` draws the k-th other set of coins)."""
    draw = ctx.perturbation.partition("/")[2]
    gen = ctx.generator("perturbation" + (f"/{draw}" if draw else ""), device="cpu")
    for param in model.parameters():
        if not param.is_floating_point():
            continue
        up = torch.rand(param.shape, generator=gen) < 0.5
        target = torch.where(up, torch.inf, -torch.inf).to(param.device, param.dtype)
        param.copy_(torch.nextafter(param, target))
