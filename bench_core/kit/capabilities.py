"""Capability checks of the conformance kit: grouped runs, elementwise surrogates, layered
models, reparametrizations' tied twins (declared truthfully), and executors (see
:mod:`bench_core.kit.check`)."""

from __future__ import annotations

from typing import Any

import torch

from bench_core.execution.runner import build_session, build_trainer
from bench_core.interfaces import RunContext
from bench_core.kit.runs import (
    GROUPED,
    Check,
    Nonconforming,
    activation_of,
    differ,
    fit,
    kit_square,
    metrics_of,
    task_of,
)
from bench_core.plugins import Component, PluginHost
from bench_core.specs.plan import resolve_component


def _outcome(label: str, name: str, fn) -> Check:
    try:
        return Check(label, name, "pass", fn())
    except Nonconforming as exc:
        return Check(label, name, "fail", str(exc))
    except Exception as exc:  # noqa: BLE001 - the plugin's own error, said as such
        return Check(label, name, "fail", f"raised {type(exc).__name__}: {exc}")


def equal_to_alone(host: PluginHost, spec: dict[str, Any], trainer: Any) -> str:
    """``fit_group`` on three runs (differing only by seed) gives what ``fit`` gives alone."""
    tasks = [task_of(spec, seed_index=i) for i in range(3)]
    keys = [trainer.group_key(t.spec) for t in tasks]
    for key in keys:
        try:
            hash(key)
        except TypeError:
            raise Nonconforming(f"group_key returned an unhashable {type(key).__name__}: "
                                f"return a string, number or tuple") from None
    if any(k is None for k in keys):
        return "group_key returns None for these runs: they are trained alone"
    if len(set(keys)) > 1:
        raise Nonconforming("group_key differs between runs of one spec: it must be a pure "
                            "function of the spec")
    alone = [fit(host, t, global_seed=3)[0] for t in tasks]
    sessions = [build_session(host, t, RunContext(seed=t.seed, device=torch.device("cpu")))
                for t in tasks]
    outs = build_trainer(host, spec).fit_group(sessions)
    if not isinstance(outs, (list, tuple)) or len(outs) != len(tasks):
        raise Nonconforming(f"fit_group returned {type(outs).__name__} for {len(tasks)} "
                            f"sessions; it must return one result per session, in order")
    for k, (out, ref) in enumerate(zip(outs, alone)):
        if isinstance(out, BaseException):
            raise Nonconforming(f"fit_group failed run {k} ({type(out).__name__}: {out}) which "
                                f"fit trains")
        diff = differ(metrics_of(out, "fit_group"), ref, GROUPED)
        if diff:
            raise Nonconforming(f"fit_group differs from fit for run {k} ({diff}): grouped runs "
                                f"must give what runs alone give")
    return f"fit_group on {len(tasks)} runs equals fit on each"


def grouped_runs(host: PluginHost, spec: dict[str, Any]) -> str:
    trainer = build_trainer(host, spec)
    has_key = callable(getattr(trainer, "group_key", None))
    has_group = callable(getattr(trainer, "fit_group", None))
    if not (has_key or has_group):
        return "not declared (no group_key/fit_group)"
    if has_key != has_group:
        have, lack = ("group_key", "fit_group") if has_key else ("fit_group", "group_key")
        raise Nonconforming(f"defines {have} but no {lack}: the runner groups only trainers "
                            f"with both (bench_core.interfaces.GroupTrainer)")
    cap = getattr(trainer, "max_group_size", None)
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise Nonconforming(f"max_group_size = {cap!r}: use None or an int >= 1")
    return equal_to_alone(host, spec, trainer)


def elementwise(host: PluginHost, comp: Component, spec: dict[str, Any]) -> str:
    """A surrogate declaring ``elementwise = True`` acts on a stack of runs as run by run."""
    _, params = resolve_component(host, "surrogate", spec["surrogate"])
    module = comp.factory(params, activation=activation_of(host, spec),
                          ctx=RunContext(0, torch.device("cpu")))
    if not getattr(module, "elementwise", False):
        return "not declared (elementwise is not True)"
    if list(module.parameters()):
        raise Nonconforming("declares elementwise = True but has parameters")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, generator=gen).requires_grad_()
    upstream = torch.randn(2, 5, 4, generator=gen)
    y = module(x)
    (grad,) = torch.autograd.grad((y * upstream).sum(), x)
    for k in range(2):
        xk = x[k].detach().requires_grad_()
        yk = module(xk)
        (gk,) = torch.autograd.grad((yk * upstream[k]).sum(), xk)
        if not (torch.allclose(yk, y[k], atol=1e-6) and torch.allclose(gk, grad[k], atol=1e-6)):
            raise Nonconforming("declares elementwise = True but a stack of runs gives another "
                                "forward or backward than each run alone: set it False")
    return "elementwise = True holds on a stack of two runs (forward and backward)"


def layered(host: PluginHost, spec: dict[str, Any]) -> str:
    """A model exposing ``blocks()`` returns a non-empty sequence of its own parts."""
    session = build_session(host, task_of(spec), RunContext(0, torch.device("cpu")))
    model = session.build_model()
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        return "not declared (no blocks())"
    if not callable(blocks):
        raise Nonconforming("has a blocks attribute that is not callable")
    parts = list(blocks())
    if not parts:
        raise Nonconforming("blocks() returned no block")
    own = {id(p) for p in model.parameters()}
    for part in parts:
        params = part.parameters() if callable(getattr(part, "parameters", None)) else []
        if any(id(p) not in own for p in params):
            raise Nonconforming("blocks() returned parameters that are not the model's own")
    return f"blocks() returns {len(parts)} block(s) of the model's own parameters"


def _gradients(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient of a fixed scalar of the model's output w.r.t. each named parameter."""
    params = dict(model.named_parameters())
    out = model(x)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(params.items(), grads)}


def tied_twin(host: PluginHost, comp: Component, spec: dict[str, Any]) -> str:
    """A reparametrization that leaves the model's function unchanged but changes its
    gradients changes the backward pass only: it must declare ``tied`` and leave the twin
    alone, whose gradient is then the plain model's (the true back-propagation gradient)."""
    from bench_core.execution.runner import accepts_keyword

    task = task_of(spec)
    plain_spec = {k: v for k, v in spec.items() if k != "reparametrization"}
    ctx = RunContext(seed=task.seed, device=torch.device("cpu"))
    session = build_session(host, task, ctx)
    plain = build_session(host, task_of(plain_spec), ctx).build_model()
    x = session.data.x_train[:8]
    model = session.build_model()
    with torch.no_grad():
        same_forward = (model(x).shape == plain(x).shape
                        and torch.allclose(model(x), plain(x), atol=1e-6))
    if not same_forward:
        return "changes the model's function (the forward): applied to the tied twin too"
    ours, true = _gradients(model, x), _gradients(plain, x)
    if ours.keys() != true.keys():
        return "renames the model's parameters: gradients not compared"
    changed = any(not torch.allclose(ours[n], true[n], atol=1e-6) for n in true)
    declared = accepts_keyword(comp.factory, "tied")
    if not changed:
        return "changes neither the forward nor the gradients on the kit's batch"
    if not declared:
        raise Nonconforming("leaves the model's function unchanged but changes its gradients "
                            "(a backward-only change): declare the keyword `tied` in the "
                            "factory and return the model unchanged when it is True, so the "
                            "direction diagnostic's twin gives the true gradient")
    twin = _gradients(session.build_model(tied=True), x)
    if twin.keys() != true.keys() or any(not torch.allclose(twin[n], true[n], atol=1e-6)
                                         for n in true):
        raise Nonconforming("declares `tied` but the tied twin's gradients are not the plain "
                            "model's: with tied=True return the model unchanged")
    return "changes the backward only, and the tied twin gives the true gradient"


def capability_checks(host: PluginHost, comp: Component, label: str,
                      spec: dict[str, Any]) -> list[Check]:
    if comp.family == "trainers":
        return [_outcome(label, "grouped runs", lambda: grouped_runs(host, spec))]
    if comp.family == "surrogates":
        return [_outcome(label, "elementwise", lambda: elementwise(host, comp, spec))]
    if comp.family == "models":
        return [_outcome(label, "layered model", lambda: layered(host, spec))]
    if comp.family == "reparametrizations":
        return [_outcome(label, "tied twin", lambda: tied_twin(host, comp, spec))]
    return []


def executor_checks(comp: Component, label: str) -> list[Check]:
    def maps() -> str:
        executor = comp.factory(comp.params.model_validate({}))
        if not callable(getattr(executor, "map", None)):
            raise Nonconforming(f"the factory returned {type(executor).__name__} without map()")
        got = sorted(executor.map(kit_square, [1, 2, 3]))
        if got != [1, 4, 9]:
            raise Nonconforming(f"map(fn, [1, 2, 3]) gave {got}; it must yield fn(task) for "
                                f"every task")
        return "map(fn, tasks) yields one result per task"

    return [_outcome(label, "runs", maps)]

