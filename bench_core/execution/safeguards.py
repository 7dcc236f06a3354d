"""What keeps one run from hurting the others: global torch state restored after each run, a
time limit per run, and claims so that two processes on one results folder never train the
same run at once.

*Torch state.* A plugin that changes the default dtype, grad mode, thread count, deterministic
algorithms, anomaly detection or the default device would otherwise change every later run in
the process. :func:`torch_state_restored` snapshots them before a run and puts them back after,
reporting what changed (the record's ``warnings``).

*Time limit.* ``untied run --run-timeout S``: :func:`time_limit` interrupts a run's training
(not its data loading, where an interrupted import would leave a module half-initialised) that
takes longer (``SIGALRM``; in a process's main thread, which is where the local and processes
executors run; elsewhere, e.g. in a dask worker thread, there is no limit and dask's own
timeouts apply). The run is recorded with status ``timeout`` and the grid goes on.

*Claims.* Before a run starts, its worker creates ``<results>/.claims/<run_id>`` exclusively
(``O_EXCL``) and refreshes it every :data:`HEARTBEAT_S` seconds while training. Another process
that finds a fresh claim leaves the run alone; a claim whose holder is gone (same host and the
process no longer alive, or not refreshed for :data:`STALE_S` seconds on any host) is taken
over. A run is also skipped when its record appeared meanwhile. The record file is the result;
the claim only avoids doing the work twice. A record is written to a temporary
``.<run_id>.*.tmp`` beside it and renamed into place; a process killed between the two leaves
that temporary behind, and whoever claims the run next removes it (holding the claim, no live
process can be writing it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import torch

CLAIMS_DIR = ".claims"
HEARTBEAT_S = 30.0
STALE_S = 120.0


class RunTimeout(BaseException):
    """A run took longer than its time limit. A ``BaseException``, so that a plugin's own
    ``except Exception`` cannot swallow it; the runner records the run as ``timeout``."""


# ---- global torch state --------------------------------------------------------------------
def _torch_state() -> dict[str, object]:
    state = {
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "anomaly detection": torch.is_anomaly_enabled(),
    }
    if hasattr(torch, "get_default_device"):
        state["default device"] = str(torch.get_default_device())
    return state


def _restore(key: str, value: object) -> None:
    if key == "default dtype":
        torch.set_default_dtype(value)  # type: ignore[arg-type]
    elif key == "grad mode":
        torch.set_grad_enabled(bool(value))
    elif key == "threads":
        torch.set_num_threads(int(value))  # type: ignore[arg-type]
    elif key == "deterministic algorithms":
        torch.use_deterministic_algorithms(bool(value))
    elif key == "anomaly detection":
        torch.set_anomaly_enabled(bool(value))
    elif key == "default device":
        torch.set_default_device(str(value))


@contextlib.contextmanager
def torch_state_restored() -> Iterator[list[str]]:
    """Yield a list that receives, after the block, one line per global torch setting the block
    changed; each is put back."""
    before = _torch_state()
    changes: list[str] = []
    try:
        yield changes
    finally:
        after = _torch_state()
        for key, value in before.items():
            if after.get(key) != value:
                changes.append(f"{key} {value} -> {after.get(key)}")
                _restore(key, value)


# ---- time limit ----------------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`RunTimeout` in the block after ``seconds`` (no limit where signals cannot
    be used: not the main thread, or no ``setitimer``)."""
    if (not seconds or threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer")):
        yield
        return

    def on_alarm(signum, frame):
        raise RunTimeout(f"the run took longer than {seconds:g} s (--run-timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- claims --------------------------------------------------------------------------------
def _holder() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(path: Path) -> bool:
    try:
        text = path.read_text().split()
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # vanished or being written: not ours to take
    if age > STALE_S:
        return True
    if len(text) >= 2 and text[0] == socket.gethostname() and text[1].isdigit():
        return not _alive(int(text[1]))
    return False


def claim(results_dir: str | Path, run_id: str) -> Path | None:
    """Claim ``run_id`` for this process: the claim file, or ``None`` if a live process holds
    it (module docstring)."""
    folder = Path(results_dir) / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / run_id
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(path):
                return None
            path.unlink(missing_ok=True)  # take over a dead holder's claim, then race fairly
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_holder() + "\n")
        for partial in Path(results_dir).glob(f".{run_id}.*.tmp"):  # a killed writer's
            partial.unlink(missing_ok=True)
        return path
    return None


def sweep_stale_claims(results_dir: str | Path) -> int:
    """Remove the claims of ``results_dir`` whose holder is gone (:func:`_stale`); return how
    many. A process killed after writing a run's record but before releasing its claim leaves a
    claim that no later process would touch (the run is recorded, so nobody claims it again);
    ``untied run`` sweeps them when it starts."""
    folder = Path(results_dir) / CLAIMS_DIR
    swept = 0
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and _stale(path):
            path.unlink(missing_ok=True)
            swept += 1
    return swept


def release(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def heartbeat(paths: list[Path]) -> Iterator[None]:
    """Refresh the claims' mtimes every :data:`HEARTBEAT_S` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            for path in paths:
                with contextlib.suppress(OSError):
                    os.utime(path)

    thread = threading.Thread(target=beat, name="untied-claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
