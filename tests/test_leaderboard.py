"""Leaderboard statistics on a hand-made record set, checked against values computed here."""

from __future__ import annotations

import json
import math
import statistics

import polars as pl
import pytest

from bench_core.results.leaderboard import aggregate, render
from bench_core.results.records import read_records, write_record

VALUES = {  # (entry, lr) -> per-seed values
    ("base", 0.1): [0.80, 0.82, 0.84],
    ("alt", 0.1): [0.90, 0.86, 0.88],
    ("worse", 0.1): [0.50, 0.70],
    ("base", 0.5): [0.60, 0.64, 0.62],
    ("alt", 0.5): [0.61, 0.65, 0.69],
    ("worse", 0.5): [0.75, 0.76, 0.77],
}
REFERENCE = {("base", 0.1): 0.85, ("alt", 0.1): 0.80}


def write_set(folder, higher_is_better=True):
    i = 0
    for (entry, lr), vals in VALUES.items():
        for s, v in enumerate(vals + ([None] if entry == "worse" and lr == 0.1 else [])):
            i += 1
            write_record(folder, {
                "run_id": f"r{i:03d}", "leaderboard": "hand", "profile": "default",
                "entry": entry, "entry_index": ["base", "alt", "worse"].index(entry),
                "is_baseline": entry == "base", "cell_json": json.dumps({"rule.lr": lr}),
                "cell_index": [0.1, 0.5].index(lr), "seed_index": s, "seed": s,
                "status": "ok" if v is not None else "diverged", "error": None,
                "metric": "acc", "higher_is_better": higher_is_better, "value": v,
                "reference": REFERENCE.get((entry, lr)), "reference_std": None,
                "wall_time_s": 1.0, "m_extra": 2.0 * (v or 0),
            })


def test_statistics_match_independent_computation(tmp_path):
    write_set(tmp_path)
    agg = aggregate(read_records(tmp_path), ["extra"])
    assert agg.height == 6
    rows = {(r["entry"], json.loads(r["cell_json"])["rule.lr"]): r for r in agg.iter_rows(named=True)}
    for key, vals in VALUES.items():
        r = rows[key]
        assert r["mean"] == pytest.approx(statistics.fmean(vals))
        assert r["std"] == pytest.approx(statistics.stdev(vals))
        assert r["stderr"] == pytest.approx(statistics.stdev(vals) / math.sqrt(len(vals)))
        assert r["n"] == len(vals)
        base = statistics.fmean(VALUES[("base", key[1])])
        assert r["delta_baseline"] == pytest.approx(statistics.fmean(vals) - base)
        assert r["extra"] == pytest.approx(2 * statistics.fmean(vals))
    assert rows[("worse", 0.1)]["diverged"] == 1
    assert rows[("base", 0.1)]["delta_reference"] == pytest.approx(0.82 - 0.85)
    assert rows[("alt", 0.5)]["reference"] is None
    # ranks within each cell: 0.1 -> alt(0.88) 1, base(0.82) 2, worse(0.60) 3
    assert [rows[(e, 0.1)]["rank"] for e in ("alt", "base", "worse")] == [1, 2, 3]
    assert [rows[(e, 0.5)]["rank"] for e in ("worse", "alt", "base")] == [1, 2, 3]


def test_lower_is_better_reverses_rank(tmp_path):
    write_set(tmp_path, higher_is_better=False)
    agg = aggregate(read_records(tmp_path))
    cell = agg.filter(pl.col("cell_json") == json.dumps({"rule.lr": 0.1}))
    assert dict(zip(cell["entry"], cell["rank"])) == {"worse": 1, "base": 2, "alt": 3}


def test_renderings(tmp_path):
    write_set(tmp_path)
    agg = aggregate(read_records(tmp_path))
    md = render(agg, "markdown", title="Hand", notes=["a note"])
    assert md.startswith("# Hand") and "| rule.lr" in md and "acc ↑" in md
    assert "base (baseline)" in md and "+0.0600" in md and "0.8500" in md  # delta, reference
    assert "| diverged" in md and "1 (not in mean)" in md  # a diverged run without a value
    assert "acc ↓" in render(aggregate(read_records(tmp_path)).with_columns(
        pl.lit(False).alias("higher_is_better")), "table")
    assert render(agg, "csv").splitlines()[0].startswith("leaderboard,profile,cell_json,entry,mean")
    assert json.loads(render(agg, "json"))[0]["entry"] == "base"
    assert render(agg, "parquet")[:4] == b"PAR1"


def test_plan_overlay_takes_profile_reference_and_metric_from_the_spec(tmp_path):
    from types import SimpleNamespace

    from bench_core.results.leaderboard import overlay_plan

    write_set(tmp_path)
    lf = read_records(tmp_path).with_columns(pl.col("value").alias("m_acc"))
    # a plan that asks for two runs only, under another profile whose grid names the cell by
    # another axis (the runs were recorded in the cell {"rule.lr": 0.1}), with a new reference
    tasks = [SimpleNamespace(run_id=r, profile="check", entry_index=0, cell_index=0,
                             cell={"model.pool": "avg"}, is_baseline=True, reference=0.5,
                             reference_std=None, metric="acc", higher_is_better=True)
             for r in ("r001", "r002")]
    agg = aggregate(overlay_plan(lf, tasks))
    row = agg.row(0, named=True)
    assert agg.height == 1 and row["profile"] == "check" and row["n"] == 2
    assert json.loads(row["cell_json"]) == {"model.pool": "avg"}
    assert row["mean"] == pytest.approx(0.81) and row["delta_reference"] == pytest.approx(0.31)


def write_diverged_cell(folder):
    """One cell: base ok 0.9, 0.8; alt ok 0.9 and two diverged runs, one that kept a value
    (0.1, a collapse to chance) and one whose metric was NaN."""
    rows = [("base", "ok", 0.9), ("base", "ok", 0.8), ("alt", "ok", 0.9),
            ("alt", "diverged", 0.1), ("alt", "diverged", float("nan")),
            ("alt", "failed", None)]
    for i, (entry, status, value) in enumerate(rows):
        write_record(folder, {
            "run_id": f"d{i}", "leaderboard": "hand", "profile": "default", "entry": entry,
            "entry_index": int(entry == "alt"), "is_baseline": entry == "base",
            "cell_json": "{}", "cell_index": 0, "seed_index": i, "seed": i, "status": status,
            "error": None, "metric": "acc", "higher_is_better": True, "value": value,
            "reference": None, "reference_std": None, "wall_time_s": 2.0})


def test_diverged_runs_count_in_the_mean_by_default(tmp_path):
    write_diverged_cell(tmp_path)
    rows = {r["entry"]: r for r in aggregate(read_records(tmp_path)).iter_rows(named=True)}
    alt = rows["alt"]
    assert (alt["n"], alt["diverged"], alt["diverged_counted"], alt["failed"]) == (2, 2, 1, 1)
    assert alt["mean"] == pytest.approx(0.5) and alt["std"] == pytest.approx(statistics.stdev(
        [0.9, 0.1]))
    assert alt["delta_baseline"] == pytest.approx(0.5 - 0.85) and alt["rank"] == 2
    assert alt["total_wall_time_s"] == pytest.approx(8.0)  # every recorded run's time
    excluded = {r["entry"]: r for r in aggregate(read_records(tmp_path), include_diverged=False)
                .iter_rows(named=True)}["alt"]
    assert (excluded["n"], excluded["diverged"], excluded["diverged_counted"]) == (1, 2, 0)
    assert excluded["mean"] == pytest.approx(0.9) and excluded["rank"] == 1
    text = render(aggregate(read_records(tmp_path)), "table")
    assert "2 (1 in mean)" in text
    assert "2 (not in mean)" in render(aggregate(read_records(tmp_path), include_diverged=False),
                                       "table")


@pytest.mark.parametrize("compare, column, expected", [
    ("ratio", "ratio_baseline", lambda m, b: m / b),
    ("log10_ratio", "log10_ratio_baseline", lambda m, b: math.log10(m / b)),
])
def test_ratio_comparisons_with_the_baseline(tmp_path, compare, column, expected):
    write_set(tmp_path)
    agg = aggregate(read_records(tmp_path), compare=compare)
    rows = {(r["entry"], json.loads(r["cell_json"])["rule.lr"]): r for r in agg.iter_rows(named=True)}
    for (entry, lr), vals in VALUES.items():
        base = statistics.fmean(VALUES[("base", lr)])
        assert rows[(entry, lr)][column] == pytest.approx(expected(statistics.fmean(vals), base))
    header = render(agg, "markdown").splitlines()[0]
    assert {"ratio": "÷ baseline", "log10_ratio": "log10(÷ baseline)"}[compare] in header
    assert "Δ baseline" not in header
    with pytest.raises(Exception, match="compare 'percent': expected one of difference, ratio"):
        aggregate(read_records(tmp_path), compare="percent")


def test_spec_compare_field_defaults_to_difference_and_is_validated():
    from bench_core.errors import SpecError
    from bench_core.specs.model import parse_spec

    raw = {"title": "t", "entries": [{"label": "a"}]}
    assert parse_spec(raw)[1].compare == "difference"
    assert parse_spec({**raw, "compare": "log10_ratio"})[1].compare == "log10_ratio"
    with pytest.raises(SpecError, match="compare"):
        parse_spec({**raw, "compare": "percent"})


def test_small_values_print_in_scientific_notation():
    from bench_core.results.leaderboard import _fmt

    assert _fmt(0.8) == "0.8000" and _fmt(0.0012) == "0.0012" and _fmt(0.0) == "0.0000"
    assert _fmt(0.0005) == "5.000e-04" and _fmt(1.234e-5) == "1.234e-05"
    assert _fmt(-2e-7, signed=True) == "-2.000e-07"
    assert _fmt(-0.7, 1, signed=True) == "-0.7"  # a gain in %: one decimal, never e-notation
