"""Spec fuzzing (hypothesis): random and mutated leaderboard specs never produce a traceback.
`untied validate` either accepts the spec (exit 0) or prints exactly one line `error: ...`
and exits 2. Mutations: wrong types, unknown keys and names, empty and huge grids, non-UTF-8
bytes, deep nesting, negative, zero, NaN and inf numbers, strings where numbers belong.
The number of cases tried is printed (pytest -s)."""

from __future__ import annotations

import copy
import math

import pytest
import tomli_w
from conftest import FAST_SPEC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench_core.cli import main

CASES = {"n": 0, "accepted": 0, "refused": 0}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 0.0, -0.0]),
    st.text(max_size=12), st.sampled_from(["0.2", "1e3", "nan", "inf", "sgd", "mlp", "",
                                           "digits", "tied", "relu"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
PATHS = ["title", "metric", "seeds", "baseline", "grid", "entries", "defaults",
         "defaults.dataset", "defaults.dataset.name", "defaults.dataset.train_subset",
         "defaults.model", "defaults.model.hidden", "defaults.rule.lr", "defaults.rule.name",
         "defaults.trainer.epochs", "defaults.trainer.batch_size", "defaults.trainer",
         "grid.rule.lr", "grid.trainer.epochs", "profiles", "reference", "scale", "metrics",
         "entries.0.overrides", "entries.1.label", "unknown_key", "defaults.unknown",
         "defaults.rule.unknown", "summary_by", "columns"]


def set_path(spec: dict, path: str, value) -> None:
    node = spec
    parts = path.split(".")
    if parts[0] == "grid" and len(parts) > 1:          # dotted grid keys are one key
        if not isinstance(spec.get("grid"), dict):    # an earlier mutation replaced the grid
            spec["grid"] = {}
        spec["grid"][".".join(parts[1:])] = value
        return
    for part in parts[:-1]:
        if isinstance(node, list):
            idx = int(part)
            if idx >= len(node):
                return
            node = node[idx]
        else:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node[parts[-1]] = value


def deep(n: int):
    out: dict = {"name": "sgd"}
    for _ in range(n):
        out = {"x": out}
    return out


def run_validate(tmp_path, capsys, data: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    code = main(["validate", str(path), "--no-data-check"])
    out, err = capsys.readouterr()
    CASES["n"] += 1
    assert "Traceback" not in out + err
    if code == 0:
        CASES["accepted"] += 1
        assert not err.strip() or all(l.startswith("warning:") for l in err.strip().splitlines())
    else:
        CASES["refused"] += 1
        assert code == 2, err
        lines = [l for l in err.strip().splitlines() if not l.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def to_toml(spec) -> bytes:
    try:
        return tomli_w.dumps(spec).encode()
    except (TypeError, ValueError):                    # None, or a type TOML cannot hold
        return repr(spec).encode()                     # not TOML at all: must be refused too


# derandomize: the same 250 cases on every run, so CI cannot turn red on a new random draw;
# a different seed explores others: pytest --hypothesis-seed=N (and keep derandomize off)
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_mutated_specs_are_accepted_or_refused_in_one_line(mutations, tmp_path_factory,
                                                           untied_host):
    import contextlib
    import io

    spec = copy.deepcopy(FAST_SPEC)
    for path, value in mutations:
        set_path(spec, path, value)
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "fuzz.toml"
    path.write_bytes(to_toml(spec))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path), "--no-data-check"])
    CASES["n"] += 1
    text = err.getvalue()
    assert "Traceback" not in text
    if code == 0:
        CASES["accepted"] += 1
    else:
        CASES["refused"] += 1
        lines = [l for l in text.strip().splitlines() if not l.startswith("warning:")]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, text)


@pytest.mark.parametrize("data", [
    b"\xff\xfe title = 'x'", b"title = \"\xe9\"", b"", b"[[[", b"title = 1\ntitle = 2",
    tomli_w.dumps({**FAST_SPEC, "grid": {"rule.lr": []}}).encode(),
    tomli_w.dumps({**FAST_SPEC, "grid": {"rule.lr": [float(i) for i in range(400)],
                                         "trainer.batch_size": list(range(1, 400))}}).encode(),
    tomli_w.dumps({**FAST_SPEC, "defaults": {**FAST_SPEC["defaults"], "rule": deep(60)}}).encode(),
    tomli_w.dumps({**FAST_SPEC, "seeds": -3}).encode(),
    tomli_w.dumps({**FAST_SPEC, "seeds": 0}).encode(),
    tomli_w.dumps({**FAST_SPEC, "grid": {"rule.lr": [math.nan]}}).encode(),
    tomli_w.dumps({**FAST_SPEC, "grid": {"rule.lr": [math.inf]}}).encode(),
    tomli_w.dumps({**FAST_SPEC, "grid": {"rule.lr": ["0.2"]}}).encode(),
], ids=["utf16-bom", "latin1", "empty", "broken", "duplicate-key", "empty-grid", "huge-grid",
        "deep", "negative-seeds", "zero-seeds", "nan", "inf", "string-number"])
def test_edge_specs_are_refused_in_one_line(data, tmp_path, capsys, untied_host):
    run_validate(tmp_path, capsys, data)
    assert CASES["refused"] >= 1


def test_report_cases_tried():
    print(f"spec fuzzing: {CASES['n']} cases tried, {CASES['accepted']} accepted, "
          f"{CASES['refused']} refused in one line")
    assert CASES["n"] >= 250
