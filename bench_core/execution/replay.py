"""Replay recorded runs in this process, without writing anything, to compare them with their
records (:mod:`bench_core.results.compare`; the test of the committed leaderboards).
"""

from __future__ import annotations

from typing import Any

import polars as pl


def replay(host: Any, plan: Any, records: pl.DataFrame, run_ids: list[str]) -> pl.DataFrame:
    """Re-train the runs ``run_ids`` of ``plan`` here, one by one, without writing anything;
    return their fresh records (the columns a record has), to compare with ``records``. Runs
    of a plan's selection stage count; a final run of a pair whose selection is not resolved
    in ``plan`` (:func:`bench_core.results.selection.resolve`) is not found."""
    from bench_core.execution.runner import execute_task, set_threads

    by_id = {t.run_id: t for t in plan.all_tasks}  # selection runs too
    rows = []
    for run_id in run_ids:
        task = by_id[run_id]
        task.threads = 1
        set_threads(1)
        rows.append(execute_task(task, host))
    return pl.DataFrame(rows, strict=False, infer_schema_length=None)


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
