"""The conformance kit (`untied check-plugin`, bench_core.testing.assert_plugin_conforms): it
accepts plugins that keep the contracts and rejects each broken one with a message that says
what to fix. Fake third-party distributions, and the broken example package in examples/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, pip_install_target

from bench_core.kit.check import check_plugin
from bench_core.testing import assert_plugin_conforms

HEADER = """
import torch
from typing import Any, ClassVar
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from bench_core.hookspecs import hookimpl
from bench_core.interfaces import NativeActivation

class P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.1, gt=0)

class Steps:
    def __init__(self, params):
        self.params = params
    def fit(self, session):
        model = session.build_model()
        rule = session.build_rule(model)
        x, y = session.data.x_train, session.data.y_train
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(x), y)
            rule.zero_grad()
            loss.backward()
            rule.step()
        acc = (model(session.data.x_test).argmax(-1) == session.data.y_test).float().mean()
        return session.ctx.log_epoch(1, train_loss=loss.detach(), test_accuracy=acc)
"""

GOOD = HEADER + """
class Grouped(Steps):
    max_group_size = 4
    def group_key(self, spec):
        return spec["model"]["name"]
    def fit_group(self, sessions):
        return [self.fit(s) for s in sessions]

class Halved(NativeActivation):
    pass

@hookimpl
def register_trainers(register):
    register("fake_grouped", Grouped, params=P, description="grouped, truthfully")

@hookimpl
def register_update_rules(register):
    register("fake_sgd", lambda p, *, model, ctx: torch.optim.SGD(model.parameters(), lr=p.lr),
             params=P, description="sgd")

@hookimpl
def register_surrogates(register):
    register("fake_tied", lambda p, *, activation, ctx: Halved(activation),
             description="the tied backward")

@hookimpl
def register_activations(register):
    from bench_core.interfaces import Activation
    d_tanh = lambda x: 1 - torch.tanh(x) ** 2
    register("fake_tanh", lambda p: Activation("fake_tanh", torch.tanh, d_tanh, "output",
                                               lambda y: 1 - y ** 2),
             description="tanh, its derivative also from its output")
"""

LIES = HEADER + """
class KeyOnly(Steps):
    def group_key(self, spec):
        return "all"

class Drifts(Steps):
    def group_key(self, spec):
        return "all"
    def fit_group(self, sessions):
        return [{k: v * 1.01 for k, v in self.fit(s).items()} for s in sessions]

class WholeTensor(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return torch.tanh(x)
    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.n = inputs[0].numel()
    @staticmethod
    def backward(ctx, grad):
        return grad * (100.0 / ctx.n)

class ClaimsElementwise(nn.Module):
    elementwise = True
    def forward(self, x):
        return WholeTensor.apply(x)

class NoBlocks(nn.Sequential):
    def blocks(self):
        return []

class ZeroGrad(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return torch.tanh(x)
    @staticmethod
    def setup_context(ctx, inputs, output):
        pass
    @staticmethod
    def backward(ctx, grad):
        return grad * 0.0

class SilentlyZero(nn.Module):
    def forward(self, x):
        return ZeroGrad.apply(x)

class BadDefault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: float = Field(-1.0, gt=0)

@hookimpl
def register_trainers(register):
    register("key_only", KeyOnly, params=P, description="half a capability")
    register("drifts", Drifts, params=P, description="grouped runs that differ")

@hookimpl
def register_surrogates(register):
    register("claims_elementwise", lambda p, *, activation, ctx: ClaimsElementwise(),
             description="elementwise, it says")
    register("bad_default", lambda p, *, activation, ctx: ClaimsElementwise(),
             params=BadDefault, description="a default out of range")
    register("silently_zero", lambda p, *, activation, ctx: SilentlyZero(),
             description="a backward that is zero everywhere")

@hookimpl
def register_activations(register):
    from bench_core.interfaces import Activation
    d_tanh = lambda x: 1 - torch.tanh(x) ** 2
    register("off_tanh", lambda p: Activation("off_tanh", torch.tanh, d_tanh, "output",
                                              lambda y: 1 - y),
             description="a derivative of the output that is not the derivative")

@hookimpl
def register_models(register):
    register("no_blocks", lambda p, *, data, activation, ctx: NoBlocks(
        nn.Flatten(), nn.Linear(64, data.num_outputs)), description="empty blocks()")
    register("returns_function", lambda p, *, data, activation, ctx: (lambda x: x),
             description="not a module")
"""


def results(report) -> dict[tuple[str, str], tuple[str, str]]:
    return {(c.component, c.check): (c.status, c.message) for c in report.checks}


def test_kit_accepts_a_plugin_that_keeps_the_contracts(installed):
    installed("untied-fake-good", {"fake_good": "fakeplug_good"}, {"fakeplug_good": GOOD})
    report = check_plugin("untied-fake-good")
    assert not report.failures, report.text()
    seen = results(report)
    assert seen[("trainer fake_grouped", "grouped runs")] == (
        "pass", "fit_group on 3 runs equals fit on each")
    assert seen[("surrogate fake_tied", "elementwise")][0] == "pass"
    assert seen[("activation fake_tanh", "builds")] == (
        "pass", "an Activation with native, derivative and derivative_of_output")
    assert {check for _, check in seen} >= {"parameters", "builds", "runs", "deterministic",
                                            "records"}
    assert_plugin_conforms("untied-fake-good")  # the pytest helper passes too


def test_kit_rejects_false_capabilities_and_bad_factories(installed):
    installed("untied-fake-lies", {"fake_lies": "fakeplug_lies"}, {"fakeplug_lies": LIES})
    seen = results(check_plugin("untied-fake-lies"))
    assert seen[("trainer key_only", "grouped runs")] == ("fail", (
        "defines group_key but no fit_group: the runner groups only trainers with both "
        "(bench_core.interfaces.GroupTrainer)"))
    status, message = seen[("trainer drifts", "grouped runs")]
    assert status == "fail" and "fit_group differs from fit for run 0" in message
    status, message = seen[("surrogate claims_elementwise", "elementwise")]
    assert status == "fail" and "a stack of runs gives another forward or backward" in message
    status, message = seen[("surrogate bad_default", "parameters")]
    assert status == "fail" and "width" in message and "meets its own constraints" in message
    assert seen[("model no_blocks", "layered model")] == ("fail", "blocks() returned no block")
    status, message = seen[("model returns_function", "builds")]
    assert status == "fail" and "not an nn.Module" in message
    status, message = seen[("activation off_tanh", "builds")]
    assert status == "fail" and "derivative_of_output(native(x)) is not derivative(x)" in message
    status, message = seen[("surrogate silently_zero", "builds")]
    assert status == "fail" and "its backward is zero at every one of 25 inputs" in message
    with pytest.raises(pytest.fail.Exception, match="key_only"):
        assert_plugin_conforms("untied-fake-lies")


def test_the_kit_passes_on_every_built_in_plugin(monkeypatch):
    """The built-in distribution is checked exactly as a third party's: every component of
    every built-in plugin (datasets whose files are missing are skipped; with the shared data
    beside the repository they are checked too)."""
    from conftest import SHARED_DATA

    if SHARED_DATA.is_dir():
        monkeypatch.setenv("UNTIED_DATA", str(SHARED_DATA))
    report = check_plugin("untied-bench")
    assert not report.failures, report.text(only_failures=True)
    checked = {c.component for c in report.checks if c.check == "parameters"}
    from bench_core.plugins import get_host

    host = get_host()
    from bench_core.hookspecs import FAMILIES

    builtin = {f"{fam[:-1]} {name}" for fam in FAMILIES
               for name, comp in host.family(fam).items()
               if host.plugins[comp.plugin].builtin}
    assert builtin <= checked, sorted(builtin - checked)
    surrogates = [c for c in report.checks if c.component.startswith("surrogate ")
                  and c.check == "builds"]
    assert surrogates and all("non-zero on" in c.message for c in surrogates)


def test_unknown_target_is_one_line_error():
    out = subprocess.run([str(Path(sys.executable).parent / "untied"), "check-plugin",
                          "no_such_plugin_anywhere"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: 'no_such_plugin_anywhere' is neither an installed "
                                 "distribution")


def test_broken_example_fails_with_messages_that_say_what_to_fix(tmp_path):
    site = pip_install_target(REPO / "examples" / "untied-broken-plugin", tmp_path / "site",
                              tmp_path)
    out = subprocess.run([str(Path(sys.executable).parent / "untied"), "check-plugin",
                          "untied-broken-plugin"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(site)})
    text = " ".join(out.stdout.split())  # the table wraps long messages
    assert out.returncode == 1, out.stdout + out.stderr
    assert "trainer list_trainer runs FAIL fit returned list; it must return a dict of metric " \
           "name -> float" in text
    assert "update_rule jittery_sgd deterministic FAIL two runs with the same seed differ" in text
    assert "draw randomness from ctx.generator" in text
    assert "surrogate anything_goes parameters FAIL accepts unknown parameters: set " \
           "model_config = ConfigDict(extra=\"forbid\")" in text
    assert "parameter 'scale' accepts values of any type" in text
    assert text.endswith("3 check(s) failed")
