"""Crash safety: SIGKILL at arbitrary points and resume (local and processes executors), two
`untied run` processes on one results folder. Every run ends recorded exactly once, no record
is partial or corrupt, no claim or temp file is left, no worker outlives its parent.

The default run kills each executor once; `make test-slow` (pytest -m slow) kills at five
random points each."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import tomli_w
from test_process_orphans import alive, children_of

from bench_core.execution.safeguards import CLAIMS_DIR
from bench_core.results.records import record_files, record_problem

UNTIED = str(Path(sys.executable).parent / "untied")


def write_spec(fast_spec, tmp_path, epochs=12, seeds=3) -> tuple[Path, int]:
    fast_spec["defaults"]["trainer"]["epochs"] = epochs
    fast_spec["seeds"] = seeds
    path = tmp_path / "crash.toml"
    path.write_bytes(tomli_w.dumps(fast_spec).encode())
    runs = len(fast_spec["entries"]) * seeds * len(fast_spec["grid"]["rule.lr"])
    return path, runs


def start(spec: Path, results: Path, executor: str) -> subprocess.Popen:
    return subprocess.Popen([UNTIED, "run", str(spec), "--results", str(results), "--quiet",
                             "--executor", executor, "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def check_folder(folder: Path, runs: int) -> None:
    files = record_files(folder)
    assert len(files) == runs, f"{len(files)} records for {runs} runs"
    for f in files:
        frame = pl.read_parquet(f)
        assert record_problem(frame, f.name) is None and frame["status"][0] == "ok"
    assert not list(folder.glob(".*.tmp")), "a partial record was left"
    claims = folder / CLAIMS_DIR
    assert not claims.exists() or not list(claims.iterdir()), "a claim was left"


def kill_and_resume(fast_spec, tmp_path, executor: str, delays: list[float]) -> None:
    spec, runs = write_spec(fast_spec, tmp_path)
    results = tmp_path / "r"
    for delay in delays:
        proc = start(spec, results, executor)
        time.sleep(delay)
        workers = children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 15
        while time.time() < deadline and alive(workers):
            time.sleep(0.3)
        assert not alive(workers), "a worker outlived its killed parent"
        for f in record_files(results / "crash"):          # whatever was written is whole
            assert record_problem(pl.read_parquet(f), f.name) is None
    done = start(spec, results, executor)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    check_folder(results / "crash", runs)


@pytest.mark.parametrize("executor", ["local", "processes"])
def test_sigkill_then_resume_loses_and_duplicates_nothing(fast_spec, tmp_path, executor):
    kill_and_resume(fast_spec, tmp_path, executor, [6.0])


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "processes"])
def test_sigkill_at_random_points(fast_spec, tmp_path, executor):
    rng = random.Random(f"kill-{executor}")
    delays = [rng.uniform(1.0, 12.0) for _ in range(5)]
    print(f"kill points ({executor}): {', '.join(f'{d:.1f} s' for d in delays)}")
    kill_and_resume(fast_spec, tmp_path, executor, delays)


def test_two_processes_on_one_results_folder(fast_spec, tmp_path):
    spec, runs = write_spec(fast_spec, tmp_path, epochs=8)
    results = tmp_path / "r"
    a, b = start(spec, results, "local"), start(spec, results, "local")
    outs = [p.communicate(timeout=600) for p in (a, b)]
    assert a.returncode == b.returncode == 0, outs
    trained = [int(err.split("done: ")[1].split(" runs trained")[0]) for _, err in outs]
    assert sum(trained) == runs, f"{trained}: some run was trained twice or not at all"
    check_folder(results / "crash", runs)
    df = pl.concat([pl.read_parquet(f) for f in record_files(results / "crash")],
                   how="diagonal_relaxed")
    assert df["run_id"].n_unique() == runs
