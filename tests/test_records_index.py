"""The results folder's index (.index/ parts of compacted records): built on first read, kept
while the record files are unchanged, rebuilt for changed, new or deleted files, tolerant of a
damaged part, a duplicate part, an unreadable record and a read-only folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from bench_core.results.records import (
    INDEX_DIR,
    read_records,
    record_files,
    recorded_run_ids,
    update_index,
    write_record,
)


def write(folder, i, value=0.5, status="ok"):
    return write_record(folder, {"run_id": f"r{i:03d}", "status": status, "m_x": value,
                                 "entry": "e", "extra": f"only in {i}" if i % 2 else None})


def values(folder) -> dict[str, float]:
    df = read_records(folder, required=False).collect()
    return dict(zip(df["run_id"], df["m_x"]))


def test_index_is_built_once_and_follows_changes(tmp_path):
    for i in range(5):
        write(tmp_path, i, value=i)
    assert values(tmp_path) == {f"r{i:03d}": float(i) for i in range(5)}
    parts = sorted((tmp_path / INDEX_DIR).glob("part-*.parquet"))
    assert len(parts) == 1
    stamp = parts[0].stat().st_mtime_ns
    assert update_index(tmp_path) == parts and parts[0].stat().st_mtime_ns == stamp  # no work
    write(tmp_path, 2, value=20.0)                   # a rerun overwrites its record
    (tmp_path / "r004.parquet").unlink()             # a record deleted
    write(tmp_path, 7, value=7.0)                    # a new one
    assert values(tmp_path) == {"r000": 0.0, "r001": 1.0, "r002": 20.0, "r003": 3.0,
                                "r007": 7.0}


def test_index_survives_damage_duplicates_and_bad_records(tmp_path):
    for i in range(4):
        write(tmp_path, i, value=i)
    update_index(tmp_path)
    part = next((tmp_path / INDEX_DIR).glob("part-*.parquet"))
    shutil.copy(part, part.with_name("part-copy.parquet"))     # another process's equal part
    assert len(values(tmp_path)) == 4
    part.write_bytes(b"not parquet")                             # damaged
    (tmp_path / "r009.parquet").write_bytes(b"truncated")       # an unreadable record
    got = values(tmp_path)
    assert got == {f"r{i:03d}": float(i) for i in range(4)}
    assert recorded_run_ids(tmp_path, ("ok",)) == {f"r{i:03d}" for i in range(4)}


def test_resume_reads_statuses_through_the_index(tmp_path):
    write(tmp_path, 0)
    write(tmp_path, 1, status="failed")
    write(tmp_path, 2, status="diverged")
    assert recorded_run_ids(tmp_path, ("ok", "diverged")) == {"r000", "r002"}
    assert recorded_run_ids(tmp_path) == {"r000", "r001", "r002"}


def test_read_only_folder_is_read_file_by_file(tmp_path, monkeypatch):
    import bench_core.results.records as records

    write(tmp_path, 0, value=1.0)

    def read_only(folder, problems=None):
        raise PermissionError(f"{folder}: read-only file system")

    monkeypatch.setattr(records, "update_index", read_only)
    assert values(tmp_path) == {"r000": 1.0}
    assert not (tmp_path / INDEX_DIR).exists()


def test_scan_filters_run_ids(tmp_path):
    for i in range(3):
        write(tmp_path, i)
    assert read_records(tmp_path, {"r001"}, required=False).collect()["run_id"].to_list() == ["r001"]
    assert read_records(tmp_path, {"nope"}, required=False) is None
    assert len(record_files(tmp_path)) == 3


def test_foreign_truncated_and_mismatched_files_are_named_and_skipped(tmp_path):
    write(tmp_path, 0, value=1.0)
    write(tmp_path, 1, value=2.0)
    good = (tmp_path / "r001.parquet").read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(good[: len(good) // 2])
    pl.DataFrame({"a": [1, 2]}).write_parquet(tmp_path / "foreign.parquet")
    pl.DataFrame({"run_id": ["wrong"], "status": ["ok"]}).write_parquet(tmp_path / "r005.parquet")
    pl.DataFrame({"run_id": ["r006"], "status": ["ok"], "m_x": ["high"]}).write_parquet(
        tmp_path / "r006.parquet")
    problems: list[str] = []
    df = read_records(tmp_path, problems=problems, required=False).collect()
    assert sorted(df["run_id"]) == ["r000", "r001"]
    text = "\n".join(problems)
    assert "trunc.parquet: unreadable" in text
    assert "foreign.parquet: not a run record (no 'run_id' column)" in text
    assert "r005.parquet: holds run 'wrong'" in text
    assert "r006.parquet: metric column 'm_x' is String" in text


def test_untied_leaderboard_names_a_bad_file_and_aggregates_the_rest(tmp_path, capsys):
    from bench_core.cli import main

    for i, v in enumerate([0.5, 0.7]):
        write_record(tmp_path, {"run_id": f"r{i:03d}", "leaderboard": "t", "profile": "default",
                                "entry": "e", "is_baseline": True, "cell_json": "{}",
                                "status": "ok", "metric": "acc", "higher_is_better": True,
                                "value": v, "reference": None, "reference_std": None,
                                "wall_time_s": 1.0, "m_acc": v})
    (tmp_path / "r009.parquet").write_bytes(b"PAR1 truncated")
    assert main(["leaderboard", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "r009.parquet: unreadable" in err and ",0.6" in out.replace("0.6000000000000001", "0.6")


@pytest.mark.slow
def test_aggregating_100k_records_stays_under_1_gib(tmp_path):
    """Issue: a leaderboard of 100,000 records aggregated with peak memory under 1 GiB. Writes
    the records (several minutes), then measures a fresh process that aggregates them."""
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import scale

    scale.make_records(tmp_path / "r", 100_000)
    out = subprocess.run([sys.executable, "-c", scale.AGGREGATE, str(tmp_path / "r")],
                         check=True, capture_output=True, text=True).stdout.split()
    seconds, peak = float(out[0]), int(out[1])
    print(f"100,000 records: aggregated in {seconds:.2f} s, peak {peak / 2**20:.0f} MiB")
    assert peak < 2**30


def test_records_get_the_permissions_of_any_new_file(tmp_path):
    import os
    import stat

    from bench_core.results.records import _UMASK, write_record
    path = write_record(tmp_path, {"run_id": "p", "status": "ok"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_UMASK


def test_a_grid_recorded_run_by_run_leaves_a_few_parts_and_aggregates_as_fast(tmp_path):
    """Every work unit of a grid indexes its folder after its record is written (resume asks
    for the recorded runs): 200 runs one by one must not leave 200 parts."""

    from bench_core.results.records import COMPACT_PARTS

    folder = tmp_path / "grid"
    for i in range(200):
        write(folder, i, value=float(i))
        update_index(folder)
        assert len(list((folder / INDEX_DIR).glob("part-*.parquet"))) <= COMPACT_PARTS
    assert values(folder) == {f"r{i:03d}": float(i) for i in range(200)}

    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh, ignore=shutil.ignore_patterns(INDEX_DIR))
    update_index(fresh)
    # it aggregates as fast as a fresh index because it reads about as little: a handful of
    # parts holding the same rows (a timing here would only measure the shared machine)
    kept = sorted((folder / INDEX_DIR).glob("part-*.parquet"))
    assert len(kept) <= COMPACT_PARTS
    assert sum(pl.read_parquet(p).height for p in kept) == 200
    columns = ["run_id", "status", "m_x"]
    assert read_records(folder, required=False).select(columns).collect().sort("run_id").equals(
        read_records(fresh, required=False).select(columns).collect().sort("run_id"))


def test_full_parts_are_never_merged_again(tmp_path, monkeypatch):
    """Compaction merges small parts only: a large folder indexed into many full parts is read
    as it is, call after call (merging full parts would rewrite the whole index every time)."""
    import bench_core.results.records as records

    monkeypatch.setattr(records, "PART_ROWS", 10)
    for i in range(200):
        write(tmp_path, i)
    first = update_index(tmp_path)
    assert len(first) == 20
    stamps = {p: p.stat().st_mtime_ns for p in first}
    again = update_index(tmp_path)
    assert sorted(again) == sorted(first)
    assert {p: p.stat().st_mtime_ns for p in again} == stamps
