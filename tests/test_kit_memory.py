"""The kit's memory tracer (bench_core.kit.memory), on toy code with known allocations."""

import torch

from bench_core.kit.memory import LiveStorages, peak_live_bytes


def test_peak_counts_storages_alive_together_and_forgets_freed_ones():
    def work():
        a = torch.zeros(1000)           # 4,000 bytes
        b = torch.zeros(500)            # 2,000 bytes, alive with a: 6,000
        del a
        c = torch.zeros(250)            # 1,000 bytes, alive with b: 3,000
        return b, c

    with LiveStorages() as mode:
        kept = work()
    assert mode.peak == 6000 and mode.largest == 4000
    assert mode.live == 3000 and kept[0].numel() == 500


def test_existing_tensors_and_in_place_updates_are_not_counted():
    w = torch.zeros(10_000)
    with LiveStorages([w]) as mode:
        w.add_(1.0)                     # same storage
        v = w.view(100, 100)            # a view shares it
        s = v.sum()                     # one new 4-byte storage
    assert mode.peak == 4 and s.item() == 10_000


def test_peak_live_bytes_warms_up_first():
    state = {}

    def step():
        if "buffer" not in state:       # lazily built once, like an optimiser's buffers
            state["buffer"] = torch.zeros(10_000)
        return torch.ones(10)

    assert peak_live_bytes(step) == 40
    state.clear()
    assert peak_live_bytes(step, warmup=False) == 40_040


def test_function_transform_wrappers_are_skipped():
    x, t = torch.randn(8), torch.randn(8)
    with LiveStorages([x, t]) as mode:
        _, tangent = torch.func.jvp(torch.sin, (x,), (t,))
    assert tangent.shape == (8,) and mode.peak >= 32
