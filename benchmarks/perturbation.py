"""Cost and memory of one step of the perturbation trainers beside plain forward passes and BP.

One model (an MLP ``in -> width x depth -> classes``, ReLU), one batch, one process, torch threads
pinned and printed (default 1). Times are medians of ``--repeats`` rounds (synchronised on a GPU):

* ``forward``: one forward pass and the loss under ``torch.no_grad()`` (inference);
* ``jvp forward``: one forward pass carrying a given tangent (``torch.func.jvp``: the loss and its
  directional derivative), the tangent drawn beforehand;
* ``FG step``: a ``forward_gradient`` step: draw the tangent, the jvp forward, write ``(grad . v)
  v`` into ``.grad``, the SGD step;
* ``SPSA step``: an ``spsa`` (MeZO) step: two forwards and three in-place passes that regenerate
  the direction from its seed (perturb, perturb back twice, restore and update), with Gaussian
  directions (MeZO's, the default) and ``SPSA step (rad.)`` with ``direction = "rademacher"``
  (signs from packed bits, :func:`bench_core.draws.random_signs`);
* ``BP step``: forward, backward, SGD step.

The issue's targets: SPSA step <= 1.1 x two forwards; FG step <= 2 x (a forward pass plus its
tangent, i.e. the jvp forward); SPSA peak memory within 10% of inference. Peak memory is the
largest total of live tensor storages during one call, parameters and batch included: on CUDA
from the allocator's statistics, on the CPU traced by
:func:`bench_core.kit.memory.peak_live_bytes` (every new storage counts until freed).
Forward-Forward's cost per sample beside BP's is measured by
``benchmarks/forward_forward.py``.

Usage: ``python benchmarks/perturbation.py [--threads 1] [--device cpu|cuda] [--batch 256]``.
Times are taken round-robin (each compared thing once per round, medians over rounds).
The SPSA step also pays three passes over the parameters that redraw the direction (their cost
does not depend on the batch), so its ratio to two forwards falls with the batch size: it is
printed for ``--batch`` and for each of ``--spsa-batches``, beside the time of one regeneration
pass and the floor it sets (``1 + 3 pass / (2 forward)``), for each direction kind: on the CPU,
torch's generator draws about 3 ns per Gaussian, ten times the in-place add it feeds, so the
passes, not the step's bookkeeping, keep the Gaussian ratio above 1.1 at small batches;
Rademacher signs cost a word per 31 entries and four cheap elementwise passes.
Last line: ``perturbation: spsa_over_2fwd@B gaussian=R rademacher=R ... fg_over_jvp=R
spsa_mem_over_inference=R`` (memory: Gaussian directions; the Rademacher step's is printed above).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from types import SimpleNamespace

import torch
from torch import nn
from untied_plugins.perturbation.forward_gradient import (
    ForwardGradientParams,
    ForwardGradientTrainer,
)
from untied_plugins.perturbation.spsa import SPSAParams, SPSATrainer, perturb_

from bench_core.interfaces import RunContext
from bench_core.kit.memory import peak_live_bytes


def build(args, device):
    torch.manual_seed(0)
    layers, width = [], args.in_features
    for _ in range(args.depth):
        layers += [nn.Linear(width, args.width), nn.ReLU()]
        width = args.width
    model = nn.Sequential(*layers, nn.Linear(width, args.classes)).to(device)
    x = torch.randn(args.batch, args.in_features, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    return model, x, y


def trainer(cls, params, model, device):
    t = cls(params)
    t.task = "classification"
    ctx = RunContext(seed=0, device=device)
    t.prepare(SimpleNamespace(ctx=ctx, build_rule=lambda m: torch.optim.SGD(
        m.parameters(), lr=1e-4)), model)
    return t


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin(fns: dict, repeats: int, device) -> dict[str, float]:
    """Median time of each function, timed in turn once per round (so a load that changes
    during the run affects all of them alike), after three untimed rounds."""
    for _ in range(3):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_bytes(fn, existing: list[torch.Tensor], device) -> int:
    """Peak live bytes during ``fn()``, the ``existing`` tensors (parameters, batch) included."""
    fn()
    base = sum(t.untyped_storage().nbytes() for t in existing)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - start + base
    return peak_live_bytes(fn, existing, warmup=False) + base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--spsa-batches", type=int, nargs="*", default=[1024, 4096],
                    help="further batch sizes at which to time SPSA against two forwards")
    ap.add_argument("--in-features", type=int, default=784)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}; threads: {torch.get_num_threads()} (pinned); "
          f"device: {name}")
    model, x, y = build(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"MLP {args.in_features} -> {args.width} x {args.depth} -> {args.classes} (ReLU), "
          f"{n_params} parameters, batch {args.batch}")

    fg = trainer(ForwardGradientTrainer, ForwardGradientParams(), model, device)
    spsa = trainer(SPSATrainer, SPSAParams(), model, device)
    spsa_rad = trainer(SPSATrainer, SPSAParams(direction="rademacher"), model, device)
    loss_fn = nn.CrossEntropyLoss()
    params = {k: p.detach() for k, p in model.named_parameters()}
    tangent = {k: torch.randn_like(p) for k, p in params.items()}

    @torch.no_grad()
    def forward():
        return loss_fn(model(x), y)

    def jvp_forward():
        return torch.func.jvp(lambda p: loss_fn(torch.func.functional_call(model, p, (x,)), y),
                              (params,), (tangent,))

    bp_rule = torch.optim.SGD(model.parameters(), lr=1e-4)

    def bp_step():
        bp_rule.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        bp_rule.step()

    def fg_step():
        fg.step(model, x, y)
        for p in model.parameters():
            p.grad = None

    steps = {"forward": forward, "jvp forward": jvp_forward, "FG step": fg_step,
             "SPSA step": lambda: spsa.step(model, x, y),
             "SPSA step (rad.)": lambda: spsa_rad.step(model, x, y), "BP step": bp_step}
    times = round_robin(steps, args.repeats, device)
    for k, t in times.items():
        print(f"  {k:16s} {t * 1e3:8.3f} ms  ({t / times['forward']:.2f} x forward, "
              f"{t / args.batch * 1e6:.2f} us per sample)")
    existing = [*model.parameters(), x, y]
    memory = {k: peak_bytes(steps[k], existing, device)
              for k in ("forward", "SPSA step", "SPSA step (rad.)", "FG step", "BP step")}
    print("peak memory, parameters and batch included:")
    for k, b in memory.items():
        print(f"  {k:16s} {b / 2**20:8.3f} MiB  ({b / memory['forward']:.3f} x inference)")
    kinds = {"gaussian": spsa, "rademacher": spsa_rad}
    spsa_ratio = {"gaussian": times["SPSA step"] / (2 * times["forward"]),
                  "rademacher": times["SPSA step (rad.)"] / (2 * times["forward"])}
    # the part of an SPSA step that does not scale with the batch: one pass that regenerates the
    # direction from its seed and adds it in place (a step makes three)
    passes = {kind: partial(perturb_, t.params, t.gen, t.gen.get_state(), 1e-3, t.p.chunk_size,
                            kind) for kind, t in kinds.items()}
    pass_times = round_robin(passes, args.repeats, device)
    for kind, t_pass in pass_times.items():
        print(f"  one {kind} regeneration pass over the {n_params} parameters: "
              f"{t_pass * 1e3:.3f} ms; two forwards + three passes = "
              f"{(2 * times['forward'] + 3 * t_pass) * 1e3:.3f} ms, so SPSA / two forwards >= "
              f"{1 + 3 * t_pass / (2 * times['forward']):.2f} at this batch")
    by_batch = {args.batch: spsa_ratio}
    for batch in args.spsa_batches:  # the regeneration passes cost the same at any batch size
        xb = torch.randn(batch, args.in_features, device=device)
        yb = torch.randint(0, args.classes, (batch,), device=device)

        def forward_b(xb=xb, yb=yb):
            with torch.no_grad():
                return loss_fn(model(xb), yb)

        timed = round_robin({"forward": forward_b, **{
            kind: (lambda t=t, xb=xb, yb=yb: t.step(model, xb, yb)) for kind, t in kinds.items()}},
            max(5, args.repeats * args.batch // batch), device)
        by_batch[batch] = {kind: timed[kind] / (2 * timed["forward"]) for kind in kinds}
        print(f"  batch {batch}: forward {timed['forward'] * 1e3:.3f} ms, SPSA step "
              + ", ".join(f"{kind} {timed[kind] * 1e3:.3f} ms ({by_batch[batch][kind]:.2f} x two "
                          f"forwards)" for kind in kinds))
    fg_ratio = times["FG step"] / times["jvp forward"]
    mem_ratio = memory["SPSA step"] / memory["forward"]
    best = min(spsa_ratio.values())
    print(f"targets: SPSA step / two forwards = {spsa_ratio['gaussian']:.2f} gaussian, "
          f"{spsa_ratio['rademacher']:.2f} rademacher (<= 1.1: "
          f"{'met' if best <= 1.1 else 'missed'} at batch {args.batch}); FG step / jvp forward = "
          f"{fg_ratio:.2f} "
          f"(<= 2: {'met' if fg_ratio <= 2 else 'missed'}); SPSA peak / inference peak = "
          f"{mem_ratio:.3f} (<= 1.1: {'met' if mem_ratio <= 1.1 else 'missed'}); BP step per "
          f"sample {times['BP step'] / args.batch * 1e6:.2f} us")
    per_batch = " ".join(f"spsa_over_2fwd@{b} gaussian={r['gaussian']:.2f} "
                         f"rademacher={r['rademacher']:.2f}" for b, r in by_batch.items())
    print(f"perturbation: {per_batch} fg_over_jvp={fg_ratio:.2f} "
          f"spsa_mem_over_inference={mem_ratio:.3f}")


if __name__ == "__main__":
    main()
