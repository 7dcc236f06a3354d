"""Replay recorded runs in this process, without writing anything, to compare them with their
records (:mod:`bench_core.results.compare`; the test of the committed leaderboards).
"""

from __future__ import annotations

import copy
from typing import Any

import polars as pl


def replay(host: Any, plan: Any, records: pl.DataFrame, run_ids: list[str]) -> pl.DataFrame:
    """Re-train the runs ``run_ids`` of ``plan`` here, without writing anything, each as its
    record says it was trained (:func:`was_stacked`): alone, or in a stack again, beside a twin
    of itself. A stacked computation may round differently from the lone one, and a
    discontinuous forward (step, sign) can turn that last bit into another trajectory; a
    stacked run's result does not depend on which runs share its stack (tested), so the twin
    stands for the original partners. A record from before ``stack_size`` existed that was
    executed in a group cannot say whether its trainer stacked it: it is trained alone and,
    where that does not give its recorded metrics exactly, stacked too, and the replay that
    gives them is kept (else the lone one). Selection runs count (a plan that selects a
    parameter needs its choices made, :func:`bench_core.results.selection.resolve`, for its
    final runs to be known). Returns their fresh records (the columns a record has), to compare
    with ``records``."""
    from bench_core.execution.runner import execute_group, execute_task, set_threads

    by_id = {t.run_id: t for t in plan.all_tasks}  # final runs and selection runs
    how = was_stacked(records)
    recorded = {r["run_id"]: r for r in records.iter_rows(named=True)} if "run_id" in \
        records.columns else {}
    rows = []
    for run_id in run_ids:
        task = by_id[run_id]
        task.threads = 1
        set_threads(1)

        def stacked(task=task) -> dict[str, Any]:
            return execute_group([task, copy.copy(task)], host)[0]

        if how.get(run_id) is True:
            row = stacked()
        else:
            row = execute_task(task, host)
            if how.get(run_id) is None and not same_metrics(row, recorded[run_id]):
                other = stacked()
                row = other if same_metrics(other, recorded[run_id]) else row
        rows.append(row)
    return pl.DataFrame(rows, strict=False, infer_schema_length=None)


def same_metrics(row: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether a fresh row has its record's status and every one of its final metrics
    (``m_*``), to the last bit."""
    return row.get("status") == record.get("status") and all(
        row.get(k) == v for k, v in record.items() if k.startswith("m_") and v is not None)


def was_stacked(records: pl.DataFrame) -> dict[str, bool | None]:
    """Per run id, whether the run was trained in one computation with others: its
    ``stack_size`` is 2 or more. ``None`` (cannot say) for a record from before ``stack_size``
    existed whose ``group_size`` is 2 or more: a group's member may have been trained alone by
    its trainer after all (a member no other one stacks with)."""
    if "run_id" not in records.columns:
        return {}
    n = records.height
    stack = (records["stack_size"].to_list() if "stack_size" in records.columns else [None] * n)
    group = (records["group_size"].to_list() if "group_size" in records.columns else [1] * n)
    return {run_id: (s >= 2 if s is not None else (None if (g or 1) >= 2 else False))
            for run_id, s, g in zip(records["run_id"].to_list(), stack, group)}


def cheapest_runs(records: pl.DataFrame, n: int, max_seconds: float | None = None
                  ) -> list[str]:
    """The ``n`` cheapest ``ok`` runs of a records file (by recorded wall time, then run id): a
    fixed, small sample to replay; runs above ``max_seconds`` only when no cheaper one is."""
    ok = records.filter(pl.col("status") == "ok").sort("wall_time_s", "run_id")
    picked = ok.head(n)
    if max_seconds is not None:
        cheap = picked.filter(pl.col("wall_time_s") <= max_seconds)
        picked = cheap if cheap.height else picked.head(1)
    return picked["run_id"].to_list()
