"""SPSA in MeZO's memory-frugal form (Malladi et al. 2023, "Fine-Tuning Language Models with
Just Forward Passes"; docs/methods/perturbation.md section 3).

Per step, one direction ``z ~ N(0, I)`` over all trained parameters (``direction =
"rademacher"``: independent signs ``z_i = +-1``, Spall's original SPSA perturbation, drawn 31 per
generator output by :func:`bench_core.draws.random_signs`, about 4x cheaper per pass on the CPU)
and the two-point estimate (the paper's Definition 1, SPSA)

    g_hat = (L(theta + eps z; B) - L(theta - eps z; B)) / (2 eps) * z,

applied by ZO-SGD (Definition 2, ``theta <- theta - eta g_hat``) as MeZO's Algorithm 1 does:
``z`` is never stored. The generator state at the start of the step is the step's seed; every
pass over the parameters resets the run's ``spsa`` stream to it and regenerates ``z`` chunk by
chunk (at most ``chunk_size`` elements of one parameter tensor at a time), in place:

1. ``theta <- theta + eps z``, evaluate ``L+``;
2. ``theta <- theta - 2 eps z``, evaluate ``L-``; ``projected = (L+ - L-) / (2 eps)`` (a 0-d
   tensor, no host sync);
3. ``theta <- theta + eps z`` (restore), then ``theta <- theta - eta projected z``.

So a step holds the parameters, one chunk of the direction at a time and the activations of an
inference forward: training needs the memory of inference (measured by
``benchmarks/perturbation.py``). The restore of step 3 is exact up to float rounding: after
``+eps z``, ``-2 eps z``, ``+eps z`` each parameter is within about 1.5 units in the last place
of ``max(|theta|, |theta| + 2 eps |z|)`` of where it was (``|theta| < eps |z|`` loses low bits in
``theta + eps z`` that no later operation can recover without a stored copy: in float32,
``1e-3 + 0.25 - 0.25 != 1e-3``); MeZO's own code restores the same way. With Rademacher
directions and the plain update, step 3 is one pass, ``theta <- theta + (eps - eta projected)
z`` (the same sum rounded once instead of twice).

The update is the run's update rule, which must be ``sgd`` (a ``torch.optim.SGD``) without
gradient manipulations: its ``lr``, ``weight_decay``, ``momentum`` and ``nesterov`` are applied
here, in place, to the regenerated ``projected z`` (the rule itself never steps: it works on
``.grad``, a parameter-sized buffer MeZO avoids). ``momentum > 0`` is the ZO-SGD-MMT variant of
the zeroth-order benchmark of Zhang et al. 2024 (one buffer the size of the parameters, so no
longer the memory of inference); ``update = "sign"`` is ZO-SGD-Sign (Liu et al. 2019,
signSGD via a zeroth-order oracle): the estimate is replaced by its sign before momentum.
The logged ``train_loss`` is ``(L+ + L-) / 2``, the loss at ``theta`` up to ``O(eps^2)``.
Dropout would draw different masks in the two forwards, and batch normalisation updates its
running statistics in both: models with them get the estimate of a noisier function.
"""

from __future__ import annotations

from typing import Iterator, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from untied_plugins.perturbation.loop import LoopParams, PerturbationLoop

from bench_core.draws import random_signs
from bench_core.interfaces import TrainingSession


class SPSAParams(LoopParams):
    """Parameters of ``spsa``; the learning rate, momentum and weight decay are the run's
    ``sgd`` rule's."""

    epsilon: float = Field(1e-3, gt=0, allow_inf_nan=False,
                           description="perturbation scale eps (MeZO's default 1e-3)")
    update: Literal["sgd", "sign"] = Field(
        "sgd", description="step along the estimate (ZO-SGD) or its elementwise sign "
                           "(ZO-SGD-Sign)")
    direction: Literal["gaussian", "rademacher"] = Field(
        "gaussian", description="z ~ N(0, I) (MeZO's) or independent +-1 signs (Spall's "
                                "SPSA; drawn from packed bits, cheaper)")
    chunk_size: int = Field(2**18, ge=1, description="most direction entries drawn at once: a "
                            "parameter tensor is perturbed in chunks of this many elements, so "
                            "the step's one temporary is at most this large (float32: 1 MiB)")


def draw(p: Tensor, gen: torch.Generator, direction: str = "gaussian",
         value: float | Tensor = 1.0) -> Tensor:
    """``value z`` shaped like ``p``: ``z ~ N(0, I)`` (``value`` must be 1) or, for
    ``rademacher``, independent signs (exactly ``+-value``)."""
    if direction == "rademacher":
        if p.dtype == torch.float32:
            return random_signs(p.numel(), gen, value, device=p.device).view(p.shape)
        return random_signs(p.numel(), gen, device=p.device).view(p.shape).to(p.dtype) * value
    return torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)


def chunks(params: list[Tensor], chunk_size: int) -> Iterator[tuple[int, slice]]:
    """``(i, elements)``: the parameters' elements in the order their directions are drawn,
    tensor by tensor, at most ``chunk_size`` elements at a time (of ``params[i].view(-1)``)."""
    for i, p in enumerate(params):
        for start in range(0, p.numel(), chunk_size):
            yield i, slice(start, start + chunk_size)


@torch.no_grad()
def perturb_(params: list[Tensor], gen: torch.Generator, seed: Tensor, scale: float | Tensor,
             chunk_size: int = 2**18, direction: str = "gaussian") -> None:
    """``theta <- theta + scale z`` in place, ``z`` regenerated from the generator state
    ``seed`` chunk by chunk (MeZO's PerturbParameters)."""
    gen.set_state(seed)
    for i, elements in chunks(params, chunk_size):
        piece = params[i].view(-1)[elements]
        if direction == "rademacher":
            piece.add_(draw(piece, gen, direction, scale))
        else:
            piece.add_(draw(piece, gen), alpha=scale)


class SGDSettings:
    """The run's ``sgd`` rule's settings, to apply in place."""

    def __init__(self, rule) -> None:
        if not isinstance(rule, torch.optim.SGD) or len(rule.param_groups) != 1:
            raise ValueError(f"spsa applies the run's SGD update in place (MeZO's ZO-SGD): the "
                             f"rule must be 'sgd' without gradient manipulations, not "
                             f"{type(rule).__name__}")
        group = rule.param_groups[0]
        if group.get("dampening", 0) != 0:
            raise ValueError("spsa: SGD dampening is not supported")
        self.lr, self.momentum = float(group["lr"]), float(group["momentum"])
        self.weight_decay, self.nesterov = float(group["weight_decay"]), bool(group["nesterov"])


class SPSATrainer(PerturbationLoop):
    """Trains by MeZO's in-place SPSA with the run's SGD settings (module docstring)."""

    def prepare(self, session: TrainingSession, model: nn.Module) -> None:
        self.ctx = session.ctx
        self.sgd = SGDSettings(session.build_rule(model))
        self.gen = session.ctx.generator("spsa")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not all(p.is_contiguous() for p in self.params):
            raise ValueError("spsa perturbs parameters in place through flat views: every "
                             "trained parameter must be contiguous")
        self.momentum = ([torch.zeros_like(p) for p in self.params] if self.sgd.momentum > 0
                         else None)

    @torch.no_grad()
    def step(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        eps = self.p.epsilon
        seed = self.gen.get_state()
        perturb_(self.params, self.gen, seed, eps, self.p.chunk_size, self.p.direction)
        plus = self.batch_loss(model(xb), yb)
        perturb_(self.params, self.gen, seed, -2 * eps, self.p.chunk_size, self.p.direction)
        minus = self.batch_loss(model(xb), yb)
        self.ctx.counters.forward(len(xb), passes=2)
        self.restore_and_update_(seed, (plus - minus) / (2 * eps))
        return (plus + minus) / 2

    @torch.no_grad()
    def restore_and_update_(self, seed: Tensor, projected: Tensor) -> None:
        """``theta <- theta + eps z`` (back to theta), then the SGD step along
        ``projected z`` (or its sign), ``z`` regenerated from ``seed`` a third time."""
        sgd = self.sgd
        plain = (self.momentum is None and sgd.weight_decay == 0 and self.p.update == "sgd")
        self.gen.set_state(seed)
        if plain and self.p.direction == "rademacher":   # one pass: theta + (eps - eta c) z
            perturb_(self.params, self.gen, seed, self.p.epsilon - sgd.lr * projected,
                     self.p.chunk_size, "rademacher")
            return
        for i, elements in chunks(self.params, self.p.chunk_size):
            piece = self.params[i].view(-1)[elements]
            self._restore_and_update_chunk_(i, elements, draw(piece, self.gen, self.p.direction),
                                            projected, plain)

    def _restore_and_update_chunk_(self, i: int, elements: slice, z: Tensor, projected: Tensor,
                                   plain: bool) -> None:
        """One chunk of :meth:`restore_and_update_` (a function of its own, so that its
        direction chunk ``z`` is freed before the next one is drawn)."""
        sgd, eps = self.sgd, self.p.epsilon
        p = self.params[i].view(-1)[elements]
        p.add_(z, alpha=eps)
        if plain:
            p.addcmul_(z, projected, value=-sgd.lr)
        else:
            estimate = z.mul_(projected)
            if sgd.weight_decay:
                estimate.add_(p, alpha=sgd.weight_decay)
            if self.p.update == "sign":
                estimate.sign_()
            if self.momentum is not None:
                buf = self.momentum[i].view(-1)[elements].mul_(sgd.momentum).add_(estimate)
                estimate = estimate.add_(buf, alpha=sgd.momentum) if sgd.nesterov else buf
            p.add_(estimate, alpha=-sgd.lr)


def spsa(params: SPSAParams) -> SPSATrainer:
    """SPSA/MeZO (Malladi et al. 2023, Def. 1, Alg. 1): in-place seeded 2-point ZO-SGD."""
    return SPSATrainer(params)
