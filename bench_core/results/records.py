"""Run records: one Parquet file per run, ``<results>/<leaderboard>/<run_id>.parquet``.

Columns (one row):
``run_id, leaderboard, profile, entry, cell_json, seed_index, seed, status, error, traceback,
metric, value, spec_json, base_run_id, versions_json, p_<field.param>...,
m_<metric>..., curve_<metric> (list per epoch)..., curves_json, slices_json (the dataset's
function slices with the trained model's predictions, or null), wall_time_s, peak_rss_bytes,
peak_cuda_bytes, forward_passes, backward_passes, forward_samples, backward_samples, device,
cuda_device, cpu_model, cpus, threads (torch's intra-op threads), host, pid, group_size (the
runs executed as one unit), stack_size (the runs trained in one computation with this one, 1:
alone; absent from records before it existed), group_wall_time_s, warnings, torch_version, python_version, platform, git_commit, plugins_json,
untied_version, perturbation, cpu_capability, blas, cuda_version, cudnn_version, cpp_compiler
(absent from records before it existed), finished_at``.

A record says what the run was, never how a table shows it: ``profile`` and ``metric`` are those
it was recorded under, and the order of entries and cells, the baseline, the paper's values and
each metric's direction come from the spec's plan when a table is made
(:func:`bench_core.results.leaderboard.overlay_plan`; records from before this rule still carry
copies of them, which tables ignore).

``value`` and ``m_*`` are the final metrics of an ``ok`` run and the last logged (finite)
metrics of a ``diverged`` one; a ``failed`` run has none.

A record is written to a temporary file in the same folder and renamed into place, so a crash
or Ctrl-C never leaves a half-written record and a finished one is never lost. A results
folder also keeps an index (``.index/``, :func:`update_index`) so that large folders aggregate
fast.

A *records file* holds many records, one row each: :func:`write_records_file` compacts the runs
of a leaderboard (``untied export``) so that they can be committed beside its table, and every
reader here takes either a results folder or such a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

RECORD_SUFFIX = ".parquet"


def flatten_spec(spec: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"rule": {"name": "sgd", "lr": 0.1}}`` -> ``{"p_rule.name": "sgd", "p_rule.lr": 0.1}``.
    Lists become JSON strings so every ``p_`` column is a scalar; a field holding several
    components (a list of tables) becomes one column ``p_<field>`` of JSON."""
    out: dict[str, Any] = {}
    for comp, table in spec.items():
        if isinstance(table, list):          # several components of one field, in order
            out[f"p_{comp}"] = json.dumps(table, sort_keys=True)
            continue
        for key, value in table.items():
            if isinstance(value, (list, dict)):
                value = json.dumps(value, sort_keys=True)
            out[f"p_{comp}.{key}"] = value
    return out


def _process_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: once, at import
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def write_parquet_atomically(frame: pl.DataFrame, target: Path, prefix: str,
                             **options: Any) -> Path:
    """Write ``frame`` to a temporary file beside ``target``, then rename it into place: a
    reader sees the old file or the new one, never a half-written one. The file gets the
    permissions of any new file (``mkstemp`` alone would leave it readable by its owner only,
    which breaks a results folder shared by a group)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        frame.write_parquet(tmp, **options)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_record(folder: str | Path, row: dict[str, Any]) -> Path:
    """Write one run record atomically; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame([row], strict=False, infer_schema_length=None)
    return write_parquet_atomically(frame, folder / f"{row['run_id']}{RECORD_SUFFIX}",
                                    f".{row['run_id']}.")


def record_files(folder: str | Path) -> list[Path]:
    """The record files of a results folder (none if it is not a folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"*{RECORD_SUFFIX}") if not p.name.startswith("."))


# ---- the index: records compacted into a few Parquet parts ---------------------------------
INDEX_DIR = ".index"
PART_ROWS = 5000
_STAMP = ("_file", "_size", "_mtime_ns")


def _stat_records(folder: Path) -> dict[str, tuple[int, int]]:
    """Record file name -> (size, mtime_ns), from one directory scan."""
    out = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for entry in entries:
        if entry.name.endswith(RECORD_SUFFIX) and not entry.name.startswith("."):
            try:
                st = entry.stat()
            except OSError:
                continue
            out[entry.name] = (st.st_size, st.st_mtime_ns)
    return out


REQUIRED = {"run_id": pl.String, "status": pl.String}


def record_problem(frame: pl.DataFrame, name: str) -> str | None:
    """Why ``frame`` (read from file ``name``) is not a usable run record, or ``None``."""
    for col, dtype in REQUIRED.items():
        if col not in frame.columns:
            return f"not a run record (no '{col}' column)"
        if frame.schema[col] != dtype:
            return f"column '{col}' is {frame.schema[col]}, expected {dtype}"
    if frame.height != 1:
        return f"{frame.height} rows, a run record has 1"
    if frame["run_id"][0] != name.removesuffix(RECORD_SUFFIX):
        return f"holds run '{frame['run_id'][0]}', not the run its name says"
    bad = [c for c in frame.columns if c.startswith("m_") and not frame.schema[c].is_numeric()
           and frame.schema[c] != pl.Null]
    if bad:
        return f"metric column '{bad[0]}' is {frame.schema[bad[0]]}, not a number"
    return None


def _read_records(folder: Path, names: list[str], files: dict[str, tuple[int, int]],
                  problems: list[str] | None = None) -> pl.DataFrame | None:
    """The records ``names`` as one frame with their stamps. A file that cannot be read or is
    not a run record is left out (named in ``problems``); resume runs it again."""
    frames, kept = [], []
    for name in names:
        try:
            frame = pl.read_parquet(folder / name)
            problem = record_problem(frame, name)
        except Exception as exc:  # noqa: BLE001 - truncated, foreign, not Parquet at all
            problem = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
        if problem:
            if problems is not None:
                problems.append(f"{folder / name}: {problem}; skipped")
            continue
        frames.append(frame)
        kept.append(name)
    if not frames:
        return None
    return pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.Series("_file", kept), pl.Series("_size", [files[n][0] for n in kept]),
        pl.Series("_mtime_ns", [files[n][1] for n in kept]))


def update_index(folder: str | Path, problems: list[str] | None = None) -> list[Path]:
    """Bring ``<folder>/.index/`` up to date and return its parts.

    Reading 100,000 one-row files costs minutes; reading a few parts of thousands of rows,
    a second. Each part is a Parquet file of compacted records that remembers, per row, the
    record file's name, size and mtime: a part whose files all still match is kept, any other is
    dropped, and the records not in a kept part are read and written as new parts (atomically,
    temp file and rename). The per-run files stay the only source of truth; the index is a
    cache that any process may rebuild (two at once write equivalent parts; readers drop the
    duplicates by ``run_id``). Raises ``OSError`` where the folder cannot be written."""
    folder = Path(folder)
    files = _stat_records(folder)
    index = folder / INDEX_DIR
    parts, covered, rows = [], set(), {}
    for part in sorted(index.glob("part-*.parquet")) if index.is_dir() else []:
        try:
            stamps = pl.read_parquet(part, columns=list(_STAMP))
        except Exception:  # noqa: BLE001 - a damaged part is rebuilt
            part.unlink(missing_ok=True)
            continue
        names = stamps["_file"].to_list()
        if all(files.get(n) == (sz, mt) for n, sz, mt in stamps.iter_rows()):
            parts.append(part)
            rows[part] = stamps.height
            covered.update(names)
        else:
            part.unlink(missing_ok=True)
    new = sorted(n for n in files if n not in covered)
    for start in range(0, len(new), PART_ROWS):
        chunk = new[start:start + PART_ROWS]
        frame = _read_records(folder, chunk, files, problems)
        if frame is None:
            continue
        index.mkdir(exist_ok=True)
        parts.append(_write_part(index, frame))
        rows[parts[-1]] = frame.height
    small = [part for part in parts if rows[part] < PART_ROWS]
    if len(small) > COMPACT_PARTS:
        parts = [part for part in parts if part not in small] + _compact(index, small)
    return parts


COMPACT_PARTS = 8
"""More parts than this below :data:`PART_ROWS` rows are merged into full ones: a grid whose runs
are recorded one by one (each work unit indexes its folder) would otherwise leave one part per
run, and reading thousands of small parts is what the index is there to avoid."""


def _write_part(index: Path, frame: pl.DataFrame) -> Path:
    """One index part, named by the record files it covers (equal parts get equal names)."""
    key = hashlib.blake2b("\n".join(frame["_file"].to_list()).encode(),
                          digest_size=8).hexdigest()
    return write_parquet_atomically(frame, index / f"part-{key}.parquet", ".part.")


def _compact(index: Path, parts: list[Path]) -> list[Path]:
    """Merge ``parts`` into as few as :data:`PART_ROWS` allows (atomically written, then the
    old ones removed; a part another process removed first is simply not merged)."""
    frames = []
    for part in parts:
        try:
            frames.append(pl.read_parquet(part))
        except Exception:  # noqa: BLE001 - gone or damaged: its records are re-read next time
            continue
    if not frames:
        return []
    merged = (pl.concat(frames, how="diagonal_relaxed")
              .unique(subset=["_file"], keep="last", maintain_order=True).sort("_file"))
    fresh = [_write_part(index, merged.slice(start, PART_ROWS))
             for start in range(0, merged.height, PART_ROWS)]
    for part in parts:
        if part not in fresh:
            part.unlink(missing_ok=True)
    return fresh


_NAMED: set[str] = set()
"""Problems already named on stderr by this command (:func:`name_problems`)."""


def name_problems(problems: list[str]) -> None:
    """Print each problem (``path: reason; skipped``) once per command on stderr: every command
    that reads records names the files it skips, however often it scans a folder."""
    import sys

    for problem in problems:
        if problem not in _NAMED:
            _NAMED.add(problem)
            print(f"warning: {problem}", file=sys.stderr)


def forget_named() -> None:
    """Start a new command: name every problem again (``untied`` calls it per command)."""
    _NAMED.clear()


def _scan(folder: Path, problems: list[str] | None = None) -> pl.LazyFrame | None:
    """All records of ``folder``: from the index, or file by file where it cannot be written.
    Files that are not readable run records are appended to ``problems``; without a list they
    are named on stderr (:func:`name_problems`)."""
    found: list[str] = [] if problems is None else problems
    try:
        try:
            parts = update_index(folder, found)
        except OSError:
            files = _stat_records(folder)
            frame = _read_records(folder, sorted(files), files, found)
            return frame.lazy().drop(list(_STAMP)) if frame is not None else None
    finally:
        if problems is None:
            name_problems(found)
    if not parts:
        return None
    lf = pl.concat([pl.scan_parquet(p) for p in parts], how="diagonal_relaxed")
    return lf.unique(subset=["run_id"], keep="last", maintain_order=True).drop(list(_STAMP))


def is_records_file(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix == RECORD_SUFFIX


def recorded_run_ids(folder: str | Path, statuses: tuple[str, ...] | None = None, *,
                     quiet: bool = False) -> set[str]:
    """Run ids recorded in ``folder`` (only those with one of ``statuses`` if given); files that
    are not readable records are named on stderr unless ``quiet`` (a worker's check)."""
    if statuses is None:
        return {p.stem for p in record_files(folder)}
    lf = _scan(Path(folder), [] if quiet else None)
    if lf is None:
        return set()
    done = lf.filter(pl.col("status").is_in(list(statuses))).select("run_id").collect()
    return set(done["run_id"].to_list())


def final_records(records: pl.LazyFrame) -> pl.LazyFrame:
    """``records`` without the selection runs of a plan that selects a parameter (stage
    ``selection``, evaluated on a validation split, :mod:`bench_core.results.selection`):
    what a table of records read without their spec shows."""
    if "stage" not in records.collect_schema().names():
        return records
    return records.filter(pl.col("stage").fill_null("final") != "selection")


def read_records(source: str | Path, run_ids: set[str] | None = None, *, required: bool = True,
                 problems: list[str] | None = None) -> pl.LazyFrame | None:
    """The one way to read records: a lazy frame over the records in ``source``, a results
    folder (read through its index, :func:`update_index`) or a records file, optionally only
    ``run_ids``. Records of different components carry different ``p_``/``m_`` columns; they
    are aligned diagonally. Files that are not readable run records are skipped and appended to
    ``problems``, or, without a list, named on stderr (:func:`name_problems`). No record at all
    is a one-line error, or None when not ``required``. (Which source a plan's records come
    from, a results folder, a records file or the committed records, is
    :func:`bench_core.results.export.plan_records`.)"""
    lf = _read(source, run_ids, problems)
    if lf is None and required:
        from bench_core.errors import UntiedError

        what = "the runs asked for" if run_ids is not None else "any run"
        raise UntiedError(f"no records of {what} in {source}: run `untied run` first")
    return lf


def _read(source: str | Path, run_ids: set[str] | None,
          problems: list[str] | None) -> pl.LazyFrame | None:
    if is_records_file(source):
        lf = pl.scan_parquet(source)
        if run_ids is not None:
            lf = lf.filter(pl.col("run_id").is_in(sorted(run_ids)))
        try:
            return lf if lf.select(pl.len()).collect().item() else None
        except Exception as exc:  # noqa: BLE001 - truncated, foreign, not Parquet at all
            from bench_core.errors import UntiedError

            raise UntiedError(f"{source}: not a readable records file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]})") from None
    lf = _scan(Path(source), problems)
    if lf is None:
        return None
    if run_ids is not None:
        lf = lf.filter(pl.col("run_id").is_in(list(run_ids)))
        if lf.select(pl.len()).collect().item() == 0:
            return None
    return lf


def write_records_file(records: pl.LazyFrame, target: str | Path,
                       order: list[str] | None = None) -> int:
    """Compact ``records`` into one Parquet file (rows in ``order`` of run ids when given),
    written atomically; return the number of rows."""
    frame = records.collect()
    if order is not None:
        rank = {run_id: i for i, run_id in enumerate(order)}
        frame = frame.with_columns(pl.col("run_id").replace_strict(
            rank, default=len(rank), return_dtype=pl.Int64).alias("_order")
        ).sort("_order", "run_id").drop("_order")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomically(frame, target, f".{target.name}.", compression="zstd",
                             compression_level=19)
    return frame.height
