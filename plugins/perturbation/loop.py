"""What the perturbation trainers share: their parameters and the epoch loop of the ``backprop``
trainer (seeded shuffled mini-batches, the per-sample mean training loss, evaluation of every
test set once per epoch), with the weight update of each step left to the trainer."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from untied_plugins.backprop.losses import SampleStream, batch_loss, evaluate_all

from bench_core.interfaces import TrainingSession, constraint_hooks, execution_option


class LoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="reduce the per-sample training losses of a batch by their mean "
                            "or their sum")
    shuffle: bool = True
    eval_batch_size: int = execution_option(2048, ge=1, description="batch size of test "
                                            "evaluation")


class PerturbationLoop:
    """Mini-batch epochs like the ``backprop`` trainer's; :meth:`prepare` sets a run up and
    :meth:`step` updates the weights on one batch and returns the batch loss (a 0-d tensor,
    reduced as ``loss_reduction`` says), without a host sync."""

    def __init__(self, params: LoopParams) -> None:
        self.p = params

    def prepare(self, session: TrainingSession, model: nn.Module) -> None:
        raise NotImplementedError

    def step(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        raise NotImplementedError

    def batch_loss(self, out: Tensor, yb: Tensor) -> Tensor:
        """The training loss of a batch's outputs, reduced as ``loss_reduction`` says."""
        return batch_loss(out, yb, self.p.loss, self.task, self.p.loss_reduction)

    def fit(self, session: TrainingSession) -> dict[str, float]:
        p, ctx, data = self.p, session.ctx, session.data
        self.task = data.info.task
        model = session.build_model()
        self.prepare(session, model)
        constrain = constraint_hooks(model)
        n = len(data.x_train)
        stream = SampleStream(n, n, p.shuffle, ctx.generator("batches"), ctx.device)
        summed = p.loss_reduction == "sum"
        metrics: dict[str, float] = {}
        model.train()
        for epoch in range(1, p.epochs + 1):
            order = stream.next_epoch()
            loss_sum = torch.zeros((), device=ctx.device)
            for i in range(0, len(order), p.batch_size):
                idx = order[i:i + p.batch_size]
                loss = self.step(model, data.x_train[idx], data.y_train[idx])
                for hook in constrain:
                    hook()
                loss_sum.add_(loss, alpha=1 if summed else len(idx))
            metrics = ctx.log_epoch(epoch, train_loss=loss_sum / n,
                                    **evaluate_all(model, data, p.loss, p.eval_batch_size, ctx))
        return metrics
