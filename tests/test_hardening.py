"""Faults that must lose nothing: a run that hangs, NaN data, a learning rate of 1e6, an
exploding surrogate, a factory returning the wrong type, a plugin changing global torch state,
a grid with a repeated value, a number written as a string, an oversized plan, an unwritable
results folder, missing data, and code that would pickle."""

from __future__ import annotations

import copy
import re

import chaos_plugin
import polars as pl
import pytest
import torch
from conftest import REPO

from bench_core.cli import main
from bench_core.errors import SpecError
from bench_core.execution.runner import run_plan
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def plan_of(host, raw, **kw):
    name, spec = parse_spec(raw, stem="h")
    return expand(host, name, spec, **kw)


def records(folder) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in record_files(folder)], how="diagonal_relaxed")


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(chaos_plugin, "chaos")
    return untied_host


def one_seed(fast_spec, **entries):
    raw = copy.deepcopy(fast_spec)
    raw["seeds"], raw["grid"] = 1, {}
    raw["entries"] = [{"label": "tied"}] + [{"label": k, "overrides": v}
                                            for k, v in entries.items()]
    return raw


def test_numerical_and_time_faults_are_recorded_and_the_grid_goes_on(host, fast_spec, tmp_path):
    raw = one_seed(fast_spec,
                   hang={"trainer": {"name": "failing", "kind": "hang"}},
                   nan_data={"dataset": {"name": "nan_digits"}},
                   huge_lr={"rule": {"lr": 1e6}, "activation": {"name": "identity"},
                            "trainer": {"loss": "mse"}},
                   exploding={"surrogate": {"name": "exploding"},
                              "activation": {"name": "identity"}},
                   wrong_type={"model": {"name": "returns_none"}})
    summary = run_plan(plan_of(host, raw), tmp_path, host=host, progress=False, run_timeout=10)
    df = records(tmp_path / "h")
    status = dict(zip(df["entry"], df["status"]))
    error = dict(zip(df["entry"], df["error"]))
    assert status == {"tied": "ok", "hang": "timeout", "nan_data": "diverged",
                      "huge_lr": "diverged", "exploding": "diverged", "wrong_type": "failed"}
    assert "longer than 10 s" in error["hang"]
    assert error["wrong_type"] == ("PluginError: model 'returns_none' (plugin 'chaos') returned "
                                   "NoneType, expected a torch.nn.Module")
    assert (summary.ok, summary.timeout, summary.diverged, summary.failed) == (1, 1, 3, 1)
    from bench_core.results.leaderboard import aggregate
    from bench_core.results.records import read_records

    agg = aggregate(read_records(tmp_path / "h"))
    assert dict(zip(agg["entry"], agg["timeout"]))["hang"] == 1


def test_global_torch_state_is_restored_after_a_run_that_changes_it(host, fast_spec, tmp_path):
    raw = one_seed(fast_spec, mutant={"trainer": {"name": "failing", "kind": "mutate_state"}})
    raw["entries"] = raw["entries"][::-1]                       # the mutant runs first
    before = (torch.get_default_dtype(), torch.is_grad_enabled())
    summary = run_plan(plan_of(host, raw), tmp_path, host=host, progress=False, group=False)
    assert summary.ok == 2
    assert (torch.get_default_dtype(), torch.is_grad_enabled()) == before
    df = records(tmp_path / "h")
    warn = dict(zip(df["entry"], df["warnings"]))
    assert "default dtype torch.float32 -> torch.float64" in warn["mutant"]
    assert "grad mode True -> False" in warn["mutant"]
    assert warn["tied"] is None                      # the next run saw the state restored


def test_spec_mistakes_are_one_line_errors(host, fast_spec):
    raw = copy.deepcopy(fast_spec)
    raw["grid"] = {"rule.lr": [0.2, 0.2]}
    with pytest.raises(SpecError, match=r"^spec: grid.rule.lr repeats the value 0.2"):
        parse_spec(raw)
    raw = copy.deepcopy(fast_spec)
    raw["defaults"]["trainer"]["epochs"] = "2"
    with pytest.raises(SpecError, match="trainer.epochs: expected int, got the string '2'"):
        plan_of(host, raw)
    raw = copy.deepcopy(fast_spec)
    raw["grid"] = {"rule.lr": [0.001 * i for i in range(1, 501)],
                   "trainer.batch_size": list(range(1, 201))}
    with pytest.raises(SpecError, match=r"the plan has 400,000 runs, more than 100,000"):
        plan_of(host, raw)
    assert len(plan_of(host, {**raw, "grid": {"rule.lr": [0.1]}}).tasks) == 4


def test_cli_refuses_unwritable_results_and_missing_data_before_training(
        fast_spec, tmp_path, capsys, monkeypatch):
    import tomli_w

    spec = tmp_path / "s.toml"
    spec.write_bytes(tomli_w.dumps(fast_spec).encode())
    (tmp_path / "file").write_text("not a folder")
    assert main(["run", str(spec), "--results", str(tmp_path / "file"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write records there" in err
    assert not list(tmp_path.glob("file/**"))

    monkeypatch.delenv("UNTIED_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    fast_spec["defaults"]["dataset"] = {"name": "mnist", "train_subset": 100}
    spec.write_bytes(tomli_w.dumps(fast_spec).encode())
    assert main(["validate", str(spec)]) == 2
    assert "mnist: no IDX files" in capsys.readouterr().err
    assert main(["run", str(spec), "--results", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and not record_files(tmp_path / "r" / "s")


PICKLE = re.compile(r"\bimport pickle\b|\bpickle\.(load|dump)|\bjoblib\b|\bcloudpickle\b|"
                    r"allow_pickle\s*=\s*True|\.to_pickle\(|read_pickle\(")
TORCH_LOAD = re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)")


def test_no_pickle_in_records_caches_or_checkpoints():
    """Records and index parts are Parquet, specs TOML, caches JSON: nothing of ours unpickles
    (unpickling a file can run code). Process pools pickle tasks in memory between processes,
    which is not storage. scikit-learn's own dataset cache (California housing's fallback) is
    its business, not a file we write."""
    offenders = []
    for folder in ("bench_core", "plugins", "benchmarks", "examples"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for pattern in (PICKLE, TORCH_LOAD):
                for m in pattern.finditer(text):
                    line = text[:m.start()].count("\n") + 1
                    offenders.append(f"{path.relative_to(REPO)}:{line}: {m.group(0)}")
    assert not offenders, "\n".join(offenders)
