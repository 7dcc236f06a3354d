"""The ``separated`` update rule: the semi-sum updates of the offsets ``q`` and angles ``d`` of
separated neurons (Podoprosvetov et al., Section 10, eqs. 17-24), composed with ``sgd`` or
``adam`` for every other parameter (``W``, ``b``, the output layer) and gradient descent for
the SoftPlus curvature ``c``.

Per neuron ``i``, from the last training forward/backward pass before ``step()``: ``a`` (the
linear activation, batch x width), ``delta`` (the per-sample error at the neuron's output,
``B dE/do_i`` for the trainer's loss ``E``, a mean over the ``B`` samples of the batch, captured
by a tensor hook: the paper's sums run over per-sample errors, and the factor ``B`` keeps
``gamma_q`` and ``gamma_d`` independent of the batch size), ``v = c (a + q)``. The batch
is split at ``v = 0`` into ``left`` (``v < 0``) and ``right`` (``v >= 0``); per side ``n`` =
samples, ``S = sum(delta)`` (eq. 18's semi-sums), and (eq. 20, the reading of docs/methods/separated.md)
``r_left = p - c d``, ``r_right = p + c d`` with ``p = ||W_i||`` (the row norm of the weights,
bias excluded; the paper's "algebraic sums" of ``p`` and ``d``, where the actual slopes of ``o``
along ``W_i / ||W_i||`` are ``p (1 -+ c d)``: the two agree when ``p = 1``):

- offset (eqs. 21-22): ``dq_side = -gamma_q S_side / (n_side r_side)``;
- angle (eq. 24): ``dd_side = -gamma_d sum_side(delta do/dd) / sum_side(|a + q|)``, with
  ``do/dd = f(v) + f(-v) - 2 f(0)`` (``|v|`` for the ReLU analog);
- both combined by the ``|S|``-weighted average of eq. 23:
  ``dq = (dq_left |S_left| + dq_right |S_right|) / (|S_left| + |S_right|)``, likewise ``dd``.

A side with no samples, with ``|r| < min_slope`` (for ``dq``; 1e-8 by default) or
with ``sum |a + q| < 1e-8`` (for ``dd``) has no defined step: it is left out of the average (its
weight is 0, so the other side's step is used alone); with no usable side, or
``S_left = S_right = 0``, the step is 0. Eq. 22 divides by the slope ``r``: when ``c d``
approaches ``p`` a side turns flat and its offset step grows without bound (we see runs diverge
from it at large ``gamma_q``); ``min_slope`` is the one safeguard offered, off by default.

Readings and departures, stated because the paper is inconsistent here (docs/methods/separated.md):

- eq. 24 as printed has ``delta o_j^(l-1)`` over ``sum(a - q)`` on one side only; we read it as
  a semi-sum gradient step in ``d`` normalised by the summed "arm lengths" ``|a + q|`` (``v = 0``
  at ``a = -q``), as docs/methods/separated.md does; the paper's remark that the arm lengths "must be multiplied
  by c" for SoftPlus is not applied (docs/methods/separated.md writes ``|a + q|``; ``gamma_d`` absorbs it).
- eqs. 21-22 model a change of ``q`` as a shift of the whole function along ``u`` (in eq. 12,
  ``q`` is the bias ``w_0``), which moves each side's outputs by ``r_side dq``. In the neuron of
  eqs. 13-15 ``q`` moves only the kink: ``o`` changes by ``+c d dq`` right of it and ``-c d dq``
  left of it (ReLU analog), so these steps are not a gradient step of the loss. We implement
  the paper's steps on ``q`` as docs/methods/separated.md states them, not a corrected version; the
  leaderboard ``podoprosvetov-approx`` measures whether they help.
- ``delta`` is the error at the output ``o`` (docs/methods/separated.md), where the paper's eq. 5 defines
  ``delta = dE/da``; option ``delta = "activation"`` takes ``dE/da`` (``= dE/do do/da``, with
  ``do/da = 1 -+ c d`` for the ReLU analog: zero left of the kink at ``c d = 1``). The paper does
  not decide between them: eq. 5 defines ``delta = dE/da``, but eqs. 21-22 change "each delta"
  by the shift of the neuron's output, which is what ``dE/do`` measures; the default keeps
  ``dE/do``.
- option ``q_step = "neuron"`` replaces a side's ``n r`` in eq. 22 by its summed true
  derivative ``sum(do/dq)``, ``do/dq = c d (f'(v) - f'(-v))`` (``-c d`` left of the kink,
  ``+c d`` right of it for the ReLU analog): the step then moves each side's summed output by
  ``-gamma_q S_side`` to first order, where the paper's ``r = p - c d`` can point the left
  side's step the wrong way. Off by default (the paper's eqs. 21-22 are the method).
- ``c`` follows plain gradient descent on ``c_raw`` (``c = 1e-4 + softplus(c_raw)``), step
  ``lr_c``; it is fixed (not a parameter) for the ReLU analog.

All steps are computed from the same forward/backward pass and from the parameter values before
any update, then applied: ``W, b`` by the base rule, ``q``, ``d`` by the semi-sum steps, ``c`` by
its gradient. Everything stays on the model's device; no host sync.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from untied_plugins.separated.neuron import SeparatedDense
from untied_plugins.backprop.rules import AdamParams, SGDParams, adam, sgd

EPS = 1e-8
"""A side whose denominator (``|r|`` or ``sum |a + q|``) is below this gives no step
(docs/methods/separated.md; ``min_slope`` raises the bound for ``|r|``)."""


class BaseSGD(SGDParams):
    """``sgd`` (with its options) as the base rule of ``separated``."""

    name: Literal["sgd"] = "sgd"


class BaseAdam(AdamParams):
    """``adam`` (with its options) as the base rule of ``separated``."""

    name: Literal["adam"] = "adam"


BASE_RULES = {"sgd": sgd, "adam": adam}


class SeparatedRuleParams(BaseModel):
    """Defaults: the step sizes chosen for the leaderboard podoprosvetov-approx on its
    development runs (leaderboards/podoprosvetov-approx/tuning.md; the paper gives none)."""

    model_config = ConfigDict(extra="forbid")
    conformance_run: ClassVar[dict] = {"model": {"name": "separated_mlp", "hidden": [8]},
                                       "activation": {"name": "relu"}}
    """The rule needs separated neurons: the conformance kit runs it on a small separated MLP."""
    base: Annotated[Union[BaseSGD, BaseAdam], Field(discriminator="name")] = Field(
        default_factory=BaseAdam, description="rule for W, b and every parameter outside the "
        "separated neurons: {name = 'sgd' | 'adam', ...its options}")
    gamma_q: float = Field(0.01, gt=0, description="semi-sum step of the offsets q (eqs. 21-23; "
                           "1 = the full correction of eq. 21 in one step)")
    gamma_d: float = Field(0.3, gt=0, description="semi-sum step of the angles d (eq. 24)")
    lr_c: float = Field(10.0, ge=0, description="gradient-descent step of c_raw (SoftPlus "
                                               "curvature c = 1e-4 + softplus(c_raw))")
    min_slope: float = Field(EPS, gt=0, description="a side with |r| below this gives no q "
                             "step (docs/methods/separated.md: 1e-8; larger bounds the 1/r of eq. 22)")
    q_step: Literal["paper", "neuron"] = Field(
        "paper", description="slope that converts a side's error sum into a q step: 'paper' = "
        "eqs. 20-22's r = p -+ c d (q shifts the whole function); 'neuron' = the side's summed "
        "do/dq = c d (f'(v) - f'(-v)) of eqs. 13-14 (q moves only the kink)")
    delta: Literal["output", "activation"] = Field(
        "output", description="the per-sample error the semi-sums add up: 'output' = dE/do "
        "(the neuron's output), 'activation' = dE/da (eq. 5's definition of delta)")


def semi_sum_steps(a: Tensor, delta: Tensor, *, q: Tensor, c: Tensor, d: Tensor, p: Tensor,
                   do_dd: Tensor, gamma_q: float, gamma_d: float, min_slope: float = EPS,
                   do_dq: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(dq, dd)`` per neuron (module docstring) from ``a``, the per-sample errors ``delta`` and
    ``do/dd`` (each batch x width) and the per-neuron ``q``, ``c``, ``d`` and ``p = ||W_i||``
    (width). Both sides are computed at once: index 0 = left, 1 = right.

    With ``do_dq`` (batch x width, option ``q_step = "neuron"``) a side's ``n r`` of eq. 22 is
    replaced by its ``sum(do/dq)``: the step that changes the side's summed output by
    ``-gamma_q S`` to first order, whichever way the neuron's true derivative points."""
    shifted = a + q
    right = c * shifted >= 0
    on_side = torch.stack((~right, right)).to(a.dtype)                    # (2, N, H)
    terms = torch.stack((torch.ones_like(a), delta, delta * do_dd, shifted.abs()))
    n, sums, moments, arms = (on_side * terms.unsqueeze(1)).sum(2)          # each (2, H)
    has = n > 0
    if do_dq is None:
        r = torch.stack((p - c * d, p + c * d))                            # eq. 20
        slopes, usable = n * r, has & (r.abs() >= min_slope)
    else:
        slopes = (on_side * do_dq).sum(1)
        usable = has & (slopes.abs() >= min_slope * n)
    dq = _weighted(-gamma_q * sums, slopes, usable, sums)
    dd = _weighted(-gamma_d * moments, arms, has & (arms >= EPS), sums)
    return dq, dd


def _weighted(numerators: Tensor, denominators: Tensor, usable: Tensor, sums: Tensor) -> Tensor:
    """Eq. 23: each side's step ``numerator / denominator`` averaged with weights ``|S_side|``;
    an unusable side gets weight 0 (and no inf/NaN from its division)."""
    steps = numerators / denominators.masked_fill(~usable, 1.0)
    weights = sums.abs().masked_fill(~usable, 0.0)
    total = weights.sum(0)
    return (steps * weights).sum(0) / total.masked_fill(total == 0, 1.0)  # 0 when no weight


class _Capture:
    """Keeps a layer's last training ``a``, ``delta = dE/do`` and ``delta_a = dE/da`` through
    module and tensor hooks (only under autograd: evaluation passes leave them alone)."""

    def __init__(self, layer: SeparatedDense) -> None:
        self.a: Tensor | None = None
        self.delta: Tensor | None = None
        self.delta_a: Tensor | None = None
        self.handles = [layer.linear.register_forward_hook(self._keep_a),
                        layer.register_forward_hook(self._watch_output)]

    def _keep_a(self, module: nn.Module, inputs, a: Tensor) -> None:
        if torch.is_grad_enabled() and a.requires_grad:
            self.a = a.detach()
            a.register_hook(self._keep_delta_a)

    def _keep_delta_a(self, grad: Tensor) -> None:
        self.delta_a = grad.detach()

    def _watch_output(self, module: nn.Module, inputs, o: Tensor) -> None:
        if torch.is_grad_enabled() and o.requires_grad:
            o.register_hook(self._keep_delta)

    def _keep_delta(self, grad: Tensor) -> None:
        self.delta = grad.detach()

    def clear(self) -> None:
        self.a = self.delta = self.delta_a = None


class _ParameterSet:
    """The parameters the base rule trains, shaped like the ``model`` its factory expects."""

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        self._parameters = parameters

    def parameters(self):
        return iter(self._parameters)


class SemiSumRule:
    """The ``separated`` rule (module docstring): base rule for ``W``, ``b``, semi-sum steps for
    ``q``, ``d``, gradient descent for a learned ``c``."""

    def __init__(self, params: SeparatedRuleParams, model: nn.Module, ctx) -> None:
        self.p = params
        self.layers = [m for m in model.modules() if isinstance(m, SeparatedDense)]
        if not self.layers:
            raise ValueError("rule 'separated' needs a model with separated neurons "
                             "(e.g. model = separated_mlp); this model has none")
        own = {id(w) for layer in self.layers for w in layer.neuron_parameters()}
        rest = [w for w in model.parameters() if id(w) not in own]
        self.base = BASE_RULES[params.base.name](params.base, model=_ParameterSet(rest), ctx=ctx)
        self.captures = [_Capture(layer) for layer in self.layers]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)
        for layer in self.layers:
            for w in layer.neuron_parameters():
                w.grad = None

    @torch.no_grad()
    def step(self) -> None:
        steps = [self._semi_sum(layer, cap) for layer, cap in zip(self.layers, self.captures)]
        self.base.step()
        for layer, cap, step in zip(self.layers, self.captures, steps):
            if step is not None:
                layer.q.add_(step[0])
                layer.d.add_(step[1])
            if layer.learns_c and layer.c_raw.grad is not None and self.p.lr_c > 0:
                layer.c_raw.sub_(layer.c_raw.grad, alpha=self.p.lr_c)
            cap.clear()

    def _semi_sum(self, layer: SeparatedDense, cap: _Capture) -> tuple[Tensor, Tensor] | None:
        error = cap.delta if self.p.delta == "output" else cap.delta_a
        if cap.a is None or error is None:
            return None  # no training pass reached this layer since the last step
        batch = error.shape[0]  # the loss is a mean over the batch: per-sample errors
        a, delta = cap.a.flatten(0, -2), error.flatten(0, -2) * batch
        c = layer.c
        v = c * (a + layer.q)
        do_dq = None
        if self.p.q_step == "neuron":  # do/dq = d c shape'(v), eqs. 13-14
            with torch.enable_grad():
                v_ = v.detach().requires_grad_(True)
                slope, = torch.autograd.grad(layer.shape(v_).sum(), v_)
            do_dq = layer.d * c * slope
        return semi_sum_steps(a, delta, q=layer.q, c=c, d=layer.d,
                              p=torch.linalg.vector_norm(layer.linear.weight, dim=1),
                              do_dd=layer.shape(v), gamma_q=self.p.gamma_q,
                              gamma_d=self.p.gamma_d, min_slope=self.p.min_slope, do_dq=do_dq)


def separated(params: SeparatedRuleParams, *, model, ctx) -> SemiSumRule:
    """Semi-sum steps for q, d (Podoprosvetov eqs. 17-24); sgd/adam for W, b; gradient descent for c."""
    return SemiSumRule(params, model, ctx)
