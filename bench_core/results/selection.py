"""Which value a plan's selection chose for each (entry, grid cell) pair, from the records of
its selection runs (:class:`bench_core.specs.model.Select`, :class:`bench_core.specs.plan.
SelectionStage`).

A selection run trained on its training split less a held-out validation part and was
evaluated on that part; its record names its metrics ``validation_*`` (stage ``selection``).
For each pair, every candidate's selection runs must be recorded (whatever their status)
before a value is chosen. Candidates are ranked by:

1. the number of their runs that failed, timed out or diverged (the spec's divergence rule,
   judged from the recorded curves as tables judge runs): fewer first, so a rate at which any
   seed blows up never wins over one at which none does;
2. the mean of the selection metric over their good runs, by its direction (several metrics:
   each run's worst of them, :func:`run_score`);
3. their order in the candidate list (ties, and candidates with no good run at all, keep it).

A pair whose every candidate has no good run gets no value: its final runs are not planned and
the table's header says so.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from bench_core.results.divergence import judge_divergence
from bench_core.specs.model import canonical_json
from bench_core.specs.plan import Plan, finalize


def run_score(values: list[float | None], higher: bool) -> float | None:
    """A selection run's score from its values of the selection metrics: the worst of those it
    reported (the smallest where higher is better, else the largest), NaN when any of them is
    not finite, None when it reported none."""
    found = [v for v in values if v is not None]
    if not found:
        return None
    if not all(math.isfinite(v) for v in found):
        return math.nan
    return min(found) if higher else max(found)


def higher_is_better(plan: Plan) -> bool:
    """The selection metrics' direction (one for all, checked when the plan is made)."""
    return plan.spec.higher_is_better_for(plan.selection.select.metrics[0])


def candidate_scores(plan: Plan, records: pl.LazyFrame | None) -> pl.DataFrame:
    """One row per (entry, cell index, candidate) of the plan's selection: ``runs`` planned,
    ``recorded``, ``bad`` (failed, timed out or diverged), ``mean`` / ``std`` of the
    selection metric over the good runs."""
    stage = plan.selection
    assert stage is not None
    higher = higher_is_better(plan)
    rows = {}
    for t in stage.tasks:
        key = (t.entry, t.cell_index, canonical_json(t.cell[stage.parameter_of(t.entry)]))
        rows.setdefault(key, []).append(t.run_id)
    found: dict[str, tuple[str, float | None]] = {}
    if records is not None:
        rule = plan.spec.divergence
        ids = [t.run_id for t in stage.tasks]
        lf = judge_divergence(records.filter(pl.col("run_id").is_in(ids)), rule.factor,
                              rule.curve)
        cols = lf.collect_schema().names()
        values = [(pl.col(f"m_{m}").cast(pl.Float64) if f"m_{m}" in cols
                   else pl.lit(None, dtype=pl.Float64)).alias(f"v{i}")
                  for i, m in enumerate(stage.metrics)]
        for run_id, status, *vs in lf.select("run_id", "status", *values).collect().iter_rows():
            found[run_id] = (status, run_score(vs, higher))
    out = []
    for (entry, cell_index, cand), ids in rows.items():
        good = [found[i][1] for i in ids if i in found and found[i][0] == "ok"
                and found[i][1] is not None and math.isfinite(found[i][1])]
        recorded = sum(i in found for i in ids)
        mean = sum(good) / len(good) if good else None
        std = (math.sqrt(sum((g - mean) ** 2 for g in good) / (len(good) - 1))
               if len(good) > 1 else None)
        out.append({"entry": entry, "cell_index": cell_index, "candidate": cand,
                    "runs": len(ids), "recorded": recorded, "bad": recorded - len(good),
                    "mean": mean, "std": std})
    return pl.DataFrame(out, schema={"entry": pl.String, "cell_index": pl.Int64,
                                     "candidate": pl.String, "runs": pl.Int64,
                                     "recorded": pl.Int64, "bad": pl.Int64,
                                     "mean": pl.Float64, "std": pl.Float64})


def choices(plan: Plan, records: pl.LazyFrame | None) -> dict[tuple[str, int], Any]:
    """The value chosen for each (entry, cell index) pair whose selection runs are all
    recorded (module docstring); pairs with nothing to choose keep their fixed value."""
    stage = plan.selection
    assert stage is not None
    scores = candidate_scores(plan, records)
    higher = higher_is_better(plan)
    chosen = {k: v for k, v in stage.choices.items()}
    by_pair: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in scores.iter_rows(named=True):
        by_pair.setdefault((row["entry"], row["cell_index"]), []).append(row)
    for key, rows in by_pair.items():
        if any(r["recorded"] < r["runs"] for r in rows):
            continue
        order = {canonical_json(v): i for i, v in enumerate(stage.candidates[key])}
        usable = [r for r in rows if r["mean"] is not None]
        if not usable:
            continue
        best = min(usable, key=lambda r: (r["bad"], -r["mean"] if higher else r["mean"],
                                          order[r["candidate"]]))
        chosen[key] = next(v for v in stage.candidates[key]
                           if canonical_json(v) == best["candidate"])
    return chosen


def resolve(plan: Plan, records: pl.LazyFrame | None) -> Plan:
    """``plan`` with its final runs for every pair whose selection is complete in
    ``records`` (:func:`bench_core.specs.plan.finalize`); a plan without selection as is."""
    if plan.selection is None:
        return plan
    return finalize(plan, choices(plan, records))


def selection_note(plan: Plan) -> str | None:
    """The header line of a table whose plan selects a parameter."""
    stage = plan.selection
    if stage is None:
        return None
    sel = stage.select
    pairs = len(stage.builders)
    done = sum(k in stage.choices for k in stage.builders)
    direction = plan.spec.direction_of(sel.metrics[0])
    by_param: dict[str, list[str]] = {}
    for label, param in stage.parameters.items():
        if param != sel.parameter:
            by_param.setdefault(param, []).append(label)
    own = "".join(f"; {'entries' if len(labels) > 1 else 'entry'} {', '.join(labels)}: "
                  f"`{param}`" for param, labels in by_param.items())
    return (f"Selection: `{sel.parameter}`{own} chosen per entry and grid cell from "
            f"{', '.join(canonical_json(v) for v in sel.values)} (entries may list their own) by "
            f"the mean {stage.label()} ({direction} is better) over {sel.seeds} selection "
            f"run{'s' if sel.seeds > 1 else ''} per candidate, each trained on its training "
            f"split less {sel.validation_fraction:g} of it and evaluated on that held-out part "
            f"(never the test split); a candidate with a failed or diverged run ranks below any "
            f"without; column `selected`; {done}/{pairs} choices made"
            + ("." if done == pairs else ", the other pairs' runs wait for their selection "
               "runs."))


def selection_rows(plan: Plan, records: pl.LazyFrame | None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table of every candidate's selection score, the chosen one
    marked: what a reader checks a choice against."""
    stage = plan.selection
    assert stage is not None
    scores = candidate_scores(plan, records)
    cells = {t.cell_index: t.cell for t in stage.tasks}
    params = set(stage.parameters.values())
    param = next(iter(params)) if len(params) == 1 else "value"
    axes = [k for k in plan.grid if len(plan.grid[k]) > 1]
    header = [*axes, "entry", param, f"{stage.label(quoted=False)} (mean)", "± std",
              "good / runs", "chosen"]
    rows = []
    for r in scores.iter_rows(named=True):
        key = (r["entry"], r["cell_index"])
        chosen = key in stage.choices and canonical_json(stage.choices[key]) == r["candidate"]
        cell = cells.get(r["cell_index"], {})
        own = stage.parameter_of(r["entry"])
        value = r["candidate"] if own == param else f"{own} = {r['candidate']}"
        rows.append([*(canonical_json(cell.get(a)) for a in axes), r["entry"], value,
                     "" if r["mean"] is None else f"{r['mean']:.4g}",
                     "" if r["std"] is None else f"{r['std']:.2g}",
                     f"{r['recorded'] - r['bad']} / {r['runs']}"
                     + ("" if r["recorded"] == r["runs"] else f" ({r['runs'] - r['recorded']} "
                                                               f"not recorded)"),
                     "✓" if chosen else ""])
    return header, rows
