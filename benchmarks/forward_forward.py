"""Forward-Forward's cost per sample beside back-propagation's (issue 26, items 3 and 6).

One model (an MLP ``in -> width x depth -> classes``, ReLU, the built-in ``mlp``'s layered form),
one batch, one process, torch threads pinned and printed (default 1). Times are medians of
``--repeats`` calls (synchronised on a GPU), per labelled training sample:

* ``BP step``: forward, softmax cross-entropy, backward, SGD step;
* ``FF step``: the ``forward_forward`` trainer's step (the true- and a wrong-label copy of the
  batch through every block as one batch of ``2B``, each block's input normalised and detached,
  the goodness losses summed), its backward and the SGD step on the same parameters;
* ``BP predict``: one forward pass and the argmax;
* ``FF predict``: the ``C`` label-embedded copies through every block and the argmax of the
  summed goodness (Section 3.3).

Usage: ``python benchmarks/forward_forward.py [--threads 1] [--device cpu|cuda] [--batch 256]``.
Last line: ``forward_forward: ff_step_over_bp_step=R ff_predict_over_bp_predict=R
ff_step_us_per_sample=T bp_step_us_per_sample=T``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from untied_plugins.backprop.layers import LayeredSequential
from untied_plugins.forward_forward.goodness import label_goodness, predict
from untied_plugins.forward_forward.trainer import (
    ForwardForwardParams,
    ForwardForwardTrainer,
)


def build(args, device) -> tuple[LayeredSequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    spans, width = [], args.in_features
    for _ in range(args.depth):
        at = len(layers)
        layers += [nn.Linear(width, args.width), nn.ReLU()]
        spans.append((str(at), (), at, (at + 1,), args.width, False))
        width = args.width
    model = LayeredSequential(*layers, nn.Linear(width, args.classes), spans=spans).to(device)
    x = torch.rand(args.batch, args.in_features, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    return model, x, y


def median_time(fn, repeats: int, device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=256)
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
    blocks = model.blocks()
    print(f"MLP {args.in_features} -> {args.width} x {args.depth} -> {args.classes} (ReLU), "
          f"{sum(p.numel() for p in model.parameters())} parameters, batch {args.batch}")

    ff = ForwardForwardTrainer(ForwardForwardParams())
    ff.classes, ff.rms, ff.scale = args.classes, True, x.amax()
    ff.thresholds = [float(args.width)] * args.depth
    gen = torch.Generator(device=device).manual_seed(0)
    rule = torch.optim.SGD(model.parameters(), lr=1e-4)

    def bp_step():
        rule.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        rule.step()

    def ff_step():
        rule.zero_grad(set_to_none=True)
        ff.step(blocks, x, y, gen).backward()
        rule.step()

    @torch.inference_mode()
    def bp_predict():
        return model(x).argmax(1)

    @torch.inference_mode()
    def ff_predict():
        return predict(label_goodness(blocks, x, args.classes, ff.scale), True)

    steps = {"BP step": bp_step, "FF step": ff_step, "BP predict": bp_predict,
             "FF predict": ff_predict}
    times = {k: median_time(fn, args.repeats, device) for k, fn in steps.items()}
    for k, t in times.items():
        print(f"  {k:10s} {t * 1e3:8.3f} ms  ({t / args.batch * 1e6:8.2f} us per sample)")
    step_ratio = times["FF step"] / times["BP step"]
    predict_ratio = times["FF predict"] / times["BP predict"]
    print(f"FF step / BP step: {step_ratio:.2f}; FF predict / BP predict: {predict_ratio:.2f} "
          f"({args.classes} labels)")
    print(f"forward_forward: ff_step_over_bp_step={step_ratio:.3f} "
          f"ff_predict_over_bp_predict={predict_ratio:.3f} "
          f"ff_step_us_per_sample={times['FF step'] / args.batch * 1e6:.2f} "
          f"bp_step_us_per_sample={times['BP step'] / args.batch * 1e6:.2f}")


if __name__ == "__main__":
    main()
