"""Plots of a leaderboard (matplotlib, Agg backend; imported only by the commands that plot).

:func:`plot_leaderboard` writes each figure as PNG and SVG:

``<metric>-vs-<axis>``
    the metric against each grid axis that takes several values, one line per entry: the mean
    over seeds and a band of ± one sample std; the baseline entry in black, dashed; the paper's
    values (``[[reference]]``) as star markers in the entry's colour. Bands are clipped to the
    metric's range (:func:`bench_core.specs.metrics.value_range`: an accuracy band stops at 1). Further varying axes split
    the figure into panels. With no varying axis, one panel shows every entry's mean ± std.
``curves-<metric>``
    per-epoch curves (the records' ``curve_epoch`` and ``curve_<metric>``), mean and band over
    seeds, one panel per grid cell: the spec's metrics, its ``columns`` and ``train_loss``,
    where runs log them per epoch (a diagnostic such as ``direction_cosine`` or a module's own
    measurement, :func:`bench_core.interfaces.module_measurements`);
    a panel whose means span two orders of magnitude or more is drawn on a log axis.
``fidelity-<metric>``
    ours against the paper's value, one point per reference value: the line y = x, the verdict
    rule's tolerance as an error bar, the verdict as the colour (where the spec has references).
``slice-<name>``
    function approximation: the dataset's 1-D slice of the target (black) beside each entry's
    learned function, mean and band over seeds, one panel per cell (the records'
    ``slices_json``, see :class:`bench_core.interfaces.FunctionSlice`).

Labels come from the spec's ``labels`` table (grid keys, metric names, ``epoch``), else the key
itself; a metric's label states its display scale. Titles name the leaderboard, its profile and
what is plotted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench_core.results.figures import (
    Figures,
    Plot,
    as_number,
    as_text,
    cell_caption,
    slug,
    varying_axes,
)


def _positions(values: list[Any]) -> tuple[list[float], list[str] | None, bool]:
    """x positions of axis values: the numbers themselves (log scale when they span a factor
    of 20 or more), else categories 0, 1, ... with their texts as tick labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        nums = [float(v) for v in values]
        log = min(nums) > 0 and max(nums) / min(nums) >= 20
        return nums, None, log
    return list(range(len(values))), [as_text(v) for v in values], False


def axis_plots(figs: Figures, agg: pl.DataFrame, metric: str) -> list[Plot]:
    """``<metric>-vs-<axis>`` figures, or ``<metric>-by-entry`` with no varying axis."""
    if agg.is_empty():
        return []
    rows = [{**r, "cell": json.loads(r["cell_json"])} for r in agg.iter_rows(named=True)]
    axes = varying_axes([r["cell"] for r in rows])
    ylabel = figs.label(metric, scaled=True)
    paper = any(r["reference"] is not None for r in rows)
    if not axes:
        fig, (ax,) = figs.panels(1, f"{ylabel} per entry")
        low, high = figs.bounds(metric, figs.spec.scale)
        for i, r in enumerate(rows):
            style = figs.styles.get(r["entry"], {})
            mean, std = as_number(r["mean"]), 0.0 if r["std"] is None else r["std"]
            below = std if low is None else max(0.0, min(std, mean - low))
            above = std if high is None else max(0.0, min(std, high - mean))
            ax.errorbar([i], [mean], yerr=[[below], [above]], capsize=4,
                        color=style.get("color"), marker=style.get("marker", "o"))
            if r["reference"] is not None:
                ax.scatter([i], [r["reference"]], marker="*", s=120, color=style.get("color"),
                           zorder=5)
        ax.set_xticks(range(len(rows)), [r["entry"] for r in rows], rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        return [figs.save(fig, f"{slug(metric)}-by-entry", f"{ylabel}: mean ± std per entry",
                          [r["entry"] for r in rows], band=False, paper=paper)]
    plots = []
    for axis in axes:
        others = [k for k in axes if k != axis]
        facets: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            key = json.dumps({k: r["cell"].get(k) for k in others}, sort_keys=True)
            facets.setdefault(key, []).append(r)
        values = list({json.dumps(r["cell"].get(axis), sort_keys=True): r["cell"].get(axis)
                       for r in rows}.values())
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            values.sort()
        xs, ticks, log = _positions(values)
        where = {json.dumps(v, sort_keys=True): x for v, x in zip(values, xs)}
        title = f"{ylabel} vs {figs.label(axis)}"
        for suffix, keys in figs.chunks(list(facets)):
            fig, panels = figs.panels(len(keys), title)
            for ax, key in zip(panels, keys):
                by_entry: dict[str, list[tuple[float, float, float, Any]]] = {}
                for r in facets[key]:
                    x = where[json.dumps(r["cell"].get(axis), sort_keys=True)]
                    by_entry.setdefault(r["entry"], []).append(
                        (x, as_number(r["mean"]), as_number(r["std"]), r["reference"]))
                for entry, pts in by_entry.items():
                    pts.sort(key=lambda p: p[0])
                    figs.line(ax, entry, [p[0] for p in pts], [p[1] for p in pts],
                              [p[2] for p in pts], bounds=figs.bounds(metric, figs.spec.scale))
                    refs = [(p[0], p[3]) for p in pts if p[3] is not None]
                    if refs:
                        ax.scatter(*zip(*refs), marker="*", s=120, zorder=5,
                                   color=figs.styles.get(entry, {}).get("color"))
                if log:
                    ax.set_xscale("log")
                if ticks:
                    ax.set_xticks(xs, ticks, rotation=20, ha="right")
                ax.set_xlabel(figs.label(axis))
                ax.set_ylabel(ylabel)
                if others:
                    ax.set_title(cell_caption(figs, json.loads(key), others), fontsize=8)
            entries = list(dict.fromkeys(r["entry"] for r in rows))
            plots.append(figs.save(fig, f"{slug(metric)}-vs-{slug(axis)}{suffix}",
                                   f"{title}: mean and ± 1 std over seeds per entry", entries,
                                   paper=paper))
    return plots


LOG_SPAN = 100.0
"""A panel of curves whose positive means span this factor or more is drawn on a log axis (a
loss that explodes in one run would otherwise flatten every other curve)."""


def spans_orders(values: list[float]) -> bool:
    """Whether positive ``values`` span :data:`LOG_SPAN` or more (all must be positive)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= LOG_SPAN


VERDICT_COLOURS = {"reproduced": "#1a7f37", "differs": "#c0392b", "inconclusive": "#d68910",
                   "not comparable": "#7f8c8d"}


def fidelity_plots(figs: Figures, agg: pl.DataFrame) -> list[Plot]:
    """``fidelity-<metric>``: our mean against the paper's value, one point per paper value,
    the line y = x, each point's tolerance (the verdict rule's) as its error bar and its
    verdict as its colour. Log axes where the values span orders of magnitude (MSE)."""
    from matplotlib.lines import Line2D

    if "verdict" not in agg.columns:
        return []
    plots = []
    for metric in agg["metric"].unique(maintain_order=True).to_list():
        rows = agg.filter((pl.col("metric") == metric) & pl.col("reference").is_not_null()
                          & pl.col("mean").is_not_null() & pl.col("mean").is_not_nan())
        if rows.is_empty():
            continue
        label = figs.label(metric, scaled=True)
        low, high = figs.bounds(metric, figs.spec.scale)
        fig, (ax,) = figs.panels(1, f"ours against the paper: {label}", square=True)
        handles = []
        for verdict, colour in VERDICT_COLOURS.items():
            part = rows.filter(pl.col("verdict") == verdict)
            if part.is_empty():
                continue
            means, tols = part["mean"].to_list(), part["tolerance"].fill_null(0.0).to_list()
            below = [t if low is None else max(0.0, min(t, m - low)) for m, t in zip(means, tols)]
            above = [t if high is None else max(0.0, min(t, high - m)) for m, t in zip(means, tols)]
            ax.errorbar(part["reference"].to_list(), means, yerr=[below, above], fmt="o",
                        markersize=4, capsize=2, color=colour, alpha=0.85, linewidth=1)
            handles.append(Line2D([], [], color=colour, marker="o", linestyle="none",
                                  label=f"{verdict} ({part.height})"))
        values = rows["reference"].to_list() + rows["mean"].to_list()
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
        if spans_orders(values):
            ax.set_xscale("log")
            ax.set_yscale("log")
            line = [lo / 1.5, hi * 1.5]
        else:
            line = [lo - pad, hi + pad]
        ax.plot(line, line, color="black", linewidth=1, linestyle=":")
        ax.set_xlim(*line)
        ax.set_ylim(*line)
        handles.append(Line2D([], [], color="black", linestyle=":", label="ours = paper"))
        ax.set_xlabel(f"paper's value: {label}")
        ax.set_ylabel(f"ours, mean over seeds: {label}")
        plots.append(figs.save(fig, f"fidelity-{slug(metric)}",
                               f"{label}: ours (mean over seeds) against the paper's value, one "
                               f"point per paper value; bar: the verdict's tolerance; colour: "
                               f"the verdict", [], band=False, extra=handles))
    return plots


def _cells(runs: pl.DataFrame) -> tuple[list[str], list[str]]:
    """The runs' cells in grid order and the axes that vary among them."""
    order = runs.select("cell_json", "cell_index").unique().sort("cell_index")
    cells = list(dict.fromkeys(order["cell_json"].to_list()))
    return cells, varying_axes([json.loads(c) for c in cells])


def curve_plots(figs: Figures, runs: pl.LazyFrame) -> list[Plot]:
    """``curves-<metric>``: per-epoch mean and band over seeds, one panel per cell."""
    cols = runs.collect_schema().names()
    spec = figs.spec
    plots = []
    if "curve_epoch" not in cols:
        return plots
    for metric in dict.fromkeys([spec.metric, *spec.metrics, *spec.columns, "train_loss"]):
        col = f"curve_{metric}"
        if col not in cols:
            continue
        scale = spec.scale if metric in (spec.metric, *spec.metrics) else 1.0
        points = (runs.filter(pl.col(col).list.len() == pl.col("curve_epoch").list.len())
                  .select("entry", "cell_json", "cell_index", pl.col("curve_epoch").alias("x"),
                          (pl.col(col).list.eval(pl.element() * scale)).alias("y"))
                  .explode("x", "y").filter(pl.col("y").is_finite())
                  .group_by("cell_json", "cell_index", "entry", "x")
                  # each group's values sorted, then reduced in that order: a parallel mean
                  # sums them in any order, and a last-bit change moved pixels of the PNGs
                  .agg(pl.col("y").sort().alias("ys"))
                  .with_columns(pl.col("ys").list.mean().alias("mean"),
                                pl.col("ys").list.std().alias("std"))
                  .drop("ys").sort("cell_index", "entry", "x").collect())
        if points.is_empty():
            continue
        cells, axes = _cells(points)
        ylabel = figs.label(metric, scaled=scale != 1)
        title = f"{ylabel} per {figs.label('epoch')}"
        bounds = figs.bounds(metric, scale)
        for suffix, keys in figs.chunks(cells):
            fig, panels = figs.panels(len(keys), title)
            for ax, cell in zip(panels, keys):
                part = points.filter(pl.col("cell_json") == cell)
                for entry in [e for e in figs.styles if e in set(part["entry"].to_list())]:
                    line = part.filter(pl.col("entry") == entry)
                    figs.line(ax, entry, line["x"].to_list(), line["mean"].to_list(),
                              line["std"].fill_null(float("nan")).to_list(), bounds=bounds)
                means = [v for v in part["mean"].to_list() if v is not None and v > 0]
                if spans_orders(part["mean"].to_list()):
                    ax.set_yscale("log")   # bands that reach 0 stop at the axis' bottom
                    ax.set_ylim(min(means) / 3, max(means) * 3)
                ax.set_xlabel(figs.label("epoch"))
                ax.xaxis.get_major_locator().set_params(integer=True)
                ax.set_ylabel(ylabel)
                ax.set_title(cell_caption(figs, json.loads(cell), axes), fontsize=8)
            plots.append(figs.save(fig, f"curves-{slug(metric)}{suffix}",
                                   f"{title}: mean and ± 1 std over seeds, per grid cell",
                                   points["entry"].unique().to_list()))
    return plots


def slice_plots(figs: Figures, runs: pl.LazyFrame) -> list[Plot]:
    """``fidelity-<metric>``
    ours against the paper's value, one point per reference value: the line y = x, the verdict
    rule's tolerance as an error bar, the verdict as the colour (where the spec has references).
``slice-<name>``: the target along a 1-D slice beside each entry's learned function."""
    from matplotlib.lines import Line2D

    if "slices_json" not in runs.collect_schema().names():
        return []
    frame = (runs.filter(pl.col("slices_json").is_not_null())
             .select("entry", "cell_json", "cell_index", "slices_json").collect())
    if frame.is_empty():
        return []
    cells, axes = _cells(frame)
    found: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for r in frame.iter_rows(named=True):
        for name, cut in json.loads(r["slices_json"]).items():
            if isinstance(cut, dict) and {"x", "target", "prediction"} <= cut.keys():
                found.setdefault(name, {}).setdefault(r["cell_json"], {}) \
                    .setdefault(r["entry"], []).append(cut)
    plots = []
    for name, by_cell in found.items():
        title = f"target and learned function along slice '{name}'"
        keys = [c for c in cells if c in by_cell]
        for suffix, part in figs.chunks(keys):
            fig, panels = figs.panels(len(part), title)
            for ax, cell in zip(panels, part):
                first = next(iter(by_cell[cell].values()))[0]
                ax.plot(first["x"], first["target"], color="black", linewidth=2.6, alpha=0.45)
                for entry in [e for e in figs.styles if e in by_cell[cell]]:
                    cuts = [c for c in by_cell[cell][entry] if len(c["x"]) == len(first["x"])]
                    pred = np.array([c["prediction"] for c in cuts], dtype=float)
                    std = pred.std(0, ddof=1) if len(pred) > 1 else None
                    figs.line(ax, entry, first["x"], pred.mean(0).tolist(),
                              None if std is None else std.tolist())
                for line in ax.lines[1:]:
                    line.set_marker("")
                ax.set_xlabel(first.get("label", "x"))
                ax.set_ylabel("f(x)")
                ax.set_title(cell_caption(figs, json.loads(cell), axes), fontsize=8)
            target = Line2D([], [], color="black", linewidth=2.6, alpha=0.45, label="target")
            plots.append(figs.save(fig, f"slice-{slug(name)}{suffix}",
                                   f"{title}: mean and ± 1 std over seeds", list(figs.styles),
                                   extra=[target]))
    return plots


def plot_leaderboard(plan: Any, records: pl.LazyFrame, agg: pl.DataFrame, out_dir: str | Path,
                     formats: tuple[str, ...] = ("png", "svg")) -> list[Plot]:
    """Write every plot of a leaderboard (module docstring) into ``out_dir``; return them."""
    from bench_core.results.leaderboard import overlay_plan

    figs = Figures(plan, Path(out_dir), formats)
    plots: list[Plot] = fidelity_plots(figs, agg)
    for metric in dict.fromkeys([plan.spec.metric, *plan.spec.metrics]):
        plots += axis_plots(figs, agg.filter(pl.col("metric") == metric), metric)
    runs = overlay_plan(records, plan.tasks, spec=plan.spec).filter(pl.col("status") == "ok")
    plots += curve_plots(figs, runs)
    plots += slice_plots(figs, runs)
    return plots
