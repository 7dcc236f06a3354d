"""Does a leaderboard reproduce its source? A verdict per reference value, and the source's
order of entries compared with ours, on an :func:`bench_core.leaderboard.aggregate` frame.

Verdict of a row with a reference value (``verdict`` column; null without one):

``reproduced``
    ``|mean - reference| <= tolerance``, ``tolerance = max(absolute, k sqrt(se_ours^2 +
    se_paper^2))`` (column ``tolerance``): ``se_ours = std / sqrt(n)`` of our counted runs (0
    with a single run), ``se_paper = reference_std / sqrt(reference_n)`` (0 when either is
    unknown). A source that reports *single runs* (``reference_n = 1``) without a std is one
    draw from the run-to-run spread, which our runs of the same protocol measure: then
    ``se_paper = std`` (our sample std), so a cell is not called different only because the
    source's one run was a lucky or unlucky seed;
``differs``
    otherwise;
``not comparable``
    the runs do not follow the source's protocol (a reduced profile): no claim either way;
``no result``
    no counted run (all failed, or diverged without a value, or excluded).

Order reversals (``reversed_vs`` column): in a grid cell, two entries that both have a mean and
a reference are *reversed* when the source puts them in one order and we in the other, each
difference larger than ``min_difference`` (smaller ones are ties within the tolerance). The
column of each row names the entries it is reversed against. Summary lines count both per
metric.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import combinations
from typing import Any

import polars as pl

from bench_core.figures import as_text

VERDICTS = ("reproduced", "differs", "not comparable", "no result")


def add_verdicts(agg: pl.DataFrame, *, absolute: float, stderr: float,
                 reference_n: int | None, comparable: bool) -> pl.DataFrame:
    """``agg`` with the columns ``tolerance`` and ``verdict`` (module docstring)."""
    se_ours = pl.col("stderr").fill_null(0.0).fill_nan(0.0)
    if reference_n == 1:  # a single run: its spread is ours when the source gives none
        se_paper = pl.coalesce(pl.col("reference_std"), pl.col("std")).fill_null(0.0).fill_nan(0.0)
    elif reference_n:
        se_paper = pl.col("reference_std").fill_null(0.0) / math.sqrt(reference_n)
    else:
        se_paper = pl.lit(0.0)
    tolerance = pl.max_horizontal(pl.lit(absolute), stderr * (se_ours ** 2 + se_paper ** 2).sqrt())
    has_ref = pl.col("reference").is_not_null()
    verdict = (pl.when(~has_ref).then(None)
               .when(pl.lit(not comparable)).then(pl.lit("not comparable"))
               .when(pl.col("mean").is_null() | pl.col("mean").is_nan()).then(pl.lit("no result"))
               .when((pl.col("mean") - pl.col("reference")).abs() <= pl.col("tolerance") + 1e-12)
               .then(pl.lit("reproduced"))
               .otherwise(pl.lit("differs")))
    return (agg.with_columns(pl.when(has_ref).then(tolerance).otherwise(None).alias("tolerance"))
            .with_columns(verdict.alias("verdict")))


def reversed_pairs(rows: list[dict[str, Any]], min_difference: float
                   ) -> list[tuple[str, str]]:
    """``(ours above, ours below)`` for each pair of rows (one grid cell) whose order by our
    means is the opposite of their order by the references, both by more than
    ``min_difference``. "Above" follows the sign of the means, whatever ``higher_is_better``."""
    usable = [r for r in rows if r["mean"] is not None and r["reference"] is not None
              and not math.isnan(r["mean"])]
    out = []
    for a, b in combinations(usable, 2):
        ours, paper = a["mean"] - b["mean"], a["reference"] - b["reference"]
        if ours * paper < 0 and abs(ours) > min_difference and abs(paper) > min_difference:
            out.append((a["entry"], b["entry"]) if ours > 0 else (b["entry"], a["entry"]))
    return out


def add_reversals(agg: pl.DataFrame, min_difference: float) -> pl.DataFrame:
    """``agg`` with the column ``reversed_vs``: per row, the entries of its cell whose order
    against it is reversed with respect to the source (comma-separated; null if none)."""
    if agg.is_empty():
        return agg.with_columns(pl.lit(None, dtype=pl.String).alias("reversed_vs"))
    against: dict[tuple, list[str]] = {}
    for key, group in agg.group_by(["profile", "metric", "cell_json"], maintain_order=True):
        for above, below in reversed_pairs(group.to_dicts(), min_difference):
            against.setdefault((*key, above), []).append(below)
            against.setdefault((*key, below), []).append(above)
    values = [", ".join(against[(r["profile"], r["metric"], r["cell_json"], r["entry"])])
              if (r["profile"], r["metric"], r["cell_json"], r["entry"]) in against else None
              for r in agg.iter_rows(named=True)]
    return agg.with_columns(pl.Series("reversed_vs", values, dtype=pl.String))


def tolerance_rule(absolute: float, stderr: float, reference_n: int | None) -> str:
    """The verdict rule in words, for a table's header."""
    if reference_n == 1:
        paper = ("se_paper = our std where the source gives no std (its value is a single run, "
                 "one draw from the run-to-run spread our runs measure)")
    elif reference_n:
        paper = f"se_paper = paper std / sqrt({reference_n})"
    else:
        paper = "se_paper = 0 (the source's number of runs is not given)"

    return (f"Verdict per paper value: `reproduced` when |ours − paper| ≤ max({absolute:g}, "
            f"{stderr:g} × sqrt(se_ours² + se_paper²)), se_ours = std / sqrt(n) over our runs, "
            f"{paper}; otherwise `differs`; `not comparable` when the profile does not follow "
            f"the source's protocol.")


def summary_lines(agg: pl.DataFrame, min_difference: float, *, profile: str = "",
                  comparable: bool = True) -> dict[str, list[str]]:
    """Per metric: a line counting the verdicts ("k of n paper values reproduced") and one
    counting the cells whose order of entries is reversed against the source."""
    out: dict[str, list[str]] = {}
    if agg.is_empty() or "verdict" not in agg.columns:
        return out
    for metric in agg["metric"].unique(maintain_order=True).to_list():
        part = agg.filter(pl.col("metric") == metric)
        counts = Counter(v for v in part["verdict"].to_list() if v is not None)
        n = sum(counts.values())
        if n == 0:
            continue
        if not comparable:
            lines = [f"Verdicts (`{metric}`): none - profile `{profile}` does not follow the "
                     f"source's protocol, so its {n} paper values are shown for orientation, "
                     f"not compared."]
        else:
            rest = [f"{counts[v]} {'differ' if v == 'differs' else v}" for v in VERDICTS[1:]
                    if counts[v]]
            lines = [f"Verdicts (`{metric}`): **{counts['reproduced']} of {n} paper values "
                     f"reproduced**" + (f" ({', '.join(rest)})" if rest else "") + "."]
            lines += wide_tolerance_lines(part, WIDE_FACTOR * min_difference)
        lines += reversal_lines(part, min_difference)
        out[metric] = lines
    return out


WIDE_FACTOR = 5.0
"""A ``reproduced`` value further than this many absolute tolerances from the paper's is named
in the summary: it passed only through a wide spread (few seeds split between outcomes, or a
paper std of a cell where runs collapsed), not through agreement of the means."""
WIDE_LISTED = 4
"""At most this many of them are listed by name."""


def wide_tolerance_lines(part: pl.DataFrame, limit: float) -> list[str]:
    """A line naming the ``reproduced`` values with ``|mean - reference| > limit``."""
    wide = part.filter((pl.col("verdict") == "reproduced")
                       & ((pl.col("mean") - pl.col("reference")).abs() > limit))
    if wide.is_empty():
        return []
    items = [f"{r['entry']} {_cell_label(r['cell_json'])}: {r['mean']:.4g} vs {r['reference']:.4g}"
             f" (tolerance {r['tolerance']:.3g})"
             for r in wide.head(WIDE_LISTED).iter_rows(named=True)]
    more = f"; {wide.height - WIDE_LISTED} more" if wide.height > WIDE_LISTED else ""
    return [f"Of the reproduced values, {wide.height} differ from the paper by more than {limit:g} "
            f"and are within tolerance only through a wide spread (ours over few seeds, or the "
            f"paper's std; column `tolerance` of the aggregate): {'; '.join(items)}{more}."]


def _cell_label(cell_json: str) -> str:
    """``(rule.lr = 0.1, trainer.batch_size = 256)``, values written as the tables write them."""
    cell = json.loads(cell_json) if cell_json else {}
    if not cell:
        return "(all)"
    return "(" + ", ".join(f"{k} = {as_text(v)}" for k, v in cell.items()) + ")"


def reversal_lines(part: pl.DataFrame, min_difference: float) -> list[str]:
    cells, flagged, pairs = 0, 0, Counter()
    for _, group in part.group_by(["profile", "cell_json"], maintain_order=True):
        rows = group.to_dicts()
        if sum(r["mean"] is not None and r["reference"] is not None for r in rows) < 2:
            continue
        cells += 1
        found = reversed_pairs(rows, min_difference)
        flagged += bool(found)
        pairs.update(found)
    if not cells:
        return []
    if not flagged:
        return [f"Order of entries: as in the source in all {cells} cells with two or more paper "
                f"values (no pair reversed by more than {min_difference:g} on both sides)."]
    listed = "; ".join(f"{a} above {b} in {k}" for (a, b), k in pairs.most_common(6))
    more = f"; {len(pairs) - 6} more pairs" if len(pairs) > 6 else ""
    return [f"Order of entries reversed against the source in **{flagged} of {cells} cells** "
            f"(both differences > {min_difference:g}; column `vs paper order`): ours has "
            f"{listed}{more}."]

