"""The wheel ships the leaderboard specs and registers the built-ins as entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_leaderboards_and_entry_points(tmp_path):
    source = tmp_path / "src"  # setuptools builds in-tree: keep the checkout clean
    skipped = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                     "examples")

    def ignore(folder, names):  # a results/ folder at the top, not bench_core/results/
        top = {"results"} if Path(folder) == REPO else set()
        return set(skipped(folder, names)) | (top & set(names))

    shutil.copytree(REPO, source, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("untied_bench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    specs = {Path(n).name for n in names if n.startswith("bench_core/leaderboards/")}
    assert "quickstart.toml" in specs
    shipped = {p.name for p in (REPO / "leaderboards").glob("*.toml")}
    assert shipped <= specs
    for source_file in (REPO / "plugins").rglob("*.py"):     # every module of every subpackage
        assert f"untied_plugins/{source_file.relative_to(REPO / 'plugins')}" in names
    for source_file in (REPO / "bench_core").rglob("*.py"):
        assert str(source_file.relative_to(REPO)) in names
    assert not any(n.startswith("plugins/") for n in names)
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(ep).decode()
    assert "[untied]" in text and "troiano = untied_plugins.troiano" in text
    for package in plugin_subpackages():
        assert f"{package} = untied_plugins.{package}" in text
    assert "untied = bench_core.cli:main" in text


def plugin_subpackages() -> list[str]:
    return sorted(p.parent.name for p in (REPO / "plugins").glob("*/__init__.py"))


def test_every_subpackage_is_packaged_and_every_plugin_subpackage_is_an_entry_point():
    """What a new subpackage must add to pyproject.toml: its package (bench_core/<role>/ and
    plugins/<origin>/ alike) and, for a plugin subpackage, an entry point of the same name in
    the group `untied` (README, "Layout")."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(project["tool"]["setuptools"]["packages"])
    for init in (REPO / "bench_core").rglob("__init__.py"):
        if "leaderboards" in init.parts:
            continue
        assert ".".join(init.parent.relative_to(REPO).parts) in packages, init.parent
    for name in plugin_subpackages():
        assert f"untied_plugins.{name}" in packages, name
    entry_points = project["project"]["entry-points"]["untied"]
    assert {name: entry_points.get(name) for name in plugin_subpackages()} == {
        name: f"untied_plugins.{name}" for name in plugin_subpackages()}
    modules = set(entry_points.values())
    assert modules - {f"untied_plugins.{n}" for n in plugin_subpackages()} == {
        "untied_plugins.dask_executor"}      # the one plugin that is a single module
