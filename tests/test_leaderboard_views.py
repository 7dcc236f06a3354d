"""Leaderboard views a spec can ask for: a display scale, several metrics each with its own
references, the relative gain over the baseline, a summary averaged over grid axes, references
that name only some axes, and constant axes shown once. Hand-made records and a spec with no
built-in component involved in the numbers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench_core.results.leaderboard import (
    aggregate,
    constant_axes,
    overlay_plan,
    render,
    summarise,
)
from bench_core.results.records import read_records, write_record
from bench_core.specs.model import find_reference, parse_spec

# (entry, dataset, pool) -> per-seed (loss, noisy loss)
RUNS = {
    ("sgd", "a", 100): [(0.010, 0.020), (0.012, 0.022)],
    ("new", "a", 100): [(0.008, 0.010), (0.008, 0.012)],
    ("sgd", "a", 500): [(0.005, 0.009), (0.005, 0.011)],
    ("new", "a", 500): [(0.006, 0.008), (0.004, 0.008)],
    ("sgd", "b", 100): [(0.020, 0.040), (0.020, 0.040)],
    ("new", "b", 100): [(0.030, 0.030), (0.030, 0.030)],
}
SPEC = {
    "title": "views", "metric": "loss", "metrics": ["noisy_loss"], "higher_is_better": False,
    "scale": 1e4, "relative": True, "summary_by": ["data"], "baseline": "sgd",
    "defaults": {}, "grid": {"data": ["a", "b"], "noise": [0.3], "pool": [100, 500]},
    "entries": [{"label": "sgd"}, {"label": "new"}],
    "reference": [
        {"entry": "new", "cell": {"data": "a", "pool": 100}, "value": 81.0},
        {"entry": "new", "cell": {"data": "a", "pool": 100}, "metric": "noisy_loss",
         "value": 111.0},
        {"entry": "sgd", "cell": {"data": "b"}, "value": 200.0},
        {"entry": "new", "cell": {"data": "a"}, "summary": True, "value": 15.0},
    ],
}


def write_runs(folder):
    tasks, i = [], 0
    for (entry, data, pool), seeds in RUNS.items():
        cell = {"data": data, "noise": 0.3, "pool": pool}
        for s, (loss, noisy) in enumerate(seeds):
            i += 1
            run_id = f"r{i:03d}"
            write_record(folder, {
                "run_id": run_id, "leaderboard": "v", "profile": "default", "entry": entry,
                "cell_json": json.dumps(cell), "seed_index": s, "status": "ok", "error": None,
                "wall_time_s": 1.0, "m_loss": loss, "m_noisy_loss": noisy,
            })
            tasks.append(SimpleNamespace(
                run_id=run_id, profile="default", entry=entry, cell=cell,
                entry_index=["sgd", "new"].index(entry), cell_index=i, is_baseline=entry == "sgd",
                reference=None, reference_std=None, metric="loss", higher_is_better=False))
    return tasks


def views(tmp_path, metric):
    _, spec = parse_spec(SPEC, stem="v")
    tasks = write_runs(tmp_path)
    for t in tasks:
        ref = find_reference(spec, t.entry, t.cell, "loss")
        t.reference = ref.value if ref else None
    return spec, aggregate(overlay_plan(read_records(tmp_path), tasks, metric, spec))


def row(agg, entry, data, pool):
    for r in agg.iter_rows(named=True):
        cell = json.loads(r["cell_json"])
        if r["entry"] == entry and cell["data"] == data and cell["pool"] == pool:
            return r
    raise KeyError((entry, data, pool))


def test_scale_relative_gain_and_references_by_partial_cell(tmp_path):
    spec, agg = views(tmp_path, "loss")
    new = row(agg, "new", "a", 100)
    assert new["mean"] == pytest.approx(80.0) and new["reference"] == pytest.approx(81.0)
    assert new["gain_pct"] == pytest.approx(100 * (110 - 80) / 110)      # lower is better
    assert row(agg, "new", "b", 100)["gain_pct"] == pytest.approx(-50.0)
    assert row(agg, "sgd", "b", 100)["reference"] == pytest.approx(200.0)  # {data: b} matches
    assert row(agg, "new", "a", 500)["reference"] is None


def test_a_further_metric_gets_its_own_values_and_references(tmp_path):
    spec, agg = views(tmp_path, "noisy_loss")
    new = row(agg, "new", "a", 100)
    assert new["metric"] == "noisy_loss" and new["mean"] == pytest.approx(110.0)
    assert new["reference"] == pytest.approx(111.0)
    assert row(agg, "sgd", "b", 100)["reference"] is None   # that reference is for `loss`


def test_summary_averages_gains_over_the_other_axes(tmp_path):
    spec, agg = views(tmp_path, "loss")
    summary = summarise(agg, ["data"], spec.reference, spec.metric)
    rows = {json.loads(r["key_json"])["data"]: r for r in summary.iter_rows(named=True)}
    gain_a = (100 * (110 - 80) / 110 + 100 * (50 - 50) / 50) / 2
    assert rows["a"]["gain_pct"] == pytest.approx(gain_a) and rows["a"]["cells"] == 2
    assert rows["a"]["reference"] == pytest.approx(15.0)
    assert rows["b"]["gain_pct"] == pytest.approx(-50.0) and rows["b"]["reference"] is None


def test_markdown_shows_each_metric_the_summary_and_constant_axes_once(tmp_path):
    spec, agg = views(tmp_path, "loss")
    _, noisy = views(tmp_path / "n", "noisy_loss")
    import polars as pl

    both = pl.concat([agg, noisy], how="diagonal_relaxed")
    assert constant_axes(both) == {"noise": 0.3}
    text = render(both, "markdown", title="t", relative=True,
                  summaries={"loss": summarise(agg, ["data"], spec.reference, spec.metric)},
                  summary_by=["data"])
    assert "## `loss`" in text and "## `noisy_loss`" in text and "Summary of `loss`" in text
    assert "Same in every cell: noise = 0.3." in text
    header = next(line for line in text.splitlines() if line.startswith("| data"))
    assert "noise" not in header and "gain %" in header
    assert "+27.3" in text                     # the gain of `new` at (a, 100)


def test_spec_checks_reference_metrics_and_summary_baseline():
    from bench_core.errors import SpecError

    bad = {**SPEC, "reference": [{"entry": "new", "metric": "nope", "value": 1.0}]}
    with pytest.raises(SpecError, match="reference\\[0\\].metric 'nope'"):
        parse_spec(bad)
    with pytest.raises(SpecError, match="summary_by needs a baseline"):
        parse_spec({**SPEC, "baseline": None})
