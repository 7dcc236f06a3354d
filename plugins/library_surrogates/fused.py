"""The backward product ``dL/dx = dL/dy * g(x)`` of a closed-form surrogate in one elementwise
pass, by ``torch.compile`` of the formula itself, with the formula run op by op (eager) as the
fallback.

Why compiled. Eager PyTorch runs ``g`` as one kernel per operation, each reading and writing a
tensor of the activation's size: 4-11 passes over memory where the native activation's backward
(``threshold_backward``, ``tanh_backward``) makes one. No aten kernel computes these ``g``, so the
formula ``grad * g(x; k)`` is compiled (inductor: a C++ loop on CPU, Triton on CUDA) into a kernel
that reads ``grad`` and ``x`` once and writes ``dL/dx`` once (``benchmarks/surrogates.py``
measures it against the native activations).

When. The compiled kernel is used where it is both possible and worth it
(:meth:`FusedProduct.applies`): a plain eager backward (not under ``torch.compile``, whose own
graph fuses the eager formula anyway, nor under ``torch.func`` transforms, nor while autograd
records the backward for a double backward), ``grad`` and ``x`` contiguous with the same dtype
and device, and at least :data:`MIN_ELEMENTS` elements (below that the cost of calling a compiled
function exceeds the eager formula's). Otherwise, and for good once compilation or a
compiled call has failed (no C++ compiler, no Triton: a :class:`RuntimeWarning` says so once),
the same formula runs eagerly.

The mechanics (compile once, shape-dynamic, when it applies) are the plugin kit's
:class:`bench_core.kit.compiled.FusedElementwise`; here every floating dtype takes the compiled
kernel (half precision included, computed in float32 and rounded once).

Built once per process and shape-dynamic: each product is compiled on its first use with
``dynamic=True`` on flattened (1-D) inputs, so any size reuses the one kernel (one variant per
dtype and device) and the float parameter ``k`` is a kernel argument, not a constant (no
recompilation per value). Each surrogate needs its own Python function: dynamo keeps at most 8
compiled variants per code object.

Numerics: the compiled kernel evaluates the same operations in the same order. With IEEE
arithmetic only (``atan``, ``superspike``, ``approx_sign``) and inductor's default
``-ffp-contract=off`` it is bitwise equal to the eager formula on CPU; ``exp`` (inductor: SLEEF's
1-ulp vector ``exp``; eager: ATen's kernel) may differ in the last bit (the tests compare both
paths to float32 rounding). On CUDA, Triton may fuse multiply-adds.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from bench_core.kit.compiled import MIN_ELEMENTS, FusedElementwise

__all__ = ["MIN_ELEMENTS", "FusedProduct", "Product"]

Product = Callable[[Tensor, Tensor, float], Tensor]
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class FusedProduct(FusedElementwise):
    """``product(grad, x, k) = grad * g(x; k)`` (elementwise), compiled into one kernel on its
    first use where :meth:`applies`, else (and after a failed compilation) run eagerly."""

    def __init__(self, product: Product) -> None:
        super().__init__(product, dtypes=FLOATS)
        self.product = product

    def __call__(self, grad: Tensor, x: Tensor, k: float) -> Tensor:
        return super().__call__((grad, x), k)
