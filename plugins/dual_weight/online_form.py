"""The per-sample update of a dense layer that the ``online`` trainer can batch across runs.

A rule that exposes ``online_form() -> OnlineForm`` declares that, at batch size 1, its update
of every dense layer (weight ``W`` of shape (out, in), bias ``b``, input ``x``, and
``g = dE/dz`` the error at the layer's pre-activation ``z = W x + b``) is, row by row::

    W = W1 - W2                                     (W2 stays 0 unless ``dual``)
    dual:      a = lr * |g|                         (Wang 2025, eqs. 15-17)
               a = lr * min(scale * |g| / G, 1)     (stabilised, Appendix B; G per neuron)
               W1 <- W1 (1 - a [g < 0]) + a [g < 0] x
               W2 <- W2 (1 - a [g > 0]) + a [g > 0] x
    otherwise: W  <- W - lr (g x^T + penalty * dP/dW)
               P = ||W||_F (``penalty_norm``: gradient W / ||W||) or 1/2 ||W||_F^2 (gradient W)
    every rule: b <- b (1 - lr * bias_decay) - lr * g

and that every other parameter is updated by plain SGD. The online trainer then trains many
such runs as one batched computation (grouped runs); a rule without ``online_form`` is still
trained by the online trainer, one run at a time through ``zero_grad``/``step``. A third-party
rule may return an :class:`OnlineForm` too; it must describe exactly what its ``step`` does at
batch size 1 (the grouped-equals-ungrouped test of the online trainer checks the built-ins).

The grouped computation replaces the rule: its ``step`` is never called there. A rule that hooks
the model's modules to do its work (the dual-weight rule captures each dense layer's input and
error) offers ``remove_hooks()``, which the grouped path calls before it proves the model plain
(:func:`bench_core.grouping.plain_module`); any hook that remains, someone else's, still keeps
the run out of the group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OnlineForm:
    lr: float
    dual: bool = False
    stabilizer_scale: float | None = None
    penalty: float = 0.0
    penalty_norm: bool = True
    bias_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.stabilizer_scale is not None and not self.dual:
            raise ValueError("stabilizer_scale applies to dual-weight forms only")
        if self.dual and self.penalty:
            raise ValueError("a dual-weight form takes no weight penalty")


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
