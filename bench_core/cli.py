"""The ``untied`` command line.

Every error a user can cause (bad spec, unknown plugin or component, missing data, no CUDA)
prints one line ``error: ...`` and exits with status 2; runs that fail are recorded and make
``untied run`` exit with status 1; Ctrl-C exits with 130 and keeps every finished run.
Set ``UNTIED_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench_core import __version__
from bench_core.errors import UntiedError

DEFAULT_RESULTS = "results"
DEFAULT_THREADS = 1  # bench_core.execution.runner.DEFAULT_THREADS (kept here so --help imports no torch)


def _host():
    from bench_core.plugins import get_host

    host = get_host()
    for info in host.failures():
        print(f"warning: plugin '{info.name}' not loaded: {info.error}", file=sys.stderr)
    return host


def _emit(text: str | bytes, output: str | None) -> None:
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    elif isinstance(text, bytes):
        raise UntiedError("binary output (parquet) needs --output FILE")
    else:
        sys.stdout.write(text)


# ---- commands --------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    host = _host()
    rows = [
        {"plugin": p.name, "distribution": p.distribution, "version": p.version,
         "builtin": p.builtin, "hooks": p.hooks, "error": p.error}
        for p in sorted(host.plugins.values(), key=lambda p: (not p.builtin, p.name))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [[r["plugin"], r["distribution"] or "", r["version"] or "",
              ", ".join(h.removeprefix("register_") for h in r["hooks"]),
              "built-in" if r["builtin"] else ("FAILED: " + r["error"] if r["error"] else "")]
             for r in rows]
    print(tabulate(table, headers=["plugin", "distribution", "version", "hooks", ""]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bench_core.hookspecs import FAMILIES

    host = _host()
    families = [args.family] if args.family else list(FAMILIES)
    out: dict[str, list[dict[str, Any]]] = {}
    for fam in families:
        reg = host.family(fam)
        out[fam] = [{"name": c.name, "plugin": c.plugin, "description": c.description,
                     "parameters": c.parameters()} for c in sorted(reg.values(), key=lambda c: c.name)]
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    for fam, comps in out.items():
        print(f"{fam}:")
        for c in comps:
            print(f"  {c['name']:<18} {c['description']}  [{c['plugin']}]")
            for p in c["parameters"]:
                default = "required" if p["required"] else f"= {json.dumps(p['default'])}"
                desc = f"  {p['description']}" if p["description"] else ""
                print(f"      {p['name']}: {p['type']} {default}{desc}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from bench_core.specs.model import json_schema

    print(json.dumps(json_schema(_host()), indent=2))
    return 0


def _plan(args: argparse.Namespace, results: str | None = None, device: str = "cpu"):
    from bench_core.specs.model import load_spec
    from bench_core.specs.plan import MAX_PLAN_RUNS, expand

    host = _host()
    name, spec = load_spec(args.spec)
    plan = expand(host, name, spec, profile=getattr(args, "profile", None),
                  seeds=getattr(args, "seeds", None), results_dir=results or "", device=device,
                  max_runs=None if getattr(args, "yes", False) else MAX_PLAN_RUNS)
    plan.spec_ref = str(args.spec)
    return host, plan


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every profile (or the one asked for); check the data of the profile a plain
    ``untied run`` would use (or the one asked for): missing data there is an error, missing
    data of another profile a note."""
    from bench_core.errors import DataError
    from bench_core.execution.runner import check_data
    from bench_core.specs.model import load_spec
    from bench_core.specs.plan import MAX_PLAN_RUNS, expand

    host = _host()
    name, spec = load_spec(args.spec)
    base = [] if spec.default_profile else [None]  # None = the spec without a profile
    profiles = [args.profile] if args.profile else [*base, *spec.profiles]
    runs_by_default = args.profile or spec.default_profile
    for prof in profiles:
        plan = expand(host, name, spec, profile=prof,
                      max_runs=None if args.yes else MAX_PLAN_RUNS)
        n_entries = len({t.entry for t in plan.tasks})
        cells = math.prod(len(values) for values in plan.grid.values())
        pairs = len(plan.tasks) // len(plan.seeds)
        prof = spec.profiles.get(plan.profile)
        why = (" with a paper value" if prof is not None and prof.referenced_only else
               " of the profile's pairs" if prof is not None and prof.pairs is not None else "")
        shape = (f"{n_entries} entries x {cells} grid cells" if pairs == n_entries * cells else
                 f"{pairs} (entry, grid cell) pairs{why}")
        selecting = ""
        if plan.selection is not None:
            sel = plan.selection.select
            pairs_ = len(plan.selection.builders)
            shape = f"{pairs_} (entry, grid cell) pairs" if pairs_ != n_entries * cells else shape
            chosen = sorted(set(plan.selection.parameters.values())) or [sel.parameter]
            selecting = (f", after {len(plan.selection.tasks)} selection runs choosing "
                         f"{' or '.join(chosen)} per pair")
            n_final = pairs_ * len(plan.seeds)
        else:
            n_final = len(plan.tasks)
        print(f"ok: {name} [{plan.profile}]: {shape} x {len(plan.seeds)} seeds = "
              f"{n_final} runs{selecting}")
        if args.no_data_check:
            continue
        try:
            check_data(host, plan.all_tasks)
        except DataError as exc:
            if prof == runs_by_default:
                raise
            print(f"note: profile '{plan.profile}' needs data not found here: {exc}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench_core.execution.environment import resolve_device
    from bench_core.execution.runner import (
        check_data,
        form_groups,
        pending_tasks,
        run_plan,
    )

    device = resolve_device(args.device)
    host, plan = _plan(args, device=device)
    results_dir = Path(args.results) / plan.name
    if args.threads is not None and args.threads < 1:
        raise UntiedError(f"--threads must be >= 1 (got {args.threads})")
    if args.group_size is not None and args.group_size < 1:
        raise UntiedError(f"--group-size must be >= 1 (got {args.group_size})")
    if args.run_timeout is not None and not args.run_timeout > 0:
        raise UntiedError(f"--run-timeout must be a positive number of seconds "
                          f"(got {args.run_timeout})")
    if args.dry_run:
        if plan.selection is not None:
            from dataclasses import replace

            from bench_core.results.records import read_records
            from bench_core.results.selection import resolve

            sel_plan = replace(plan, tasks=plan.selection.tasks, selection=None)
            todo, skipped = pending_tasks(sel_plan, results_dir, args.force)
            print(f"{plan.name} [{plan.profile}]: {len(sel_plan.tasks)} selection runs "
                  f"({', '.join(sorted(set(plan.selection.parameters.values())))}), "
                  f"{skipped} recorded, {len(todo)} to run")
            for t in todo:
                print(f"  {t.run_id}  {t.entry:<24} selection seed {t.seed_index}  "
                      f"{json.dumps(t.cell)}")
            resolve(plan, read_records(results_dir, {t.run_id for t in sel_plan.tasks},
                                       required=False, problems=[]))
            waiting = len(plan.selection.builders) - len(plan.selection.choices)
            if waiting:
                print(f"  then the final runs of {waiting} (entry, cell) pairs, once their "
                      f"selection runs are recorded")
        todo, skipped = pending_tasks(plan, results_dir, args.force)
        units = form_groups(todo, host, enabled=not args.no_group, max_size=args.group_size)
        grouped = "" if len(units) == len(todo) else f" in {len(units)} groups"
        print(f"{plan.name} [{plan.profile}]: {len(plan.tasks)} runs, {skipped} recorded, "
              f"{len(todo)} to run{grouped} on {device} with executor {args.executor}")
        for i, unit in enumerate(units):
            for t in unit:
                tag = f"  [group {i}]" if len(unit) > 1 else ""
                print(f"  {t.run_id}  {t.entry:<24} seed {t.seed_index}  {json.dumps(t.cell)}{tag}")
        return 0
    if not args.no_data_check:
        todo, _ = pending_tasks(plan, results_dir, args.force)
        check_data(host, [*(plan.selection.tasks if plan.selection else []), *todo])
    summary = run_plan(plan, args.results, executor=args.executor, jobs=args.jobs,
                       force=args.force, host=host, progress=not args.quiet,
                       group=not args.no_group, max_group_size=args.group_size,
                       threads=args.threads, run_timeout=args.run_timeout,
                       executor_options={"scheduler": args.scheduler} if args.scheduler else None)
    if summary.interrupted:
        print(f"interrupted: {summary.ran} runs finished and recorded in {results_dir}; "
              f"rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"done: {summary.ran} runs trained, {summary.skipped} already recorded, "
          f"{summary.claimed} left to another process", file=sys.stderr)
    if summary.claimed:
        print(f"note: {summary.claimed} runs were being trained by another process on the same "
              f"results folder and were left to it", file=sys.stderr)
    if summary.ran or summary.skipped:
        _print_leaderboard(plan, results_dir, "table", None,
                           include_diverged=not args.exclude_diverged)
    bad = summary.failed + summary.timeout
    if bad:
        print(f"error: {summary.failed} runs failed and {summary.timeout} timed out, of "
              f"{summary.ran} (recorded with their error; they are retried on the next run)",
              file=sys.stderr)
        return 1
    return 0


def _records(args: argparse.Namespace, plan, folder: Path):
    """The plan's records (:func:`bench_core.results.export.plan_records`): ``--records FILE``
    when given, else the results folder, else the spec's committed records."""
    from bench_core.results.export import plan_records

    return plan_records(plan, folder, getattr(plan, "spec_ref", None),
                        records_file=getattr(args, "records", None))


def _print_leaderboard(plan, folder: Path, fmt: str, output: str | None, records=None, *,
                       include_diverged: bool = True, records_file: str | None = None) -> None:
    """Render the plan's tables (:mod:`bench_core.results.tables`); Markdown states the command that
    regenerates it."""
    from bench_core.results.export import plan_records
    from bench_core.results.tables import plan_report

    command = None
    if fmt == "markdown":
        prof = f" --profile {plan.profile}" if plan.profile != "default" else ""
        extra = (f" --records {records_file}" if records_file else "") + (
            " --exclude-diverged" if not include_diverged else "")
        spec = getattr(plan, "spec_ref", None) or plan.name   # the spec as the user named it
        command = f"untied leaderboard {spec}{prof}{extra} --format markdown"
    if records is None:
        records = plan_records(plan, folder, getattr(plan, "spec_ref", None))
    from bench_core.execution.environment import git_commit

    report = plan_report(plan, records, include_diverged=include_diverged, command=command,
                         commit=git_commit() if command else None,
                         perturbed=_perturbed(plan, folder))
    _emit(report.render(fmt), output)


def _perturbed(plan, folder: Path):
    """The plan's ``untied stability`` records, if any (:func:`bench_core.results.export.plan_perturbed`)."""
    from bench_core.results.export import plan_perturbed

    return plan_perturbed(plan, folder, getattr(plan, "spec_ref", None))


def plan_aggregate(plan, records, include_diverged: bool = True, folder: Path | None = None):
    """The aggregate (every metric, verdicts, chaos) and summary tables of a plan's records."""
    from bench_core.results.tables import plan_aggregate as aggregate_plan

    perturbed = _perturbed(plan, folder) if folder is not None else None
    return aggregate_plan(plan, records, include_diverged, perturbed)


def _notes(plan, agg) -> list[str]:
    """The header notes of a plan's tables (the HTML report shows them too)."""
    from bench_core.results.tables import header_notes

    main = agg.filter(agg["metric"] == plan.spec.metric)
    return header_notes(plan, main, True)


def _results_plan(args: argparse.Namespace, folder: Path):
    """The plan of the spec a results folder was written by (the spec the runner stored there,
    else the built-in leaderboard the records name), for the profile asked or the one recorded;
    None when there is no such spec or none of its runs are in the folder."""
    from bench_core.errors import PluginError, SpecError
    from bench_core.results.export import read_spec_file
    from bench_core.results.records import read_records
    from bench_core.specs.model import builtin_leaderboards, load_spec
    from bench_core.specs.plan import expand

    recorded = read_records(folder).select("leaderboard", "profile").unique().collect()
    stored = read_spec_file(folder)
    names = recorded["leaderboard"].unique().to_list()
    if stored is None and len(names) == 1 and names[0] in builtin_leaderboards():
        stored = load_spec(names[0])
    if stored is None:
        return None
    name, spec = stored
    profiles = recorded["profile"].unique().sort().to_list()
    default = spec.default_profile or "default"
    profile = args.profile or (default if default in profiles or not profiles else profiles[0])
    try:
        plan = expand(_host(), name, spec, profile=None if profile == "default" else profile,
                      seeds=args.seeds)
    except (SpecError, PluginError) as exc:
        print(f"warning: the spec stored for {folder} does not expand here ({exc}); showing "
              f"the records without it", file=sys.stderr)
        return None
    plan.spec_ref = None
    others = [p for p in profiles if p != plan.profile]
    if others and not args.profile:
        print(f"note: {folder} also holds runs of profile(s) {', '.join(others)} "
              f"(--profile P shows one)", file=sys.stderr)
    return plan


def _target_plan(args: argparse.Namespace):
    """``(plan, records, results folder)`` of a SPEC or RESULTS_DIR argument; ``plan`` is None
    for a results folder whose spec is unknown (``records`` are then all its records but
    selection runs, which were evaluated on validation splits)."""
    from bench_core.results.records import final_records, read_records

    target = Path(args.target)
    if target.is_dir():
        plan = _results_plan(args, target)
        records = None
        if plan is not None:
            if plan.selection is not None:
                from bench_core.results.selection import resolve

                resolve(plan, read_records(target, {t.run_id for t in plan.selection.tasks},
                                           required=False, problems=[]))
            records = read_records(target, {t.run_id for t in plan.all_tasks}, required=False)
        return (plan, records, target) if records is not None else (
            None, final_records(read_records(target)), target)
    args.spec = args.target
    _, plan = _plan(args)
    folder = Path(args.results) / plan.name
    return plan, _records(args, plan, folder), folder


def _write_plots(plan, records, folder: Path, out_dir: str, args_include=None) -> list:
    from bench_core.results.plotting import plot_leaderboard

    if plan is None:
        raise UntiedError(f"plots need the leaderboard's spec: give the spec instead of "
                          f"{folder}, or rerun it so that {folder}/spec.json is written")
    agg, _ = plan_aggregate(plan, records, not getattr(args_include, "exclude_diverged", False))
    plots = plot_leaderboard(plan, records, agg, out_dir)
    for plot in plots:
        print(f"wrote {', '.join(str(f) for f in plot.files)}", file=sys.stderr)
    return plots


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench_core.results.divergence import judge_divergence
    from bench_core.results.leaderboard import aggregate, render
    from bench_core.results.records import final_records, is_records_file, read_records

    include = not args.exclude_diverged
    target = Path(args.target)
    if is_records_file(target):                       # a records file on its own
        agg = aggregate(judge_divergence(final_records(read_records(target))),
                        include_diverged=include)
        _emit(render(agg, args.format, title=f"Leaderboard of {target}"), args.output)
        return 0
    if target.is_dir() and args.records:
        raise UntiedError("--records goes with a SPEC, not with a results folder")
    plan, records, folder = _target_plan(args)
    if plan is None:
        agg = aggregate(judge_divergence(records), include_diverged=include)
        _emit(render(agg, args.format, title=f"Leaderboard of {folder}"), args.output)
        return 0
    _print_leaderboard(plan, folder, args.format, args.output, records,
                       include_diverged=include, records_file=args.records)
    if args.plot:
        _write_plots(plan, records, folder, args.plot, args)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    plan, records, folder = _target_plan(args)
    _write_plots(plan, records, folder, args.output, args)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """All records of a leaderboard (a spec's runs of one profile, or a results folder) as one
    table: a compacted Parquet records file (what is committed beside a table, and what
    ``untied leaderboard SPEC --records FILE`` reads) or CSV."""
    import polars as pl

    from bench_core.results.export import export_table
    from bench_core.results.records import read_records, write_records_file

    fmt = args.format or ("csv" if str(args.output or "").endswith(".csv") else "parquet")
    target = Path(args.target)
    if target.is_dir():
        records, order, what = read_records(target).collect(), None, str(target)
        planned = None
    else:
        args.spec = args.target
        _, plan = _plan(args)
        records = _records(args, plan, Path(args.results) / plan.name).collect()
        records = records.with_columns(pl.lit(plan.profile).alias("profile"))
        order = [t.run_id for t in plan.all_tasks]      # selection runs first, if any
        what = f"the {len(plan.tasks)} runs of {plan.name} [{plan.profile}]" + (
            f" and its {len(plan.selection.tasks)} selection runs" if plan.selection else "")
        planned = len(order)
    if fmt == "parquet" and args.output:
        rows = write_records_file(records.lazy(), args.output, order)
        count = f"{rows} records" if planned is None else f"{rows} of {planned} records"
        print(f"wrote {args.output}: {count} ({what})", file=sys.stderr)
        return 0
    data = export_table(records, fmt)
    _emit(data if fmt == "parquet" else data.decode("utf-8"), args.output)
    if args.output:
        print(f"{records.height} records, {records.width} columns", file=sys.stderr)
    return 0


def _report_targets(args: argparse.Namespace) -> list[tuple[str, str | None, bool]]:
    """``(target, profile, optional)`` for each page of ``untied report``: the profile asked
    (or the spec's default) per target; with ``--all-profiles`` also every other profile of a
    spec, ``optional``: a profile without records is left out with a note, not an error."""
    from bench_core.specs.model import load_spec

    pages = []
    for target in args.targets:
        pages.append((target, args.profile, False))
        if not args.all_profiles or Path(target).is_dir():
            continue
        try:
            _, spec = load_spec(target)
        except UntiedError:
            continue                      # reported by the page of the profile asked for
        first = args.profile or spec.default_profile
        pages += [(target, prof, True) for prof in spec.profiles if prof != first]
    return pages


def cmd_report(args: argparse.Namespace) -> int:
    """One page per leaderboard (and per profile with ``--all-profiles``): ``DIR/NAME/`` for the
    profile asked or the spec's default, ``DIR/NAME@PROFILE/`` for the others; and an index."""
    from bench_core.results.leaderboard import overlay_plan
    from bench_core.results.plotting import plot_leaderboard
    from bench_core.results.report import (
        index_page,
        leaderboard_page,
        reproduce_commands,
        verdict_summary,
        write_text,
    )
    from bench_core.results.tables import runs_recorded

    out = Path(args.output)
    entries, skipped = [], 0
    for target, profile, optional in _report_targets(args):
        args.target, args.profile = target, profile
        try:
            plan, records, folder = _target_plan(args)
            if optional and records.select("run_id").head(1).collect().height == 0:
                raise UntiedError("no records")   # --records FILE: none of this profile's
        except UntiedError as exc:
            if optional:
                print(f"note: {target} [{profile}]: {exc}; no page", file=sys.stderr)
                continue
            print(f"warning: {target}{f' [{profile}]' if profile else ''}: {exc}; no report",
                  file=sys.stderr)
            entries.append({"title": str(target), "runs": "no records"})
            skipped += 1
            continue
        if plan is None:
            raise UntiedError(f"{target}: a report needs the leaderboard's spec (give the spec "
                              f"file or name)")
        agg, summaries = plan_aggregate(plan, records, not args.exclude_diverged, folder)
        page = plan.name if not optional else f"{plan.name}@{plan.profile}"
        page_dir = out / page
        plots = plot_leaderboard(plan, records, agg, page_dir / "plots",
                                 formats=("png",) if args.no_svg else ("png", "svg"))
        runs = overlay_plan(records, plan.tasks, spec=plan.spec).collect()
        # every recorded run of the plan once, whatever its status, counted as the table's
        # header counts them
        n_done = runs_recorded(agg.filter(agg["metric"] == plan.spec.metric))
        html = leaderboard_page(plan, agg, summaries, runs, plots, _notes(plan, agg),
                                reproduce_commands(plan, runs))
        write_text(page_dir / "index.html", html)
        print(f"wrote {page_dir / 'index.html'} ({len(plots)} plots)", file=sys.stderr)
        entries.append({"href": f"{page}/index.html", "title": plan.spec.title,
                        "name": plan.name, "profile": plan.profile,
                        "runs": f"{n_done}/{len(plan.tasks)}", "verdict": verdict_summary(agg)})
    write_text(out / "index.html", index_page(entries))
    print(f"wrote {out / 'index.html'}", file=sys.stderr)
    if skipped == len(args.targets):
        raise UntiedError("no leaderboard had records to report")
    return 1 if skipped else 0


def cmd_stability(args: argparse.Namespace) -> int:
    """Re-train every recorded run of a plan with its initial weights moved by one ulp and
    flag the cells whose outcome moves by more than the tolerance floor
    (:mod:`bench_core.results.stability`)."""
    import polars as pl

    from bench_core.execution.environment import resolve_device
    from bench_core.execution.runner import run_plan
    from bench_core.results.records import read_records, write_records_file
    from bench_core.results.stability import PERTURBATION, PERTURBED_DIR
    from bench_core.results.tables import plan_report

    device = resolve_device(args.device)
    host, plan = _plan(args, device=device)
    folder = Path(args.results) / plan.name
    records = _records(args, plan, folder)
    kept = records.filter(pl.col("status").is_in(["ok", "diverged"])).select("run_id").collect()
    recorded = set(kept["run_id"].to_list())
    plan.tasks = [t for t in plan.tasks if t.run_id in recorded]
    if not plan.tasks:
        raise UntiedError(f"no recorded run of {plan.name} [{plan.profile}] to perturb: run "
                          f"`untied run` first")
    for t in plan.tasks:
        t.extra = {**t.extra, "perturbation": PERTURBATION}
    summary = run_plan(plan, args.results, executor=args.executor, jobs=args.jobs, host=host,
                       progress=not args.quiet, group=not args.no_group, threads=args.threads,
                       subfolder=PERTURBED_DIR)
    if summary.interrupted:
        print(f"interrupted: {summary.ran} perturbed runs recorded in {folder / PERTURBED_DIR}; "
              f"rerun the same command to resume", file=sys.stderr)
        return 130
    ids = {t.run_id for t in plan.tasks}
    perturbed = read_records(folder / PERTURBED_DIR, ids, required=False)
    if perturbed is None:
        raise UntiedError(f"no perturbed record in {folder / PERTURBED_DIR}")
    _emit(plan_report(plan, records, perturbed=perturbed).render("table"), None)
    if args.export:
        rows = write_records_file(perturbed, args.export, [t.run_id for t in plan.tasks])
        print(f"wrote {args.export}: {rows} perturbed runs (commit it as "
              f"leaderboards/{plan.name}/{plan.profile}.{PERTURBED_DIR}.parquet)", file=sys.stderr)
    return 1 if summary.failed else 0


def _records_of(target: str):
    """Every record of a results folder or a records file, as one frame."""

    from bench_core.results.records import is_records_file, read_records

    path = Path(target)
    if is_records_file(path) or path.is_dir():
        return read_records(path).collect()
    raise UntiedError(f"{target}: neither a results folder nor a records file (.parquet)")


def cmd_compare(args: argparse.Namespace) -> int:
    """Two sets of records of one leaderboard, run by run (:mod:`bench_core.results.compare`)."""
    from bench_core.results.compare import compare_records

    a, b = _records_of(args.a), _records_of(args.b)
    result = compare_records(a, b, metrics=args.metric or None, tolerance=args.tolerance)
    if result.common == 0:
        raise UntiedError(f"{args.a} and {args.b} have no run in common (no equal run id): "
                          f"are they records of the same spec and profile?")
    sys.stdout.write(result.text(limit=args.limit))
    return 1 if result.differences or result.status_changes else 0


def cmd_check_plugin(args: argparse.Namespace) -> int:
    from bench_core.kit.check import check_plugin

    report = check_plugin(args.target)
    if args.json:
        print(json.dumps({"target": report.target, "plugins": report.plugins,
                          "checks": [vars(c) for c in report.checks]}, indent=2))
    else:
        sys.stdout.write(report.text())
    return 1 if report.failures else 0


def cmd_sys_info(args: argparse.Namespace) -> int:
    import torch

    from bench_core.execution.environment import cpu_count, git_commit

    info: dict[str, Any] = {
        "untied_bench": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpus": cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "UNTIED_DATA": os.environ.get("UNTIED_DATA"),
    }
    for mod in ("torchvision", "pluggy", "pydantic", "polars", "sklearn", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - report, never fail sys-info
            info[mod] = f"unavailable ({type(exc).__name__})"
    width = max(len(k) for k in info)
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")
    return 0


# ---- parser ----------------------------------------------------------------------------------
EXCLUDE_DIVERGED_HELP = ("leave diverged runs out of mean, std and n (by default they count "
                         "with the metrics of their last logged epoch, as papers that average "
                         "collapsed runs do; the diverged column counts them either way)")

def _record_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that read a leaderboard's records."""
    p.add_argument("--profile", help="a profile of the spec (default: the spec's default)")
    p.add_argument("--seeds", type=int, help="number of seeds, if the runs overrode the spec's")
    p.add_argument("--results", default=DEFAULT_RESULTS,
                   help="results root (default ./results); a spec whose runs are not there "
                        "falls back to its committed records, leaderboards/NAME/PROFILE.parquet")
    p.add_argument("--exclude-diverged", action="store_true", help=EXCLUDE_DIVERGED_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="untied", description="Benchmark training methods that untie forward and backward.")
    parser.add_argument("--version", action="version", version=f"untied-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugins", help="list loaded plugins: distribution, version, hooks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("list", help="list components with their parameters")
    p.add_argument("family", nargs="?", help="activations, surrogates, update_rules, trainers, "
                   "datasets, models, reparametrizations or executors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("validate", help="check a leaderboard spec without running it")
    p.add_argument("spec", help="a spec file or the name of a built-in leaderboard")
    p.add_argument("--profile")
    p.add_argument("--yes", action="store_true", help="expand plans above 100,000 runs too")
    p.add_argument("--no-data-check", action="store_true",
                   help="do not look for the datasets' files")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of a leaderboard spec")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("run", help="run a leaderboard (resumes by default) and print its table")
    p.add_argument("spec", help="a spec file or the name of a built-in leaderboard")
    p.add_argument("--profile", help="a profile of the spec, e.g. cpu or full")
    p.add_argument("--seeds", type=int, help="number of seeds (overrides the spec)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--executor", default="local", help="local | processes | dask | any registered")
    p.add_argument("--jobs", type=int, default=2, help="workers for --executor processes or a "
                   "dask LocalCluster")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler for --executor dask "
                   "(tcp://host:8786); default: start a LocalCluster")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default ./results)")
    p.add_argument("--force", action="store_true", help="rerun runs already recorded")
    p.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--yes", action="store_true", help="run plans above 100,000 runs too")
    p.add_argument("--no-data-check", action="store_true",
                   help="do not look for the datasets' files before the first run")
    p.add_argument("--run-timeout", type=float, metavar="SECONDS",
                   help="record a run that takes longer as `timeout` and go on (local and "
                        "processes executors)")
    p.add_argument("--no-group", action="store_true",
                   help="train runs one by one even where the trainer can batch compatible runs "
                        "into one computation (grouped runs: equal to one-by-one runs up to float "
                        "rounding, which a step or sign forward can amplify; records say how each "
                        "run was trained, as stack_size)")
    p.add_argument("--threads", type=int, metavar="N", default=DEFAULT_THREADS,
                   help=f"torch threads per run, in every executor (default {DEFAULT_THREADS}: "
                        f"measured as the robust choice on a shared machine; see README)")
    p.add_argument("--group-size", type=int, metavar="N",
                   help="at most N runs per group (default: the trainer's limit, else no limit)")
    p.add_argument("--exclude-diverged", action="store_true", help=EXCLUDE_DIVERGED_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="aggregate recorded runs into a table")
    p.add_argument("target", metavar="SPEC|RESULTS_DIR|RECORDS_FILE")
    _record_options(p)
    p.add_argument("--records", metavar="FILE",
                   help="read the runs from a records file (untied export) instead of --results")
    p.add_argument("--format", default="table", choices=["table", "markdown", "csv", "json", "parquet"])
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.add_argument("--plot", metavar="DIR", help="also write the plots (PNG and SVG) into DIR")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("plot", help="plot a leaderboard: metric vs each grid axis, training "
                       "curves, function slices (PNG and SVG)")
    p.add_argument("target", metavar="SPEC|RESULTS_DIR")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the plots")
    _record_options(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="static HTML pages of leaderboards (tables, plots, "
                       "environment, commands), offline, with an index")
    p.add_argument("targets", nargs="+", metavar="SPEC|RESULTS_DIR")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder of the report")
    p.add_argument("--no-svg", action="store_true", help="PNG plots only (no vector copies: "
                   "a report to commit stays small)")
    p.add_argument("--all-profiles", action="store_true", help="also a page for every other "
                   "profile of each spec that has records (DIR/NAME@PROFILE/)")
    _record_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="all records of a leaderboard as one Parquet or CSV table")
    p.add_argument("target", metavar="SPEC|RESULTS_DIR")
    _record_options(p)
    p.add_argument("--format", choices=["parquet", "csv"],
                   help="default: from the --output suffix, else parquet")
    p.add_argument("--output", "-o", help="write to this file (needed for parquet)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stability", help="re-train a plan's recorded runs with every initial "
                       "weight moved by one ulp; flag the cells whose outcome rounding decides")
    p.add_argument("spec", help="a spec file or the name of a built-in leaderboard")
    p.add_argument("--profile", help="a profile of the spec")
    p.add_argument("--seeds", type=int, help="number of seeds, if the runs overrode the spec's")
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default ./results); "
                   "the originals come from there or from the committed records, the perturbed "
                   "runs go to RESULTS/NAME/perturbed/")
    p.add_argument("--records", metavar="FILE", help="the original runs from a records file")
    p.add_argument("--device", default="auto")
    p.add_argument("--executor", default="local")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, metavar="N", default=DEFAULT_THREADS)
    p.add_argument("--no-group", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--export", metavar="FILE", help="also write the perturbed runs as one "
                   "records file (to commit beside the table as PROFILE.perturbed.parquet)")
    p.set_defaults(func=cmd_stability, yes=False)

    p = sub.add_parser("compare", help="two sets of records of one leaderboard (two machines, "
                       "commits or executors), run by run: the runs and metrics that differ")
    p.add_argument("a", metavar="A", help="a results folder or records file")
    p.add_argument("b", metavar="B", help="another one")
    p.add_argument("--metric", action="append", help="compare only this metric (repeatable; "
                   "default every metric both recorded, but wall-clock ones)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="absolute difference allowed (default 0: exact)")
    p.add_argument("--limit", type=int, default=20, help="differences listed (largest first)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("check-plugin", help="conformance kit: check every component a plugin "
                       "registers (parameters, build, a training step, determinism, records, "
                       "declared capabilities)")
    p.add_argument("target", metavar="DIST_OR_MODULE",
                   help="an installed distribution (untied-sign-sgd), a plugin name or a module")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check_plugin)

    p = sub.add_parser("sys-info", help="versions, torch build, CUDA devices, threads")
    p.set_defaults(func=cmd_sys_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench_core.results.records import forget_named

    parser = build_parser()
    args = parser.parse_args(argv)
    forget_named()
    try:
        return int(args.func(args) or 0)
    except UntiedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - one line, traceback only on request
        if os.environ.get("UNTIED_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set UNTIED_DEBUG=1 for the "
              f"traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
