"""Zeroth-order and forward-mode trainers (plugin ``perturbation``; docs/methods/perturbation.md):
trainers that estimate the gradient from a random perturbation of the weights, without a
backward pass. Both train any model the host builds, on the same shuffled mini-batches,
evaluation and logging as the ``backprop`` trainer (:mod:`.loop`).

* ``forward_gradient`` (:mod:`.forward_gradient`; Baydin et al. 2022): one random tangent ``v``
  per step, the directional derivative ``grad f . v`` by forward-mode differentiation
  (``torch.func.jvp``) and the update ``(grad f . v) v`` through the run's update rule;
* ``spsa`` (:mod:`.spsa`; Malladi et al. 2023, MeZO): the two-point estimate along one seeded
  direction, the perturbation applied in place and regenerated from its seed (no copy of the
  parameters, no stored direction), with the run's SGD settings (momentum: ZO-SGD-MMT) or the
  sign of the estimate (ZO-SGD-Sign).
"""

from untied_plugins.perturbation.forward_gradient import (
    ForwardGradientParams,
    forward_gradient_trainer,
)
from untied_plugins.perturbation.spsa import SPSAParams, spsa

from bench_core.hookspecs import hookimpl


@hookimpl
def register_trainers(register):
    register("forward_gradient", forward_gradient_trainer, params=ForwardGradientParams)
    register("spsa", spsa, params=SPSAParams)
