"""bench_core.kit.compiled.CompiledOrEager: compiled on the first call, the function itself after
a failure (warned once); and FusedElementwise (one compiled pass over same-shape tensors). On
toy formulas of no plugin."""

from __future__ import annotations

import warnings

import pytest
import torch

from bench_core.kit.compiled import MIN_ELEMENTS, CompiledOrEager, FusedElementwise, kernel_scalar


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


# --- FusedElementwise: an elementwise expression (or its count) in one compiled pass ---------
def window_product(u: torch.Tensor, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return torch.where((x > lo) & (x < hi), u, 0.0) * x


def masked_scaled(u: torch.Tensor, mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return u.mul_(mask).mul_(k)   # in place on u, like a backward on its own temporary


def count_positive(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).sum()


def test_fused_elementwise_is_bitwise_the_eager_expression():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * MIN_ELEMENTS + 3, generator=gen).view(-1, 1) * 3   # odd size: the tail
    x[:4, 0] = torch.tensor([float("nan"), -0.0, 1.5, -1.5])
    u = torch.rand(x.shape, generator=gen)
    kernel = FusedElementwise(window_product)
    with torch.no_grad():
        assert kernel.applies(u, x)
        got = kernel((u, x), -1.5, 1.5)
    if kernel.failure is not None:
        pytest.skip(f"no compiled kernel here ({kernel.failure})")
    assert kernel.kernel.compiled is not None and got.shape == x.shape
    want = window_product(u, x, -1.5, 1.5)
    assert got.isnan().tolist() == want.isnan().tolist()               # NaN where x is
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
    assert torch.equal(got.signbit(), want.signbit())                  # -0.0 kept
    mask = (x > 0).view(torch.uint8)               # an integer mask beside float tensors
    k = torch.tensor(0.3)
    in_place = FusedElementwise(masked_scaled)
    with torch.no_grad():
        v = u.clone()
        out = in_place((v, mask), k)
    assert out.data_ptr() == v.data_ptr() and torch.equal(v, u.clone().mul_(mask).mul_(k))
    counter = FusedElementwise(count_positive)
    with torch.no_grad():
        assert counter((x,)).item() == int((x > 0).sum())   # a count: exact


def test_fused_elementwise_applies_only_where_it_may():
    kernel = FusedElementwise(window_product)
    big = torch.randn(MIN_ELEMENTS)
    with torch.no_grad():
        assert kernel.applies(big, big)
        assert not kernel.applies(big[:100], big[:100])                 # too small to pay
        assert not kernel.applies(big, torch.randn(MIN_ELEMENTS + 1))  # shapes differ
        assert not kernel.applies(big.half(), big.half())             # float32/float64 only
        assert not kernel.applies(big, big.double())                  # mixed float dtypes
        wide = torch.randn(2, 2 * MIN_ELEMENTS)
        assert not kernel.applies(wide[:, ::2], wide[:, ::2])         # ... and contiguous
        assert FusedElementwise(window_product, dtypes=(torch.float16,)).applies(big.half(),
                                                                                 big.half())
    assert not kernel.applies(big, big)   # autograd recording: eager, which it can differentiate
    with torch.no_grad():                  # the eager function where it does not apply
        small = torch.randn(10)
        assert torch.equal(kernel((small, small), -1.0, 1.0), window_product(small, small, -1, 1))


def capped(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.where(x > w, w, x)


def test_a_bound_passed_as_kernel_scalar_follows_every_call():
    """A float used as a ``where`` branch comes as a 0-d tensor (``kernel_scalar``): one kernel
    serves every value (torch 2.14.1's inductor baked the first value of such a Python float
    into the kernel and reused it)."""
    kernel = FusedElementwise(capped)
    x = torch.linspace(-5, 5, MIN_ELEMENTS + 1)
    for w in (1.0, 2.5, 0.3, 1.7):
        with torch.no_grad():
            got = kernel((x,), kernel_scalar(w, x))
        assert torch.equal(got, x.clamp_max(w)), w
    assert kernel_scalar(1.7, x) is kernel_scalar(1.7, x)          # made once
    assert kernel_scalar(1.7, x).dtype == x.dtype and kernel_scalar(1.7, x).dim() == 0
