"""Shared helpers: fake installed distributions (entry points exactly as pip would write them)
and a small, fast leaderboard spec."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

FAST_SPEC = {
    "title": "fast",
    "metric": "test_accuracy",
    "baseline": "tied",
    "seeds": 2,
    "defaults": {
        "dataset": {"name": "digits", "train_subset": 300},
        "model": {"name": "mlp", "hidden": [16]},
        "activation": {"name": "logistic"},
        "rule": {"name": "sgd", "lr": 0.5},
        "trainer": {"name": "backprop", "epochs": 2, "batch_size": 32},
    },
    "grid": {"rule.lr": [0.2, 0.5]},
    "entries": [
        {"label": "tied"},
        {"label": "const", "overrides": {"surrogate": {"name": "constant"}}},
    ],
}


@pytest.fixture
def fast_spec():
    return copy.deepcopy(FAST_SPEC)


def make_distribution(root: Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str]) -> Path:
    """Write modules and a ``<dist>-<version>.dist-info`` with ``entry_points.txt`` under
    ``root``, the layout pip leaves in site-packages."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[untied]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """``installed(dist, entry_points, modules)``: make a fake distribution importable."""

    def install(dist: str, entry_points: dict[str, str], modules: dict[str, str],
                version: str = "1.2.3") -> Path:
        root = make_distribution(tmp_path / f"site-{dist}", dist, version, entry_points, modules)
        monkeypatch.syspath_prepend(str(root))
        return root

    yield install
    for name in list(sys.modules):
        if name.startswith("fakeplug_"):
            del sys.modules[name]


def pip_install_target(package: Path, target: Path, scratch: Path) -> Path:
    """Install the package folder ``package`` (no dependencies, no build isolation, no index)
    into ``target``, building from a copy in ``scratch`` (setuptools builds in-tree)."""
    source = scratch / package.name
    shutil.copytree(package, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    return target
