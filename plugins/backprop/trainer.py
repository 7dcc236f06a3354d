"""Trainers: the mini-batch back-propagation loop.

Losses (``loss``):
``cross_entropy``: softmax cross-entropy on the model's outputs (logits); with a single output,
binary cross-entropy on the logit.
``mse``: ``1/2 ||y - y_hat||^2`` per sample (the SUC's loss, Troiano et al. Section 3); class
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

Modules that report their own per-epoch measurements (``epoch_measurements()``,
:func:`bench_core.interfaces.module_measurements`) are logged every epoch too, and their means
over modules join the final metrics (e.g. the feedback-alignment family's ``alignment_angle``).

``direction_diagnostic = true`` also logs, per epoch, how the surrogate's weight gradients point
relative to the tied ones (``cos/<layer>``, ``sign/<layer>``, ``direction_cosine``,
``direction_sign_agreement``; see :mod:`untied_plugins.backprop.direction`, Troiano et al.
Propositions 1-3) without changing training; the final metrics get the last epoch's finite means.

``lr_milestones`` / ``lr_gamma``: a step schedule (torch's ``MultiStepLR``, stepped once per
epoch): after each listed epoch every learning rate of the rule is multiplied by ``lr_gamma``
(e.g. BioTorch's benchmark: ``[50, 75]`` and 0.1 over 100 epochs, so epochs 51-75 train at a
tenth of the rate). Needs a rule with torch's ``param_groups`` (``sgd``, ``adam``).

``best_metric`` (e.g. ``test_accuracy``): also report its best value over the epochs,
``best_<metric>``, and the epoch it came from, ``best_<metric>_epoch`` (best by the name's
direction, :func:`bench_core.specs.metrics.default_direction`). This is a protocol that selects
the epoch on the evaluated split itself (as BioTorch's benchmark does): the value is optimistic,
and a spec that uses it says so.

``target_metric`` / ``target_value`` (:mod:`bench_core.stopping`): after each epoch's evaluation,
check the metric against the target; stop when reached (unless ``target_stop = false``) and report
``target_reached``, ``steps_to_target`` (weight updates) and ``seconds_to_target``. With
``batch_size`` >= the training-set size an epoch is one step, so the target is timed per step.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from untied_plugins.backprop.direction import MEAN_KEYS, DirectionProbe
from untied_plugins.backprop.grouped import fit_group
from untied_plugins.backprop.losses import (
    SampleStream,
    batch_loss,
    evaluate_all,
    sample_losses,
)

from bench_core.interfaces import (
    TrainingSession,
    constraint_hooks,
    execution_option,
    module_measurements,
)
from bench_core.specs.metrics import default_direction
from bench_core.stopping import TargetStopParams, TargetWatcher


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
    lr_milestones: list[int] = Field(
        default_factory=list, description="epochs after which every learning rate is "
                                          "multiplied by lr_gamma (a step schedule, torch's "
                                          "MultiStepLR); empty: a constant rate")
    lr_gamma: float = Field(0.1, gt=0, description="the factor of each lr_milestones step")
    # execution options: they change how a run executes or what it logs, not its seed
    best_metric: str | None = execution_option(
        None, min_length=1, description="a logged metric (e.g. test_accuracy) whose best value "
                                        "over the epochs is also reported, as best_<metric> and "
                                        "best_<metric>_epoch (epoch selected on that split)")
    eval_batch_size: int = execution_option(2048, ge=1, description="batch size of test "
                                            "evaluation")
    direction_diagnostic: bool = execution_option(
        False, description="log surrogate-vs-tied gradient cosine and sign agreement per layer "
                           "every epoch (restores every random stream: training is unchanged)")
    compile: bool = execution_option(False, description="train through torch.compile(model) "
                                     "(runs are then trained one by one, not grouped)")
    autocast: Literal["none", "bfloat16"] = execution_option(
        "none", description="mixed precision: the training forward and loss under "
        "torch.autocast(dtype=bfloat16) on the run's device (weights, gradients and updates stay "
        "float32; evaluation stays float32); float16 is not offered: it needs loss scaling, "
        "which update rules do not do. Runs are then trained one by one, not grouped")


class BackpropParams(TargetStopParams, _BackpropOptions):
    """Parameters of ``backprop``: its own, then the stop-at-target option
    (:mod:`bench_core.stopping`; checked after every epoch's evaluation)."""


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

    # grouped runs (bench_core.interfaces.GroupTrainer): see untied_plugins.backprop.grouped
    max_group_size = 64

    def group_key(self, spec: dict) -> str | None:
        """Runs that may share a stack (models that declare ``stackable = False`` are never
        grouped: the host sees to it, :func:`bench_core.execution.runner.form_groups`)."""
        if (self.p.compile or self.p.autocast != "none" or self.p.target_metric is not None
                or self.p.lr_milestones or self.p.best_metric is not None):
            return None  # compiled, mixed-precision, stop-at-target, scheduled or best-epoch
            # runs: one by one
        same = {k: spec.get(k) for k in ("dataset", "model", "activation", "surrogate",
                                          "reparametrization")}
        return json.dumps({**same, "rule": spec.get("rule", {}).get("name")}, sort_keys=True,
                          default=str)

    def fit_group(self, sessions: list[TrainingSession]) -> list[dict[str, float] | BaseException]:
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
        schedule = StepSchedule(rule, p.lr_milestones, p.lr_gamma)
        best = BestEpoch(p.best_metric)
        summed = p.loss_reduction == "sum"
        mixed = p.autocast != "none"
        for epoch in range(1, p.epochs + 1):
            order = stream.next_epoch()
            loss_sum = torch.zeros((), device=ctx.device)  # summed per-sample losses
            for i in range(0, len(order), p.batch_size):
                idx = order[i:i + p.batch_size]
                xb, yb = data.x_train[idx], data.y_train[idx]
                with (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if mixed
                      else contextlib.nullcontext()):
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
            schedule.epoch_done(epoch)
            best.update(epoch, final)
            if watcher.check(final, steps=steps):
                break
        return {**final, **best.metrics(), **watcher.metrics()}

    def _log(self, session: TrainingSession, model: nn.Module, epoch: int, train_loss: Tensor,
             diagnostics: dict[str, Tensor]) -> dict[str, float]:
        """Log the epoch; return its metrics plus the diagnostic means that are finite (the
        direction diagnostic's and those of the modules' own measurements,
        :func:`bench_core.interfaces.module_measurements`)."""
        metrics = {"train_loss": train_loss,
                   **evaluate_all(model, session.data, self.p.loss, self.p.eval_batch_size,
                                  session.ctx)}
        measured = module_measurements(model)
        diagnostics = {**diagnostics, **measured}
        values = session.ctx.log_epoch(epoch, diagnostics=diagnostics.keys(), **metrics,
                                       **diagnostics)
        final = {k: v for k, v in values.items() if k not in diagnostics}
        means = [*MEAN_KEYS, *(k for k in measured if "/" not in k)]
        final.update({k: values[k] for k in means if k in values and math.isfinite(values[k])})
        return final


class StepSchedule:
    """``lr_milestones``: multiply every learning rate of ``rule`` by ``gamma`` after each listed
    epoch (1-based; torch's ``MultiStepLR`` stepped at each epoch's end)."""

    def __init__(self, rule, milestones: list[int], gamma: float) -> None:
        self.milestones, self.gamma = set(milestones), gamma
        self.groups = getattr(rule, "param_groups", None)
        if self.milestones and self.groups is None:
            raise ValueError(f"lr_milestones: the update rule {type(rule).__name__} has no "
                             "param_groups (torch's learning rates) to decay; use sgd or adam")

    def epoch_done(self, epoch: int) -> None:
        if epoch in self.milestones:
            for group in self.groups:
                group["lr"] *= self.gamma


class BestEpoch:
    """``best_metric``: the best logged value of one metric over the epochs and its epoch."""

    def __init__(self, metric: str | None) -> None:
        self.metric, self.value, self.epoch = metric, None, 0
        self.higher = metric is not None and default_direction(metric) == "higher"

    def update(self, epoch: int, logged: dict[str, float]) -> None:
        if self.metric is None:
            return
        if self.metric not in logged:
            raise ValueError(f"best_metric {self.metric!r} is not logged by this run (logged: "
                             f"{', '.join(sorted(logged))})")
        value = logged[self.metric]
        if self.value is None or (value > self.value if self.higher else value < self.value):
            self.value, self.epoch = value, epoch

    def metrics(self) -> dict[str, float]:
        if self.metric is None or self.value is None:
            return {}
        return {f"best_{self.metric}": self.value, f"best_{self.metric}_epoch": float(self.epoch)}


def backprop(params: BackpropParams) -> BackpropTrainer:
    """Mini-batch back-propagation for a fixed number of epochs, evaluated every epoch."""
    return BackpropTrainer(params)
