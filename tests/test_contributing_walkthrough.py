"""CONTRIBUTING.md's walkthrough, followed as written: every file it shows (a line
``File `PATH`:`` before a code block) is written to a temporary folder and every command of its
section 9 is run there, in order, with this environment's ``untied``, ``pytest`` and ``pip``.

One substitution, said here: ``pip install -e .`` becomes ``pip install --no-deps
--no-build-isolation --no-index --target SITE .`` with SITE on PYTHONPATH (pip cannot install
in editable mode into a target folder, and a test must not install into the environment that
runs it). Not covered: creating the environment of section 0 (``make env`` is what CI itself
runs) and section 10's upload. Run alone with
``.venv/bin/python -m pytest tests/test_contributing_walkthrough.py``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

GUIDE = REPO / "CONTRIBUTING.md"
BIN = Path(sys.executable).parent


def guide_files(text: str) -> dict[str, str]:
    return dict(re.findall(r"^File `([^`]+)`:\n\n```[a-z]*\n(.*?)^```$", text, re.M | re.S))


def guide_commands(text: str) -> list[str]:
    block = re.search(r"The\s+walkthrough's commands, which\s+`tests/test_contributing_walkthrough"
                      r"\.py` runs:\n\n```bash\n(.*?)^```$", text, re.M | re.S)
    assert block, "CONTRIBUTING.md lost its walkthrough command block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_guide_shows_a_surrogate_a_rule_and_a_trainer():
    text = GUIDE.read_text(encoding="utf-8")
    files = guide_files(text)
    init = files["untied-my-method/untied_my_method/__init__.py"]
    for hook in ("register_surrogates", "register_update_rules", "register_trainers"):
        assert f"def {hook}(register)" in init
    assert "pip install -e ." in guide_commands(text)
    assert "activation.native" in text and 'name = "my-method-demo"' in text


def test_walkthrough_commands_work_as_written(tmp_path):
    text = GUIDE.read_text(encoding="utf-8")
    for rel, body in guide_files(text).items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    site = tmp_path / "site"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    cwd, outputs = tmp_path, {}
    for command in guide_commands(text):
        if command.startswith("cd "):
            cwd = cwd / command[3:]
            continue
        run = command
        if command == "pip install -e .":
            run = (f"{sys.executable} -m pip install --quiet --no-deps --no-build-isolation "
                   f"--no-index --target {site} .")
        out = subprocess.run(["bash", "-c", run], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, f"`{command}` failed:\n{out.stdout}\n{out.stderr}"
        outputs[command.split()[1] if command.startswith("untied") else command] = out.stdout
    assert "my_method" in outputs["plugins"] and "untied-my-method" in outputs["plugins"]
    assert "fast_sigmoid" in outputs["list"] and "beta: float = 1.0" in outputs["list"]
    assert "every check passed" in outputs["check-plugin"]
    for name in ("surrogate fast_sigmoid", "update_rule normalized_sgd", "trainer full_batch"):
        assert name in outputs["check-plugin"]
    assert "4 entries x 1 grid cells x 2 seeds" in outputs["validate"]
    board = outputs["run"]
    assert "backprop (baseline)" in board and "full batch" in board, board
    assert list((cwd / "results" / "my-method-demo").glob("*.parquet"))
    assert (cwd / "report" / "my-method-demo" / "index.html").is_file()
    assert "3 passed" in outputs["pytest -q tests"]


@pytest.mark.parametrize("needle", ["No matching distribution found for untied-bench",
                                    "results/leaderboard/"])
def test_the_guide_answers_what_a_new_user_ran_into(needle):
    assert needle in " ".join(GUIDE.read_text(encoding="utf-8").split())
