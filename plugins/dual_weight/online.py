"""Trainer ``online``: the dual-weight paper's protocol (Wang 2025, Section 4.1), usable with any
model and rule.

Batch size 1: ``iterations`` samples are drawn with replacement from the run's training pool
(the dataset's training split, of ``train_subset`` samples) from the run's seeded ``batches``
stream, so runs that share a seed (every entry of a leaderboard cell) share the pool, the initial
weights and the sample sequence. The loss is ``mse`` (``torch.nn.MSELoss``: the mean over outputs
of the squared error, no factor 1/2, as in the paper's code) or ``cross_entropy``. The model is
evaluated every ``eval_every`` iterations and at the end on the test split and on every extra
evaluation set (``noisy_test_*``); the curves' ``epoch`` is the iteration count.
``loss_reduction`` (``"mean"`` or ``"sum"`` over the batch, as for ``backprop``) is accepted so
that a spec can state it for every trainer alike; at batch size 1 the mean and the sum of one
per-sample loss are the same number, so it does not change training.

**Grouped runs.** Runs of the same dataset, model and activation that differ by seed, pool size,
rule or rate are trained as one computation: the weights of K runs are stacked on a leading
axis, each step gathers one sample per run, runs the forward and the backward (by hand, through
each dense layer and the activation's derivative ``f'``) with batched matrix products, and
applies every run's own update in one rank-one form (:class:`OnlineForm`: SGD, the ``l2``
penalty, the dual-weight rule and its stabiliser). This needs a model made of ``nn.Flatten``,
``nn.Linear`` and tied activations (:class:`bench_core.interfaces.NativeActivation`) and a rule
with ``online_form()`` (``sgd`` without momentum or gradient manipulations qualifies); any other
run of a group is trained alone by :meth:`OnlineTrainer.fit`, which drives the rule through
``zero_grad``/``backward``/``step`` like any trainer. Both paths give the same numbers to float
tolerance (tested).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from untied_plugins.backprop.losses import evaluate_all
from untied_plugins.dual_weight.grouped import GroupedOnline, Member

from bench_core.grouping import fit_in_stacks
from bench_core.interfaces import TrainingSession, constraint_hooks, execution_option


class OnlineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the conformance kit (untied check-plugin): a short schedule on regression data
    conformance_run: ClassVar[dict] = {
        "trainer": {"iterations": 300, "eval_every": 100},
        "dataset": {"name": "kit_blobs", "task": "regression", "classes": 1}}
    iterations: int = Field(60_000, ge=1, description="samples drawn with replacement from the "
                            "pool, one per step (the paper: 60,000)")
    eval_every: int = execution_option(10_000, ge=1, description="evaluate every this many "
                                       "iterations (and at the end)")
    loss: Literal["mse", "cross_entropy"] = Field(
        "mse", description="mse: mean over outputs of the squared error (nn.MSELoss); "
                           "cross_entropy: softmax cross-entropy")
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="over the batch; the same at batch size 1 (as for backprop)")
    eval_batch_size: int = execution_option(4096, ge=1, description="batch size of evaluation")


def sample_loss(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """The training loss of one sample (``out``: (1, outputs))."""
    if loss == "mse":
        return (out - y.reshape(out.shape).to(out.dtype)).square().mean()
    return F.cross_entropy(out, y.reshape(-1))


def _eval_loss(loss: str) -> str:
    """The name :func:`untied_plugins.backprop.losses.evaluate` knows for this loss."""
    return "mse" if loss == "mse" else "cross_entropy"


class OnlineTrainer:
    """Batch-size-1 training for a number of iterations, with grouped runs (module docstring)."""

    def __init__(self, params: OnlineParams) -> None:
        self.p = params

    # ---- one run ------------------------------------------------------------------------
    def _indices(self, session: TrainingSession) -> Tensor:
        n = len(session.data.x_train)
        if n == 0:
            raise ValueError("online: the training pool is empty")
        return torch.randint(n, (self.p.iterations,), device=session.ctx.device,
                             generator=session.ctx.generator("batches"))

    def _evaluate(self, session: TrainingSession, model: nn.Module, step: int,
                  train_loss: Tensor) -> dict[str, float]:
        metrics = evaluate_all(model, session.data, _eval_loss(self.p.loss),
                               self.p.eval_batch_size, session.ctx)
        return session.ctx.log_epoch(step, train_loss=train_loss, **metrics)

    def _checkpoints(self) -> list[int]:
        every, total = self.p.eval_every, self.p.iterations
        return sorted({*range(every, total + 1, every), total})

    def fit(self, session: TrainingSession) -> dict[str, float]:
        ctx, data, p = session.ctx, session.data, self.p
        model = session.build_model()
        rule = session.build_rule(model)
        constrain = constraint_hooks(model)
        order = self._indices(session)
        model.train()
        final: dict[str, float] = {}
        start = 0
        for stop in self._checkpoints():
            loss_sum = torch.zeros((), device=ctx.device)
            for t in range(start, stop):
                i = order[t:t + 1]
                loss = sample_loss(model(data.x_train[i]), data.y_train[i], p.loss)
                rule.zero_grad(set_to_none=True)
                loss.backward()
                rule.step()
                for hook in constrain:
                    hook()
                loss_sum += loss.detach()
            ctx.counters.forward(1, passes=stop - start)
            ctx.counters.backward(1, passes=stop - start)
            final = self._evaluate(session, model, stop, loss_sum / (stop - start))
            start = stop
        return final

    # ---- grouped runs -------------------------------------------------------------------
    max_group_size: int | None = 40
    """Runs per group. The runs of a group on the same split share its test sets (the image
    datasets build them with :func:`bench_core.data.prepared_split`), but run seeds are derived
    per grid cell, so each pool size and seed has its own split (Fashion-MNIST: ~130 MB with the
    noisy copy and the raw training part); ``untied run --group-size`` lowers it."""

    def group_key(self, spec: dict[str, Any]) -> str:
        dataset = {k: v for k, v in spec["dataset"].items() if k != "train_subset"}
        same = {"dataset": dataset, **{k: spec.get(k) for k in ("model", "activation",
                                                              "surrogate", "reparametrization")}}
        return json.dumps(same, sort_keys=True, default=str)

    def fit_group(self, sessions: list[TrainingSession]) -> list[dict[str, float] | BaseException]:
        def train_stack(members: list[Member]) -> list:
            grouped = GroupedOnline(self, members)
            return list(zip(grouped.members, grouped.run()))

        return fit_in_stacks(sessions, Member.prepare, Member.signature, train_stack, self.fit,
                             lambda member: member.session)
