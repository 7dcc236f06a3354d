"""The forward gradient (Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without
Backpropagation"; docs/methods/perturbation.md section 2).

Per step, one tangent ``v ~ N(0, I)`` over all trained parameters (drawn from the run's seeded
``forward_gradient`` stream), the directional derivative ``d = grad f(theta) . v`` by
forward-mode differentiation (``torch.func.jvp``: the loss and ``d`` in one forward pass that
carries the tangent, never a backward pass), and the forward gradient ``g = d v`` (the paper's
Definition 1; Algorithm 1), an unbiased estimate of ``grad f`` (Theorem 1: ``E[(grad f . v) v] =
grad f`` for ``v`` of independent zero-mean unit-variance entries). ``g`` is written into each
parameter's ``.grad`` (in the tangent's own storage, no copy) and the run's update rule steps
on it, so the rule is any of the host's (the paper uses SGD: ``theta <- theta - eta g``,
Algorithm 1). The model is any module the host builds, called through
``torch.func.functional_call`` with its buffers; activations need a forward-mode derivative
(every built-in activation has one; surrogates, which only replace the backward, define none,
and a run that names one fails with a one-line error saying so).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from untied_plugins.perturbation.loop import LoopParams, PerturbationLoop

from bench_core.interfaces import TrainingSession

Params = dict[str, Tensor]


class ForwardGradientParams(LoopParams):
    """Parameters of ``forward_gradient`` (its update rule is the run's)."""


def draw_tangent(params: Params, gen: torch.Generator) -> Params:
    """``v ~ N(0, I)``, one tensor per parameter, from ``gen``."""
    return {name: torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
            for name, p in params.items()}


def forward_gradient(loss_of: Callable[[Params], Tensor], params: Params,
                     gen: torch.Generator) -> tuple[Tensor, Params]:
    """``(f(theta), (grad f(theta) . v) v)`` for one tangent ``v`` from ``gen``, by one
    forward-mode pass (``torch.func.jvp``). ``params`` are detached tensors; the estimate is
    written into the tangent's storage."""
    tangent = draw_tangent(params, gen)
    loss, derivative = jvp(loss_of, (params,), (tangent,))
    return loss, {name: v.mul_(derivative) for name, v in tangent.items()}


class ForwardGradientTrainer(PerturbationLoop):
    """Trains by the forward gradient with the run's update rule (module docstring)."""

    def prepare(self, session: TrainingSession, model: nn.Module) -> None:
        self.ctx = session.ctx
        self.rule = session.build_rule(model)
        self.gen = session.ctx.generator("forward_gradient")
        self.trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.buffers = dict(model.named_buffers())

    def step(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        def loss_of(params: Params) -> Tensor:
            return self.batch_loss(functional_call(model, (params, self.buffers), (xb,)), yb)

        primals = {name: p.detach() for name, p in self.trained.items()}
        try:
            loss, estimate = forward_gradient(loss_of, primals, self.gen)
        except NotImplementedError as exc:  # an autograd.Function without a jvp rule
            raise ValueError(f"forward_gradient needs the forward-mode derivative of every "
                             f"module; a surrogate replaces only the backward pass and has "
                             f"none: train without one (the tied activation) ({exc})") from None
        for name, p in self.trained.items():
            p.grad = estimate[name]
        self.rule.step()
        self.ctx.counters.forward(len(xb))  # one pass, the tangent carried along
        return loss


def forward_gradient_trainer(params: ForwardGradientParams) -> ForwardGradientTrainer:
    """Forward gradient (Baydin et al. 2022, Def. 1): (grad f . v) v by one jvp; the run's rule."""
    return ForwardGradientTrainer(params)
