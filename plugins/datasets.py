"""Small datasets that need no files: scikit-learn's bundled digits and the synthetic Ones task.

Both are split 80/20 (``test_fraction``) with the run's ``data`` random stream, so every entry
of a leaderboard cell sees the same split for a given seed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from bench_core.data import load_once, make_bundle, normalise, split_train_test, take_subset
from bench_core.hookspecs import hookimpl
from bench_core.interfaces import DataInfo


class SplitParams(BaseModel):
    """Options every built-in dataset shares: the held-out share, the training-pool size (a
    seeded subset of the training split) and test-time input noise."""

    model_config = ConfigDict(extra="forbid")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of the samples")
    train_subset: int | None = Field(None, ge=1, description="training pool: train on this many "
                                     "samples of the training split (a seeded subset)")
    test_noise: float = Field(0.0, ge=0, description="std of N(0, s) noise added to test inputs")
    noisy_test_std: float = Field(0.0, ge=0, description="also evaluate on the test inputs plus "
                                  "N(0, s) noise (metrics noisy_test_*), from the same model")
    noisy_test_clip: tuple[float, float] | None = Field(
        None, description="clip the noisy test inputs to [lo, hi] (e.g. [0, 1] for pixels)")

    def bundle_options(self) -> dict:
        """The keyword arguments of :func:`bench_core.data.make_bundle` these options set."""
        clip = self.noisy_test_clip
        if clip is not None and clip[0] > clip[1]:
            raise ValueError(f"noisy_test_clip: lower bound {clip[0]} above upper bound {clip[1]}")
        return {"test_noise": self.test_noise, "noisy_test_std": self.noisy_test_std,
                "noisy_test_clip": clip}


class DigitsParams(SplitParams):
    normalize: Literal["none", "unit", "standard"] = Field(
        "unit", description="unit: pixels / 16; standard: per-feature z-score")


class OnesParams(SplitParams):
    dim: int = Field(10, ge=1, description="input dimension")
    n_samples: int = Field(2000, ge=10)
    threshold: float = Field(0.7, gt=0, lt=1, description="label 1 iff mean(x) > threshold")


def digits(params: DigitsParams, *, ctx):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 10 classes)."""
    x, y = load_once("sklearn.datasets.load_digits", _read_digits)
    return _finish(DataInfo("digits", (64,), 10, "classification", 10), x, y, params, ctx, 16.0)


def digits_file() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (its import
    takes over a second, longer than reading the file; ``untied validate`` and every worker
    process of a grid pay it), or ``None`` if this scikit-learn keeps it elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _read_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits as ``load_digits`` gives them: 64 pixel columns (0-16), then the label."""
    path = digits_file()
    if path is None:
        from sklearn.datasets import load_digits

        raw = load_digits()
        table = np.column_stack([raw.data, raw.target])
    else:
        table = np.loadtxt(path, delimiter=",")
    return (torch.tensor(table[:, :-1], dtype=torch.float32),
            torch.tensor(table[:, -1].astype(np.int64), dtype=torch.int64))


def ones(params: OnesParams, *, ctx):
    """Synthetic Ones task: x in {0,1}^dim, label 1 iff the share of ones exceeds threshold.

    Per sample p ~ U[0,1], then bits ~ Bernoulli(p) (METHODS.md section 1), so both classes
    occur at every dimension. Generated from the run's ``data`` stream.
    """
    gen = ctx.generator("data", device="cpu")
    p = torch.rand(params.n_samples, 1, generator=gen)
    x = (torch.rand(params.n_samples, params.dim, generator=gen) < p).float()
    y = (x.mean(1) > params.threshold).long()
    return _finish(DataInfo("ones", (params.dim,), 1, "classification", 2), x, y, params, ctx, None)


def _finish(info, x, y, params, ctx, max_value):
    gen = ctx.generator("data", device="cpu")
    x_tr, y_tr, x_te, y_te = split_train_test(x, y, params.test_fraction, gen)
    x_tr, y_tr = take_subset(x_tr, y_tr, params.train_subset, gen)
    how = getattr(params, "normalize", "none")
    x_tr, x_te = normalise(x_tr, x_te, how, max_value)
    return make_bundle(info, x_tr, y_tr, x_te, y_te, ctx, **params.bundle_options())


@hookimpl
def register_datasets(register):
    register("digits", digits, params=DigitsParams)
    register("ones", ones, params=OnesParams)
