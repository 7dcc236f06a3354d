"""Stop at a target (bench_core.stopping): the parameter mixin, the watcher, and a whole run
through the runner with a tiny trainer defined here (no built-in method involved), plus the
``backprop`` trainer that offers the option."""

from __future__ import annotations

import types

import polars as pl
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench_core.hookspecs import hookimpl
from bench_core.interfaces import DataBundle, DataInfo
from bench_core.results.records import record_files
from bench_core.stopping import TargetStopParams, TargetWatcher


class FakeClock:
    """A clock that advances 0.5 s per reading."""

    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


def watch(values: list[float], steps_per_eval: int = 3, **options):
    """Feed ``values`` (one per evaluation) to a watcher; return it and the stop decisions."""
    watcher = TargetWatcher(TargetStopParams(**options), clock=FakeClock())
    decisions = [watcher.check({"err": v, "other": 0.0}, steps=steps_per_eval * (i + 1))
                 for i, v in enumerate(values)]
    return watcher, decisions


# ---- the parameter mixin ---------------------------------------------------------------------
def test_no_target_is_the_default_and_reports_nothing():
    watcher, decisions = watch([0.1, 0.0])
    assert not any(decisions) and watcher.metrics() == {}


@pytest.mark.parametrize("options", [{"target_metric": "err"}, {"target_value": 0.1},
                                     {"target_metric": "err", "target_value": float("nan")},
                                     {"target_metric": "err", "target_value": 1, "mode": "x"}])
def test_incomplete_or_bad_targets_are_rejected(options):
    with pytest.raises(ValidationError):
        TargetStopParams(**options)


# ---- the watcher ---------------------------------------------------------------------------
def test_min_target_stops_at_the_first_crossing_with_its_steps_and_seconds():
    watcher, decisions = watch([0.5, 0.3, 0.2, 0.05], target_metric="err", target_value=0.2)
    assert decisions == [False, False, True, True]  # 0.2 <= 0.2 at the third evaluation
    # clock: created at 10.5, each check reads it once: the third at 10.5 + 3 x 0.5
    assert watcher.metrics() == {"target_reached": 1.0, "steps_to_target": 9.0,
                                 "seconds_to_target": 1.5, "steps_trained": 12.0,
                                 "seconds_trained": 2.0}


def test_without_target_stop_training_goes_on_and_the_first_crossing_is_kept():
    watcher, decisions = watch([0.5, 0.1, 0.9, 0.05], target_metric="err", target_value=0.2,
                               target_stop=False)
    assert decisions == [False] * 4
    assert watcher.metrics()["steps_to_target"] == 6.0  # the second evaluation, not the fourth


def test_max_mode_and_not_reached():
    watcher, decisions = watch([0.5, 0.7, 0.89], target_metric="err", target_value=0.9,
                               target_mode="max")
    assert not any(decisions)
    # no NaN/inf (the run stays `ok`), and the budget at which it is censored in tables
    assert watcher.metrics() == {"target_reached": 0.0, "steps_trained": 9.0,
                                 "seconds_trained": 1.5}
    watcher, decisions = watch([0.5, 0.95], target_metric="err", target_value=0.9,
                               target_mode="max")
    assert decisions == [False, True] and watcher.metrics()["steps_to_target"] == 6.0


def test_a_metric_the_trainer_does_not_log_is_a_clear_error():
    with pytest.raises(ValueError, match=r"target_metric 'test_mse' is not logged by this "
                                         r"trainer \(it logs: err, other\)"):
        watch([0.1], target_metric="test_mse", target_value=0.2)


# ---- through the runner, with a trainer defined here ----------------------------------------
class _CountdownOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    rate: float = Field(0.5, gt=0, lt=1, description="error multiplier per epoch")


class CountdownParams(TargetStopParams, _CountdownOptions):
    pass


class CountdownTrainer:
    """Two steps per epoch; the logged ``err`` starts at 1 and is multiplied by ``rate``."""

    def __init__(self, params: CountdownParams) -> None:
        self.p = params

    def fit(self, session):
        watcher = TargetWatcher(self.p)
        err, steps, values = 1.0, 0, {}
        for epoch in range(1, self.p.epochs + 1):
            steps += 2
            err *= self.p.rate
            values = session.ctx.log_epoch(epoch, err=torch.tensor(err))
            if watcher.check(values, steps=steps):
                break
        return {**values, **watcher.metrics()}


def _tiny_data(params, *, ctx):
    x = torch.zeros(4, 1)
    return DataBundle(DataInfo("tiny", (1,), 1, "regression"), x, x, x, x)


countdown_plugin = types.SimpleNamespace(
    register_trainers=hookimpl(lambda register: register(
        "countdown", CountdownTrainer, params=CountdownParams,
        description="logs err = rate^epoch")),
    register_datasets=hookimpl(lambda register: register(
        "tiny", _tiny_data, description="four zeros")),
    register_models=hookimpl(lambda register: register(
        "nothing", lambda params, *, data, activation, ctx: torch.nn.Identity(),
        description="identity")),
)

COUNTDOWN_SPEC = {
    "title": "countdown", "metric": "err", "higher_is_better": False, "seeds": 1,
    "defaults": {"dataset": {"name": "tiny"}, "model": {"name": "nothing"},
                 "trainer": {"name": "countdown", "epochs": 6, "target_metric": "err"}},
    "grid": {"trainer.target_value": [0.2, 0.001]},
    "entries": [{"label": "stop"},
                {"label": "go on", "overrides": {"trainer": {"target_stop": False}}}],
    "columns": ["target_reached", "steps_to_target"],
}


def test_runs_that_miss_the_target_stay_ok_and_report_reached_zero(untied_host, tmp_path):
    from bench_core.execution.runner import run_plan
    from bench_core.specs.model import parse_spec
    from bench_core.specs.plan import expand

    untied_host.add_plugin(countdown_plugin, "countdown_test")
    name, spec = parse_spec(COUNTDOWN_SPEC, stem="cd")
    summary = run_plan(expand(untied_host, name, spec), tmp_path, host=untied_host,
                       progress=False)
    assert (summary.ok, summary.diverged, summary.failed) == (4, 0, 0)
    df = pl.concat([pl.read_parquet(p) for p in record_files(tmp_path / "cd")],
                   how="diagonal_relaxed")
    rows = {(r["entry"], r["p_trainer.target_value"]): r for r in df.iter_rows(named=True)}
    # 0.5^3 = 0.125 <= 0.2 at epoch 3 (6 steps); 0.5^6 = 0.016 never reaches 0.001
    stop, go_on = rows[("stop", 0.2)], rows[("go on", 0.2)]
    assert stop["m_target_reached"] == 1.0 and stop["m_steps_to_target"] == 6.0
    assert len(stop["curve_err"]) == 3 and stop["m_err"] == pytest.approx(0.125)
    assert go_on["m_steps_to_target"] == 6.0 and len(go_on["curve_err"]) == 6
    missed = rows[("stop", 0.001)]
    assert missed["status"] == "ok" and missed["m_target_reached"] == 0.0
    assert missed["m_steps_to_target"] is None and missed["m_seconds_to_target"] is None
    assert missed["m_steps_trained"] == 12.0 and missed["m_seconds_trained"] >= 0


# ---- the built-in backprop trainer offers it ------------------------------------------------
def test_backprop_stops_at_a_target_accuracy(untied_host, run_leaderboard):
    spec = {
        "title": "bp", "metric": "test_accuracy", "seeds": 1,
        "defaults": {"dataset": {"name": "digits", "train_subset": 300},
                     "model": {"name": "mlp", "hidden": [16]}, "activation": {"name": "relu"},
                     "rule": {"name": "adam", "lr": 0.01},
                     "trainer": {"name": "backprop", "epochs": 30, "batch_size": 50,
                                 "target_metric": "test_accuracy", "target_value": 0.6,
                                 "target_mode": "max"}},
        "entries": [{"label": "bp"}], "columns": ["target_reached", "steps_to_target"],
    }
    row = run_leaderboard(spec).row(0, named=True)
    assert row["target_reached"] == 1.0
    # stopped early: the 0.6 crossing comes within a few epochs of 6 steps each
    assert 6 <= row["steps_to_target"] < 30 * 6 and row["steps_to_target"] % 6 == 0
    assert row["mean"] >= 0.6
