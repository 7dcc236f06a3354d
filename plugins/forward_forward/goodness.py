"""The pieces of Forward-Forward that do not depend on the training loop (Hinton 2022, "The
Forward-Forward Algorithm: Some Preliminary Investigations", arXiv:2212.13345): the label
embedded in the input (Section 3.3), the wrong labels of negative data, the length
normalisation between layers, a block's goodness and its logistic loss (Section 2), and the
per-label goodness that prediction compares (Section 3.3)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_EPS = 1e-8
"""Added to the L2 norm before dividing by it (an all-zero activity vector stays zero)."""


def embed_labels(x: Tensor, labels: Tensor, classes: int, scale: Tensor | float) -> Tensor:
    """``x`` with the first ``classes`` features of each sample (flattened in memory order)
    replaced by a one-hot of ``labels`` times ``scale`` (Section 3.3: the label as a one-of-N
    code in the first 10 pixels of an MNIST image). A new tensor; ``x`` is unchanged."""
    flat = x.reshape(len(x), -1).clone()
    # a comparison, not F.one_hot (which checks the labels' range with a host read on a GPU)
    one_hot = labels.reshape(-1, 1) == torch.arange(classes, device=labels.device)
    flat[:, :classes] = one_hot.to(flat.dtype) * scale
    return flat.reshape(x.shape)


def negative_labels(labels: Tensor, classes: int, gen: torch.Generator) -> Tensor:
    """A wrong label per sample, uniform over the ``classes - 1`` others: ``(y + k) mod C`` with
    ``k`` uniform in ``1 .. C-1`` from ``gen`` (Section 3.3: negative data are images with an
    incorrect label)."""
    shift = torch.randint(1, classes, labels.shape, generator=gen, device=labels.device)
    return (labels + shift) % classes


def normalise_length(x: Tensor, rms: bool = True) -> Tensor:
    """Each sample divided by its L2 length over all its features, no mean subtracted, so only
    the orientation of the activity passes on (Section 2.1's "layer normalization"); with
    ``rms`` then multiplied by ``sqrt(features)``, i.e. divided by its root mean square (a
    constant factor the paper does not fix: it keeps a unit's pre-activation at the scale of
    the usual initialisations, whatever the width)."""
    flat = x.reshape(len(x), -1)
    norm = torch.linalg.vector_norm(flat, dim=1) + NORM_EPS
    if rms:
        norm = norm / flat.shape[1] ** 0.5
    return x / norm.reshape(-1, *([1] * (x.dim() - 1)))


def goodness(activity: Tensor) -> Tensor:
    """Per sample, the sum of the squared activities of a block's output (Section 2, eq. 1)."""
    return activity.reshape(len(activity), -1).square().sum(1)


def ff_loss(g_pos: Tensor, g_neg: Tensor, threshold: float, reduction: str = "mean") -> Tensor:
    """The logistic loss of Section 2, eq. 1 (``p(positive) = sigmoid(g - theta)``) on one block:
    ``softplus(-(g_pos - theta)) + softplus(g_neg - theta)`` per sample pair, reduced over the
    batch by ``mean`` or ``sum``."""
    per_sample = F.softplus(threshold - g_pos) + F.softplus(g_neg - threshold)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def shares_the_image_product(block) -> bool:
    """Whether ``block`` is ``post(Linear(reshape(x)))`` with an exact ``nn.Linear`` (not a
    subclass such as BinaryConnect's) after a parameter-free reshape, so that
    :func:`embedded_first_block` may compute the image's product with the weights once for all
    labels."""
    pre = getattr(block, "pre", None)
    return (type(getattr(block, "layer", None)) is nn.Linear
            and isinstance(pre, (nn.Identity, nn.Flatten)))


def embedded_first_block(block, x: Tensor, labels: Tensor, classes: int,
                         scale: Tensor | float, rms: bool = True) -> Tensor:
    """The first block's output on ``x`` with each row of ``labels`` (``(K, N)``) embedded:
    ``(K * N, ...)``, label row by label row. The same as ``block.forward(normalise_length(
    embed_labels(x, labels[k])))`` for every ``k``; when :func:`shares_the_image_product`, it
    is computed as ``(W x_0 + u W[:, c]) / d + b``, with ``x_0`` the input with its label
    features zeroed, ``u`` the code's value and ``d`` the normaliser, which does not depend on
    the label (every code has length ``u``): one product with the image per sample instead of
    one per label (equal up to rounding)."""
    k, n = labels.shape
    if not shares_the_image_product(block):
        tiled = x.repeat(k, *([1] * (x.dim() - 1)))
        return block.forward(normalise_length(embed_labels(tiled, labels.reshape(-1), classes,
                                                           scale), rms))
    image = x.reshape(n, -1).clone()
    image[:, :classes] = 0
    norm = torch.sqrt(image.square().sum(1) + scale * scale) + NORM_EPS
    if rms:
        norm = norm / image.shape[1] ** 0.5
    layer = block.layer
    shared = image @ layer.weight.T                               # (N, width)
    # (K, N, width): the code's column of W, by a product (no indexing: its backward
    # accumulates in an order that is not fixed on a GPU)
    one_hot = (labels.unsqueeze(-1) == torch.arange(classes, device=labels.device))
    codes = one_hot.to(image.dtype) @ layer.weight[:, :classes].T * scale
    z = (shared + codes) / norm.reshape(1, n, 1)
    if layer.bias is not None:
        z = z + layer.bias
    return block.post(z.reshape(k * n, -1))


def label_goodness(blocks: Sequence, x: Tensor, classes: int, scale: Tensor | float,
                   rms: bool = True) -> Tensor:
    """``(blocks, classes, N)``: the goodness of every block with each label embedded in ``x``
    (Section 3.3: run the net once per label), every block's input normalised
    (:func:`normalise_length`, Section 2.1). The ``classes`` copies go through as one batch."""
    labels = torch.arange(classes, device=x.device).reshape(-1, 1).expand(classes, len(x))
    out = embedded_first_block(blocks[0], x, labels, classes, scale, rms)
    per_block = [goodness(out)]
    for block in blocks[1:]:
        out = block.forward(normalise_length(out, rms))
        per_block.append(goodness(out))
    return torch.stack([g.reshape(classes, len(x)) for g in per_block])


def predict(per_label: Tensor, skip_first_layer: bool) -> Tensor:
    """The label of largest goodness summed over blocks (the first block left out when
    ``skip_first_layer``, as Section 3.3 does), from :func:`label_goodness`'s output."""
    used = per_label[1:] if skip_first_layer else per_label
    return used.sum(0).argmax(0)


def expected_ff_loss(per_label: Tensor, y: Tensor, thresholds: Sequence[float]) -> Tensor:
    """Per sample, the FF loss summed over blocks with the negative term averaged over every
    wrong label (the expectation of the training loss over the uniform negative draw): a
    deterministic evaluation of the training objective. ``per_label`` as
    :func:`label_goodness` returns it."""
    classes = per_label.shape[1]
    theta = torch.tensor(list(thresholds), dtype=per_label.dtype,
                         device=per_label.device).reshape(-1, 1, 1)
    true = per_label.gather(1, y.reshape(1, 1, -1).expand(len(per_label), 1, -1))[:, 0]
    neg = F.softplus(per_label - theta)
    wrong = (neg.sum(1) - neg.gather(1, y.reshape(1, 1, -1).expand(len(per_label), 1, -1))[:, 0])
    return (F.softplus(theta[:, :, 0] - true) + wrong / (classes - 1)).sum(0)
