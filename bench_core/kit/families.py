"""The family-specific checks of the conformance kit (see :mod:`bench_core.kit.check`)."""

from __future__ import annotations

import math
import tempfile
from typing import Any, Callable

import polars as pl
import torch
from torch import nn

from bench_core.errors import DataError
from bench_core.execution.runner import _record_row, build_session
from bench_core.interfaces import Activation, DataBundle, NativeActivation, RunContext
from bench_core.kit.capabilities import capability_checks, executor_checks
from bench_core.kit.runs import (
    FIELD,
    SAME,
    Check,
    Nonconforming,
    activation_of,
    differ,
    fit,
    kit_spec,
    task_of,
)
from bench_core.plugins import Component, PluginHost
from bench_core.specs.plan import resolve_component


def built(host: PluginHost, comp: Component, spec: dict[str, Any]) -> str:
    """Build the component alone and check what its factory returns; a description."""
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    _, params = resolve_component(host, FIELD[comp.family], spec[FIELD[comp.family]])
    if comp.family in ("activations", "surrogates"):
        act = activation_of(host, spec)
        if not isinstance(act, Activation):
            raise Nonconforming(f"the factory returned {type(act).__name__}, not "
                                f"bench_core.interfaces.Activation")
        x = torch.linspace(-3, 3, 25, requires_grad=comp.family == "surrogates")
        if comp.family == "activations":
            for what, fn in (("native", act.native), ("derivative", act.derivative)):
                y = fn(x)
                if y.shape != x.shape or not torch.isfinite(y).all():
                    raise Nonconforming(f"{what}(x) is not a finite tensor of x's shape")
            if act.derivative_of_output is None:
                return "an Activation with native and derivative"
            with torch.no_grad():
                of_output = act.derivative_of_output(act.native(x))
            if not torch.equal(of_output, act.derivative(x)):
                raise Nonconforming("derivative_of_output(native(x)) is not derivative(x) "
                                    "exactly: it must be the same values (module docstring of "
                                    "bench_core.interfaces.Activation)")
            return "an Activation with native, derivative and derivative_of_output"
        module = comp.factory(params, activation=act, ctx=ctx)
        if not isinstance(module, nn.Module):
            raise Nonconforming(f"the factory returned {type(module).__name__}, not an nn.Module")
        y = module(x)
        if not torch.allclose(y, act.native(x.detach()), atol=1e-6):
            raise Nonconforming("its forward differs from the activation's f(x): a surrogate "
                                "changes only the backward pass")
        (grad,) = torch.autograd.grad(y.sum(), x)
        if grad.shape != x.shape or not torch.isfinite(grad).all():
            raise Nonconforming("its backward gives no finite gradient of the input's shape")
        if not grad.abs().gt(0).any():
            raise Nonconforming("its backward is zero at every one of 25 inputs in [-3, 3]: no "
                                "gradient reaches the layers below (a surrogate's backward must "
                                "be non-zero somewhere on the inputs a layer sees)")
        return ("an nn.Module with the activation's forward and a finite backward, non-zero on "
                f"{int(grad.ne(0).sum())} of 25 inputs in [-3, 3]")
    if comp.family == "trainers":
        trainer = comp.factory(params)
        if not callable(getattr(trainer, "fit", None)):
            raise Nonconforming(f"the factory returned {type(trainer).__name__} with no fit()")
        return f"{type(trainer).__name__} with fit()"
    session = build_session(host, task_of(spec), ctx)
    if comp.family == "datasets":
        data = session.data
        if not isinstance(data, DataBundle):
            raise Nonconforming(f"the factory returned {type(data).__name__}, not a DataBundle")
        if tuple(data.x_train.shape[1:]) != tuple(data.info.input_shape):
            raise Nonconforming(f"inputs of shape {tuple(data.x_train.shape[1:])} but "
                                f"DataInfo.input_shape {tuple(data.info.input_shape)}")
        if data.info.task == "classification":
            classes = max(data.info.num_outputs, 2)
            if data.y_train.dtype != torch.int64 or data.y_train.min() < 0 or \
                    data.y_train.max() >= classes:
                raise Nonconforming(f"classification targets must be int64 class indices in "
                                    f"0..{classes - 1}")
        return f"{len(data.x_train)} training and {len(data.x_test)} test samples"
    if comp.family == "models":
        act = activation_of(host, spec)
        raw = comp.factory(params, data=session.data.info, ctx=ctx,
                           activation=lambda: NativeActivation(act))
        if not isinstance(raw, nn.Module):
            raise Nonconforming(f"the factory returned {type(raw).__name__}, not an nn.Module")
    model = session.build_model()
    if comp.family == "reparametrizations":
        out = model(session.data.x_train[:4])
        if tuple(out.shape) != (4, session.data.info.num_outputs):
            raise Nonconforming(f"the reparametrized model gives output of shape "
                                f"{tuple(out.shape)} for a batch of 4; expected "
                                f"(4, {session.data.info.num_outputs}): a reparametrization "
                                f"changes how weights are computed, not the model's function")
        return f"{type(model).__name__} reparametrized, output (batch, " \
               f"{session.data.info.num_outputs})"
    if comp.family == "models":
        out = model(session.data.x_train[:4])
        if tuple(out.shape) != (4, session.data.info.num_outputs):
            raise Nonconforming(f"output of shape {tuple(out.shape)} for a batch of 4; expected "
                                f"(4, {session.data.info.num_outputs}) (DataInfo.num_outputs)")
        return f"{type(model).__name__}, output (batch, {session.data.info.num_outputs})"
    rule = session.build_rule(model)
    if not (callable(getattr(rule, "zero_grad", None)) and callable(getattr(rule, "step", None))):
        raise Nonconforming(f"the factory returned {type(rule).__name__} without zero_grad() "
                            f"and step()")
    return f"{type(rule).__name__} with zero_grad() and step()"


def component_checks(host: PluginHost, comp: Component) -> list[Check]:
    """Every check after ``parameters`` for one component (module docstring of
    :mod:`bench_core.kit.check`)."""
    label = f"{comp.family[:-1]} {comp.name}"
    if comp.family == "executors":
        return executor_checks(comp, label)
    checks: list[Check] = []

    def step(name: str, fn: Callable[[], str]) -> bool:
        try:
            checks.append(Check(label, name, "pass", fn()))
            return True
        except DataError as exc:
            checks.append(Check(label, name, "skip", f"its data is not available here: {exc}"))
        except Nonconforming as exc:
            checks.append(Check(label, name, "fail", str(exc)))
        except Exception as exc:  # noqa: BLE001 - the plugin's own error, said as such
            checks.append(Check(label, name, "fail", f"raised {type(exc).__name__}: {exc}"))
        return False

    state: dict[str, Any] = {}

    def build() -> str:
        state["spec"] = kit_spec(host, comp)
        return built(host, comp, state["spec"])

    def run() -> str:
        task = state["task"] = task_of(state["spec"])
        state["metrics"], session = fit(host, task, global_seed=1)
        state["session"] = session
        if comp.family in ("update_rules", "trainers"):
            fresh = dict(session.build_model(tied=False).named_parameters())
            trained = session.trained_model
            if trained is not None and all(torch.equal(p.detach(), fresh[n].detach())
                                           for n, p in trained.named_parameters()
                                           if n in fresh):
                raise Nonconforming("training changed no weight of the model (a trainer that "
                                    "trains another model sets session.trained_model)")
        return ", ".join(f"{k} = {v:.4g}" for k, v in list(state["metrics"].items())[:4])

    def deterministic() -> str:
        again, session = fit(host, state["task"], global_seed=2)
        diff = differ(state["metrics"], again, SAME)
        if diff is None and comp.family == "datasets":
            pairs = zip(state["session"].data.test_sets().values(),
                        session.data.test_sets().values())
            if not torch.equal(state["session"].data.x_train, session.data.x_train) or \
                    any(not torch.equal(a[0], b[0]) for a, b in pairs):
                diff = "the data differ"
        if diff:
            raise Nonconforming(f"two runs with the same seed differ ({diff}): draw randomness "
                                f"from ctx.generator(\"<stream>\"), never from the global RNG "
                                f"(torch.rand, random, numpy.random)")
        return "same metrics from the same seed under different global RNG states"

    def records() -> str:
        metrics, session = state["metrics"], state["session"]
        task = state["task"]
        task.metric = next((m for m in ("test_accuracy", "test_mse") if m in metrics),
                           next(iter(metrics)))
        row = _record_row(host, task, session.ctx, "ok", None, None, metrics, 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/record.parquet"
            pl.DataFrame([row], strict=False, infer_schema_length=None).write_parquet(path)
            back = pl.read_parquet(path).row(0, named=True)
        lost = [k for k, v in metrics.items() if not math.isclose(back.get(f"m_{k}"), v, **SAME)]
        if lost:
            raise Nonconforming(f"metric(s) {', '.join(lost)} did not survive a run record")
        if comp.family == "trainers" and "epoch" not in session.ctx.curves:
            raise Nonconforming("logs no per-epoch curve: call ctx.log_epoch(epoch, **metrics) "
                                "every epoch (it also detects divergence)")
        return f"{len(metrics)} metric(s) recorded" + (
            f", curves of {len(session.ctx.curves['epoch'])} epoch(s)"
            if "epoch" in session.ctx.curves else "")

    for name, fn in (("builds", build), ("runs", run), ("deterministic", deterministic),
                     ("records", records)):
        if not step(name, fn):
            return checks
    checks.extend(capability_checks(host, comp, label, state["spec"]))
    return checks
