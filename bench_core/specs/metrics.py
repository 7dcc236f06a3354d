"""What a metric's name says about it, when a spec does not say otherwise.

A leaderboard compares entries on several metrics (accuracy, loss, seconds, steps to a target),
and each has its own direction and range. A spec states them per metric (``direction``; the main
metric also through ``higher_is_better``); where it states nothing, the name decides, by these
documented conventions (:func:`default_direction`, :func:`value_range`):

Direction (``lower`` is better) for names that contain ``loss``, ``error``, ``mse``, ``mae``,
``rmse``, ``nll``, ``perplexity``, ``seconds``, ``time``, ``bytes``, ``memory`` or end in
``_to_target``; every other name (accuracy, agreement, cosine, share reached, ...) is ``higher``
is better.

Range (used to clip the ± std bands of plots, never values): names with ``accuracy``,
``reached`` or ``agreement`` lie in [0, 1]; ``cosine`` in [-1, 1]; the lower-is-better names
above in [0, inf); others are unbounded.

Time to a target (``<quantity>_to_target``, :mod:`bench_core.stopping`): a run that never
reached the target reports no value. Such a run is *censored*: its time is at least the budget
it trained, which it reports as ``<quantity>_trained``. Tables give the share of runs that
reached the target and a median in which censored runs count at their budget
(:func:`censored_median`), never a mean over the runs that reached it.
"""

from __future__ import annotations

import math
from typing import Literal

Direction = Literal["higher", "lower"]

LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "nll", "perplexity", "seconds",
                   "time", "bytes", "memory")
UNIT_INTERVAL = ("accuracy", "reached", "agreement")
TARGET_SUFFIX = "_to_target"
BUDGET_SUFFIX = "_trained"


def default_direction(metric: str) -> Direction:
    """``lower`` for names that say loss, error, time, memory or time-to-target; else
    ``higher`` (module docstring)."""
    name = metric.lower()
    if is_time_to_target(name) or any(word in name for word in LOWER_IS_BETTER):
        return "lower"
    return "higher"


def value_range(metric: str) -> tuple[float | None, float | None]:
    """``(low, high)`` that a metric's values cannot leave (None: unbounded on that side)."""
    name = metric.lower()
    if any(word in name for word in UNIT_INTERVAL):
        return 0.0, 1.0
    if "cosine" in name or name.startswith("cos/"):
        return -1.0, 1.0
    if default_direction(name) == "lower":
        return 0.0, None
    return None, None


def is_timing(metric: str) -> bool:
    """A wall-clock measurement (``train_seconds``, ``seconds_to_target``): never expected to
    replay, so comparisons of records leave it out unless asked."""
    name = metric.lower()
    return "seconds" in name or name.endswith("_time") or "wall_time" in name


def is_time_to_target(metric: str) -> bool:
    """A metric that counts how long a run took to reach a target (``steps_to_target``)."""
    return metric.endswith(TARGET_SUFFIX)


def budget_metric(metric: str) -> str:
    """The metric holding the budget a run trained, at which an unreached target is censored:
    ``steps_to_target`` -> ``steps_trained``."""
    return metric.removesuffix(TARGET_SUFFIX) + BUDGET_SUFFIX


def censored_median(values: list[float | None], budgets: list[float | None]
                    ) -> tuple[float | None, bool]:
    """The median time to target over runs, ``values[i]`` None for a run that did not reach it
    (censored at ``budgets[i]``, which may be unknown). Returns ``(value, censored)``:
    ``censored`` is True when the median falls on unreached runs, and ``value`` is then a lower
    bound (``>= value``; None when the budget is unknown). Unreached runs sort above every
    reached one (a run that reached the target did so within its budget)."""
    n = len(values)
    if n == 0:
        return None, False
    reached = sorted(v for v in values if v is not None)
    unreached = [b for v, b in zip(values, budgets) if v is None]
    known = [b for b in unreached if b is not None and math.isfinite(b)]
    budget = min(known) if len(known) == len(unreached) and known else None
    ordered: list[float | None] = [*reached, *([budget] * len(unreached))]
    lo, hi = (n - 1) // 2, n // 2
    if hi < len(reached):
        return (reached[lo] + reached[hi]) / 2, False
    low, high = ordered[lo], ordered[hi]
    if low is None or high is None:
        return None, True
    return (low + high) / 2, True
