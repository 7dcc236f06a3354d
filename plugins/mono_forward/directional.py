"""Zeroth-order directional-derivative (DD) gradient estimates of a block's local loss, with no
autograd (docs/methods/mono-forward.md; the poster's section 2):

``g_hat = n / P * sum_p [(L(w + eps v_hat_p) - L(w - eps v_hat_p)) / (2 eps)] v_hat_p``,
``v_hat_p`` a unit vector (``v / ||v||`` with ``v ~ N(0, I)``, or Rademacher signs ``/ sqrt(n)``),
``n`` = entries of the chunk ``w``.

**Chunks hold at most ``chunk_size`` entries.** A parameter matrix is read as rows, one per
output unit: ``[W | b]`` of a dense layer, ``[W_c | b_c]`` of a conv output channel, ``M_l`` (one
row per class). A row that fits is grouped with others: a chunk is ``per_chunk`` consecutive rows,
the largest divisor of the rows not above ``chunk_size // row``. A row longer than ``chunk_size``
is split into ``S = ceil(row / chunk_size)`` segments of ``s = ceil(row / S)`` entries (the last
one shorter), each its own chunk. Every entry lies in exactly one chunk, and a chunk never spans
two units, so perturbing it changes one unit's output (or a few whole units'), which is what makes
the batched evaluation below possible. Directions are stored as one contiguous ``(P, rows, S*s)``
tensor, zero on the padding after a row's last segment.

**Batched evaluation** (:func:`unit_losses`, :func:`readout_losses`), for blocks whose layer is
exactly ``nn.Linear`` or ``nn.Conv2d`` and whose ``post`` has no parameters:

* linearity: ``(W + e V) x = W x + e V x``, so the clean pre-activation ``z = W x + b`` is
  computed once and ``dz_p = V_p x + v_b,p`` once per direction, shared by ``+e`` and ``-e``; all
  P directions of all chunks (a slab of rows at a time) are one matmul / conv (a segment is a
  unit of its own there, its direction zero outside the segment);
* locality: a chunk changes only its own units, so the goodness is updated, not recomputed:
  ``G_pm = G + (a_pm,chunk - a_chunk) Q_chunk^T`` (``Q = M R`` or ``M``, :mod:`.readout`);
* a chunk of one dense unit (or one segment of it) moves the logits by a rank-one term ``d q``
  (``d`` a scalar per sample, sign and direction), so with ``p = softmax(G)``:
  ``LSE(G + d q) = LSE(G) + log E_p[exp(d q)] = LSE(G) + d k1 + d^2 k2 / 2 + d^3 k3 / 6 + O(d^4)``
  (``k_i`` the cumulants of ``q`` under ``p``, shared by all ``2P`` perturbed losses); where
  ``|d| (max q - min q)`` exceeds :data:`EXPANSION_LIMIT` the exact log-sum-exp is used instead
  (on the CPU; on accelerators the exact form is always used: the fallback's selection would
  sync the device);
* ``M``'s chunks of classes change only those logits: exactly,
  ``LSE(G + D) = LSE(G) + log1p(sum_{k in chunk} p_k expm1(D_k))``.

Other blocks fall back to :func:`naive_losses`: 2P full block forwards per chunk, perturbing the
parameters in place (and restoring them). Both give the same losses for the same directions.

Directions are drawn from the run's seeded generator one slab of rows at a time (a slab holds at
most ``budget`` direction entries and perturbed activations), turned into that slab's part of
``g_hat`` at once and dropped; only the estimate, one tensor the size of the parameters, is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_core.interfaces import cpu_only_host_read
from bench_core.kit.compiled import CompiledOrEager

Loss = Callable[[], Tensor]
EXPANSION_LIMIT = 0.05
"""Largest ``|d| (max q - min q)`` evaluated by the cumulant expansion (its neglected 4th-order
term is then below ``0.05^4 / 24 ~ 3e-7``, float32's rounding of a loss near 1)."""


@dataclass(frozen=True)
class Chunking:
    """Rows of a parameter matrix grouped into, or split into, chunks (module docstring)."""

    rows: int
    row: int            # entries per row
    per_chunk: int      # rows per chunk (1 when rows are split)
    segments: int = 1   # chunks per row (above 1 only when per_chunk == 1)

    @property
    def segment(self) -> int:
        """``s``: entries per segment (the last segment of a row may have fewer)."""
        return -(-self.row // self.segments)

    @property
    def width(self) -> int:
        """Stored entries per row: ``segments * segment`` (zero padding after ``row``)."""
        return self.segments * self.segment

    @property
    def chunks(self) -> int:
        return self.rows // self.per_chunk * self.segments

    def sizes(self, rows: int, device=None) -> Tensor:
        """``n`` of each chunk of ``rows`` rows (a multiple of ``per_chunk``), in chunk order."""
        if self.segments == 1:
            return torch.full((rows // self.per_chunk,), float(self.per_chunk * self.row),
                              device=device)
        one = torch.full((self.segments,), float(self.segment), device=device)
        one[-1] = self.row - (self.segments - 1) * self.segment
        return one.repeat(rows)


def chunking(rows: int, row: int, chunk_size: int | None) -> Chunking:
    if chunk_size is not None and row > chunk_size:
        return Chunking(rows, row, 1, -(-row // chunk_size))
    target = rows if chunk_size is None else chunk_size // row
    per = max(d for d in range(1, min(rows, target) + 1) if rows % d == 0)
    return Chunking(rows, row, per)


_SIGN_TABLES: dict[tuple, Tensor] = {}
SIGN_BITS = 12
"""Signs per row of the Rademacher table: a draw of 24 random bits is two rows."""


def _sign_table(scale: float, device) -> Tensor:
    """Row ``b`` (of ``2^SIGN_BITS``) holds the bits of ``b`` as ``+-scale``, built once per
    scale, device and dtype (a few small kernels a call otherwise, twice per step)."""
    dtype = torch.get_default_dtype()
    key = (scale, torch.device(device), dtype)
    table = _SIGN_TABLES.get(key)
    if table is None:
        rows = torch.arange(1 << SIGN_BITS, device=device)[:, None]
        bits = rows >> torch.arange(SIGN_BITS, device=device)
        table = _SIGN_TABLES[key] = ((bits & 1).to(dtype) * 2 - 1) * scale
    return table


def _signs(count: int, scale: float, gen: torch.Generator, device) -> Tensor:
    """``count`` independent ``+-scale`` (1-D, contiguous): 24-bit random integers, each
    split into two 12-bit halves looked up in :func:`_sign_table` (24 signs per generator
    draw: a third of the draws of one byte each, and no per-bit arithmetic)."""
    per = 2 * SIGN_BITS
    draws = -(-count // per)
    word = torch.empty(draws, dtype=torch.int32, device=device).random_(0, 1 << per,
                                                                        generator=gen)
    table = _sign_table(scale, device)
    out = torch.empty(2, draws, SIGN_BITS, device=device, dtype=table.dtype)
    torch.index_select(table, 0, word & ((1 << SIGN_BITS) - 1), out=out[0])
    torch.index_select(table, 0, word >> SIGN_BITS, out=out[1])
    return out.view(-1)[:count]


def directions(P: int, rows: int, c: Chunking, gen: torch.Generator, device,
               kind: str = "gaussian") -> Tensor:
    """``v_hat``: ``(P, rows, c.width)``, contiguous, ``rows`` a multiple of ``c.per_chunk``,
    each chunk's direction of unit length, zero on the padding. ``gaussian``: ``v / ||v||``,
    ``v ~ N(0, I)`` (the poster's); ``rademacher``: independent signs ``/ sqrt(n)``
    (:func:`_signs`)."""
    groups, S, s = rows // c.per_chunk, c.segments, c.segment
    shape = (P, groups, S, c.per_chunk * s)
    if kind == "gaussian":
        v = torch.randn(shape, generator=gen, device=device)
    else:
        v = _signs(math.prod(shape), 1 / math.sqrt(c.per_chunk * s), gen, device).view(shape)
        last = c.row - (S - 1) * s
        if last < s:   # the shorter last segment of each row: signs / sqrt(its size)
            v[:, :, -1] *= math.sqrt(s / last)
    if c.width > c.row:
        v.view(P, rows, c.width)[..., c.row:] = 0
    if kind == "gaussian":
        v /= torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return v.view(P, rows, c.width)


def combine(losses: Tensor, v_hat: Tensor, c: Chunking, eps: float) -> Tensor:
    """``g_hat`` ``(rows, c.row)`` of the rows in ``v_hat`` from the losses ``(2, P, chunks)``
    at ``w +- eps v_hat``."""
    P, rows = v_hat.shape[:2]
    groups = rows // c.per_chunk
    coef = (losses[0] - losses[1]) * (c.sizes(rows, v_hat.device) / (2 * eps * P))
    coef = coef.view(P, groups, c.segments, 1)
    v = v_hat.view(P, groups, c.segments, -1)
    g = v[0] * coef[0]
    for p in range(1, P):   # P passes over the directions, no (P, ...) temporary
        g.addcmul_(v[p], coef[p])
    g = g.view(rows, c.width)
    return g if c.width == c.row else g[:, :c.row]


def fast_path(block) -> bool:
    """Whether the batched evaluation applies (module docstring)."""
    layer, post = getattr(block, "layer", None), getattr(block, "post", None)
    return (type(layer) in (nn.Linear, nn.Conv2d) and post is not None
            and not any(True for _ in post.parameters()))


def rows_of(layer: nn.Module) -> Tensor:
    """``[W | b]`` of a Linear or Conv2d as ``(units, entries per unit)`` (a copy)."""
    w = layer.weight.reshape(layer.weight.shape[0], -1)
    return w if layer.bias is None else torch.cat([w, layer.bias[:, None]], 1)


def row_shape(layer: nn.Module) -> tuple[int, int]:
    """``(units, entries per unit)`` of :func:`rows_of` without building it."""
    return layer.weight.shape[0], layer.weight[0].numel() + (layer.bias is not None)


def split_rows(g: Tensor, layer: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """Rows ``(units, entries)`` back to ``(weight, its part), (bias, its part)`` pairs."""
    k = layer.weight[0].numel()
    out = [(layer.weight, g[:, :k].reshape(layer.weight.shape))]
    if layer.bias is not None:
        out.append((layer.bias, g[:, k]))
    return out


def by_segment(v: Tensor, c: Chunking) -> Tensor:
    """``(P, U, width)`` -> ``(P, U * S, width)``: each segment's direction as a row of its own,
    zero outside the segment (one perturbed unit per segment)."""
    if c.segments == 1:
        return v
    P, U = v.shape[:2]
    S, s = c.segments, c.segment
    eye = torch.eye(S, device=v.device, dtype=v.dtype)
    return (v.view(P, U, 1, S, s) * eye.view(1, 1, S, S, 1)).view(P, U * S, S * s)


def perturbation(layer: nn.Module, xin: Tensor, v: Tensor, c: Chunking) -> Tensor:
    """``dz = V x + v_b`` for every direction: ``(P, N, units * S, ...)`` (linearity)."""
    v = by_segment(v, c)
    P, U = v.shape[:2]
    if isinstance(layer, nn.Linear):  # [x | 1 | 0...] against the stored rows: no slice copies
        parts = [xin] + ([xin.new_ones(len(xin), 1)] if layer.bias is not None else [])
        if c.width > c.row:
            parts.append(xin.new_zeros(len(xin), c.width - c.row))
        dz = F.linear(torch.cat(parts, 1) if len(parts) > 1 else xin, v.reshape(P * U, c.width))
    else:
        k = layer.weight[0].numel()
        vw = v[..., :k].reshape(P * U, *layer.weight.shape[1:])
        vb = v[..., k].reshape(P * U) if layer.bias is not None else None
        dz = F.conv2d(xin, vw, vb, layer.stride, layer.padding, layer.dilation, layer.groups)
    return dz.view(dz.shape[0], P, U, *dz.shape[2:]).transpose(0, 1)


def _cumulant_coefficients(G: Tensor, y: Tensor, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(k1 - q_y, k2 / 2, k3 / 6)``, each ``(N, C)``: the cumulants of ``q_c`` ``(C, K)`` under
    ``softmax(G_n)``, so that ``LSE(G_n + d q_c) - LSE(G_n) - d q_c[y_n] = d a1 + d^2 a2 + d^3 a3
    + O(d^4)``."""
    p = torch.softmax(G, -1)                                            # (N, K)
    mean = q.mean(-1)
    qc = q - mean[:, None]
    m1, m2, m3 = (p @ qc.pow(i).T for i in (1, 2, 3))                  # (N, C) each
    a1 = m1 + mean - q.T[y]                                             # k1 - q_y
    a2 = (m2 - m1 * m1) / 2                                             # k2 / 2
    a3 = (m3 - 3 * m1 * m2 + 2 * m1.pow(3)) / 6                         # k3 / 6
    return a1, a2, a3


def _rank_one_losses(G: Tensor, y: Tensor, d: Tensor, q: Tensor) -> Tensor:
    """Per-sample loss changes ``LSE(G_n + d q_c) - LSE(G_n) - d q_c[y_n]`` for ``d``
    ``(M, N, C)`` and ``q`` ``(C, K)``: the cumulant expansion to third order, in Horner form,
    exact where ``|d| (max q - min q)`` exceeds :data:`EXPANSION_LIMIT` (CPU)."""
    a1, a2, a3 = _cumulant_coefficients(G, y, q)
    out = torch.addcmul(a2, d, a3)                                      # Horner, in place
    torch.addcmul(a1, d, out, out=out)
    out.mul_(d)
    if G.device.type == "cpu":  # host reads of a CPU-only branch (accelerators: no expansion)
        spread = q.amax(-1) - q.amin(-1)                                # (C,)
        with cpu_only_host_read():
            # max |d| (as amax/amin: the inf-norm kernel is 18x slower on the CPU)
            if torch.maximum(d.amax(), -d.amin()) * spread.amax() > EXPANSION_LIMIT:  # bound
                far = d.abs() * spread > EXPANSION_LIMIT
                _, ni, ci = far.nonzero(as_tuple=True)
                df = d[far]
                lse = (torch.logsumexp(G[ni] + df[:, None] * q[ci], -1)
                       - torch.logsumexp(G[ni], -1))
                out[far] = lse - df * q[ci, y[ni]]
    return out



def _rank_one_changes(post: nn.Module, G: Tensor, y: Tensor, q: Tensor, z: Tensor,
                      step: Tensor, a: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The rank-one path of :func:`unit_losses` as one expression, for :data:`FUSED_CHANGES` to
    compile: with ``d = post(z +- eps dz) - a`` (``z``, ``a`` ``(N, C)``, ``dz = step``
    ``(N, P, C)``, contiguous) the loss changes ``d a1 + d^2 a2 + d^3 a3`` summed over the
    samples, ``(2, P, C)``, and the expansion's bound ``max |d| * max_c (max q_c - min q_c)``."""
    a1, a2, a3 = (t.unsqueeze(1) for t in _cumulant_coefficients(G, y, q))
    z, a = z.unsqueeze(1), a.unsqueeze(1)
    plus = post(z + eps * step) - a
    minus = post(z - eps * step) - a
    sums = [(d * (a1 + d * (a2 + d * a3))).sum(0) for d in (plus, minus)]
    peaks = [d.abs().amax(0) for d in (plus, minus)]   # over samples, like the sums: one pass
    spread = (q.amax(-1) - q.amin(-1)).amax()
    return torch.stack(sums), torch.maximum(*peaks).amax() * spread


FUSED_CHANGES = CompiledOrEager(_rank_one_changes)
""":func:`_rank_one_changes` compiled (inductor) on first use, static shapes first and dynamic
ones after a recompilation (torch's default): the coefficients' small operations and one pass
over the ``2P N C`` perturbed activations, where the eager form makes about ten (``add``,
``sub``, ``post``, ``sub``, three Horner steps, the bound's two, the ``mean``) plus a dozen
small kernels. Its per-sample sums may round differently from the eager ``mean``: it is an
execution option (the trainer's ``fused_losses``), off by default."""


def unit_losses(block, xin: Tensor, z: Tensor, a: Tensor, G: Tensor, Q: Tensor, y: Tensor,
                v: Tensor, c: Chunking, eps: float, reduction: str, start: int,
                expansion: bool = True, fused: bool = False) -> Tensor:
    """Local losses ``(2, P, chunks)`` with the rows ``start .. start + len(v[0])`` of the
    block's ``[W | b]`` moved by ``+- eps v`` (one batched computation; module docstring).
    ``expansion``: the rank-one update of the log-sum-exp where chunks are one dense unit (or
    segment); else the exact one everywhere. ``fused`` (with ``expansion``, on the CPU, for
    an elementwise ``post``): that update by the compiled :data:`FUSED_CHANGES`, the eager
    form where its bound says the expansion does not hold."""
    P, U = v.shape[:2]
    N, K = G.shape
    S, stop = c.segments, start + U
    step = perturbation(block.layer, xin, v, c)                         # (P, N, U*S, ...)
    z_s, a_s = z[:, start:stop], a[:, start:stop]
    q = Q.view(K, z.shape[1], -1)[:, start:stop]
    if S > 1:
        z_s, a_s, q = (t.repeat_interleave(S, 1) for t in (z_s, a_s, q))
    if (fused and expansion and G.device.type == "cpu" and c.per_chunk == 1
            and step.dim() == 3 and a.shape == z.shape):   # one dense unit (or segment) a chunk
        qt = q.reshape(K, U * S).T
        sums, bound = FUSED_CHANGES(block.post, G, y, qt, z_s, step.transpose(0, 1), a_s, eps)
        with cpu_only_host_read():
            if bound <= EXPANSION_LIMIT:
                clean = F.cross_entropy(G, y, reduction=reduction)
                return (sums if reduction == "sum" else sums / N) + clean
    zs = step.new_empty((2, *step.shape))                               # shared V x, +- eps
    torch.add(z_s, step, alpha=eps, out=zs[0])
    torch.sub(z_s, step, alpha=eps, out=zs[1])
    a_pm = block.post(zs.view(2 * P * N, *zs.shape[3:]))
    C = U * S // c.per_chunk
    j = a_pm[0].numel() // C
    if a_pm.data_ptr() == zs.data_ptr():   # post returned its input (Identity): a copy
        a_pm = a_pm.clone()
    delta = a_pm.view(2 * P, N, U * S, -1).sub_(a_s.reshape(N, U * S, -1))
    if j == 1 and expansion:
        change = _rank_one_losses(G, y, delta.view(2 * P, N, C), q.reshape(K, C).T)
        clean = F.cross_entropy(G, y, reduction=reduction)
        losses = change.sum(1) if reduction == "sum" else change.mean(1)
        return (losses + clean).view(2, P, C)
    delta = delta.view(2 * P * N, C, j).transpose(0, 1)                 # (C, 2PN, j)
    q = q.reshape(K, C, j).permute(1, 2, 0)                             # (C, j, K)
    # goodness of every chunk's perturbed networks, G + delta q (only the chunk's units moved),
    # shifted by the clean goodness' row maximum m (exact; G_pm is close to G)
    m = G.amax(-1, keepdim=True)
    base = (G - m).repeat(2 * P, 1)                                     # (2PN, K)
    if j == 1:  # one entry per chunk: an outer product, not C tiny matmuls
        shifted = torch.addcmul(base, delta.contiguous(), q)
    else:
        shifted = torch.baddbmm(base.expand(C, -1, -1), delta, q)
    lse_pm = shifted.exp_().sum(-1).log_().view(C, 2 * P, N) + m.squeeze(1)
    target = G.gather(1, y[:, None]).squeeze(1) + (
        delta.view(C, 2 * P, N, j) * q[:, :, y].transpose(1, 2)[:, None]).sum(-1)
    per_sample = lse_pm - target
    losses = per_sample.sum(-1) if reduction == "sum" else per_sample.mean(-1)
    return losses.T.reshape(2, P, C)


def readout_losses(h: Tensor, G: Tensor, y: Tensor, v: Tensor, c: Chunking, eps: float,
                   reduction: str) -> Tensor:
    """Local losses ``(2, P, chunks)`` with chunks of ``M``'s rows moved by ``+- eps v``:
    ``L = LSE(G) + log1p(sum_k p_k expm1(D_k)) - G_y - D_y`` with ``D = +- eps h v^T`` on the
    chunk's classes (exact)."""
    P, K = v.shape[:2]
    N, S, s, r = h.shape[0], c.segments, c.segment, c.per_chunk
    if c.width > c.row:
        h = F.pad(h, (0, c.width - c.row))
    dG = torch.einsum("nsj,pksj->pnks", h.view(N, S, s), v.view(P, K, S, s))   # (P, N, K, S)
    D = torch.stack((dG, -dG)).mul_(eps).view(2, P, N, K // r, r, S)
    p = torch.softmax(G, -1).view(N, K // r, r, 1)
    dlse = torch.log1p((torch.expm1(D) * p).sum(-2))                    # (2, P, N, K/r, S)
    hit = F.one_hot(y, K).to(D.dtype).view(N, K // r, r, 1)
    base = torch.logsumexp(G, -1) - G.gather(1, y[:, None]).squeeze(1)  # (N,)
    per_sample = base.view(N, 1, 1) + dlse - (D * hit).sum(-2)
    losses = per_sample.sum(2) if reduction == "sum" else per_sample.mean(2)
    return losses.reshape(2, P, -1)


def naive_losses(rows: list[Tensor], v: Tensor, c: Chunking, eps: float, loss: Loss) -> Tensor:
    """The reference loop: for each chunk, direction and sign, move the chunk's entries of the
    tensors ``rows`` (views sharing dim 0, e.g. ``[W, b]``, side by side) in place, run
    ``loss()`` (a full block forward and read-out), and restore. ``v`` covers all rows.
    Returns ``(2, P, chunks)``."""
    P = v.shape[0]
    widths = [r[0].numel() for r in rows]
    out = torch.empty(2, P, c.chunks, device=v.device)
    for ci in range(c.chunks):
        group, seg = divmod(ci, c.segments)
        sl = slice(group * c.per_chunk, (group + 1) * c.per_chunk)
        cols = slice(seg * c.segment, min((seg + 1) * c.segment, c.row))
        for p in range(P):
            move = torch.zeros(c.per_chunk, c.row, device=v.device, dtype=v.dtype)
            move[:, cols] = v[p, sl, cols]
            parts = torch.split(move, widths, dim=1)
            saved = [r[sl].clone() for r in rows]
            for si, sgn in enumerate((1.0, -1.0)):
                for r, part, keep in zip(rows, parts, saved):
                    r[sl] = keep + (sgn * eps) * part.reshape(keep.shape)
                out[si, p, ci] = loss()
            for r, keep in zip(rows, saved):
                r[sl] = keep
    return out
