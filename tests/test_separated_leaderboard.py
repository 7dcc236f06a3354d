"""The podoprosvetov-approx leaderboard spec: both profiles validate, and a shrunken copy (one
seed, one target, a few steps) runs end to end with every entry, reporting the MSE, the
log10 ratio to the plain MLP and the time-to-target columns."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import polars as pl
import pytest

from bench_core.specs.model import load_spec
from bench_core.specs.plan import expand

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC = Path(__file__).resolve().parents[1] / "leaderboards" / "podoprosvetov-approx.toml"


def test_both_profiles_expand(untied_host):
    name, spec = load_spec(SPEC)
    assert spec.compare == "log10_ratio" and spec.baseline == "MLP" and not spec.reference
    for profile, seeds in (("cpu", 5), ("full", 10)):
        plan = expand(untied_host, name, spec, profile=profile)
        assert len(plan.seeds) == seeds and len(plan.tasks) == 3 * 16 * seeds
    # the same budget, data and W/b optimiser for every entry of a cell
    cell = [t for t in plan.tasks if t.cell_index == 0 and t.seed_index == 0]
    assert len({str(t.spec["trainer"]) for t in cell}) == 1
    assert len({str(t.spec["dataset"]) for t in cell}) == 1 and len({t.seed for t in cell}) == 1
    rules = {t.entry: t.spec["rule"] for t in cell}  # Adam for W and b everywhere
    assert rules["MLP"]["name"] == rules["separated/autograd"]["name"] == "adam"
    assert rules["separated/semi-sum"]["base"]["name"] == "adam"


def test_a_shrunken_copy_runs_every_entry(run_leaderboard):
    raw = tomllib.loads(SPEC.read_text())
    small = copy.deepcopy(raw)
    small.pop("profiles"), small.pop("default_profile")
    small["seeds"] = 1
    small["grid"]["dataset.target"] = ["saddle"]
    small["defaults"]["trainer"].update(epochs=3, target_value=10.0)  # reached at once
    small["defaults"]["dataset"].update(n_train=64, n_test=32)
    table = run_leaderboard(small)
    assert table.height == 6 and (table["n"] == 1).all()
    assert set(table["entry"]) == {"MLP", "separated/autograd", "separated/semi-sum"}
    assert "log10_ratio_baseline" in table.columns
    rows = table.filter(pl.col("entry") != "MLP")
    assert all(math.isfinite(x) for x in rows["log10_ratio_baseline"])
    assert (table["target_reached"] == 1.0).all() and (table["steps_to_target"] == 1.0).all()
    assert (table["test_max_abs_error"] > 0).all()


def test_claims_pair_seeds_and_bound_the_speed_up_when_the_mlp_misses():
    import importlib.util

    path = SPEC.parent / "podoprosvetov-approx" / "claims.py"
    module_spec = importlib.util.spec_from_file_location("claims", path)
    claims = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(claims)
    rows = []
    for seed, (base, sep, base_steps, sep_steps) in enumerate(
            [(1e-2, 1e-4, 400.0, 100.0), (1e-3, 1e-4, 600.0, 100.0)]):
        rows += [
            {"activation": "relu", "target": "t", "cell": 0, "entry": "MLP", "seed_index": seed,
             "status": "ok", "mse": base, "steps": base_steps, "seconds": base_steps / 100},
            {"activation": "relu", "target": "t", "cell": 0, "entry": "sep", "seed_index": seed,
             "status": "ok", "mse": sep, "steps": sep_steps, "seconds": 2.0},
            {"activation": "softplus", "target": "t", "cell": 1, "entry": "MLP",
             "seed_index": seed, "status": "ok", "mse": base, "steps": None, "seconds": None},
            {"activation": "softplus", "target": "t", "cell": 1, "entry": "sep",
             "seed_index": seed, "status": "ok", "mse": sep, "steps": 250.0, "seconds": 2.0},
        ]
    out = claims.compare(pl.DataFrame(rows), budget=1000)
    relu, soft = out
    assert relu["log10 MSE ratio"] == pytest.approx(-1.5)  # mean of -2 and -1, paired by seed
    assert relu["speed-up"] == "5.00 (k=2)"                # 500 / 100
    assert relu["time speed-up"] == "2.50"                 # 5 s / 2 s
    assert soft["speed-up"] == ">= 4.00 (MLP missed)" and soft["reached (entry/MLP)"] == "2/0"
    assert "| relu | t | sep | 2 | -1.50 | 5.00 (k=2) | 2.50 | 2/2 |" in claims.markdown(out)
