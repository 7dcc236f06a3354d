"""Peak memory of a piece of code, counted tensor by tensor: for a plugin's test or benchmark of
a memory claim ("training needs the memory of inference", "no parameter-sized buffer").

:class:`LiveStorages` is a torch dispatch mode: every operator output whose storage is new (not
one of the ``existing`` tensors', not seen before) is counted from its creation until the storage
is freed, so ``peak`` is the largest total of such storages alive at one time and ``largest`` the
largest single one. What it does not see: memory an operator allocates and frees inside itself,
and storages created outside the mode. ``tracemalloc`` cannot see torch's allocator and the torch
profiler does not record CPU frees reliably, hence this tracer; on CUDA,
``torch.cuda.max_memory_allocated`` also sees the operators' workspaces.

Tensors without a storage of their own (the wrappers of ``torch.func`` transforms, e.g. the dual
tensors of ``jvp``) are skipped: what they wrap is counted when it is created.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveStorages(TorchDispatchMode):
    """``with LiveStorages(existing) as mode: ...`` then ``mode.peak``, ``mode.largest`` (bytes;
    module docstring)."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.seen = {t.untyped_storage().data_ptr() for t in existing}
        self.live = self.peak = self.largest = 0

    def _free(self, key: int, n: int) -> None:
        self.seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            try:
                storage = t.untyped_storage()
                key = storage.data_ptr()
            except RuntimeError:  # a torch.func wrapper: no storage of its own
                continue
            if key and key not in self.seen:
                n = storage.nbytes()
                self.seen.add(key)
                self.live += n
                self.peak = max(self.peak, self.live)
                self.largest = max(self.largest, n)
                weakref.finalize(storage, self._free, key, n)
        return out


def peak_live_bytes(fn: Callable[[], object], existing: Iterable[torch.Tensor] = (),
                    warmup: bool = True) -> int:
    """Peak bytes of the storages ``fn()`` creates (:class:`LiveStorages`), after one untimed
    call when ``warmup`` (so lazily built state, such as an optimiser's buffers, is not counted
    as the call's own). ``existing`` tensors are never counted."""
    existing = list(existing)
    if warmup:
        fn()
    with LiveStorages(existing) as mode:
        fn()
    return mode.peak
