"""Resident memory of a grouped run against its size: do the runs of a group share their data?

Run on demand: ``python benchmarks/group_memory.py`` (``--quick``: sizes 1 and 10 only).

The dual-weight paper's Fashion-MNIST online protocol (``wang-classification``: 784-20-10 ReLU
MLPs, batch size 1, a training pool of 100/500/1000 samples, the 80/20 seeded split of all 70,000
images, a clean and a noisy test set): groups of 1, 5, 10 and 75 runs (5 rules x 3 pools x 5
seeds), each in a fresh child process, which builds the group's sessions (loading the data as ``untied run`` does) and
trains them together through ``OnlineTrainer.fit_group`` for ``--iterations`` samples. Printed per
size: resident memory (RSS) after building the sessions and the peak after training, and the
memory each added run costs: among runs on the same data (1 -> 5 runs: the 5 rules of one
pool and seed) and overall (10 -> 75). Run seeds are derived per grid cell, so each (pool, seed)
pair has its own 80/20 split: the 75 runs hold 15 different test splits, whose copies every
run of the same split shares. ``--unshared`` builds every run's data on its own (the behaviour
before :func:`bench_core.data.share_while_used`), for comparison in the same call.

One copy of the data a run holds: the test split (14,000 x 784 float32 = 43.9 MB) and its noisy
copy (43.9 MB): 87.8 MB. The last line is machine-readable::

    group_memory: same_data_per_run_mb=A per_run_mb=B data_copy_mb=C shared=yes|no

Target: A well below C (a run on data another run of its group holds adds its model and its
pool, not a copy of the data set); B adds one copy per 5 runs (a new split).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

DATA_COPY_MB = 2 * 14_000 * 784 * 4 / 2**20
RULES = [{"name": "sgd"}, {"name": "dual_weight"}, {"name": "dual_weight_stable"},
         {"name": "l2", "penalty": 0.01}, {"name": "l2", "penalty": 0.1}]


def rss_mb() -> float:
    """Current resident memory of this process (Linux ``/proc/self/statm``), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def child(size: int, iterations: int, unshared: bool) -> dict:
    """Build and train one group of ``size`` runs in this process; return its memory figures."""
    torch.set_num_threads(1)
    from untied_plugins.dual_weight.online import OnlineParams, OnlineTrainer

    import bench_core.data as data
    from bench_core.execution.runner import build_session
    from bench_core.interfaces import RunContext
    from bench_core.plugins import get_host
    from bench_core.specs.model import parse_spec
    from bench_core.specs.plan import expand

    if unshared:
        data.share_while_used = lambda key, build: build()  # every run builds its own
    raw = {"title": "bench", "seeds": 5, "metric": "test_accuracy",
           "defaults": {"dataset": {"name": "fashion_mnist", "noisy_test_std": 0.3,
                                    "noisy_test_clip": [0.0, 1.0]},
                        "model": {"name": "mlp", "hidden": [20], "init": "he_normal"},
                        "activation": {"name": "relu"}, "rule": {"name": "sgd", "lr": 1e-3},
                        "trainer": {"name": "online", "iterations": iterations,
                                    "eval_every": iterations, "loss": "cross_entropy"}},
           "grid": {"dataset.train_subset": [100, 500, 1000]},
           "entries": [{"label": r["name"] + str(r.get("penalty", "")),
                        "overrides": {"rule": {**r, "lr": 1e-3}}} for r in RULES]}
    host = get_host()
    name, spec = parse_spec(raw, stem="bench")
    tasks = sorted(expand(host, name, spec).tasks, key=lambda t: t.seed)[:size]
    base = rss_mb()
    sessions = [build_session(host, t, RunContext(t.seed, torch.device("cpu"))) for t in tasks]
    built = rss_mb()
    trainer = OnlineTrainer(OnlineParams(iterations=iterations, eval_every=iterations,
                                         loss="cross_entropy"))
    trainer.max_group_size = None
    results = trainer.fit_group(sessions)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise SystemExit(f"group of {size} failed: {failed[0]}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "seeds": len({t.seed for t in tasks}), "before": base, "built": built,
            "peak": peak}


def measure(size: int, iterations: int, unshared: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(size), "--iterations", str(iterations)]
    out = subprocess.run(cmd + (["--unshared"] if unshared else []), capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"group of {size}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200, help="samples per run")
    ap.add_argument("--quick", action="store_true", help="sizes 1, 5 and 10 only")
    ap.add_argument("--unshared", action="store_true", help="also measure without sharing")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.iterations, args.unshared)))
        return
    sizes = [1, 5, 10] if args.quick else [1, 5, 10, 75]
    print(f"torch {torch.__version__}, threads 1 per child, Fashion-MNIST online protocol, "
          f"{args.iterations} samples per run; one data copy = {DATA_COPY_MB:.1f} MB")
    last = {}
    for unshared in ([False, True] if args.unshared else [False]):
        label = "unshared" if unshared else "shared"
        rows = [measure(size, args.iterations, unshared) for size in sizes]
        for row in rows:
            print(f"{label:8s} {row['size']:3d} runs ({row['seeds']} seeds): after build "
                  f"{row['built']:7.0f} MB (+{row['built'] - row['before']:6.0f}), peak "
                  f"{row['peak']:7.0f} MB")
        def per_run(a: dict, b: dict, at: str) -> float:
            return (b[at] - a[at]) / (b["size"] - a["size"])

        same, overall = per_run(rows[0], rows[1], "built"), per_run(rows[-2], rows[-1], "built")
        print(f"{label:8s} per added run, after build: same data (1 -> 5 runs) {same:.1f} MB, "
              f"overall ({rows[-2]['size']} -> {rows[-1]['size']} runs) {overall:.1f} MB; at "
              f"the peak: {per_run(rows[0], rows[1], 'peak'):.1f} MB and "
              f"{per_run(rows[-2], rows[-1], 'peak'):.1f} MB")
        last[label] = same, overall
    same, overall = last["shared"]
    print(f"group_memory: same_data_per_run_mb={same:.1f} per_run_mb={overall:.1f} "
          f"data_copy_mb={DATA_COPY_MB:.1f} shared={'yes' if same < DATA_COPY_MB / 4 else 'no'}")

if __name__ == "__main__":
    main()
