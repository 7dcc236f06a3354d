"""Grouped runs (a generic host capability), with a toy trainer from tests/grouped_plugin.py:
groups formed by key, trainer limit and --group-size; one record per run; equal results with
and without grouping; failures and divergence confined to their run; resume of half a group."""

from __future__ import annotations

import grouped_plugin
import polars as pl
import pytest
import torch

from bench_core.cli import main
from bench_core.execution.runner import form_groups, run_plan
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand

SPEC = {
    "title": "grouped",
    "metric": "test_mse",
    "higher_is_better": False,
    "baseline": "slow",
    "seeds": 2,
    "defaults": {
        "dataset": {"name": "toy_regression", "dim": 3},
        "model": {"name": "toy_linear"},
        "rule": {"name": "toy_lr", "lr": 0.05},
        "trainer": {"name": "toy_gd", "steps": 30},
    },
    "grid": {"dataset.dim": [3, 4]},
    "entries": [
        {"label": "slow"},
        {"label": "fast", "overrides": {"rule": {"lr": 0.3}}},
    ],
}


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(grouped_plugin, "grouped")
    grouped_plugin.CALLS.clear()
    return untied_host


def plan_of(host, raw, tmp_path):
    name, spec = parse_spec(raw, stem="g")
    return expand(host, name, spec, results_dir=str(tmp_path / "g"))


def records(tmp_path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in record_files(tmp_path / "g")],
                     how="diagonal_relaxed").sort("run_id")


def test_groups_follow_the_key_and_the_trainers_limit(host, tmp_path):
    plan = plan_of(host, SPEC, tmp_path)            # 2 dims x 2 entries x 2 seeds = 8 runs
    units = form_groups(plan.tasks, host)
    sizes = sorted(len(u) for u in units)
    assert sizes == [1, 1, 3, 3]                     # 4 runs per dim, cut at max_group_size 3
    for unit in units:
        assert len({t.spec["dataset"]["dim"] for t in unit}) == 1
    assert [len(u) for u in form_groups(plan.tasks, host, max_size=2)] == [2, 2, 2, 2]
    assert all(len(u) == 1 for u in form_groups(plan.tasks, host, enabled=False))


def test_grouped_equals_ungrouped_one_record_per_run(host, tmp_path):
    grouped = run_plan(plan_of(host, SPEC, tmp_path / "a"), tmp_path / "a", host=host,
                       progress=False)
    assert grouped.ran == grouped.ok == 8
    assert sorted(grouped_plugin.CALLS) == [1, 1, 3, 3]
    grouped_plugin.CALLS.clear()
    single = run_plan(plan_of(host, SPEC, tmp_path / "b"), tmp_path / "b", host=host,
                      progress=False, group=False)
    assert single.ok == 8 and grouped_plugin.CALLS == [1] * 8
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert a.height == b.height == 8 and a["run_id"].to_list() == b["run_id"].to_list()
    assert a["m_test_mse"].to_list() == pytest.approx(b["m_test_mse"].to_list(), rel=1e-5)
    assert sorted(a["group_size"].to_list()) == [1, 1, 3, 3, 3, 3, 3, 3]
    assert a["stack_size"].to_list() == a["group_size"].to_list()  # fit_group said no more
    assert set(b["group_size"].to_list()) == set(b["stack_size"].to_list()) == {1}
    row = a.filter(pl.col("group_size") == 3).row(0, named=True)
    assert row["wall_time_s"] == pytest.approx(row["group_wall_time_s"] / 3)
    # paired seeds: both entries of a cell and seed saw the same data, so lr alone differs
    assert a.filter(pl.col("entry") == "fast")["m_test_mse"].mean() < \
        a.filter(pl.col("entry") == "slow")["m_test_mse"].mean()


def test_a_stacked_run_replays_stacked_and_a_lone_run_alone(host, tmp_path):
    """A trainer whose lone path rounds unlike its stacked path (``lone_rounding``): grouped
    and one-by-one records differ in the last bits, and each replays to the last bit only
    when trained as its record says (a stacked run beside a twin of itself)."""
    from bench_core.execution.replay import replay

    spec = {**SPEC, "defaults": {**SPEC["defaults"], "trainer": {
        "name": "toy_gd", "steps": 30, "lone_rounding": True}}}
    plan = plan_of(host, spec, tmp_path / "a")
    run_plan(plan, tmp_path / "a", host=host, progress=False)
    run_plan(plan_of(host, spec, tmp_path / "b"), tmp_path / "b", host=host, progress=False,
             group=False)
    grouped, single = records(tmp_path / "a"), records(tmp_path / "b")
    stacked = sorted(grouped.filter(pl.col("stack_size") == 3)["run_id"].to_list())
    lone = grouped.filter(pl.col("stack_size") == 1)["run_id"].to_list()[:1]
    by_id = {r["run_id"]: r["m_test_mse"] for r in grouped.iter_rows(named=True)}
    alone = {r["run_id"]: r["m_test_mse"] for r in single.iter_rows(named=True)}
    # the two paths round differently: for some runs the last bits survive to the metric (a
    # run whose steps are far below its weights' rounding, or that converged, may not show it;
    # which ones do depends on the machine's matmul), and two runs, one of them such, are kept
    differ = [i for i in stacked if by_id[i] != alone[i]]
    assert differ and len(stacked) >= 2 and len(lone) == 1
    ids = [differ[0], next(i for i in stacked if i != differ[0])]
    fresh = replay(host, plan, grouped, ids + lone)
    assert fresh["m_test_mse"].to_list() == [by_id[i] for i in ids + lone]
    assert fresh["stack_size"].to_list() == [2, 2, 1]
    # records from before stack_size existed cannot say: the replay that matches is kept
    fresh = replay(host, plan, grouped.drop("stack_size"), ids)
    assert fresh["m_test_mse"].to_list() == [by_id[i] for i in ids]
    fresh = replay(host, plan, single.drop("stack_size").with_columns(
        pl.lit(3).alias("group_size")), ids)
    assert fresh["m_test_mse"].to_list() == [alone[i] for i in ids]
    # and a stacked record replayed alone would not match (what the replay used to do)
    fresh = replay(host, plan, grouped.with_columns(pl.lit(1).alias("stack_size")), ids)
    assert fresh["m_test_mse"].to_list() == [alone[i] for i in ids]


def test_a_diverging_member_and_a_member_without_data_fail_alone(host, tmp_path):
    spec = {**SPEC, "grid": {}, "entries": [
        *SPEC["entries"],
        {"label": "boom", "overrides": {"rule": {"lr": 500.0}}},
        {"label": "nodata", "overrides": {"dataset": {"missing": True}}},
    ]}
    summary = run_plan(plan_of(host, spec, tmp_path), tmp_path, host=host, progress=False)
    df = records(tmp_path)
    status = dict(zip(df["entry"], df["status"]))
    assert status == {"slow": "ok", "fast": "ok", "boom": "diverged", "nodata": "failed"}
    assert (summary.ok, summary.diverged, summary.failed) == (4, 2, 2)
    assert "no such file" in df.filter(pl.col("entry") == "nodata")["error"][0]


def test_a_raising_fit_group_fails_every_member_and_is_retried(host, tmp_path):
    spec = {**SPEC, "grid": {}, "defaults": {**SPEC["defaults"],
                                             "trainer": {"name": "toy_gd", "fail_group": True}}}
    summary = run_plan(plan_of(host, spec, tmp_path), tmp_path, host=host, progress=False)
    assert summary.failed == 4
    assert set(records(tmp_path)["error"]) == {"RuntimeError: planned group failure"}


def test_resume_runs_only_the_missing_members_of_a_group(host, tmp_path):
    plan = plan_of(host, SPEC, tmp_path)
    run_plan(plan, tmp_path, host=host, progress=False)
    before = records(tmp_path)
    files = record_files(tmp_path / "g")
    for p in files[:2]:
        p.unlink()
    grouped_plugin.CALLS.clear()
    again = run_plan(plan, tmp_path, host=host, progress=False)
    assert (again.ran, again.skipped) == (2, 6)
    assert sum(grouped_plugin.CALLS) == 2
    after = records(tmp_path)
    assert after["m_test_mse"].to_list() == pytest.approx(before["m_test_mse"].to_list(), rel=1e-5)


def test_cli_no_group_and_dry_run_show_groups(host, tmp_path, capsys, monkeypatch):
    import tomli_w

    spec_file = tmp_path / "g.toml"
    spec_file.write_bytes(tomli_w.dumps(SPEC).encode())
    from bench_core import plugins

    monkeypatch.setattr(plugins, "get_host", lambda: host)
    assert main(["run", str(spec_file), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "8 to run in 4 groups" in out and "[group 0]" in out
    assert main(["run", str(spec_file), "--dry-run", "--no-group",
                 "--results", str(tmp_path / "r")]) == 0
    assert "groups" not in capsys.readouterr().out
    assert main(["run", str(spec_file), "--group-size", "0", "--results", str(tmp_path)]) == 2


def test_fit_in_stacks_says_how_each_session_was_trained():
    from types import SimpleNamespace

    from bench_core.grouping import fit_in_stacks
    from bench_core.interfaces import RunContext, TrainingSession

    def session(name):
        return TrainingSession(ctx=RunContext(seed=0, device=torch.device("cpu")), data=None,
                               build_model=None, build_rule=None, spec={"name": name})

    sessions = [session(n) for n in ("a1", "b1", "a2", "x", "a3")]
    fit_in_stacks(sessions, lambda s: None if s.spec["name"] == "x" else SimpleNamespace(s=s),
                  lambda m: m.s.spec["name"][0], lambda ms: [(m, {}) for m in ms],
                  lambda s: {}, lambda m: m.s)
    assert [s.ctx.stack_size for s in sessions] == [3, 1, 3, 1, 3]


def test_fit_in_stacks_bookkeeping_without_any_plugin():
    from bench_core.grouping import fit_in_stacks

    sessions = ["a1", "b1", "a2", "x", "boom", "a3", "c1"]
    stacked = []

    def prepare(s):
        if s == "boom":
            raise RuntimeError("cannot build")
        return None if s == "x" else {"s": s}

    def train_stack(members):
        stacked.append([m["s"] for m in members])
        return [(m, {"stack": len(members)}) for m in reversed(members)]

    out = fit_in_stacks(sessions, prepare, lambda m: m["s"][0], train_stack,
                        lambda s: {"alone": s}, lambda m: m["s"])
    assert stacked == [["a1", "a2", "a3"]]
    assert out[0] == out[2] == out[5] == {"stack": 3}
    assert out[1] == {"alone": "b1"} and out[3] == {"alone": "x"} and out[6] == {"alone": "c1"}
    assert isinstance(out[4], RuntimeError)
