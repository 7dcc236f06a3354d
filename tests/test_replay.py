"""Same run id, same result: records carry what decides float rounding, `untied compare` names
the runs that differ between two sets of records, `untied stability` flags the cells rounding
decides (and their verdicts become inconclusive), component versions re-run old records instead
of mixing them in. Toy plugins only (tests/judgement_plugin.py); the replay of the committed
leaderboards is tests/test_committed_replay.py."""

from __future__ import annotations

import dataclasses

import judgement_plugin
import polars as pl
import pytest
import tomli_w
from judgement_plugin import SPEC

from bench_core.cli import main
from bench_core.execution.runner import run_plan
from bench_core.results.records import record_files, write_record
from bench_core.results.tables import plan_report
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(judgement_plugin, "judgement")
    return untied_host


def write_spec(tmp_path, spec, name="judge"):
    path = tmp_path / f"{name}.toml"
    path.write_bytes(tomli_w.dumps(spec).encode())
    return str(path)


def test_records_carry_what_decides_float_rounding(host, tmp_path):
    from bench_core.execution.environment import numerics

    name, spec = parse_spec(SPEC, stem="judge")
    run_plan(expand(host, name, spec), tmp_path, host=host, progress=False)
    row = pl.read_parquet(record_files(tmp_path / "judge")[0]).row(0, named=True)
    here = numerics()
    assert row["cpu_capability"] == here["cpu_capability"] and row["cpu_capability"]
    assert row["blas"] == here["blas"] and "cuda_version" in row and "cudnn_version" in row
    assert row["cpp_compiler"] == here["cpp_compiler"] and row["cpp_compiler"]
    report = plan_report(expand(host, name, spec), tmp_path / "judge")
    machine = next(n for n in report.notes if n.startswith("Machine:"))
    assert f"CPU kernels {here['cpu_capability']}" in machine


def test_the_compiler_is_found_as_inductor_would_and_recorded_as_none_when_missing(
        monkeypatch, tmp_path):
    from bench_core.execution.environment import cpp_compiler

    fake = tmp_path / "my-g++"
    fake.write_text("#!/bin/sh\necho 'my-g++ (Test) 1.2.3'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert cpp_compiler() == "my-g++ (Test) 1.2.3"
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    assert cpp_compiler() == "none"


def test_records_of_another_compiler_are_not_compared_to_the_last_bit():
    from bench_core.results.compare import same_numerics

    machine = {"cpu_model": "X", "cpu_capability": "AVX512", "blas": "mkl", "device": "cpu",
               "torch_version": "2.14.1", "cuda_device": None, "cuda_version": None,
               "cudnn_version": None}
    here = {**machine, "cpp_compiler": "g++ 12.2.0"}
    assert same_numerics({**machine, "cpp_compiler": "g++ 12.2.0"}, here)
    assert not same_numerics({**machine, "cpp_compiler": "none"}, here)   # compiled vs eager
    assert same_numerics(machine, here)     # a record from before the compiler was recorded
    assert not same_numerics({**machine, "blas": None}, here)


def test_compare_names_the_runs_and_metrics_that_differ(host, tmp_path, capsys):
    spec = write_spec(tmp_path, SPEC)
    for side in ("a", "b"):
        assert main(["run", spec, "--results", str(tmp_path / side), "--quiet"]) == 0
    a, b = tmp_path / "a" / "judge", tmp_path / "b" / "judge"
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 0       # the same machine and code: exact
    out = capsys.readouterr().out
    assert "every common run agrees on every metric within 0" in out
    assert "train_seconds" not in out.split("metrics compared:")[1].splitlines()[0]
    path = record_files(b)[0]
    row = pl.read_parquet(path).row(0, named=True)
    write_record(b, {**row, "m_test_accuracy": row["m_test_accuracy"] + 0.25,
                     "cpu_capability": "SOMETHING_ELSE"})
    assert main(["compare", str(a), str(b), "--tolerance", "1e-6"]) == 1
    out = capsys.readouterr().out
    assert "1 of 4 runs differ" in out and "test_accuracy: 1 runs, largest |A - B| = 0.25" in out
    assert row["run_id"] in out and "cpu_capability" in out and "<- differs" in out
    other = tmp_path / "other.parquet"
    pl.DataFrame({"run_id": ["nope"], "status": ["ok"]}).write_parquet(other)
    assert main(["compare", str(a), str(other)]) == 2
    assert "no run in common" in capsys.readouterr().err


def test_stability_flags_chaotic_cells_and_their_verdicts_become_inconclusive(host, tmp_path,
                                                                              capsys):
    spec = {
        "title": "chaos", "metric": "test_accuracy", "baseline": "calm", "seeds": 1,
        "comparable": True,
        "defaults": {"dataset": {"name": "toy_points"}, "model": {"name": "toy_weights"},
                     "trainer": {"name": "toy_sensitive"}},
        "entries": [{"label": "calm"},
                    {"label": "wild", "overrides": {"trainer": {"gain": 1e12}}}],
    }
    path = write_spec(tmp_path, spec, "chaos")
    results = str(tmp_path / "r")
    assert main(["run", path, "--results", results, "--quiet"]) == 0
    ours = {r["entry"]: r["m_test_accuracy"] for r in pl.concat(
        [pl.read_parquet(p) for p in record_files(tmp_path / "r" / "chaos")]).iter_rows(
            named=True)}
    # the paper agrees with both: every verdict is `reproduced` before the stability check
    spec["reference"] = [{"entry": e, "value": v} for e, v in ours.items()]
    path = write_spec(tmp_path, spec, "chaos")
    capsys.readouterr()
    assert main(["stability", path, "--results", results, "--quiet", "--export",
                 str(tmp_path / "p.parquet")]) == 0
    out = capsys.readouterr().out
    assert "**Chaotic: 1 of 2** entries x cells" in out and "wild (all)" in out
    assert (tmp_path / "r" / "chaos" / "perturbed").is_dir()
    perturbed = pl.read_parquet(tmp_path / "p.parquet")
    assert set(perturbed["perturbation"]) == {"init-ulp"} and perturbed.height == 2
    assert main(["leaderboard", path, "--results", results]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines()
            if line.startswith(("calm", "wild"))}
    assert "inconclusive (chaotic)" in rows["wild"] and "chaotic" in rows["wild"]
    assert " reproduced" in rows["calm"] and "chaotic" not in rows["calm"]


def test_a_new_component_version_reruns_old_records_and_never_mixes_them(host, tmp_path,
                                                                         capsys):
    name, spec = parse_spec(SPEC, stem="judge")
    old = expand(host, name, spec)
    run_plan(old, tmp_path, host=host, progress=False)
    comp = host.family("trainers")["toy_curve"]
    assert comp.version == "1"
    host.registries["trainers"]["toy_curve"] = dataclasses.replace(comp, version="2")
    new = expand(host, name, spec)
    assert all(a.run_id != b.run_id for a, b in zip(old.tasks, new.tasks))
    assert [t.base_run_id for t in new.tasks] == [t.run_id for t in old.tasks]
    assert [t.seed for t in new.tasks] == [t.seed for t in old.tasks]   # the same draws
    capsys.readouterr()
    summary = run_plan(new, tmp_path, host=host, progress=False)
    assert summary.ran == len(new.tasks)
    assert "made by other versions of their components" in capsys.readouterr().err
    report = plan_report(new, tmp_path / "judge")
    assert report.agg.filter(pl.col("metric") == "test_accuracy")["n"].to_list() == [2, 2]
    rows = pl.concat([pl.read_parquet(p) for p in record_files(tmp_path / "judge")],
                     how="diagonal_relaxed")
    fresh = rows.filter(pl.col("run_id").is_in([t.run_id for t in new.tasks]))
    assert set(fresh["versions_json"].str.contains('"trainer":"2"').to_list()) == {True}
    # version 1 is not part of any id: the ids of the committed records are the plans' ids
    host.registries["trainers"]["toy_curve"] = comp
    assert [t.run_id for t in expand(host, name, spec).tasks] == [t.run_id for t in old.tasks]


def test_a_revised_parameter_value_reruns_only_the_runs_that_use_it(host, tmp_path, capsys):
    """`revised_option`: the value whose numerics changed gets a new run id (its old records
    recognised and never mixed in), the other values keep theirs, and no seed moves."""
    from pydantic import create_model

    from bench_core.interfaces import revised_option

    comp = host.family("trainers")["toy_curve"]
    spec = {**SPEC, "entries": [
        {"label": "calm", "overrides": {"trainer": {"mode": "plain"}}},
        {"label": "fast", "overrides": {"trainer": {"mode": "fast"}}}]}
    name, parsed = parse_spec(spec, stem="judge")

    def declare(field):   # toy_curve with a parameter `mode` declared as `field`
        params = create_model("ModeParams", __base__=judgement_plugin.CurveParams, mode=field)
        host.registries["trainers"]["toy_curve"] = dataclasses.replace(comp, params=params)

    try:
        declare((str, "plain"))
        old = expand(host, name, parsed)
        run_plan(old, tmp_path, host=host, progress=False)
        declare((str, revised_option("plain", {"fast": "2"})))
        new = expand(host, name, parsed)
        capsys.readouterr()
        summary = run_plan(new, tmp_path, host=host, progress=False)
    finally:
        host.registries["trainers"]["toy_curve"] = comp
    calm_old, fast_old = ([t for t in old.tasks if t.entry == e] for e in ("calm", "fast"))
    calm_new, fast_new = ([t for t in new.tasks if t.entry == e] for e in ("calm", "fast"))
    assert [t.run_id for t in calm_new] == [t.run_id for t in calm_old]
    assert all(a.run_id != b.run_id for a, b in zip(fast_old, fast_new))
    assert [t.base_run_id for t in fast_new] == [t.run_id for t in fast_old]
    assert [t.seed for t in new.tasks] == [t.seed for t in old.tasks]
    assert summary.ran == len(fast_new) and summary.skipped == len(calm_new)
    assert "other versions of their components or of a parameter value" in capsys.readouterr().err


def test_a_version_must_be_a_short_token(host):
    from bench_core.hookspecs import hookimpl
    from bench_core.plugins import PluginHost

    class Bad:
        @hookimpl
        def register_trainers(register):
            register("bad_version", judgement_plugin.CurveTrainer,
                     params=judgement_plugin.CurveParams, description="x", version="two words")

    fresh = PluginHost()
    fresh.add_plugin(Bad, "bad")
    fresh.collect()
    assert "version 'two words'" in fresh.plugins["bad"].error
