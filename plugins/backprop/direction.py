"""Direction diagnostic: does a surrogate change the direction of the weight updates, or only
their magnitude? (Troiano et al., Section 3, Propositions 1-3: ``dL/dW_l = delta_l a_{l-1}^T``,
and ``g`` only rescales ``delta_l``.)

On one fixed batch (the first ``batch_size`` training samples) and the training loss, the
weight gradient of every layer (each parameter with ``dim > 1``, named by its module path) is
computed twice with the run's current weights: through the run's own backward and through its
*tied twin*, ``build_model(tied=True)``: the same forward with every change to the backward
taken out, so its gradient is the true back-propagation gradient of the same weights (the
surrogate replaced by the native ``f'``; a reparametrization that changes the backward only,
such as feedback alignment, left out: it declares ``tied``,
:func:`bench_core.hookspecs.register_reparametrizations`; one that changes the forward, such as
weight standardisation, kept). Per layer it reports

``cos/<layer>``
    cosine similarity of the two flattened gradients; NaN when either gradient is all zero
    (the direction is undefined, e.g. a step activation's tied gradient, f' = 0);
``sign/<layer>``
    share of elements whose signs agree, an element where both gradients are exactly 0 counting
    as agreeing (both leave that weight alone) and one where only one of them is 0 as not;

and the means over layers ``direction_cosine`` (over the layers with a finite cosine only; NaN
if there is none) and ``direction_sign_agreement``.

The diagnostic must not change training, so it never runs the run's model itself: it keeps two
*probe* models built once by the session (``build_model()`` and ``build_model(tied=True)``,
same architecture) and loads the run's current state into them each time. The probes run in
``train()`` mode like training, but BatchNorm running statistics they update are the probes'
own (overwritten at the next load), the run model's ``.grad`` and any module hooks an update
rule installed on it are untouched (gradients come from ``torch.autograd.grad`` on the probes),
nothing is counted in ``ctx.counters``, and every random stream is restored afterwards
(``ctx.preserve_random_state``; both passes start from the same state, so stochastic layers draw
the same masks in both).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from bench_core.interfaces import TrainingSession

LossFn = Callable[[Tensor, Tensor], Tensor]
MEAN_KEYS = ("direction_cosine", "direction_sign_agreement")


def layer_name(parameter_name: str) -> str:
    """``"3.weight"`` -> ``"3"`` (the module path); other parameter names are kept whole."""
    return parameter_name.removesuffix(".weight")


def weight_gradients(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn
                     ) -> dict[str, Tensor]:
    """``dL/dW`` of every trainable parameter with ``dim > 1`` of ``model`` on ``(x, y)``, keyed
    by layer name, without touching ``.grad`` (a parameter the loss does not reach gets 0)."""
    weights = {layer_name(n): w for n, w in model.named_parameters()
               if w.dim() > 1 and w.requires_grad}
    if not weights:
        return {}
    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
    return {name: torch.zeros_like(w) if g is None else g
            for (name, w), g in zip(weights.items(), grads)}


def compare_directions(surrogate: dict[str, Tensor], tied: dict[str, Tensor]
                       ) -> dict[str, Tensor]:
    """Per-layer cosine and sign agreement of two gradient sets, and their means (module
    docstring), all as 0-d tensors on the gradients' device (no host sync); nothing for a model
    without weight matrices."""
    metrics: dict[str, Tensor] = {}
    if not surrogate:
        return metrics
    cosines, signs = [], []
    for name, a in surrogate.items():
        a, b = a.flatten(), tied[name].flatten()
        cosine = (a @ b) / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
        sign = (torch.sign(a) == torch.sign(b)).to(a.dtype).mean()
        metrics[f"cos/{name}"], metrics[f"sign/{name}"] = cosine, sign
        cosines.append(cosine)
        signs.append(sign)
    cos = torch.stack(cosines)
    metrics["direction_cosine"] = torch.nanmean(torch.where(cos.isfinite(), cos, torch.nan))
    metrics["direction_sign_agreement"] = torch.stack(signs).mean()
    return metrics


class DirectionProbe:
    """Measures, on demand, how the run's surrogate gradients point relative to the tied ones
    (module docstring)."""

    def __init__(self, session: TrainingSession, loss_fn: LossFn, batch_size: int) -> None:
        self.ctx = session.ctx
        self.loss_fn = loss_fn
        self.x = session.data.x_train[:batch_size]
        self.y = session.data.y_train[:batch_size]
        with self.ctx.preserve_random_state():
            self.surrogate_model = session.build_model()
            self.tied_model = session.build_model(tied=True)

    def _gradients(self, probe: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
        missing, _ = probe.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(f"direction diagnostic: the probe model has state the run's "
                               f"model lacks: {', '.join(missing)}")
        probe.train()
        with self.ctx.preserve_random_state():
            return weight_gradients(probe, self.x, self.y, self.loss_fn)

    def measure(self, model: nn.Module) -> dict[str, Tensor]:
        """Cosine and sign agreement per layer and their means, for ``model``'s current state."""
        state = model.state_dict()
        return compare_directions(self._gradients(self.surrogate_model, state),
                                  self._gradients(self.tied_model, state))
