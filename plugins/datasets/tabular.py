"""Tabular regression datasets of the dual-weight paper: UCI Wine Quality and California housing.

Both are split into a training and a test part with the run's ``data`` stream
(``test_fraction``); the training pool is a seeded subset of the training part
(``train_subset``: 100, 500 or 1000 in the paper). Features and the target are standardised with
the mean and standard deviation of the training part (before the pool is drawn, so the scale
does not depend on a 100-sample pool), then the target is multiplied by ``target_scale`` (0.1 in
the paper: a dual-weight neuron's output is bounded by the range of its inputs, Section 5.1).
The paper standardised with the statistics of the whole file and tested on every sample outside
its pool; here the test part is held out from the statistics.

Files are looked up in ``root``, then ``$UNTIED_DATA/<folder>`` and ``~/.cache/untied/<folder>``
(folders ``wine-quality``/``wine_quality``, ``california-housing``/``california_housing``);
``download = true`` fetches them from the UCI archive / scikit-learn when missing.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from bench_core.data import (
    SplitParams,
    cache_folder,
    data_folders,
    file_key,
    load_once,
    make_bundle,
    split_train_test,
    take_subset,
)
from bench_core.errors import DataError
from bench_core.interfaces import DataInfo, RunContext, location_option

WINE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/{}"
WINE_FILES = {"red": "winequality-red.csv", "white": "winequality-white.csv"}
HOUSING_FILES = ("cal_housing.data", "cal_housing.csv", "housing.csv")
HOUSING_COLUMNS = ("longitude", "latitude", "housing_median_age", "total_rooms",
                   "total_bedrooms", "population", "households", "median_income",
                   "median_house_value")


class TabularParams(SplitParams):
    root: str | None = location_option(None, description="folder holding the files (else the "
                                                         "search path)")
    download: bool = location_option(False, description="fetch the files when they are not found")
    target_scale: float = Field(0.1, gt=0, description="multiply the standardised target")


class WineParams(TabularParams):
    variant: Literal["white", "red", "both"] = Field(
        "white", description="which wines (the paper's Figure 4: white); both = red then white")


class HousingParams(TabularParams):
    pass


def search_folders(folders: tuple[str, ...], root: str | None) -> list[Path]:
    """Where a table is looked for (:func:`bench_core.data.data_folders`; its download and
    cache folder is the first name)."""
    return data_folders(folders[0], folders, root)


def find_file(names: tuple[str, ...], folders: list[Path]) -> Path | None:
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def read_table(path: Path, columns: int | None = None) -> tuple[list[str] | None, torch.Tensor]:
    """A numeric CSV: ``;`` or ``,`` separated, with or without a header line, quotes stripped.
    Returns (header or None, float64 tensor). Errors name the file, line and cell."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not lines:
        raise DataError(f"{path}: the file is empty")
    sep = ";" if lines[0].count(";") > lines[0].count(",") else ","

    def cells(line: str) -> list[str]:
        return [c.strip().strip('"').strip() for c in line.split(sep)]

    header = None
    first = cells(lines[0])
    try:
        [float(c) for c in first]
    except ValueError:
        header, lines = first, lines[1:]
    width = columns or len(header or first)
    rows = []
    for number, line in enumerate(lines, start=2 if header else 1):
        row = cells(line)
        if len(row) != width:
            raise DataError(f"{path}, line {number}: {len(row)} columns, expected {width}")
        try:
            rows.append([float(c) for c in row])
        except ValueError:
            bad = next(c for c in row if not _is_number(c))
            raise DataError(f"{path}, line {number}: non-numeric cell {bad!r}") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    return header, torch.tensor(rows, dtype=torch.float64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _fetch(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            out.write(resp.read())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from None


def load_wine(params: WineParams) -> tuple[torch.Tensor, torch.Tensor]:
    folders = search_folders(("wine-quality", "wine_quality", "winequality"), params.root)
    parts = []
    for colour in ("red", "white") if params.variant == "both" else (params.variant,):
        name = WINE_FILES[colour]
        path = find_file((name,), folders)
        if path is None and params.download:
            path = cache_folder("wine-quality") / name
            _fetch(WINE_URL.format(name), path)
        if path is None:
            raise DataError(f"wine_quality: {name} not found in "
                            f"{', '.join(str(f) for f in folders)}; set root or UNTIED_DATA, "
                            f"or download = true")
        parts.append(load_once(("wine_quality", file_key(path)), lambda: read_table(path, 12)[1]))
    table = torch.cat(parts)
    return table[:, :11], table[:, 11:]


def load_housing(params: HousingParams) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(features, target, source): the raw 8 columns of ``cal_housing.data`` (or the same
    columns of a CSV with a header, e.g. the Kaggle ``housing.csv``; rows with empty cells are
    dropped), else scikit-learn's cached copy (its 8 derived features)."""
    folders = search_folders(("california-housing", "california_housing", "cal_housing"),
                             params.root)
    path = find_file(HOUSING_FILES, folders)
    if path is not None:
        return (*load_once(("california_housing", file_key(path)),
                           lambda: _read_housing_file(path)), str(path))
    try:
        from sklearn.datasets import fetch_california_housing

        bunch = fetch_california_housing(download_if_missing=params.download)
    except OSError as exc:
        raise DataError(f"california_housing: none of {', '.join(HOUSING_FILES)} in "
                        f"{', '.join(str(f) for f in folders)}, and no scikit-learn cache "
                        f"({exc}); set root or UNTIED_DATA, or download = true") from None
    x = torch.tensor(bunch.data, dtype=torch.float64)
    return x, torch.tensor(bunch.target, dtype=torch.float64).view(-1, 1), "scikit-learn"


def _read_housing_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    text = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    head = [c.strip().strip('"') for c in text[0].split(",")] if text else []
    if head and not _is_number(head[0]):   # a CSV with named columns: keep the 9 numeric ones
        missing = [c for c in HOUSING_COLUMNS if c not in head]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        keep = [head.index(c) for c in HOUSING_COLUMNS]
        rows = []
        for number, line in enumerate(text[1:], start=2):
            cells = [c.strip().strip('"') for c in line.split(",")]
            if not line.strip():
                continue
            picked = [cells[i] if i < len(cells) else "" for i in keep]
            if any(c == "" for c in picked):
                continue  # the paper drops rows with a missing value (dropna)
            try:
                rows.append([float(c) for c in picked])
            except ValueError:
                raise DataError(f"{path}, line {number}: non-numeric cell in "
                                f"{', '.join(picked)}") from None
        table = torch.tensor(rows, dtype=torch.float64)
    else:
        _, table = read_table(path, 9)
    return table[:, :8], table[:, 8:]


def _standardised_bundle(info: DataInfo, x: torch.Tensor, y: torch.Tensor, params: TabularParams,
                         ctx: RunContext):
    gen = ctx.generator("data", device="cpu")
    x_tr, y_tr, x_te, y_te = split_train_test(x, y, params.test_fraction, gen)
    mx, sx = x_tr.mean(0, keepdim=True), x_tr.std(0, keepdim=True).clamp_min(1e-12)
    my, sy = y_tr.mean(0, keepdim=True), y_tr.std(0, keepdim=True).clamp_min(1e-12)
    x_tr, x_te = (x_tr - mx) / sx, (x_te - mx) / sx
    y_tr, y_te = ((y_tr - my) / sy * params.target_scale, (y_te - my) / sy * params.target_scale)
    x_tr, y_tr = take_subset(x_tr, y_tr, params.train_subset, gen)
    tensors = [t.to(torch.float32) for t in (x_tr, y_tr, x_te, y_te)]
    return make_bundle(info, *tensors, ctx, **params.bundle_options())


def wine_quality(params: WineParams, *, ctx):
    """UCI Wine Quality (Cortez et al. 2009): 11 physico-chemical features -> quality."""
    x, y = load_wine(params)
    return _standardised_bundle(DataInfo(f"wine_quality_{params.variant}", (11,), 1,
                                         "regression"), x, y, params, ctx)


def california_housing(params: HousingParams, *, ctx):
    """California housing (Pace & Barry 1997): 8 block-group features -> median house value."""
    x, y, _source = load_housing(params)
    return _standardised_bundle(DataInfo("california_housing", (8,), 1, "regression"),
                                x, y, params, ctx)
