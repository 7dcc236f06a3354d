"""The results folder's index (.index/ parts of compacted records): built on first read, kept
while the record files are unchanged, rebuilt for changed, new or deleted files, tolerant of a
damaged part, a duplicate part, an unreadable record and a read-only folder."""

from __future__ import annotations

import shutil

from bench_core.records import (INDEX_DIR, recorded_run_ids, record_files, scan_records,
                                update_index, write_record)


def write(folder, i, value=0.5, status="ok"):
    return write_record(folder, {"run_id": f"r{i:03d}", "status": status, "m_x": value,
                                 "entry": "e", "extra": f"only in {i}" if i % 2 else None})


def values(folder) -> dict[str, float]:
    df = scan_records(folder).collect()
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
    import bench_core.records as records

    write(tmp_path, 0, value=1.0)

    def read_only(folder):
        raise PermissionError(f"{folder}: read-only file system")

    monkeypatch.setattr(records, "update_index", read_only)
    assert values(tmp_path) == {"r000": 1.0}
    assert not (tmp_path / INDEX_DIR).exists()


def test_scan_filters_run_ids(tmp_path):
    for i in range(3):
        write(tmp_path, i)
    assert scan_records(tmp_path, {"r001"}).collect()["run_id"].to_list() == ["r001"]
    assert scan_records(tmp_path, {"nope"}) is None
    assert len(record_files(tmp_path)) == 3
