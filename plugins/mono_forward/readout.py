"""The per-block read-out of Mono-Forward: goodness, local loss and the two prediction modes.

Poster, "Layerwise Loss": ``G_l = a_l M_l^T`` with ``M_l`` (classes x width) and
``L_l = -sum_c y_c log softmax(G_l)_c``. For a spatial (conv) block the activations are flattened
and, with ``projection_dim``, first multiplied by a fixed random matrix ``R_l`` (``projection_dim``
x C*H*W, entries ``N(0, 1 / (C*H*W))``, drawn once from the run's seeded generator and never
trained): ``G_l = (a_l R_l^T) M_l^T`` (the poster's "random projections ... of the channel-wise
activations"). The read-out is linear in ``a_l``: ``G_l = a_l Q_l^T`` with ``Q_l = M_l R_l`` (or
``M_l``), which the directional estimator uses to update goodness incrementally.

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
                 gen: torch.Generator, device: torch.device) -> None:
        self.flat = flat
        self.R: Tensor | None = None
        if projection_dim is not None:
            self.R = torch.randn(projection_dim, flat, generator=gen, device=device) / math.sqrt(flat)
        dim = projection_dim if projection_dim is not None else flat
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's default range for a (classes x dim) matrix
        self.M = (torch.rand(classes, dim, generator=gen, device=device) * 2 - 1) * bound

    def project(self, a: Tensor) -> Tensor:
        """``a_l`` flattened, then projected when the block has ``R_l``: ``(N, dim)``."""
        h = a.flatten(1)
        return h if self.R is None else h @ self.R.T

    def goodness(self, a: Tensor, M: Tensor | None = None) -> Tensor:
        return self.project(a) @ (self.M if M is None else M).T

    def combined(self) -> Tensor:
        """``Q_l`` with ``G_l = flat(a_l) Q_l^T``: ``(classes, flat)``."""
        return self.M if self.R is None else self.M @ self.R


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
