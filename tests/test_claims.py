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
