"""Zeroth-order directional-derivative (DD) gradient estimates of a block's local loss, with no
autograd (docs/methods/mono-forward.md; the poster's section 2):

``g_hat = n / P * sum_p [(L(w + eps v_hat_p) - L(w - eps v_hat_p)) / (2 eps)] v_hat_p``,
``v_p ~ N(0, I)``, ``v_hat_p = v_p / ||v_p||``, ``n`` = entries of the chunk ``w``.

**Chunks are groups of whole rows.** A parameter matrix is read as rows, one per output unit:
``[W | b]`` of a dense layer (``fan_in + 1`` entries per unit), ``[W_c | b_c]`` of a conv
layer (one row per output channel: ``C_in * k * k + 1`` entries) and ``M_l`` (one row per class).
A chunk is ``per_chunk`` consecutive rows, with ``per_chunk`` the largest divisor of the number
of rows not above ``chunk_size // entries_per_row`` (at least 1), so every entry lies in exactly
one chunk and all chunks of a matrix have the same size ``n``. Because a chunk holds whole units,
perturbing it changes only those units' outputs, which is what makes the batched evaluation below
possible.

**Batched evaluation** (:func:`unit_losses`, :func:`readout_losses`), for blocks whose layer is
exactly ``nn.Linear`` or ``nn.Conv2d`` and whose ``post`` has no parameters:

* linearity: ``(W + e V) x = W x + e V x``, so the base pre-activation ``z = W x + b`` is computed
  once and the perturbation ``dz_p = V_p x + v_b,p`` once per direction, shared by ``+e`` and
  ``-e``; all P directions of all chunks (a slab of rows at a time) are one matmul / conv;
* locality: a chunk changes only its own units, so the goodness is updated, not recomputed:
  ``G_pm = G + (a_pm,chunk - a_chunk) Q_chunk^T`` (``Q = M R`` or ``M``, :mod:`.readout`);
  for ``M_l`` a chunk of classes changes only those columns of ``G``: ``G_pm = G +- e h V^T``.

Other blocks fall back to :func:`naive_losses`: 2P full block forwards per chunk, perturbing the
parameters in place (and restoring them). Both give the same losses for the same directions.

Directions are drawn from the run's seeded generator one slab of rows at a time (a slab holds at
most ``budget`` direction entries and perturbed activations), turned into that slab's part of
``g_hat`` at once and dropped: they are never stored beyond one slab, so MeZO's trick of
re-drawing them from a saved generator state for the update is not needed (the estimate, one
tensor the size of the parameters, is kept instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from untied_plugins.mono_forward.readout import sample_losses

Loss = Callable[[], Tensor]


@dataclass(frozen=True)
class Chunking:
    """Rows of a parameter matrix grouped into equal chunks (module docstring)."""

    rows: int
    row: int        # entries per row
    per_chunk: int  # rows per chunk

    @property
    def chunks(self) -> int:
        return self.rows // self.per_chunk

    @property
    def size(self) -> int:
        """``n``: entries per chunk."""
        return self.per_chunk * self.row


def chunking(rows: int, row: int, chunk_size: int | None) -> Chunking:
    target = rows if chunk_size is None else max(1, chunk_size // row)
    per = max(d for d in range(1, min(rows, target) + 1) if rows % d == 0)
    return Chunking(rows, row, per)


def directions(P: int, rows: int, c: Chunking, gen: torch.Generator, device) -> Tensor:
    """``v_hat``: ``(P, rows, row)``, ``rows`` a multiple of ``c.per_chunk``, each chunk's
    direction normalised to unit length."""
    v = torch.randn(P, rows // c.per_chunk, c.size, generator=gen, device=device)
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return v.view(P, rows, c.row)


def combine(losses: Tensor, v_hat: Tensor, c: Chunking, eps: float) -> Tensor:
    """``g_hat`` of the rows in ``v_hat`` from the losses ``(2, P, chunks)`` at ``w +- eps v``."""
    P = v_hat.shape[0]
    coef = (losses[0] - losses[1]) / (2 * eps) * (c.size / P)          # (P, chunks)
    v = v_hat.reshape(P, coef.shape[1], c.size)
    return torch.einsum("pc,pcj->cj", coef, v).reshape(-1, c.row)


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """Reduce the sample axis (``-2`` of ``(..., N, chunks)``)."""
    return per_sample.sum(-2) if reduction == "sum" else per_sample.mean(-2)


def fast_path(block) -> bool:
    """Whether the batched evaluation applies (module docstring)."""
    layer, post = getattr(block, "layer", None), getattr(block, "post", None)
    return (type(layer) in (nn.Linear, nn.Conv2d) and post is not None
            and not any(True for _ in post.parameters()))


def rows_of(layer: nn.Module) -> Tensor:
    """``[W | b]`` of a Linear or Conv2d as ``(units, entries per unit)`` (a copy)."""
    w = layer.weight.reshape(layer.weight.shape[0], -1)
    return w if layer.bias is None else torch.cat([w, layer.bias[:, None]], 1)


def split_rows(g: Tensor, layer: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Rows ``(units, entries)`` back to ``(weight, its part), (bias, its part)`` pairs."""
    k = layer.weight[0].numel()
    out = [(layer.weight, g[:, :k].reshape(layer.weight.shape))]
    if layer.bias is not None:
        out.append((layer.bias, g[:, k]))
    return out


def perturbation(layer: nn.Module, xin: Tensor, v: Tensor) -> Tensor:
    """``dz = V x + v_b`` for every direction: ``(P, N, units, ...)`` (linearity)."""
    P, U = v.shape[:2]
    k = layer.weight[0].numel()
    vw = v[..., :k].reshape(P * U, *layer.weight.shape[1:])
    vb = v[..., k] .reshape(P * U) if layer.bias is not None else None
    if isinstance(layer, nn.Linear):
        dz = F.linear(xin, vw, vb)                                   # (N, P*U)
    else:
        dz = F.conv2d(xin, vw, vb, layer.stride, layer.padding, layer.dilation, layer.groups)
    return dz.view(dz.shape[0], P, U, *dz.shape[2:]).transpose(0, 1)


def unit_losses(block, xin: Tensor, z: Tensor, a: Tensor, G: Tensor, Q: Tensor, y: Tensor,
                v: Tensor, c: Chunking, eps: float, reduction: str, start: int) -> Tensor:
    """Local losses ``(2, P, chunks)`` with the rows ``start .. start + len(v[0])`` of the
    block's ``[W | b]`` moved by ``+- eps v`` (one batched computation; module docstring)."""
    P, U = v.shape[:2]
    N, K = G.shape
    stop = start + U
    step = perturbation(block.layer, xin, v).mul_(eps)                   # (P, N, U, ...)
    z_s = z[:, start:stop]
    zs = torch.stack((z_s + step, z_s - step))                           # shared V x, +- eps
    a_pm = block.post(zs.view(2 * P * N, *zs.shape[3:]))
    C, j = U // c.per_chunk, a_pm[0].numel() // (U // c.per_chunk)
    delta = (a_pm.view(2 * P, N, U, -1) - a[:, start:stop].reshape(N, U, -1))
    delta = delta.view(2 * P * N, C, j).transpose(0, 1)                  # (C, 2PN, j)
    q = Q.view(K, z.shape[1], -1)[:, start:stop].reshape(K, C, j).permute(1, 2, 0)  # (C, j, K)
    # goodness of every chunk's perturbed networks, G + delta q (only the chunk's units moved),
    # shifted by the base goodness' row maximum m (exact; stable since G_pm is close to G)
    m = G.amax(-1, keepdim=True)
    base = (G - m).repeat(2 * P, 1)                                      # (2PN, K)
    if j == 1:  # one entry per chunk (a dense unit): an outer product, not C tiny matmuls
        shifted = torch.addcmul(base, delta.contiguous(), q)
    else:
        shifted = torch.baddbmm(base.expand(C, -1, -1), delta, q)
    lse = shifted.exp_().sum(-1).log_().view(C, 2 * P, N) + m.squeeze(1)
    target = G.gather(1, y[:, None]).squeeze(1) + (
        delta.view(C, 2 * P, N, j) * q[:, :, y].transpose(1, 2)[:, None]).sum(-1)
    per_sample = lse - target
    losses = per_sample.sum(-1) if reduction == "sum" else per_sample.mean(-1)
    return losses.T.reshape(2, P, C)


def readout_losses(h: Tensor, G: Tensor, y: Tensor, v: Tensor, c: Chunking, eps: float,
                   reduction: str) -> Tensor:
    """Local losses ``(2, P, chunks)`` with chunks of ``M``'s rows moved by ``+- eps v``."""
    P, K = v.shape[:2]
    dG = torch.einsum("nd,pkd->pnk", h, v)                               # (P, N, K)
    mask = torch.eye(K, device=G.device, dtype=G.dtype).view(K // c.per_chunk, c.per_chunk, K)
    mask = mask.sum(1)                                                   # (chunks, K)
    sign = torch.tensor([1.0, -1.0], device=G.device, dtype=G.dtype).view(2, 1, 1, 1, 1)
    goodness = G[None, None, :, None, :] + (sign * eps) * dG[None, :, :, None, :] * mask
    return reduce(sample_losses(goodness, y[:, None]), reduction)


def naive_losses(rows: list[Tensor], v: Tensor, c: Chunking, eps: float, loss: Loss) -> Tensor:
    """The reference loop: for each chunk, direction and sign, move the chunk's rows of the
    tensors ``rows`` (views sharing dim 0, e.g. ``[W, b]``) in place, run ``loss()`` (a full
    block forward and read-out), and restore. ``v`` covers all rows. Returns ``(2, P, chunks)``."""
    P = v.shape[0]
    widths = [r[0].numel() for r in rows]
    out = torch.empty(2, P, c.chunks, device=v.device)
    for ci in range(c.chunks):
        sl = slice(ci * c.per_chunk, (ci + 1) * c.per_chunk)
        for p in range(P):
            parts = torch.split(v[p, sl], widths, dim=1)
            saved = [r[sl].clone() for r in rows]
            for si, s in enumerate((1.0, -1.0)):
                for r, part, keep in zip(rows, parts, saved):
                    r[sl] = keep + (s * eps) * part.reshape(keep.shape)
                out[si, p, ci] = loss()
            for r, keep in zip(rows, saved):
                r[sl] = keep
    return out

