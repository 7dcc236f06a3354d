"""The example plugin package in examples/ installed as a third party installs it, then seen by
`untied plugins`, run in a leaderboard, and tested with its own tests (which use the test kit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pip_install_target

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "untied-sign-sgd"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    return pip_install_target(EXAMPLE, tmp_path_factory.mktemp("site"),
                              tmp_path_factory.mktemp("src"))


def run(args, site, **kw):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kw)


def test_example_plugin_is_listed_with_its_distribution(example_site):
    out = run([str(BIN / "untied"), "plugins", "--json"], example_site)
    rows = {r["plugin"]: r for r in json.loads(out.stdout)}
    assert rows["sign_sgd"]["distribution"] == "untied-sign-sgd"
    assert rows["sign_sgd"]["version"] == "0.1.0" and not rows["sign_sgd"]["builtin"]
    assert "sign_sgd" in run([str(BIN / "untied"), "list", "update_rules"], example_site).stdout


def test_example_leaderboard_runs(example_site, tmp_path):
    spec = example_site / "untied_sign_sgd" / "leaderboard.toml"
    out = run([str(BIN / "untied"), "run", str(spec), "--seeds", "1", "--results",
               str(tmp_path), "--quiet"], example_site)
    assert out.returncode == 0, out.stderr
    assert "signSGD" in out.stdout and "Signum" in out.stdout and "SGD (baseline)" in out.stdout
    record = next((tmp_path / "example-sign-sgd").glob("*.parquet"))
    assert record.stat().st_size > 0


def test_example_plugin_own_tests_pass_with_the_test_kit(example_site):
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(EXAMPLE / "tests")], example_site, cwd=str(EXAMPLE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout


def test_example_plugin_passes_the_conformance_kit(example_site):
    out = run([str(BIN / "untied"), "check-plugin", "untied-sign-sgd"], example_site)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "update_rule sign_sgd" in out.stdout and "every check passed" in out.stdout
