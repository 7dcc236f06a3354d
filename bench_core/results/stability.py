"""Chaotic cells: is a cell's outcome decided by float rounding?

Two machines that round differently (AVX2 against AVX-512 kernels, another BLAS, a GPU) give
the same run slightly different numbers. Most runs forget such a difference; a run trained near
the edge of stability (a summed loss, a high rate) can amplify it into another outcome: a
network that trains on one machine stays at chance on the other. Such a cell's value is not a
property of the method, and its verdict against a paper cannot be trusted either way.

``untied stability SPEC`` re-trains every run of a plan with a perturbation below float
precision, :func:`perturb`: each initial parameter of every model the run builds moves by one
unit in the last place, up or down by a seeded coin (``perturbation = "init-ulp"``; a different
summation order would do the same on another machine). The perturbed records live in
``<results>/<name>/perturbed/`` and, committed, in ``leaderboards/<name>/<profile>.perturbed.
parquet``. :func:`add_stability` then sets, per cell and entry of a table, the mean of the
perturbed runs beside the original one:

``chaos``
    ``|perturbed mean - mean|``: how far a rounding difference moved the cell;
``chaotic``
    ``chaos`` above the spec's tolerance floor (``max(absolute, relative |mean|)``): the table
    marks the cell, and a verdict against the paper becomes ``inconclusive`` when ``chaos``
    exceeds the verdict's own tolerance (the flip alone could decide it either way).
"""

from __future__ import annotations

import polars as pl

PERTURBATION = "init-ulp"
PERTURBED_DIR = "perturbed"


def perturbation(draw: int = 0) -> str:
    """The name of a perturbation: ``init-ulp`` (draw 0), ``init-ulp/1``, ... (other coins)."""
    return PERTURBATION if draw == 0 else f"{PERTURBATION}/{draw}"


def add_stability(agg: pl.DataFrame, perturbed: pl.DataFrame, tol) -> pl.DataFrame:
    """``agg`` (one metric or several) with ``perturbed_mean``, ``chaos`` and ``chaotic``
    (module docstring) from ``perturbed``, the aggregate of the perturbed runs; rows without
    perturbed runs get nulls. A verdict (column ``verdict``) whose tolerance ``chaos`` exceeds
    becomes ``inconclusive``, with ``verdict_reason = "chaotic"``."""
    keys = ["metric", "profile", "cell_json", "entry"]
    other = perturbed.select(*keys, pl.col("mean").alias("perturbed_mean"),
                             pl.col("n").alias("perturbed_n"))
    out = agg.join(other, on=keys, how="left")
    floor = pl.max_horizontal(pl.lit(float(tol.absolute)),
                              float(tol.relative) * pl.col("mean").abs())
    chaos = (pl.col("perturbed_mean") - pl.col("mean")).abs()
    out = out.with_columns(chaos.alias("chaos")).with_columns(
        (pl.col("chaos") > floor).alias("chaotic"))
    if "verdict" in out.columns:
        flips = (pl.col("chaos") > pl.col("tolerance")) & pl.col("verdict").is_in(
            ["reproduced", "differs"])
        out = out.with_columns(
            pl.when(flips).then(pl.lit("chaotic")).otherwise(None).alias("verdict_reason"),
            pl.when(flips).then(pl.lit("inconclusive")).otherwise(pl.col("verdict"))
            .alias("verdict"),
            pl.when(flips).then(None).otherwise(pl.col("seeds_needed")).alias("seeds_needed"))
    return out


def chaos_lines(agg: pl.DataFrame, metric: str) -> list[str]:
    """A line naming the chaotic cells of ``metric``'s table (nothing without a stability run)."""
    part = agg.filter(pl.col("metric") == metric) if "chaos" in agg.columns else None
    if part is None or part["chaos"].is_null().all():
        return []
    checked = part.filter(pl.col("chaos").is_not_null())
    flagged = checked.filter(pl.col("chaotic"))
    if flagged.is_empty():
        return [f"Stability: no cell moves by more than the tolerance floor when every initial "
                f"weight moves by one ulp ({checked.height} entries x cells checked; "
                f"`untied stability`)."]
    from bench_core.results.verdicts import _cell_label

    items = [f"{r['entry']} {_cell_label(r['cell_json'])}: {r['mean']:.4g} -> "
             f"{r['perturbed_mean']:.4g}" for r in flagged.head(6).iter_rows(named=True)]
    more = f"; {flagged.height - 6} more" if flagged.height > 6 else ""
    return [f"**Chaotic: {flagged.height} of {checked.height}** entries x cells move by more "
            f"than the tolerance floor when every initial weight moves by one ulp (`untied "
            f"stability`; column `Δ 1-ulp init`), so rounding alone (another CPU, BLAS or GPU) "
            f"can change them: {'; '.join(items)}{more}."]
