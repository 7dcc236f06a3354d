"""The runner: records, resume, failures and divergence recorded, determinism, Ctrl-C."""

from __future__ import annotations

import chaos_plugin
import polars as pl
import pytest

from bench_core.execution.runner import execute_task, run_plan
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def plan_for(host, raw, tmp_path, **kw):
    name, spec = parse_spec(raw, stem="t")
    return expand(host, name, spec, results_dir=str(tmp_path / "t"), **kw)


def read_all(tmp_path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in record_files(tmp_path / "t")],
                     how="diagonal_relaxed")


def test_records_hold_the_design_fields(untied_host, fast_spec, tmp_path):
    plan = plan_for(untied_host, fast_spec, tmp_path, seeds=1)
    summary = run_plan(plan, tmp_path, host=untied_host, progress=False)
    assert (summary.ran, summary.ok) == (4, 4)
    df = read_all(tmp_path)
    assert df.height == 4
    for col in ["run_id", "entry", "seed", "status", "error", "value", "spec_json",
                "p_rule.lr", "p_surrogate.name", "m_test_accuracy", "curve_test_accuracy",
                "curve_train_loss", "wall_time_s", "peak_rss_bytes", "forward_passes",
                "backward_passes", "device", "torch_version", "plugins_json", "git_commit",
                "cell_json", "finished_at", "cpu_model", "cpus", "threads"]:
        assert col in df.columns, col
    row = df.row(0, named=True)
    assert len(row["curve_test_accuracy"]) == 2  # two epochs
    assert row["value"] == row["m_test_accuracy"] == row["curve_test_accuracy"][-1]
    # 240 training samples (300 subset of 1437) ... counted per sample: epochs x train size
    assert row["backward_samples"] == 2 * 300
    assert '"troiano": "untied-bench==' in row["plugins_json"]
    assert row["threads"] == 1 and row["cpus"] >= 1 and row["cpu_model"]  # runs pin 1 thread


def test_the_commit_is_read_before_the_first_run_starts(untied_host, fast_spec, tmp_path,
                                                        monkeypatch):
    """A grid that runs for hours records the commit of the code it loaded, not the one checked
    out when its first record is written."""
    from bench_core.execution import runner

    runner.git_commit.cache_clear()
    cached_at_start = []
    build = runner.build_session

    def spy(*args, **kwargs):
        cached_at_start.append(runner.git_commit.cache_info().currsize)
        return build(*args, **kwargs)

    monkeypatch.setattr(runner, "build_session", spy)
    plan = plan_for(untied_host, fast_spec, tmp_path, seeds=1)
    run_plan(plan, tmp_path, host=untied_host, progress=False, group=False)
    assert cached_at_start and set(cached_at_start) == {1}


def test_resume_reruns_nothing_and_force_reruns(untied_host, fast_spec, tmp_path):
    plan = plan_for(untied_host, fast_spec, tmp_path, seeds=1)
    run_plan(plan, tmp_path, host=untied_host, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in record_files(tmp_path / "t")}
    again = run_plan(plan_for(untied_host, fast_spec, tmp_path, seeds=1), tmp_path,
                     host=untied_host, progress=False)
    assert (again.ran, again.skipped) == (0, 4)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in record_files(tmp_path / "t")}
    forced = run_plan(plan, tmp_path, host=untied_host, force=True, progress=False)
    assert forced.ran == 4


def run_with_chaos_entry(host, spec, tmp_path, label, overrides):
    """Add the chaos plugin and an entry using it; run one seed. Returns (plan, summary)."""
    host.add_plugin(chaos_plugin, "chaos")
    spec["entries"].append({"label": label, "overrides": overrides})
    plan = plan_for(host, spec, tmp_path, seeds=1)
    return plan, run_plan(plan, tmp_path, host=host, progress=False)


def test_raising_plugin_is_recorded_failed_and_grid_goes_on(untied_host, fast_spec, tmp_path):
    plan, summary = run_with_chaos_entry(untied_host, fast_spec, tmp_path, "boom",
                                         {"trainer": {"name": "failing"}})
    assert (summary.ok, summary.failed) == (4, 2)
    df = read_all(tmp_path).filter(pl.col("entry") == "boom")
    assert set(df["status"]) == {"failed"}
    assert df["error"][0] == "RuntimeError: planned failure inside a plugin"
    assert "Traceback" in df["traceback"][0]
    # failed runs are retried on resume, the others are not
    again = run_plan(plan, tmp_path, host=untied_host, progress=False)
    assert (again.ran, again.failed) == (2, 2)


def test_nan_loss_is_recorded_diverged(untied_host, fast_spec, tmp_path):
    # a grid over the batch, not the rule: the poison rule replaces the rule table, so a
    # rule.lr axis would never reach it (an error since grid axes must reach every entry)
    fast_spec["grid"] = {"trainer.batch_size": [32, 64]}
    plan, summary = run_with_chaos_entry(untied_host, fast_spec, tmp_path, "nan",
                                      {"rule": {"name": "poison"}})
    assert (summary.ok, summary.diverged) == (4, 2)
    df = read_all(tmp_path).filter(pl.col("entry") == "nan")
    assert set(df["status"]) == {"diverged"}
    assert df["error"][0].startswith("non-finite train_loss")
    assert len(df["curve_train_loss"][0]) == 1  # the epoch that diverged is kept
    # it keeps the metrics of that epoch that are finite: the accuracy of the NaN model (all
    # outputs NaN -> class 0 everywhere: about chance), not the NaN losses
    for row in df.iter_rows(named=True):
        assert row["value"] == row["m_test_accuracy"] == row["curve_test_accuracy"][-1]
        assert 0.0 < row["value"] < 0.2
        assert row["m_train_loss"] is None and row["m_test_loss"] is None
    # diverged runs are kept on resume (only failed runs are retried)
    assert run_plan(plan, tmp_path, host=untied_host, progress=False).ran == 0


def test_same_seed_identical_metrics(untied_host, fast_spec, tmp_path):
    plan = plan_for(untied_host, fast_spec, tmp_path, seeds=1)
    a = execute_task(plan.tasks[1], untied_host)
    b = execute_task(plan.tasks[1], untied_host)
    assert a["curves_json"] == b["curves_json"] and a["value"] == b["value"]
    other = plan_for(untied_host, {**fast_spec, "seeds": [7]}, tmp_path).tasks[1]
    assert execute_task(other, untied_host)["curves_json"] != a["curves_json"]


def test_interrupt_keeps_finished_runs(untied_host, fast_spec, tmp_path):
    untied_host.add_plugin(chaos_plugin, "chaos")
    fast_spec["grid"] = {}
    fast_spec["entries"].append({"label": "stop",
                                 "overrides": {"trainer": {"name": "failing", "kind": "interrupt"}}})
    plan = plan_for(untied_host, fast_spec, tmp_path, seeds=1)
    summary = run_plan(plan, tmp_path, host=untied_host, progress=False)
    assert summary.interrupted and summary.ran == 2
    assert len(record_files(tmp_path / "t")) == 2
    assert not list((tmp_path / "t").glob(".*.tmp"))


def test_processes_executor_matches_local(untied_host, fast_spec, tmp_path):
    fast_spec["grid"] = {}
    plan = plan_for(untied_host, fast_spec, tmp_path / "a", seeds=1)
    run_plan(plan, tmp_path / "a", host=untied_host, progress=False)
    plan2 = plan_for(untied_host, fast_spec, tmp_path / "b", seeds=1)
    summary = run_plan(plan2, tmp_path / "b", executor="processes", jobs=2, host=untied_host,
                       progress=False)
    assert summary.ok == 2
    a = read_all(tmp_path / "a").sort("run_id")["value"].to_list()
    b = read_all(tmp_path / "b").sort("run_id")["value"].to_list()
    assert a == pytest.approx(b, abs=1e-6)


def test_cli_counts_diverged_runs_unless_excluded(untied_host, fast_spec, tmp_path, monkeypatch,
                                                  capsys):
    import tomli_w

    from bench_core import plugins
    from bench_core.cli import main

    untied_host.add_plugin(chaos_plugin, "chaos")
    monkeypatch.setattr(plugins, "get_host", lambda: untied_host)
    fast_spec["seeds"], fast_spec["grid"] = 2, {}
    fast_spec["entries"].append({"label": "nan", "overrides": {"rule": {"name": "poison"}}})
    spec_file = tmp_path / "t.toml"
    spec_file.write_bytes(tomli_w.dumps(fast_spec).encode())
    results = str(tmp_path / "r")
    assert main(["run", str(spec_file), "--results", results, "--quiet"]) == 0
    counted = capsys.readouterr().out
    nan_row = next(line for line in counted.splitlines() if line.startswith("nan"))
    assert " 2 " in nan_row and nan_row.rstrip().endswith("2")  # n = 2, diverged = 2 (in mean)
    assert main(["leaderboard", str(spec_file), "--results", results,
                 "--exclude-diverged"]) == 0
    excluded = capsys.readouterr().out
    nan_row = next(line for line in excluded.splitlines() if line.startswith("nan"))
    assert "2 (not in mean)" in nan_row and " 0 " in nan_row
    assert "left out of mean" in excluded and "count in mean" in counted
