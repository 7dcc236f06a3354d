"""Verdicts against a source (tolerance with both standard errors, comparable or not, no
result), reversed orders of entries, the auditable table header, and records compacted into
one file that re-aggregates to the same table. Hand-made records and a toy plugin: no built-in
method is involved in the numbers."""

from __future__ import annotations

import json
import math
import statistics
from types import SimpleNamespace

import grouped_plugin
import pytest
import tomli_w

from bench_core.results.records import write_record
from bench_core.results.tables import plan_report
from bench_core.specs.model import find_reference, parse_spec
from bench_core.specs.plan import Plan

SPEC = {
    "title": "verdicts", "metric": "acc", "baseline": "A", "reference_n": 4,
    "tolerance": {"absolute": 0.02, "stderr": 2.0},
    "protocol": "epochs = 3 (not stated)", "source_notes": "its text and Table 9 disagree",
    "grid": {"x": [1, 2, 3]}, "entries": [{"label": "A"}, {"label": "B"}],
    "profiles": {"close": {"comparable": True, "description": "the protocol, 3 seeds"},
                 "reduced": {"description": "fewer steps"}},
    "reference": [
        {"entry": "A", "cell": {"x": 1}, "value": 0.95, "std": 0.01},
        {"entry": "B", "cell": {"x": 1}, "value": 0.81, "std": 0.01},
        {"entry": "A", "cell": {"x": 2}, "value": 0.90, "std": 0.2},
        {"entry": "B", "cell": {"x": 2}, "value": 0.70},
        {"entry": "A", "cell": {"x": 3}, "value": 0.90, "std": 0.01},
        {"entry": "B", "cell": {"x": 3}, "value": 0.60, "std": 0.01},
    ],
}
OURS = {  # (entry, x) -> per-seed values (None: a failed run)
    ("A", 1): [0.89, 0.90, 0.91],      # |Δ| 0.05 > max(0.02, ~0.02): differs
    ("B", 1): [0.79, 0.80, 0.81],      # |Δ| 0.01: reproduced
    ("A", 2): [0.1, 0.5, 0.9],         # |Δ| 0.4 <= 2 sqrt(se^2 + (0.2/2)^2) = 0.50, but the
                                       # tolerance exceeds its limit 3 x 0.02: inconclusive
    ("B", 2): [None, None, None],      # every run failed: no result
    ("A", 3): [0.60, 0.60, 0.60],      # A below B here, above it in the source: reversed
    ("B", 3): [0.70, 0.70, 0.70],
}


def make_plan(profile: str) -> Plan:
    _, spec = parse_spec(SPEC, stem="v")
    tasks = []
    for cell_index, x in enumerate([1, 2, 3]):
        for entry_index, entry in enumerate(["A", "B"]):
            ref = find_reference(spec, entry, {"x": x}, "acc")
            for seed in range(3):
                tasks.append(SimpleNamespace(
                    run_id=f"{entry}{x}{seed}", profile=profile, entry=entry, cell={"x": x},
                    entry_index=entry_index, cell_index=cell_index, is_baseline=entry == "A",
                    reference=ref.value, reference_std=ref.std, metric="acc",
                    higher_is_better=True, seed_index=seed,
                    spec={"trainer": {"name": "toy", "epochs": 3, "x": x},
                          "model": {"name": "m" if entry == "A" else "n"}}))
    return Plan(spec=spec, name="v", profile=profile, seeds=[0, 1, 2], grid={"x": [1, 2, 3]},
                tasks=tasks)


def write_records(folder, plan: Plan) -> None:
    for t in plan.tasks:
        value = OURS[(t.entry, t.cell["x"])][t.seed_index]
        write_record(folder, {
            "run_id": t.run_id, "leaderboard": "v", "profile": "any", "entry": t.entry,
            "cell_json": json.dumps(t.cell), "seed_index": t.seed_index,
            "status": "ok" if value is not None else "failed", "error": None,
            "wall_time_s": 1.5, "m_acc": value, "cpu_model": "Toy CPU 9000", "cpus": 2,
            "threads": 1, "device": "cpu", "torch_version": "9.9", "git_commit": "a" * 40})


def rows_of(report):
    return {(r["entry"], json.loads(r["cell_json"])["x"]): r
            for r in report.agg.iter_rows(named=True)}


def test_verdicts_follow_the_tolerance_rule(tmp_path):
    plan = make_plan("close")
    write_records(tmp_path, plan)
    rows = rows_of(plan_report(plan, tmp_path))
    se = statistics.stdev(OURS[("A", 2)]) / math.sqrt(3)
    assert rows[("A", 2)]["tolerance"] == pytest.approx(2 * math.sqrt(se ** 2 + 0.1 ** 2))
    assert rows[("B", 1)]["tolerance"] == pytest.approx(0.02)  # the absolute floor
    assert {k: r["verdict"] for k, r in rows.items()} == {
        ("A", 1): "differs", ("B", 1): "reproduced", ("A", 2): "inconclusive",
        ("B", 2): "no result", ("A", 3): "differs", ("B", 3): "differs"}
    assert rows[("A", 2)]["limit"] == pytest.approx(0.06)     # default: 3 x absolute
    # k^2 s^2 / (limit^2 - k^2 se_paper^2) = 4 * 0.16 / (0.0036 - 4 * 0.01) < 0: no number of
    # our seeds decides it, the paper's own se (0.1) already exceeds limit / k
    assert rows[("A", 2)]["seeds_needed"] is None
    assert rows[("B", 1)]["seeds_needed"] is None       # decided


def test_inconclusive_says_how_many_seeds_would_decide():
    """Three seeds split between a trained network and chance: the mean is near the paper's
    but the tolerance is wide. Today's rule called this reproduced."""
    import polars as pl

    from bench_core.results.verdicts import add_verdicts, verdict_text
    from bench_core.specs.model import Tolerance
    values = [0.97, 0.96, 0.10]
    mean, std = statistics.mean(values), statistics.stdev(values)
    agg = pl.DataFrame({"mean": [mean], "std": [std], "stderr": [std / math.sqrt(3)],
                        "reference": [0.70], "reference_std": [0.001]})
    out = add_verdicts(agg, Tolerance(absolute=0.02, stderr=2.0), reference_n=20,
                       comparable=True).row(0, named=True)
    assert out["verdict"] == "inconclusive"
    se_paper = 0.001 / math.sqrt(20)
    expected = math.ceil(4 * std ** 2 / (0.06 ** 2 - 4 * se_paper ** 2))
    assert out["seeds_needed"] == expected and expected > 100
    assert verdict_text(out["verdict"], out["seeds_needed"]) == f"inconclusive (~{expected} seeds)"
    # an explicit wider limit decides the same value
    wide = add_verdicts(agg, Tolerance(absolute=0.02, stderr=2.0, max=1.0), reference_n=20,
                        comparable=True)
    assert wide["verdict"].to_list() == ["reproduced"]
    # a value far outside even the wide tolerance differs, whatever the width
    far = agg.with_columns(pl.lit(0.05).alias("reference"))  # 0.63 away, tolerance 0.58
    assert add_verdicts(far, Tolerance(), reference_n=20, comparable=True)["verdict"].to_list() \
        == ["differs"]


def test_a_relative_tolerance_scales_floor_and_limit_with_the_paper_value():
    import polars as pl

    from bench_core.results.verdicts import add_verdicts
    from bench_core.specs.model import Tolerance
    agg = pl.DataFrame({"mean": [105.0, 1.05, 1.05], "std": [1.0, 0.01, 0.6],
                        "stderr": [0.5, 0.005, 0.3], "reference": [100.0, 1.0, 1.0],
                        "reference_std": [None, None, None]})
    tol = Tolerance(absolute=0.0, relative=0.1)          # limit: 3 x 10% of the paper value
    out = add_verdicts(agg, tol, reference_n=None, comparable=True)
    assert out["floor"].to_list() == pytest.approx([10.0, 0.1, 0.1])
    assert out["limit"].to_list() == pytest.approx([30.0, 0.3, 0.3])
    assert out["verdict"].to_list() == ["reproduced", "reproduced", "inconclusive"]
    with pytest.raises(ValueError, match="relative_max"):
        Tolerance(relative=0.1, relative_max=0.05)
    with pytest.raises(ValueError, match="tolerance.max"):
        Tolerance(absolute=0.1, max=0.05)


def test_sign_test_states_a_systematic_offset_hidden_among_per_cell_passes():
    """28 of 30 values above the paper, each within its tolerance: every cell passes, the
    sign test names the offset, and the grid value where it lies."""
    import polars as pl

    from bench_core.results.verdicts import sign_lines, sign_test
    assert sign_test(28, 2) == pytest.approx(2 * sum(math.comb(30, i) for i in range(3)) / 2 ** 30)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    cells = [json.dumps({"data": "a" if i < 30 else "b", "i": i}) for i in range(60)]
    means = [0.91 if i < 28 else (0.89 if i < 30 else (0.91 if i % 2 else 0.89))
             for i in range(60)]
    part = pl.DataFrame({"cell_json": cells, "mean": means, "reference": [0.90] * 60,
                         "higher_is_better": [True] * 60})
    lines = sign_lines(part)
    assert lines[0].startswith("Sign test: ours above the paper in 43, below in 17 of 60 values "
                               "(ours better in 43)") and "systematic offset" in lines[0]
    assert "data = a: 28 above / 2 below" in lines[1] and "data = b" not in lines[1]


def test_reversed_order_is_flagged_per_row_and_counted(tmp_path):
    plan = make_plan("close")
    write_records(tmp_path, plan)
    report = plan_report(plan, tmp_path)
    rows = rows_of(report)
    assert rows[("A", 3)]["reversed_vs"] == "B" and rows[("B", 3)]["reversed_vs"] == "A"
    assert rows[("A", 1)]["reversed_vs"] is None and rows[("A", 2)]["reversed_vs"] is None
    lines = report.metric_notes["acc"]
    assert lines[0] == ("Verdicts (`acc`): **1 reproduced, 3 differ, 1 inconclusive of 6 paper "
                        "values** (1 no result); within the fixed tolerance 0.02 alone (no spread): 1 of 6.")
    # A at x = 2 is within tolerance only through its spread: named, with its tolerance
    assert lines[1].startswith("Inconclusive (1): ") and "A (x = 2): 0.5 ± 0.4 vs 0.9" in lines[1]
    assert "B (x = 1)" not in lines[1]
    assert lines[2].startswith("Sign test: ours above the paper in 1, below in 4 of 5 values")
    assert "in **1 of 2 cells**" in lines[3] and "B above A in 1" in lines[3]


def test_a_reduced_profile_gets_no_verdicts(tmp_path):
    plan = make_plan("reduced")
    write_records(tmp_path, plan)
    report = plan_report(plan, tmp_path)
    assert set(report.agg["verdict"].to_list()) == {"not comparable"}
    assert "none - profile `reduced` does not follow" in report.metric_notes["acc"][0]
    assert any("Comparable to the source: **no**" in n for n in report.notes)


def test_markdown_header_makes_the_table_auditable(tmp_path):
    plan = make_plan("close")
    write_records(tmp_path, plan)
    text = plan_report(plan, tmp_path, command="untied leaderboard v").render("markdown")
    for part in ["Comparable to the source: yes", "max(0.02, 2 × sqrt(se_ours² + se_paper²))",
                 "`reproduced` when the tolerance is at most 0.06", "inconclusive (spread)",
                 "paper std / sqrt(4)", "Inconsistencies of the source: its text and Table 9",
                 "Protocol choices where the source is silent: epochs = 3 (not stated)",
                 "trainer = toy(epochs=3, x=*)", "model = m | n (by entry)",
                 "Machine: Toy CPU 9000 (2 CPUs); torch threads per run: 1; device cpu",
                 "commit aaaaaaaaaaaa", "**1 reproduced, 3 differ, 1 inconclusive of 6",
                 "| verdict", "vs paper order", "reversed vs B", "Generated by `untied leaderboard v`",
                 "total training time 27 s"]:
        assert part in text, part


SPEC_TOML = {
    "title": "toy", "metric": "test_mse", "higher_is_better": False, "baseline": "slow",
    "seeds": 2, "reference_n": 20, "defaults": {
        "dataset": {"name": "toy_regression", "dim": 3}, "model": {"name": "toy_linear"},
        "rule": {"name": "toy_lr", "lr": 0.05}, "trainer": {"name": "toy_gd", "steps": 20}},
    "grid": {"dataset.dim": [3, 4]},
    "entries": [{"label": "slow"}, {"label": "fast", "overrides": {"rule": {"lr": 0.3}}}],
    "profiles": {"small": {"comparable": True, "seeds": 2}},
    "reference": [{"entry": "slow", "cell": {"dataset.dim": 3}, "value": 0.5, "std": 0.1}],
}


def test_exported_records_re_aggregate_to_the_same_table(untied_host, tmp_path, monkeypatch,
                                                         capsys):
    from bench_core import plugins
    from bench_core.cli import main

    untied_host.add_plugin(grouped_plugin, "grouped")
    monkeypatch.setattr(plugins, "get_host", lambda: untied_host)
    spec_file = tmp_path / "toy.toml"
    spec_file.write_bytes(tomli_w.dumps(SPEC_TOML).encode())
    results, committed = tmp_path / "r", tmp_path / "toy" / "small.parquet"
    common = [str(spec_file), "--profile", "small"]
    assert main(["run", *common, "--results", str(results), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", *common, "--results", str(results), "--format",
                 "markdown"]) == 0
    from_folder = capsys.readouterr().out
    assert main(["export", *common, "--results", str(results), "-o", str(committed)]) == 0
    assert "8 of 8 records (the 8 runs of toy [small])" in capsys.readouterr().err
    empty = tmp_path / "empty"
    assert main(["leaderboard", *common, "--results", str(empty)]) == 0
    assert f"reading the committed records {committed}" in capsys.readouterr().err
    assert main(["leaderboard", *common, "--results", str(empty), "--records", str(committed),
                 "--format", "markdown"]) == 0
    from_file = capsys.readouterr().out

    def body(text):
        return [line for line in text.splitlines() if not line.startswith("Generated by")]

    assert body(from_file) == body(from_folder)
    assert f"--records {committed} --format markdown" in from_file
    assert "reproduced" in from_file or "differs" in from_file
    assert main(["leaderboard", str(committed)]) == 0  # a records file on its own
    assert "fast" in capsys.readouterr().out
    assert main(["export", *common, "--results", str(results), "-o",
                 str(tmp_path / "x.csv")]) == 0       # CSV too, one row per run


def test_spec_fields_are_validated_and_comparability_resolves_per_profile():
    from bench_core.errors import SpecError

    with pytest.raises(SpecError, match="tolerance.absolute"):
        parse_spec({**SPEC, "tolerance": {"absolute": -0.1}})
    with pytest.raises(SpecError, match="reference_n"):
        parse_spec({**SPEC, "reference_n": 0})
    with pytest.raises(SpecError, match="profiles.close.comparible"):
        parse_spec({**SPEC, "profiles": {"close": {"comparible": True}}})
    assert make_plan("close").comparable and not make_plan("reduced").comparable
    _, spec = parse_spec({**SPEC, "comparable": True})
    assert Plan(spec=spec, name="v", profile="default", seeds=[0], grid={}, tasks=[]).comparable
    assert not make_plan("default").comparable  # the spec's own default: false


def test_a_single_run_source_without_std_is_one_draw_from_our_spread():
    """reference_n = 1 and no reference std: the source's run varies as ours do, so its se is
    our std; a reference std, where given, still wins."""
    import polars as pl

    from bench_core.results.verdicts import add_verdicts
    from bench_core.specs.model import Tolerance
    agg = pl.DataFrame({"mean": [10.0, 10.0], "std": [3.0, 3.0], "stderr": [1.0, 1.0],
                        "reference": [15.0, 15.0], "reference_std": [None, 0.5]})
    tol = Tolerance(absolute=1.0, stderr=2.0, max=10.0)
    single = add_verdicts(agg, tol, reference_n=1, comparable=True)
    assert single["tolerance"].to_list() == pytest.approx(
        [2 * math.sqrt(1 + 9), 2 * math.sqrt(1 + 0.25)])
    assert single["verdict"].to_list() == ["reproduced", "differs"]
    # with the default limit (3 x 1.0) the single run's spread is too wide to decide, and
    # no number of our seeds would narrow it: the source's one run varies as ours do
    narrow = add_verdicts(agg, Tolerance(absolute=1.0, stderr=2.0), reference_n=1,
                          comparable=True)
    assert narrow["verdict"].to_list() == ["inconclusive", "differs"]
    assert narrow["seeds_needed"].to_list() == [None, None]
    many = add_verdicts(agg, tol, reference_n=None, comparable=True)
    assert many["verdict"].to_list() == ["differs", "differs"]  # |5| > 2 * se_ours = 2
    from bench_core.results.verdicts import tolerance_rule
    assert "single run" in tolerance_rule(tol, 1)
