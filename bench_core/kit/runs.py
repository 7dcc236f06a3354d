"""The runs of the conformance kit (:mod:`bench_core.kit.check`): the kit's run spec for a
component, tasks, training on the CPU under a given global random state, and what a check
reports."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench_core.execution.runner import build_session, build_trainer
from bench_core.interfaces import RunContext, derive_seed
from bench_core.plugins import Component, PluginHost
from bench_core.specs.model import short_hash
from bench_core.specs.plan import RunTask, resolve_component


@dataclass
class Check:
    component: str
    check: str
    status: str  # "pass" | "fail" | "skip"
    message: str = ""



class Nonconforming(Exception):
    """A broken contract, with a message that says what to fix."""


def kit_spec(host: PluginHost, comp: Component, **changes: Any) -> dict[str, Any]:
    """The canonical run spec in which the kit exercises ``comp`` (module docstring)."""
    from bench_core.specs.model import COMPONENT_FIELDS, merge
    from bench_core.specs.plan import resolve_run

    slot = {family: key for key, family in COMPONENT_FIELDS.items()}[comp.family]
    over = copy.deepcopy(getattr(comp.params, "conformance_run", None) or {})
    own = {k: v for k, v in (over.pop(slot, None) or {}).items() if k != "name"}
    raw = merge(merge(KIT_RUN, over), changes)
    raw[slot] = {**own, **changes.get(slot, {}), "name": comp.name}
    return resolve_run(host, raw)


KIT_RUN: dict[str, Any] = {
    "dataset": {"name": "kit_blobs", "shape": [1, 8, 8]}, "model": {"name": "kit_mlp"},
    "activation": {"name": "kit_tanh"}, "rule": {"name": "kit_sgd"},
    "trainer": {"name": "kit_steps"}}


SAME = {"rel_tol": 1e-6, "abs_tol": 1e-9}
GROUPED = {"rel_tol": 1e-4, "abs_tol": 1e-6}
FIELD = {"activations": "activation", "surrogates": "surrogate", "update_rules": "rule",
         "trainers": "trainer", "models": "model", "datasets": "dataset",
         "reparametrizations": "reparametrization"}


def kit_square(x: int) -> int:
    """What the kit maps over an executor (a picklable module-level function)."""
    return x * x


def task_of(spec: dict[str, Any], seed_index: int = 0) -> RunTask:
    return RunTask(leaderboard="conformance", profile="kit", entry="kit", entry_index=0,
                   is_baseline=False, cell={}, cell_index=0, seed_index=seed_index,
                   seed=derive_seed(seed_index, "conformance"), spec=spec,
                   run_id=short_hash({"spec": spec, "seed": seed_index}),
                   metric="", higher_is_better=True, device="cpu")


def metrics_of(out: Any, what: str = "fit") -> dict[str, float]:
    if not isinstance(out, Mapping):
        raise Nonconforming(f"{what} returned {type(out).__name__}; it must return a dict of "
                            f"metric name -> float (ctx.log_epoch returns one)")
    metrics = {}
    for key, value in out.items():
        if not isinstance(key, str):
            raise Nonconforming(f"{what} returned a metric named {key!r}: names are strings")
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            raise Nonconforming(f"{what} returned metric '{key}' = {type(value).__name__}, not "
                                f"a number") from None
        if not math.isfinite(metrics[key]):
            raise Nonconforming(f"{what} returned a non-finite '{key}' on the kit's data")
    if not metrics:
        raise Nonconforming(f"{what} returned no metric")
    return metrics


def fit(host: PluginHost, task: RunTask, global_seed: int):
    """Train ``task`` on the CPU after setting every global generator to ``global_seed``."""
    torch.manual_seed(global_seed)
    random.seed(global_seed)
    np.random.seed(global_seed)
    ctx = RunContext(seed=task.seed, device=torch.device("cpu"))
    session = build_session(host, task, ctx)
    return metrics_of(build_trainer(host, task.spec).fit(session)), session


def differ(a: dict[str, float], b: dict[str, float], tol: dict[str, float]) -> str | None:
    if a.keys() != b.keys():
        return f"metrics {sorted(a)} vs {sorted(b)}"
    bad = [k for k in a if not math.isclose(a[k], b[k], **tol)]
    return f"{bad[0]} {a[bad[0]]:.8g} vs {b[bad[0]]:.8g}" if bad else None


def activation_of(host: PluginHost, spec: dict[str, Any]) -> Any:
    """The run's activation object (the kit's unless the component's run names another)."""
    _, params = resolve_component(host, "activation", spec["activation"])
    return host.get("activations", spec["activation"]["name"]).factory(params)
