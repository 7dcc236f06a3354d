"""scikit-learn's bundled 8x8 handwritten digits, split 80/20 (``test_fraction``) with the run's
``data`` stream, so every entry of a leaderboard cell sees the same split for a seed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from bench_core.data import SplitParams, finish_split, load_once
from bench_core.interfaces import DataInfo


class DigitsParams(SplitParams):
    normalize: Literal["none", "unit", "standard"] = Field(
        "unit", description="unit: pixels / 16; standard: per-feature z-score")


def digits(params: DigitsParams, *, ctx):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 10 classes)."""
    x, y = load_once("sklearn.datasets.load_digits", _read_digits)
    info = DataInfo("digits", (64,), 10, "classification", 10)
    return finish_split(info, x, y, params, ctx, 16.0)


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
