"""Do two sets of records of one leaderboard agree, run by run? And does a committed record
replay here?

A run id promises that a record is the run the spec describes. Float rounding is not part of
the spec: it depends on the CPU's kernels (AVX2 or AVX-512), the BLAS library, the GPU and its
libraries (:func:`bench_core.execution.environment.numerics` records them). On the machine that recorded a run
the same code gives the same numbers; elsewhere a run trained near the edge of stability can
amplify a rounding difference into another outcome (:mod:`bench_core.results.stability` flags such
cells).

:func:`compare_records` sets two record frames side by side by run id (``untied compare A B``:
two machines, two commits, two executors) and names every run and metric that differ by more
than a tolerance. :func:`replay` re-trains some runs of a committed records file in this
process, without writing anything, and compares them with their records; :func:`same_numerics`
says whether this machine rounds as the recording one did, so that the comparison is exact or
within the spec's tolerance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

NUMERICS = ("cpu_model", "cpu_capability", "blas", "torch_version", "device", "cuda_device",
            "cuda_version", "cudnn_version", "cpp_compiler")
"""Record columns that decide float rounding: equal values, equal numbers (same code)."""
ENVIRONMENT = ("cpu_model", "cpu_capability", "blas", "cpp_compiler", "torch_version", "device",
               "git_commit", "threads", "group_size", "stack_size")


@dataclass
class Difference:
    run_id: str
    entry: str
    cell_json: str
    seed_index: Any
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float:
        if self.a is None or self.b is None:
            return math.inf
        if math.isnan(self.a) and math.isnan(self.b):
            return 0.0
        return abs(self.a - self.b)


@dataclass
class Comparison:
    """What :func:`compare_records` found."""

    common: int
    only_a: int
    only_b: int
    metrics: list[str]
    tolerance: float
    differences: list[Difference] = field(default_factory=list)
    status_changes: list[tuple[str, str, str, str]] = field(default_factory=list)
    environment: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def differing_runs(self) -> set[str]:
        return {d.run_id for d in self.differences} | {s[0] for s in self.status_changes}

    def text(self, limit: int = 20) -> str:
        lines = [f"{self.common} runs in both ({self.only_a} only in A, {self.only_b} only in "
                 f"B); metrics compared: {', '.join(self.metrics) or 'none'}; tolerance "
                 f"{self.tolerance:g}"]
        for key, (a, b) in self.environment.items():
            mark = "" if a == b else "   <- differs"
            lines.append(f"  {key:<15} A: {a}   B: {b}{mark}")
        per_metric: dict[str, list[Difference]] = {}
        for d in self.differences:
            per_metric.setdefault(d.metric, []).append(d)
        if not self.differences and not self.status_changes:
            lines.append(f"every common run agrees on every metric within {self.tolerance:g}")
            return "\n".join(lines) + "\n"
        lines.append(f"{len(self.differing_runs)} of {self.common} runs differ:")
        for metric, diffs in per_metric.items():
            worst = max(d.delta for d in diffs)
            lines.append(f"  {metric}: {len(diffs)} runs, largest |A - B| = {worst:.3g}")
        for run_id, entry, a, b in self.status_changes[:limit]:
            lines.append(f"  status {run_id} ({entry}): {a} in A, {b} in B")
        shown = sorted(self.differences, key=lambda d: -d.delta)[:limit]
        if shown:
            lines.append(f"largest differences (of {len(self.differences)}):")
        for d in shown:
            cell = ", ".join(f"{k}={v}" for k, v in json.loads(d.cell_json or "{}").items())
            lines.append(f"  {d.run_id}  {d.entry} [{cell or 'all'}] seed {d.seed_index}  "
                         f"{d.metric}: {_num(d.a)} vs {_num(d.b)} (|Δ| {d.delta:.3g})")
        return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "none" if x is None else f"{x:.6g}"


def _values(frame: pl.DataFrame, column: str) -> str:
    if column not in frame.columns:
        return "not recorded"
    vals = sorted({str(v) for v in frame[column].to_list() if v is not None})
    return ", ".join(vals) if vals else "not recorded"


def compare_records(a: pl.DataFrame, b: pl.DataFrame, *, metrics: list[str] | None = None,
                    tolerance: float = 0.0) -> Comparison:
    """Run by run (joined on ``run_id``), the final metrics (``m_<name>``; default every metric
    both sides recorded, but wall-clock ones, :func:`bench_core.specs.metrics.is_timing`) that differ
    by more than ``tolerance`` (absolute), and the runs whose status differs; the environments
    of both sides (:data:`ENVIRONMENT`)."""
    from bench_core.specs.metrics import is_timing

    ids_a, ids_b = set(a["run_id"].to_list()), set(b["run_id"].to_list())
    common = ids_a & ids_b
    if metrics is None:
        metrics = sorted(c[2:] for c in set(a.columns) & set(b.columns)
                         if c.startswith("m_") and not is_timing(c[2:]))
    else:
        metrics = [m for m in metrics if f"m_{m}" in a.columns and f"m_{m}" in b.columns]
    keep = ["run_id", "entry", "cell_json", "seed_index", "status", *[f"m_{m}" for m in metrics]]
    left = a.filter(pl.col("run_id").is_in(sorted(common))).select(
        [c for c in keep if c in a.columns])
    right = b.filter(pl.col("run_id").is_in(sorted(common))).select(
        ["run_id", *[c for c in ("status", *[f"m_{m}" for m in metrics]) if c in b.columns]])
    joined = left.join(right, on="run_id", suffix="__b")
    result = Comparison(common=len(common), only_a=len(ids_a - ids_b),
                        only_b=len(ids_b - ids_a), metrics=metrics, tolerance=tolerance)
    for r in joined.iter_rows(named=True):
        if r["status"] != r.get("status__b"):
            result.status_changes.append((r["run_id"], r.get("entry"), r["status"],
                                          r.get("status__b")))
        for m in metrics:
            va, vb = r.get(f"m_{m}"), r.get(f"m_{m}__b")
            d = Difference(r["run_id"], r.get("entry", ""), r.get("cell_json", "{}"),
                           r.get("seed_index"), m, _float(va), _float(vb))
            if (va is None) != (vb is None) or d.delta > tolerance:
                if va is None and vb is None:
                    continue
                result.differences.append(d)
    result.environment = {k: (_values(a, k), _values(b, k)) for k in ENVIRONMENT
                          if k in a.columns or k in b.columns}
    return result


def _float(x: Any) -> float | None:
    return None if x is None else float(x)


def same_numerics(record: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether a record was made on a machine that rounds as ``here`` does (every column of
    :data:`NUMERICS` recorded and equal); records made before the rounding was recorded never
    are. ``cpp_compiler`` is compared only where both sides have it: records from before it
    was recorded count as made with this machine's compiler."""
    required = ("cpu_model", "cpu_capability", "blas", "torch_version", "device")
    if any(record.get(k) is None or record.get(k) != here.get(k) for k in required):
        return False
    compilers = (record.get("cpp_compiler"), here.get("cpp_compiler"))
    if None not in compilers and compilers[0] != compilers[1]:
        return False
    return all(record.get(k) == here.get(k) for k in ("cuda_device", "cuda_version",
                                                      "cudnn_version"))
