"""Grouped runs of the dual-weight paper's protocol against the same runs one after another.

Run on demand: ``python benchmarks/dual_weight.py`` (``--quick`` for a short smoke pass).

K = 60 independent 784-20-10 ReLU models on MNIST, as in the paper's classification protocol
(batch size 1, samples drawn with replacement from a training pool): 3 pool sizes (100, 500,
1000) x 5 methods (sgd, l2 0.01, l2 0.1, dual_weight, dual_weight_stable) x 4 seeds. Each model
trains ``--iterations`` samples

* one after another, through ``OnlineTrainer.fit`` (the autograd path every rule can use), and
* as one group, through ``OnlineTrainer.fit_group`` (one batched kernel for the 60 models),

both with one evaluation at the end, in this process, with the thread count pinned and printed
(grouped is timed before and after the sequential pass; the median of its repeats is used).
Data: MNIST's 10k split from ``$UNTIED_DATA`` (a folder with ``mnist-10k/``); without it, random inputs
of the same shape (said so in the output). The last line is machine-readable::

    dual_weight: sequential_samples_per_s=A grouped_samples_per_s=B speedup=C

Target: C >= 20.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from untied_plugins.dual_weight.online import OnlineParams, OnlineTrainer

from bench_core.execution.runner import build_session
from bench_core.interfaces import DataBundle, DataInfo, RunContext
from bench_core.plugins import get_host
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand

RULES = {"sgd": {"name": "sgd"}, "l2 0.01": {"name": "l2", "penalty": 0.01},
         "l2 0.1": {"name": "l2", "penalty": 0.1}, "our": {"name": "dual_weight"},
         "our+stabilizer": {"name": "dual_weight_stable"}}


def mnist_root() -> str | None:
    for base in (os.environ.get("UNTIED_DATA"),
                 str(Path(__file__).resolve().parents[2] / "shared" / "data")):
        if base and (Path(base) / "mnist-10k").is_dir():
            return str(Path(base) / "mnist-10k")
    return None


def sessions(iterations: int, seeds: int, root: str | None):
    dataset = ({"name": "mnist", "root": root} if root else {"name": "digits"})
    raw = {"title": "bench", "seeds": seeds, "metric": "test_accuracy",
           "defaults": {"dataset": dataset, "model": {"name": "mlp", "hidden": [20],
                                                      "init": "he_normal"},
                        "activation": {"name": "relu"}, "rule": {"name": "sgd", "lr": 1e-3},
                        "trainer": {"name": "online", "iterations": iterations,
                                    "eval_every": iterations, "loss": "cross_entropy"}},
           "grid": {"dataset.train_subset": [100, 500, 1000]},
           "entries": [{"label": k, "overrides": {"rule": {**v, "lr": 1e-3}}}
                       for k, v in RULES.items()]}
    host = get_host()
    name, spec = parse_spec(raw, stem="bench")
    out = []
    for task in expand(host, name, spec).tasks:
        s = build_session(host, task, RunContext(task.seed, torch.device("cpu")))
        if root is None:  # same shapes as MNIST: 784 inputs, 10 classes
            gen = torch.Generator().manual_seed(task.seed % 2**31)
            n = len(s.data.x_train)
            info = DataInfo("random784", (784,), 10, "classification", 10)
            s.data = DataBundle(info, torch.rand(n, 784, generator=gen), s.data.y_train,
                                torch.rand(500, 784, generator=gen),
                                torch.randint(10, (500,), generator=gen))
        out.append(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=1000, help="samples per model")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="grouped repeats")
    ap.add_argument("--quick", action="store_true", help="100 iterations, 1 seed, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.iterations, args.seeds, args.repeats = 100, 1, 1
    torch.set_num_threads(args.threads)
    root = mnist_root()
    trainer = OnlineTrainer(OnlineParams(iterations=args.iterations, eval_every=args.iterations,
                                         loss="cross_entropy"))
    k = len(sessions(1, args.seeds, root))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, K = {k} models "
          f"784-20-10, {args.iterations} samples each, data: "
          f"{'MNIST-10k ' + root if root else 'random 784-d inputs (MNIST not found)'}")

    def grouped() -> float:
        group = sessions(args.iterations, args.seeds, root)
        start = time.perf_counter()
        results = trainer.fit_group(group)
        elapsed = time.perf_counter() - start
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            raise SystemExit(f"grouped run failed: {bad[0]}")
        return elapsed

    times = [grouped()]
    runs = sessions(args.iterations, args.seeds, root)
    start = time.perf_counter()
    for s in runs:
        trainer.fit(s)
    sequential = time.perf_counter() - start
    times += [grouped() for _ in range(max(0, args.repeats - 1))]
    total = k * args.iterations
    seq_rate, grp_rate = total / sequential, total / statistics.median(times)
    print(f"one by one: {sequential:.2f} s ({seq_rate / k:.0f} samples/s per model)")
    print(f"grouped:    {', '.join(f'{t:.2f}' for t in times)} s (median "
          f"{statistics.median(times):.2f} s)")
    print(f"dual_weight: sequential_samples_per_s={seq_rate:.0f} grouped_samples_per_s="
          f"{grp_rate:.0f} speedup={grp_rate / seq_rate:.1f}")


if __name__ == "__main__":
    main()
