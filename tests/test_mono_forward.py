"""The mono_forward trainer through the host: both estimators learn, both prediction modes are
recorded, MF+DD runs with no autograd at all, the diagnostic does not change training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from untied_plugins.mono_forward import estimators
from untied_plugins.mono_forward import trainer as mf_trainer

from bench_core.execution.runner import execute_task
from bench_core.plugins import get_host
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def run(*variants: dict, **trainer) -> dict | list[dict]:
    """One run; with ``variants`` (trainer overrides), one run per variant in the same cell
    (entries), so all get the same seed."""
    model = trainer.pop("model", {"name": "mlp", "hidden": [32, 32]})
    defaults = {"dataset": {"name": "digits"}, "model": model, "activation": {"name": "relu"},
                "trainer": {"name": "mono_forward", "epochs": 3, "batch_size": 32, "lr": 0.05,
                            **trainer}}
    entries = [{"label": str(i), "overrides": {"trainer": v}} for i, v in enumerate(variants)]
    name, spec = parse_spec({"title": "mf", "entries": entries or [{"label": "x"}],
                             "defaults": defaults})
    host = get_host()
    rows = [execute_task(task, host=host) for task in expand(host, name, spec).tasks]
    for row in rows:
        assert row["status"] == "ok", row["error"]
    return rows if variants else rows[0]


def execute_one(**trainer) -> dict:
    """One run's row, whatever its status."""
    model = trainer.pop("model", {"name": "mlp", "hidden": [32, 32]})
    defaults = {"dataset": {"name": "digits"}, "model": model, "activation": {"name": "relu"},
                "trainer": {"name": "mono_forward", "batch_size": 32, **trainer}}
    name, spec = parse_spec({"title": "mf", "entries": [{"label": "x"}], "defaults": defaults})
    host = get_host()
    return execute_task(expand(host, name, spec).tasks[0], host=host)


def metrics(row: dict) -> dict:
    return {k[2:]: v for k, v in row.items() if k.startswith("m_")}


@pytest.mark.parametrize("estimator", ["autograd", "directional"])
def test_both_estimators_learn_and_record_both_prediction_modes(estimator):
    row = run(estimator=estimator)
    m = metrics(row)
    assert m["test_accuracy"] > 0.45 and m["test_accuracy_final"] > 0.2  # chance: 0.1
    assert m["train_seconds"] > 0
    for key in ("test_accuracy", "test_accuracy_final", "test_loss", "test_loss_final",
                "train_loss"):
        curve = row[f"curve_{key}"]
        assert len(curve) == 3 and all(math.isfinite(v) for v in curve)


def test_cnn_and_greedy_schedule():
    row = run(model={"name": "cnn", "channels": [4], "hidden": 16}, schedule="greedy",
              estimator="directional", epochs=1, projection_dim=32)
    assert len(row["curve_test_accuracy"]) == 2          # one epoch per block
    assert metrics(row)["test_accuracy"] > 0.2


def test_a_model_without_blocks_fails_with_a_named_reason():
    defaults = {"dataset": {"name": "digits"}, "model": {"name": "lenet5"},
                "activation": {"name": "relu"},
                "trainer": {"name": "mono_forward", "epochs": 1}}
    name, spec = parse_spec({"title": "mf", "entries": [{"label": "x"}], "defaults": defaults})
    host = get_host()
    row = execute_task(expand(host, name, spec).tasks[0], host=host)
    assert row["status"] != "ok" and "no blocks() method" in row["error"]


def test_directional_training_never_uses_autograd(monkeypatch):
    """The whole DD step runs in inference mode, autograd is never called, and no parameter
    (model weights or M_l) ever holds a .grad."""
    seen: list = []
    real_estimate, real_readouts = estimators.dd_estimate, mf_trainer.MonoForwardTrainer._readouts

    def forbidden(*args, **kwargs):
        raise AssertionError("autograd was called")

    def estimate(*args, **kwargs):
        assert torch.is_inference_mode_enabled()
        return real_estimate(*args, **kwargs)

    def readouts(self, model, blocks, session):
        out = real_readouts(self, model, blocks, session)
        seen.append((model, out))
        return out

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    # forward-mode AD is automatic differentiation too (the poster's method excludes it)
    for name in ("jvp", "vjp", "grad", "grad_and_value", "jacfwd", "jacrev", "hessian"):
        monkeypatch.setattr(torch.func, name, forbidden)
    for name in ("dual_level", "make_dual", "unpack_dual"):
        monkeypatch.setattr(torch.autograd.forward_ad, name, forbidden)
    for name in ("jvp", "vjp", "jacobian", "hessian", "hvp", "vhp"):
        monkeypatch.setattr(torch.autograd.functional, name, forbidden)
    # and the batched evaluation sees no tensor that could carry a gradient
    real_unit_losses = estimators.dd.unit_losses

    def unit_losses(block, xin, *args, **kwargs):
        assert not xin.requires_grad and not any(w.requires_grad for w in block.parameters())
        seen_units.append(True)
        return real_unit_losses(block, xin, *args, **kwargs)

    seen_units: list = []
    monkeypatch.setattr(estimators.dd, "unit_losses", unit_losses)
    monkeypatch.setattr(mf_trainer, "dd_estimate", estimate)
    monkeypatch.setattr(mf_trainer.MonoForwardTrainer, "_readouts", readouts)
    run(estimator="directional", epochs=1)
    (model, outs), = seen
    tensors = [*model.parameters(), *(r.M for r in outs)]
    assert tensors and all(t.grad is None for t in tensors) and seen_units
    assert not any(t.requires_grad for t in model.parameters())


def test_the_direction_diagnostic_is_recorded_and_changes_nothing():
    plain, probed = run({}, {"direction_diagnostic": True}, estimator="directional", epochs=2)
    for key in ("curve_test_accuracy", "curve_test_loss_final", "curve_train_loss"):
        assert plain[key] == probed[key]
    m = metrics(probed)
    assert 0 < m["direction_cosine"] < 1
    assert set(k for k in probed if k.startswith("curve_cos/")) == {"curve_cos/1", "curve_cos/3"}
    plain, every2 = run({}, {"direction_diagnostic": 2}, estimator="autograd", epochs=2)
    assert math.isnan(every2["curve_direction_cosine"][0])
    assert math.isfinite(every2["curve_direction_cosine"][1])
    assert json.dumps(every2["curve_test_accuracy"]) == json.dumps(plain["curve_test_accuracy"])


def test_forward_counts_include_every_perturbed_loss_evaluation():
    """DD evaluates 2P local losses per chunk: with a 64 -> 32 -> 32 MLP and chunk_size 1024 the
    chunks are 4 (32 rows of 65: 8 units each) + 1 (M: 10 x 32) + 2 (32 x 33: 16 units) + 1,
    so a batch costs 1 + 2P * 8 evaluations, not 1 + 2P."""
    dd_row, ad_row = run({"estimator": "directional"}, {"estimator": "autograd"}, epochs=1,
                         directions=3, epoch_size=64, shuffle=False)
    batches = 2    # 64 samples in batches of 32
    evaluations = (1 + 2 * 3 * 8) * batches
    test_forwards = dd_row["forward_passes"] - evaluations
    assert test_forwards == ad_row["forward_passes"] - batches
    assert ad_row["backward_passes"] == batches and dd_row["backward_passes"] == 0


def test_block_health_curves_are_logged_per_block():
    row = run(estimator="directional", epochs=2)
    for name in ("1", "3"):
        for key in ("weight_norm", "projection_norm", "dead_units"):
            curve = row[f"curve_{key}/{name}"]
            assert len(curve) == 2 and all(math.isfinite(v) for v in curve)
        assert 0 <= min(row[f"curve_dead_units/{name}"]) <= max(row[f"curve_dead_units/{name}"]) < 1
        assert row[f"curve_weight_norm/{name}"][0] > 0


def test_channelwise_projection_is_the_default_and_whole_an_option():
    channel, whole = run({}, {"projection": "whole"},
                         model={"name": "cnn", "channels": [4], "hidden": 16},
                         estimator="autograd", epochs=1, projection_dim=32)
    assert channel["curve_test_loss"] != whole["curve_test_loss"]
    assert metrics(channel)["test_accuracy"] > 0.2 and metrics(whole)["test_accuracy"] > 0.2
    row = execute_one(model={"name": "cnn", "channels": [4], "hidden": 16}, projection_dim=30,
                      estimator="autograd", epochs=1)
    assert row["status"] == "failed" and "not a multiple of the block's 4 channels" in row["error"]


def test_new_options_at_their_defaults_keep_run_ids_and_the_version_is_bumped():
    """A new parameter written at its default changes no run id; the trainer's version is 2
    (chunk splitting and the channel-wise projection changed the default numerics)."""
    host = get_host()
    ids = []
    for extra in ({}, {"direction_kind": "gaussian", "projection": "channel"}):
        defaults = {"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [8]},
                    "activation": {"name": "relu"},
                    "trainer": {"name": "mono_forward", "epochs": 1, **extra}}
        name, spec = parse_spec({"title": "mf", "entries": [{"label": "x"}],
                                 "defaults": defaults})
        ids.append(expand(host, name, spec).tasks[0].run_id)
    assert ids[0] == ids[1]
    assert host.get("trainers", "mono_forward").version == "2"


def test_step_schedule_multiplies_the_rate_after_each_milestone():
    p = mf_trainer.MonoForwardParams(lr=0.1, epochs=4, lr_milestones=[1, 3], lr_gamma=0.5)
    joint = mf_trainer.MonoForwardTrainer(p)
    assert [joint.rate(e) for e in (1, 2, 3, 4)] == pytest.approx([0.1, 0.05, 0.05, 0.025])
    greedy = mf_trainer.MonoForwardTrainer(p.model_copy(update={"schedule": "greedy"}))
    # block 1's epochs are 1-4, block 2's 5-8: the schedule restarts with each block's phase
    assert [greedy.rate(e) for e in range(1, 9)] == pytest.approx([0.1, 0.05, 0.05, 0.025] * 2)


def test_a_rate_scaled_down_after_epoch_one_almost_stops_training():
    """With lr_gamma = 1e-6 after epoch 1 the second epoch barely moves the weights: its
    evaluation repeats the first one's; without the milestone the second epoch learns."""
    frozen = run(estimator="autograd", epochs=2, lr_milestones=[1], lr_gamma=1e-6)
    free = run(estimator="autograd", epochs=2)
    first, second = frozen["curve_test_loss"]
    assert second == pytest.approx(first, rel=1e-4)
    first, second = free["curve_test_loss"]
    assert second < first - 0.05
