"""Every built-in on one device: a short run of each committed leaderboard's first cell per entry.

Run on demand: ``python benchmarks/device.py --device cuda`` (on a GPU machine this is the whole
check that every built-in runs there) or ``--device cpu`` (in the default test suite,
``tests/test_device_script.py``). ``--spec NAME`` limits it to some leaderboards.

For each leaderboard in ``leaderboards/*.toml`` (its default profile) and each entry, the
entry's first run (first grid cell, first seed) is shortened and trained twice on ``--device``:
with a training pool of ``n`` and of ``factor x n`` samples (``--samples``, ``--factor``; the
dataset's ``train_subset`` or ``n_train``), one epoch, mini-batches of at most ``n / 2``
(``batch_size``), ``iterations = eval_every = pool`` for iteration-based trainers, and
evaluations on the first 64 test samples. What differs between the two
runs is training steps only, so the differences give, per training step:

* ``step ms``: wall time (the device synchronised at the end of each run);
* ``syncs/step``: host synchronisations issued inside the training loop, counted with a
  ``TorchFunctionMode`` over the calls that block on the device (``item``, ``tolist``,
  ``bool``/``float``/``int`` of a tensor, ``numpy``, ``cpu``, ``nonzero``, boolean-mask
  indexing, ``.to("cpu")``), outside ``ctx.log_epoch`` (the one allowed sync per epoch). Calls
  that happen once per run or per evaluation cancel out; zero is expected;
* ``peak MB``: peak device memory of the longer run (CUDA: ``max_memory_allocated``; CPU: not
  measured, ``-``).

A row is ``ok``, ``failed: <reason>`` (the check fails) or ``skipped: <reason>`` (its data are
not on this machine). A built-in component that no first cell uses is then swapped (default
parameters) into the first cells that have its field, in order, until one runs (``ok`` or
``skipped``); the last attempt is printed. Then every registered built-in component is listed
with the rows that used it (``NOT RUN`` when none could). The last line is machine-readable::

    device: device=D runs=N ok=A failed=F skipped=S syncs_per_step_max=X uncovered=U

Exit status 1 when a run failed or a run synchronised inside its training step.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from bench_core.errors import DataError, Diverged
from bench_core.execution.runner import build_session, build_trainer
from bench_core.interfaces import RunContext, in_cpu_only_host_read
from bench_core.plugins import get_host
from bench_core.specs.model import COMPONENT_FIELDS, LIST_FIELDS, load_spec
from bench_core.specs.plan import expand, resolve_component

ROOT = Path(__file__).resolve().parents[1]
EVALUATED = 64
"""Test samples each shortened run is evaluated on."""
BLOCKING = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu",
            "nonzero", "argwhere", "masked_select", "unique", "__repr__", "__format__"}


class SyncCounter(TorchFunctionMode):
    """Counts tensor calls that make the host wait for the device (module docstring)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.count = 0
        self.paused = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            name = getattr(func, "__name__", "")
            if (name in BLOCKING or (name == "__getitem__" and _bool_index(args)) or (
                    name == "to" and _to_host(args, kwargs))) and self._blocks(args):
                self.count += 1
        return func(*args, **kwargs)

    def _blocks(self, args) -> bool:
        """Whether the call waits for the run's device: not when torch's own code makes it
        (an optimizer's step counter is kept on the host by design; ``clip_grad_norm_`` moves
        norms between devices), nor, on an accelerator, for a tensor that lives on the host."""
        if in_cpu_only_host_read():      # a branch the plugin takes on the CPU only
            return False
        caller = sys._getframe(2).f_globals.get("__name__", "")
        if caller == "torch" or caller.startswith("torch."):
            return False
        first = args[0] if args else None
        return not (self.device.type != "cpu" and isinstance(first, torch.Tensor)
                    and first.device.type == "cpu")


def _bool_index(args) -> bool:
    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _to_host(args, kwargs) -> bool:
    """``tensor.to("cpu")`` of a tensor on an accelerator (on the CPU a no-op, not counted)."""
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    source = args[0] if args else None
    return (isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"
            and isinstance(source, torch.Tensor) and source.device.type != "cpu")


def shortened(host, spec: dict[str, Any], pool: int, batch: int) -> dict[str, Any]:
    """The run spec with a training pool of ``pool`` samples and one epoch of mini-batches of
    at most ``batch``."""
    spec = copy.deepcopy(spec)
    _, data_params = resolve_component(host, "dataset", spec["dataset"])
    for field in ("train_subset", "n_train"):
        if field in type(data_params).model_fields:
            spec["dataset"][field] = pool
            break
    _, trainer_params = resolve_component(host, "trainer", spec["trainer"])
    fields = type(trainer_params).model_fields
    values = {"epochs": 1, "iterations": pool, "eval_every": pool}
    spec["trainer"].update({k: v for k, v in values.items() if k in fields})
    if "batch_size" in fields:
        spec["trainer"]["batch_size"] = min(batch, getattr(trainer_params, "batch_size") or batch)
    return spec


def train(host, task, spec: dict[str, Any], device: torch.device) -> tuple[float, int, int]:
    """Train once; return (seconds, syncs outside log_epoch, peak device bytes)."""
    ctx = RunContext(seed=task.seed, device=device)
    session = build_session(host, dataclasses.replace(task, spec=spec), ctx)
    data = session.data  # evaluations on EVALUATED test samples: what is timed is training
    session.data = dataclasses.replace(
        data, x_test=data.x_test[:EVALUATED], y_test=data.y_test[:EVALUATED],
        eval_sets={k: (x[:EVALUATED], y[:EVALUATED]) for k, (x, y) in data.eval_sets.items()})
    trainer = build_trainer(host, spec)
    counter = SyncCounter(device)
    log_epoch = ctx.log_epoch

    def logged(*args, **kwargs):
        counter.paused += 1
        try:
            return log_epoch(*args, **kwargs)
        finally:
            counter.paused -= 1

    ctx.log_epoch = logged
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with counter:
        try:
            trainer.fit(session)
        except Diverged:  # at an epoch's end, after every step: the counts are complete
            pass
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if cuda else 0
    return seconds, counter.count, peak


def first_tasks(host, spec_path: Path) -> list:
    """The first task (first cell, first seed) of each entry of the spec's default profile
    (for a spec that selects a parameter, the entry's first selection run: a run like the
    others, on the training split less the validation part)."""
    name, spec = load_spec(spec_path)
    plan = expand(host, name, spec)
    first: dict[int, Any] = {}
    for task in plan.all_tasks:  # a spec that selects a parameter: its selection runs first
        first.setdefault(task.entry_index, task)
    return [first[i] for i in sorted(first)]


def components_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for field, family in COMPONENT_FIELDS.items():
        value = spec.get(field)
        tables = value if field in LIST_FIELDS and isinstance(value, list) else [value]
        out += [(family, t["name"]) for t in tables if isinstance(t, dict) and "name" in t]
    return out


def measure(host, task, spec: dict[str, Any], args, device) -> tuple[str, str]:
    """Train the shortened run twice (pool n and factor x n); return (status, row text)."""
    batch = max(1, args.samples // 2)
    short = shortened(host, spec, args.samples, batch)
    long = shortened(host, spec, args.factor * args.samples, batch)
    runs = {"short": [], "long": []}
    with contextlib.redirect_stdout(sys.stderr):
        for _ in range(args.repeats):
            runs["short"].append(train(host, task, short, device))
            runs["long"].append(train(host, task, long, device))
    (t1, s1, _), (t2, s2, peak) = (min(runs["short"]), min(runs["long"]))
    steps = _steps(host, long) - _steps(host, short)
    per_step = (s2 - s1) / steps if steps else float(s2 - s1)
    status = "ok" if per_step == 0 else "failed"
    detail = f" ({s2 - s1} blocking calls in {steps} extra steps)" if per_step else ""
    ms = 1000 * (t2 - t1) / steps if steps else float("nan")
    mem = f"{peak / 2**20:8.1f}" if device.type == "cuda" else f"{'-':>8s}"
    return status, f"{status:8s} {ms:8.2f} {per_step:10.2f} {mem}{detail}", per_step


def attempt(host, task, spec, args, device) -> tuple[str, str, float]:
    """:func:`measure`, with a missing data set as ``skipped`` and an error as ``failed``."""
    try:
        return measure(host, task, spec, args, device)
    except DataError as err:
        return "skipped", f"skipped: {str(err).splitlines()[0][:110]}", 0.0
    except Exception as err:  # noqa: BLE001 - reported per row
        first = str(err).splitlines()[0][:110] if str(err) else ""
        return "failed", f"failed: {type(err).__name__}{': ' + first if first else ''}", 0.0


def builtin_components(host) -> list[tuple[str, str]]:
    out = []
    for field, family in COMPONENT_FIELDS.items():
        for name, comp in sorted(host.family(family).items()):
            info = host.plugins.get(comp.plugin)
            if info is not None and info.builtin:
                out.append((family, name))
    return out


def substituted(task, family: str, name: str) -> dict[str, Any] | None:
    """The task's spec with component ``name`` (default parameters) in ``family``'s field
    (a reparametrization is added), or None when the spec has no such field to replace."""
    field = next(f for f, fam in COMPONENT_FIELDS.items() if fam == family)
    if field not in task.spec and field != "reparametrization":
        return None
    spec = copy.deepcopy(task.spec)
    spec[field] = {"name": name}
    return spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--samples", type=int, default=32, help="training pool n of the short run")
    ap.add_argument("--factor", type=int, default=4, help="the long run's pool: factor x n")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each length (min time)")
    ap.add_argument("--spec", action="append", help="only this leaderboard (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"device.py: {args.device} requested but torch sees no CUDA device",
              file=sys.stderr)
        return 2
    host = get_host()
    specs = sorted((ROOT / "leaderboards").glob("*.toml"))
    if args.spec:
        specs = [p for p in specs if p.stem in args.spec]
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", threads {torch.get_num_threads()}, pools {args.samples} and "
          f"{args.factor * args.samples}, {args.repeats} repeat(s)")
    print(f"{'leaderboard / entry':58s} {'status':8s} {'step ms':>8s} {'syncs/step':>10s} "
          f"{'peak MB':>8s}")
    used: dict[tuple[str, str], list[str]] = {}
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    worst = 0.0
    tasks = [(path.stem, task) for path in specs for task in first_tasks(host, path)]
    for board, task in tasks:
        label = f"{board} / {task.entry}"[:58]
        status, text, per_step = attempt(host, task, task.spec, args, device)
        print(f"{label:58s} {text}")
        counts[status] += 1
        worst = max(worst, per_step)
        for comp in components_of(task.spec):
            used.setdefault(comp, []).append(label)
    # built-ins no first cell uses: swapped into the first cells that have their field
    for family, name in builtin_components(host):
        if (family, name) in used:
            continue
        tried = []
        for board, task in tasks:
            spec = substituted(task, family, name)
            if spec is None:
                continue
            label = f"{family}/{name} in {board} / {task.entry}"[:58]
            status, text, per_step = attempt(host, task, spec, args, device)
            tried.append((label, status, text))
            if status != "failed":
                break
        if tried:
            label, status, text = tried[-1]
            print(f"{label:58s} {text}")
            counts[status] += 1
            if status != "failed":
                used[(family, name)] = [label]
    uncovered = []
    print("\nbuilt-in components and the runs above that used them:")
    for family, name in builtin_components(host):
        runs = used.get((family, name), [])
        if not runs:
            uncovered.append(f"{family}/{name}")
        print(f"  {family:18s} {name:28s} "
              + (f"{len(runs)} run(s), e.g. {runs[0]}" if runs else "NOT RUN"))
    print(f"device: device={device} runs={sum(counts.values())} ok={counts['ok']} "
          f"failed={counts['failed']} skipped={counts['skipped']} "
          f"syncs_per_step_max={worst:g} uncovered={len(uncovered)}")
    return 1 if counts["failed"] or uncovered else 0


def _steps(host, spec: dict[str, Any]) -> int:
    """Training steps of a shortened spec: its pool over its batch size, or its iterations."""
    _, params = resolve_component(host, "trainer", spec["trainer"])
    pool = spec["dataset"].get("train_subset") or spec["dataset"].get("n_train")
    if "iterations" in type(params).model_fields:
        return int(spec["trainer"]["iterations"])
    batch = getattr(params, "batch_size", None) or pool
    return -(-int(pool) // int(batch)) * int(getattr(params, "epochs", 1) or 1)


if __name__ == "__main__":
    sys.exit(main())
