"""The "separated" formal neuron (Podoprosvetov et al., Section 9, eqs. 13-16) and
``separated_mlp``, a multi-layer perceptron whose hidden neurons are separated neurons.

Hidden neuron ``i`` of a layer, with the run's activation ``f``::

    a   = W_i . o_prev + b_i                  (eq. 1: the linear activation)
    v   = c_i (a + q_i)                       (eq. 14)
    o   = a + phi(v)                          (eq. 13)
    phi(v) = d_i (f(v) + f(-v) - 2 f(0))

For an ``f`` with asymptotes 0 and ``v`` (``f(v) - f(-v) = v``) one has ``f(v) + f(-v) =
2 f(v) - v``, so this is exactly the paper's analog of ``f``:

- ``relu``: ``phi(v) = d (2 max(v, 0) - v) = d |v|`` (eq. 15, the ReLU analog);
- ``softplus``: ``phi(v) = d (2 ln(1 + e^v) - 2 ln 2 - v)`` (eq. 16, the SoftPlus analog).

The model takes the analog from the run's ``activation`` (so one leaderboard grid over
``activation.name`` sets both the plain ``mlp`` and this model) and refuses an activation
without those asymptotes (``logistic``, ``tanh``, ``identity``): its ``phi`` would not be the
paper's. It is computed as ``f(v) + f(-v) = |v| + 2 f(-|v|)`` (the same identity): symmetric by
construction, one call of ``f`` (SoftPlus is the costly part on a CPU), and ``f(-|v|)`` lies in
``[0, f(0)]``, so it stays finite and exact for every finite ``v`` where ``2 f(v) - v``
overflows beyond ``|v| > 1.7e38`` in float32 (torch's softplus is itself stable).

Per-neuron parameters (vectors of the layer's width):

``q`` (offset)
    moves the kink to ``a = -q``; initialised to ``q_init`` (0: the kink where ReLU has it).
``d`` (angle)
    the slopes of ``o`` in ``a`` are ``1 - c d`` left of the kink and ``1 + c d`` right of it;
    ``d_init = 1`` (default) starts every neuron as ``2 f(a) - 2 f(0)`` (ReLU analog:
    ``2 relu(a)``; SoftPlus analog: ``2 softplus(a) - 2 ln 2``), the plain activation's shape.
``c`` (slope/curvature) > 0
    stored as ``c = 1e-4 + softplus(c_raw)``, so it stays positive under any update rule and
    trainer. ``curvature = "auto"`` (default) learns it unless ``f`` is positively homogeneous
    (``f(2x) = 2 f(x)``, ReLU), where ``c`` only rescales ``d`` and the paper sets ``c = 1``
    (Section 9); ``"fixed"`` keeps ``c = c_init``; ``"learned"`` always learns it.

Initial weights: the linear layers are built in the same order and shapes as ``mlp``'s, under
the run's ``init`` seed, so ``separated_mlp`` and ``mlp`` with the same ``hidden`` start from the
same ``W`` and ``b`` (paired comparisons). Every parameter is an ordinary ``nn.Parameter``:
any update rule trains the model by autograd; the ``separated`` rule instead updates ``q`` and
``d`` with the paper's semi-sum steps (:mod:`untied_plugins.separated.rule`).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import Tensor, nn

C_MIN = 1e-4
"""Lower bound of ``c``: ``c = C_MIN + softplus(c_raw)``."""
_PROBE = torch.tensor([-4.0, -1.5, -0.3, 0.0, 0.3, 1.5, 4.0])
"""Points where an activation is checked for the asymptotes 0 and v, and for homogeneity."""


class SeparatedMLPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conformance_run: ClassVar[dict] = {"activation": {"name": "relu"}}
    """The conformance kit's tanh has no asymptotes 0 and v: run the kit with ReLU."""
    hidden: list[PositiveInt] = Field(default_factory=lambda: [32, 32],
                                      description="hidden layer widths (separated neurons)")
    bias: bool = True
    q_init: float = Field(0.0, description="initial offset q (kink at a = -q)")
    d_init: float = Field(1.0, description="initial angle d (1: the plain activation's shape, "
                                           "doubled)")
    c_init: float = Field(1.0, gt=C_MIN, description="initial (or fixed) slope/curvature c")
    curvature: Literal["auto", "learned", "fixed"] = Field(
        "auto", description="learn c: auto = unless f is positively homogeneous (ReLU: c = 1)")


def _site_name(f: nn.Module) -> str:
    inner = getattr(f, "activation", None)
    return getattr(inner, "name", None) or type(f).__name__


def inspect_activation(f: nn.Module) -> tuple[float, bool]:
    """``(f(0), positively homogeneous)`` of an activation site; ValueError if ``f`` lacks the
    asymptotes 0 and ``v`` that make ``f(v) + f(-v) - 2 f(0)`` the paper's analog."""
    with torch.no_grad():
        fv, fm, f2 = f(_PROBE.clone()), f(-_PROBE), f(2 * _PROBE)
    if not torch.allclose(fv - fm, _PROBE, atol=1e-4):
        raise ValueError(f"separated_mlp needs an activation with f(v) - f(-v) = v (asymptotes 0 "
                         f"and v, like relu and softplus); '{_site_name(f)}' is not one")
    return float(fv[3]), bool(torch.allclose(f2, 2 * fv, atol=1e-5))


class SeparatedDense(nn.Module):
    """A dense layer of separated neurons: ``o = a + d (f(v) + f(-v) - 2 f(0))``,
    ``v = c (a + q)``, ``a = linear(x)`` (module docstring)."""

    def __init__(self, n_in: int, n_out: int, activation: nn.Module, *, bias: bool = True,
                 q_init: float = 0.0, d_init: float = 1.0, c_init: float = 1.0,
                 curvature: str = "auto") -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=bias)
        self.f = activation
        self.f0, homogeneous = inspect_activation(activation)
        self.learns_c = curvature == "learned" or (curvature == "auto" and not homogeneous)
        self.q = nn.Parameter(torch.full((n_out,), float(q_init)))
        self.d = nn.Parameter(torch.full((n_out,), float(d_init)))
        c_raw = torch.full((n_out,), math.log(math.expm1(c_init - C_MIN)))
        if self.learns_c:
            self.c_raw = nn.Parameter(c_raw)
        else:
            self.register_buffer("c_raw", c_raw)

    @property
    def c(self) -> Tensor:
        return C_MIN + F.softplus(self.c_raw)

    def neuron_parameters(self) -> list[nn.Parameter]:
        """The per-neuron nonlinearity parameters: ``q``, ``d`` and, if learned, ``c_raw``."""
        return [self.q, self.d] + ([self.c_raw] if self.learns_c else [])

    def shape(self, v: Tensor) -> Tensor:
        """``phi(v) / d = f(v) + f(-v) - 2 f(0) = |v| + 2 (f(-|v|) - f(0))``, also ``do/dd``."""
        magnitude = v.abs()
        return magnitude + 2 * (self.f(-magnitude) - self.f0)

    def forward(self, x: Tensor) -> Tensor:
        a = self.linear(x)
        return a + self.d * self.shape(self.c * (a + self.q))

    def extra_repr(self) -> str:
        return f"f={_site_name(self.f)}, c={'learned' if self.learns_c else 'fixed'}"


def separated_mlp(params: SeparatedMLPParams, *, data, activation, ctx) -> nn.Module:
    """MLP of separated neurons o = a + d(f(v)+f(-v)-2f(0)), v = c(a+q) (Podoprosvetov eqs. 13-16)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(data.input_shape)
    for h in params.hidden:
        layers.append(SeparatedDense(width, h, activation(), bias=params.bias,
                                     q_init=params.q_init, d_init=params.d_init,
                                     c_init=params.c_init, curvature=params.curvature))
        width = h
    layers.append(nn.Linear(width, data.num_outputs, bias=params.bias))
    return nn.Sequential(*layers)
