"""A toy third-party plugin whose modules report their own per-epoch measurements
(``epoch_measurements()``, :func:`bench_core.interfaces.module_measurements`), for the test of
that host capability. No built-in method is involved.

``toy_weight_norms``: wraps every ``nn.Linear`` of a model in a module that computes what the
layer computes and reports ``weight_norm`` (its weight's Frobenius norm) and ``always_nan``
(a measurement that is undefined: it must not stop the run as a divergence would).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from bench_core.hookspecs import hookimpl


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reporting(nn.Module):
    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def epoch_measurements(self) -> dict[str, torch.Tensor]:
        return {"weight_norm": torch.linalg.vector_norm(self.inner.weight),
                "always_nan": torch.tensor(float("nan"))}


def toy_weight_norms(params, *, model, ctx):
    """Every dense layer reports its weight norm each epoch."""
    for name, layer in [(n, m) for n, m in model.named_children() if type(m) is nn.Linear]:
        setattr(model, name, Reporting(layer))
    return model


@hookimpl
def register_reparametrizations(register):
    register("toy_weight_norms", toy_weight_norms, description="dense layers report ||W||")
