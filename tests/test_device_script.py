"""benchmarks/device.py: every built-in runs on the CPU with no host synchronisation inside its
training step (the same command with --device cuda is the GPU check), and its sync counter
catches what it should."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

from bench_core.interfaces import cpu_only_host_read, in_cpu_only_host_read

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sync_counter_counts_blocking_calls_of_plugin_code_only():
    device = load_script()
    x = torch.ones(4, requires_grad=True)
    counter = device.SyncCounter(torch.device("cpu"))
    with counter:
        y = (x * 2).sum()
        y.item()                      # 1
        float(y)                      # 2
        bool(y > 0)                   # 3
        x[x > 0]                      # 4: a boolean mask has a data-dependent shape
        x.detach().tolist()           # 5
        x.to("cpu")                   # on the CPU a no-op: not a sync
        opt = torch.optim.Adam([x])   # torch's own step counter lives on the host: not counted
        y.backward()
        opt.step()
        counter.paused += 1
        y.item()                      # paused (the runner's log_epoch): not counted
        counter.paused -= 1
        with cpu_only_host_read():    # a plugin's CPU-only branch: not counted
            bool(y > 0)
    assert counter.count == 5
    with counter:
        bool(y > 0)                   # outside the marker again: counted
    assert counter.count == 6 and not in_cpu_only_host_read()


def test_every_builtin_runs_on_the_cpu_without_syncs_in_its_step(monkeypatch, capsys):
    if not os.environ.get("UNTIED_DATA") and SHARED_DATA.is_dir():
        monkeypatch.setenv("UNTIED_DATA", str(SHARED_DATA))
    device = load_script()
    status = device.main(["--device", "cpu", "--samples", "8", "--factor", "2"])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert status == 0, out
    assert "failed=0" in last and "uncovered=0" in last and "syncs_per_step_max=0" in last, out
    for line in out.splitlines():
        if line.startswith("  ") and "NOT RUN" in line:
            pytest.fail(line)
