"""Execute runs: build every component of a run from its plugins, train, record.

:func:`execute_task` is the unit of work an executor runs (a module-level function, so process
pools and remote workers can pickle it). Whatever happens inside a run (a plugin that raises, a
NaN loss) becomes a record with status ``failed`` or ``diverged``; the grid goes on.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import resource
import time
import traceback
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import polars as pl
import torch
from pydantic import ValidationError
from torch import nn

from bench_core.data import hold_out_validation
from bench_core.errors import Diverged, PluginError, SpecError, UntiedError
from bench_core.execution.environment import environment, git_commit
from bench_core.execution.safeguards import (
    RunTimeout,
    claim,
    heartbeat,
    release,
    sweep_stale_claims,
    time_limit,
    torch_state_restored,
)
from bench_core.interfaces import (
    Activation,
    DataBundle,
    GroupTrainer,
    NativeActivation,
    RunContext,
    TrainingSession,
)
from bench_core.plugins import Component, PluginHost, get_host, set_host
from bench_core.results.records import (
    flatten_spec,
    read_records,
    recorded_run_ids,
    write_record,
)
from bench_core.specs.model import LIST_FIELDS, canonical_json, format_validation_error
from bench_core.specs.plan import (
    Plan,
    RunTask,
    resolve_component,
    resolve_components,
    validation_name,
)


def checked(comp: Component, made: Any, expected: str, ok: bool) -> Any:
    """``made`` if ``ok``, else a one-line error naming the component and its plugin."""
    if not ok:
        raise PluginError(f"{comp.family[:-1]} '{comp.name}' (plugin '{comp.plugin}') returned "
                          f"{type(made).__name__}, expected {expected}")
    return made


def accepts_keyword(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` takes the keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_session(host: PluginHost, task: RunTask, ctx: RunContext) -> TrainingSession:
    """Instantiate the run's components. Models are built under a fixed ``init`` seed and with
    every random stream restarted (:meth:`RunContext.model_build`), so a second call (e.g.
    ``tied=True`` for a diagnostic, or a grouped run trained alone after all) starts from the
    same weights and draws the same numbers; a run's
    ``reparametrization`` (one, or several in order) is applied to every model built, before
    its rule, with ``tied`` for the factories that declare it (the tied twin, ``tied=True``:
    the true back-propagation gradient, :func:`bench_core.hookspecs.register_reparametrizations`). What each factory
    returns is checked against its family's contract (hookspecs), so a plugin that returns the
    wrong thing is named, not met later as an AttributeError."""
    spec = task.spec
    comps = {f: resolve_component(host, f, t) for f, t in spec.items() if f not in LIST_FIELDS}
    reparams = resolve_components(host, "reparametrization", spec["reparametrization"]) \
        if "reparametrization" in spec else []

    ds_comp, ds_params = comps["dataset"]
    data = ds_comp.factory(ds_params, ctx=ctx)
    checked(ds_comp, data, "a DataBundle", isinstance(data, DataBundle))
    if task.validation_fraction is not None:      # a selection run: never sees the test split
        data = hold_out_validation(data, task.validation_fraction,
                                   ctx.generator("validation", device="cpu"))

    activation: Activation | None = None
    if "activation" in comps:
        act_comp, act_params = comps["activation"]
        activation = act_comp.factory(act_params)
        checked(act_comp, activation, "an Activation", isinstance(activation, Activation))

    def activation_factory(tied: bool) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            if activation is None:
                raise SpecError("this model needs an activation: set `activation` in the spec")
            if tied or "surrogate" not in comps:
                return NativeActivation(activation)
            s_comp, s_params = comps["surrogate"]
            module = s_comp.factory(s_params, activation=activation, ctx=ctx)
            return checked(s_comp, module, "a torch.nn.Module", isinstance(module, nn.Module))

        return make

    model_comp, model_params = comps["model"]

    def build_model(tied: bool = False) -> nn.Module:
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=ctx.device.type), \
                ctx.model_build():
            torch.manual_seed(ctx.stream_seed("init"))
            model = model_comp.factory(model_params, data=data.info,
                                       activation=activation_factory(tied), ctx=ctx)
            checked(model_comp, model, "a torch.nn.Module", isinstance(model, nn.Module))
            for comp, params in reparams:
                told = {"tied": tied} if accepts_keyword(comp.factory, "tied") else {}
                model = comp.factory(params, model=model, ctx=ctx, **told)
                checked(comp, model, "a torch.nn.Module", isinstance(model, nn.Module))
            if ctx.perturbation is not None:
                from bench_core.execution.perturbation import perturb

                perturb(model, ctx)
        model = model.to(ctx.device)
        if not tied and session.trained_model is None:
            session.trained_model = model
        return model

    def build_rule(model: nn.Module):
        if "rule" not in comps:
            raise SpecError("this trainer needs an update rule: set `rule` in the spec")
        rule_comp, rule_params = comps["rule"]
        rule = rule_comp.factory(rule_params, model=model, ctx=ctx)
        return checked(rule_comp, rule, "an object with zero_grad() and step()",
                       callable(getattr(rule, "zero_grad", None))
                       and callable(getattr(rule, "step", None)))

    session = TrainingSession(ctx=ctx, data=data, build_model=build_model,
                              build_rule=build_rule, spec=spec)
    return session


def evaluate_slices(session: TrainingSession | None) -> str | None:
    """The dataset's function slices (:class:`~bench_core.interfaces.FunctionSlice`) with the
    trained model's predictions, as the JSON of the record's ``slices_json`` column; None when
    the dataset declares none. Runs once after training (its one host sync)."""
    if session is None or not session.data.slices or session.trained_model is None:
        return None
    model = session.trained_model
    out: dict[str, Any] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for name, cut in session.data.slices.items():
                pred = model(cut.inputs.to(session.ctx.device)).reshape(len(cut.inputs), -1)
                out[name] = {"label": cut.label,
                             "x": cut.coordinate.double().cpu().tolist(),
                             "target": cut.target.reshape(-1).double().cpu().tolist(),
                             "prediction": pred[:, cut.output].double().cpu().tolist()}
    except Exception as exc:  # noqa: BLE001 - a plot's input never costs a finished run
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        model.train(was_training)
    return json.dumps(out)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class RunOutcome:
    """What an executor hands back for one run (the record itself is already on disk)."""

    run_id: str
    entry: str
    status: str
    error: str | None
    value: float | None
    wall_time_s: float


def _failure(exc: BaseException) -> tuple[str, str, str | None]:
    """(status, error line, traceback) of an exception that ended a run."""
    if isinstance(exc, Diverged):
        return "diverged", str(exc), None
    if isinstance(exc, RunTimeout):
        return "timeout", str(exc), None
    return ("failed", f"{type(exc).__name__}: {exc}",
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _final_metrics(reported: dict[str, Any] | None) -> dict[str, float]:
    metrics = {k: float(v) for k, v in (reported or {}).items()}
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise Diverged(f"non-finite final {', '.join(bad)}")
    return metrics


def build_trainer(host: PluginHost, spec: dict[str, Any]):
    """The trainer object of a run spec (cheap: trainers build models in ``fit``)."""
    comp, params = resolve_component(host, "trainer", spec["trainer"])
    trainer = comp.factory(params)
    return checked(comp, trainer, "an object with fit(session)",
                   callable(getattr(trainer, "fit", None)))


DEFAULT_THREADS = 1
"""torch threads per run unless ``--threads`` says otherwise. Measured on the project's 2-core
machines (README, "Threads"): an intra-op pool of 2 threads lost up to 18x when another process
kept one core busy, while 1 thread per run never lost more than the neighbour's share; parallel
runs come from ``--executor processes --jobs N`` or grouped runs instead."""


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads for the runs that follow in this process."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _start(task: RunTask) -> RunContext:
    set_threads(task.threads)
    if task.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(task.device))
    return RunContext(seed=task.seed, device=torch.device(task.device),
                      perturbation=task.extra.get("perturbation"))


def last_logged_metrics(ctx: RunContext) -> dict[str, float]:
    """The finite values of the last epoch the run logged (``ctx.curves``): what a diverged run
    keeps as its metrics. For trainers that log every epoch, that is the epoch at which it
    diverged, evaluated on the diverged weights (a collapsed classifier then scores about
    chance, as the runs a paper averages in do); a metric that is itself non-finite there
    (a NaN loss) has no value."""
    return {k: v[-1] for k, v in ctx.curves.items()
            if k != "epoch" and v and math.isfinite(v[-1])}


def _record_row(host: PluginHost, task: RunTask, ctx: RunContext, status: str, error: str | None,
                tb: str | None, metrics: dict[str, float], wall: float, *, group_size: int = 1,
                group_wall: float | None = None, warnings: list[str] = (),
                slices: str | None = None) -> dict[str, Any]:
    """The record of one finished run (not yet written): what the run was (its spec, entry,
    cell, seed, status, metrics, curves, environment) and nothing of how a table shows it (the
    order of entries and cells, the baseline, the paper's values, directions): tables take that
    from the spec's plan (:func:`bench_core.results.leaderboard.overlay_plan`), the one source
    of it. A ``diverged`` run records its last logged metrics (:func:`last_logged_metrics`)
    and, from them, its ``value``; leaderboards count it in the means unless asked not to."""
    device = task.device
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
    if status == "diverged":
        metrics = {**last_logged_metrics(ctx), **metrics}
    curves = ctx.curves
    if task.stage == "selection":                 # its test split is a validation split
        metrics = {validation_name(k): v for k, v in metrics.items()}
        curves = {validation_name(k): v for k, v in curves.items()}
    value = metrics.get(task.metric)
    if status == "ok" and value is None:
        status = "failed"
        error = (f"the trainer reported no '{task.metric}' (it reported: "
                 f"{', '.join(sorted(metrics)) or 'nothing'})")
    return {
        "run_id": task.run_id,
        "leaderboard": task.leaderboard,
        "profile": task.profile,
        "entry": task.entry,
        "cell_json": canonical_json(task.cell),
        "seed_index": task.seed_index,
        "seed": task.seed,
        "status": status,
        "error": error,
        "traceback": tb,
        "metric": task.metric,
        "value": value if status in ("ok", "diverged") else None,
        "spec_json": canonical_json(task.spec),
        "base_run_id": task.base_run_id or task.run_id,
        "stage": task.stage,
        "validation_fraction": task.validation_fraction,
        "selected_json": canonical_json(task.selected) if task.selected else None,
        "versions_json": canonical_json(task.versions) if task.versions else None,
        **flatten_spec(task.spec),
        **{f"m_{k}": v for k, v in metrics.items()},
        **{f"curve_{k}": list(v) for k, v in curves.items()},
        "curves_json": json.dumps(curves),
        "slices_json": slices,
        "wall_time_s": wall,
        "group_size": group_size,
        "stack_size": ctx.stack_size,
        "host": platform.node(),
        "pid": os.getpid(),
        "warnings": ("the run changed global torch state (restored after it): "
                     + "; ".join(warnings)) if warnings else None,
        "group_wall_time_s": group_wall if group_wall is not None else wall,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_cuda_bytes": (torch.cuda.max_memory_allocated(torch.device(device))
                            if device.startswith("cuda") else None),
        **asdict(ctx.counters),
        "perturbation": ctx.perturbation,
        **environment(host, device),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def execute_task(task: RunTask, host: PluginHost | None = None) -> dict[str, Any]:
    """Run one task in this process and return its record row (not yet written)."""
    host = host or get_host()
    ctx = _start(task)
    status, error, tb = "ok", None, None
    metrics: dict[str, float] = {}
    session = None
    start = time.perf_counter()
    with torch_state_restored() as changed:
        try:
            session = build_session(host, task, ctx)
            trainer = build_trainer(host, task.spec)
            with time_limit(task.timeout):            # training only: data and imports are not
                metrics = _final_metrics(trainer.fit(session))
        except KeyboardInterrupt:
            raise
        except (Exception, RunTimeout) as exc:  # noqa: BLE001 - recorded, never lost
            status, error, tb = _failure(exc)
    wall = time.perf_counter() - start
    slices = evaluate_slices(session) if status == "ok" else None
    return _record_row(host, task, ctx, status, error, tb, metrics, wall, warnings=changed,
                       slices=slices)


def execute_group(tasks: list[RunTask], host: PluginHost | None = None) -> list[dict[str, Any]]:
    """Run compatible tasks through one ``fit_group`` call (see
    :class:`~bench_core.interfaces.GroupTrainer`); return one record row per task, in order.

    A run whose session cannot be built (missing data, a bad component) fails alone; the others
    are trained together. ``wall_time_s`` of each record is its share of the group's wall time
    (group time / group size); ``group_wall_time_s`` and ``group_size`` say how it was run."""
    host = host or get_host()
    if len(tasks) == 1:
        return [execute_task(tasks[0], host)]
    contexts = [_start(t) for t in tasks]
    results: list[dict[str, float] | BaseException | None] = [None] * len(tasks)
    sessions, members = [], []
    by_task: dict[int, TrainingSession] = {}
    start = time.perf_counter()
    limit = tasks[0].timeout * len(tasks) if tasks[0].timeout else None
    with torch_state_restored() as changed:
        try:
            for i, (task, ctx) in enumerate(zip(tasks, contexts)):
                try:
                    sessions.append(build_session(host, task, ctx))
                    members.append(i)
                    by_task[i] = sessions[-1]
                except Exception as exc:  # noqa: BLE001 - recorded as this run's failure
                    results[i] = exc
            if sessions:
                for session in sessions:   # fit_group may refine it per run (fit_in_stacks)
                    session.ctx.stack_size = len(sessions)
                trainer = build_trainer(host, tasks[members[0]].spec)
                with time_limit(limit):
                    outs = trainer.fit_group(sessions)
                if not isinstance(outs, (list, tuple)) or len(outs) != len(sessions):
                    raise TypeError(
                        f"fit_group returned {type(outs).__name__} of length "
                        f"{len(outs) if hasattr(outs, '__len__') else '?'} for "
                        f"{len(sessions)} sessions; it must return one result per session")
                for i, out in zip(members, outs):
                    results[i] = out
        except KeyboardInterrupt:
            raise
        except (Exception, RunTimeout) as exc:  # noqa: BLE001 - the group failed: each run says so
            for i in members:
                if results[i] is None or not isinstance(results[i], dict):
                    results[i] = exc
    group_wall = time.perf_counter() - start
    rows = []
    for i, (task, ctx, out) in enumerate(zip(tasks, contexts, results)):
        status, error, tb, metrics = "ok", None, None, {}
        try:
            if isinstance(out, BaseException):
                raise out
            metrics = _final_metrics(out)
        except Exception as exc:  # noqa: BLE001
            status, error, tb = _failure(exc)
        slices = evaluate_slices(by_task.get(i)) if status == "ok" else None
        rows.append(_record_row(host, task, ctx, status, error, tb, metrics,
                                group_wall / len(tasks), group_size=len(tasks),
                                group_wall=group_wall, warnings=changed, slices=slices))
    return rows


def execute_and_record(unit: RunTask | list[RunTask]) -> list[RunOutcome]:
    """Executor work unit: run one task or a group of compatible tasks, write each record
    atomically, return their summaries. A run another process is training (a live claim, see
    :mod:`bench_core.execution.safeguards`) or has recorded meanwhile is left alone (status
    ``claimed``)."""
    tasks = unit if isinstance(unit, list) else [unit]
    folder = Path(tasks[0].results_dir)
    done = (recorded_run_ids(folder, RESUMED_STATUSES, quiet=True) if not tasks[0].force
            else set())
    mine, claims, outcomes = [], [], []
    for task in tasks:
        path = claim(folder, task.run_id) if task.run_id not in done else None
        if path is not None and not task.force and _recorded(folder, task.run_id):
            release([path])       # finished by another process since `done` was read
            path = None
        if path is None:
            outcomes.append(RunOutcome(task.run_id, task.entry, "claimed", None, None, 0.0))
        else:
            mine.append(task)
            claims.append(path)
    try:
        with heartbeat(claims):
            rows = (execute_group(mine) if len(mine) > 1 else
                    [execute_task(mine[0])] if mine else [])
        for task, row in zip(mine, rows):
            write_record(folder, row)
            outcomes.append(RunOutcome(task.run_id, task.entry, row["status"], row["error"],
                                       row["value"], row["wall_time_s"]))
    finally:
        release(claims)
    return outcomes


def _recorded(folder: Path, run_id: str) -> bool:
    """Whether ``run_id`` has a kept (``ok`` or ``diverged``) record in ``folder`` now."""
    path = folder / f"{run_id}.parquet"
    try:
        return pl.read_parquet(path, columns=["status"])["status"][0] in RESUMED_STATUSES
    except Exception:  # noqa: BLE001 - missing or unreadable: not recorded
        return False


def stackable(host: PluginHost, spec: dict[str, Any]) -> bool:
    """Whether the run's model lets its runs be grouped: a model whose parameter model sets
    ``stackable = False`` (compute-bound convolutions, where stacking gains little and a group
    would record its runs only at its end) keeps each run a work unit of its own, recorded as
    it finishes and spread over the workers."""
    model = spec.get("model")
    if not isinstance(model, dict) or "name" not in model:
        return True
    try:
        comp = host.get("models", model["name"])
    except PluginError:
        return True
    return getattr(comp.params, "stackable", True) is not False


def form_groups(tasks: list[RunTask], host: PluginHost, *, enabled: bool = True,
                max_size: int | None = None) -> list[list[RunTask]]:
    """Partition ``tasks`` into work units: runs whose trainer implements grouped runs and whose
    group keys match (same trainer table, device and reparametrizations too) share a unit,
    unless their model is not :func:`stackable`; every other run is a unit of its own. Order is kept (a group sits where its first run was). ``max_size`` and the
    trainer's ``max_group_size`` cap a unit's size."""
    if not enabled:
        return [[t] for t in tasks]
    units: list[list[RunTask]] = []
    open_units: dict[Any, list[RunTask]] = {}
    trainers: dict[str, Any] = {}
    for task in tasks:
        table = canonical_json(task.spec["trainer"])
        if table not in trainers:
            trainers[table] = build_trainer(host, task.spec)
        trainer = trainers[table]
        key = (trainer.group_key(task.spec)
               if isinstance(trainer, GroupTrainer) and stackable(host, task.spec) else None)
        if key is None:
            units.append([task])
            continue
        caps = [c for c in (max_size, getattr(trainer, "max_group_size", None)) if c]
        cap = min(caps) if caps else None
        # the host applies reparametrizations to whatever model a trainer builds: runs that
        # differ in them never share a unit, whatever the trainer's key says
        full_key = (table, task.device, key,
                    canonical_json(task.spec.get("reparametrization")), task.stage,
                    task.validation_fraction)
        unit = open_units.get(full_key)
        if unit is None or (cap is not None and len(unit) >= cap):
            unit = []
            open_units[full_key] = unit
            units.append(unit)
        unit.append(task)
    return units


@dataclass
class RunSummary:
    total: int
    skipped: int
    ran: int
    ok: int
    diverged: int
    failed: int
    timeout: int = 0
    claimed: int = 0
    interrupted: bool = False


RESUMED_STATUSES = ("ok", "diverged")
"""Records kept on resume; ``failed`` and ``timeout`` runs (a bug, a missing file, a hang)
are retried."""


def pending_tasks(plan: Plan, results_dir: Path, force: bool) -> tuple[list[RunTask], int]:
    """Tasks still to run, and how many are already recorded."""
    done = set() if force else recorded_run_ids(results_dir, RESUMED_STATUSES)
    todo = [t for t in plan.tasks if t.run_id not in done]
    return todo, len(plan.tasks) - len(todo)


def other_version_records(tasks: list[RunTask], results_dir: Path) -> int:
    """How many of ``tasks`` have a record in ``results_dir`` under another run id of the same
    run (``base_run_id``): one made by another version of a component. Records without the
    column predate versions: all their components were at version 1, their base id is their
    run id."""
    base = {t.base_run_id for t in tasks if t.base_run_id}
    if not base:
        return 0
    lf = read_records(results_dir, problems=[], required=False)
    if lf is None:
        return 0
    cols = lf.collect_schema().names()
    key = pl.coalesce("base_run_id", "run_id") if "base_run_id" in cols else pl.col("run_id")
    found = lf.select(key.alias("base"), "run_id").collect()
    ids = {t.run_id for t in tasks}
    return len({b for b, r in found.iter_rows() if b in base and r not in ids})


def run_plan(plan: Plan, results_root: str | Path, **options: Any) -> RunSummary:
    """Run every task of ``plan`` not yet recorded (all of them with ``force``); options as
    :func:`run_tasks`. A plan that selects a parameter (:class:`~bench_core.specs.model.
    Select`) runs in two stages: its selection runs, then, once a pair's are all recorded, the
    final runs with the value chosen (:mod:`bench_core.results.selection`)."""
    stage = plan.selection
    if stage is None or options.get("subfolder"):
        return run_tasks(plan, results_root, **options)
    from bench_core.results.selection import resolve

    first = RunSummary(total=0, skipped=0, ran=0, ok=0, diverged=0, failed=0)
    if stage.tasks:
        first = run_tasks(replace(plan, tasks=stage.tasks, selection=None), results_root,
                          label=f"{plan.name} (selection)", **options)
        if first.interrupted:
            return first
    results_dir = Path(results_root) / plan.name
    resolve(plan, read_records(results_dir, {t.run_id for t in stage.tasks}, required=False,
                               problems=[]))
    second = (run_tasks(plan, results_root, **options) if plan.tasks else
              RunSummary(total=0, skipped=0, ran=0, ok=0, diverged=0, failed=0))
    return RunSummary(**{f.name: getattr(first, f.name) + getattr(second, f.name)
                         for f in fields(RunSummary) if f.name != "interrupted"},
                      interrupted=second.interrupted)


def run_tasks(plan: Plan, results_root: str | Path, *, executor: str = "local", jobs: int = 1,
              force: bool = False, host: PluginHost | None = None, console=None,
              progress: bool = True, group: bool = True,
              max_group_size: int | None = None, threads: int | None = DEFAULT_THREADS,
              executor_options: dict[str, Any] | None = None,
              run_timeout: float | None = None, subfolder: str | None = None,
              label: str | None = None) -> RunSummary:
    """Run every task of ``plan.tasks`` not yet recorded (all of them with ``force``). A ``host``
    given here becomes the process-wide host, so in-process executors use its plugins.
    ``group``: let trainers that can train compatible runs as one batched computation do so
    (:func:`form_groups`); ``False`` runs them one by one. ``subfolder``: record into
    ``<results>/<name>/<subfolder>/`` (the perturbed twins of ``untied stability``).
    ``label``: the progress bar's name (default: the plan's)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if host is not None:
        set_host(host)
    host = get_host()
    git_commit()   # the commit of the code this process loaded, not of a later checkout
    console = console or Console(stderr=True, soft_wrap=True, highlight=False)
    results_dir = Path(results_root) / plan.name
    if subfolder:
        results_dir = results_dir / subfolder
    check_writable(results_dir)
    for t in plan.tasks:
        t.results_dir = str(results_dir)
        t.threads, t.timeout, t.force = threads, run_timeout, force
    todo, skipped = pending_tasks(plan, results_dir, force)
    superseded = other_version_records(todo, results_dir) if todo and not force else 0
    if superseded:
        console.print(f"note: {superseded} of the runs to do have records in {results_dir} made "
                      f"by other versions of their components or of a parameter value (the "
                      f"numerics changed); they "
                      f"are trained again, and the old records are never counted in a table")
    if todo:
        from bench_core.results.export import write_spec_file

        write_spec_file(results_dir, plan)
    summary = RunSummary(total=len(plan.tasks), skipped=skipped, ran=0, ok=0, diverged=0, failed=0)
    sweep_stale_claims(results_dir)   # a killed run's claim, left beside the record it wrote
    if not todo:
        console.print(f"{plan.name}: all {len(plan.tasks)} runs already recorded in {results_dir} "
                      f"(--force reruns them)")
        return summary

    exec_comp = host.get("executors", executor)
    fields = exec_comp.params.model_fields
    options = dict(executor_options or {})
    unknown = [k for k in options if k not in fields]
    if unknown:
        raise SpecError(f"--{unknown[0]}: executor '{executor}' takes no such option "
                        f"(its options: {', '.join(fields) or 'none'})")
    if "jobs" in fields:
        options.setdefault("jobs", jobs)
    try:
        exec_params = exec_comp.params.model_validate(options)
    except ValidationError as exc:
        raise SpecError(f"executor '{executor}': {format_validation_error(exc)}") from None
    runner = exec_comp.factory(exec_params)
    units = form_groups(todo, host, enabled=group, max_size=max_group_size)
    grouped = "" if len(units) == len(todo) else f" in {len(units)} groups"
    console.print(f"{escape(plan.name)} \\[{plan.profile}]: {len(todo)} runs to do{grouped}, {skipped} "
                  f"already recorded; executor {executor}, {threads or 'default'} torch "
                  f"thread(s) per run, results in {results_dir}")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("failed/diverged {task.fields[bad]}"), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    threads_before = torch.get_num_threads()
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
        job = bar.add_task(label or plan.name, total=len(plan.tasks), completed=skipped, bad=0)
        try:
            for outcomes in runner.map(execute_and_record, units):
                for outcome in outcomes:
                    if outcome.status == "claimed":
                        summary.claimed += 1
                        bar.update(job, advance=1)
                        continue
                    summary.ran += 1
                    if outcome.status == "ok":
                        summary.ok += 1
                    else:
                        setattr(summary, outcome.status, getattr(summary, outcome.status) + 1)
                        bar.console.print(f"[yellow]{outcome.status}[/]: {escape(outcome.entry)} "
                                          f"(run {outcome.run_id}): {escape(outcome.error or '')}")
                    bar.update(job, advance=1,
                               bad=summary.failed + summary.diverged + summary.timeout)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            set_threads(threads_before)  # in-process executors changed this process's setting
    return summary


def check_data(host: PluginHost, tasks: list[RunTask]) -> None:
    """Build every distinct dataset of ``tasks`` once and raise the first ``DataError`` (data
    that is missing or unreadable), so that it is reported once, before any training, rather
    than recorded as the failure of every run. Other errors are left to the runs."""
    from bench_core.errors import DataError

    seen: set[str] = set()
    for task in tasks:
        key = canonical_json(task.spec["dataset"])
        if key in seen:
            continue
        seen.add(key)
        comp, params = resolve_component(host, "dataset", task.spec["dataset"])
        try:
            comp.factory(params, ctx=RunContext(seed=task.seed, device=torch.device("cpu")))
        except DataError:
            raise
        except Exception:  # noqa: BLE001 - not a data problem: the run records it
            pass


def check_writable(folder: Path) -> None:
    """Fail before any training when ``folder`` cannot hold records (one line, exit 2)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UntiedError(f"results folder {folder}: cannot write records there "
                          f"({type(exc).__name__}: {exc.strerror or exc})") from None
