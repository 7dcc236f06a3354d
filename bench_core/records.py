"""Run records: one Parquet file per run, ``<results>/<leaderboard>/<run_id>.parquet``.

Columns (one row):
``run_id, leaderboard, profile, entry, is_baseline, cell_json, seed_index, seed, status, error,
traceback, metric, higher_is_better, value, reference, reference_std, spec_json, p_<field.param>...,
m_<metric>..., curve_<metric> (list per epoch)..., curves_json, wall_time_s, peak_rss_bytes,
peak_cuda_bytes, forward_passes, backward_passes, forward_samples, backward_samples, device,
cuda_device, cpu_model, cpus, threads (torch's intra-op threads), torch_version, python_version,
platform, git_commit, plugins_json, untied_version, finished_at``.

``value`` and ``m_*`` are the final metrics of an ``ok`` run and the last logged (finite)
metrics of a ``diverged`` one; a ``failed`` run has none.

A record is written to a temporary file in the same folder and renamed into place, so a crash
or Ctrl-C never leaves a half-written record and a finished one is never lost.

A *records file* holds many records, one row each: :func:`write_records_file` compacts the runs
of a leaderboard (``untied export``) so that they can be committed beside its table, and every
reader here takes either a results folder or such a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

RECORD_SUFFIX = ".parquet"


def flatten_spec(spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"rule": {"name": "sgd", "lr": 0.1}}`` -> ``{"p_rule.name": "sgd", "p_rule.lr": 0.1}``.
    Lists become JSON strings so every ``p_`` column is a scalar."""
    out: dict[str, Any] = {}
    for comp, table in spec.items():
        for key, value in table.items():
            if isinstance(value, (list, dict)):
                value = json.dumps(value, sort_keys=True)
            out[f"p_{comp}.{key}"] = value
    return out


def write_record(folder: str | Path, row: dict[str, Any]) -> Path:
    """Write one run record atomically; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{row['run_id']}{RECORD_SUFFIX}"
    frame = pl.DataFrame([row], strict=False, infer_schema_length=None)
    fd, tmp = tempfile.mkstemp(prefix=f".{row['run_id']}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def record_files(folder: str | Path) -> list[Path]:
    """The record files of a results folder (none if it is not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{RECORD_SUFFIX}") if not p.name.startswith("."))


def recorded_run_ids(folder: str | Path, statuses: tuple[str, ...] | None = None) -> set[str]:
    """Run ids recorded in ``folder`` (only those with one of ``statuses`` if given)."""
    files = record_files(folder)
    if statuses is None:
        return {p.stem for p in files}
    keep = set()
    for p in files:
        try:
            status = pl.read_parquet(p, columns=["status"])["status"][0]
        except Exception:  # noqa: BLE001 - an unreadable record is simply redone
            continue
        if status in statuses:
            keep.add(p.stem)
    return keep


def is_records_file(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix == RECORD_SUFFIX


def scan_records(source: str | Path, run_ids: set[str] | None = None) -> pl.LazyFrame | None:
    """A lazy frame over the records in ``source``, a results folder or a records file
    (optionally only ``run_ids``); None if there are none. Records of different components
    carry different ``p_``/``m_`` columns; they are aligned diagonally."""
    if is_records_file(source):
        lf = pl.scan_parquet(source)
        if run_ids is not None:
            lf = lf.filter(pl.col("run_id").is_in(sorted(run_ids)))
        return lf if lf.select(pl.len()).collect().item() else None
    files = [p for p in record_files(source) if run_ids is None or p.stem in run_ids]
    if not files:
        return None
    return pl.concat([pl.scan_parquet(p) for p in files], how="diagonal_relaxed")


def write_records_file(records: pl.LazyFrame, target: str | Path,
                       order: list[str] | None = None) -> int:
    """Compact ``records`` into one Parquet file (rows in ``order`` of run ids when given),
    written atomically; return the number of rows."""
    frame = records.collect()
    if order is not None:
        rank = {run_id: i for i, run_id in enumerate(order)}
        frame = frame.with_columns(pl.col("run_id").replace_strict(
            rank, default=len(rank), return_dtype=pl.Int64).alias("_order")
        ).sort("_order", "run_id").drop("_order")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp, compression="zstd", compression_level=19)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return frame.height
