"""What every back-propagation trainer shares: per-sample losses and their gradient at the
output, batch losses, predictions, evaluation of every test set, and the seeded stream of
sample indices that makes epochs (of a fixed number of samples, or passes over the data).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench_core.interfaces import DataBundle


def sample_losses(out: Tensor, y: Tensor, loss: str, task: str) -> Tensor:
    """The loss of every sample (see the module docstring): ``out`` is ``(..., B, outputs)``,
    the result ``(..., B)``; leading axes (e.g. a stack of grouped runs) are kept."""
    if task == "regression":
        if loss != "mse":
            raise ValueError(f"loss '{loss}' needs a classification dataset; use loss = 'mse'")
        return 0.5 * (out - y.reshape(out.shape).to(out.dtype)).square().sum(-1)
    single = out.shape[-1] == 1
    if loss == "cross_entropy":
        if single:
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype),
                                                      reduction="none")
        flat = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none")
        return flat.view(y.shape)
    target = y.to(out.dtype).unsqueeze(-1) if single else F.one_hot(y, out.shape[-1]).to(out.dtype)
    return 0.5 * (out - target).square().sum(-1)


def sample_loss_gradient(out: Tensor, y: Tensor, loss: str, task: str) -> Tensor:
    """``d sample_losses / d out`` for each sample (shape of ``out``), for a trainer that runs
    the backward pass by hand (grouped runs)."""
    single = out.shape[-1] == 1
    if task == "regression":
        return out - y.reshape(out.shape).to(out.dtype)
    if loss == "cross_entropy":
        if single:
            return torch.sigmoid(out) - y.to(out.dtype).unsqueeze(-1)
        return torch.softmax(out, -1) - F.one_hot(y, out.shape[-1]).to(out.dtype)
    target = y.to(out.dtype).unsqueeze(-1) if single else F.one_hot(y, out.shape[-1]).to(out.dtype)
    return out - target


def batch_loss(out: Tensor, y: Tensor, loss: str, task: str,
               reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """The loss over the batch: the mean or the sum of the per-sample losses (module
    docstring). Softmax cross-entropy of a ``(B, classes)`` batch goes through torch's fused
    reduction (equal up to float rounding, and a few kernels fewer per step, which matters for
    small models)."""
    if task != "regression" and loss == "cross_entropy" and out.dim() == 2 and out.shape[1] > 1:
        return F.cross_entropy(out, y, reduction=reduction)
    per_sample = sample_losses(out, y, loss, task)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def predictions(out: Tensor, loss: str) -> Tensor:
    if out.shape[-1] == 1:
        threshold = 0.0 if loss == "cross_entropy" else 0.5
        return (out.squeeze(-1) >= threshold).long()
    return out.argmax(-1)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss: str, task: str, batch_size: int,
             ctx=None) -> dict[str, Tensor]:
    """Loss, and accuracy (classification) or ``mse`` (plain mean squared error over samples
    and outputs) and ``max_abs_error`` (largest ``|y_hat - y|``) (regression), over ``(x, y)``,
    as 0-d tensors (no sync)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)  # hits, or summed squared error
    worst = torch.zeros((), device=x.device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        out = model(xb)
        if ctx is not None:
            ctx.counters.forward(len(xb))
        total += batch_loss(out, yb, loss, task) * len(xb)
        if task == "classification":
            correct += (predictions(out, loss) == yb).sum()
        else:
            error = out - yb.reshape(out.shape)
            correct += error.square().mean(-1).sum()
            worst = torch.maximum(worst, error.abs().max())
    model.train(was_training)
    n = max(len(x), 1)
    result = {"loss": total / n}
    if task == "classification":
        result["accuracy"] = correct / n
    else:
        result.update(mse=correct / n, max_abs_error=worst)
    return result


def evaluate_all(model: nn.Module, data: DataBundle, loss: str, batch_size: int, ctx=None
                 ) -> dict[str, Tensor]:
    """:func:`evaluate` on the test split and on every extra evaluation set of ``data``:
    ``test_loss``, ``test_accuracy`` (or ``test_mse``), ``noisy_test_loss``, ... (0-d tensors)."""
    out: dict[str, Tensor] = {}
    for prefix, (x, y) in data.test_sets().items():
        result = evaluate(model, x, y, loss, data.info.task, batch_size, ctx)
        out.update({f"{prefix}_{k}": v for k, v in result.items()})
    return out


class SampleStream:
    """The order in which training samples are visited: passes over the ``n`` samples (each a
    fresh permutation from ``gen`` when ``shuffle``), cut into epochs of ``size`` samples. With
    ``size = n`` every epoch is one pass; a larger ``size`` takes its samples from consecutive
    passes, so every sample is seen equally often over the run. Lengths are Python ints: no
    host sync."""

    def __init__(self, n: int, size: int, shuffle: bool, gen: torch.Generator,
                 device: torch.device) -> None:
        if n == 0:
            raise ValueError("backprop: the training set is empty")
        self.n, self.size, self.shuffle, self.gen, self.device = n, size, shuffle, gen, device
        self.rest = torch.empty(0, dtype=torch.long, device=device)

    def _pass(self) -> Tensor:
        if self.shuffle:
            return torch.randperm(self.n, generator=self.gen, device=self.device)
        return torch.arange(self.n, device=self.device)

    def next_epoch(self) -> Tensor:
        parts, need = [], self.size
        while need > 0:
            if len(self.rest) == 0:
                self.rest = self._pass()
            parts.append(self.rest[:need])
            self.rest = self.rest[need:]
            need -= len(parts[-1])
        return parts[0] if len(parts) == 1 else torch.cat(parts)
