"""All records of a leaderboard as one table, and where a leaderboard's records come from.

Records of different components carry different ``p_<component>.<param>`` and ``m_<metric>``
columns, so ``polars.read_parquet("results/NAME/*.parquet")`` fails with a ``SchemaError``.
:func:`read_records` aligns them (a column missing from a record is null there; numeric
columns take their common supertype) and is what ``untied export`` writes.

The records of ``untied stability`` (perturbed twins of a plan's runs) are found the same way
by :func:`plan_perturbed`: ``<results>/<name>/perturbed/``, else the committed
``leaderboards/<name>/<profile>.perturbed.parquet``.

Where a spec's records are read from (:func:`plan_records`):

1. ``<results>/<name>/`` (what ``untied run`` writes), if it holds any run of the plan;
2. else the committed compacted records ``leaderboards/<name>/<profile>.parquet`` next to the
   spec (for a built-in leaderboard: inside the installed package), so that the tables, plots
   and reports of a committed leaderboard can be regenerated from a fresh clone.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from bench_core.errors import UntiedError
from bench_core.results.records import read_records

EXPORT_FORMATS = ("parquet", "csv")
SPEC_FILE = "spec.json"
"""Written by the runner into ``<results>/<name>/``: the leaderboard spec the runs came from, so
``untied leaderboard DIR`` shows the same title, notes and columns as ``untied leaderboard SPEC``."""


def spec_folder(spec_ref: str | Path | None) -> Any:
    """The folder a spec lives in (a path, or the installed package's leaderboards)."""
    if spec_ref is None:
        return None
    path = Path(spec_ref)
    if path.is_file():
        return path.resolve().parent
    from bench_core.specs.model import builtin_leaderboards

    if str(spec_ref) in builtin_leaderboards():
        return resources.files("bench_core.leaderboards")
    return None


def committed_records(spec_ref: str | Path | None, name: str, profile: str) -> Any:
    """``leaderboards/<name>/<profile>.parquet`` beside the spec, if it exists."""
    folder = spec_folder(spec_ref)
    if folder is None:
        return None
    path = folder / name / f"{profile}.parquet"
    return path if path.is_file() else None


def plan_records(plan: Any, results_dir: str | Path, spec_ref: str | Path | None = None,
                 *, records_file: str | Path | None = None, quiet: bool = False
                 ) -> pl.LazyFrame:
    """The records of ``plan``'s runs: from ``records_file`` when given (``--records``), else
    from ``results_dir``, else from the committed compacted records of the spec (module
    docstring). Raises a one-line error when none has any. Every command that shows a plan's
    records reads them here, through :func:`bench_core.results.records.read_records`.

    A plan that selects a parameter is resolved here first (:mod:`bench_core.results.selection`:
    its final runs are those of the values its selection records chose), and its selection
    records come with the final ones (tables show only the final runs; exports keep both)."""
    if getattr(plan, "selection", None) is not None:
        from bench_core.results.selection import resolve

        sel_ids = {t.run_id for t in plan.selection.tasks}
        resolve(plan, _first_source(plan, sel_ids, results_dir, spec_ref, records_file,
                                    quiet=True, required=False) if sel_ids else None)
    ids = {t.run_id for t in getattr(plan, "all_tasks", plan.tasks)}
    found = _first_source(plan, ids, results_dir, spec_ref, records_file, quiet=quiet)
    if found is not None:
        return found
    committed = committed_records(spec_ref, plan.name, plan.profile)
    where = f"{results_dir}" + (f" or {committed}" if committed is not None else "")
    raise UntiedError(f"no records of the runs of {plan.name} [{plan.profile}] in {where}: "
                      f"run `untied run` first")


def _first_source(plan: Any, ids: set[str], results_dir: str | Path,
                  spec_ref: str | Path | None, records_file: str | Path | None, *,
                  quiet: bool, required: bool = True) -> pl.LazyFrame | None:
    """The records of ``ids`` from the first source of :func:`plan_records` that has any."""
    if records_file is not None:
        from bench_core.results.records import is_records_file

        if not is_records_file(records_file):
            raise UntiedError(f"--records {records_file}: not a records file (.parquet), as "
                              f"`untied export` writes")
        return read_records(records_file, ids, required=required)
    lf = read_records(results_dir, ids, required=False)
    if lf is not None:
        return lf
    committed = committed_records(spec_ref, plan.name, plan.profile)
    if committed is not None:
        with resources.as_file(committed) as path:
            frame = pl.read_parquet(path).filter(pl.col("run_id").is_in(list(ids)))
        if frame.height:
            if not quiet:
                print(f"note: no records in {results_dir}; reading the committed records "
                      f"{committed}", file=sys.stderr)
            return frame.lazy()
    return None


def plan_perturbed(plan: Any, results_dir: str | Path, spec_ref: str | Path | None = None
                   ) -> pl.LazyFrame | None:
    """The records of ``untied stability`` for ``plan``'s runs (:mod:`bench_core.results.stability`):
    ``<results_dir>/perturbed/``, else the committed ``leaderboards/<name>/<profile>.perturbed.
    parquet`` beside the spec; None when neither has any."""
    from bench_core.results.stability import PERTURBED_DIR

    ids = {t.run_id for t in plan.tasks}
    lf = read_records(Path(results_dir) / PERTURBED_DIR, ids, required=False)
    if lf is not None:
        return lf
    folder = spec_folder(spec_ref)
    if folder is None:
        return None
    path = folder / plan.name / f"{plan.profile}.{PERTURBED_DIR}.parquet"
    if not path.is_file():
        return None
    with resources.as_file(path) as real:
        frame = pl.read_parquet(real).filter(pl.col("run_id").is_in(list(ids)))
    return frame.lazy() if frame.height else None


def export_table(records: pl.DataFrame, fmt: str) -> bytes:
    """``records`` as Parquet or CSV bytes. CSV has no list type: per-epoch curves
    (``curve_*``) become JSON arrays in text cells."""
    if fmt not in EXPORT_FORMATS:
        raise UntiedError(f"--format {fmt}: expected one of {', '.join(EXPORT_FORMATS)}")
    import io

    buf = io.BytesIO()
    if fmt == "parquet":
        records.write_parquet(buf)
        return buf.getvalue()
    nested = [c for c, t in records.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    flat = records.with_columns(
        pl.col(c).map_elements(lambda v: json.dumps(v.to_list() if hasattr(v, "to_list") else v),
                               return_dtype=pl.Utf8) for c in nested)
    flat.write_csv(buf)
    return buf.getvalue()


def write_spec_file(folder: str | Path, plan: Any) -> Path:
    """Store the spec of ``plan`` in its results folder (see :data:`SPEC_FILE`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SPEC_FILE
    payload = {"name": plan.name, "spec": plan.spec.model_dump(mode="json")}
    # a temporary name of this process's own: two processes starting on one folder at once
    # would otherwise rename each other's file away
    tmp = folder / f".{SPEC_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")  # keeps grid order
    tmp.replace(path)
    return path


def read_spec_file(folder: str | Path) -> tuple[str, Any] | None:
    """``(name, LeaderboardSpec)`` stored in a results folder, or None."""
    from bench_core.errors import SpecError
    from bench_core.specs.model import parse_spec

    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        name, spec = parse_spec(payload["spec"], source=str(path), stem=payload["name"])
    except (OSError, ValueError, KeyError, SpecError) as exc:
        print(f"warning: ignoring {path}: {exc}", file=sys.stderr)
        return None
    return name, spec
