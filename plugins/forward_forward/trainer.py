"""The ``forward_forward`` trainer (see the package docstring for the method and its choices)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from untied_plugins.backprop.losses import SampleStream
from untied_plugins.forward_forward.goodness import (
    embedded_first_block,
    expected_ff_loss,
    ff_loss,
    goodness,
    label_goodness,
    negative_labels,
    normalise_length,
    predict,
)

from bench_core.errors import SpecError
from bench_core.interfaces import TrainingSession, constraint_hooks, execution_option
from bench_core.layered import as_blocks


class ForwardForwardParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the conformance kit: a layered model with two blocks (the first is left out of prediction)
    conformance_run: ClassVar[dict] = {"model": {"name": "mlp", "hidden": [8, 8]},
                                       "trainer": {"epochs": 2}}
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    threshold: float | None = Field(
        None, description="theta of the logistic loss on goodness (Section 2, eq. 1); none = "
                          "per block, its output values per sample (the width of a dense "
                          "block): a mean squared activity of 1")
    input_norm: Literal["rms", "unit"] = Field(
        "rms", description="each block's input divided by its root mean square (rms: length "
                           "sqrt(features)) or by its L2 length (unit); both pass on only the "
                           "orientation (Section 2.1)")
    skip_first_layer: bool = Field(
        True, description="leave the first block out of the goodness summed for prediction "
                          "(Section 3.3); needs at least two blocks")
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="reduce the per-sample losses of a batch by their mean or sum")
    shuffle: bool = True
    eval_batch_size: int = execution_option(1024, ge=1, description="samples per evaluation "
                                            "batch (each goes through once per label)")


class ForwardForwardTrainer:
    def __init__(self, params: ForwardForwardParams) -> None:
        self.p = params

    def fit(self, session: TrainingSession) -> dict[str, float]:
        p, ctx, data = self.p, session.ctx, session.data
        self.classes = self._classes(data)
        self.rms = p.input_norm == "rms"
        model = session.build_model()
        blocks = as_blocks(model)
        if p.skip_first_layer and len(blocks) < 2:
            raise SpecError("forward_forward: skip_first_layer = true needs at least two "
                            "hidden blocks (the model has one); add a hidden layer or set "
                            "trainer.skip_first_layer = false")
        rule = session.build_rule(model)
        constrain = constraint_hooks(model)
        self.scale = data.x_train.amax()  # 0-d tensor: the one-hot's value, no host read
        self.thresholds = self._thresholds(model, blocks, data.x_train[:1])
        gen = ctx.generator("forward_forward.negatives")
        n, summed = len(data.x_train), p.loss_reduction == "sum"
        stream = SampleStream(n, n, p.shuffle, ctx.generator("batches"), ctx.device)
        metrics: dict[str, float] = {}
        model.train()
        for epoch in range(1, p.epochs + 1):
            order = stream.next_epoch()
            loss_sum = torch.zeros((), device=ctx.device)
            for i in range(0, n, p.batch_size):
                idx = order[i:i + p.batch_size]
                loss = self.step(blocks, data.x_train[idx], data.y_train[idx], gen)
                rule.zero_grad(set_to_none=True)
                loss.backward()
                rule.step()
                for hook in constrain:
                    hook()
                # one pass over positive and negative data together, one backward per block
                ctx.counters.forward(len(idx), passes=2)
                ctx.counters.backward(len(idx), passes=2)
                loss_sum.add_(loss.detach(), alpha=1 if summed else len(idx))
            metrics = ctx.log_epoch(epoch, train_loss=loss_sum / n,
                                    **self.evaluate(model, blocks, session))
        return metrics

    def step(self, blocks, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """The FF loss summed over blocks on one batch (its backward reaches each block's
        parameters from its own loss only: every block's input is detached). Positive data
        (true label) and negative data (a wrong label, :func:`negative_labels`) go through as
        one batch of ``2B``, the first block's product with the image shared
        (:func:`embedded_first_block`)."""
        labels = torch.stack([y, negative_labels(y, self.classes, gen)])
        out = embedded_first_block(blocks[0], x, labels, self.classes, self.scale, self.rms)
        total = torch.zeros((), device=x.device)
        for b, (block, theta) in enumerate(zip(blocks, self.thresholds)):
            if b:
                out = block.forward(normalise_length(out.detach(), self.rms))
            g = goodness(out)
            total = total + ff_loss(g[:len(x)], g[len(x):], theta, self.p.loss_reduction)
        return total

    def evaluate(self, model, blocks, session: TrainingSession) -> dict[str, Tensor]:
        """Per evaluation set: ``<set>_accuracy`` (argmax over labels of the goodness summed
        over blocks, Section 3.3) and ``<set>_ff_loss`` (:func:`expected_ff_loss`: the training
        objective with the negative term averaged over all wrong labels). No ``<set>_loss``:
        FF has no class probabilities, so no cross-entropy comparable to back-propagation's."""
        out: dict[str, Tensor] = {}
        bs = self.p.eval_batch_size
        model.eval()
        with torch.inference_mode():
            for prefix, (x, y) in session.data.test_sets().items():
                hits = torch.zeros((), device=x.device)
                loss = torch.zeros((), device=x.device)
                for i in range(0, len(x), bs):
                    per_label = label_goodness(blocks, x[i:i + bs], self.classes, self.scale,
                                               self.rms)
                    hits += (predict(per_label, self.p.skip_first_layer) == y[i:i + bs]).sum()
                    loss += expected_ff_loss(per_label, y[i:i + bs], self.thresholds).sum()
                    session.ctx.counters.forward(len(per_label[0, 0]), passes=self.classes)
                m = max(len(x), 1)
                out[f"{prefix}_accuracy"] = hits / m
                out[f"{prefix}_ff_loss"] = loss / m
        model.train()
        return {k: v.clone() for k, v in out.items()}

    def _classes(self, data) -> int:
        info = data.info
        if info.task != "classification":
            raise SpecError("forward_forward: needs a classification dataset (a label is "
                            "embedded in the input)")
        classes = info.num_classes or info.num_outputs
        features = int(torch.Size(info.input_shape).numel())
        if classes < 2 or features < classes:
            raise SpecError(f"forward_forward: an input of {features} features is too small "
                            f"to embed {classes} labels in its first features (needs at least "
                            f"{classes}, and at least two classes)")
        return classes

    def _thresholds(self, model, blocks, probe: Tensor) -> list[float]:
        """Per block, ``threshold`` or, by default, its output values per sample (one probe
        forward, in eval mode, before training)."""
        if self.p.threshold is not None:
            return [self.p.threshold] * len(blocks)
        model.eval()
        sizes = []
        with torch.no_grad():
            for block in blocks:
                probe = block.forward(probe)
                sizes.append(float(probe[0].numel()))
        model.train()
        return sizes


def forward_forward(params: ForwardForwardParams) -> ForwardForwardTrainer:
    """Forward-Forward (Hinton 2022, Secs. 2, 3.3): per-block goodness, label in the input.

    Prediction: the label of largest goodness summed over blocks (package docstring)."""
    return ForwardForwardTrainer(params)
