"""Per-epoch Markdown tables (mean +- std over seeds, one column per entry) of a committed
leaderboard's recorded curves.

    .venv/bin/python scripts/epoch_table.py leaderboards/mf-zo-rq2.toml --profile cpu \
        --metric test_loss --metric test_accuracy

Reads ``leaderboards/NAME/PROFILE.parquet`` (the committed records); with several grid cells,
one table per cell and metric. Runs whose curve lacks an epoch are left out of that epoch's
mean (the count is shown when it differs from the entry's runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import polars as pl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--metric", action="append", required=True)
    args = ap.parse_args()
    records = pl.read_parquet(args.spec.with_suffix("") / f"{args.profile}.parquet")
    if "stage" in records.columns:
        records = records.filter(pl.col("stage").is_null() | (pl.col("stage") != "selection"))
    entries = list(dict.fromkeys(records["entry"].to_list()))
    for cell in dict.fromkeys(records["cell_json"].to_list()):
        runs = records.filter(pl.col("cell_json") == cell)
        for metric in args.metric:
            curves: dict[str, list[dict]] = {e: [] for e in entries}
            for row in runs.iter_rows(named=True):
                curves[row["entry"]].append(json.loads(row["curves_json"]))
            epochs = sorted({int(ep) for cs in curves.values() for c in cs for ep in c["epoch"]})
            where = "" if cell in ("{}", None) else f", cell {cell}"
            print(f"**{metric} per epoch** (mean ± std over seeds{where})\n")
            print("| epoch | " + " | ".join(entries) + " |")
            print("|---|" + "---|" * len(entries))
            for ep in epochs:
                cells = []
                for e in entries:
                    values = [c[metric][c["epoch"].index(float(ep))] for c in curves[e]
                              if float(ep) in c["epoch"] and metric in c]
                    if not values:
                        cells.append("")
                        continue
                    text = f"{statistics.fmean(values):.4f}"
                    if len(values) > 1:
                        text += f" ± {statistics.stdev(values):.4f}"
                    if len(values) != len(curves[e]):
                        text += f" (n={len(values)})"
                    cells.append(text)
                print(f"| {ep} | " + " | ".join(cells) + " |")
            print()


if __name__ == "__main__":
    main()
