"""Grouped runs of the backprop trainer equal one-by-one runs: SGD (momentum, Nesterov, weight
decay) and Adam with different rates per run, deterministic surrogates, the direction
diagnostic, and the runs that cannot be stacked (trained alone inside their group)."""

from __future__ import annotations

import polars as pl
import pytest

from bench_core.execution.runner import form_groups, run_plan
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def spec(rules, *, surrogate=None, model=None, trainer=None, seeds=2):
    defaults = {
        "dataset": {"name": "digits", "train_subset": 200},
        "model": model or {"name": "mlp", "hidden": [12, 8]},
        "activation": {"name": "logistic"},
        "rule": {"name": "sgd", "lr": 0.1},
        "trainer": {"name": "backprop", "epochs": 2, "batch_size": 16, **(trainer or {})},
    }
    if surrogate:
        defaults["surrogate"] = surrogate
    return {"title": "g", "seeds": seeds, "defaults": defaults,
            "entries": [{"label": f"r{i}", "overrides": {"rule": r}} for i, r in enumerate(rules)]}


def run(host, raw, folder, **kw) -> pl.DataFrame:
    name, parsed = parse_spec(raw, stem="g")
    plan = expand(host, name, parsed)
    summary = run_plan(plan, folder, host=host, progress=False, **kw)
    assert summary.failed == 0, summary
    return pl.concat([pl.read_parquet(p) for p in record_files(folder / "g")],
                     how="diagonal_relaxed").sort("run_id")


def assert_same(host, raw, tmp_path, cols=("m_test_accuracy", "m_test_loss", "m_train_loss")):
    grouped = run(host, raw, tmp_path / "a")
    single = run(host, raw, tmp_path / "b", group=False)
    for col in cols:
        assert grouped[col].to_list() == pytest.approx(single[col].to_list(), rel=1e-5,
                                                       abs=1e-6), col
    assert grouped["backward_samples"].to_list() == single["backward_samples"].to_list()
    assert grouped["forward_passes"].to_list() == single["forward_passes"].to_list()
    return grouped


SGD_RULES = [{"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.2, "momentum": 0.9},
             {"name": "sgd", "lr": 0.1, "momentum": 0.5, "nesterov": True,
              "weight_decay": 0.01}]


def test_sgd_variants_grouped_equal_one_by_one(untied_host, tmp_path):
    grouped = assert_same(untied_host, spec(SGD_RULES), tmp_path)
    assert grouped["group_size"].max() == 6


def test_adam_with_different_rates_grouped_equal_one_by_one(untied_host, tmp_path):
    rules = [{"name": "adam", "lr": 1e-3}, {"name": "adam", "lr": 1e-2, "beta1": 0.8,
                                            "weight_decay": 1e-3}]
    assert assert_same(untied_host, spec(rules), tmp_path)["group_size"].max() == 4


@pytest.mark.parametrize("surrogate", [{"name": "constant"}, {"name": "rect", "width": 0.5},
                                       {"name": "swish_sign", "beta": 2.0}])
def test_deterministic_surrogates_and_the_diagnostic_grouped(untied_host, tmp_path, surrogate):
    raw = spec(SGD_RULES[:2], surrogate=surrogate, trainer={"direction_diagnostic": True})
    grouped = assert_same(untied_host, raw, tmp_path,
                          cols=("m_test_accuracy", "m_train_loss", "m_direction_cosine"))
    assert grouped["group_size"].max() == 4


def test_single_output_and_mse_grouped(untied_host, tmp_path):
    raw = spec(SGD_RULES[:2], model={"name": "suc"}, trainer={"loss": "mse"})
    raw["defaults"]["dataset"] = {"name": "ones", "dim": 6, "n_samples": 200}
    assert_same(untied_host, raw, tmp_path)


def test_runs_that_cannot_be_stacked_are_trained_alone(untied_host, tmp_path):
    raw = spec(SGD_RULES[:1] + [{"name": "sgd", "lr": 0.1, "clip_norm": 1.0}],
               surrogate={"name": "full_jamming"}, model={"name": "mlp", "hidden": [8]})
    grouped = assert_same(untied_host, raw, tmp_path)
    assert grouped["group_size"].max() == 4              # one group, every run trained alone


def test_group_key_keeps_models_and_rule_kinds_apart(untied_host):
    name, parsed = parse_spec(spec(SGD_RULES + [{"name": "adam"}]), stem="g")
    units = form_groups(expand(untied_host, name, parsed).tasks, untied_host)
    assert sorted(len(u) for u in units) == [2, 6]


def test_convolutional_runs_are_their_own_units(untied_host):
    """LeNet5 runs are never stacked, so they are not grouped at all: each is recorded as it
    finishes and can go to its own worker."""
    raw = spec(SGD_RULES, model={"name": "lenet5"})
    name, parsed = parse_spec(raw, stem="g")
    units = form_groups(expand(untied_host, name, parsed).tasks, untied_host)
    assert [len(u) for u in units] == [1] * 6


def test_summed_loss_and_epoch_size_grouped_equal_one_by_one(untied_host, tmp_path):
    raw = spec([{"name": "sgd", "lr": 0.005}, {"name": "sgd", "lr": 0.01, "momentum": 0.5}],
               trainer={"loss_reduction": "sum", "epoch_size": 300})
    grouped = assert_same(untied_host, raw, tmp_path)
    assert grouped["group_size"].max() == 4 and set(grouped["backward_samples"]) == {600}


def test_inputs_gathered_a_few_batches_ahead_equal_one_by_one(untied_host, tmp_path,
                                                                 monkeypatch):
    """A stack gathers its runs' inputs ``span`` samples ahead (GATHER_BYTES); with a span of 3
    batches that divides neither the epoch (300 samples) nor ends with it, runs still equal
    one-by-one runs."""
    from untied_plugins.backprop import grouped as grouped_backprop

    rules = [{"name": "sgd", "lr": 0.05}, {"name": "sgd", "lr": 0.1, "momentum": 0.5}]
    row_bytes = 4 * 64 * 4                      # 4 runs x 64 float32 inputs
    monkeypatch.setattr(grouped_backprop, "GATHER_BYTES", row_bytes * 16 * 3)
    grouped = assert_same(untied_host, spec(rules, trainer={"epoch_size": 300}), tmp_path)
    assert grouped["group_size"].max() == 4 and set(grouped["backward_samples"]) == {600}


def test_the_builtin_mlp_is_stacked(untied_host, tmp_path):
    """The grouped tests above compare numbers; this one checks the stack really forms for the
    built-in ``mlp`` (a LayeredSequential), so that they do not pass with every run alone."""
    import torch
    from untied_plugins.backprop.grouped import StackedMember

    from bench_core.execution.runner import build_session
    from bench_core.interfaces import RunContext

    name, parsed = parse_spec(spec(SGD_RULES), stem="g")
    tasks = expand(untied_host, name, parsed).tasks
    members = [StackedMember.prepare(build_session(untied_host, t, RunContext(
        t.seed, torch.device("cpu")))) for t in tasks]
    assert all(m is not None for m in members)
    assert len({m.signature() for m in members}) == 1


def test_a_stacked_run_does_not_depend_on_its_partners_to_the_last_bit(untied_host, tmp_path):
    """Stacks of 2 and of 4 give every run the same bits (a step forward would amplify any
    difference), so a replay may stand a twin in for the original partners; the same runs
    trained alone differ (other kernels), which is why records keep ``stack_size``."""
    rules = [{"name": "sgd", "lr": lr} for lr in (0.05, 0.2)]
    raw = spec(rules, surrogate={"name": "superspike"}, trainer={"epochs": 4})
    raw["defaults"]["activation"] = {"name": "step"}
    cols = ["m_test_accuracy", "m_test_loss", "m_train_loss"]
    four = run(untied_host, raw, tmp_path / "a")
    two = run(untied_host, raw, tmp_path / "b", max_group_size=2)
    alone = run(untied_host, raw, tmp_path / "c", group=False)
    assert four["stack_size"].to_list() == [4] * 4 and two["stack_size"].to_list() == [2] * 4
    assert alone["stack_size"].to_list() == [1] * 4
    assert four.select(cols).rows() == two.select(cols).rows()
    assert four.select(cols).rows() != alone.select(cols).rows()
