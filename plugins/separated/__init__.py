"""Separated linear and nonlinear parameters (Podoprosvetov, Smolin & Sokolov, "Separate
adjustment of linear and nonlinear parameters in neural network training"; docs/methods/separated.md).

Registers:

- model ``separated_mlp`` (:mod:`.neuron`): hidden neurons ``o = a + phi(c (a + q))``, the ReLU
  and SoftPlus analogs of eqs. 13-16 (taken from the run's activation), per-neuron ``q``,
  ``c > 0``, ``d``; trainable by any rule.
- update rule ``separated`` (:mod:`.rule`): the semi-sum steps of ``q`` and ``d`` (eqs. 17-24)
  with ``sgd`` or ``adam`` for ``W``, ``b`` and gradient descent for ``c``.
- dataset ``function_approx`` (:mod:`.function_approx`): analytic targets of 2 and 3 variables
  from a registry third parties can extend (:mod:`.targets`).

The leaderboard ``podoprosvetov-approx`` compares them with plain ReLU and SoftPlus MLPs.

Out of scope: the paper's results (Section 15) were obtained "together with the normalization,
orthogonalization, and load distribution methods described in previous reports" (Podoprosvetov
et al. 2024), and its list of subtasks (Section 8) also names SOM-based spreading of the weight
directions (3), compensation of earlier layers' weight changes (7), normalisation of activities
and errors (8-9) and orthogonalisation of layer activities (10). This paper gives none of them
as formulas (Sections 12-14 describe them in words and cite the earlier report), so they are not
implemented: implementing them from prose would be our invention, not the paper's method. Only
what the paper specifies is here: the neuron (eqs. 13-16), the semi-sum rule (eqs. 17-24) and
gradient descent on the SoftPlus curvature (Section 11, which gives no formula either; plain
gradient descent is the choice of docs/methods/separated.md). Our numbers therefore test the separated neuron and its
rule on their own, not the authors' full training system.
"""

from __future__ import annotations

from bench_core.hookspecs import hookimpl
from untied_plugins.separated.function_approx import FunctionApproxParams, function_approx
from untied_plugins.separated.neuron import SeparatedMLPParams, separated_mlp
from untied_plugins.separated.rule import SeparatedRuleParams, separated


@hookimpl
def register_models(register):
    register("separated_mlp", separated_mlp, params=SeparatedMLPParams)


@hookimpl
def register_update_rules(register):
    register("separated", separated, params=SeparatedRuleParams)


@hookimpl
def register_datasets(register):
    register("function_approx", function_approx, params=FunctionApproxParams)
