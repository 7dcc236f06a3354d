"""The paper's two claims, measured on the records of podoprosvetov-approx (committed
``cpu.parquet`` by default); and the step-size choice from the runs of its tuning spec.

    .venv/bin/python leaderboards/podoprosvetov-approx/claims.py [--records cpu.parquet]
    .venv/bin/python leaderboards/podoprosvetov-approx/claims.py --tuning [--results results]

Every separated entry is paired with the plain MLP of its own protocol (``MLP/GD`` for an
entry whose label contains ``/GD``, else ``MLP/Adam``; ``MLP`` in records made before the
protocols were split), in the same grid cell (activation, target) and seed: the same data and
initial W, b. Per pair:

error claim
    ``log10(entry test MSE / MLP test MSE)`` at the end of training: -2 = two orders of
    magnitude lower error. The paper claims -1.5 to -2 (ReLU) and down to -3 (SoftPlus).
time claim
    ``steps``: the first step at which the entry's test MSE is at or below the paired MLP's
    *final* test MSE (from the per-step curves); ``MLP steps``: the first step at which the MLP
    itself got there (at most its budget); ``speed-up = MLP steps / steps``. A run that never
    gets there is censored: its steps count as more than the budget (never dropped) and its
    speed-up as less than ``MLP steps / budget``. Seconds are estimated as steps times the
    run's mean wall-clock seconds per step (its ``wall_time_s`` over its budget, evaluations
    included: noisy on a shared machine). The paper claims 3-10x shorter training.

Summaries per entry and activation, over the targets of the records:

- ``best``: the target with the lowest mean log10 ratio (error) or the highest median
  speed-up (time), with its value;
- ``typical``: error: the mean over targets of each seed's log10 ratio, then its mean over
  seeds with a 95% t-interval over seeds (the seeds are the independent replicates; targets
  are fixed); time: the median speed-up over every (target, seed) pair, censored pairs
  counted as the slowest, with a distribution-free 95% interval of the median (order
  statistics; a censored end shows as "censored") and the share of pairs that reached the
  MLP's final error.

Per cell, the mean log10 ratio has a 95% t-interval over seeds.

Tuning (``--tuning``): per entry of tuning.toml, the selection criterion (mean log10 test MSE
over its runs, a diverged run counted as the worst MSE of any run) and its parts.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "cpu.parquet"
TUNING = HERE / "tuning.toml"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
"""Two-sided 95% quantiles of Student's t by degrees of freedom (larger df: the next lower
listed one, a slightly wider interval)."""
READINGS = {
    "separated/autograd": "neuron only: every parameter by Adam (tuned lr 0.003)",
    "separated/semi-sum": "semi-sum rule as printed (q: eqs. 20-22; delta = dE/do; d0 = 1); "
                          "W, b by Adam (tuned lr 0.01)",
    "separated/autograd/Adam": "neuron only: every parameter by Adam, lr selected",
    "separated/semi-sum/Adam": "semi-sum rule as printed (q: eqs. 20-22; delta = dE/do; "
                               "d0 = 1); W, b by Adam, lr selected",
    "separated/semi-sum/GD": "semi-sum rule as printed (q: eqs. 20-22; delta = dE/do; d0 = 1); "
                             "W, b by plain GD (eq. 6), lr selected",
    "separated/semi-sum/GD/alt": "semi-sum rule read the other way (q: neuron's do/dq; "
                                 "delta = dE/da, eq. 5; d0 = 0.5); W, b by plain GD, lr selected",
}


def baseline_of(entry: str, entries: set[str]) -> str | None:
    """The plain MLP an entry is paired with (module docstring)."""
    for name in (("MLP/GD",) if "/GD" in entry else ("MLP/Adam", "MLP")):
        if name in entries and name != entry:
            return name
    return None


def load(path: Path) -> pl.DataFrame:
    """The final runs of a records file, one row per run."""
    df = pl.read_parquet(path)
    if "stage" in df.columns:
        df = df.filter(pl.col("stage").fill_null("final") == "final")
    return df.select(
        pl.col("cell_json").str.json_path_match("$['activation.name']").alias("activation"),
        pl.col("cell_json").str.json_path_match("$['dataset.target']").alias("target"),
        "entry", "seed_index", "status", pl.col("m_test_mse").alias("mse"),
        pl.col("curve_epoch").alias("steps"), pl.col("curve_test_mse").alias("curve"),
        pl.col("wall_time_s").alias("wall"))


def first_step_at_or_below(steps: list[float], curve: list[float], level: float) -> float | None:
    """The first step whose test MSE is <= level; None if none is."""
    for step, value in zip(steps, curve):
        if value is not None and math.isfinite(value) and value <= level:
            return step
    return None


def pairs(df: pl.DataFrame) -> list[dict]:
    """One row per (entry, activation, target, seed) paired with its protocol's MLP run; rows
    where either run is not ``ok`` have ``ok = False`` and no error ratio; an entry run that
    diverged keeps its time (``timed``: from its curve before the blow-up; never reached if it
    did not get there first), as a run that never reached the MLP's error counts, not dropped."""
    entries = set(df["entry"])
    runs = {(r["entry"], r["activation"], r["target"], r["seed_index"]): r
            for r in df.iter_rows(named=True)}
    out = []
    for (entry, act, target, seed), run in sorted(runs.items()):
        base_name = baseline_of(entry, entries)
        base = runs.get((base_name, act, target, seed)) if base_name else None
        if base_name is None or entry.startswith("MLP") or base is None:
            continue
        row = {"entry": entry, "baseline": base_name, "activation": act, "target": target,
               "seed": seed, "ok": run["status"] == "ok" and base["status"] == "ok",
               "timed": base["status"] == "ok" and run["curve"] is not None}
        if row["timed"]:  # a diverged entry run still has its curve up to the blow-up
            budget = base["steps"][-1]
            level = base["mse"]
            t_base = first_step_at_or_below(base["steps"], base["curve"], level) or budget
            t_entry = first_step_at_or_below(run["steps"], run["curve"], level)
            row.update(budget=budget, log_ratio=math.log10(run["mse"] / base["mse"])
                       if row["ok"] else None, base_steps=t_base, steps=t_entry,
                       speed_up=None if t_entry is None else t_base / t_entry,
                       speed_up_bound=t_base / budget,
                       seconds_ratio=None if t_entry is None else
                       (t_base * base["wall"] / budget) / (t_entry * run["wall"] / run["steps"][-1]))
        out.append(row)
    return out


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None with one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    df = len(values) - 1
    t = T975.get(df) or T975[max(k for k in T975 if k <= df)]
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def censored_median(values: list[float | None], bound: float, low: bool, fmt: str = ".2f"
                    ) -> str:
    """Median where None is censored: below ``bound`` (``low``: speed-ups) or above it
    (steps); the censored count at the slow end. Text: ``"< x"``/``"> x"`` when the median
    falls among them."""
    if not values:
        return ""
    ordered = sorted((-math.inf if low else math.inf) if v is None else v for v in values)
    n = len(ordered)
    mids = [ordered[(n - 1) // 2], ordered[n // 2]]
    if any(math.isinf(m) for m in mids):
        return f"{'<' if low else '>'} {bound:{fmt}}"
    return f"{statistics.fmean(mids):{fmt}}"


def median_interval(values: list[float | None], low: bool, fmt: str = ".2f") -> str:
    """A distribution-free 95% interval of the median by order statistics (the ranks k and
    n + 1 - k with P(Binomial(n, 1/2) < k) <= 0.025), censored values sorted as the slowest;
    a censored end is shown as ``<``/``>`` its neighbour's side. Empty with fewer than 6."""
    n = len(values)
    k = 0
    while sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n <= 0.025:
        k += 1
    if k == 0:
        return ""
    ordered = sorted((-math.inf if low else math.inf) if v is None else v for v in values)
    lo, hi = ordered[k - 1], ordered[n - k]

    def text(x: float) -> str:
        return "censored" if math.isinf(x) else f"{x:{fmt}}"
    return f"[{text(lo)}, {text(hi)}]"


def _pm(mean: float, half: float | None) -> str:
    return f"{mean:+.2f}" + ("" if half is None else f" ± {half:.2f}")


def per_cell(rows: list[dict]) -> list[dict]:
    """Per (activation, target, entry): error and time of the pairs."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["activation"], r["target"], r["entry"]), []).append(r)
    out = []
    for (act, target, entry), g in sorted(groups.items()):
        ok = [r for r in g if r["ok"]]
        mean, half = t_interval([r["log_ratio"] for r in ok]) if ok else (math.nan, None)
        ok = [r for r in g if r["timed"]]  # times: diverged entry runs too
        budget = max((r["budget"] for r in ok), default=0)
        out.append({
            "activation": act, "target": target, "entry": entry,
            "n (ok/runs)": f"{sum(r['ok'] for r in g)}/{len(g)}",
            "log10 MSE ratio (95% t)": _pm(mean, half) if not math.isnan(mean) else "",
            "reached MLP final": f"{sum(r['steps'] is not None for r in ok)}/{len(ok)}",
            "steps (median)": censored_median([r["steps"] for r in ok], budget, low=False,
                                              fmt=".0f"),
            "MLP steps (median)": censored_median([r["base_steps"] for r in ok], budget,
                                                  low=False, fmt=".0f"),
            "speed-up (median)": censored_median(
                [r["speed_up"] for r in ok], max((r["speed_up_bound"] for r in ok), default=0),
                low=True),
        })
    return out


def summary(rows: list[dict]) -> list[dict]:
    """Per (entry, activation): best and typical effect of each claim (module docstring)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["entry"], r["activation"]), []).append(r)
    out = []
    for (entry, act), g in sorted(groups.items()):
        timed = [r for r in g if r["timed"]]
        ok = [r for r in g if r["ok"]]
        if not ok:
            continue
        targets = sorted({r["target"] for r in ok})
        by_target = {t: [r for r in ok if r["target"] == t] for t in targets}
        errors = {t: t_interval([r["log_ratio"] for r in rs]) for t, rs in by_target.items()}
        best_error = min(errors, key=lambda t: errors[t][0])
        seeds = sorted({r["seed"] for r in ok})
        per_seed = [statistics.fmean(r["log_ratio"] for r in ok if r["seed"] == s)
                    for s in seeds if all(any(r["seed"] == s for r in by_target[t])
                                          for t in targets)]
        typical = t_interval(per_seed) if per_seed else (math.nan, None)
        bound = max(r["speed_up_bound"] for r in timed)
        timed_by_target = {t: [r for r in timed if r["target"] == t]
                           for t in sorted({r["target"] for r in timed})}
        speeds = {t: censored_median([r["speed_up"] for r in rs],
                                     max(r["speed_up_bound"] for r in rs), low=True)
                  for t, rs in timed_by_target.items()}
        numeric = {t: float(s) for t, s in speeds.items() if not s.startswith("<")}
        best_time = max(numeric, key=numeric.get) if numeric else None
        seconds = [r["seconds_ratio"] for r in timed]
        out.append({
            "entry": entry, "vs": ok[0]["baseline"], "activation": act,
            "error: best (target)": f"{_pm(*errors[best_error])} ({best_error})",
            "error: typical (95% t over seeds)": _pm(*typical),
            "time: best median speed-up (target)":
                f"{numeric[best_time]:.2f}x ({best_time})" if best_time
                else "censored on every target",
            "time: typical median speed-up [95%]": censored_median(
                [r["speed_up"] for r in timed], bound, low=True) + " " + median_interval(
                [r["speed_up"] for r in timed], low=True),
            "seconds: typical median": censored_median(seconds, bound, low=True),
            "reached MLP final": f"{sum(r['steps'] is not None for r in timed)}/{len(timed)}",
            "ok / pairs": f"{len(ok)}/{len(g)}",
            "reading": READINGS.get(entry, ""),
        })
    return out


def tuning(df: pl.DataFrame) -> list[dict]:
    """The tuning criterion per entry, best first."""
    worst = df.filter(pl.col("status") == "ok")["mse"].max()
    df = df.with_columns(pl.when(pl.col("status") == "ok").then(pl.col("mse")).otherwise(worst)
                         .log10().alias("lg"))
    table = df.group_by("entry", maintain_order=True).agg(
        pl.col("lg").mean().alias("criterion: mean log10 MSE"),
        pl.col("lg").filter(pl.col("activation") == "relu").mean().alias("relu"),
        pl.col("lg").filter(pl.col("activation") == "softplus").mean().alias("softplus"),
        pl.len().alias("runs"), (pl.col("status") != "ok").sum().alias("diverged"))
    return table.sort("criterion: mean log10 MSE").to_dicts()


def tuning_runs(results: str) -> pl.DataFrame:
    from bench_core.plugins import get_host
    from bench_core.results.leaderboard import overlay_plan
    from bench_core.results.records import read_records
    from bench_core.specs.model import load_spec
    from bench_core.specs.plan import expand

    name, spec = load_spec(TUNING)
    plan = expand(get_host(), name, spec)
    lf = overlay_plan(read_records(Path(results) / name, {t.run_id for t in plan.tasks}),
                      plan.tasks)
    return lf.collect().select(
        pl.col("cell_json").str.json_path_match("$['activation.name']").alias("activation"),
        "entry", "status", pl.col("m_test_mse").alias("mse"))


def markdown(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [f"{v:+.2f}" if isinstance(v, float) and math.isfinite(v) else str(v)
                 for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default=str(RECORDS), help="a records file (untied export)")
    parser.add_argument("--results", default="results", help="results root (--tuning)")
    parser.add_argument("--tuning", action="store_true", help="the step-size choice instead")
    parser.add_argument("--cells", action="store_true", help="also the per-cell table")
    args = parser.parse_args()
    if args.tuning:
        print(markdown(tuning(tuning_runs(args.results))))
        return
    rows = pairs(load(Path(args.records)))
    print(markdown(summary(rows)))
    if args.cells:
        print()
        print(markdown(per_cell(rows)))


if __name__ == "__main__":
    main()
