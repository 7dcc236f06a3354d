"""Every benchmark script loads and parses its arguments (``--help``): benchmarks run on
demand, not in CI, so a renamed import or parameter class would otherwise break one silently
(it happened: ``benchmarks/feedback_alignment.py`` still named a parameter class the family no
longer had). One subprocess runs each script's module code up to argparse's exit."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))

RUNNER = """
import runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (0, None):
            failed.append(f"{path}: exit {exit.code}")
    except Exception as exc:
        failed.append(f"{path}: {type(exc).__name__}: {exc}")
    else:
        failed.append(f"{path}: --help did not exit")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_benchmark_loads_and_parses_its_arguments():
    assert len(SCRIPTS) >= 5
    done = subprocess.run([sys.executable, "-c", RUNNER, *map(str, SCRIPTS)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
