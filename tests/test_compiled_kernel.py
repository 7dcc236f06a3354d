"""bench_core.kit.compiled.CompiledOrEager: compiled on the first call, the function itself after
a failure (warned once), on a toy formula of no plugin."""

from __future__ import annotations

import warnings

import pytest
import torch

from bench_core.kit.compiled import CompiledOrEager


def scaled_sum(x: torch.Tensor, k: float) -> torch.Tensor:
    return (x * k + 1.0).sum(-1)


def test_the_compiled_call_computes_the_function():
    kernel = CompiledOrEager(scaled_sum, dynamic=True)
    x = torch.arange(12.0).view(3, 4)
    got = kernel(x, 2.0)
    if kernel.failure is not None:
        pytest.skip(f"no compiled kernel here ({kernel.failure})")
    assert kernel.compiled is not None
    assert torch.equal(got, scaled_sum(x, 2.0))   # small integers: exact in any order
    assert torch.equal(kernel(x[:2], 3.0), scaled_sum(x[:2], 3.0))   # another shape and k


def test_a_failed_compilation_warns_once_and_runs_eagerly(monkeypatch):
    calls = []

    def broken_compile(fn, **options):
        calls.append(options)

        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler\nsecond line")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    kernel = CompiledOrEager(scaled_sum, dynamic=True)
    x = torch.ones(2, 3)
    with pytest.warns(RuntimeWarning, match=r"compiled scaled_sum failed \(RuntimeError: no C"
                                            r"\+\+ compiler\); the eager formula"):
        got = kernel(x, 2.0)
    assert torch.equal(got, scaled_sum(x, 2.0))
    assert kernel.failure == "RuntimeError: no C++ compiler"
    assert calls == [{"fullgraph": True, "dynamic": True}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # warned once: later calls go straight to the function
        assert torch.equal(kernel(x, 3.0), scaled_sum(x, 3.0))
    assert len(calls) == 1               # and compilation is not tried again
