"""Divergence judged from a run's curves, when records are aggregated.

A run that raises or produces a non-finite metric is recorded ``diverged`` by the runner. A run
whose training loss explodes to 1e23 but stays finite finishes ``ok``; :func:`judge_divergence`
calls it ``diverged`` when its records are read, by the rule of the spec's ``divergence`` table
(:class:`bench_core.specs.model.Divergence`): the curve (default ``train_loss``) holds a non-finite
value, or a value above ``factor`` times its first logged value (only where that first value is
positive and finite). Applying the rule at aggregation judges committed records without
rerunning them, and changing the factor needs no rerun either. The record keeps its status on
disk; the judged frame has status ``diverged`` and an ``error`` naming the epoch and the loss.
The run's metrics are untouched: a diverged run counts with the metrics of the last epoch it
logged, as runs that the runner marks ``diverged`` do.
"""

from __future__ import annotations

import polars as pl

DEFAULT_FACTOR = 100.0
DEFAULT_CURVE = "train_loss"


def judge_divergence(records: pl.LazyFrame, factor: float | None = DEFAULT_FACTOR,
                     curve: str = DEFAULT_CURVE) -> pl.LazyFrame:
    """``records`` with each ``ok`` run whose ``curve_<curve>`` explodes (module docstring)
    marked ``diverged``, its ``error`` saying why; records without that curve are unchanged."""
    col = f"curve_{curve}"
    names = records.collect_schema().names()
    if col not in names or "status" not in names:
        return records
    values = pl.col(col).cast(pl.List(pl.Float64))
    first = values.list.first()
    nonfinite = values.list.eval(~pl.element().is_finite()).list.any().fill_null(False)
    peak = values.list.eval(pl.element().filter(pl.element().is_finite())).list.max()
    peak_index = values.list.eval(pl.element().fill_nan(None).arg_max()).list.first()
    bad_index = values.list.eval((~pl.element().is_finite()).arg_max()).list.first()
    if "curve_epoch" in names:   # the epoch as logged; else the position in the curve
        peak_at = pl.col("curve_epoch").list.get(peak_index, null_on_oob=True).cast(pl.Int64)
        bad_at = pl.col("curve_epoch").list.get(bad_index, null_on_oob=True).cast(pl.Int64)
    else:
        peak_at, bad_at = peak_index + 1, bad_index + 1
    if factor is None:
        exploded = pl.lit(False)
    else:
        exploded = ((first > 0) & first.is_finite() & (peak > factor * first)).fill_null(False)
    judged = (pl.col("status") == "ok") & (nonfinite | exploded)
    error = (pl.when(nonfinite)
             .then(pl.format("{} is not finite at epoch {} (judged from the curve)",
                             pl.lit(curve), bad_at))
             .otherwise(pl.format("{} reached {} at epoch {}, over {} x its first logged value "
                                  "{} (judged from the curve)", pl.lit(curve),
                                  peak.map_elements(lambda v: f"{v:.3g}", return_dtype=pl.String),
                                  peak_at, pl.lit(f"{factor:g}" if factor else ""),
                                  first.map_elements(lambda v: f"{v:.3g}",
                                                     return_dtype=pl.String))))
    out = records.with_columns(judged.alias("_judged"), error.alias("_why"))
    old_error = pl.col("error").cast(pl.String) if "error" in names else pl.lit(None, pl.String)
    return out.with_columns(
        pl.when(pl.col("_judged")).then(pl.lit("diverged")).otherwise(pl.col("status"))
        .alias("status"),
        pl.when(pl.col("_judged")).then(pl.col("_why")).otherwise(old_error).alias("error"),
    ).drop("_judged", "_why")
