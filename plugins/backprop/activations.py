"""Forward activations ``f`` (docs/methods/backprop.md) with their derivatives ``f'``.

``step`` and ``sign`` break the tie at 0 towards the positive side: ``step(0) = 1`` and
``sign(0) = +1`` (docs/methods/backprop.md); their derivative is 0 almost everywhere, so the tied
configuration of either learns nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench_core.interfaces import Activation


def _zero_grad_like(x: Tensor) -> Tensor:
    """0 in value, 0 in gradient, but attached to the graph (so backward reaches nothing)."""
    return x * 0


def _step(x: Tensor) -> Tensor:
    return (x >= 0).to(x.dtype) + _zero_grad_like(x)


def _sign(x: Tensor) -> Tensor:
    return (x >= 0).to(x.dtype) * 2 - 1 + _zero_grad_like(x)


# The derivatives work in place on their own temporaries (one allocation each): surrogates
# that normalise by mean(f'(x)) call them on every forward. They are not differentiable.
def _d_logistic(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s.addcmul_(s, s, value=-1)  # s - s^2


def _d_tanh(x: Tensor) -> Tensor:
    t = torch.tanh(x)
    return t.mul_(t).neg_().add_(1)  # 1 - tanh^2


def _d_relu(x: Tensor) -> Tensor:
    return torch.relu(x).sign_()  # 1 for x > 0, else 0 (torch's relu backward also gives 0 at 0)


# The same derivatives from the output y = f(x): the same operations on the same values, so
# bitwise what the functions above give (Activation.derivative_of_output).
def _d_logistic_of_output(s: Tensor) -> Tensor:
    return s.addcmul(s, s, value=-1)


def _d_tanh_of_output(t: Tensor) -> Tensor:
    return t.mul(t).neg_().add_(1)


def _d_relu_of_output(y: Tensor) -> Tensor:
    return y.sign()


ACTIVATIONS: dict[str, tuple[str, Activation]] = {
    "identity": ("f(x) = x (the paper's 'Linear')",
                 Activation("identity", lambda x: x, torch.ones_like, "nothing", torch.ones_like)),
    "relu": ("f(x) = max(0, x)", Activation("relu", torch.relu, _d_relu, "output",
                                                  _d_relu_of_output)),
    "logistic": ("f(x) = 1 / (1 + exp(-x)) (sigmoid)",
                 Activation("logistic", torch.sigmoid, _d_logistic, "output",
                            _d_logistic_of_output)),
    "tanh": ("f(x) = tanh(x)", Activation("tanh", torch.tanh, _d_tanh, "output",
                                           _d_tanh_of_output)),
    "step": ("Heaviside: 1 if x >= 0 else 0 (tie at 0 goes to 1)",
             Activation("step", _step, torch.zeros_like, "nothing", torch.zeros_like)),
    "sign": ("+1 if x >= 0 else -1", Activation("sign", _sign, torch.zeros_like, "nothing",
                                                         torch.zeros_like)),
    "softplus": ("f(x) = ln(1 + exp(x))",
                 Activation("softplus", torch.nn.functional.softplus, torch.sigmoid, "input")),
}
