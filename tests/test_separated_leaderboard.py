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


ENTRIES = {"MLP/Adam", "separated/autograd/Adam", "separated/semi-sum/Adam", "MLP/GD",
           "separated/semi-sum/GD", "separated/semi-sum/GD/alt"}


def test_both_profiles_expand_with_rates_selected_per_entry_and_cell(untied_host):
    name, spec = load_spec(SPEC)
    assert spec.compare == "log10_ratio" and spec.baseline == "MLP/Adam" and not spec.reference
    for profile, seeds, targets in (("cpu", 5, 2), ("full", 10, 10)):
        plan = expand(untied_host, name, spec, profile=profile)
        stage = plan.selection
        assert len(plan.seeds) == seeds and len(stage.builders) == 6 * 2 * targets
        # GD entries: 4 candidate rates, Adam entries 3; one selection seed each
        assert len(stage.tasks) == (3 * 4 + 3 * 3) * 2 * targets
    params = {e: p for e, p in stage.parameters.items()}
    assert params["MLP/GD"] == params["MLP/Adam"] == "rule.lr"
    assert params["separated/semi-sum/GD"] == params["separated/semi-sum/Adam"] == "rule.base.lr"
    cell = {t.entry: t for t in stage.tasks if t.cell_index == 0}
    assert set(cell) == ENTRIES
    # the same budget and data for every entry of a cell; the protocol's optimiser for W and b
    assert len({str(t.spec["trainer"]) for t in cell.values()}) == 1
    assert len({str(t.spec["dataset"]) for t in cell.values()}) == 1
    rules = {e: t.spec["rule"] for e, t in cell.items()}
    assert rules["MLP/Adam"]["name"] == rules["separated/autograd/Adam"]["name"] == "adam"
    assert rules["separated/semi-sum/Adam"]["base"]["name"] == "adam"
    assert rules["MLP/GD"]["name"] == "sgd" and rules["MLP/GD"]["momentum"] == 0.0
    for gd in ("separated/semi-sum/GD", "separated/semi-sum/GD/alt"):
        assert rules[gd]["base"]["name"] == "sgd" and rules[gd]["base"]["momentum"] == 0.0
    alt = rules["separated/semi-sum/GD/alt"]
    assert (alt["q_step"], alt["delta"]) == ("neuron", "activation")
    assert cell["separated/semi-sum/GD/alt"].spec["model"]["d_init"] == 0.5
    assert (rules["separated/semi-sum/GD"]["q_step"], rules["separated/semi-sum/GD"]["delta"]) \
        == ("paper", "output")


def test_a_shrunken_copy_runs_every_entry(run_leaderboard):
    raw = tomllib.loads(SPEC.read_text())
    small = copy.deepcopy(raw)
    small.pop("profiles"), small.pop("default_profile"), small.pop("select")
    for entry in small["entries"]:
        entry.pop("select_values", None), entry.pop("select_parameter", None)
    small["seeds"] = 1
    small["grid"]["dataset.target"] = ["sin_cos_field"]
    small["defaults"]["trainer"].update(epochs=3, target_value=10.0)  # reached at once
    small["defaults"]["dataset"].update(n_train=64, n_test=32)
    table = run_leaderboard(small)
    assert table.height == 12 and (table["n"] == 1).all()
    assert set(table["entry"]) == ENTRIES
    assert "log10_ratio_baseline" in table.columns
    rows = table.filter(pl.col("entry") != "MLP/Adam")
    assert all(math.isfinite(x) for x in rows["log10_ratio_baseline"])
    assert (table["target_reached"] == 1.0).all() and (table["steps_to_target"] == 1.0).all()
    assert (table["test_max_abs_error"] > 0).all()


def load_claims():
    import importlib.util

    path = SPEC.parent / "podoprosvetov-approx" / "claims.py"
    module_spec = importlib.util.spec_from_file_location("claims", path)
    claims = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(claims)
    return claims


def run(entry, act, target, seed, curve, status="ok"):
    return {"activation": act, "target": target, "entry": entry, "seed_index": seed,
            "status": status, "mse": curve[-1], "steps": [float(i + 1) for i in range(len(curve))],
            "curve": curve, "wall": 10.0}


def test_claims_pair_each_entry_with_its_protocols_mlp_by_seed_and_censor_misses():
    claims = load_claims()
    # budget 10 steps; MLP/GD ends at 1e-2 (first there at step 10); the GD entry reaches 1e-2
    # at step 2 on seed 0 and step 5 on seed 1, and ends lower; on target t2 it never gets there
    mlp = [1.0] * 9 + [1e-2]
    rows = [run("MLP/GD", "relu", "t1", 0, mlp), run("MLP/GD", "relu", "t1", 1, mlp),
            run("MLP/Adam", "relu", "t1", 0, [1e-6] * 10),
            run("sep/GD", "relu", "t1", 0, [1.0] + [1e-2] * 8 + [1e-4]),
            run("sep/GD", "relu", "t1", 1, [1.0] * 4 + [1e-2] * 5 + [1e-3]),
            run("MLP/GD", "relu", "t2", 0, mlp), run("MLP/GD", "relu", "t2", 1, mlp),
            run("sep/GD", "relu", "t2", 0, [1.0] * 10), run("sep/GD", "relu", "t2", 1, [1.0] * 10)]
    paired = claims.pairs(pl.DataFrame(rows))
    assert {r["baseline"] for r in paired} == {"MLP/GD"}          # not the Adam MLP
    t1 = sorted((r for r in paired if r["target"] == "t1"), key=lambda r: r["seed"])
    assert [r["log_ratio"] for r in t1] == [pytest.approx(-2.0), pytest.approx(-1.0)]
    assert [r["steps"] for r in t1] == [2.0, 5.0] and [r["speed_up"] for r in t1] == [5.0, 2.0]
    t2 = [r for r in paired if r["target"] == "t2"]
    assert all(r["steps"] is None and r["speed_up"] is None for r in t2)
    (row,) = claims.summary(paired)
    # error: best target t1 (mean -1.5, t-interval over 2 seeds: 12.706 * sd / sqrt 2)
    assert row["error: best (target)"] == f"-1.50 ± {12.706 * 0.5 ** 0.5 / 2 ** 0.5:.2f} (t1)"
    # typical: per-seed means over targets (-2 + 2)/2 = 0 and (-1 + 2)/2 = 0.5 -> +0.25
    assert row["error: typical (95% t over seeds)"].startswith("+0.25 ± ")
    # time: speed-ups 5, 2 and two censored (slowest): median of (5, 2, <1, <1) falls among
    # the censored on one side -> "< 1.00"; the best target t1 has median 3.5
    assert row["time: typical median speed-up [95%]"] == "< 1.00 "  # too few pairs for one
    assert row["time: best median speed-up (target)"] == "3.50x (t1)"
    assert row["reached MLP final"] == "2/4"
    # a diverged entry run has no error ratio but keeps its time: here it never got there
    rows.append(run("MLP/GD", "relu", "t1", 2, mlp))
    rows.append(run("sep/GD", "relu", "t1", 2, [1.0, float("nan")] + [None] * 8, "diverged"))
    paired = claims.pairs(pl.DataFrame(rows))
    (row,) = claims.summary(paired)
    assert row["ok / pairs"] == "4/5" and row["reached MLP final"] == "2/5"
    assert row["error: best (target)"].startswith("-1.50 ")     # the diverged run is not in it
    cells = claims.per_cell(paired)
    assert cells[0]["steps (median)"] == "5" and cells[1]["steps (median)"] == "> 10"  # 2, 5, >10
    assert "| sep/GD | MLP/GD | relu |" in claims.markdown([row])


def test_the_censored_median_never_drops_a_run():
    claims = load_claims()
    assert claims.censored_median([3.0, None, None], 0.5, low=True) == "< 0.50"
    assert claims.censored_median([3.0, 4.0, None], 0.5, low=True) == "3.00"
    assert claims.censored_median([10.0, None, 30.0], 100, low=False, fmt=".0f") == "30"
    assert claims.censored_median([10.0, None], 100, low=False, fmt=".0f") == "> 100"


def test_the_median_interval_uses_order_statistics_and_shows_censored_ends():
    claims = load_claims()
    values = [float(v) for v in range(1, 11)]          # n = 10: ranks 2 and 9 (97.9%)
    assert claims.median_interval(values, low=True) == "[2.00, 9.00]"
    assert claims.median_interval([None] * 2 + values[2:], low=True) == "[censored, 9.00]"
    assert claims.median_interval(values[:5], low=True) == ""  # n = 5: no 95% interval
