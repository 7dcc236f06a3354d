"""No built-in trainer, model, surrogate or rule synchronises with the host inside a training
step: a torch function mode fails on ``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()`` and
Python ``bool``/``int``/``float`` of a tensor when the call comes from untied-bench's own code.

The check covers everything a trainer does between two logs (``ctx.log_epoch`` is the one sync
per epoch allowed, and is let through; building the model and the rule is not a step either). What it cannot see, and says so: calls made inside torch
itself (``torch.optim.Adam`` reads its step counter with ``.item()`` on the CPU unless
``capturable``; that is torch's choice and is exempt here), and work a CUDA kernel does
asynchronously (no CUDA device here)."""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch
import untied_plugins
from torch.overrides import TorchFunctionMode

import bench_core
from bench_core.execution.runner import build_session, build_trainer
from bench_core.interfaces import RunContext
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand

OURS = tuple(os.path.dirname(m.__file__) + os.sep for m in (bench_core, untied_plugins))
SYNCS = {"item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"}


class HostSyncGuard(TorchFunctionMode):
    """Records every host-synchronising tensor call whose caller is our code."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = 0
        self.violations: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCS and not self.paused:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename == __file__:
                frame = frame.f_back
            caller = frame.f_code.co_filename if frame is not None else ""
            if caller.startswith(OURS):
                self.violations.append(f"{name} at {os.path.relpath(caller)}:{frame.f_lineno} "
                                       f"({frame.f_code.co_name})")
        return func(*args, **(kwargs or {}))


class GuardedContext(RunContext):
    """A run context whose once-per-epoch log may sync (the guard pauses inside it)."""

    guard: HostSyncGuard | None = None

    def log_epoch(self, *args, **kwargs):
        self.guard.paused += 1
        try:
            return super().log_epoch(*args, **kwargs)
        finally:
            self.guard.paused -= 1


BASE = {
    "dataset": {"name": "digits", "train_subset": 64},
    "model": {"name": "mlp", "hidden": [8]},
    "activation": {"name": "relu"},
    "rule": {"name": "sgd", "lr": 0.05},
    "trainer": {"name": "backprop", "epochs": 1, "batch_size": 16},
}
CASES = {
    "trainer backprop": {},
    "trainer backprop + diagnostic": {"trainer": {"direction_diagnostic": True}},
    "trainer online": {"trainer": {"name": "online", "iterations": 20, "eval_every": 10,
                                   "loss": "cross_entropy"}},
    "model suc": {"model": {"name": "suc"}, "dataset": {"name": "ones", "dim": 6,
                                                        "n_samples": 80}},
    "model mlp+bn+binary": {"model": {"name": "mlp", "hidden": [8], "batchnorm": True,
                                      "binary_weights": True}},
    "model lenet5": {"model": {"name": "lenet5"}},
    "model cnn": {"model": {"name": "cnn", "channels": [4], "hidden": 8}},
    "rule adam": {"rule": {"name": "adam"}},
    "rule sgd+manipulations": {"rule": {"name": "sgd", "lr": 0.05, "momentum": 0.9,
                                        "clip_norm": 1.0, "grad_noise_std": 0.01,
                                        "grad_keep_prob": 0.9, "centralize": True}},
    "rule dual_weight": {"rule": {"name": "dual_weight"}},
    "rule dual_weight_stable": {"rule": {"name": "dual_weight_stable"}},
    "rule l2": {"rule": {"name": "l2", "penalty": 0.1}},
    "trainer mono_forward autograd": {"trainer": {"name": "mono_forward", "epochs": 1,
                                                  "batch_size": 16}},
    "trainer mono_forward directional": {"trainer": {"name": "mono_forward", "epochs": 1,
                                                     "batch_size": 16,
                                                     "estimator": "directional",
                                                     "direction_diagnostic": True}},
    "trainer mono_forward directional cnn": {
        "model": {"name": "cnn", "channels": [4], "hidden": 8},
        "trainer": {"name": "mono_forward", "epochs": 1, "batch_size": 16,
                    "estimator": "directional", "projection_dim": 8, "schedule": "greedy"}},
    "trainer forward_gradient": {"trainer": {"name": "forward_gradient", "epochs": 1,
                                             "batch_size": 16}},
    "trainer spsa": {"trainer": {"name": "spsa", "epochs": 1, "batch_size": 16}},
    "trainer spsa rademacher": {"trainer": {"name": "spsa", "epochs": 1, "batch_size": 16,
                                            "direction": "rademacher"}},
    "trainer forward_forward": {"model": {"name": "mlp", "hidden": [8, 8]},
                                "trainer": {"name": "forward_forward", "epochs": 1,
                                            "batch_size": 16}},
    "trainer forward_forward cnn + adam": {
        "model": {"name": "cnn", "channels": [4], "hidden": 8}, "rule": {"name": "adam"},
        "trainer": {"name": "forward_forward", "epochs": 1, "batch_size": 16,
                    "input_norm": "unit", "threshold": 2.0}},
    "trainer spsa sign + momentum + decay": {
        "trainer": {"name": "spsa", "epochs": 1, "batch_size": 16, "update": "sign",
                    "chunk_size": 50},
        "rule": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}},
}
for name in ("tied", "constant", "rect", "triangular", "d_logistic", "full_jamming",
             "positive_jamming", "rect_jamming", "atan", "superspike", "sigmoid_slope",
             "approx_sign", "swish_sign"):
    CASES[f"surrogate {name}"] = {"surrogate": {"name": name}}


def paused(guard: HostSyncGuard, fn):
    def call(*args, **kwargs):
        guard.paused += 1
        try:
            return fn(*args, **kwargs)
        finally:
            guard.paused -= 1

    return call


def merge(base, over):
    out = copy.deepcopy(base)
    for key, table in over.items():
        if key not in out or ("name" in table and table["name"] != out[key]["name"]):
            out[key] = dict(table)
        else:
            out[key].update(table)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_no_host_sync_inside_a_training_step(untied_host, case):
    raw = {"title": "h", "seeds": 1, "defaults": merge(BASE, CASES[case]),
           "entries": [{"label": "x"}]}
    name, spec = parse_spec(raw, stem="h")
    task = expand(untied_host, name, spec).tasks[0]
    guard = HostSyncGuard()
    ctx = GuardedContext(seed=task.seed, device=torch.device("cpu"))
    ctx.guard = guard
    session = build_session(untied_host, task, ctx)
    session.build_model = paused(guard, session.build_model)   # construction, not a step
    session.build_rule = paused(guard, session.build_rule)
    trainer = build_trainer(untied_host, task.spec)
    with guard:
        metrics = trainer.fit(session)
    assert metrics, "the trainer reported nothing"
    assert not guard.violations, "host syncs inside the step:\n" + "\n".join(
        sorted(set(guard.violations)))


def test_the_guard_catches_a_sync_in_our_code_and_only_there():
    from untied_plugins.backprop import trainer as trainers

    guard = HostSyncGuard()
    with guard:
        torch.ones(()).item()                  # a call from this test file: not ours
    assert guard.violations == []
    with guard:
        exec(compile("torch.ones(()).item()", trainers.__file__, "exec"), {"torch": torch})
    assert guard.violations and guard.violations[0].startswith("item at ")


@pytest.mark.parametrize("case", ["trainer backprop", "trainer backprop + diagnostic",
                                  "trainer online", "rule adam", "rule dual_weight_stable",
                                  "rule l2"])
def test_no_host_sync_inside_a_grouped_step(untied_host, case):
    over = CASES[case]
    if case.startswith("rule") and "online" not in str(over):
        over = {**over, **({"trainer": CASES["trainer online"]["trainer"]}
                           if "dual" in case or "l2" in case else {})}
    raw = {"title": "h", "seeds": 3, "defaults": merge(BASE, over), "entries": [{"label": "x"}]}
    name, spec = parse_spec(raw, stem="h")
    tasks = expand(untied_host, name, spec).tasks
    guard = HostSyncGuard()
    sessions = []
    for task in tasks:
        ctx = GuardedContext(seed=task.seed, device=torch.device("cpu"))
        ctx.guard = guard
        session = build_session(untied_host, task, ctx)
        session.build_model = paused(guard, session.build_model)
        session.build_rule = paused(guard, session.build_rule)
        sessions.append(session)
    trainer = build_trainer(untied_host, tasks[0].spec)
    with guard:
        results = trainer.fit_group(sessions)
    assert all(isinstance(r, dict) and r for r in results), results
    assert not guard.violations, "host syncs inside the step:\n" + "\n".join(
        sorted(set(guard.violations)))
