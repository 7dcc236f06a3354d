"""The ``untied`` command line.

Every error a user can cause (bad spec, unknown plugin or component, missing data, no CUDA)
prints one line ``error: ...`` and exits with status 2; runs that fail are recorded and make
``untied run`` exit with status 1; Ctrl-C exits with 130 and keeps every finished run.
Set ``UNTIED_DEBUG=1`` to see tracebacks of unexpected errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench_core import __version__
from bench_core.errors import UntiedError

DEFAULT_RESULTS = "results"
DEFAULT_THREADS = 1  # bench_core.runner.DEFAULT_THREADS (kept here so --help imports no torch)


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
    from bench_core.spec import json_schema

    print(json.dumps(json_schema(_host()), indent=2))
    return 0


def _plan(args: argparse.Namespace, results: str | None = None, device: str = "cpu"):
    from bench_core.spec import expand, load_spec

    host = _host()
    name, spec = load_spec(args.spec)
    plan = expand(host, name, spec, profile=getattr(args, "profile", None),
                  seeds=getattr(args, "seeds", None), results_dir=results or "", device=device)
    plan.spec_ref = str(args.spec)
    return host, plan


def cmd_validate(args: argparse.Namespace) -> int:
    from bench_core.spec import expand, load_spec

    host = _host()
    name, spec = load_spec(args.spec)
    base = [] if spec.default_profile else [None]  # None = the spec without a profile
    profiles = [args.profile] if args.profile else [*base, *spec.profiles]
    for prof in profiles:
        plan = expand(host, name, spec, profile=prof)
        cells = len(plan.tasks) // max(1, len(plan.seeds) * len({t.entry for t in plan.tasks}))
        print(f"ok: {name} [{plan.profile}]: {len({t.entry for t in plan.tasks})} entries x "
              f"{cells} grid cells x {len(plan.seeds)} seeds = {len(plan.tasks)} runs")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench_core.runner import form_groups, pending_tasks, resolve_device, run_plan

    device = resolve_device(args.device)
    host, plan = _plan(args, device=device)
    results_dir = Path(args.results) / plan.name
    if args.threads is not None and args.threads < 1:
        raise UntiedError(f"--threads must be >= 1 (got {args.threads})")
    if args.group_size is not None and args.group_size < 1:
        raise UntiedError(f"--group-size must be >= 1 (got {args.group_size})")
    if args.dry_run:
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
    summary = run_plan(plan, args.results, executor=args.executor, jobs=args.jobs,
                       force=args.force, host=host, progress=not args.quiet,
                       group=not args.no_group, max_group_size=args.group_size,
                       threads=args.threads,
                       executor_options={"scheduler": args.scheduler} if args.scheduler else None)
    if summary.interrupted:
        print(f"interrupted: {summary.ran} runs finished and recorded in {results_dir}; "
              f"rerun the same command to resume", file=sys.stderr)
        return 130
    _print_leaderboard(plan, results_dir, "table", None)
    if summary.failed:
        print(f"error: {summary.failed} of {summary.ran} runs failed (recorded with their error; "
              f"they are retried on the next run)", file=sys.stderr)
        return 1
    return 0


def plan_aggregate(plan, results_dir: Path, records=None):
    """The leaderboard of a plan: one aggregate over its recorded runs for the spec's metric and
    each of its further ``metrics`` (stacked; column ``metric``), and the summary tables.
    ``records``: the plan's records (default: :func:`bench_core.export.plan_records`)."""
    import polars as pl

    from bench_core.export import plan_records
    from bench_core.leaderboard import aggregate, overlay_plan, summarise

    spec = plan.spec
    if records is None:
        records = plan_records(plan, results_dir, plan.spec_ref)
    aggs = [aggregate(overlay_plan(records, plan.tasks, metric, spec), spec.columns)
            for metric in dict.fromkeys([spec.metric, *spec.metrics])]
    agg = pl.concat(aggs, how="diagonal_relaxed")
    summaries = ({m: summarise(a, spec.summary_by, spec.reference, spec.metric)
                  for m, a in zip(dict.fromkeys([spec.metric, *spec.metrics]), aggs)}
                 if spec.summary_by else {})
    return agg, summaries


def _print_leaderboard(plan, results_dir: Path, fmt: str, output: str | None,
                       records=None) -> None:
    from bench_core.leaderboard import render

    agg, summaries = plan_aggregate(plan, results_dir, records)
    main = agg.filter(agg["metric"] == plan.spec.metric)
    n_done = int(main["n"].sum() + main["failed"].sum() + main["diverged"].sum())
    notes = _notes(plan, n_done)
    if fmt == "markdown":
        from bench_core.runner import git_commit

        prof = f" --profile {plan.profile}" if plan.profile != "default" else ""
        notes.append(f"Generated by `untied leaderboard {plan.name}{prof} --format markdown` "
                     f"(untied-bench {__version__}, commit {(git_commit() or 'unknown')[:12]}); "
                     f"total training time {main['wall_time_s'].fill_null(0).dot(main['n']):.0f} s.")
    _emit(render(agg, fmt, title=plan.spec.title, notes=notes, extras=plan.spec.columns,
                 relative=plan.spec.relative, summaries=summaries,
                 summary_by=plan.spec.summary_by), output)


def _notes(plan, n_done: int) -> list[str]:
    spec = plan.spec
    arrow = "higher is better" if spec.higher_is_better else "lower is better"
    shown = ", ".join(f"`{m}`" for m in dict.fromkeys([spec.metric, *spec.metrics]))
    scaled = f", values x {spec.scale:g}" if spec.scale != 1 else ""
    notes = [f"Metric{'s' if spec.metrics else ''}: {shown} ({arrow}{scaled}); mean ± sample "
             f"std over seeds" + (
        f"; Δ baseline = entry mean − `{spec.baseline}` mean in the same cell" if spec.baseline
        else "; no baseline entry") + ("; gain % = relative improvement over the baseline "
                                       "(positive = better)." if spec.relative else ".")]
    prof = spec.profiles.get(plan.profile)
    label = f"Profile: `{plan.profile}`"
    if prof is not None and prof.description:
        label += f": {prof.description}"
    notes.append(f"{label}; seeds {plan.seeds[0]}..{plan.seeds[-1]} ({len(plan.seeds)}); "
                 f"{n_done}/{len(plan.tasks)} runs recorded.")
    if spec.source:
        notes.append(f"Source: {spec.source}")
    if spec.reference:
        notes.append("paper = value reported in the source" +
                     (f" ({spec.reference_note})" if spec.reference_note else "") + ".")
    return notes


def _results_plan(args: argparse.Namespace, folder: Path):
    """The plan of the spec a results folder was written by (the spec the runner stored there,
    else the built-in leaderboard the records name), for the profile asked or the one recorded;
    None when there is no such spec or none of its runs are in the folder."""
    from bench_core.errors import PluginError, SpecError
    from bench_core.export import read_spec_file
    from bench_core.leaderboard import load_records
    from bench_core.spec import builtin_leaderboards, expand, load_spec

    recorded = load_records(folder).select("leaderboard", "profile").unique().collect()
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
    for a results folder whose spec is unknown (``records`` are then all its records)."""
    from bench_core.export import plan_records
    from bench_core.leaderboard import load_records
    from bench_core.records import scan_records

    target = Path(args.target)
    if target.is_dir():
        plan = _results_plan(args, target)
        records = scan_records(target, {t.run_id for t in plan.tasks}) if plan else None
        return (plan, records, target) if records is not None else (None, load_records(target),
                                                                    target)
    args.spec = args.target
    _, plan = _plan(args)
    folder = Path(args.results) / plan.name
    return plan, plan_records(plan, folder, plan.spec_ref), folder


def _write_plots(plan, records, folder: Path, out_dir: str) -> list:
    from bench_core.plotting import plot_leaderboard

    if plan is None:
        raise UntiedError(f"plots need the leaderboard's spec: give the spec instead of "
                          f"{folder}, or rerun it so that {folder}/spec.json is written")
    agg, _ = plan_aggregate(plan, folder, records)
    plots = plot_leaderboard(plan, records, agg, out_dir)
    for plot in plots:
        print(f"wrote {', '.join(str(f) for f in plot.files)}", file=sys.stderr)
    return plots


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench_core.leaderboard import aggregate, render

    plan, records, folder = _target_plan(args)
    if plan is None:
        agg = aggregate(records)
        _emit(render(agg, args.format, title=f"Leaderboard of {folder}"), args.output)
        return 0
    _print_leaderboard(plan, folder, args.format, args.output, records)
    if args.plot:
        _write_plots(plan, records, folder, args.plot)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    plan, records, folder = _target_plan(args)
    _write_plots(plan, records, folder, args.output)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import polars as pl

    from bench_core.export import export_table, plan_records, read_records

    fmt = args.format or ("csv" if str(args.output or "").endswith(".csv") else "parquet")
    target = Path(args.target)
    if target.is_dir():
        records = read_records(target)
    else:
        args.spec = args.target
        _, plan = _plan(args)
        records = plan_records(plan, Path(args.results) / plan.name, plan.spec_ref).collect()
        records = records.with_columns(pl.lit(plan.profile).alias("profile"))
    data = export_table(records, fmt)
    _emit(data if fmt == "parquet" else data.decode("utf-8"), args.output)
    if args.output:
        print(f"{records.height} records, {records.width} columns", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench_core.leaderboard import overlay_plan
    from bench_core.plotting import plot_leaderboard
    from bench_core.report import (index_page, leaderboard_page, reproduce_commands,
                                   verdict_summary, write_text)

    out = Path(args.output)
    entries, skipped = [], 0
    for target in args.targets:
        args.target = target
        try:
            plan, records, folder = _target_plan(args)
        except UntiedError as exc:
            print(f"warning: {target}: {exc}; no report", file=sys.stderr)
            entries.append({"title": str(target), "runs": "no records"})
            skipped += 1
            continue
        if plan is None:
            raise UntiedError(f"{target}: a report needs the leaderboard's spec (give the spec "
                              f"file or name)")
        agg, summaries = plan_aggregate(plan, folder, records)
        main = agg.filter(agg["metric"] == plan.spec.metric)
        n_done = int(main["n"].sum() + main["failed"].sum() + main["diverged"].sum())
        page_dir = out / plan.name
        plots = plot_leaderboard(plan, records, agg, page_dir / "plots")
        runs = overlay_plan(records, plan.tasks, spec=plan.spec).collect()
        html = leaderboard_page(plan, agg, summaries, runs, plots, _notes(plan, n_done),
                                reproduce_commands(plan, runs))
        write_text(page_dir / "index.html", html)
        print(f"wrote {page_dir / 'index.html'} ({len(plots)} plots)", file=sys.stderr)
        entries.append({"href": f"{plan.name}/index.html", "title": plan.spec.title,
                        "name": plan.name, "profile": plan.profile,
                        "runs": f"{n_done}/{len(plan.tasks)}", "verdict": verdict_summary(agg)})
    write_text(out / "index.html", index_page(entries))
    print(f"wrote {out / 'index.html'}", file=sys.stderr)
    if skipped == len(args.targets):
        raise UntiedError("no leaderboard had records to report")
    return 1 if skipped else 0


def cmd_check_plugin(args: argparse.Namespace) -> int:
    from bench_core.conformance import check_plugin

    report = check_plugin(args.target)
    if args.json:
        print(json.dumps({"target": report.target, "plugins": report.plugins,
                          "checks": [vars(c) for c in report.checks]}, indent=2))
    else:
        sys.stdout.write(report.text())
    return 1 if report.failures else 0


def cmd_sys_info(args: argparse.Namespace) -> int:
    import torch

    from bench_core.runner import cpu_count, git_commit

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
def _record_options(p: argparse.ArgumentParser) -> None:
    """Options of the commands that read a leaderboard's records."""
    p.add_argument("--profile", help="a profile of the spec (default: the spec's default)")
    p.add_argument("--seeds", type=int, help="number of seeds, if the runs overrode the spec's")
    p.add_argument("--results", default=DEFAULT_RESULTS,
                   help="results root (default ./results); a spec whose runs are not there "
                        "falls back to its committed records, leaderboards/NAME/PROFILE.parquet")


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
                   "datasets, models or executors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("validate", help="check a leaderboard spec without running it")
    p.add_argument("spec", help="a spec file or the name of a built-in leaderboard")
    p.add_argument("--profile")
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
    p.add_argument("--no-group", action="store_true",
                   help="train runs one by one even where the trainer can batch compatible runs "
                        "into one computation (grouped runs; results are equal either way)")
    p.add_argument("--threads", type=int, metavar="N", default=DEFAULT_THREADS,
                   help=f"torch threads per run, in every executor (default {DEFAULT_THREADS}: "
                        f"measured as the robust choice on a shared machine; see README)")
    p.add_argument("--group-size", type=int, metavar="N",
                   help="at most N runs per group (default: the trainer's limit, else no limit)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="aggregate recorded runs into a table")
    p.add_argument("target", metavar="SPEC|RESULTS_DIR")
    _record_options(p)
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
    _record_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="all records of a leaderboard as one Parquet or CSV table")
    p.add_argument("target", metavar="SPEC|RESULTS_DIR")
    _record_options(p)
    p.add_argument("--format", choices=["parquet", "csv"],
                   help="default: from the --output suffix, else parquet")
    p.add_argument("--output", "-o", help="write to this file (needed for parquet)")
    p.set_defaults(func=cmd_export)

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
    parser = build_parser()
    args = parser.parse_args(argv)
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
