"""Layer-local training: a model seen as a sequence of blocks.

A layer-local trainer (Mono-Forward, Forward-Forward, local-loss methods ...) trains each block
of a network on its own loss, with the block's input detached, so it must run the network block
by block. This module is the host's generic contract for that; the host itself never calls it
and knows no model or trainer by name.

**The protocol.** A model supports layer-local training when it has a method ``blocks()`` that
returns a sequence of :class:`Block` objects, in forward order. Running them one after the other
on the model's input gives the network's last hidden representation (a model's own output layer,
if it has one, is not a block: a layer-local method brings its own read-out). Each block has

``name``
    a short label, used in metric names (``cos/<name>``);
``width``
    its output units (dense) or output channels (spatial);
``spatial``
    ``True`` when its output is a feature map ``(N, C, H, W)``, ``False`` for ``(N, width)``;
``parameters()``
    the trainable tensors of the block (the model's own parameters, not copies);
``forward(x)``
    the block on one (detached) input batch.

A :class:`Block` built by a model also names its parts, ``pre`` (parameter-free reshaping, e.g.
``Flatten``), ``layer`` (the parametrised map) and ``post`` (what follows ``layer`` inside the
block: activation, pooling, per-channel normalisation), with ``forward = post(layer(pre(x)))``.
A trainer may exploit that structure (for example the linearity of ``layer`` in its weights when
``layer`` is exactly an ``nn.Linear`` or ``nn.Conv2d``) and must fall back to ``forward``
otherwise. ``post`` must act on each output unit or channel separately (elementwise activations,
per-channel pooling), so that changing one unit's weights changes only that unit's output.

:func:`as_blocks` returns a model's blocks, or raises a one-line :class:`LayeredError` naming
what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence, runtime_checkable

from torch import Tensor, nn

from bench_core.errors import UntiedError


class LayeredError(UntiedError):
    """A model cannot be trained block by block (it lacks or breaks the ``blocks()`` protocol)."""


@runtime_checkable
class BlockLike(Protocol):
    """What a layer-local trainer needs of a block (module docstring)."""

    name: str
    width: int
    spatial: bool

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def forward(self, x: Tensor) -> Tensor: ...


@dataclass
class Block:
    """One block of a layered model: ``forward(x) = post(layer(pre(x)))`` (module docstring)."""

    name: str
    layer: nn.Module
    width: int
    spatial: bool = False
    pre: nn.Module = field(default_factory=nn.Identity)
    post: nn.Module = field(default_factory=nn.Identity)

    def parameters(self) -> Iterator[nn.Parameter]:
        yield from self.layer.parameters()
        yield from self.post.parameters()

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield from self.layer.named_parameters()
        for name, p in self.post.named_parameters():
            yield f"post.{name}", p

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.layer(self.pre(x)))

    __call__ = forward


REQUIRED = ("name", "width", "spatial", "parameters", "forward")


def as_blocks(model: nn.Module) -> Sequence[BlockLike]:
    """``model.blocks()``, checked; a :class:`LayeredError` says what is missing."""
    kind = type(model).__name__
    method = getattr(model, "blocks", None)
    if not callable(method):
        raise LayeredError(f"model {kind} cannot be trained layer by layer: it has no blocks() "
                           f"method returning bench_core.layered.Block objects "
                           f"(name, width, spatial, parameters(), forward(x))")
    blocks = list(method())
    if not blocks:
        raise LayeredError(f"model {kind}: blocks() returned no block (a layer-local trainer "
                           f"needs at least one hidden block)")
    for i, block in enumerate(blocks):
        missing = [a for a in REQUIRED if not hasattr(block, a)]
        if missing:
            raise LayeredError(f"model {kind}: block {i} lacks {', '.join(missing)} (see "
                               f"bench_core.layered.Block)")
    return blocks
