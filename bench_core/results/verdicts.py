"""Does a leaderboard reproduce its source? A verdict per reference value, a sign test of the
table's offsets, and the source's order of entries compared with ours, on an
:func:`bench_core.results.leaderboard.aggregate` frame.

Verdict of a row with a reference value (``verdict`` column; null without one), with the
spec's :class:`bench_core.specs.model.Tolerance`:

``tolerance = max(floor, k sqrt(se_ours^2 + se_paper^2))`` (column ``tolerance``), ``floor =
max(absolute, relative |paper|)``; ``se_ours = std / sqrt(n)`` of our counted runs (0 with a
single run), ``se_paper = reference_std / sqrt(reference_n)`` (0 when either is unknown). A
source that reports *single runs* (``reference_n = 1``) without a std is one draw from the
run-to-run spread, which our runs of the same protocol measure: then ``se_paper = std`` (our
sample std). ``limit = max(max, relative_max |paper|)`` (column ``limit``) is the widest
tolerance a reader would accept as agreement.

``differs``
    ``|mean - paper| > tolerance``: further than the rule allows, whatever its width;
``reproduced``
    ``|mean - paper| <= tolerance <= limit``: agreement within a tolerance a reader accepts;
``inconclusive``
    ``|mean - paper| <= tolerance`` but ``tolerance > limit``: the spread (ours over few seeds
    that split between outcomes, or the paper's) is too wide to decide. Column
    ``seeds_needed``: about how many seeds of ours would bring the tolerance under the limit at
    the spread measured (``k^2 std^2 / (limit^2 - k^2 se_paper^2)``), null when no number of
    our seeds would (the paper's own standard error, or a single-run source's spread, already
    exceeds ``limit / k``);
``not comparable``
    the runs do not follow the source's protocol (a reduced profile): no claim either way;
``no result``
    no counted run (all failed, or diverged without a value, or excluded).

Per table and metric, :func:`summary_lines` counts the verdicts, the values within the fixed
floor alone (``|mean - paper| <= floor``), and a two-sided sign test of the offsets: how many of
our values lie above the paper's and below it, and the binomial probability of a split at least
that uneven if above and below were equally likely. A systematic offset (our values above the
paper's in 28 of 30 cells) is then stated, not hidden among per-cell passes; the same test per
value of each grid axis names the groups where it is significant.

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

from bench_core.results.figures import as_text

VERDICTS = ("reproduced", "differs", "inconclusive", "not comparable", "no result")
SIGNIFICANT = 0.05
"""Sign tests with p below this are named per grid-axis value in the summary."""


def add_verdicts(agg: pl.DataFrame, tol: Any, *, reference_n: int | None,
                 comparable: bool) -> pl.DataFrame:
    """``agg`` with the columns ``tolerance``, ``limit``, ``verdict`` and ``seeds_needed``
    (module docstring); ``tol`` is a :class:`bench_core.specs.model.Tolerance`."""
    k = float(tol.stderr)
    std = pl.col("std").fill_null(0.0).fill_nan(0.0)
    se_ours = pl.col("stderr").fill_null(0.0).fill_nan(0.0)
    if reference_n == 1:  # a single run: its spread is ours when the source gives none
        se_paper = pl.coalesce(pl.col("reference_std"), pl.col("std")).fill_null(0.0).fill_nan(0.0)
    elif reference_n:
        se_paper = pl.col("reference_std").fill_null(0.0) / math.sqrt(reference_n)
    else:
        se_paper = pl.lit(0.0)
    paper = pl.col("reference").abs()
    floor = pl.max_horizontal(pl.lit(float(tol.absolute)), float(tol.relative) * paper)
    tolerance = pl.max_horizontal(floor, k * (se_ours ** 2 + se_paper ** 2).sqrt())
    limit = pl.max_horizontal(pl.lit(float(tol.limit_absolute)), float(tol.limit_relative) * paper)
    room = pl.col("limit") ** 2 - (k * se_paper) ** 2
    needed = (pl.when(room > 0).then((k ** 2 * std ** 2 / room).ceil().clip(lower_bound=2))
              .otherwise(None))
    has_ref = pl.col("reference").is_not_null()
    distance = (pl.col("mean") - pl.col("reference")).abs()
    verdict = (pl.when(~has_ref).then(None)
               .when(pl.lit(not comparable)).then(pl.lit("not comparable"))
               .when(pl.col("mean").is_null() | pl.col("mean").is_nan()).then(pl.lit("no result"))
               .when(distance > pl.col("tolerance") + 1e-12).then(pl.lit("differs"))
               .when(pl.col("tolerance") <= pl.col("limit") + 1e-12).then(pl.lit("reproduced"))
               .otherwise(pl.lit("inconclusive")))
    return (agg.with_columns(pl.when(has_ref).then(tolerance).otherwise(None).alias("tolerance"),
                             pl.when(has_ref).then(floor).otherwise(None).alias("floor"),
                             pl.when(has_ref).then(limit).otherwise(None).alias("limit"))
            .with_columns(verdict.alias("verdict"))
            .with_columns(pl.when(pl.col("verdict") == "inconclusive").then(needed)
                          .otherwise(None).cast(pl.Int64).alias("seeds_needed")))


def verdict_text(verdict: str | None, seeds_needed: int | None,
                 reason: str | None = None) -> str:
    """The verdict as a table cell: ``inconclusive`` says why (a chaotic cell) or how many
    seeds would decide."""
    if verdict != "inconclusive":
        return verdict or ""
    if reason:
        return f"inconclusive ({reason})"
    return (f"inconclusive (~{seeds_needed} seeds)" if seeds_needed is not None
            else "inconclusive (spread)")


def sign_test(above: int, below: int) -> float:
    """Two-sided binomial p of a split at least as uneven as ``above`` : ``below`` when each
    value is above or below with probability 1/2 (ties left out before)."""
    n = above + below
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(above, below) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def sign_counts(part: pl.DataFrame) -> tuple[int, int]:
    """(ours above the paper, ours below it) over rows with a mean and a reference."""
    both = part.filter(pl.col("mean").is_not_null() & pl.col("mean").is_not_nan()
                       & pl.col("reference").is_not_null())
    diff = (both["mean"] - both["reference"]).to_list()
    return sum(d > 0 for d in diff), sum(d < 0 for d in diff)


def sign_lines(part: pl.DataFrame) -> list[str]:
    """The sign test over a table's values, then per value of each grid axis where p <
    :data:`SIGNIFICANT` (and the axis has several values)."""
    above, below = sign_counts(part)
    if above + below == 0:
        return []
    higher = bool(part["higher_is_better"][0]) if "higher_is_better" in part.columns else True
    better = above if higher else below
    p = sign_test(above, below)
    flag = " **systematic offset**" if p < SIGNIFICANT else ""
    lines = [f"Sign test: ours above the paper in {above}, below in {below} of {above + below} "
             f"values (ours better in {better}); two-sided binomial p = {_p_text(p)}{flag}."]
    cells = [json.loads(c) if c else {} for c in part["cell_json"].to_list()]
    keys = list(dict.fromkeys(k for c in cells for k in c))
    groups, tested = [], 0
    for key in keys:
        values = list(dict.fromkeys(json.dumps(c.get(key), sort_keys=True) for c in cells))
        if len(values) < 2:
            continue
        for value in values:
            mask = [json.dumps(c.get(key), sort_keys=True) == value for c in cells]
            a, b = sign_counts(part.filter(pl.Series(mask)))
            tested += bool(a + b)
            if a + b and sign_test(a, b) < SIGNIFICANT:
                groups.append(f"{key} = {as_text(json.loads(value))}: {a} above / {b} below "
                              f"(p = {_p_text(sign_test(a, b))})")
    if groups:
        lines.append(f"Offsets by grid value (p < 0.05, of {tested} values tested, not corrected "
                     f"for their number): " + "; ".join(groups) + ".")
    return lines


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


def tolerance_rule(tol: Any, reference_n: int | None) -> str:
    """The verdict rule in words, for a table's header (``tol``: a spec's Tolerance)."""
    if reference_n == 1:
        paper = ("se_paper = our std where the source gives no std (its value is a single run, "
                 "one draw from the run-to-run spread our runs measure)")
    elif reference_n:
        paper = f"se_paper = paper std / sqrt({reference_n})"
    else:
        paper = "se_paper = 0 (the source's number of runs is not given)"
    floor = f"{tol.absolute:g}"
    limit = f"{tol.limit_absolute:g}"
    if tol.relative:
        floor = f"max({floor}, {tol.relative:g} × |paper|)"
    if tol.limit_relative:
        limit = f"max({limit}, {tol.limit_relative:g} × |paper|)"
    return (f"Verdict per paper value: tolerance = max({floor}, {tol.stderr:g} × sqrt(se_ours² "
            f"+ se_paper²)), se_ours = std / sqrt(n) over our runs, {paper}; `differs` when "
            f"|ours − paper| > tolerance; within it, `reproduced` when the tolerance is at most "
            f"{limit}, else `inconclusive` (the spread is too wide to decide; the cell says "
            f"about how many seeds would); `not comparable` when the profile does not follow "
            f"the source's protocol.")


def summary_lines(agg: pl.DataFrame, min_difference: float, *, profile: str = "",
                  comparable: bool = True) -> dict[str, list[str]]:
    """Per metric: the verdict counts with the count under the fixed floor alone, the sign
    test of the offsets, and the cells whose order of entries is reversed against the
    source."""
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
            lines = [verdict_count_line(metric, part, counts, n)]
            lines += inconclusive_lines(part)
        lines += sign_lines(part.filter(pl.col("verdict").is_not_null()))
        lines += reversal_lines(part, min_difference)
        out[metric] = lines
    return out


def verdict_count_line(metric: str, part: pl.DataFrame, counts: Counter, n: int) -> str:
    """``Verdicts (`m`): **R reproduced, D differ, I inconclusive of n**; within the fixed
    tolerance alone: K of n.``"""
    shown = [f"{counts['reproduced']} reproduced", f"{counts['differs']} differ",
             f"{counts['inconclusive']} inconclusive"]
    rest = [f"{counts[v]} {v}" for v in ("not comparable", "no result") if counts[v]]
    judged = part.filter(pl.col("verdict").is_in(["reproduced", "differs", "inconclusive"]))
    within = int(((judged["mean"] - judged["reference"]).abs() <= judged["floor"] + 1e-12).sum()) \
        if not judged.is_empty() else 0
    floors = sorted(set(judged["floor"].round(12).to_list())) if not judged.is_empty() else []
    floor = (f"the fixed tolerance {floors[0]:g}" if len(floors) == 1
             else "each value's fixed floor")
    return (f"Verdicts (`{metric}`): **{', '.join(shown)} of {n} paper values**"
            + (f" ({', '.join(rest)})" if rest else "")
            + f"; within {floor} alone (no spread): {within} of {n}.")


INCONCLUSIVE_LISTED = 4
"""At most this many inconclusive values are listed by name."""


def inconclusive_lines(part: pl.DataFrame) -> list[str]:
    """A line naming the ``inconclusive`` values: ours, the paper's, the tolerance and about
    how many seeds would decide."""
    wide = part.filter(pl.col("verdict") == "inconclusive")
    if wide.is_empty():
        return []
    items = [f"{r['entry']} {_cell_label(r['cell_json'])}: {r['mean']:.4g} ± {r['std'] or 0:.2g} "
             f"vs {r['reference']:.4g} (tolerance {r['tolerance']:.3g} > {r['limit']:.3g}; "
             + (f"~{r['seeds_needed']} seeds would decide)" if r["seeds_needed"] is not None
                else "no number of our seeds would: the paper value's own uncertainty, its std "
                     "or, for a single run, our spread, already exceeds the limit)")
             for r in wide.head(INCONCLUSIVE_LISTED).iter_rows(named=True)]
    more = (f"; {wide.height - INCONCLUSIVE_LISTED} more"
            if wide.height > INCONCLUSIVE_LISTED else "")
    return [f"Inconclusive ({wide.height}): within the tolerance only because the spread is "
            f"wide: {'; '.join(items)}{more}."]


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

