"""Grouped runs of the ``backprop`` trainer: K runs that differ only by seed or by scalar
hyper-parameters of their rule, trained as one stacked computation.

A run qualifies when its model is an ``nn.Sequential`` of (a leading ``nn.Flatten`` and)
``nn.Linear`` layers and activation modules that declare ``elementwise = True``, every one of
them provably plain (:func:`bench_core.grouping.plain_module`: exact type, no hook, no
overridden ``forward``, no parametrization: a method that changes a layer's backward trains
alone, never as back-propagation in a stack) (they act on
every element alone and deterministically, so one module can serve a stack of runs:
:class:`bench_core.interfaces.NativeActivation` and the deterministic surrogates), and its rule
is a plain ``torch.optim.SGD`` or ``torch.optim.Adam`` (the ``sgd``/``adam`` rules without
gradient manipulations). The runs' weights are stacked on a leading axis (``(K, out, in)``),
each step gathers every run's own mini-batch (from its own seeded ``batches`` stream), the
forward pass is one batched matrix product per layer and autograd gives every run's gradients
at once; the optimizers' updates are written out as torch's single-tensor SGD and Adam with one
hyper-parameter per run. When every activation module also gives its backward factor
(``local_gradient``), the backward pass is written out too (``dL/dW = delta^T h`` per layer),
which saves autograd's bookkeeping on these small models. Every epoch the weights are copied
back into each run's own model,
which is evaluated (and probed by the direction diagnostic) exactly as a lone run is. Any other
run of a group is trained alone by :meth:`BackpropTrainer.fit`.

Layers of other types stack when their type says how (:func:`bench_core.grouping.stack_rule`:
a ``stack`` classmethod and a ``stack_signature``), e.g. the feedback-alignment family's dense
layers; a stack holding one is trained through autograd (its backward is the layer's own).

Not grouped, and why: convolutional models (LeNet5, CNN: compute-bound, so stacking K of them
gains little on a CPU; a ``torch.func.vmap`` path would be the way on a GPU), BatchNorm (running
statistics under a stacked batch), BinaryConnect weights (a constraint after every step), the
jamming surrogates (they normalise over the whole tensor and draw from each run's own
generator) and rules with hooks or gradient manipulations (``dual_weight``, clipping, noise).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bench_core.errors import Diverged
from bench_core.grouping import (
    fit_in_stacks,
    global_module_hooks,
    plain_module,
    plain_sequence,
    stack_rule,
)
from bench_core.interfaces import TrainingSession

GATHER_BYTES = 32 * 2**20
"""Inputs gathered ahead per stack (all runs): a few batches to a whole epoch of small data."""


class StackedMember:
    """One run: its session, model, rule and the model's layers as a list of operations."""

    def __init__(self, session: TrainingSession, model: nn.Sequential, rule: Any,
                 ops: list[tuple[str, Any]]) -> None:
        self.session, self.model, self.rule, self.ops = session, model, rule, ops

    @classmethod
    def prepare(cls, session: TrainingSession) -> "StackedMember | None":
        model = session.build_model()
        rule = session.build_rule(model)
        if type(rule) not in (torch.optim.SGD, torch.optim.Adam) or len(rule.param_groups) != 1:
            return None
        group = rule.param_groups[0]
        if group.get("maximize") or group.get("amsgrad") or group.get("differentiable"):
            return None
        chain = plain_sequence(model)
        if chain is None or global_module_hooks():
            return None
        ops: list[tuple[str, Any]] = []
        for i, module in enumerate(chain):
            if plain_module(module, nn.Flatten) and i == 0:
                continue
            if plain_module(module, nn.Linear):
                ops.append(("linear", module))
            elif stack_rule(module) is not None:
                ops.append(("layer", module))
            elif getattr(module, "elementwise", False) and not list(module.parameters()) \
                    and plain_module(module):
                ops.append(("act", module))
            else:
                return None
        if not any(kind in ("linear", "layer") for kind, _ in ops):
            return None
        return cls(session, model, rule, ops)

    def signature(self) -> tuple:
        data = self.session.data
        shapes = tuple((k, tuple(m.weight.shape), m.bias is not None) if k == "linear"
                       else (k, type(m), m.stack_signature()) if k == "layer"
                       else (k, type(m).__name__, repr(m)) for k, m in self.ops)
        return (shapes, type(self.rule).__name__, tuple(data.x_train.shape),
                tuple(data.x_test.shape), data.x_train.dtype, tuple(data.test_sets()))


class StackedOptimizer:
    """torch's single-tensor SGD (momentum, dampening, Nesterov, weight decay) or Adam, with one
    value of every hyper-parameter per run, on stacked parameters ``(K, ...)``."""

    def __init__(self, params: list[Tensor], rules: list[Any]) -> None:
        self.params = params
        self.adam = type(rules[0]) is torch.optim.Adam
        groups = [r.param_groups[0] for r in rules]
        dev, dtype = params[0].device, params[0].dtype

        def per_run(key, fn=float) -> Tensor:
            return torch.tensor([fn(g[key]) for g in groups], device=dev, dtype=dtype)

        self.lr = per_run("lr")
        self.wd = per_run("weight_decay")
        self.any_wd = any(g["weight_decay"] != 0 for g in groups)   # from Python: no sync
        self.state: list[dict[str, Tensor]] = [{} for _ in params]
        self.step_count = 0
        if self.adam:
            self.beta1 = per_run("betas", lambda b: b[0])
            self.beta2 = per_run("betas", lambda b: b[1])
            self.eps = per_run("eps")
            self.betas = [g["betas"] for g in groups]
        else:
            self.momentum = per_run("momentum")
            self.dampening = per_run("dampening")
            self.nesterov = per_run("nesterov") > 0
            self.any_momentum = any(g["momentum"] != 0 for g in groups)

    @staticmethod
    def _shape(t: Tensor, like: Tensor) -> Tensor:
        return t.view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        for p, state in zip(self.params, self.state):
            grad = p.grad
            if grad is None:
                continue
            if self.any_wd:
                grad = grad + self._shape(self.wd, p) * p
            if self.adam:
                self._adam(p, grad, state)
            else:
                self._sgd(p, grad, state)

    def _sgd(self, p: Tensor, d_p: Tensor, state: dict[str, Tensor]) -> None:
        if self.any_momentum:
            m = self._shape(self.momentum, p)
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d_p.clone()
            else:
                buf.mul_(m).add_((1 - self._shape(self.dampening, p)) * d_p)
            nesterov = self._shape(self.nesterov, p)
            d_p = torch.where(m != 0, torch.where(nesterov, d_p + m * buf, buf), d_p)
        p.sub_(self._shape(self.lr, p) * d_p)

    def _adam(self, p: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        step = self.step_count
        b1, b2 = self._shape(self.beta1, p), self._shape(self.beta2, p)
        state["exp_avg"].lerp_(grad, 1 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad * (1 - b2))
        corr1 = torch.tensor([1 - b[0] ** step for b in self.betas], device=p.device,
                             dtype=p.dtype)
        corr2_sqrt = torch.tensor([(1 - b[1] ** step) ** 0.5 for b in self.betas],
                                  device=p.device, dtype=p.dtype)
        step_size = self._shape(self.lr / corr1, p)
        denom = (state["exp_avg_sq"].sqrt() / self._shape(corr2_sqrt, p)).add_(
            self._shape(self.eps, p))
        p.sub_(step_size * state["exp_avg"] / denom)


class StackedBackprop:
    """K runs of the ``backprop`` protocol as one computation (module docstring)."""

    def __init__(self, trainer, members: list[StackedMember]) -> None:
        self.trainer, self.p, self.members = trainer, trainer.p, members
        first = members[0]
        self.device = first.session.ctx.device
        self.task = first.session.data.info.task
        self.weights: list[Tensor] = []
        self.biases: list[Tensor | None] = []
        self.ops: list[tuple[str, Any]] = []
        self.layers: list[Any] = []
        for j, (kind, module) in enumerate(first.ops):
            if kind == "act":
                self.ops.append(("act", module))
                continue
            if kind == "layer":     # a type that says how it stacks (stack_rule)
                layer = stack_rule(module)([m.ops[j][1] for m in members])
                self.ops.append(("layer", layer))
                self.layers.append(layer)
                continue
            w = torch.stack([m.ops[j][1].weight.detach() for m in members]).requires_grad_()
            b = (torch.stack([m.ops[j][1].bias.detach() for m in members]).requires_grad_()
                 if module.bias is not None else None)
            self.ops.append(("linear", (w, b)))
            self.weights.append(w)
            self.biases.append(b)
        params = self.weights + [b for b in self.biases if b is not None] + \
            [p for layer in self.layers for p in layer.parameters()]
        self.optimizer = StackedOptimizer(params, [m.rule for m in members])
        self.x = torch.stack([m.session.data.x_train.flatten(1) for m in members])
        self.y = torch.stack([m.session.data.y_train for m in members])

    def forward(self, h: Tensor, saved: list[Tensor] | None = None) -> Tensor:
        """The stacked forward pass; ``saved`` collects every op's input (manual backward)."""
        for kind, op in self.ops:
            if saved is not None:
                saved.append(h)
            if kind in ("act", "layer"):
                h = op(h)
            else:
                w, b = op
                h = (torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)) if b is not None
                     else torch.bmm(h, w.transpose(1, 2)))
        return h

    def manual_step(self, xb: Tensor, yb: Tensor, loss_name: str, weight: float) -> Tensor:
        """Forward, backward by hand and the optimizer's step; returns each run's batch loss.
        ``weight``: d(batch loss)/d(sample loss) (1/B for a mean, 1 for a sum)."""
        from untied_plugins.backprop.losses import sample_loss_gradient, sample_losses

        with torch.no_grad():
            saved: list[Tensor] = []
            out = self.forward(xb, saved)
            losses = self.trainer.reduce(sample_losses(out, yb, loss_name, self.task))
            delta = sample_loss_gradient(out, yb, loss_name, self.task) * weight
            grads: dict[int, Tensor] = {}
            for (kind, op), h in zip(reversed(self.ops), reversed(saved)):
                if kind == "act":
                    delta = delta * op.local_gradient(h)
                    continue
                w, b = op
                grads[id(w)] = torch.bmm(delta.transpose(1, 2), h)
                if b is not None:
                    grads[id(b)] = delta.sum(1)
                delta = torch.bmm(delta, w)
            for p in self.optimizer.params:
                p.grad = grads.get(id(p))
        self.optimizer.step()
        return losses

    def _write_back(self) -> None:
        with torch.no_grad():
            for k, m in enumerate(self.members):
                linears = [module for kind, module in m.ops if kind == "linear"]
                for layer, w, b in zip(linears, self.weights, self.biases):
                    layer.weight.copy_(w[k])
                    if b is not None:
                        layer.bias.copy_(b[k])
        for layer in self.layers:
            layer.write_back()

    def run(self) -> list[dict[str, float] | BaseException]:
        from untied_plugins.backprop.losses import SampleStream, sample_losses

        p, K = self.p, len(self.members)
        n = self.x.shape[1]
        streams = [SampleStream(n, p.epoch_size or n, p.shuffle,
                                m.session.ctx.generator("batches"), self.device)
                   for m in self.members]
        probes = [self.trainer.probe(m.session) for m in self.members]
        summed = p.loss_reduction == "sum"
        results: list[dict[str, float] | BaseException] = [{} for _ in self.members]
        rows = torch.arange(K, device=self.device).unsqueeze(1)
        manual = not self.layers and all(callable(getattr(op, "local_gradient", None))
                                         for kind, op in self.ops if kind == "act")
        # gathering many batches at once saves two indexing kernels per step; `span` (a multiple
        # of the batch size) keeps the gathered inputs near GATHER_BYTES
        row_bytes = K * self.x[0, 0].numel() * self.x.element_size()
        span = p.batch_size * max(1, GATHER_BYTES // max(1, row_bytes * p.batch_size))
        for epoch in range(1, p.epochs + 1):
            order = torch.stack([s.next_epoch() for s in streams])
            size = order.shape[1]
            loss_sum = torch.zeros(K, device=self.device)     # summed per-sample losses
            for i in range(0, size, p.batch_size):
                if i % span == 0:   # the next `span` samples of every run, gathered at once
                    ahead = order[:, i:i + span]
                    x_span, y_span = self.x[rows, ahead], self.y[rows, ahead]
                j = i % span
                xb, yb = x_span[:, j:j + p.batch_size], y_span[:, j:j + p.batch_size]
                b = xb.shape[1]
                if manual:
                    losses = self.manual_step(xb, yb, p.loss, self.trainer.sample_weight(b))
                else:
                    per_sample = sample_losses(self.forward(xb), yb, p.loss, self.task)
                    losses = self.trainer.reduce(per_sample)          # (K,)
                    for w in self.optimizer.params:
                        w.grad = None
                    losses.sum().backward()
                    self.optimizer.step()
                loss_sum.add_(losses.detach(), alpha=1 if summed else b)
            self._write_back()
            batches = [min(p.batch_size, size - i) for i in range(0, size, p.batch_size)]
            for k, m in enumerate(self.members):
                for b in batches:
                    m.session.ctx.counters.forward(b)
                    m.session.ctx.counters.backward(b)
                if isinstance(results[k], BaseException):
                    continue
                try:
                    diagnostics = probes[k].measure(m.model) if probes[k] is not None else {}
                    results[k] = self.trainer._log(m.session, m.model, epoch,
                                                   loss_sum[k] / size, diagnostics)
                except Diverged as exc:
                    results[k] = exc
        return results


def fit_group(trainer, sessions: list[TrainingSession]) -> list[dict[str, float] | BaseException]:
    """The ``backprop`` trainer's ``fit_group``: stack what qualifies, train the rest alone."""

    def train_stack(members: list[StackedMember]) -> list:
        return list(zip(members, StackedBackprop(trainer, members).run()))

    return fit_in_stacks(sessions, StackedMember.prepare, StackedMember.signature, train_stack,
                         trainer.fit, lambda member: member.session)
