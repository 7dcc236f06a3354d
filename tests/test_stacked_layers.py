"""A layer type says how its instances stack (bench_core.grouping.stack_rule), and the
``backprop`` trainer's grouped form then stacks it without knowing it: tested with a toy layer
(tests/stack_plugin.py), no built-in method involved."""

from __future__ import annotations

import polars as pl
import pytest
import stack_plugin

from bench_core.execution.runner import run_plan
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def spec(reparam: dict) -> dict:
    return {"title": "st", "seeds": 2, "defaults": {
        "dataset": {"name": "digits", "train_subset": 200},
        "model": {"name": "toy_plain_mlp", "hidden": 12}, "activation": {"name": "tanh"},
        "rule": {"name": "sgd", "lr": 0.1}, "reparametrization": reparam,
        "trainer": {"name": "backprop", "epochs": 2, "batch_size": 16}},
        "entries": [{"label": "a"},
                    {"label": "b", "overrides": {"rule": {"name": "sgd", "lr": 0.3,
                                                          "momentum": 0.9}}}]}


def run(host, raw, folder, **kw) -> pl.DataFrame:
    name, parsed = parse_spec(raw, stem="st")
    run_plan(expand(host, name, parsed), folder, host=host, progress=False, **kw)
    return pl.concat([pl.read_parquet(p) for p in record_files(folder / "st")],
                     how="diagonal_relaxed").sort("run_id")


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(stack_plugin, "stack")
    stack_plugin.STACKS.clear()
    return untied_host


def test_a_layer_type_that_says_how_it_stacks_is_stacked(host, tmp_path):
    raw = spec({"name": "toy_scaled", "scale": 0.5})
    grouped = run(host, raw, tmp_path / "g")
    assert stack_plugin.STACKS == [4, 4]          # both layers, the four runs in one stack
    alone = run(host, raw, tmp_path / "a", group=False)
    assert grouped["m_test_accuracy"].to_list() == alone["m_test_accuracy"].to_list()
    for col in ("m_test_loss", "m_train_loss"):
        assert grouped[col].to_list() == pytest.approx(alone[col].to_list(), rel=1e-5)
    assert grouped["m_test_loss"].to_list() != run(
        host, spec({"name": "toy_scaled", "scale": 0.25}), tmp_path / "s")["m_test_loss"].to_list()


def test_an_instance_that_declines_is_trained_alone(host, tmp_path):
    grouped = run(host, spec({"name": "toy_scaled", "stackable": False}), tmp_path / "g")
    assert stack_plugin.STACKS == []
    alone = run(host, spec({"name": "toy_scaled", "stackable": False}), tmp_path / "a",
                group=False)
    assert grouped["m_test_loss"].to_list() == alone["m_test_loss"].to_list()
