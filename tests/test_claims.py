"""Claims on a results folder (``bench_core.execution.safeguards``): a claimed run's leftover
temporaries from a killed writer are removed, nobody else's."""

from __future__ import annotations

from bench_core.execution.safeguards import claim, release


def test_claiming_a_run_removes_its_killed_writers_partial_record(tmp_path):
    ours = tmp_path / ".abc123.x7q.tmp"          # what write_record's mkstemp leaves on a kill
    other = tmp_path / ".def456.k2p.tmp"         # another run's: possibly being written now
    record = tmp_path / "abc123.parquet"
    for f in (ours, other, record):
        f.write_bytes(b"partial")
    path = claim(tmp_path, "abc123")
    assert path is not None
    assert not ours.exists()
    assert other.exists() and record.exists()
    release([path])


def test_a_held_claim_leaves_the_temporaries_alone(tmp_path):
    path = claim(tmp_path, "abc123")              # held by this live process
    partial = tmp_path / ".abc123.x7q.tmp"
    partial.write_bytes(b"being written")
    assert claim(tmp_path, "abc123") is None
    assert partial.exists()
    release([path])


def dead_holder() -> str:
    """A claim's text naming this host and the PID of a process that has exited."""
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return f"{socket.gethostname()} {int(gone.stdout)}\n"


def test_a_dead_holders_claim_is_swept_and_a_live_ones_kept(tmp_path):
    """A process killed after writing a record but before releasing its claim leaves a claim
    nobody would claim again (the run is recorded); ``untied run`` sweeps such claims."""
    from bench_core.execution.safeguards import CLAIMS_DIR, sweep_stale_claims

    dead = tmp_path / CLAIMS_DIR / "recorded1"
    live = claim(tmp_path, "running2")                # this process: alive
    dead.write_text(dead_holder())
    assert sweep_stale_claims(tmp_path) == 1
    assert not dead.exists() and live.exists()
    release([live])
    assert sweep_stale_claims(tmp_path / "nothing-here") == 0


def test_untied_run_sweeps_the_claims_a_killed_run_left(tmp_path, untied_host):
    from bench_core.execution.runner import run_plan
    from bench_core.execution.safeguards import CLAIMS_DIR
    from bench_core.specs.model import parse_spec
    from bench_core.specs.plan import expand

    raw = {"title": "c", "seeds": 1, "defaults": {
        "dataset": {"name": "digits", "train_subset": 100}, "model": {"name": "mlp",
                                                                     "hidden": [4]},
        "activation": {"name": "tanh"}, "rule": {"name": "sgd", "lr": 0.1},
        "trainer": {"name": "backprop", "epochs": 1, "batch_size": 32}},
        "entries": [{"label": "a"}]}
    name, spec = parse_spec(raw, stem="c")
    plan = expand(untied_host, name, spec)
    run_plan(plan, tmp_path, host=untied_host, progress=False)
    left = tmp_path / "c" / CLAIMS_DIR / plan.tasks[0].run_id
    left.write_text(dead_holder())
    summary = run_plan(plan, tmp_path, host=untied_host, progress=False)   # nothing to run
    assert summary.ran == 0 and not left.exists()
