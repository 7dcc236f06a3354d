"""Aggregate run records into a leaderboard (polars) and render it (tabulate).

Per profile, grid cell and entry: mean, sample standard deviation (ddof=1), standard error and
n over the *counted* runs; the number of failed and diverged runs; the comparison with the
baseline entry's mean in the same cell and the relative gain over it in percent (positive =
better); the rank within the cell (1 = best, by ``higher_is_better``); the reference (paper)
value and our difference to it. :func:`summarise` averages the relative gains over some grid
axes; :mod:`bench_core.results.verdicts` adds a verdict per reference value.

The comparison with the baseline (a spec's ``compare``, :data:`COMPARISONS`) is the difference
of the means (``delta_baseline``, always computed and the default), their ratio
(``ratio_baseline`` = entry mean / baseline mean) or its decimal logarithm
(``log10_ratio_baseline``: -2 = two orders of magnitude below the baseline). Ratios are meant
for positive metrics such as errors; a zero or negative baseline mean gives an infinite or empty
cell.

Counted runs: every ``ok`` run and, by default, every ``diverged`` run that has a value - the
metric of the last epoch it logged (:func:`bench_core.execution.runner.last_logged_metrics`), typically
chance accuracy for a collapsed classifier. Papers that report "mean (std) over 20 runs" average
their collapsed runs in, so dropping ours would make unstable cells incomparable.
``include_diverged=False`` (``--exclude-diverged``) counts ``ok`` runs only. Either way the
``diverged`` column counts every diverged run and ``diverged_counted`` those in the mean.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from tabulate import tabulate

from bench_core.errors import UntiedError
from bench_core.results.divergence import judge_divergence
from bench_core.results.verdicts import verdict_text
from bench_core.specs.metrics import (
    budget_metric,
    censored_median,
    default_direction,
    is_time_to_target,
)

FORMATS = ("table", "markdown", "csv", "json", "parquet")
COMPARISONS = {"difference": "delta_baseline", "ratio": "ratio_baseline",
               "log10_ratio": "log10_ratio_baseline"}
"""Ways to compare an entry with the baseline -> the aggregate's column holding it."""
_COMPARISON_HEADERS = {"delta_baseline": "Δ baseline", "ratio_baseline": "÷ baseline",
                       "log10_ratio_baseline": "log10(÷ baseline)"}


def _comparison(mean: pl.Expr, base: pl.Expr, compare: str) -> pl.Expr:
    if compare == "difference":
        return mean - base
    if compare == "ratio":
        return mean / base
    if compare == "log10_ratio":
        return (mean / base).log10()
    raise UntiedError(f"compare '{compare}': expected one of {', '.join(COMPARISONS)}")


def aggregate(records: pl.LazyFrame, extra_metrics: list[str] | None = None,
              include_diverged: bool = True, compare: str = "difference") -> pl.DataFrame:
    """One row per (profile, cell, entry); see the module docstring for the columns."""
    compared = COMPARISONS.get(compare)
    comparison = _comparison(pl.col("mean"), pl.col("_base"), compare)
    cols = records.collect_schema().names()
    extras = [m for m in (extra_metrics or []) if f"m_{m}" in cols]
    targets = [m for m in extras if is_time_to_target(m)]
    extras_mean = [m for m in extras if m not in targets]
    diverged = pl.col("status") == "diverged"
    # columns that can be all-null (every run failed, no reference) must not stay dtype Null
    records = records.with_columns(
        *[pl.col(c).cast(pl.Float64) for c in ("value", "reference", "reference_std", "wall_time_s")
          if c in cols],
        *[pl.col(f"m_{m}").cast(pl.Float64) for m in extras],
        *[pl.col(f"m_{budget_metric(m)}").cast(pl.Float64) for m in targets
          if f"m_{budget_metric(m)}" in cols],
    )
    records = as_recorded(records)
    counted_diverged = diverged & pl.col("value").is_not_null() & pl.col("value").is_finite()
    ok = ((pl.col("status") == "ok") | counted_diverged) if include_diverged else (
        pl.col("status") == "ok")
    # a time to target counts every run that trained (a diverged one did not reach it)
    ran = ((pl.col("status") == "ok") | diverged) if include_diverged else (
        pl.col("status") == "ok")
    aggs = [
        pl.col("value").filter(ok).mean().alias("mean"),
        pl.col("value").filter(ok).std(ddof=1).alias("std"),
        ok.sum().cast(pl.Int64).alias("n"),
        (pl.col("status") == "failed").sum().cast(pl.Int64).alias("failed"),
        diverged.sum().cast(pl.Int64).alias("diverged"),
        (counted_diverged & pl.lit(include_diverged)).sum().cast(pl.Int64)
        .alias("diverged_counted"),
        (pl.col("status") == "timeout").sum().cast(pl.Int64).alias("timeout"),
        pl.col("is_baseline").first().alias("is_baseline"),
        pl.col("reference").first().alias("reference"),
        pl.col("reference_std").first().alias("reference_std"),
        pl.col("higher_is_better").first().alias("higher_is_better"),
        pl.col("metric").first().alias("metric"),
        (pl.col("selected").first() if "selected" in cols
         else pl.lit(None, dtype=pl.String)).alias("selected"),
        pl.col("entry_index").min().alias("entry_index"),
        pl.col("cell_index").min().alias("cell_index"),
        pl.col("wall_time_s").filter(ok).mean().alias("wall_time_s"),
        pl.col("wall_time_s").sum().alias("total_wall_time_s"),
        *[pl.col(f"m_{m}").filter(ok).mean().alias(m) for m in extras_mean],
        *[pl.col(f"m_{m}").filter(ran).alias(f"_{m}_values") for m in targets],
        *[(pl.col(f"m_{budget_metric(m)}") if f"m_{budget_metric(m)}" in cols
           else pl.lit(None, dtype=pl.Float64)).filter(ran).alias(f"_{m}_budgets")
          for m in targets],
    ]
    keys = ["leaderboard", "profile", "cell_json", "entry"]
    table = records.group_by(keys).agg(aggs)
    table = table.with_columns((pl.col("std") / pl.col("n").cast(pl.Float64).sqrt()).alias("stderr"))
    base = (table.filter(pl.col("is_baseline"))
            .select(["leaderboard", "profile", "cell_json", pl.col("mean").alias("_base")]))
    table = table.join(base, on=["leaderboard", "profile", "cell_json"], how="left")
    signed = pl.when(pl.col("higher_is_better")).then(-pl.col("mean")).otherwise(pl.col("mean"))
    better = pl.when(pl.col("higher_is_better")).then(pl.col("mean") - pl.col("_base")) \
        .otherwise(pl.col("_base") - pl.col("mean"))
    table = table.with_columns(
        (pl.col("mean") - pl.col("_base")).alias("delta_baseline"),
        (100.0 * better / pl.col("_base").abs()).alias("gain_pct"),
        *([comparison.alias(compared)] if compared != "delta_baseline" else []),
        signed.rank(method="min").over(["leaderboard", "profile", "cell_json"])
        .cast(pl.Int64).alias("rank"),
        (pl.col("mean") - pl.col("reference")).alias("delta_reference"),
    ).drop("_base")
    out = table.sort(["leaderboard", "profile", "cell_index", "cell_json", "entry_index", "entry"]).collect()
    out = _censored_targets(out, targets)
    target_cols = [c for m in targets for c in (m, f"{m}_censored", f"{m}_reached", f"{m}_runs")]
    return out.select(["leaderboard", "profile", "cell_json", "entry", "mean", "std", "stderr",
                       "n", "failed", "diverged", "diverged_counted", "timeout",
                       "delta_baseline", *([compared] if compared != "delta_baseline" else []),
                       "gain_pct", "rank", "reference", "reference_std",
                       "delta_reference", "is_baseline", "higher_is_better", "metric",
                       "selected", "wall_time_s", "total_wall_time_s", *extras_mean,
                       *target_cols])


def as_recorded(records: pl.LazyFrame) -> pl.LazyFrame:
    """Records read without their spec (``untied leaderboard FILE``, a folder of an unknown
    spec) shown as recorded: what only a plan says (order, baseline, paper values) left
    neutral, each metric's direction by its name. With a spec, :func:`overlay_plan` sets them."""
    cols = records.collect_schema().names()
    fill = [pl.lit(0).alias(c) for c in ("entry_index", "cell_index") if c not in cols]
    fill += [pl.lit(False).alias("is_baseline")] if "is_baseline" not in cols else []
    fill += [pl.lit(None, dtype=pl.Float64).alias(c) for c in ("reference", "reference_std")
             if c not in cols]
    if "higher_is_better" not in cols and "metric" in cols:
        fill.append(pl.col("metric").map_elements(lambda m: default_direction(m) == "higher",
                                                  return_dtype=pl.Boolean)
                    .alias("higher_is_better"))
    if "profile" not in cols:
        fill.append(pl.lit("default").alias("profile"))
    return records.with_columns(fill) if fill else records


def _censored_targets(out: pl.DataFrame, targets: list[str]) -> pl.DataFrame:
    """Per time-to-target metric ``m``: ``m`` (the censored median,
    :func:`bench_core.specs.metrics.censored_median`), ``m_censored`` (the median is a lower bound),
    ``m_reached`` and ``m_runs`` (runs that reached the target, runs that trained)."""
    for m in targets:
        medians, censored, reached, runs = [], [], [], []
        for values, budgets in zip(out[f"_{m}_values"].to_list(), out[f"_{m}_budgets"].to_list()):
            values, budgets = list(values or []), list(budgets or [])
            value, cens = censored_median(values, budgets)
            medians.append(value)
            censored.append(cens)
            reached.append(sum(v is not None for v in values))
            runs.append(len(values))
        out = out.drop(f"_{m}_values", f"_{m}_budgets").with_columns(
            pl.Series(m, medians, dtype=pl.Float64), pl.Series(f"{m}_censored", censored),
            pl.Series(f"{m}_reached", reached, dtype=pl.Int64),
            pl.Series(f"{m}_runs", runs, dtype=pl.Int64))
    return out


def overlay_plan(records: pl.LazyFrame, tasks: list[Any], metric: str | None = None,
                 spec: Any = None) -> pl.LazyFrame:
    """Take what a table shows about each run from the spec's plan rather than from the
    record: profile, entry and cell order, baseline flag, reference values and which metric is
    the value. A run shared by two profiles (same run_id) is then counted in the one asked for,
    in the cell of that profile's grid (named by its axes, not by those of the profile that
    recorded the run), and editing a spec's references or metric needs no rerun. ``metric``
    (default: the plan's) picks another reported metric, with the spec's references for it;
    values are multiplied by the spec's ``scale``; the metric's direction is the spec's for it
    (:meth:`bench_core.specs.model.LeaderboardSpec.direction_of`). Runs whose curves explode are
    marked ``diverged`` by the spec's rule (:mod:`bench_core.results.divergence`). ``ok`` and
    ``diverged`` runs keep their values (a diverged run's last logged metrics);
    :func:`aggregate` decides whether diverged ones count."""
    if not tasks:
        return records
    from bench_core.specs.model import canonical_json

    metric = metric or tasks[0].metric
    if spec is not None and metric != tasks[0].metric:
        from bench_core.specs.model import find_reference

        refs = [find_reference(spec, t.entry, t.cell, metric) for t in tasks]
        values = [r.value if r else None for r in refs]
        stds = [r.std if r else None for r in refs]
    else:
        values = [t.reference for t in tasks]
        stds = [t.reference_std for t in tasks]
    scale = float(getattr(spec, "scale", 1.0) or 1.0)
    plan = pl.LazyFrame({
        "run_id": [t.run_id for t in tasks],
        "profile": [t.profile for t in tasks],
        "cell_json": [canonical_json(t.cell) for t in tasks],
        "entry_index": [t.entry_index for t in tasks],
        "cell_index": [t.cell_index for t in tasks],
        "is_baseline": [t.is_baseline for t in tasks],
        "reference": values,
        "reference_std": stds,
        "metric": [metric] * len(tasks),
        "selected": [_selected_text(getattr(t, "selected", None)) for t in tasks],
        "higher_is_better": ([spec.higher_is_better_for(metric)] * len(tasks)
                             if hasattr(spec, "higher_is_better_for")
                             else [t.higher_is_better for t in tasks]),
    }, schema_overrides={"reference": pl.Float64, "reference_std": pl.Float64,
                         "selected": pl.String})
    rule = getattr(spec, "divergence", None)
    records = (judge_divergence(records, rule.factor, rule.curve) if rule is not None
               else judge_divergence(records))
    cols = records.collect_schema().names()
    has_value = pl.col("status").is_in(["ok", "diverged"])
    value = (pl.when(has_value).then(pl.col(f"m_{metric}").cast(pl.Float64) * scale)
             .otherwise(None) if f"m_{metric}" in cols else pl.lit(None, dtype=pl.Float64))
    keep = [c for c in cols if c not in plan.collect_schema().names() or c == "run_id"]
    return records.select(keep).join(plan, on="run_id", how="inner").with_columns(
        value.alias("value"))


def _selected_text(selected: dict[str, Any] | None) -> str | None:
    """A final run's chosen value as its table cell shows it (one parameter is chosen)."""
    if not selected:
        return None
    return ", ".join(_cell_text(v) for v in selected.values())


def summarise(agg: pl.DataFrame, by: list[str], references: list[Any] = (),
              default_metric: str | None = None) -> pl.DataFrame:
    """Each entry's relative gain over the baseline (``gain_pct``) averaged over the cells that
    share the values of the grid axes ``by`` (Wang 2025, Tables 3-4). One row per (profile,
    values of ``by``, entry) with ``gain_pct`` (mean), ``cells`` (how many were averaged) and
    ``reference`` (a ``summary = true`` reference of that entry and axes values, if any)."""
    rows = []
    for r in agg.filter(~pl.col("is_baseline")).iter_rows(named=True):
        cell = json.loads(r["cell_json"])
        key = {k: cell.get(k) for k in by}
        rows.append({"profile": r["profile"], "key_json": json.dumps(key, sort_keys=True),
                     "entry": r["entry"], "gain_pct": r["gain_pct"],
                     "metric": r["metric"], "order": r.get("cell_index", 0)})
    if not rows:
        return pl.DataFrame()
    frame = pl.DataFrame(rows, infer_schema_length=None)
    out = (frame.group_by(["profile", "metric", "key_json", "entry"], maintain_order=True)
           .agg(pl.col("gain_pct").mean(), pl.col("gain_pct").count().alias("cells")))
    ref_values = []
    for r in out.iter_rows(named=True):
        key = json.loads(r["key_json"])
        match = next((ref for ref in references if ref.summary and ref.entry == r["entry"]
                      and (ref.metric or default_metric) == r["metric"]
                      and all(json.dumps(key.get(k), sort_keys=True) ==
                              json.dumps(v, sort_keys=True) for k, v in ref.cell.items())),
                     None)
        ref_values.append(match.value if match else None)
    return out.with_columns(pl.Series("reference", ref_values, dtype=pl.Float64))


def _cells(agg: pl.DataFrame) -> list[str]:
    keys: list[str] = []
    for cj in agg["cell_json"].unique(maintain_order=True).to_list():
        for k in json.loads(cj):
            if k not in keys:
                keys.append(k)
    return keys


def constant_axes(agg: pl.DataFrame) -> dict[str, Any]:
    """Grid axes that hold one value in every cell of ``agg`` (shown once, not per row)."""
    cells = [json.loads(cj) for cj in agg["cell_json"].unique(maintain_order=True).to_list()]
    if len(cells) < 2:
        return {}
    out = {}
    for key in _cells(agg):
        values = {json.dumps(c.get(key), sort_keys=True) for c in cells}
        if len(values) == 1 and key in cells[0]:
            out[key] = cells[0][key]
    return out


def _fmt(x: Any, digits: int = 4, signed: bool = False) -> str:
    """``digits`` decimals; a non-zero value below ``10^(1-digits)`` in magnitude (which would
    keep fewer than two significant digits, e.g. a small error) in scientific notation with
    ``digits - 1`` decimals instead; one-decimal columns (percentages) never switch
    (``-0.7``, not ``-7e-01``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float):
        kind = "e" if digits > 1 and 0 < abs(x) < 10.0 ** (1 - digits) else "f"
        places = digits - 1 if kind == "e" else digits
        return f"{x:+.{places}{kind}}" if signed else f"{x:.{places}{kind}}"
    return str(x)


def _cell_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def diverged_text(diverged: int, counted: int) -> str:
    """``3`` (all counted in the mean), ``3 (not in mean)``, ``3 (1 in mean)``; empty for 0."""
    if not diverged:
        return ""
    if counted == diverged:
        return str(diverged)
    return f"{diverged} ({'not' if counted == 0 else counted} in mean)"


def extra_header(name: str, directions: dict[str, str] | None = None) -> str:
    """A further column's header: its name and direction arrow; a time to target says it is
    a median with the share of runs that reached it."""
    direction = (directions or {}).get(name) or default_direction(name)
    arrow = "↑" if direction == "higher" else "↓"
    if is_time_to_target(name):
        return f"{name} {arrow} (median, reached)"
    return f"{name} {arrow}"


def extra_text(row: dict[str, Any], name: str) -> str:
    """A further column's cell: the mean; for a time to target the censored median (``≥ x``
    when it falls on runs that did not reach the target) and ``k/n`` reached."""
    if not is_time_to_target(name) or f"{name}_runs" not in row:
        return _fmt(row.get(name))
    runs = row[f"{name}_runs"]
    if not runs:
        return ""
    value = row[name]
    text = "" if value is None else f"{value:.4g}"
    if row[f"{name}_censored"]:
        median = f"≥ {text}" if value is not None else "≥ budget"
    else:
        median = text
    return f"{median} ({row[f'{name}_reached']}/{runs})"


def display_rows(agg: pl.DataFrame, extras: list[str] | None = None, relative: bool = False,
                 directions: dict[str, str] | None = None
                 ) -> tuple[list[str], list[list[str]]]:
    """Header and string rows for a text/Markdown table (lm-eval ``make_table`` style). Grid
    axes with one value in every cell are left out (:func:`constant_axes` names them).
    ``directions``: ``higher``/``lower`` per further column (its arrow), else by name."""
    if agg.is_empty():
        return [], []
    metric = agg["metric"][0]
    arrow = "↑" if agg["higher_is_better"][0] else "↓"
    fixed = constant_axes(agg)
    cell_keys = [k for k in _cells(agg) if k not in fixed]
    multi_profile = agg["profile"].n_unique() > 1
    has_ref = agg["reference"].is_not_null().any()
    extras = [e for e in (extras or []) if e in agg.columns]
    compared = next((c for c in ("log10_ratio_baseline", "ratio_baseline") if c in agg.columns),
                    "delta_baseline")
    show_selected = "selected" in agg.columns and agg["selected"].is_not_null().any()
    header = (["profile"] if multi_profile else []) + cell_keys + [
        "entry"] + (["selected"] if show_selected else []) + [
        f"{metric} {arrow}", "± std", "n", _COMPARISON_HEADERS[compared]]
    if relative:
        header += ["gain %"]
    header += ["rank"]
    if has_ref:
        header += ["paper", "Δ paper"]
    show_verdict = "verdict" in agg.columns and agg["verdict"].is_not_null().any()
    show_order = "reversed_vs" in agg.columns and agg["reversed_vs"].is_not_null().any()
    header += (["verdict"] if show_verdict else []) + (["vs paper order"] if show_order else [])
    show_chaos = "chaos" in agg.columns and agg["chaos"].is_not_null().any()
    header += ["Δ 1-ulp init"] if show_chaos else []
    header += [extra_header(e, directions) for e in extras]
    show_diverged, show_failed = agg["diverged"].sum() > 0, agg["failed"].sum() > 0
    show_timeout = "timeout" in agg.columns and agg["timeout"].sum() > 0
    header += (["diverged"] if show_diverged else []) + (["failed"] if show_failed else []) + (
        ["timeout"] if show_timeout else [])
    rows = []
    for r in agg.iter_rows(named=True):
        cell = json.loads(r["cell_json"])
        row = ([r["profile"]] if multi_profile else []) + [
            _cell_text(cell[k]) if k in cell else "" for k in cell_keys]
        label = r["entry"] + (" (baseline)" if r["is_baseline"] else "")
        row += [label] + ([r["selected"] or ""] if show_selected else [])
        row += [_fmt(r["mean"]), _fmt(r["std"]), str(r["n"]),
                "" if r["is_baseline"] else _fmt(r[compared], signed=compared != "ratio_baseline")]
        if relative:
            row += ["" if r["is_baseline"] else _fmt(r["gain_pct"], 1, signed=True)]
        row += [_fmt(r["rank"])]
        if has_ref:
            ref = _fmt(r["reference"])
            if ref and r["reference_std"] is not None:
                ref += f" ({r['reference_std']:.3f})"
            row += [ref, _fmt(r["delta_reference"], signed=True)]
        if show_verdict:
            row += [verdict_text(r["verdict"], r.get("seeds_needed"), r.get("verdict_reason"))]
        if show_order:
            row += [f"reversed vs {r['reversed_vs']}" if r["reversed_vs"] else ""]
        if show_chaos:
            row += ["" if r["chaos"] is None else
                    _fmt(r["chaos"]) + (" chaotic" if r["chaotic"] else "")]
        row += [extra_text(r, e) for e in extras]
        if show_diverged:
            row += [diverged_text(r["diverged"], r["diverged_counted"])]
        if show_failed:
            row += [str(r["failed"]) if r["failed"] else ""]
        if show_timeout:
            row += [str(r["timeout"]) if r["timeout"] else ""]
        rows.append(row)
    return header, rows


def summary_rows(summary: pl.DataFrame, by: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a :func:`summarise` table."""
    has_ref = summary["reference"].is_not_null().any()
    header = [*by, "entry", "mean gain % over baseline", "cells"] + (
        ["paper", "Δ paper"] if has_ref else [])
    rows = []
    for r in summary.iter_rows(named=True):
        key = json.loads(r["key_json"])
        row = [_cell_text(key.get(k)) for k in by] + [
            r["entry"], _fmt(r["gain_pct"], 1, signed=True), str(r["cells"])]
        if has_ref:
            ref = r["reference"]
            row += [_fmt(ref, 1, signed=True),
                    _fmt(r["gain_pct"] - ref, 1, signed=True) if ref is not None
                    and r["gain_pct"] is not None else ""]
        rows.append(row)
    return header, rows


def render(agg: pl.DataFrame, fmt: str, *, title: str = "", notes: list[str] | None = None,
           extras: list[str] | None = None, relative: bool = False,
           directions: dict[str, str] | None = None,
           summaries: dict[str, pl.DataFrame] | None = None, summary_by: list[str] = (),
           metric_notes: dict[str, list[str]] | None = None,
           appendix: list[tuple[str, list[str], list[list[str]]]] = ()) -> str | bytes:
    """Render the aggregate as ``table`` / ``markdown`` text or ``csv`` / ``json`` / ``parquet``.

    ``agg`` may hold several metrics (its ``metric`` column): the text formats give one table
    per metric, each after its ``metric_notes`` (e.g. the verdict counts), then the summary
    tables (``summaries``: metric -> :func:`summarise` frame)."""
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
    markdown = fmt == "markdown"
    tablefmt = "github" if markdown else "simple"
    lines = ([f"# {title}", ""] if markdown else [title]) if title else []
    lines += [f"{n}  " if markdown else n for n in notes or []]
    if notes and markdown:
        lines.append("")
    metrics = agg["metric"].unique(maintain_order=True).to_list() if not agg.is_empty() else []
    fixed = constant_axes(agg) if not agg.is_empty() else {}
    if fixed:
        text = "; ".join(f"{k} = {_cell_text(v)}" for k, v in fixed.items())
        lines += [f"Same in every cell: {text}." + ("  " if markdown else ""), ""]

    def heading(text: str) -> None:
        lines.extend([f"## {text}", ""] if markdown else ["", text])

    for metric in metrics:
        if len(metrics) > 1 or summaries:
            heading(f"`{metric}`" if markdown else metric)
        for note in (metric_notes or {}).get(metric, []):
            lines.append(f"{note}  " if markdown else note)
        if (metric_notes or {}).get(metric):
            lines.append("")
        header, rows = display_rows(agg.filter(pl.col("metric") == metric), extras, relative,
                                    directions)
        lines.append(tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True))
        if markdown:
            lines.append("")
    for metric, summary in (summaries or {}).items():
        if summary.is_empty():
            continue
        heading(f"Summary of `{metric}`: relative gain over the baseline, averaged over the "
                f"other grid axes" if markdown else f"summary of {metric}: mean relative gain "
                f"over the baseline (%), averaged over the other grid axes")
        header, rows = summary_rows(summary, list(summary_by))
        lines.append(tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True))
        if markdown:
            lines.append("")
    for title_, header, rows in appendix:          # e.g. the selection's candidates
        heading(title_)
        lines.append(tabulate(rows, headers=header, tablefmt=tablefmt, disable_numparse=True))
        if markdown:
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
