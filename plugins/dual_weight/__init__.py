"""Dual-weight method of Wang (2025), "Revisiting Gradient Descent: A Dual-Weight Method for
Improved Learning" (docs/methods/dual-weight.md), with everything its experiments need:

* update rules ``dual_weight``, ``dual_weight_stable`` (Appendix B) and the ``l2`` baseline
  (:mod:`.rules`), for the dense layers of any model and usable under any trainer;
* trainer ``online`` (:mod:`.online`): batch size 1, 60,000 iterations drawn with replacement
  from a small training pool, with grouped runs (many independent models in one batched kernel);
* the datasets its experiments use, ``wine_quality`` and ``california_housing``, are in the
  ``datasets`` plugin (standardised on the training split, targets x 0.1 as in the paper);
* leaderboards ``wang-regression`` and ``wang-classification`` (in ``leaderboards/``).
"""

from untied_plugins.dual_weight import online, rules

from bench_core.hookspecs import hookimpl


@hookimpl
def register_update_rules(register):
    register("dual_weight", rules.dual_weight, params=rules.DualWeightParams)
    register("dual_weight_stable", rules.dual_weight_stable, params=rules.DualWeightStableParams)
    register("l2", rules.l2, params=rules.L2Params)


@hookimpl
def register_trainers(register):
    register("online", online.OnlineTrainer, params=online.OnlineParams,
             description="batch size 1, N iterations drawn with replacement from the training "
                         "pool (Wang 2025); grouped runs")

