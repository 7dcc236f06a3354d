"""Cost of the built-in surrogate backwards against the tied (native) activation.

Run on demand: ``python benchmarks/surrogates.py`` (``--quick`` for a smaller, faster pass;
``--threads 1`` when other processes share the cores: an intra-op thread pool that loses its
cores to them waits at every barrier, which swamps the differences measured here).

For every built-in surrogate (low-memory variants beside) and every built-in forward
activation, on a 4096x1024 float32 tensor:

* ``time``: forward + backward of the activation alone, as a ratio to the native tied
  activation with the same forward; for the jamming family also as a ratio to "native + one
  ``torch.rand_like`` draw" (the draw jamming cannot avoid), with the default ``k = 2
  mean(f'(x)) / share(window)`` and with ``normalize="none"`` (``k = 1``: the cost of the
  jamming itself, without the activation plugin's ``f'`` and the window's share);
* ``bytes``: what the activation saves for backward, counted with
  ``torch.autograd.graph.saved_tensors_hooks``, per element (native: 4 for relu, logistic,
  tanh and softplus, 0 for identity, step and sign).

Plus the LeNet5 training step (batch 256, 1x28x28 inputs, relu forward, SGD) with each
surrogate against the tied network, and for jamming also against the tied network with one
``rand_like`` draw per activation site. Everything is measured side by side in this process:
candidates are interleaved within each repeat after a warm-up, and medians are compared.

The worst time ratio is taken over the default (not low-memory) modes, against native + draw for
jamming, and leaves out ``identity`` with a non-jamming backward: the native identity does no
arithmetic in either pass (its time is autograd bookkeeping only), so any backward that reads
``x`` is an unbounded multiple of it; those rows are printed with their absolute times. The
LeNet5 ratio is the worst over the default modes, against the draw-matched baseline for
jamming; a tied-against-tied control row shows the noise floor, and the ratio of the fastest
repeats (less sensitive to other processes, which only ever add time) is printed beside.
Every row also gives the paired ratio (the median over repeats of the ratio within a repeat,
where the two ran back to back), and the line before the last the worst paired ratios: on a
host whose speed changes between repeats (a shared core's other tenant, seen here as draws
taking 10 ms or 19 ms by turns) the ratio of medians can pair a fast repeat with a slow one. The
last line (ratio of medians, the figure earlier notes quote) is machine-readable::

    surrogates: worst_activation_time_ratio=R worst_saved_bytes_per_element=B lenet5_step_ratio=S

Targets: R <= 1.5 (for jamming, against native + draw), B <= 4, S <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_core.interfaces import Activation, DataInfo, NativeActivation, RunContext
from bench_core.plugins import get_host
from bench_core.specs.plan import resolve_component

JAMMING = ("full_jamming", "positive_jamming", "rect_jamming")
LOW_MEMORY = ("rect", "positive_jamming", "rect_jamming")


@dataclass
class Variant:
    """One surrogate configuration as a spec table, e.g. ``{"name": "rect", "low_memory": True}``."""

    table: dict

    @property
    def label(self) -> str:
        return self.table["name"] + (" [low_memory]" if self.table.get("low_memory") else "")

    @property
    def jamming(self) -> bool:
        return self.table["name"] in JAMMING


def variants(host) -> list[Variant]:
    """Every built-in surrogate except ``tied``, plus the low-memory variants."""
    out = []
    for name in host.family("surrogates"):
        if name == "tied":
            continue
        out.append(Variant({"name": name}))
        if name in LOW_MEMORY:
            out.append(Variant({"name": name, "low_memory": True}))
    return out


def build_site(host, table: dict, activation: Activation, ctx: RunContext) -> nn.Module:
    comp, params = resolve_component(host, "surrogate", table)
    return comp.factory(params, activation=activation, ctx=ctx)


class NativeWithDraw(nn.Module):
    """The tied activation plus one ``rand_like`` draw of its input's size: the baseline that
    prices in the draw jamming cannot avoid."""

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.native = NativeActivation(activation)

    def forward(self, x: Tensor) -> Tensor:
        torch.rand_like(x)
        return self.native(x)


def forward_backward(module: nn.Module, x: Tensor, grad_out: Tensor,
                     extra_draw: bool = False) -> Callable[[], None]:
    """A closure running ``module`` forward and backward on ``x`` (plus one ``rand_like``)."""

    def run() -> None:
        y = module(x)
        (dx,) = torch.autograd.grad(y, x, grad_out)
        if extra_draw:
            torch.rand_like(x)
        del dx

    return run


def saved_bytes(module: nn.Module, x: Tensor) -> int:
    """Bytes of the tensors ``module`` saves for backward on input ``x``."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = module(x)
    del y
    return total


def interleaved_times(runs: dict[str, Callable[[], None]], repeats: int, warmup: int,
                      sync: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds of every repeat per closure; within each repeat every closure runs once, in
    turn."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[key].append(time.perf_counter() - start)
    return times


def paired_ratio(times: dict[str, list[float]], key: str, base: str) -> float:
    """Median over repeats of ``key``'s time over ``base``'s time in the same repeat: the two
    ran back to back, so a machine that changes speed between repeats (another tenant on the
    core's sibling, a frequency step) moves both; the ratio of the medians does not pair them."""
    return statistics.median(a / b for a, b in zip(times[key], times[base]))


def activation_table(host, device: torch.device, shape: tuple[int, int], repeats: int,
                     warmup: int, sync) -> tuple[list[dict], float, float, float]:
    ctx = RunContext(seed=0, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, generator=gen, device=device).mul_(2).requires_grad_()
    grad_out = torch.randn(shape, generator=gen, device=device)
    rows = []
    worst_time, worst_bytes, worst_low, worst_paired = 0.0, 0.0, [0.0], 0.0
    numel = x.numel()
    for act_name in sorted(host.family("activations")):
        act_comp, act_params = resolve_component(host, "activation", {"name": act_name})
        activation = act_comp.factory(act_params)
        native = NativeActivation(activation)
        native_bytes = saved_bytes(native, x) / numel
        for variant in variants(host):
            site = build_site(host, variant.table, activation, ctx)
            runs = {"native": forward_backward(native, x, grad_out),
                    "surrogate": forward_backward(site, x, grad_out)}
            if variant.jamming:
                runs["native+draw"] = forward_backward(native, x, grad_out, extra_draw=True)
                unscaled = build_site(host, {**variant.table, "normalize": "none"}, activation,
                                      ctx)
                runs["surrogate k=1"] = forward_backward(unscaled, x, grad_out)
            times = interleaved_times(runs, repeats, warmup, sync)
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["surrogate"] / med["native"]
            ratio_draw = ratio_k1 = None
            if variant.jamming:
                ratio_draw = med["surrogate"] / med["native+draw"]
                ratio_k1 = med["surrogate k=1"] / med["native+draw"]
            base = "native+draw" if variant.jamming else "native"
            paired = paired_ratio(times, "surrogate", base)
            bytes_per = saved_bytes(site, x) / numel
            counted = not (act_name == "identity" and not variant.jamming)
            if counted and not variant.table.get("low_memory"):
                worst_time = max(worst_time, ratio_draw if variant.jamming else ratio)
                worst_paired = max(worst_paired, paired)
            if counted and variant.table.get("low_memory"):
                worst_low[0] = max(worst_low[0], ratio_draw if variant.jamming else ratio)
            worst_bytes = max(worst_bytes, bytes_per)
            rows.append({"forward": act_name, "surrogate": variant.label, "counted": counted,
                         "native_ms": med["native"] * 1e3, "surrogate_ms": med["surrogate"] * 1e3,
                         "time_ratio": ratio, "time_ratio_vs_draw": ratio_draw,
                         "time_ratio_k1_vs_draw": ratio_k1, "paired_ratio": paired,
                         "bytes_per_element": bytes_per, "native_bytes_per_element": native_bytes})
    return rows, worst_time, worst_bytes, worst_low[0], worst_paired


class InlineLeNet5(nn.Module):
    """LeNet5 (conv 6@5x5 pad 2, pool, conv 16@5x5, pool, FC 120, 84, 10), used only when the
    ``lenet5`` model plugin is not installed."""

    def __init__(self, make_activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), make_activation(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), make_activation(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), make_activation(), nn.Linear(120, 84), make_activation(),
            nn.Linear(84, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def build_lenet5(host, make_activation: Callable[[], nn.Module], ctx: RunContext) -> nn.Module:
    torch.manual_seed(0)
    if "lenet5" in host.family("models"):
        comp, params = resolve_component(host, "model", {"name": "lenet5"})
        info = DataInfo("bench", (1, 28, 28), 10, "classification", 10)
        return comp.factory(params, data=info, activation=make_activation, ctx=ctx).to(ctx.device)
    return InlineLeNet5(make_activation).to(ctx.device)


def lenet5_table(host, device: torch.device, batch: int, repeats: int, warmup: int,
                 sync) -> tuple[list[dict], float]:
    ctx = RunContext(seed=0, device=device)
    act_comp, act_params = resolve_component(host, "activation", {"name": "relu"})
    activation = act_comp.factory(act_params)
    gen = torch.Generator(device=device).manual_seed(1)
    xb = torch.randn(batch, 1, 28, 28, generator=gen, device=device)
    yb = torch.randint(0, 10, (batch,), generator=gen, device=device)

    def step_fn(table: dict | str | None) -> Callable[[], None]:
        if table is None:
            model = build_lenet5(host, lambda: NativeActivation(activation), ctx)
        elif table == "draw":
            model = build_lenet5(host, lambda: NativeWithDraw(activation), ctx)
        else:
            model = build_lenet5(host, lambda: build_site(host, table, activation, ctx), ctx)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()

        return step

    rows, worst, worst_paired = [], 0.0, 0.0
    control = Variant({"name": "tied"})  # tied against tied: the noise floor of the ratios
    for variant in [control, *variants(host)]:
        runs = {"tied": step_fn(None), "surrogate": step_fn(variant.table)}
        if variant.jamming:
            runs["tied+draw"] = step_fn("draw")
        times = interleaved_times(runs, repeats, warmup, sync)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        base = "tied+draw" if variant.jamming else "tied"
        ratio = med["surrogate"] / med[base]
        if variant is not control and not variant.table.get("low_memory"):
            worst = max(worst, ratio)
        rows.append({"surrogate": variant.label + (" (control)" if variant is control else ""),
                     "tied_ms": med["tied"] * 1e3, "surrogate_ms": med["surrogate"] * 1e3,
                     "step_ratio": med["surrogate"] / med["tied"],
                     "step_ratio_vs_draw": ratio if variant.jamming else None,
                     "min_ratio": best["surrogate"] / best[base],
                     "paired_ratio": paired_ratio(times, "surrogate", base)})
        if variant is not control and not variant.table.get("low_memory"):
            worst_paired = max(worst_paired, rows[-1]["paired_ratio"])
    return rows, worst, worst_paired


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smaller tensor, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own default); 1 gives "
                             "steadier figures when other processes share the cores")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    shape = (1024, 1024) if args.quick else (4096, 1024)
    repeats = args.repeats or (5 if args.quick else 11)
    host = get_host()
    from tabulate import tabulate

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"activation tensor {shape[0]}x{shape[1]} float32, {repeats} interleaved repeats "
          f"(medians)")
    rows, worst_time, worst_bytes, worst_low, worst_paired = activation_table(
        host, device, shape, repeats, 2, sync)

    def fmt(value: float | None, digits: int = 2) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    print(tabulate(
        [[r["forward"], r["surrogate"], fmt(r["native_ms"]), fmt(r["surrogate_ms"]),
          fmt(r["time_ratio"]) + ("" if r["counted"] else " (n/a)"),
          fmt(r["time_ratio_vs_draw"]), fmt(r["time_ratio_k1_vs_draw"]),
          fmt(r["paired_ratio"]),
          fmt(r["native_bytes_per_element"]), fmt(r["bytes_per_element"])] for r in rows],
        headers=["forward", "surrogate", "native ms", "surrogate ms", "time / native",
                 "time / (native+draw)", "k=1: time / (native+draw)", "paired", "native B/el",
                 "saved B/el"]))
    print(f"worst low-memory time ratio: {worst_low:.2f}")
    # a LeNet5 step is short and the differences are a few per cent: three times the repeats
    lenet_rows, lenet_worst, lenet_paired = lenet5_table(
        host, device, 64 if args.quick else 256, 3 * repeats, 3, sync)
    print("\nLeNet5 training step (relu forward, SGD, batch "
          f"{64 if args.quick else 256}):")
    print(tabulate([[r["surrogate"], fmt(r["tied_ms"]), fmt(r["surrogate_ms"]),
                     fmt(r["step_ratio"], 3), fmt(r["step_ratio_vs_draw"], 3),
                     fmt(r["min_ratio"], 3), fmt(r["paired_ratio"], 3)] for r in lenet_rows],
                   headers=["surrogate", "tied ms", "surrogate ms", "step / tied",
                            "step / (tied+draws)", "same, of the fastest repeats", "paired"]))
    print(f"paired (median of per-repeat ratios, the same baselines): worst activation "
          f"{worst_paired:.2f}, LeNet5 {lenet_paired:.3f}")
    print(f"surrogates: worst_activation_time_ratio={worst_time:.2f} "
          f"worst_saved_bytes_per_element={worst_bytes:.2f} lenet5_step_ratio={lenet_worst:.3f}")


if __name__ == "__main__":
    main()
