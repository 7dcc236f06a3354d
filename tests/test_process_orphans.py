"""`--executor processes`: killing the parent with SIGKILL leaves no worker process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def test_sigkill_of_the_parent_leaves_no_orphan_workers(fast_spec, tmp_path):
    fast_spec["defaults"]["trainer"]["epochs"] = 200       # long enough to be killed mid-grid
    spec = tmp_path / "slow.toml"
    spec.write_bytes(tomli_w.dumps(fast_spec).encode())
    untied = Path(sys.executable).parent / "untied"
    proc = subprocess.Popen([str(untied), "run", str(spec), "--executor", "processes",
                             "--jobs", "2", "--results", str(tmp_path / "r"), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.5)
        workers = children_of(proc.pid)
    assert len(workers) >= 2, "the pool never started"
    time.sleep(2.0)                                       # the workers are training now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and alive(workers):
        time.sleep(0.5)
    left = alive(workers)
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in left}
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"orphan workers still alive after the parent was killed: {names}"
