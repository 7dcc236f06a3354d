"""Aggregate run records into a leaderboard (polars) and render it (tabulate).

Per profile, grid cell and entry: mean, sample standard deviation (ddof=1), standard error and
n over the ``ok`` runs; the number of failed/diverged runs; the difference to the baseline
entry's mean in the same cell; the rank within the cell (1 = best, by ``higher_is_better``);
the reference (paper) value and our difference to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
from tabulate import tabulate

from bench_core.errors import UntiedError
from bench_core.records import scan_records

FORMATS = ("table", "markdown", "csv", "json", "parquet")


def aggregate(records: pl.LazyFrame, extra_metrics: list[str] | None = None) -> pl.DataFrame:
    """One row per (profile, cell, entry); see the module docstring for the columns."""
    cols = records.collect_schema().names()
    extras = [m for m in (extra_metrics or []) if f"m_{m}" in cols]
    ok = pl.col("status") == "ok"
    # columns that can be all-null (every run failed, no reference) must not stay dtype Null
    records = records.with_columns(
        *[pl.col(c).cast(pl.Float64) for c in ("value", "reference", "reference_std", "wall_time_s")
          if c in cols],
        *[pl.col(f"m_{m}").cast(pl.Float64) for m in extras],
    )
    for col in ("entry_index", "cell_index"):
        if col not in cols:
            records = records.with_columns(pl.lit(0).alias(col))
    aggs = [
        pl.col("value").filter(ok).mean().alias("mean"),
        pl.col("value").filter(ok).std(ddof=1).alias("std"),
        ok.sum().cast(pl.Int64).alias("n"),
        (pl.col("status") == "failed").sum().cast(pl.Int64).alias("failed"),
        (pl.col("status") == "diverged").sum().cast(pl.Int64).alias("diverged"),
        pl.col("is_baseline").first().alias("is_baseline"),
        pl.col("reference").first().alias("reference"),
        pl.col("reference_std").first().alias("reference_std"),
        pl.col("higher_is_better").first().alias("higher_is_better"),
        pl.col("metric").first().alias("metric"),
        pl.col("entry_index").min().alias("entry_index"),
        pl.col("cell_index").min().alias("cell_index"),
        pl.col("wall_time_s").filter(ok).mean().alias("wall_time_s"),
        *[pl.col(f"m_{m}").filter(ok).mean().alias(m) for m in extras],
    ]
    keys = ["leaderboard", "profile", "cell_json", "entry"]
    table = records.group_by(keys).agg(aggs)
    table = table.with_columns((pl.col("std") / pl.col("n").cast(pl.Float64).sqrt()).alias("stderr"))
    base = (table.filter(pl.col("is_baseline"))
            .select(["leaderboard", "profile", "cell_json", pl.col("mean").alias("_base")]))
    table = table.join(base, on=["leaderboard", "profile", "cell_json"], how="left")
    signed = pl.when(pl.col("higher_is_better")).then(-pl.col("mean")).otherwise(pl.col("mean"))
    table = table.with_columns(
        (pl.col("mean") - pl.col("_base")).alias("delta_baseline"),
        signed.rank(method="min").over(["leaderboard", "profile", "cell_json"])
        .cast(pl.Int64).alias("rank"),
        (pl.col("mean") - pl.col("reference")).alias("delta_reference"),
    ).drop("_base")
    out = table.sort(["leaderboard", "profile", "cell_index", "cell_json", "entry_index", "entry"]).collect()
    return out.select(["leaderboard", "profile", "cell_json", "entry", "mean", "std", "stderr",
                       "n", "failed", "diverged", "delta_baseline", "rank", "reference",
                       "reference_std", "delta_reference", "is_baseline", "higher_is_better",
                       "metric", "wall_time_s", *extras])


def overlay_plan(records: pl.LazyFrame, tasks: list[Any]) -> pl.LazyFrame:
    """Take what a table shows about each run from the spec's plan rather than from the
    record: profile, entry and cell order, baseline flag, reference values and which metric is
    the value. A run shared by two profiles (same run_id) is then counted in the one asked for,
    and editing a spec's references or metric needs no rerun."""
    if not tasks:
        return records
    metric = tasks[0].metric
    plan = pl.LazyFrame({
        "run_id": [t.run_id for t in tasks],
        "profile": [t.profile for t in tasks],
        "entry_index": [t.entry_index for t in tasks],
        "cell_index": [t.cell_index for t in tasks],
        "is_baseline": [t.is_baseline for t in tasks],
        "reference": [t.reference for t in tasks],
        "reference_std": [t.reference_std for t in tasks],
        "metric": [metric] * len(tasks),
        "higher_is_better": [t.higher_is_better for t in tasks],
    }, schema_overrides={"reference": pl.Float64, "reference_std": pl.Float64})
    cols = records.collect_schema().names()
    value = (pl.when(pl.col("status") == "ok").then(pl.col(f"m_{metric}").cast(pl.Float64))
             .otherwise(None) if f"m_{metric}" in cols else pl.lit(None, dtype=pl.Float64))
    keep = [c for c in cols if c not in plan.collect_schema().names() or c == "run_id"]
    return records.select(keep).join(plan, on="run_id", how="inner").with_columns(
        value.alias("value"))


def load_records(results_dir: str | Path, run_ids: set[str] | None = None) -> pl.LazyFrame:
    lf = scan_records(results_dir, run_ids)
    if lf is None:
        what = "the runs of this spec" if run_ids is not None else "any run"
        raise UntiedError(f"no records of {what} in {results_dir}: run `untied run` first")
    return lf


def _cells(agg: pl.DataFrame) -> list[str]:
    keys: list[str] = []
    for cj in agg["cell_json"].unique(maintain_order=True).to_list():
        for k in json.loads(cj):
            if k not in keys:
                keys.append(k)
    return keys


def _fmt(x: Any, digits: int = 4, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float):
        return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return str(x)


def display_rows(agg: pl.DataFrame, extras: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and string rows for a text/Markdown table (lm-eval ``make_table`` style)."""
    if agg.is_empty():
        return [], []
    metric = agg["metric"][0]
    arrow = "↑" if agg["higher_is_better"][0] else "↓"
    cell_keys = _cells(agg)
    multi_profile = agg["profile"].n_unique() > 1
    has_ref = agg["reference"].is_not_null().any()
    extras = [e for e in (extras or []) if e in agg.columns]
    header = (["profile"] if multi_profile else []) + cell_keys + [
        "entry", f"{metric} {arrow}", "± std", "n", "Δ baseline", "rank"]
    if has_ref:
        header += ["paper", "Δ paper"]
    header += extras
    if (agg["failed"] + agg["diverged"]).sum() > 0:
        header += ["failed/diverged"]
    rows = []
    for r in agg.iter_rows(named=True):
        cell = json.loads(r["cell_json"])
        row = ([r["profile"]] if multi_profile else []) + [str(cell.get(k, "")) for k in cell_keys]
        label = r["entry"] + (" (baseline)" if r["is_baseline"] else "")
        row += [label, _fmt(r["mean"]), _fmt(r["std"]), str(r["n"]),
                "" if r["is_baseline"] else _fmt(r["delta_baseline"], signed=True),
                _fmt(r["rank"])]
        if has_ref:
            ref = _fmt(r["reference"])
            if ref and r["reference_std"] is not None:
                ref += f" ({r['reference_std']:.3f})"
            row += [ref, _fmt(r["delta_reference"], signed=True)]
        row += [_fmt(r[e]) for e in extras]
        if "failed/diverged" in header:
            row += [f"{r['failed']}/{r['diverged']}" if r["failed"] or r["diverged"] else ""]
        rows.append(row)
    return header, rows


def render(agg: pl.DataFrame, fmt: str, *, title: str = "", notes: list[str] | None = None,
           extras: list[str] | None = None) -> str | bytes:
    """Render the aggregate as ``table`` / ``markdown`` text or ``csv`` / ``json`` / ``parquet``."""
    if fmt not in FORMATS:
        raise UntiedError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return agg.write_csv()
    if fmt == "json":
        return json.dumps(agg.to_dicts(), indent=2, default=str) + "\n"
    if fmt == "parquet":
        import io

        buf = io.BytesIO()
        agg.write_parquet(buf)
        return buf.getvalue()
    header, rows = display_rows(agg, extras)
    numalign = "right"
    if fmt == "markdown":
        lines = [f"# {title}", ""] if title else []
        lines += [f"{n}  " for n in notes or []]
        if notes:
            lines.append("")
        lines.append(tabulate(rows, headers=header, tablefmt="github", disable_numparse=True,
                              colalign=None))
        return "\n".join(lines) + "\n"
    lines = [title] if title else []
    lines += notes or []
    lines.append(tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True,
                          numalign=numalign))
    return "\n".join(lines) + "\n"
