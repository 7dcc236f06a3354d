"""Trainer ``online``: the dual-weight paper's protocol (Wang 2025, Section 4.1), usable with any
model and rule.

Batch size 1: ``iterations`` samples are drawn with replacement from the run's training pool
(the dataset's training split, of ``train_subset`` samples) from the run's seeded ``batches``
stream, so runs that share a seed (every entry of a leaderboard cell) share the pool, the initial
weights and the sample sequence. The loss is ``mse`` (``torch.nn.MSELoss``: the mean over outputs
of the squared error, no factor 1/2, as in the paper's code) or ``cross_entropy``. The model is
evaluated every ``eval_every`` iterations and at the end on the test split and on every extra
evaluation set (``noisy_test_*``); the curves' ``epoch`` is the iteration count.

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
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench_core.errors import Diverged
from bench_core.interfaces import NativeActivation, TrainingSession, constraint_hooks
from untied_plugins.dual_weight.online_form import OnlineForm
from untied_plugins.trainers import evaluate_all


class OnlineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(60_000, ge=1, description="samples drawn with replacement from the "
                            "pool, one per step (the paper: 60,000)")
    eval_every: int = Field(10_000, ge=1, description="evaluate every this many iterations "
                            "(and at the end)")
    loss: Literal["mse", "cross_entropy"] = Field(
        "mse", description="mse: mean over outputs of the squared error (nn.MSELoss); "
                           "cross_entropy: softmax cross-entropy")
    eval_batch_size: int = Field(4096, ge=1)


def sample_loss(out: Tensor, y: Tensor, loss: str) -> Tensor:
    """The training loss of one sample (``out``: (1, outputs))."""
    if loss == "mse":
        return (out - y.reshape(out.shape).to(out.dtype)).square().mean()
    return F.cross_entropy(out, y.reshape(-1))


def _eval_loss(loss: str) -> str:
    """The name :func:`untied_plugins.trainers.evaluate` knows for this loss."""
    return "mse" if loss == "mse" else "cross_entropy"


def online_form_of(rule: Any) -> OnlineForm | None:
    """The rule's :class:`OnlineForm`: its own, or that of a plain ``torch.optim.SGD`` without
    momentum (whose weight decay is ``lambda/2 ||p||^2`` on every parameter); else ``None``."""
    form = getattr(rule, "online_form", None)
    if callable(form):
        return form()
    if type(rule) is torch.optim.SGD and len(rule.param_groups) == 1:
        g = rule.param_groups[0]
        if g["momentum"] == 0 and not g["nesterov"] and not g.get("maximize", False):
            wd = float(g["weight_decay"])
            return OnlineForm(lr=float(g["lr"]), penalty=wd, penalty_norm=False, bias_decay=wd)
    return None


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
    max_group_size: int | None = None

    def group_key(self, spec: dict[str, Any]) -> str:
        dataset = {k: v for k, v in spec["dataset"].items() if k != "train_subset"}
        same = {"dataset": dataset, **{k: spec.get(k) for k in ("model", "activation",
                                                              "surrogate")}}
        return json.dumps(same, sort_keys=True, default=str)

    def fit_group(self, sessions: list[TrainingSession]) -> list[dict[str, float] | BaseException]:
        results: list[dict[str, float] | BaseException | None] = [None] * len(sessions)
        members: list[_Member] = []
        for k, session in enumerate(sessions):
            try:
                member = _Member.prepare(session)
            except Exception as exc:  # noqa: BLE001 - this run's own failure
                results[k] = exc
                continue
            if member is None:
                results[k] = _run_alone(self, session)
            else:
                member.index = k
                members.append(member)
        for batch in _compatible(members):
            if len(batch) == 1:
                results[batch[0].index] = _run_alone(self, batch[0].session)
                continue
            grouped = GroupedOnline(self, batch)
            for member, out in zip(grouped.members, grouped.run()):
                results[member.index] = out
        return results  # type: ignore[return-value]


def _run_alone(trainer: OnlineTrainer, session: TrainingSession) -> dict[str, float] | BaseException:
    try:
        return trainer.fit(session)
    except Exception as exc:  # noqa: BLE001 - the member's own failure, recorded by the runner
        return exc


class _Member:
    """One run of a group: its session, model, rule form and the model's dense layers."""

    def __init__(self, session, model, form, layers, activations) -> None:
        self.session, self.model, self.form = session, model, form
        self.layers: list[nn.Linear] = layers
        self.activations: list[NativeActivation] = activations
        self.index = -1

    @classmethod
    def prepare(cls, session: TrainingSession) -> "_Member | None":
        """Build the run's model and rule; ``None`` if they do not fit the batched kernel."""
        model = session.build_model()
        rule = session.build_rule(model)
        form = online_form_of(rule)
        if form is None or not isinstance(model, nn.Sequential):
            return None
        layers, activations = [], []
        for i, module in enumerate(model):
            if isinstance(module, nn.Flatten) and i == 0:
                continue
            if type(module) is nn.Linear and module.bias is not None:
                if len(layers) > len(activations):
                    return None  # two dense layers in a row
                layers.append(module)
            elif isinstance(module, NativeActivation) and len(activations) < len(layers):
                activations.append(module)
            else:
                return None
        if not layers or len(activations) != len(layers) - 1:
            return None  # the kernel takes linear outputs after an activation per hidden layer
        return cls(session, model, form, layers, activations)

    def signature(self) -> tuple:
        shapes = tuple(tuple(m.weight.shape) for m in self.layers)
        acts = tuple(a.activation.name for a in self.activations)
        d = self.session.data
        return (shapes, acts, d.x_train.dtype, tuple(d.x_train.shape[1:]), d.info.task,
                tuple(d.test_sets()))


def _compatible(members: list[_Member]) -> list[list[_Member]]:
    groups: dict[tuple, list[_Member]] = {}
    for m in members:
        groups.setdefault(m.signature(), []).append(m)
    return list(groups.values())


class GroupedOnline:
    """K runs of the online protocol as one batched computation (module docstring).

    The runs are ordered gradient-form first, dual-weight form second, so that each kind is
    updated on a contiguous slice of the stacked weights: only dual-weight runs pay for their
    two matrices ``W1, W2``, and only penalised runs for a norm."""

    def __init__(self, trainer: OnlineTrainer, members: list[_Member]) -> None:
        self.trainer, self.p = trainer, trainer.p
        self.members = sorted(members, key=lambda m: m.form.dual)
        members = self.members
        first = members[0]
        self.device = first.session.ctx.device
        self.act = [a.activation for a in first.activations]
        dtype = first.layers[0].weight.dtype
        K = len(members)
        self.nd = sum(not m.form.dual for m in members)     # gradient-form runs: [:nd]

        def stack(get) -> Tensor:
            return torch.stack([get(m) for m in members]).to(self.device)

        def per_run(value, runs=members) -> Tensor:
            return torch.tensor([float(value(m.form)) for m in runs], device=self.device,
                                dtype=dtype).view(-1, 1)

        n_layers = len(first.layers)
        self.w = [stack(lambda m, l=l: m.layers[l].weight.detach()) for l in range(n_layers)]
        self.b = [stack(lambda m, l=l: m.layers[l].bias.detach()) for l in range(n_layers)]
        self.lr = per_run(lambda f: f.lr)
        self.bias_decay = per_run(lambda f: f.bias_decay)
        self.any_bias_decay = bool((self.bias_decay != 0).any())
        direct, dual = members[:self.nd], members[self.nd:]
        self.decay = per_run(lambda f: f.lr * f.penalty, direct)
        self.norm_penalty = per_run(lambda f: f.penalty_norm and f.penalty > 0, direct) > 0
        self.any_decay = bool((self.decay != 0).any())
        self.any_norm = bool(self.norm_penalty.any())
        if dual:
            self.stable = per_run(lambda f: f.stabilizer_scale is not None, dual) > 0
            self.any_stable = bool(self.stable.any())
            self.scale = per_run(lambda f: f.stabilizer_scale or 0.0, dual)
            self.w1 = [w[self.nd:].clone() for w in self.w]
            self.w2 = [torch.zeros_like(w[self.nd:]) for w in self.w]
            self.gavg = [torch.ones(len(dual), w.shape[1], device=self.device, dtype=dtype)
                         for w in self.w]
        # pools of different sizes share one padded tensor; each run draws from its own
        sizes = [len(m.session.data.x_train) for m in members]
        self.pool = max(sizes)
        self.x_pool = torch.zeros(K * self.pool, first.layers[0].in_features,
                                  device=self.device, dtype=dtype)
        y0 = first.session.data.y_train
        self.y_pool = torch.zeros((K * self.pool, *y0.shape[1:]), device=self.device,
                                  dtype=y0.dtype)
        for k, m in enumerate(members):
            at = k * self.pool
            self.x_pool[at:at + sizes[k]] = m.session.data.x_train.reshape(sizes[k], -1)
            self.y_pool[at:at + sizes[k]] = m.session.data.y_train
        offsets = torch.arange(K, device=self.device) * self.pool
        order = torch.stack([trainer._indices(m.session) for m in members])
        self.order = (order + offsets.view(-1, 1)).t().contiguous()   # (T, K) rows of the pool
        self.rows = torch.arange(K, device=self.device)

    # one step for all runs: forward, backward by hand, every run's own update
    def step(self, t: int) -> Tensor:
        idx = self.order[t]
        x = self.x_pool.index_select(0, idx)                       # (K, in)
        y = self.y_pool.index_select(0, idx)
        inputs, pre = [], []
        h = x
        for l, (w, b) in enumerate(zip(self.w, self.b)):
            inputs.append(h)
            z = torch.baddbmm(b.unsqueeze(1), h.unsqueeze(1), w.transpose(1, 2)).squeeze(1)
            pre.append(z)
            h = self.act[l](z) if l < len(self.act) else z
        out = h
        if self.p.loss == "mse":
            diff = out - y.reshape(out.shape).to(out.dtype)
            loss = diff.square().mean(1)
            g = diff * (2.0 / out.shape[1])
        else:
            logp = torch.log_softmax(out, 1)
            loss = -logp.gather(1, y.view(-1, 1)).squeeze(1)
            g = logp.exp()
            g[self.rows, y] -= 1.0
        for l in range(len(self.w) - 1, -1, -1):
            g_below = (torch.bmm(g.unsqueeze(1), self.w[l]).squeeze(1)
                       * self.act[l - 1].derivative(pre[l - 1])) if l > 0 else None
            self._update(l, inputs[l], g)
            g = g_below
        return loss

    def _update(self, l: int, x: Tensor, g: Tensor) -> None:
        lr, nd, w, b = self.lr, self.nd, self.w[l], self.b[l]
        if self.any_bias_decay:
            b.addcmul_(b, lr * self.bias_decay, value=-1.0)
        b.addcmul_(g, lr, value=-1.0)
        # W - c W + u x^T: subtracting c W (rather than multiplying by a rounded 1 - c) keeps
        # each step's rounding error random instead of a systematic drift of the scale of W
        if nd:
            wd, xd = w[:nd], x[:nd].unsqueeze(1)
            if self.any_decay:
                decay = self.decay
                if self.any_norm:
                    norm = torch.linalg.vector_norm(wd, dim=(1, 2)).view(-1, 1)
                    inv = torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))
                    decay = decay * torch.where(self.norm_penalty, inv, torch.ones_like(inv))
                wd.addcmul_(wd, decay.unsqueeze(2), value=-1.0)
            wd.addcmul_((lr[:nd] * g[:nd]).unsqueeze(2), xd, value=-1.0)
        if nd == len(self.members):
            return
        gd, xd, lrd = g[nd:], x[nd:].unsqueeze(1), lr[nd:]
        mag = gd.abs()
        if self.any_stable:
            rate = lrd * torch.where(self.stable, (self.scale * mag / self.gavg[l]).clamp(max=1.0),
                                     mag)
        else:
            rate = lrd * mag
        for wk, a in ((self.w1[l], torch.where(gd < 0, rate, 0.0).clamp_(max=1.0)),
                      (self.w2[l], torch.where(gd > 0, rate, 0.0).clamp_(max=1.0))):
            a = a.unsqueeze(2)
            wk.addcmul_(wk, a, value=-1.0).addcmul_(a, xd)
        torch.sub(self.w1[l], self.w2[l], out=w[nd:])
        if self.any_stable:
            moved = self.gavg[l] * (1.0 - lrd) + lrd * mag
            self.gavg[l] = torch.where(self.stable & (gd != 0), moved, self.gavg[l])

    def _write_back(self) -> None:
        with torch.no_grad():
            for k, m in enumerate(self.members):
                for l, layer in enumerate(m.layers):
                    layer.weight.copy_(self.w[l][k])
                    layer.bias.copy_(self.b[l][k])

    def run(self) -> list[dict[str, float] | BaseException]:
        """Train; one result per run in ``self.members`` order."""
        results: list[dict[str, float] | BaseException] = [{} for _ in self.members]
        start = 0
        with torch.no_grad():
            for stop in self.trainer._checkpoints():
                loss_sum = torch.zeros(len(self.members), device=self.device)
                for t in range(start, stop):
                    loss_sum += self.step(t)
                self._write_back()
                for k, m in enumerate(self.members):
                    m.session.ctx.counters.forward(1, passes=stop - start)
                    m.session.ctx.counters.backward(1, passes=stop - start)
                    if isinstance(results[k], BaseException):
                        continue
                    try:
                        results[k] = self.trainer._evaluate(m.session, m.model, stop,
                                                            loss_sum[k] / (stop - start))
                    except Diverged as exc:
                        results[k] = exc
                start = stop
        return results
