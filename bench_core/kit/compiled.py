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
