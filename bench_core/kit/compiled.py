"""A function compiled by ``torch.compile`` on its first call, with the function itself (run op by
op, eagerly) as the fallback: for plugins that fuse an elementwise formula or a small
elementwise-and-reduce computation into one kernel, where eager PyTorch makes one pass over
memory per operation.

Compilation needs a working backend (inductor: a C++ compiler on the CPU, Triton on CUDA). Where
compiling or a compiled call fails, :class:`CompiledOrEager` warns once (a
:class:`RuntimeWarning` naming the function and the error's first line) and runs the function
eagerly from then on, so a missing compiler costs speed, never a run.

The compiled kernel computes the same expression, but a fused reduction may add in another
order than ATen's kernels: results can differ in the last bits. A plugin that offers a compiled
path therefore makes it an execution option (:func:`bench_core.interfaces.execution_option`) or
a new option value, never a silent change of what a recorded run computes.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable


class CompiledOrEager:
    """``fn`` compiled (``torch.compile(fn, **options)``, ``fullgraph=True`` unless given) on the
    first call; after a failure of compilation or of a compiled call, ``fn`` itself, with one
    warning. :attr:`failure` holds ``"ErrorType: first line"`` once that happened."""

    def __init__(self, fn: Callable[..., Any], **options: Any) -> None:
        self.fn = fn
        self.options = {"fullgraph": True, **options}
        self.compiled: Callable[..., Any] | None = None
        self.failure: str | None = None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failure is None:
            import torch

            try:
                if self.compiled is None:
                    self.compiled = torch.compile(self.fn, **self.options)
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any failure: the eager function instead
                first_line = (str(error).splitlines() or [""])[0][:200]
                self.failure = f"{type(error).__name__}: {first_line}"
                warnings.warn(f"the compiled {self.name} failed ({self.failure}); the eager "
                              f"formula is used from now on", RuntimeWarning, stacklevel=2)
        return self.fn(*args, **kwargs)


MIN_ELEMENTS = 1 << 15
"""Below this many elements :class:`FusedElementwise` runs the eager function. Measured on the
CPU (one thread): a compiled call costs 25-40 us whatever the size, about what an eager
formula of a few operations costs at 25,000-40,000 elements."""


_KERNEL_SCALARS: dict[tuple, Any] = {}


def kernel_scalar(value: float, like: Any) -> Any:
    """``value`` as a 0-d tensor of ``like``'s dtype and device, made once per value, dtype and
    device (no host-to-device copy per call): the form in which a :class:`FusedElementwise`
    expression takes a float it uses as a bound or a ``where`` branch. Rounded to the dtype, as
    eager arithmetic rounds a Python scalar."""
    import torch

    key = (float(value), like.dtype, like.device)
    scalar = _KERNEL_SCALARS.get(key)
    if scalar is None:
        scalar = _KERNEL_SCALARS[key] = torch.tensor(float(value), dtype=like.dtype,
                                                     device=like.device)
    return scalar


class FusedElementwise:
    """``fn(*tensors, *args)``, an elementwise expression over same-shape tensors (a reduction of
    them to a scalar included), compiled on first use into one kernel where :meth:`applies`, run
    eagerly otherwise: the tool for a backward or a statistic that eager PyTorch makes in
    several passes over memory.

    Compiled once per process and shape-dynamic: the tensors are flattened (1-D views) and
    ``dynamic=True``, so every size reuses one kernel (per dtype and device), and the extra
    ``args`` (Python floats, 0-d tensors) are kernel arguments. dynamo keeps at most 8 compiled
    variants per code object, so each expression needs its own Python function.

    It applies in a plain eager computation (not under ``torch.compile``, whose graph fuses the
    eager form anyway, nor under ``torch.func`` transforms, nor while autograd records: call it
    from a ``backward`` without ``create_graph`` or under ``torch.no_grad()``), to contiguous
    tensors of one shape, device and dtype among ``dtypes`` with at least ``min_elements``
    elements (the first tensor's dtype; masks may be integer or ``bool``), and never again
    after a compiled call failed (:class:`CompiledOrEager`).

    Rounding: inductor keeps float32/float64 arithmetic in the tensors' dtype and (on the CPU)
    does not contract multiply-adds, so an expression of IEEE operations (``*``, ``/``, ``+``,
    comparisons, ``where``) in the same order as its eager form gives bitwise the same result;
    an integer count is exact either way. Reductions of floats may add in another order, and
    half-precision inputs are computed in float32 and rounded once: that is why the default
    ``dtypes`` are float32 and float64 (the eager form elsewhere)."""

    def __init__(self, fn: Callable[..., Any], min_elements: int = MIN_ELEMENTS,
                 dtypes: tuple | None = None) -> None:
        import torch

        self.fn = fn
        self.min_elements = min_elements
        self.dtypes = (torch.float32, torch.float64) if dtypes is None else dtypes
        self.kernel = CompiledOrEager(fn, dynamic=True)

    @property
    def failure(self) -> str | None:
        """``"ErrorType: first line"`` once compiling or a compiled call failed, else None."""
        return self.kernel.failure

    def applies(self, *tensors: Any) -> bool:
        """Whether the compiled kernel may and should compute ``fn`` on ``tensors`` (class
        docstring)."""
        import torch

        first = tensors[0]
        return (self.failure is None and first.numel() >= self.min_elements
                and first.dtype in self.dtypes
                and all(t.shape == first.shape and t.device == first.device and t.is_contiguous()
                        and (t.dtype == first.dtype or not t.is_floating_point())
                        for t in tensors)
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                and not torch._C._are_functorch_transforms_active())

    def __call__(self, tensors: tuple, *args: Any) -> Any:
        """``fn(*tensors, *args)``; an elementwise result has the tensors' shape."""
        if not self.applies(*tensors):
            return self.fn(*tensors, *args)
        out = self.kernel(*(t.view(-1) for t in tensors), *args)
        shape = tensors[0].shape
        return out.view(shape) if out.dim() == 1 and len(shape) != 1 else out
