"""The family's reparametrizations: each replaces every ``nn.Linear`` and ``nn.Conv2d`` of a
built model by a :mod:`.layers` twin with the same forward and parameters and the method's
backward. All declare ``tied``: the tied twin (the direction diagnostic's true gradient) is the
model unchanged. Random matrices come from the run's streams ``feedback_alignment``,
``direct_feedback_alignment`` and ``sign_symmetry`` (drawn at build time, so every build of a
run draws the same), ``sign_symmetry_batchwise`` for the per-batch magnitudes.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from untied_plugins.feedback_alignment.feedback import (
    DirectFeedback,
    FeedbackInit,
    OutputError,
    RandomFeedback,
    SignFeedback,
    SignMagnitude,
)
from untied_plugins.feedback_alignment.layers import FeedbackConv2d, FeedbackLinear

TARGETS: dict[type, type] = {nn.Linear: FeedbackLinear, nn.Conv2d: FeedbackConv2d}


class FeedbackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    init: FeedbackInit = Field(
        "torch", description="scale a of the random feedback U(-a, a): 'torch' a = 1/sqrt(fan_in) "
                             "(W's default init), 'xavier_uniform' a = sqrt(6/(fan_in + fan_out)) "
                             "(BioTorch's)")


class SignSymmetryParams(FeedbackParams):
    magnitude: SignMagnitude = Field(
        "uniform", description="|B|: 'uniform' (uSF, Liao et al.), 'batchwise_random' (brSF: "
                               "redrawn every mini-batch) or 'fixed_random' (frSF: drawn once)")


def replace_layers(model: nn.Module, method: str,
                   make_feedback: Callable[[int, int, nn.Module], nn.Module]) -> nn.Module:
    """Replace each exact ``nn.Linear`` / ``nn.Conv2d`` of ``model`` (module order) by its
    feedback twin; ``make_feedback(index, count, layer)`` gives the layer's feedback."""
    found = [(name, m) for name, m in model.named_modules() if type(m) in TARGETS]
    odd = [name or type(m).__name__ for name, m in model.named_modules()
           if isinstance(m, tuple(TARGETS)) and type(m) not in TARGETS]
    if odd:
        raise ValueError(f"{method}: layers of a derived type are not supported "
                         f"({', '.join(odd)}, e.g. BinaryConnect weights)")
    if not found:
        raise ValueError(f"{method}: the model has no nn.Linear or nn.Conv2d layer")
    for k, (name, layer) in enumerate(found):
        twin = TARGETS[type(layer)](layer, make_feedback(k, len(found), layer))
        if not name:
            return twin
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, twin)
    return model


def feedback_alignment(params: FeedbackParams, *, model, ctx, tied=False):
    """Feedback alignment (Lillicrap et al. 2016): a fixed random ``B`` per layer in place of
    ``W`` in the backward pass, ``delta_{l-1} = (B_l^T delta_l) o f'(a_{l-1})``."""
    if tied:
        return model
    gen = ctx.generator("feedback_alignment", device="cpu")
    return replace_layers(model, "feedback_alignment",
                          lambda k, n, layer: RandomFeedback(layer.weight.detach(), gen,
                                                                params.init))


def direct_feedback_alignment(params: FeedbackParams, *, model, ctx, tied=False):
    """Direct feedback alignment (Noekland 2016): the output error ``e`` reaches every hidden
    layer through its own fixed random ``B_l``, ``delta a_l = (B_l e) o f'(a_l)``."""
    if tied:
        return model
    gen = ctx.generator("direct_feedback_alignment", device="cpu")
    shared = OutputError()
    return replace_layers(model, "direct_feedback_alignment",
                          lambda k, n, layer: DirectFeedback(shared, k == n - 1, gen,
                                                                params.init))


def sign_symmetry(params: SignSymmetryParams, *, model, ctx, tied=False):
    """Sign symmetry (Liao, Leibo & Poggio 2016; Moskovitz et al. 2018): ``B = sign(W) o M`` in
    place of ``W`` in the backward pass, ``M`` uniform, batchwise random or fixed random."""
    if tied:
        return model
    gen = ctx.generator("sign_symmetry", device="cpu")
    batchwise = ctx.generator("sign_symmetry_batchwise")     # the run's device
    return replace_layers(model, "sign_symmetry", lambda k, n, layer: SignFeedback(
        layer.weight.detach(), params.magnitude,
        batchwise if params.magnitude == "batchwise_random" else gen, params.init))
