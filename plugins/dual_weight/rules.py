"""The dual-weight update rule of Wang (2025) and the paper's L2 baseline, for the dense layers
of any model (docs/methods/dual-weight.md).

Each dense layer (``nn.Linear``) keeps two matrices, ``W1`` (what the neuron should respond to)
and ``W2`` (what it should not); the model's own weight holds ``W = W1 - W2``, so the forward
pass and inference cost are unchanged. At construction ``W1`` is the model's initial weight and
``W2 = 0`` (the paper initialises ``W1`` He-normal: use ``model = {name = "mlp", init =
"he_normal"}``, which also gives the SGD baseline the same start). Per neuron ``i`` and sample
``x``, with ``g_i = dE/dz_i`` the error at the pre-activation (it includes ``f'(z)``):

* ``g_i < 0``: ``W1_i <- W1_i (1 - eta |g_i|) + x eta |g_i|``   (eq. 15)
* ``g_i > 0``: ``W2_i <- W2_i (1 - eta |g_i|) + x eta |g_i|``   (eq. 16)
* ``g_i = 0``: no change                                         (eq. 17)

``dual_weight_stable`` (Appendix B) uses the rate ``eta * min(0.1 |g_i| / G_i, 1)`` with ``G_i`` a
per-neuron moving average of ``|g_i|`` (initially 1), updated after the weights and only where
``g_i != 0``: ``G_i <- G_i (1 - eta) + eta |g_i|``. Biases (and any parameter that is not a dense
weight) follow plain SGD at the same ``eta``, as in the paper.

The rule reads each dense layer's input and the error at its output through forward hooks and
tensor hooks it installs on the model; it never changes the model's structure.

**Mini-batch form** (beyond the paper, which trains at batch size 1). With rates
``a_bi = eta |g_bi|`` of the samples ``b`` of a batch, each row moves towards the rate-weighted
mean of the batch's inputs: ``W1_i <- W1_i (1 - A_i) + sum_b a_bi x_b`` over the samples with
``g_bi < 0``, ``A_i = sum_b a_bi`` (``W2`` likewise for ``g_bi > 0``). This is the sequence of the
per-sample updates to first order in ``eta`` (``prod_b (1 - a_bi) = 1 - A_i + O(eta^2)``), exactly
what a summed loss gives; ``g`` is the gradient of the trainer's batch loss, so under a
mean-reduced loss each ``a_bi`` carries a factor ``1/B`` and the step is that of the batch's mean
signal, as plain SGD's is. ``A_i`` is capped at 1, so that ``W1_i`` stays a weighted average of
inputs (Appendix C); at batch size 1 and ``eta |g| <= 1`` the form is eqs. 15-17 exactly. The
stabiliser divides by ``G_i`` before any sample of the batch updates it; ``G_i`` then moves once,
towards the mean ``|g_bi|`` over the batch's samples with ``g_bi != 0``.

``l2``: SGD on the loss plus ``lambda * ||W||_F`` summed over the weight matrices (parameters with
two or more dimensions), the penalty of the paper's code (the norm, not its square; gradient
``lambda W / ||W||``, 0 at ``W = 0``). ``squared = true`` gives ``lambda/2 ||W||^2`` instead (eq. 18,
classic weight decay). Works under any trainer that calls ``zero_grad``/``backward``/``step``.
"""

from __future__ import annotations

from functools import partial

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn.utils import parametrize
from untied_plugins.dual_weight.online_form import OnlineForm


class DualWeightParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0, description="eta: the rate of eqs. 15-16 and of the biases' SGD")


class DualWeightStableParams(DualWeightParams):
    stabilizer_scale: float = Field(0.1, gt=0, description="the 0.1 of Appendix B's rate")


class L2Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-3, gt=0, description="SGD learning rate")
    penalty: float = Field(0.01, ge=0, description="lambda of lambda * ||W|| per weight matrix")
    squared: bool = Field(False, description="penalise lambda/2 ||W||^2 instead of lambda ||W||")


def dense_layers(model: nn.Module, rule: str) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{rule}: the model has no dense (nn.Linear) layer to update")
    if any(callable(getattr(m, "constrain_", None)) for m in layers):
        raise ValueError(f"{rule}: BinaryConnect layers are not supported (their forward uses "
                         f"sign(W), not W1 - W2)")
    if any(parametrize.is_parametrized(m, "weight") for m in layers):
        raise ValueError(f"{rule}: the dense weights are re-parametrised (computed from other "
                         f"parameters at every forward), but this rule writes W = W1 - W2 into "
                         f"them itself: drop the run's reparametrization")
    return layers


class DualWeightRule:
    """``W = W1 - W2`` per dense layer, updated by eqs. 15-17 (or Appendix B); SGD elsewhere."""

    def __init__(self, model: nn.Module, lr: float, stabilizer_scale: float | None = None) -> None:
        self.lr, self.scale = lr, stabilizer_scale
        self.layers = dense_layers(model, "dual_weight")
        self.w1 = {m: m.weight.detach().clone() for m in self.layers}
        self.w2 = {m: torch.zeros_like(m.weight) for m in self.layers}
        self.gavg = ({m: torch.ones(m.out_features, device=m.weight.device,
                                    dtype=m.weight.dtype) for m in self.layers}
                     if stabilizer_scale is not None else {})
        dense_weights = {id(m.weight) for m in self.layers}
        self.others = [p for p in model.parameters() if id(p) not in dense_weights]
        self.params = list(model.parameters())
        self._inputs: dict[nn.Module, Tensor] = {}
        self._errors: dict[nn.Module, Tensor] = {}
        self.handles = [m.register_forward_hook(self._capture) for m in self.layers]
        with torch.no_grad():
            for m in self.layers:
                m.weight.copy_(self.w1[m] - self.w2[m])

    def online_form(self) -> OnlineForm:
        return OnlineForm(lr=self.lr, dual=True, stabilizer_scale=self.scale)

    def remove_hooks(self) -> None:
        """Drop the capture hooks (the grouped online path computes the update itself)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _capture(self, module: nn.Linear, inputs, output: Tensor) -> None:
        if torch.is_grad_enabled() and output.requires_grad:
            self._inputs[module] = inputs[0].detach()
            output.register_hook(partial(self._store_error, module))

    def _store_error(self, module: nn.Linear, grad: Tensor) -> None:
        self._errors[module] = grad.detach()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for m in self.layers:
            g = self._errors.pop(m, None)
            x = self._inputs.pop(m, None)
            if g is None or x is None:
                continue  # the layer took no part in this loss
            self._update_layer(m, x.reshape(-1, m.in_features), g.reshape(-1, m.out_features))
        for p in self.others:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)

    def _update_layer(self, m: nn.Linear, x: Tensor, g: Tensor) -> None:
        magnitude = g.abs()
        if self.scale is None:
            rate = self.lr * magnitude
        else:
            rate = self.lr * (self.scale * magnitude / self.gavg[m]).clamp_(max=1.0)
        for w, side in ((self.w1[m], g < 0), (self.w2[m], g > 0)):
            a = rate * side                                     # (B, out) per-sample rates
            total = a.sum(0)
            shrink = total.clamp(min=1.0)                       # cap A_i at 1 (convex combination)
            # W - A W + sum_b a_b x_b, written as a subtraction so that rounding does not
            # drift the scale of W systematically (1 - A rounds the same way every step)
            w.addcmul_(w, (total / shrink).unsqueeze(1), value=-1.0).addmm_((a / shrink).t(), x)
        torch.sub(self.w1[m], self.w2[m], out=m.weight.data)
        if self.scale is not None:
            active = (g != 0).to(g.dtype)
            count = active.sum(0)
            mean_mag = (magnitude * active).sum(0) / count.clamp(min=1.0)
            moved = self.gavg[m] * (1.0 - self.lr) + self.lr * mean_mag
            self.gavg[m] = torch.where(count > 0, moved, self.gavg[m])


class L2NormSGD:
    """SGD with ``lambda * ||W||_F`` (or ``lambda/2 ||W||^2``) added per weight matrix."""

    def __init__(self, model: nn.Module, lr: float, penalty: float, squared: bool) -> None:
        self.lr, self.penalty, self.squared = lr, penalty, squared
        self.params = list(model.parameters())
        self.matrices = [p for p in self.params if p.dim() >= 2]
        self.optimizer = torch.optim.SGD(self.params, lr=lr)

    def online_form(self) -> OnlineForm:
        return OnlineForm(lr=self.lr, penalty=self.penalty, penalty_norm=not self.squared)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        if self.penalty:
            for w in self.matrices:
                if w.grad is None:
                    continue
                if self.squared:
                    w.grad.add_(w, alpha=self.penalty)
                else:
                    norm = torch.linalg.vector_norm(w)
                    scale = torch.where(norm > 0, self.penalty / norm, torch.zeros_like(norm))
                    w.grad.addcmul_(w, scale)
        self.optimizer.step()


def dual_weight(params: DualWeightParams, *, model, ctx):
    """Dual-weight rule W = W1 - W2 (Wang 2025, eqs. 15-17); biases by SGD."""
    return DualWeightRule(model, params.lr)


def dual_weight_stable(params: DualWeightStableParams, *, model, ctx):
    """Dual-weight rule with the Appendix B stabiliser (rate scaled by a moving average of |g|)."""
    return DualWeightRule(model, params.lr, params.stabilizer_scale)


def l2(params: L2Params, *, model, ctx):
    """SGD with the penalty lambda * ||W|| on weight matrices (Wang 2025's L2 baseline)."""
    return L2NormSGD(model, params.lr, params.penalty, params.squared)
