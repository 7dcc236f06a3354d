"""Weight-update rules: plain SGD (with momentum and weight decay) and Adam, each with the
composable gradient manipulations of Troiano et al. (Section 2, eqs. 17-21; docs/methods/backprop.md
section 5).

Both rules share :class:`GradientManipulationParams`. With every manipulation off (the
defaults) a rule is the plain torch optimizer, so specs that name none of them keep their
meaning, behaviour and speed. Otherwise :class:`ManipulatedGradients` wraps the optimizer and,
at each ``step()``, rewrites the loss gradients in place in this fixed order:

1. ``centralize`` (gradient centralisation, Yong et al. 2020; eq. 21): for every weight with
   ``dim > 1``, subtract from each output unit's gradient its mean over that unit's inputs
   (all dims but the first). First because it is defined on the raw loss gradient.
2. ``grad_scale`` (eq. 18): ``g <- s * g``.
3. ``grad_noise_std`` (eq. 19): ``g <- g + zeta``, ``zeta ~ N(0, sigma^2)`` per element. After
   scaling, so sigma is the absolute noise level of the gradient the optimizer sees.
4. ``grad_keep_prob`` (eq. 20): ``g <- g * M / p``, ``M ~ Bernoulli(p)`` per element. Kept
   elements are rescaled by ``1/p`` (inverted dropout), so ``E[g~] = g``: dropout only adds
   variance and does not also shrink the expected step by ``p``, which would confound it with
   the learning rate. The paper's unscaled ``g * M`` is ``grad_keep_prob = p`` together with
   ``grad_scale = p``. After noise, so a dropped element is exactly zero.
5. ``clip_norm`` (eq. 17): ``g <- g / max(1, ||g|| / theta)`` with ``||g||`` the global L2 norm
   over all parameters (torch's ``clip_grad_norm_``, which adds 1e-6 to the norm). Last, so the
   bound ``||g|| <= theta`` holds for the gradient actually used.

The optimizer then applies its own weight decay, momentum or Adam moments to the manipulated
gradient (the decay term is not manipulated). Note that Adam is invariant to ``grad_scale`` up
to ``eps``. Noise and dropout masks come from the run's seeded ``rule`` stream
(``ctx.generator("rule")`` on the gradients' device), never from the global RNG.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class GradientManipulationParams(BaseModel):
    """Gradient manipulations shared by every rule (all off by default)."""

    model_config = ConfigDict(extra="forbid")
    clip_norm: float | None = Field(None, gt=0, description="global gradient-norm threshold "
                                    "theta (eq. 17); None: no clipping")
    grad_scale: float = Field(1.0, gt=0, description="gradient scale factor s (eq. 18)")
    grad_noise_std: float = Field(0.0, ge=0, description="std sigma of added Gaussian gradient "
                                  "noise (eq. 19)")
    grad_keep_prob: float = Field(1.0, gt=0, le=1, description="gradient dropout: keep each "
                                  "element with probability p, rescaled by 1/p (eq. 20)")
    centralize: bool = Field(False, description="gradient centralisation of weights with "
                             "dim > 1 (eq. 21)")

    def manipulates(self) -> bool:
        """Whether any manipulation is on (else the plain optimizer is used)."""
        return (self.clip_norm is not None or self.grad_scale != 1 or self.grad_noise_std > 0
                or self.grad_keep_prob < 1 or self.centralize)


# Each rule's parameters are its optimizer's own plus the shared manipulations. Pydantic orders
# fields from the last base to the first, so listing the manipulations first among the bases
# puts the optimizer's own (lr, ...) first in `untied list` and in error messages.
class _SGDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.01, gt=0, description="learning rate eta")
    momentum: float = Field(0.0, ge=0, lt=1, description="heavy-ball momentum")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty coefficient (decoupled: no)")
    nesterov: bool = False


class _AdamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class SGDParams(GradientManipulationParams, _SGDOptions):
    """Parameters of ``sgd``: SGD's own, then the gradient manipulations."""


class AdamParams(GradientManipulationParams, _AdamOptions):
    """Parameters of ``adam``: Adam's own, then the gradient manipulations."""


def _draw_like(grads: list[Tensor], sample: Callable[[int, Tensor], Tensor]) -> list[Tensor]:
    """One random tensor per gradient, drawn as a single flat sample per (device, dtype) group
    (one kernel launch instead of one per parameter); ``sample(numel, like)`` draws it."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, g in enumerate(grads):
        groups.setdefault((g.device, g.dtype), []).append(i)
    out: list[Tensor | None] = [None] * len(grads)
    for members in groups.values():
        sizes = [grads[i].numel() for i in members]
        flat = sample(sum(sizes), grads[members[0]])
        for i, chunk in zip(members, flat.split(sizes)):
            out[i] = chunk.view_as(grads[i])
    return out  # type: ignore[return-value]


class ManipulatedGradients:
    """A torch optimizer whose gradients are manipulated before every step (module docstring
    gives the order). Exposes ``zero_grad``, ``step``, ``param_groups`` and the state dict of
    the wrapped optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: GradientManipulationParams,
                 ctx) -> None:
        self.optimizer = optimizer
        self.p = params
        self.ctx = ctx

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _generator(self, device: torch.device) -> torch.Generator:
        """The run's ``rule`` stream on ``device`` (the run's own generator when the gradients
        live on the run's device, as they do unless a model spreads over several devices)."""
        run = self.ctx.device
        if device.type == run.type and run.index in (None, device.index):
            return self.ctx.generator("rule")
        return self.ctx.generator("rule", device)

    def _parameters(self) -> list[Tensor]:
        return [w for group in self.optimizer.param_groups for w in group["params"]
                if w.grad is not None]

    def manipulate(self) -> None:
        """Rewrite the gradients in place (centralise -> scale -> noise -> dropout -> clip)."""
        weights = self._parameters()
        if not weights:
            return
        grads = [w.grad for w in weights]
        p = self.p
        if p.centralize:
            for g in grads:
                if g.dim() > 1:
                    g.sub_(g.mean(dim=tuple(range(1, g.dim())), keepdim=True))
        if p.grad_scale != 1:
            torch._foreach_mul_(grads, p.grad_scale)
        if p.grad_noise_std > 0:
            noise = _draw_like(grads, lambda n, like: torch.randn(
                n, generator=self._generator(like.device), device=like.device, dtype=like.dtype))
            torch._foreach_add_(grads, noise, alpha=p.grad_noise_std)
        if p.grad_keep_prob < 1:
            keep = p.grad_keep_prob
            masks = _draw_like(grads, lambda n, like: (torch.rand(
                n, generator=self._generator(like.device), device=like.device, dtype=like.dtype)
                < keep).to(like.dtype).mul_(1.0 / keep))
            torch._foreach_mul_(grads, masks)
        if p.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(weights, p.clip_norm, foreach=True)

    def step(self) -> Any:
        self.manipulate()
        return self.optimizer.step()


def _with_manipulations(optimizer: torch.optim.Optimizer, params: GradientManipulationParams,
                        ctx):
    return ManipulatedGradients(optimizer, params, ctx) if params.manipulates() else optimizer


def sgd(params: SGDParams, *, model, ctx):
    """SGD: w <- w - lr * (grad + weight_decay * w); optional momentum, gradient manipulations."""
    if params.nesterov and params.momentum == 0:
        raise ValueError("nesterov needs momentum > 0")
    optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                                weight_decay=params.weight_decay, nesterov=params.nesterov)
    return _with_manipulations(optimizer, params, ctx)


def adam(params: AdamParams, *, model, ctx):
    """Adam (Kingma & Ba 2015), with optional gradient manipulations."""
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr,
                                 betas=(params.beta1, params.beta2), eps=params.eps,
                                 weight_decay=params.weight_decay)
    return _with_manipulations(optimizer, params, ctx)
