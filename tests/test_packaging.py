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
    assert "untied_plugins/surrogates.py" in names
    assert {"untied_plugins/separated/__init__.py", "untied_plugins/separated/rule.py"} <= set(names)
    assert not any(n.startswith("plugins/") for n in names)
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(ep).decode()
    assert "[untied]" in text and "surrogates = untied_plugins.surrogates" in text
    assert "separated = untied_plugins.separated" in text
    assert "untied = bench_core.cli:main" in text
