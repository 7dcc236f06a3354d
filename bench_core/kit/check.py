"""The plugin conformance kit: does every component a plugin registers keep the host's contracts?

``untied check-plugin DIST_OR_MODULE`` and :func:`bench_core.testing.assert_plugin_conforms`
run, for each component the plugin registers (:mod:`bench_core.kit.families` has the
family-specific checks):

``parameters``     the parameter model validates its defaults (and they keep its own
                   constraints), rejects an unknown parameter and, for each parameter, values of
                   a wrong type;
``builds``         the factory builds the component from its defaults, of the promised type;
``runs``           one short training run on the CPU (a few steps; for a dataset, one batch
                   through a model), whose ``fit`` returns a dict of finite numbers, and weights
                   that change;
``deterministic``  the same seed gives the same metrics (and data), whatever state the global
                   random generators are in;
``records``        the metrics survive a run record (and a trainer logs per-epoch curves);
``capabilities``   grouped runs (``group_key``/``fit_group`` give what ``fit`` gives), an
                   ``elementwise`` surrogate (a stack of runs at once equals run by run) and a
                   layered model (``blocks()``) are declared truthfully.

A component runs inside a tiny run whose other parts are the kit's own
(:mod:`bench_core.kit.partners`). A component that needs other partners (a trainer that needs
a layered model, a long default schedule to shorten) says so with a class attribute of its
parameter model, ``conformance_run: ClassVar[dict]``: a partial run spec merged over the kit's
(its own table sets its parameters for the kit), e.g. ``{"trainer": {"iterations": 50}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module, metadata
from typing import Any

from pydantic import ValidationError

from bench_core.errors import PluginError, UntiedError
from bench_core.kit.families import component_checks
from bench_core.kit.runs import Check
from bench_core.plugins import Component, PluginHost

WRONG_TYPES: tuple[Any, ...] = ({"wrong": "type"}, "wrong type", [["wrong"]])
"""Values offered to every parameter: one that accepts all three has no type."""


@dataclass
class ConformanceReport:
    target: str
    plugins: list[str]
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def text(self, only_failures: bool = False) -> str:
        from tabulate import tabulate

        rows = [[c.component, c.check, c.status.upper() if c.status == "fail" else c.status,
                 c.message] for c in self.checks if c.status == "fail" or not only_failures]
        head = f"untied check-plugin {self.target} (plugins: {', '.join(self.plugins)})"
        verdict = (f"{len(self.failures)} check(s) failed" if self.failures else
                   "every check passed")
        return "\n".join([head, tabulate(rows, headers=["component", "check", "result", ""],
                                         maxcolwidths=[None, None, None, 90]), verdict]) + "\n"


def _add_distribution(host: PluginHost, target: str) -> list[str] | None:
    """The plugin names of an installed distribution (loading any the environment filtered
    out); None when ``target`` is no distribution."""
    try:
        dist = metadata.distribution(target)
    except metadata.PackageNotFoundError:
        return None
    eps = [ep for ep in dist.entry_points if ep.group == "untied"]
    if not eps:
        raise UntiedError(f"distribution {target} declares no `untied` entry point: add "
                          f"[project.entry-points.untied] NAME = \"your_module\" to its "
                          f"pyproject.toml and reinstall it")
    for ep in eps:
        if ep.name not in host.plugins:
            try:
                host.add_plugin(ep.load(), ep.name, dist.metadata["Name"], dist.version)
            except Exception as exc:  # noqa: BLE001 - reported as the plugin's failure
                host.plugins.setdefault(ep.name, _failed(ep.name, exc))
    from bench_core.plugins import BUILTIN_DISTRIBUTION, HOST_PLUGINS, _normalise

    own = list(HOST_PLUGINS) if _normalise(target) == _normalise(BUILTIN_DISTRIBUTION) else []
    return own + [ep.name for ep in eps]   # the built-in distribution: the host's own too


def _failed(name: str, exc: BaseException):
    from bench_core.plugins import PluginInfo

    return PluginInfo(name, None, None, error=f"failed to import: {type(exc).__name__}: {exc}")


def load_target(target: str) -> tuple[PluginHost, list[str]]:
    """A fresh host with every installed plugin, the kit's partners and ``target`` (an
    installed distribution, a loaded plugin's name, or an importable module); the names of
    ``target``'s plugins."""
    from bench_core.kit import partners as conformance_kit

    host = PluginHost()
    host.load_entry_points()
    names = _add_distribution(host, target)
    if names is None and target in host.plugins:
        names = [target]
    if names is None:
        try:
            module = import_module(target)
        except Exception as exc:  # noqa: BLE001 - one line for the user
            raise UntiedError(f"'{target}' is neither an installed distribution with `untied` "
                              f"entry points, nor a loaded plugin, nor an importable module "
                              f"({type(exc).__name__}: {exc})") from None
        name = next((n for n in host.plugins if host.pm.get_plugin(n) is module), None)
        if name is None:
            name = target.replace(".", "_").replace("-", "_")
            host.add_plugin(module, name)
        names = [name]
    host.add_plugin(conformance_kit, conformance_kit.PLUGIN)
    return host, names


def parameter_check(comp: Component) -> Check:
    """Defaults valid, unknown parameters and wrong types rejected."""
    from bench_core.specs.model import format_validation_error

    params, label = comp.params, f"{comp.family[:-1]} {comp.name}"
    try:
        defaults = params.model_validate({})
        params.model_validate(defaults.model_dump(mode="json"))
    except ValidationError as exc:
        return Check(label, "parameters", "fail", f"the defaults do not validate "
                     f"({format_validation_error(exc)}): give every parameter a default that "
                     f"meets its own constraints")
    problems = []
    try:
        params.model_validate({"not_a_parameter_of_" + comp.name: 1})
        problems.append("accepts unknown parameters: set model_config = "
                        "ConfigDict(extra=\"forbid\") so that a misspelt parameter fails")
    except ValidationError:
        pass
    for name in params.model_fields:
        accepted = 0
        for wrong in WRONG_TYPES:
            try:
                params.model_validate({name: wrong})
                accepted += 1
            except ValidationError:
                pass
        if accepted == len(WRONG_TYPES):
            problems.append(f"parameter '{name}' accepts values of any type (a table, a text, "
                            f"a nested list): annotate it, e.g. `{name}: float = ...`")
    from bench_core.plugins import MISSING_DESCRIPTION

    if comp.description == MISSING_DESCRIPTION:
        problems.append("registered without a description: pass register(..., description="
                        "\"one line\") or give the factory a docstring (`untied list` shows it)")
    n = len(params.model_fields)
    return Check(label, "parameters", "fail" if problems else "pass",
                 "; ".join(problems) or f"{n} parameter(s): defaults valid, unknown names and "
                 f"wrong types rejected")


def check_plugin(target: str) -> ConformanceReport:
    """Run every check on every component of ``target`` (see the module docstring)."""
    from bench_core.hookspecs import FAMILIES

    host, names = load_target(target)
    report = ConformanceReport(target, names)
    try:
        host.collect()
    except PluginError as exc:
        report.checks.append(Check(", ".join(names), "loads", "fail", str(exc)))
        return report
    for name in names:
        info = host.plugins[name]
        report.checks.append(Check(f"plugin {name}", "loads", "fail" if info.error else "pass",
                                   info.error or "hooks: " + ", ".join(info.hooks)))
    comps = [c for fam in FAMILIES for c in host.family(fam).values() if c.plugin in names]
    if not comps and not report.failures:
        report.checks.append(Check(", ".join(names), "registers", "fail",
                                   "registers no component: implement a register_* hook "
                                   "decorated with bench_core.hookspecs.hookimpl"))
    for comp in comps:
        first = parameter_check(comp)
        report.checks.append(first)
        if first.status == "pass":
            report.checks.extend(component_checks(host, comp))
    return report
