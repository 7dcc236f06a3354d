"""Stop at a target: a trainer option that ends training once a logged metric reaches a value,
and records how many steps and seconds it took.

Any trainer can offer it in two steps: mix :class:`TargetStopParams` into its parameter model,
and call a :class:`TargetWatcher` after each evaluation::

    class MyParams(TargetStopParams, _MyOptions): ...     # target fields listed after its own

    watcher = TargetWatcher(params)                      # just before the training loop
    for epoch in ...:
        ...                                              # steps += 1 per weight update
        values = ctx.log_epoch(epoch, **metrics)         # host floats: the one sync per epoch
        if watcher.check(values, steps=steps):
            break
    return {**values, **watcher.metrics()}

Reported metrics (only when ``target_metric`` is set; otherwise nothing, so a spec that names
no target keeps its meaning):

``target_reached``
    1.0 if the target was met at some evaluation, else 0.0 (its mean over seeds is the share of
    runs that reached it).
``steps_to_target``, ``seconds_to_target``
    the trainer's step count at the first evaluation that met the target, and the wall-clock
    seconds from the watcher's creation to that evaluation (evaluations included). A run that
    never reaches the target reports neither: the runner marks a run with a non-finite metric
    ``diverged``, and a NaN here would also poison means.
``steps_trained``, ``seconds_trained``
    the steps and seconds of the run at its last evaluation: the budget at which a run that
    never reached the target is *censored*. Tables report a time to target as the share of
    runs that reached it and a median in which the others count at this budget
    (:mod:`bench_core.specs.metrics`), never as a mean over the runs that reached it.

"Reached" is ``value <= target_value`` with ``target_mode = "min"`` (losses, errors; the
default) and ``value >= target_value`` with ``"max"`` (accuracies). With ``target_stop = false``
the run keeps training to its full budget and only records the first crossing, so its final
metrics stay comparable with runs that never reach the target.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TargetStopParams(BaseModel):
    """Trainer parameters of the stop-at-target option (mix into a trainer's parameters)."""

    model_config = ConfigDict(extra="forbid")
    target_metric: str | None = Field(
        None, description="logged metric watched after each evaluation (e.g. test_mse); "
                          "None: no target")
    target_value: float | None = Field(None, description="the value target_metric must reach")
    target_mode: Literal["min", "max"] = Field(
        "min", description="min: reached when metric <= target_value; max: when >=")
    target_stop: bool = Field(True, description="stop training when the target is reached "
                              "(false: train the full budget, record the first crossing)")

    @model_validator(mode="after")
    def _both_or_neither(self) -> "TargetStopParams":
        if (self.target_metric is None) != (self.target_value is None):
            raise ValueError("target_metric and target_value go together: set both or neither")
        if self.target_value is not None and not math.isfinite(self.target_value):
            raise ValueError(f"target_value must be finite (got {self.target_value})")
        return self


class TargetWatcher:
    """Watches one metric of a training run against :class:`TargetStopParams` (module
    docstring). Create it just before the training loop: its clock starts then."""

    def __init__(self, params: TargetStopParams,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.p = params
        self._clock = clock
        self._start = clock()
        self.steps_to_target: int | None = None
        self.seconds_to_target: float | None = None
        self.steps_trained = 0
        self.seconds_trained = 0.0

    @property
    def active(self) -> bool:
        return self.p.target_metric is not None

    @property
    def reached(self) -> bool:
        return self.steps_to_target is not None

    def check(self, values: Mapping[str, float], *, steps: int) -> bool:
        """Record the first evaluation that meets the target; return whether to stop now.
        ``values`` are the host floats of this evaluation (what ``ctx.log_epoch`` returned),
        ``steps`` the trainer's weight updates so far."""
        if not self.active:
            return False
        self.steps_trained = int(steps)
        self.seconds_trained = self._clock() - self._start
        if not self.reached:
            name = self.p.target_metric
            if name not in values:
                raise ValueError(f"target_metric '{name}' is not logged by this trainer "
                                 f"(it logs: {', '.join(sorted(values)) or 'nothing'})")
            value = float(values[name])
            met = (value <= self.p.target_value if self.p.target_mode == "min"
                   else value >= self.p.target_value)
            if met:
                self.steps_to_target = int(steps)
                self.seconds_to_target = self.seconds_trained
        return self.reached and self.p.target_stop

    def metrics(self) -> dict[str, float]:
        """``target_reached``, ``steps_trained``, ``seconds_trained`` and, if reached,
        ``steps_to_target`` and ``seconds_to_target``; nothing when no target is set."""
        if not self.active:
            return {}
        budget = {"steps_trained": float(self.steps_trained),
                  "seconds_trained": float(self.seconds_trained)}
        if not self.reached:
            return {"target_reached": 0.0, **budget}
        return {"target_reached": 1.0, "steps_to_target": float(self.steps_to_target),
                "seconds_to_target": float(self.seconds_to_target), **budget}
