"""The leaderboard of a plan as ``untied run`` prints it and a committed table shows it: the
aggregate of the plan's records for each of the spec's metrics, with verdicts against the
source and reversed orders (:mod:`bench_core.results.verdicts`), summary tables, and a header that
makes the table auditable on its own: metric and statistics, profile and whether it is
comparable to the source, the verdict rule, the source's own inconsistencies, the protocol
choices where the source is silent, the settings every run shared, the machine (CPU, threads)
the runs ran on, and how diverged runs were counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bench_core import __version__
from bench_core.results.leaderboard import aggregate, overlay_plan, render, summarise
from bench_core.results.records import read_records
from bench_core.results.selection import selection_note, selection_rows
from bench_core.results.stability import add_stability, chaos_lines
from bench_core.results.verdicts import (
    add_reversals,
    add_verdicts,
    summary_lines,
    tolerance_rule,
)
from bench_core.specs.metrics import is_time_to_target


@dataclass
class Report:
    """What :func:`plan_report` assembles; :meth:`render` formats it."""

    title: str
    agg: pl.DataFrame
    notes: list[str]
    metric_notes: dict[str, list[str]] = field(default_factory=dict)
    summaries: dict[str, pl.DataFrame] = field(default_factory=dict)
    summary_by: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    relative: bool = False
    directions: dict[str, str] = field(default_factory=dict)
    appendix: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    """Further tables after the metrics' (title, header, rows): the selection's candidates."""

    def render(self, fmt: str) -> str | bytes:
        return render(self.agg, fmt, title=self.title, notes=self.notes, extras=self.extras,
                      relative=self.relative, directions=self.directions,
                      summaries=self.summaries,
                      summary_by=self.summary_by, metric_notes=self.metric_notes,
                      appendix=self.appendix)


def plan_aggregate(plan, records: pl.LazyFrame, include_diverged: bool = True,
                   perturbed: pl.LazyFrame | None = None
                   ) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """One aggregate over the plan's records for the spec's metric and each of its further
    ``metrics`` (stacked; column ``metric``), with verdicts and reversed orders where the spec
    has references, the chaos of each cell where ``perturbed`` (the records of
    ``untied stability``) holds its perturbed runs, and the summary tables."""
    spec = plan.spec
    metrics = list(dict.fromkeys([spec.metric, *spec.metrics]))
    aggs = []
    for metric in metrics:
        agg = aggregate(overlay_plan(records, plan.tasks, metric, spec), spec.columns,
                        include_diverged, spec.compare)
        if spec.reference:
            tol = spec.tolerance
            agg = add_verdicts(agg, tol, reference_n=spec.reference_n,
                               comparable=plan.comparable)
            agg = add_reversals(agg, tol.absolute)
        if perturbed is not None:
            shaken = aggregate(overlay_plan(perturbed, plan.tasks, metric, spec), [],
                               include_diverged, spec.compare)
            agg = add_stability(agg, shaken, spec.tolerance)
        aggs.append(agg)
    summaries = ({m: summarise(a, spec.summary_by, spec.reference, spec.metric)
                  for m, a in zip(metrics, aggs)} if spec.summary_by else {})
    return pl.concat(aggs, how="diagonal_relaxed"), summaries


def plan_report(plan, source: str | Path | pl.LazyFrame, *, include_diverged: bool = True,
                command: str | None = None, commit: str | None = None,
                perturbed: pl.LazyFrame | None = None) -> Report:
    """The report of ``plan`` over its records: ``source`` is the records themselves, or a
    results folder or records file to read them from. ``command``: how the table was
    generated, stated in its header with ``commit``, the source commit of the code."""
    spec = plan.spec
    if isinstance(source, pl.LazyFrame):
        records = source
    else:
        if getattr(plan, "selection", None) is not None:
            from bench_core.results.selection import resolve

            resolve(plan, read_records(source, {t.run_id for t in plan.selection.tasks},
                                       required=False, problems=[]))
        records = read_records(source, {t.run_id for t in plan.all_tasks})
    agg, summaries = plan_aggregate(plan, records, include_diverged, perturbed)
    main = agg.filter(pl.col("metric") == spec.metric)
    notes = header_notes(plan, main, include_diverged)
    appendix = []
    if getattr(plan, "selection", None) is not None:
        notes.append(selection_note(plan))
        header, rows = selection_rows(plan, records)
        appendix.append(("Selection: every candidate's validation score", header, rows))
    notes += [settings_note(plan.tasks), machine_note(records)]
    if command:
        notes.append(f"Generated by `{command}` (untied-bench {__version__}, commit "
                     f"{(commit or 'unknown')[:12]}); total training time "
                     f"{main['total_wall_time_s'].fill_null(0).sum():.0f} s.")
    metric_notes = (summary_lines(agg, spec.tolerance.absolute, profile=plan.profile,
                                  comparable=plan.comparable) if spec.reference else {})
    for metric in agg["metric"].unique(maintain_order=True).to_list():
        lines = chaos_lines(agg, metric)
        if lines:
            metric_notes.setdefault(metric, []).extend(lines)
    return Report(title=spec.title, agg=agg, notes=notes, metric_notes=metric_notes,
                  summaries=summaries, summary_by=list(spec.summary_by),
                  extras=list(spec.columns), relative=spec.relative,
                  directions={c: spec.direction_of(c) for c in spec.columns},
                  appendix=appendix)


def header_notes(plan, main: pl.DataFrame, include_diverged: bool) -> list[str]:
    """Metric, profile, source, verdict rule, the source's inconsistencies, protocol choices
    and how diverged runs count."""
    spec = plan.spec
    shown = ", ".join(f"`{m}` ({spec.direction_of(m)} is better)"
                      for m in dict.fromkeys([spec.metric, *spec.metrics]))
    scaled = f"; values x {spec.scale:g}" if spec.scale != 1 else ""
    comparison = {
        "difference": "Δ baseline = entry mean − `{}` mean",
        "ratio": "÷ baseline = entry mean / `{}` mean",
        "log10_ratio": "log10(÷ baseline) = log10(entry mean / `{}` mean), -1 = ten times lower,",
    }[spec.compare].format(spec.baseline)
    notes = [f"Metric{'s' if spec.metrics else ''}: {shown}{scaled}; mean ± sample "
             f"std over seeds" + (
        f"; {comparison} in the same cell" if spec.baseline
        else "; no baseline entry") + ("; gain % = relative improvement over the baseline "
                                       "(positive = better)." if spec.relative else ".")]
    n_done = runs_recorded(main)
    prof = spec.profiles.get(plan.profile)
    label = f"Profile: `{plan.profile}`"
    if prof is not None and prof.description:
        label += f": {prof.description}"
    notes.append(f"{label}; seeds {plan.seeds[0]}..{plan.seeds[-1]} ({len(plan.seeds)}); "
                 f"{n_done}/{len(plan.tasks)} runs recorded.")
    if spec.reference:
        notes.append("Comparable to the source: " + (
            "yes - the runs follow its protocol (fewer seeds or cells at most)." if
            plan.comparable else "**no** - a reduced profile; no verdicts."))
    if spec.source:
        notes.append(f"Source: {spec.source}")
    if spec.reference:
        notes.append("paper = value reported in the source" +
                     (f" ({spec.reference_note})" if spec.reference_note else "") + ".")
        tol = spec.tolerance
        notes.append(tolerance_rule(tol, spec.reference_n))
    if spec.source_notes:
        notes.append(f"Inconsistencies of the source: {_one_line(spec.source_notes)}")
    if spec.protocol:
        notes.append(f"Protocol choices where the source is silent: {_one_line(spec.protocol)}")
    notes.append(divergence_note(spec, main, include_diverged))
    targets = [c for c in spec.columns if is_time_to_target(c)]
    if targets:
        notes.append(f"Time to target ({', '.join(f'`{t}`' for t in targets)}): the median over "
                     f"every run that trained (ok and diverged), a run that never reached the "
                     f"target counted as censored at its budget, so `≥ x` marks a median that "
                     f"falls on such runs (x: the budget, or the midpoint with it); `k/n`: runs "
                     f"that reached the target of those that trained. Never a mean over the runs "
                     f"that reached it.")
    return notes


def runs_recorded(main: pl.DataFrame) -> int:
    """Recorded runs of an aggregate of one metric, whatever their status (ok, diverged,
    failed, timeout): what a table's header and the report's index both count."""
    if main.is_empty():
        return 0
    ok = main["n"].sum() - main["diverged_counted"].sum()
    return int(ok + main["diverged"].sum() + main["failed"].sum() + main["timeout"].sum())


def divergence_note(spec, main: pl.DataFrame, include_diverged: bool) -> str:
    """The divergence rule, and how the table's diverged runs count."""
    rule = spec.divergence
    what = (f"a run is `diverged` when it raised or produced a non-finite metric, or when its "
            f"`{rule.curve}` curve is not finite or exceeds {rule.factor:g} x its first logged "
            f"value (judged from the recorded curve)" if rule.factor is not None else
            f"a run is `diverged` when it raised or produced a non-finite metric, or its "
            f"`{rule.curve}` curve is not finite")
    diverged = int(main["diverged"].sum()) if not main.is_empty() else 0
    if not diverged:
        return f"Divergence: {what}; no run diverged."
    counted = int(main["diverged_counted"].sum())
    if not include_diverged:
        how = "all are left out of mean, std and n (--exclude-diverged)"
    elif counted == diverged:
        how = ("all count in mean, std and n with the metrics of the last epoch they logged "
               "(the source's means include collapsed runs)")
    elif counted == 0:
        how = "none counts in mean, std and n: none logged a finite value of the metric"
    else:
        how = (f"{counted} count in mean, std and n with the metrics of the last epoch they "
               f"logged (the source's means include collapsed runs); {diverged - counted} logged "
               f"no finite value of the metric and are left out")
    return f"Divergence: {what}. Diverged runs ({diverged}): {how}; column `diverged`."


def _one_line(text: str) -> str:
    return " ".join(text.split())


def settings_note(tasks: list[Any]) -> str:
    """The component settings of the plan's runs: each parameter's value when every run shares
    it, ``*`` where it varies (by grid cell or entry), so the protocol is read from the runs."""
    fields: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        for comp, table in task.spec.items():
            if isinstance(table, list):      # several components, in order: named in turn
                table = {"name": " then ".join(str(t.get("name")) for t in table)}
            fields.setdefault(comp, []).append(table)
    parts = []
    for comp, tables in fields.items():
        names = sorted({str(t.get("name")) for t in tables})
        missing = len(tables) < len(tasks)
        if len(names) > 1:
            parts.append(f"{comp} = {' | '.join(names)} (by entry)")
            continue
        keys = list(dict.fromkeys(k for t in tables for k in t if k != "name"))
        shown = []
        for key in keys:
            values = {json.dumps(t.get(key), sort_keys=True) for t in tables}
            shown.append(f"{key}={values.pop() if len(values) == 1 else '*'}")
        parts.append(f"{comp} = {names[0]}({', '.join(shown)})" + (" in some runs" if missing
                                                                    else ""))
    return "Run settings (`*` = varies by cell or entry): " + "; ".join(parts) + "."


def machine_note(records: pl.LazyFrame) -> str:
    """CPU, CPU count, torch threads, device, torch version and source commit(s) of the
    records (as recorded by each run)."""
    cols = records.collect_schema().names()
    wanted = [c for c in ("cpu_model", "cpus", "threads", "device", "cuda_device",
                          "torch_version", "git_commit", "cpu_capability", "blas",
                          "cuda_version", "cudnn_version") if c in cols]
    if not wanted:
        return "Machine: not recorded."
    frame = records.select(wanted).collect()

    def values(col: str) -> str:
        if col not in frame.columns:
            return "not recorded"
        vals = sorted({str(v) for v in frame[col].to_list() if v is not None})
        return ", ".join(vals) if vals else "not recorded"

    commits = values("git_commit")
    if commits != "not recorded":
        commits = ", ".join(c[:12] + ("+dirty" if c.endswith("+dirty") else "")
                            for c in commits.split(", "))
    gpu = values("cuda_device")
    rounding = [f"{label} {values(col)}" for col, label in (
        ("cpu_capability", "CPU kernels"), ("blas", "BLAS"), ("cuda_version", "CUDA"),
        ("cudnn_version", "cuDNN")) if values(col) != "not recorded"]
    return (f"Machine: {values('cpu_model')} ({values('cpus')} CPUs); torch threads per run: "
            f"{values('threads')}; device {values('device')}"
            + (f" ({gpu})" if gpu != "not recorded" else "")
            + f"; torch {values('torch_version')}"
            + (f"; {', '.join(rounding)}" if rounding else "; float rounding (CPU kernels, "
               "BLAS) not recorded")
            + f"; untied-bench commit {commits}.")
