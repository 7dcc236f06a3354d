"""Choosing a parameter per entry and grid cell on a validation split (``select`` in a spec),
with the toy plugin ``selection_plugin`` (no built-in method): the selection runs never see
the test split, the best candidate by the validation metric wins unless its runs diverge,
final runs train on the whole training split with the chosen value, resume trains nothing
twice, and every command that reads records agrees on the choice."""

from __future__ import annotations

import copy
import math

import polars as pl
import pytest
import selection_plugin
import tomli_w
from selection_plugin import SPEC

from bench_core.errors import SpecError
from bench_core.execution.runner import run_plan
from bench_core.results.export import plan_records
from bench_core.results.tables import plan_report
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(selection_plugin, "selection")
    return untied_host


def plan_of(host, spec, **kw):
    name, parsed = parse_spec(spec, stem="select")
    return expand(host, name, parsed, **kw)


def test_the_plan_has_selection_runs_per_candidate_and_fixed_entries_need_none(host):
    plan = plan_of(host, SPEC)
    stage = plan.selection
    # bowl and shifted: 4 candidates x 1 selection seed; fixed: one value, nothing to select
    assert len(stage.tasks) == 8
    assert {t.stage for t in stage.tasks} == {"selection"}
    assert {t.validation_fraction for t in stage.tasks} == {0.1}
    assert {t.metric for t in stage.tasks} == {"validation_loss"}
    # the selection runs of a candidate are runs of their own: ids unlike any final run's
    assert not {t.run_id for t in stage.tasks} & {t.run_id for t in plan.tasks}
    # only the fixed entry's final runs are known before any selection run is recorded
    assert {t.entry for t in plan.tasks} == {"fixed"} and len(plan.tasks) == 2
    assert all(t.spec["trainer"]["lr"] == 0.01 and t.selected == {"trainer.lr": 0.01}
               for t in plan.tasks)


def test_a_chosen_parameter_cannot_also_be_a_grid_axis_or_miss_an_entry(host):
    spec = copy.deepcopy(SPEC)
    spec["grid"] = {"trainer.lr": [0.01, 0.1]}
    with pytest.raises(SpecError, match="'trainer.lr' is also a grid axis"):
        parse_spec(spec, stem="select")
    spec = copy.deepcopy(SPEC)
    spec["select"]["parameter"] = "model.lr"       # the model has no such parameter
    with pytest.raises(SpecError, match="model"):
        plan_of(host, spec)
    spec = copy.deepcopy(SPEC)
    del spec["select"]
    with pytest.raises(SpecError, match="select_values, but the spec has no `select`"):
        parse_spec(spec, stem="select")


def test_selection_runs_never_see_the_test_split_and_the_best_safe_rate_wins(host, tmp_path):
    plan = plan_of(host, SPEC)
    summary = run_plan(plan, tmp_path, host=host, progress=False)
    assert summary.failed == 0 and summary.ran == 8 + 6
    records = plan_records(plan, tmp_path / plan.name, quiet=True).collect()
    selection = records.filter(pl.col("stage") == "selection")
    assert selection.height == 8
    # trained on 90 of the 100 training samples, evaluated on the other 10, never on a test one
    assert set(selection["m_n_train"]) == {90.0} and set(selection["m_n_evaluated"]) == {10.0}
    assert set(selection["m_evaluated_on_test"]) == {0.0}
    # their metrics say what they measured: the validation loss, no test loss
    assert selection["m_validation_loss"].is_not_null().all()
    assert selection["m_test_loss"].is_null().all()
    assert set(selection["metric"]) == {"validation_loss"}
    # choices: bowl's best rate; shifted's best (0.05) explodes, so the next best that does not
    assert plan.selection.choices == {("bowl", 0): 0.02, ("shifted", 0): 0.02,
                                      ("fixed", 0): 0.01}
    final = records.filter(pl.col("stage") == "final")
    assert final.height == 6 and set(final["m_n_train"]) == {100.0}
    assert set(final["m_evaluated_on_test"]) == {1.0}
    by_entry = {r["entry"]: r["p_trainer.lr"] for r in final.iter_rows(named=True)}
    assert by_entry == {"bowl": 0.02, "shifted": 0.02, "fixed": 0.01}


def test_resume_trains_nothing_twice_and_the_table_shows_the_choice(host, tmp_path):
    plan = plan_of(host, SPEC)
    run_plan(plan, tmp_path, host=host, progress=False)
    again = plan_of(host, SPEC)
    summary = run_plan(again, tmp_path, host=host, progress=False)
    assert summary.ran == 0 and summary.skipped == 14
    text = plan_report(again, tmp_path / again.name).render("markdown")
    assert "Selection: `trainer.lr` chosen per entry and grid cell" in text
    header = next(line for line in text.splitlines() if line.startswith("| entry"))
    assert "3/3 choices made" in text and header.split("|")[2].strip() == "selected"
    assert "## Selection: every candidate's validation score" in text
    # the exploding candidate is listed with its bad run, and not chosen
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
             if line.startswith("| shifted")]
    assert ["shifted", "0.05", "", "", "0 / 1", ""] in cells
    assert ["shifted", "0.02", "0.1584", "", "1 / 1", "✓"] in cells


def test_replay_retrains_selection_and_final_runs_of_a_plan_resolved_from_records(host,
                                                                                 tmp_path):
    # what the test of the committed leaderboards does with a spec that selects: a fresh plan
    # knows its final runs only once its choices are resolved from the records
    from bench_core.execution.replay import replay
    from bench_core.results.selection import resolve

    run_plan(plan_of(host, SPEC), tmp_path, host=host, progress=False)
    records = plan_records(plan_of(host, SPEC), tmp_path / "select", quiet=True).collect()
    fresh_plan = plan_of(host, SPEC)
    ids = [records.filter((pl.col("stage") == stage) & (pl.col("entry") == "bowl"))["run_id"][0]
           for stage in ("selection", "final")]
    with pytest.raises(KeyError):  # unresolved: the final runs of selected pairs are unknown
        replay(host, fresh_plan, records, ids)
    fresh = replay(host, resolve(fresh_plan, records.lazy()), records, ids)
    by_id = {r["run_id"]: r for r in records.iter_rows(named=True)}
    for row in fresh.iter_rows(named=True):
        assert row["m_validation_loss" if row["stage"] == "selection" else "m_test_loss"] == \
            by_id[row["run_id"]]["m_validation_loss" if row["stage"] == "selection"
                                 else "m_test_loss"]


def test_a_profile_can_turn_selection_off_or_change_its_candidates(host):
    spec = copy.deepcopy(SPEC)
    spec["profiles"] = {"plain": {"select": {"enabled": False}},
                        "narrow": {"select": {"values": [0.01, 0.02], "seeds": 2}}}
    plain = plan_of(host, spec, profile="plain")
    assert plain.selection is None and {t.spec["trainer"]["lr"] for t in plain.tasks} == {0.01}
    narrow = plan_of(host, spec, profile="narrow")
    assert len(narrow.selection.tasks) == 2 * 2 * 2   # 2 entries x 2 candidates x 2 seeds


def test_cli_run_export_and_leaderboard_agree_on_the_choice(host, tmp_path, capsys):
    from bench_core.cli import main

    spec_file = tmp_path / "select.toml"
    spec_file.write_bytes(tomli_w.dumps(SPEC).encode())
    results = tmp_path / "results"
    assert main(["validate", str(spec_file)]) == 0
    assert "after 8 selection runs choosing trainer.lr per pair" in capsys.readouterr().out
    assert main(["run", str(spec_file), "--results", str(results), "--quiet"]) == 0
    shown = capsys.readouterr().out
    exported = tmp_path / "all.parquet"
    assert main(["export", str(spec_file), "--results", str(results), "-o", str(exported)]) == 0
    assert pl.read_parquet(exported).height == 14         # the selection runs come along
    capsys.readouterr()
    assert main(["leaderboard", str(spec_file), "--records", str(exported)]) == 0
    assert capsys.readouterr().out == shown
    # a results folder: read with the spec stored there, the same choice; without it (records
    # of an unknown spec), the final runs only, never the validation scores as test results
    assert main(["leaderboard", str(results / "select")]) == 0
    assert "3/3 choices made" in capsys.readouterr().out
    (results / "select" / "spec.json").unlink()
    assert main(["leaderboard", str(results / "select")]) == 0
    bare = capsys.readouterr().out
    assert "validation" not in bare and "0.005" not in bare and bare.count("fixed") == 1


def test_an_entry_can_choose_its_own_parameter(host, tmp_path):
    """An entry whose rate lives in another component (``select_parameter``) gets it chosen by
    the same rule: here the toy trainer's ``best`` instead of ``trainer.lr``."""
    spec = copy.deepcopy(SPEC)
    spec["entries"] = [{"label": "bowl"},
                       {"label": "own", "select_parameter": "trainer.best",
                        "select_values": [0.01, 0.05], "overrides": {"trainer": {"lr": 0.02}}}]
    plan = plan_of(host, spec)
    own = [t for t in plan.selection.tasks if t.entry == "own"]
    assert sorted(t.spec["trainer"]["best"] for t in own) == [0.01, 0.05]
    assert all(t.spec["trainer"]["lr"] == 0.02 for t in own)
    summary = run_plan(plan, tmp_path, host=host, progress=False)
    assert summary.failed == 0
    # |log lr - log best| is smaller for best = 0.01 (a factor 2) than for 0.05 (2.5)
    assert plan.selection.choices == {("bowl", 0): 0.02, ("own", 0): 0.01}
    records = plan_records(plan, tmp_path / plan.name, quiet=True).collect()
    final = records.filter((pl.col("stage") == "final") & (pl.col("entry") == "own"))
    assert set(final["p_trainer.best"]) == {0.01} and set(final["p_trainer.lr"]) == {0.02}
    text = plan_report(plan, tmp_path / plan.name).render("markdown")
    assert "Selection: `trainer.lr`; entry own: `trainer.best` chosen" in text
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
             if line.startswith("| own ")]
    assert ["own", "trainer.best = 0.01", "0.09062", "", "1 / 1", "✓"] in cells
    bad = copy.deepcopy(spec)
    bad["entries"][1]["select_parameter"] = "model.lr"
    with pytest.raises(SpecError, match="unknown parameter of model.*entry 'own', "
                                        "select_parameter model.lr"):
        plan_of(host, bad)
    bad = copy.deepcopy(spec)
    del bad["select"]
    bad["entries"][1].pop("select_values")
    with pytest.raises(SpecError, match="select_parameter, but the spec has no `select`"):
        parse_spec(bad, stem="select")


def test_an_entry_can_choose_its_own_parameter_nested_inside_a_component(host, tmp_path):
    spec = copy.deepcopy(SPEC)
    spec["entries"] = [
        {"label": "bowl"},
        {"label": "nested", "select_parameter": "trainer.inner.lr",
         "overrides": {"trainer": {"name": "toy_nested_bowl", "inner": {"best": 0.05}}}},
    ]
    plan = plan_of(host, spec)
    summary = run_plan(plan, tmp_path, host=host, progress=False)
    assert summary.failed == 0 and summary.ran == 8 + 4
    # each entry's candidates went to its own parameter: nested's best is 0.05, bowl's 0.02
    assert plan.selection.choices == {("bowl", 0): 0.02, ("nested", 0): 0.05}
    final = {t.entry: t for t in plan.tasks}
    assert final["nested"].spec["trainer"]["inner"]["lr"] == 0.05
    assert final["nested"].selected == {"trainer.inner.lr": 0.05}
    assert final["bowl"].spec["trainer"]["lr"] == 0.02
    text = plan_report(plan, tmp_path / plan.name).render("markdown")
    assert "; entry nested: `trainer.inner.lr` chosen" in text
    # a nested path that does not exist in the entry's component is refused by name
    spec["entries"][1]["select_parameter"] = "trainer.inner.nope"
    with pytest.raises(SpecError, match="trainer.inner.nope: unknown field"):
        plan_of(host, spec)
    spec["entries"][1]["select_parameter"] = "trainer.inner.lr"
    spec["grid"] = {"trainer.inner.lr": [0.01]}
    with pytest.raises(SpecError, match="entry 'nested' select_parameter 'trainer.inner.lr' is "
                                        "also a grid axis"):
        parse_spec(spec, stem="select")


def test_several_metrics_score_each_run_by_its_worst(host, tmp_path):
    """`two_modes` reports a second loss that is bad above 0.03 while its first is best at
    0.05: chosen on the first loss alone it gets 0.05, on the worst of both 0.02."""
    spec = copy.deepcopy(SPEC)
    spec["entries"] = [{"label": "bowl"},
                       {"label": "two_modes", "overrides": {"trainer": {
                           "best": 0.05, "second_bad_above": 0.03}}}]
    alone = plan_of(host, spec)
    run_plan(alone, tmp_path, host=host, progress=False)
    assert alone.selection.choices[("two_modes", 0)] == 0.05
    spec["select"]["metric"] = ["test_loss", "test_loss_second"]
    both = plan_of(host, spec)
    stage = both.selection
    assert stage.metrics == ["validation_loss", "validation_loss_second"]
    # the selection runs are the same runs (the score is not part of a run's identity)
    assert {t.run_id for t in stage.tasks} == {t.run_id for t in alone.selection.tasks}
    summary = run_plan(both, tmp_path, host=host, progress=False)
    assert summary.failed == 0 and summary.ran == 2       # only two_modes' final runs at 0.02
    assert stage.choices == {("bowl", 0): 0.02, ("two_modes", 0): 0.02}
    text = plan_report(both, tmp_path / both.name).render("markdown")
    assert "by the mean worst of `validation_loss` and `validation_loss_second`" in text


def test_several_selection_metrics_need_one_direction(host):
    spec = copy.deepcopy(SPEC)
    spec["select"]["metric"] = ["test_loss", "test_accuracy"]
    with pytest.raises(SpecError, match="needs one direction.*test_accuracy is higher"):
        plan_of(host, spec)
    spec["select"]["metric"] = []
    with pytest.raises(SpecError, match="empty list"):
        parse_spec(spec, stem="select")


def test_a_run_scores_its_worst_reported_metric_and_a_non_finite_one_makes_it_bad():
    from bench_core.results.selection import run_score

    assert run_score([0.3, 0.5], higher=False) == 0.5
    assert run_score([0.9, 0.7], higher=True) == 0.7
    assert run_score([0.3, None], higher=False) == 0.3     # a metric the run does not report
    assert run_score([None, None], higher=False) is None
    assert math.isnan(run_score([0.3, float("inf")], higher=True))
