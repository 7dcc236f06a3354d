"""Cost of a training step of the feedback-alignment family against a back-propagation step of
the same model, and the memory each keeps for its backward pass.

Run on demand: ``python benchmarks/feedback_alignment.py`` (``--quick`` for a short pass,
``--device cuda`` on a GPU).

For each model (a 784-800-800-10 tanh ``mlp`` and ``lenet5`` on 28x28 inputs, batch 64,
random inputs of MNIST's shape: the cost does not depend on the pixels) the same initial
weights are trained by back-propagation (BP) and by ``feedback_alignment`` (FA),
``direct_feedback_alignment`` (DFA) and ``sign_symmetry`` in its three variants, each through
one step = forward, softmax cross-entropy, backward, SGD (momentum 0.9) update. The methods are
timed side by side in this process: every round times a block of steps of each method in turn
(warm-up first), so the background load falls on all of them alike; each method's step time
is its fastest round (load only ever adds time; the median is printed beside it). Threads are pinned (``--threads``, default 1) and printed.

Memory: the bytes the autograd graph saves for the backward pass of one step (every saved
tensor counted once, via ``torch.autograd.graph.saved_tensors_hooks``; the parameters, which
BP's layers save and exist anyway, are not counted), plus the method's
feedback matrices (its buffers); the target is ``method <= BP + feedback matrices``. On CUDA the
peak allocated memory of a step is printed too.

The last line is machine-readable::

    feedback_alignment: <model>/<method>=<step time ratio to BP> ... max_ratio=R memory_ok=True|False

Target: R <= 1.2 on one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.backprop.models import MLPParams, mlp
from untied_plugins.feedback_alignment import methods
from untied_plugins.troiano.models import LeNet5Params, lenet5

from bench_core.interfaces import DataInfo, NativeActivation, RunContext

METHODS = {
    "BP": None,
    "FA": (methods.feedback_alignment, methods.FeedbackParams()),
    "DFA": (methods.direct_feedback_alignment, methods.FeedbackParams()),
    "uSF": (methods.sign_symmetry, methods.SignSymmetryParams(magnitude="uniform")),
    "brSF": (methods.sign_symmetry, methods.SignSymmetryParams(magnitude="batchwise_random")),
    "frSF": (methods.sign_symmetry, methods.SignSymmetryParams(magnitude="fixed_random")),
}


def build(model_name: str, method: str, device: torch.device) -> torch.nn.Module:
    ctx = RunContext(seed=0, device=device)
    tanh = ACTIVATIONS["tanh"][1]
    with ctx.model_build():
        torch.manual_seed(0)
        if model_name == "mlp":
            info = DataInfo("random784", (784,), 10)
            model = mlp(MLPParams(hidden=[800, 800]), data=info,
                        activation=lambda: NativeActivation(tanh), ctx=ctx)
        else:
            info = DataInfo("random28x28", (1, 28, 28), 10)
            model = lenet5(LeNet5Params(), data=info,
                           activation=lambda: NativeActivation(tanh), ctx=ctx)
        if METHODS[method] is not None:
            factory, params = METHODS[method]
            model = factory(params, model=model, ctx=ctx)
    return model.to(device)


class Stepper:
    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.rule = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(self) -> None:
        loss = F.cross_entropy(self.model(self.x), self.y)
        self.rule.zero_grad(set_to_none=True)
        loss.backward()
        self.rule.step()

    def saved_bytes(self) -> int:
        seen: dict[tuple, int] = {}
        weights = {p.untyped_storage().data_ptr() for p in self.model.parameters()}

        def pack(t: torch.Tensor):
            if t.untyped_storage().data_ptr() not in weights:   # parameters exist anyway
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
                seen[key] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.rule.zero_grad(set_to_none=True)
        return sum(seen.values())

    def feedback_bytes(self) -> int:
        params = {id(p) for p in self.model.parameters()}
        return sum(b.numel() * b.element_size() for b in self.model.buffers()
                   if id(b) not in params)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--models", default="mlp,lenet5")
    ap.add_argument("--quick", action="store_true", help="5 steps per block, 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = 5, 3
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
          f"batch {args.batch}, {args.steps} steps per block, {args.rounds} rounds (fastest)")
    summary, memory_ok = [], True
    for model_name in args.models.split(","):
        gen = torch.Generator().manual_seed(1)
        shape = (784,) if model_name == "mlp" else (1, 28, 28)
        x = torch.rand(args.batch, *shape, generator=gen).to(device)
        y = torch.randint(10, (args.batch,), generator=gen).to(device)
        steppers = {m: Stepper(build(model_name, m, device), x, y) for m in METHODS}
        for s in steppers.values():      # warm-up (and DFA's first-use draws)
            for _ in range(3):
                s.step()
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        for _ in range(args.rounds):
            for m, s in steppers.items():
                sync(device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    s.step()
                sync(device)
                times[m].append((time.perf_counter() - start) / args.steps)
        bp_time, bp_median = min(times["BP"]), statistics.median(times["BP"])
        bp_saved = steppers["BP"].saved_bytes()
        for m, s in steppers.items():
            t, median = min(times[m]), statistics.median(times[m])
            saved, fb = s.saved_bytes(), s.feedback_bytes()
            ok = saved + fb <= bp_saved + fb
            memory_ok &= ok
            peak = ""
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                s.step()
                sync(device)
                peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**20:.1f} MiB"
            print(f"{model_name:7s} {m:5s} step {t * 1e3:8.3f} ms  ratio {t / bp_time:5.2f} "
                  f"(median {median * 1e3:.3f} ms, ratio {median / bp_median:.2f})  "
                  f"saved for backward {saved / 2**20:7.2f} MiB (BP {bp_saved / 2**20:.2f})  "
                  f"feedback matrices {fb / 2**20:6.2f} MiB  memory_ok={ok}{peak}")
            if m != "BP":
                summary.append((f"{model_name}/{m}", t / bp_time))
    ratios = " ".join(f"{k}={v:.2f}" for k, v in summary)
    print(f"feedback_alignment: {ratios} max_ratio={max(v for _, v in summary):.2f} "
          f"memory_ok={memory_ok}")


if __name__ == "__main__":
    main()
