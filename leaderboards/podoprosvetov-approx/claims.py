"""The paper's two claims, per grid cell, from the recorded runs of podoprosvetov-approx; and
the step-size choice from the runs of its tuning spec.

    .venv/bin/python leaderboards/podoprosvetov-approx/claims.py [--profile cpu] [--results results]
    .venv/bin/python leaderboards/podoprosvetov-approx/claims.py --tuning [--results results]

Claims: a Markdown table, per activation and target, for each separated entry against the plain
MLP of the same cell:

``log10 MSE ratio``
    the mean over seeds of log10(entry MSE / MLP MSE), paired by seed (the same data and initial
    W, b): -2 = two orders of magnitude lower error. The paper claims -1.5 to -2 (ReLU) and
    down to -3 (SoftPlus). (The leaderboard table's column is log10 of the ratio of the mean
    MSEs, which one bad seed can dominate; both are shown there and here.)
``speed-up``
    mean steps to the target MSE of the MLP / of the entry, over the seeds where both reached
    it (``k`` of them); ``>= x`` when the MLP missed it on every seed where the entry reached
    it (x uses the full budget for the MLP, a lower bound). The paper claims 3-10.
``time speed-up``
    the same with seconds to the target (wall clock, so it includes each entry's cost per step;
    noisy on a shared machine).

Tuning (``--tuning``): per entry of tuning.toml, the selection criterion (mean log10 test MSE
over its runs, a diverged run counted as the worst MSE of any run) and its parts.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import polars as pl

from bench_core.plugins import get_host
from bench_core.results.leaderboard import overlay_plan
from bench_core.results.records import read_records
from bench_core.specs.model import load_spec
from bench_core.specs.plan import expand

SPEC = Path(__file__).resolve().parent.parent / "podoprosvetov-approx.toml"
TUNING = Path(__file__).resolve().parent / "tuning.toml"
BASELINE = "MLP"


def runs(profile: str | None, results: str, spec_path: Path = SPEC) -> tuple[pl.DataFrame, int]:
    name, spec = load_spec(spec_path)
    plan = expand(get_host(), name, spec, profile=profile)
    budget = plan.tasks[0].spec["trainer"]["epochs"]
    lf = overlay_plan(read_records(Path(results) / name, {t.run_id for t in plan.tasks}),
                      plan.tasks)
    df = lf.collect().with_columns(
        pl.col("cell_json").str.json_path_match("$['activation.name']").alias("activation"),
        pl.col("cell_json").str.json_path_match("$['dataset.target']").alias("target"),
        pl.col("cell_index").alias("cell"))
    return df.select("activation", "target", "cell", "entry", "seed_index", "status",
                     pl.col("m_test_mse").alias("mse"),
                     pl.col("m_steps_to_target").alias("steps"),
                     pl.col("m_seconds_to_target").alias("seconds")), budget


def compare(df: pl.DataFrame, budget: int) -> list[dict]:
    base = df.filter(pl.col("entry") == BASELINE).select(
        "cell", "seed_index", pl.col("mse").alias("base_mse"), pl.col("steps").alias("base_steps"),
        pl.col("seconds").alias("base_seconds"), pl.col("status").alias("base_status"))
    paired = df.filter(pl.col("entry") != BASELINE).join(base, on=["cell", "seed_index"])
    rows = []
    for (cell, entry), g in sorted(paired.group_by(["cell", "entry"]), key=lambda kg: kg[0]):
        ok = g.filter((pl.col("status") == "ok") & (pl.col("base_status") == "ok"))
        log_ratio = (ok["mse"] / ok["base_mse"]).log10().mean() if ok.height else None
        both = ok.filter(pl.col("steps").is_not_null() & pl.col("base_steps").is_not_null())
        only_entry = ok.filter(pl.col("steps").is_not_null() & pl.col("base_steps").is_null())
        seconds = ""
        if both.height:
            speed = f"{both['base_steps'].mean() / both['steps'].mean():.2f} (k={both.height})"
            seconds = f"{both['base_seconds'].mean() / both['seconds'].mean():.2f}"
        elif only_entry.height:
            speed = f">= {budget / only_entry['steps'].mean():.2f} (MLP missed)"
        else:
            speed = "neither reached" if ok.height else ""
        rows.append({"activation": g["activation"][0], "target": g["target"][0], "entry": entry,
                     "n": ok.height, "log10 MSE ratio": log_ratio, "speed-up": speed,
                     "time speed-up": seconds,
                     "reached (entry/MLP)": f"{ok['steps'].is_not_null().sum()}/"
                                            f"{ok['base_steps'].is_not_null().sum()}"})
    return rows


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
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--results", default="results")
    parser.add_argument("--tuning", action="store_true", help="the step-size choice instead")
    args = parser.parse_args()
    if args.tuning:
        print(markdown(tuning(runs(None, args.results, TUNING)[0])))
        return
    df, budget = runs(args.profile, args.results)
    print(markdown(compare(df, budget)))


if __name__ == "__main__":
    main()
