"""The per-block read-out of Mono-Forward: goodness, local loss and the two prediction modes.

Poster, "Layerwise Loss": ``G_l = a_l M_l^T`` with ``M_l`` (classes x width) and
``L_l = -sum_c y_c log softmax(G_l)_c``. For a spatial (conv) block with ``projection_dim`` the
activations are first reduced by fixed random projections, drawn once from the run's seeded
generator and never trained (the poster's "random projections ... of the channel-wise
activations"):

* ``channel`` (default; one projection per channel, as the poster's reference implementation):
  channel ``c``'s map ``a_l,c`` (H*W values) is multiplied by its own ``R_l,c``
  (``projection_dim / C`` x H*W, entries ``N(0, 1 / (H*W))``), and the C results concatenated;
* ``whole``: the flattened map (C*H*W values) is multiplied by one ``R_l`` (``projection_dim`` x
  C*H*W, entries ``N(0, 1 / (C*H*W))``).

Then ``G_l = (a_l R_l^T) M_l^T``. The read-out is linear in ``a_l``: ``G_l = a_l Q_l^T`` with
``Q_l = M_l R_l`` (block-diagonal ``R_l`` for ``channel``; or ``M_l``), which the directional
estimator uses to update goodness incrementally.

Prediction (docs/methods/mono-forward.md): ``final`` = argmax of the last block's ``G_L``;
``cumulative`` = argmax of ``sum_l softmax(G_l)`` (the poster's primary metric).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class Readout:
    """``M_l`` (and ``R_l`` for a projected spatial block) of one block."""

    def __init__(self, classes: int, flat: int, projection_dim: int | None,
                 gen: torch.Generator, device: torch.device, channels: int = 1) -> None:
        """``channels > 1``: one projection per channel of a ``(channels, flat / channels)``
        map (``projection_dim`` must be a multiple of ``channels``); 1: the whole map."""
        self.flat, self.channels = flat, channels
        self.R: Tensor | None = None
        if projection_dim is not None:
            if projection_dim % channels:
                raise ValueError(f"mono_forward: projection_dim {projection_dim} is not a "
                                 f"multiple of the block's {channels} channels (channel-wise "
                                 f"projection; use projection = \"whole\" or another size)")
            per, size = projection_dim // channels, flat // channels
            self.R = torch.randn(channels, per, size, generator=gen, device=device)
            self.R /= math.sqrt(size)
        dim = projection_dim if projection_dim is not None else flat
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default range for a (classes x dim) matrix
        self.M = (torch.rand(classes, dim, generator=gen, device=device) * 2 - 1) * bound

    def project(self, a: Tensor) -> Tensor:
        """``a_l`` flattened, then projected when the block has ``R_l``: ``(N, dim)``."""
        if self.R is None:
            return a.flatten(1)
        h = a.reshape(len(a), self.channels, -1)
        return torch.einsum("nch,cdh->ncd", h, self.R).flatten(1)

    def goodness(self, a: Tensor, M: Tensor | None = None) -> Tensor:
        return self.project(a) @ (self.M if M is None else M).T

    def combined(self) -> Tensor:
        """``Q_l`` with ``G_l = flat(a_l) Q_l^T``: ``(classes, flat)``."""
        if self.R is None:
            return self.M
        C, d, _ = self.R.shape
        return torch.einsum("kcd,cdh->kch", self.M.view(-1, C, d), self.R).flatten(1)


def sample_losses(goodness: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy of ``softmax(G)`` over the last axis; ``goodness`` is
    ``(..., N, ..., K)`` with the sample axis given by ``y``'s broadcast (``y`` is ``(N,)`` or
    broadcastable to ``goodness.shape[:-1]``)."""
    target = y.expand(goodness.shape[:-1]).unsqueeze(-1)
    return torch.logsumexp(goodness, -1) - goodness.gather(-1, target).squeeze(-1)


def local_loss(goodness: Tensor, y: Tensor, reduction: str) -> Tensor:
    per = F.cross_entropy(goodness, y, reduction="none")
    return per.sum() if reduction == "sum" else per.mean()


def predict(goodness: list[Tensor], y: Tensor) -> dict[str, Tensor]:
    """Hits and summed losses of one batch in both modes, as 0-d tensors (no sync)."""
    probs = sum(torch.softmax(g, -1) for g in goodness) / len(goodness)
    last = goodness[-1]
    return {
        "hits": (probs.argmax(-1) == y).sum(),
        "hits_final": (last.argmax(-1) == y).sum(),
        "loss": -torch.log(probs.gather(1, y[:, None]).clamp_min(1e-12)).sum(),
        "loss_final": F.cross_entropy(last, y, reduction="sum"),
    }
