"""Test kit for plugin authors (a pytest plugin, loaded automatically once untied-bench is
installed, through the ``pytest11`` entry point).

Fixtures:

``untied_host``
    a fresh :class:`~bench_core.plugins.PluginHost` with every installed plugin loaded, installed
    as the process-wide host for the test; ``untied_host.add_plugin(module, "name")`` adds an
    in-process plugin (the same checks as for an entry point apply).
``run_context``
    a :class:`~bench_core.interfaces.RunContext` on the CPU with seed 0.
``run_leaderboard``
    ``run_leaderboard(spec: dict | str, **kw) -> polars.DataFrame``: validate, run (locally,
    into the test's temporary folder) and aggregate a leaderboard spec given as a dict or TOML
    text; returns the leaderboard rows (``entry``, ``mean``, ``std``, ``n``, ...). Keyword
    arguments go to :func:`bench_core.specs.plan.expand` (``profile``, ``seeds``).

A plugin package's test can thus be as short as::

    def test_my_rule_learns(untied_host, run_leaderboard):
        untied_host.add_plugin(my_plugin, "my_plugin")   # or rely on its entry point
        table = run_leaderboard(SPEC_TOML)
        assert table.filter(entry="mine")["mean"][0] > 0.8

The conformance kit (:mod:`bench_core.kit.check`; the command ``untied check-plugin``):

``check_plugin(target) -> ConformanceReport``
    every check on every component of ``target`` (an installed distribution such as
    ``"untied-sign-sgd"``, a plugin name, or an importable module such as ``"my_plugin"``);
``assert_plugin_conforms(target)``
    fails the test with the failed checks and what to fix::

        def test_my_plugin_conforms():
            assert_plugin_conforms("untied-my-method")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def untied_host():
    from bench_core.plugins import PluginHost, set_host

    host = PluginHost()
    host.load_entry_points()
    set_host(host)
    try:
        yield host
    finally:
        set_host(None)


@pytest.fixture
def run_context():
    import torch

    from bench_core.interfaces import RunContext

    return RunContext(seed=0, device=torch.device("cpu"))


def run_spec(host: Any, spec: dict[str, Any] | str, results: Path, name: str = "test",
             **expand_kw: Any):
    """Run a leaderboard spec (dict or TOML text) with ``host``; return the aggregate frame."""
    from bench_core.execution.runner import run_plan
    from bench_core.results.leaderboard import aggregate, overlay_plan
    from bench_core.results.records import read_records
    from bench_core.specs.model import parse_spec
    from bench_core.specs.plan import expand

    if isinstance(spec, str):
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        spec = tomllib.loads(spec)
    name, parsed = parse_spec(spec, stem=name)
    plan = expand(host, name, parsed, **expand_kw)
    run_plan(plan, results, host=host, progress=False)
    records = read_records(results / plan.name, {t.run_id for t in plan.tasks})
    return aggregate(overlay_plan(records, plan.tasks, spec=parsed), parsed.columns,
                     compare=parsed.compare)


@pytest.fixture
def run_leaderboard(untied_host, tmp_path):
    def run(spec: dict[str, Any] | str, **kw: Any):
        return run_spec(untied_host, spec, tmp_path / "results", **kw)

    return run


def check_plugin(target: str):
    """The conformance kit's report on ``target`` (see :mod:`bench_core.kit.check`)."""
    from bench_core.kit.check import check_plugin as run_checks

    return run_checks(target)


def assert_plugin_conforms(target: str) -> None:
    """Fail the calling test, listing each failed check and what to fix, unless every
    component of ``target`` passes the conformance kit."""
    report = check_plugin(target)
    if report.failures:
        pytest.fail(report.text(only_failures=True), pytrace=False)
