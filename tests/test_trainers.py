"""The ``backprop`` and ``online`` trainers' protocol options: the loss reduction over the batch
(mean or sum, Troiano et al. eqs. 37-38) and epochs of a fixed number of samples."""

from __future__ import annotations

import json

import pytest
import torch
from untied_plugins.backprop.losses import SampleStream, batch_loss, sample_losses

from bench_core.execution.runner import execute_task
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


@pytest.mark.parametrize("loss,task,outputs", [("cross_entropy", "classification", 4),
                                               ("cross_entropy", "classification", 1),
                                               ("mse", "classification", 4),
                                               ("mse", "classification", 1),
                                               ("mse", "regression", 3)])
def test_sum_is_the_batch_size_times_the_mean(loss, task, outputs):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(8, outputs, generator=gen)
    y = (torch.randn(8, outputs, generator=gen) if task == "regression"
         else torch.randint(max(outputs, 2), (8,), generator=gen))
    mean = batch_loss(out, y, loss, task)
    total = batch_loss(out, y, loss, task, "sum")
    torch.testing.assert_close(total, 8 * mean)
    per_sample = torch.stack([batch_loss(out[i:i + 1], y[i:i + 1], loss, task) for i in range(8)])
    torch.testing.assert_close(total, per_sample.sum())
    # the fused path (softmax cross-entropy) agrees with the per-sample losses it stands for
    torch.testing.assert_close(mean, sample_losses(out, y, loss, task).mean())


def run_entries(host, trainer: dict, rule: dict, entries: dict[str, dict]) -> dict[str, dict]:
    """Run each entry (label -> overrides) once. Entries of a cell share the run seed, so they
    start from the same weights and see the same batches."""
    raw = {"title": "t", "seeds": [0], "defaults": {
        "dataset": {"name": "digits", "train_subset": 200},
        "model": {"name": "mlp", "hidden": [16]}, "activation": {"name": "logistic"},
        "rule": rule, "trainer": trainer},
        "entries": [{"label": k, "overrides": v} for k, v in entries.items()]}
    name, spec = parse_spec(raw, stem="t")
    rows = {}
    for task in expand(host, name, spec).tasks:
        rows[task.entry] = execute_task(task, host)
        assert rows[task.entry]["status"] == "ok", rows[task.entry]["error"]
    return rows


def test_summed_loss_is_sgd_with_the_rate_times_the_batch_size(untied_host):
    """With plain SGD, sum reduction at rate lr trains exactly like mean reduction at rate
    lr * B (the batches here all have B = 25 samples), and both log per-sample mean losses."""
    rows = run_entries(untied_host, {"name": "backprop", "epochs": 3, "batch_size": 25},
                       {"name": "sgd", "lr": 0.01}, {
                           "sum": {"trainer": {"loss_reduction": "sum"}},
                           "mean x B": {"rule": {"lr": 0.25}},
                           "mean": {}})
    a, b, c = (json.loads(rows[k]["curves_json"]) for k in ("sum", "mean x B", "mean"))
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
    assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=1e-6)
    assert a["train_loss"] != pytest.approx(c["train_loss"], rel=1e-3)  # the option matters
    assert 0 < a["train_loss"][-1] < 5  # a per-sample loss, not a batch sum


def test_sample_stream_cycles_shuffled_passes():
    gen = torch.Generator().manual_seed(1)
    stream = SampleStream(10, 25, True, gen, torch.device("cpu"))
    seen = torch.cat([stream.next_epoch() for _ in range(4)])
    assert len(seen) == 100 and torch.bincount(seen, minlength=10).tolist() == [10] * 10
    # epochs of one pass are one permutation each, drawn exactly as before the option existed
    plain = SampleStream(10, 10, True, torch.Generator().manual_seed(2), torch.device("cpu"))
    ref = torch.Generator().manual_seed(2)
    for _ in range(3):
        assert torch.equal(plain.next_epoch(), torch.randperm(10, generator=ref))
    ordered = SampleStream(4, 6, False, gen, torch.device("cpu"))
    assert ordered.next_epoch().tolist() == [0, 1, 2, 3, 0, 1]
    assert ordered.next_epoch().tolist() == [2, 3, 0, 1, 2, 3]


def test_epoch_size_sets_the_steps_per_epoch(untied_host):
    trainer = {"name": "backprop", "epochs": 2, "batch_size": 50, "epoch_size": 500}
    row = run_entries(untied_host, trainer, {"name": "sgd", "lr": 0.1}, {"one": {}})["one"]
    assert row["backward_samples"] == 2 * 500 and row["backward_passes"] == 2 * 10
    assert len(json.loads(row["curves_json"])["epoch"]) == 2


def test_online_trainer_accepts_either_reduction_with_equal_results(untied_host):
    trainer = {"name": "online", "iterations": 60, "eval_every": 30, "loss": "cross_entropy"}
    rows = run_entries(untied_host, trainer, {"name": "sgd", "lr": 0.05},
                       {r: {"trainer": {"loss_reduction": r}} for r in ("mean", "sum")})
    assert rows["mean"]["curves_json"] == rows["sum"]["curves_json"]  # batch size 1


def test_regression_reports_mse_and_max_abs_error_over_all_batches():
    """The backprop trainer's evaluation metrics, checked against a hand computation."""
    from torch import nn
    from untied_plugins.backprop.losses import evaluate

    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [2.0]]))
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0, 2.5], [2.0, 4.0], [0.0, 6.0]])  # errors (0, -.5), (0, 0), (3, 0)
    got = evaluate(model, x, y, "mse", "regression", batch_size=2)
    assert got["mse"].item() == pytest.approx((0.25 / 2 + 0 + 9 / 2) / 3)
    assert got["max_abs_error"].item() == pytest.approx(3.0)  # in the second batch
    assert got["loss"].item() == pytest.approx(0.5 * (0.25 + 9) / 3)
    assert "accuracy" not in got


def test_lr_milestones_multiply_the_rate_after_the_listed_epochs(untied_host):
    """A gamma of 1e-9 after epoch 1 all but stops training: epoch 2's test loss equals epoch
    1's, while the constant rate (and gamma = 1, the schedule's identity) keep learning."""
    trainer = {"name": "backprop", "epochs": 3, "batch_size": 25}
    rows = run_entries(untied_host, trainer, {"name": "sgd", "lr": 0.5, "momentum": 0.9}, {
        "stop": {"trainer": {"lr_milestones": [1], "lr_gamma": 1e-9}},
        "identity": {"trainer": {"lr_milestones": [1, 2], "lr_gamma": 1.0}},
        "late": {"trainer": {"lr_milestones": [2], "lr_gamma": 1e-9}},
        "constant": {}})
    curves = {k: json.loads(r["curves_json"])["test_loss"] for k, r in rows.items()}
    assert curves["identity"] == pytest.approx(curves["constant"], rel=1e-6)
    assert curves["stop"][0] == pytest.approx(curves["constant"][0], rel=1e-6)
    # momentum carries a little of epoch 1's velocity into epoch 2, then it is spent
    assert curves["stop"][2] == pytest.approx(curves["stop"][1], rel=1e-4)
    assert curves["constant"][2] != pytest.approx(curves["constant"][1], rel=1e-3)
    assert curves["late"][:2] == pytest.approx(curves["constant"][:2], rel=1e-6)


def test_lr_milestones_need_a_rule_with_param_groups(untied_host):
    from untied_plugins.backprop.trainer import StepSchedule

    with pytest.raises(ValueError, match="no param_groups"):
        StepSchedule(object(), [5], 0.1)
    StepSchedule(object(), [], 0.1)            # no schedule: any rule


def test_best_metric_reports_the_best_epoch_and_leaves_training_unchanged(untied_host):
    trainer = {"name": "backprop", "epochs": 4, "batch_size": 25}
    rows = run_entries(untied_host, trainer, {"name": "sgd", "lr": 0.3}, {
        "best": {"trainer": {"best_metric": "test_accuracy"}},
        "loss": {"trainer": {"best_metric": "test_loss"}}, "plain": {}})
    best, plain = (json.loads(rows[k]["curves_json"]) for k in ("best", "plain"))
    assert best["test_accuracy"] == plain["test_accuracy"]
    row, acc = rows["best"], best["test_accuracy"]
    assert row["m_best_test_accuracy"] == max(acc)
    assert acc.index(max(acc)) == int(row["m_best_test_accuracy_epoch"]) - 1  # the first best
    assert row["m_test_accuracy"] == acc[-1]                    # the final value stays
    loss_curve = json.loads(rows["loss"]["curves_json"])["test_loss"]
    assert rows["loss"]["m_best_test_loss"] == min(loss_curve)  # lower is better for a loss
    assert "m_best_test_accuracy" not in rows["plain"]


def test_best_metric_that_is_not_logged_is_a_clear_error(untied_host):
    from untied_plugins.backprop.trainer import BestEpoch

    with pytest.raises(ValueError, match="'test_acc' is not logged.*test_accuracy"):
        BestEpoch("test_acc").update(1, {"test_accuracy": 0.5, "train_loss": 1.0})
