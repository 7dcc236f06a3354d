"""Speed and memory of one Mono-Forward step: MF+DD (P = 1, 4, 8) vs MF+AD vs the naive loop.

Same block (dense ``in_features -> width``, ReLU, with its ``M`` of ``classes x width``), same
batch, one process, ``torch.set_num_threads(N)`` pinned and printed (default 1). Times are
medians of ``--repeats`` steps (forward + estimate + update). The naive loop is the textbook
evaluation of the same estimator: for every chunk, direction and sign, perturb the chunk in place
and run the full block forward and read-out (2P forwards per chunk; :func:`naive_losses`), then
the same update. Peak memory: the largest total size of the tensor storages allocated during one
step and alive at the same time (:func:`bench_core.kit.memory.peak_live_bytes`: every op output
with a new storage counts until the storage is freed; parameters and the batch exist before the
step and are not counted; neither are allocations inside an op that never become a tensor). BP
is a full back-propagation step of the same block plus a dense output layer (width -> classes)
and cross-entropy.

``fused_losses``: the same DD steps at P = 4 with the trainer's execution option of that name
(the perturbed losses of one-unit chunks by one compiled kernel,
:data:`untied_plugins.mono_forward.directional.FUSED_CHANGES`), timed beside the eager ones.

Directions: both kinds are measured, ``gaussian`` (normalised Gaussian, the poster's and the
trainer's default) and ``rademacher`` (random signs / sqrt(n)). All step timings are taken
round-robin (per round, one untimed call of each compared thing to warm its cache, then one
timed call; medians over rounds), so a load that changes during the run affects them alike.

The arithmetic floor of a DD step at P = 4, per direction kind: the work no implementation of
the estimator can skip, each part timed alone in the same process: drawing the ``P x n``
direction entries (normalising them, for Gaussian), the perturbation matmul ``[x | 1] V^T``
(P times the MACs of the clean forward: the ``2P`` perturbed forwards share the clean
pre-activation, ``(W + eps V) x = W x + eps V x``), and combining the estimate
(``sum_p c_p v_p``, P multiply-adds per parameter). ``over_floor`` is the step's time over the
floor's; ``floor_over_ad`` says how far under 3x MF+AD any DD step with these directions can get.

Usage: ``python benchmarks/mono_forward.py [--threads 1] [--batch 128] [--chunk-size 1024]``.
Last line: ``mono_forward: dd_p4_over_ad gaussian=R rademacher=R fused gaussian=R rademacher=R
dd_p4_over_floor gaussian=F
rademacher=F floor_over_ad gaussian=A rademacher=A dd_p4_over_naive=N``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from untied_plugins.mono_forward import directional as dd
from untied_plugins.mono_forward.estimators import (
    DDConfig,
    ad_gradient,
    apply,
    dd_estimate,
)
from untied_plugins.mono_forward.readout import Readout, local_loss

from bench_core.kit.memory import peak_live_bytes
from bench_core.layered import Block


def setup(args):
    torch.manual_seed(0)
    block = Block("0", nn.Linear(args.in_features, args.width), args.width, post=nn.ReLU())
    x = torch.rand(args.batch, args.in_features)
    y = torch.randint(0, args.classes, (args.batch,))
    readout = Readout(args.classes, args.width, None, torch.Generator().manual_seed(1),
                      torch.device("cpu"))
    return block, readout, x, y


def steps(args):
    block, readout, x, y = setup(args)
    gen = torch.Generator().manual_seed(2)
    lr = 1e-4

    def ad():
        pairs, _, _ = ad_gradient(block, readout, x, y, "mean")
        apply(pairs, lr)

    def dd_step(P, kind="gaussian", fused=False):
        cfg = DDConfig(P, 1e-3, args.chunk_size, direction_kind=kind, fused=fused)

        def run():
            with torch.inference_mode():
                pairs, _, _ = dd_estimate(block, readout, x, y, cfg, gen)
                apply(pairs, lr)
        return run

    def naive(P):
        def run():
            with torch.inference_mode():
                layer, eps = block.layer, 1e-3
                loss = lambda: local_loss(readout.goodness(block.forward(x)), y, "mean")  # noqa
                rows = dd.rows_of(layer)
                c = dd.chunking(rows.shape[0], rows.shape[1], args.chunk_size)
                v = dd.directions(P, c.rows, c, gen, "cpu")
                views = [layer.weight.detach(), layer.bias.detach().view(-1, 1)]
                g = dd.combine(dd.naive_losses(views, v, c, eps, loss), v, c, eps)
                K, D = readout.M.shape
                cm = dd.chunking(K, D, args.chunk_size)
                vm = dd.directions(P, K, cm, gen, "cpu")
                gm = dd.combine(dd.naive_losses([readout.M], vm, cm, eps, loss), vm, cm, eps)
                apply([*dd.split_rows(g, layer), (readout.M, gm)], lr)
        return run

    head = nn.Linear(args.width, args.classes)

    def bp():
        params = [*block.parameters(), *head.parameters()]
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            loss = F.cross_entropy(head(block.forward(x)), y)
            grads = torch.autograd.grad(loss, params)
        apply(list(zip(params, grads)), lr)

    return ad, dd_step, naive, bp


def median_times(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, timed round-robin: per round, each function is called
    once untimed (so its data are in cache, as in a run of consecutive steps) and once timed."""
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def floor_parts(args, kind: str, P: int = 4) -> dict:
    """The unavoidable parts of a DD step (module docstring), as functions."""
    block, readout, x, y = setup(args)
    gen = torch.Generator().manual_seed(3)
    layer = block.layer
    c = dd.chunking(*dd.row_shape(layer), args.chunk_size)
    cm = dd.chunking(*readout.M.shape, args.chunk_size)
    v = dd.directions(P, c.rows, c, gen, "cpu", kind)
    x_aug = torch.cat([x, torch.ones(len(x), 1)], 1)
    coef = torch.randn(P, c.rows, 1)

    def draw():
        dd.directions(P, c.rows, c, gen, "cpu", kind)
        dd.directions(P, cm.rows, cm, gen, "cpu", kind)

    def matmul():
        x_aug @ v.view(-1, v.shape[-1]).T

    def combine():
        g = v[0] * coef[0]
        for p in range(1, P):
            g.addcmul_(v[p], coef[p])
    return {"draw": draw, "matmul": matmul, "combine": combine}


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn) -> int:
    """Peak bytes of the tensors one call of ``fn`` creates (after a warm-up call)."""
    return peak_live_bytes(fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--in-features", type=int, default=784)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; threads: {torch.get_num_threads()} (pinned)")
    print(f"block: dense {args.in_features} -> {args.width} + ReLU, M {args.classes} x "
          f"{args.width}; batch {args.batch}; chunk_size {args.chunk_size}")
    ad, dd_step, naive, bp = steps(args)
    kinds = ("gaussian", "rademacher")
    fns = {"ad": ad, **{(kind, P): dd_step(P, kind) for kind in kinds for P in (1, 4, 8)},
           **{(kind, "fused"): dd_step(4, kind, fused=True) for kind in kinds}}
    for kind in kinds:   # matmul and combine are the same work for both kinds: timed once
        parts = floor_parts(args, kind)
        fns[kind, "draw"] = parts["draw"]
    fns["matmul"], fns["combine"] = parts["matmul"], parts["combine"]
    t = median_times(fns, args.repeats)
    t_ad = t["ad"]
    print(f"MF+AD step: {t_ad * 1e3:.2f} ms")
    floor, t_dd, t_fused = {}, {}, {}
    for kind in kinds:
        for P in (1, 4, 8):
            print(f"MF+DD step P={P} ({kind}): {t[kind, P] * 1e3:.2f} ms "
                  f"({t[kind, P] / t_ad:.2f}x MF+AD)")
        t_dd[kind], t_fused[kind] = t[kind, 4], t[kind, "fused"]
        print(f"MF+DD step P=4 ({kind}, fused_losses): {t_fused[kind] * 1e3:.2f} ms "
              f"({t_fused[kind] / t_ad:.2f}x MF+AD)")
        parts = {"draw": t[kind, "draw"], "matmul": t["matmul"], "combine": t["combine"]}
        floor[kind] = sum(parts.values())
        print(f"  floor of DD P=4 ({kind}): {floor[kind] * 1e3:.2f} ms = "
              + " + ".join(f"{part} {v * 1e3:.2f}" for part, v in parts.items())
              + f" ({floor[kind] / t_ad:.2f}x MF+AD); the step is "
              f"{t_dd[kind] / floor[kind]:.2f}x its floor (fused_losses: "
              f"{t_fused[kind] / floor[kind]:.2f}x)")
    t_dd4 = t_dd["gaussian"]
    t_naive = median_time(naive(4), max(3, args.repeats // 10))
    print(f"naive loop P=4 (2P full forwards per chunk, gaussian): {t_naive * 1e3:.1f} ms "
          f"(batched DD is {t_naive / t_dd4:.1f}x faster)")
    print("peak memory of one step (tensors allocated during the step, traced by a torch "
          "dispatch mode):")
    for name, fn in (("BP", bp), ("MF+AD", ad), ("MF+DD P=4 gaussian", dd_step(4)),
                     ("MF+DD P=4 rademacher", dd_step(4, "rademacher"))):
        print(f"  {name}: {peak_bytes(fn) / 2**20:.2f} MiB")

    def each(values: dict) -> str:
        return " ".join(f"{kind}={v:.2f}" for kind, v in values.items())
    print("mono_forward: dd_p4_over_ad " + each({k: t_dd[k] / t_ad for k in kinds})
          + " fused " + each({k: t_fused[k] / t_ad for k in kinds})
          + " dd_p4_over_floor " + each({k: t_dd[k] / floor[k] for k in kinds})
          + " floor_over_ad " + each({k: floor[k] / t_ad for k in kinds})
          + f" dd_p4_over_naive={t_dd4 / t_naive:.3f}")


if __name__ == "__main__":
    main()
