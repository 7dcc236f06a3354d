"""The `untied` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

UNTIED = str(Path(sys.executable).parent / "untied")


def untied(*args, cwd=None, env=None):
    return subprocess.run([UNTIED, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture
def spec_file(tmp_path, fast_spec):
    fast_spec["seeds"] = 1
    fast_spec["grid"] = {}
    path = tmp_path / "fast.toml"
    path.write_text(tomli_w.dumps(fast_spec))
    return path


def test_plugins_and_list_json():
    out = untied("plugins", "--json")
    assert out.returncode == 0
    rows = {r["plugin"]: r for r in json.loads(out.stdout)}
    assert rows["surrogates"]["distribution"] == "untied-bench"
    assert rows["surrogates"]["hooks"] == ["register_surrogates"]
    out = untied("list", "datasets", "--json")
    comps = {c["name"]: c for c in json.loads(out.stdout)["datasets"]}
    params = {p["name"]: p for p in comps["digits"]["parameters"]}
    assert params["test_fraction"]["default"] == 0.2
    text = untied("list", "update_rules").stdout
    assert "sgd" in text and "lr: float = 0.01" in text


def test_schema_lists_components():
    schema = json.loads(untied("schema").stdout)
    assert "entries" in schema["properties"]
    assert schema["$defs"]["datasets.digits"]["properties"]["name"] == {"const": "digits"}


def test_validate_unknown_dataset_is_one_line_with_choices(tmp_path, fast_spec):
    fast_spec["defaults"]["dataset"] = {"name": "cifar-1O"}
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(fast_spec))
    out = untied("validate", path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset.name: unknown dataset")
    assert "digits" in lines[0] and "ones" in lines[0] and "Traceback" not in out.stderr


def test_validate_good_and_missing(spec_file, tmp_path):
    out = untied("validate", spec_file)
    assert out.returncode == 0 and "2 entries x 1 grid cells x 1 seeds = 2 runs" in out.stdout
    out = untied("validate", tmp_path / "nope.toml")
    assert out.returncode == 2 and "no spec file" in out.stderr


def test_run_then_resume_then_leaderboard(spec_file, tmp_path):
    res = tmp_path / "res"
    out = untied("run", spec_file, "--results", res, "--quiet")
    assert out.returncode == 0, out.stderr
    assert "tied (baseline)" in out.stdout and "Δ baseline" in out.stdout and "± std" in out.stdout
    again = untied("run", spec_file, "--results", res, "--quiet")
    assert again.returncode == 0 and "already recorded" in again.stderr
    assert again.stdout == out.stdout
    dry = untied("run", spec_file, "--results", res, "--dry-run")
    assert "2 recorded, 0 to run" in dry.stdout
    md = tmp_path / "board.md"
    assert untied("leaderboard", spec_file, "--results", res, "--format", "markdown",
                  "--output", md).returncode == 0
    assert md.read_text().startswith("# fast")
    csv = untied("leaderboard", res / "fast", "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.count("\n") == 3


def test_failed_runs_exit_1_are_recorded_and_nothing_is_lost(tmp_path, fast_spec):
    fast_spec["seeds"], fast_spec["grid"] = 1, {}
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    fast_spec["entries"].append({"label": "broken", "overrides": {
        "dataset": {"name": "mnist", "root": str(empty)}}})
    path = tmp_path / "fails.toml"
    path.write_text(tomli_w.dumps(fast_spec))
    out = untied("run", path, "--results", tmp_path / "r", "--quiet")
    assert out.returncode == 2 and out.stderr.count("\n") == 1       # found before training
    assert out.stderr.startswith("error: mnist: no IDX files")
    assert not (tmp_path / "r" / "fails").exists() or not list((tmp_path / "r" / "fails").glob("*.parquet"))
    out = untied("run", path, "--results", tmp_path / "r", "--quiet", "--no-data-check")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "failed: broken" in out.stderr and "DataError" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: 1 runs failed and 0 timed out, of 3")
    assert len(list((tmp_path / "r" / "fails").glob("*.parquet"))) == 3
    assert "tied (baseline)" in out.stdout


def test_device_errors_and_sys_info(spec_file):
    import torch

    if not torch.cuda.is_available():
        out = untied("run", spec_file, "--device", "cuda")
        assert out.returncode == 2 and "CUDA is not available" in out.stderr
    out = untied("run", spec_file, "--device", "tpu")
    assert out.returncode == 2 and "expected auto, cpu, cuda or cuda:N" in out.stderr
    info = untied("sys-info")
    assert info.returncode == 0 and "torch" in info.stdout and "cuda_available" in info.stdout


def test_leaderboard_of_empty_results_is_an_error(spec_file, tmp_path):
    out = untied("leaderboard", spec_file, "--results", tmp_path / "none")
    assert out.returncode == 2 and out.stderr.startswith("error: no records")
