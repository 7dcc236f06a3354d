"""Trainers: the mini-batch back-propagation loop.

Losses (``loss``):
``cross_entropy``: softmax cross-entropy on the model's outputs (logits); with a single output,
binary cross-entropy on the logit.
``mse``: ``1/2 ||y - y_hat||^2`` per sample (Troiano et al. eq. 1; the SUC's loss); class
targets become one-hot vectors, or 0/1 for a single output.

Reduction over the batch (``loss_reduction``): ``"mean"`` (torch's default) averages the
per-sample losses, ``"sum"`` adds them, as the batch update of Troiano et al. eqs. 37-38 does
(``Delta W = sum_k Delta W_k``). With plain SGD the sum is the mean with the learning rate
multiplied by the batch size, so the two readings of a paper's ``(batch size, learning rate)``
grid train very differently. Logged losses (``train_loss``, ``test_loss``) are per-sample means under either reduction, so
curves stay comparable.

Accuracy: argmax of the outputs; with a single output, ``y_hat >= 0.5`` (a logistic or step
output) for ``mse`` and ``logit >= 0`` for ``cross_entropy``.
An epoch is one pass over the training set, or ``epoch_size`` samples taken from consecutive
shuffled passes (:class:`SampleStream`): this matches a protocol's number of SGD steps when the
training set here is smaller than the paper's (e.g. ``epoch_size = 56000`` on 8,000 MNIST images
gives the steps of 56,000-image epochs; each image is then seen 7 times as often, so expect more
overfitting). Per epoch the trainer logs ``train_loss`` (per-sample mean over the epoch) and
the test metrics; the only host syncs are these once-per-epoch logs.

``direction_diagnostic = true`` also logs, per epoch, how the surrogate's weight gradients point
relative to the tied ones (``cos/<layer>``, ``sign/<layer>``, ``direction_cosine``,
``direction_sign_agreement``; see :mod:`untied_plugins.direction`, Troiano et al.
Propositions 1-3) without changing training; the final metrics get the last epoch's finite means.

``target_metric`` / ``target_value`` (:mod:`bench_core.stopping`): after each epoch's evaluation,
check the metric against the target; stop when reached (unless ``target_stop = false``) and report
``target_reached``, ``steps_to_target`` (weight updates) and ``seconds_to_target``. With
``batch_size`` >= the training-set size an epoch is one step, so the target is timed per step.
"""

from __future__ import annotations

import json
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import (DataBundle, TrainingSession, constraint_hooks,
                                   execution_option)
from bench_core.stopping import TargetStopParams, TargetWatcher
from untied_plugins.direction import MEAN_KEYS, DirectionProbe


class _BackpropOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="reduce the per-sample training losses of a batch by their mean "
                            "or their sum (Troiano et al. eqs. 37-38 sum)")
    shuffle: bool = True
    epoch_size: int | None = Field(
        None, ge=1, description="samples per epoch (default: the training set); a smaller "
                                "training set is cycled through in consecutive shuffled passes, "
                                "so a run takes the SGD steps it would take on a larger one")
    # execution options: they change how a run executes or what it logs, not its seed
    eval_batch_size: int = execution_option(2048, ge=1, description="batch size of test "
                                            "evaluation")
    direction_diagnostic: bool = execution_option(
        False, description="log surrogate-vs-tied gradient cosine and sign agreement per layer "
                           "every epoch (restores every random stream: training is unchanged)")
    compile: bool = execution_option(False, description="train through torch.compile(model) "
                                     "(runs are then trained one by one, not grouped)")


class BackpropParams(TargetStopParams, _BackpropOptions):
    """Parameters of ``backprop``: its own, then the stop-at-target option
    (:mod:`bench_core.stopping`; checked after every epoch's evaluation)."""


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


class BackpropTrainer:
    """Mini-batch back-propagation: shuffled epochs, the run's update rule, eval every epoch."""

    def __init__(self, params: BackpropParams) -> None:
        self.p = params

    def reduce(self, per_sample: Tensor) -> Tensor:
        """The batch loss from per-sample losses ``(..., B)``: their mean or their sum
        (``loss_reduction``)."""
        return per_sample.sum(-1) if self.p.loss_reduction == "sum" else per_sample.mean(-1)

    def sample_weight(self, batch_size: int) -> float:
        """d(batch loss) / d(one sample's loss), as :meth:`reduce` combines them."""
        return 1.0 if self.p.loss_reduction == "sum" else 1.0 / batch_size

    def probe(self, session: TrainingSession) -> DirectionProbe | None:
        """The run's direction diagnostic, if switched on."""
        if not self.p.direction_diagnostic:
            return None
        task = session.data.info.task
        return DirectionProbe(session, lambda out, y: self.reduce(
            sample_losses(out, y, self.p.loss, task)), self.p.batch_size)

    # grouped runs (bench_core.interfaces.GroupTrainer): see untied_plugins.grouped_backprop
    max_group_size = 64

    def group_key(self, spec: dict) -> str | None:
        from untied_plugins.grouped_backprop import NEVER_STACKED_MODELS

        if self.p.compile or self.p.target_metric is not None:
            return None  # compiled or stop-at-target runs are trained one by one
        if spec.get("model", {}).get("name") in NEVER_STACKED_MODELS:
            return None  # each run its own unit: recorded as it finishes, spread over workers
        same = {k: spec.get(k) for k in ("dataset", "model", "activation", "surrogate",
                                          "reparametrization")}
        return json.dumps({**same, "rule": spec.get("rule", {}).get("name")}, sort_keys=True,
                          default=str)

    def fit_group(self, sessions: list[TrainingSession]) -> list[dict[str, float] | BaseException]:
        from untied_plugins.grouped_backprop import fit_group

        return fit_group(self, sessions)

    def fit(self, session: TrainingSession) -> dict[str, float]:
        p, ctx, data = self.p, session.ctx, session.data
        model = session.build_model()
        rule = session.build_rule(model)
        constrain = constraint_hooks(model)
        task = data.info.task
        n = len(data.x_train)
        gen = ctx.generator("batches")
        probe = self.probe(session)
        forward = torch.compile(model) if p.compile else model
        stream = SampleStream(n, p.epoch_size or n, p.shuffle, gen, ctx.device)
        final: dict[str, float] = {}
        steps = 0
        model.train()
        watcher = TargetWatcher(p)
        summed = p.loss_reduction == "sum"
        for epoch in range(1, p.epochs + 1):
            order = stream.next_epoch()
            loss_sum = torch.zeros((), device=ctx.device)  # summed per-sample losses
            for i in range(0, len(order), p.batch_size):
                idx = order[i:i + p.batch_size]
                xb, yb = data.x_train[idx], data.y_train[idx]
                out = forward(xb)
                loss = batch_loss(out, yb, p.loss, task, p.loss_reduction)
                rule.zero_grad(set_to_none=True)
                loss.backward()
                rule.step()
                for hook in constrain:
                    hook()
                ctx.counters.forward(len(idx))
                ctx.counters.backward(len(idx))
                steps += 1
                loss_sum.add_(loss.detach(), alpha=1 if summed else len(idx))
            diagnostics = probe.measure(model) if probe is not None else {}
            final = self._log(session, model, epoch, loss_sum / len(order), diagnostics)
            if watcher.check(final, steps=steps):
                break
        return {**final, **watcher.metrics()}

    def _log(self, session: TrainingSession, model: nn.Module, epoch: int, train_loss: Tensor,
             diagnostics: dict[str, Tensor]) -> dict[str, float]:
        """Log the epoch; return its metrics plus the diagnostic means that are finite."""
        metrics = {"train_loss": train_loss,
                   **evaluate_all(model, session.data, self.p.loss, self.p.eval_batch_size,
                                  session.ctx)}
        values = session.ctx.log_epoch(epoch, diagnostics=diagnostics.keys(), **metrics,
                                       **diagnostics)
        final = {k: v for k, v in values.items() if k not in diagnostics}
        final.update({k: values[k] for k in MEAN_KEYS if k in values and math.isfinite(values[k])})
        return final


def backprop(params: BackpropParams) -> BackpropTrainer:
    """Mini-batch back-propagation for a fixed number of epochs, evaluated every epoch."""
    return BackpropTrainer(params)


@hookimpl
def register_trainers(register):
    register("backprop", backprop, params=BackpropParams)
