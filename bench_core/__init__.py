"""untied-bench host: hook specs, plugin manager, registries, specs, runner, results, leaderboards.

The host knows no training method by name: every activation, surrogate, update rule, trainer,
model, dataset and executor arrives through the ``untied`` entry-point group (see
:mod:`bench_core.hookspecs`).
"""

__version__ = "0.1.0"
