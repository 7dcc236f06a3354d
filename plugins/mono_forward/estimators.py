"""One block's local-loss gradient: by autograd (MF+AD) or by directional derivatives (MF+DD).

Both return ``(tensor, gradient)`` pairs for the block's parameters and its ``M_l``, the block's
output ``a_l`` (the next block's input) and the local loss; the trainer applies
``w <- w - lr * g`` (poster: "Weight Updates (AD)" and the DD updates of section 2). Neither sets
``.grad`` on any tensor: MF+AD uses ``torch.autograd.grad``, MF+DD no autograd at all (the
caller runs it under ``torch.inference_mode()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from untied_plugins.mono_forward import directional as dd
from untied_plugins.mono_forward.readout import Readout, local_loss

Pairs = list[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class DDConfig:
    directions: int = 4
    eps: float = 1e-3
    chunk_size: int | None = 1024
    reduction: str = "mean"
    budget: int = 1 << 24
    """most entries of directions plus perturbed activations held at once (one slab of rows)"""
    direction_kind: str = "gaussian"
    """``gaussian`` (normalised) or ``rademacher`` directions (:func:`.directional.directions`)"""
    expansion: bool | None = None
    """rank-one log-sum-exp updates (:func:`.directional.unit_losses`); none: on the CPU only"""
    fused: bool = False
    """the rank-one updates by one compiled kernel (:data:`.directional.FUSED_CHANGES`)"""


def ad_gradient(block, readout: Readout, x: Tensor, y: Tensor, reduction: str
                ) -> tuple[Pairs, Tensor, Tensor]:
    """Autograd gradient of the local loss w.r.t. the block's parameters and ``M_l``, the input
    detached (no gradient crosses blocks)."""
    params = [*block.parameters(), readout.M]
    flags = [p.requires_grad for p in params]
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            a = block.forward(x.detach())
            loss = local_loss(readout.goodness(a), y, reduction)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    pairs = [(p, torch.zeros_like(p) if g is None else g) for p, g in zip(params, grads)]
    return pairs, a.detach(), loss.detach()


def dd_estimate(block, readout: Readout, x: Tensor, y: Tensor, cfg: DDConfig,
                gen: torch.Generator) -> tuple[Pairs, Tensor, Tensor]:
    """The directional estimate ``g_hat`` (:mod:`.directional`) of the same gradient, from
    forward evaluations only. Call under ``torch.inference_mode()``."""
    P, eps, red, kind = cfg.directions, cfg.eps, cfg.reduction, cfg.direction_kind
    fast = dd.fast_path(block)
    xin = block.pre(x) if fast else x
    z = block.layer(xin) if fast else None
    a = block.post(z) if fast else block.forward(x)
    h = readout.project(a)
    G = h @ readout.M.T
    loss = local_loss(G, y, red)
    pairs: Pairs = []
    if fast:
        c = dd.chunking(*dd.row_shape(block.layer), cfg.chunk_size)
        Q = readout.combined()
        expansion = x.device.type == "cpu" if cfg.expansion is None else cfg.expansion
        S = c.segments
        per_row = P * S * c.width + 2 * P * S * len(x) * z[0, 0].numel()
        slab = max(c.per_chunk, cfg.budget // per_row // c.per_chunk * c.per_chunk)
        parts = []
        for start in range(0, c.rows, slab):
            v = dd.directions(P, min(slab, c.rows - start), c, gen, x.device, kind)
            losses = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, red, start, expansion,
                                    cfg.fused)
            parts.append(dd.combine(losses, v, c, eps))
        pairs += dd.split_rows(parts[0] if len(parts) == 1 else torch.cat(parts), block.layer)
    else:
        def block_loss() -> Tensor:
            return local_loss(readout.goodness(block.forward(x)), y, red)

        for p in block.parameters():
            rows = p.detach().view(p.shape[0] if p.dim() else 1, -1)
            c = dd.chunking(rows.shape[0], rows.shape[1], cfg.chunk_size)
            v = dd.directions(P, c.rows, c, gen, x.device, kind)
            losses = dd.naive_losses([rows], v, c, eps, block_loss)
            pairs.append((p, dd.combine(losses, v, c, eps).view_as(p)))
    K, D = readout.M.shape
    cm = dd.chunking(K, D, cfg.chunk_size)
    v = dd.directions(P, K, cm, gen, x.device, kind)
    pairs.append((readout.M, dd.combine(dd.readout_losses(h, G, y, v, cm, eps, red), v, cm, eps)))
    return pairs, a, loss


def dd_chunks(block, readout: Readout, cfg: DDConfig) -> int:
    """Chunks of a block and its ``M_l`` (each costs ``2P`` perturbed local-loss evaluations)."""
    if dd.fast_path(block):
        n = dd.chunking(*dd.row_shape(block.layer), cfg.chunk_size).chunks
    else:
        n = sum(dd.chunking(p.shape[0] if p.dim() else 1, max(1, p[0].numel() if p.dim() else 1),
                            cfg.chunk_size).chunks for p in block.parameters())
    return n + dd.chunking(*readout.M.shape, cfg.chunk_size).chunks


def apply(pairs: Pairs, lr: float) -> None:
    """``w <- w - lr * g`` in place (plain SGD, no ``.grad``)."""
    with torch.no_grad():
        for p, g in pairs:
            p.sub_(g, alpha=lr)
