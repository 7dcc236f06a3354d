"""Methods that change a layer's backward pass, plugged in as a third party would
(tests/feedback_plugin.py): grouping never turns them into back-propagation, random streams
restart for every model build, the direction diagnostic compares them with the true gradient,
several reparametrizations apply in order, and the conformance kit fails an undeclared backward
change."""

from __future__ import annotations

import copy

import feedback_plugin
import polars as pl
import pytest
import torch

from bench_core.execution.runner import build_session, form_groups, run_plan
from bench_core.results.records import record_files
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand

SPEC = {
    "title": "backward methods", "metric": "test_accuracy", "baseline": "bp", "seeds": 2,
    "defaults": {"dataset": {"name": "digits", "train_subset": 300},
                 "model": {"name": "mlp", "hidden": [16]}, "activation": {"name": "relu"},
                 "rule": {"name": "sgd", "lr": 0.1},
                 "trainer": {"name": "backprop", "epochs": 3, "batch_size": 32}},
    "grid": {"rule.lr": [0.1, 0.3]},
    "entries": [{"label": "bp"},
                {"label": "fa", "overrides": {"reparametrization": {"name": "toy_feedback"}}},
                {"label": "halved",
                 "overrides": {"reparametrization": {"name": "toy_halve_grad"}}}],
}


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(feedback_plugin, "feedback")
    return untied_host


def values(host, spec, folder, *, group: bool) -> dict[tuple, float]:
    name, parsed = parse_spec(spec, stem="bw")
    plan = expand(host, name, parsed)
    run_plan(plan, folder, host=host, progress=False, group=group)
    frame = pl.concat([pl.read_parquet(p) for p in record_files(folder / "bw")],
                      how="diagonal_relaxed")
    return {(r["entry"], r["cell_json"], r["seed_index"]): r["m_test_accuracy"]
            for r in frame.iter_rows(named=True)}


def test_grouping_never_turns_a_backward_method_into_back_propagation(host, tmp_path):
    grouped = values(host, SPEC, tmp_path / "grouped", group=True)
    alone = values(host, SPEC, tmp_path / "alone", group=False)
    assert grouped == alone                       # every run, to the last digit
    for key, value in grouped.items():
        if key[0] != "bp":                        # and the methods are not back-propagation
            assert value != grouped[("bp", *key[1:])], key
    name, parsed = parse_spec(SPEC, stem="bw")
    units = form_groups(expand(host, name, parsed).tasks, host)
    for unit in units:                            # runs of another method never share a unit
        assert len({str(t.spec.get("reparametrization")) for t in unit}) == 1


def test_random_streams_restart_for_every_model_build(host):
    """A grouped run first builds its model to see whether it can be stacked and, when it
    cannot, trains it alone from a second build: both must draw the same feedback matrices."""
    name, parsed = parse_spec(SPEC, stem="bw")
    task = next(t for t in expand(host, name, parsed).tasks if t.entry == "fa")
    from bench_core.interfaces import RunContext

    session = build_session(host, task, RunContext(seed=task.seed, device=torch.device("cpu")))
    first, second = session.build_model(), session.build_model()
    assert torch.equal(first[1].feedback, second[1].feedback)
    assert not torch.equal(first[1].feedback, first[1].weight.detach())
    # a stream asked for outside a build goes on as before (one generator per run)
    gen = session.ctx.generator("toy_feedback")
    assert session.ctx.generator("toy_feedback") is gen


def test_the_direction_diagnostic_compares_with_the_true_gradient(host, tmp_path):
    spec = copy.deepcopy(SPEC)
    spec["defaults"]["trainer"]["direction_diagnostic"] = True
    spec["columns"] = ["direction_cosine"]
    spec["entries"] = spec["entries"][:2]
    spec["grid"] = {}
    name, parsed = parse_spec(spec, stem="bw")
    plan = expand(host, name, parsed)
    run_plan(plan, tmp_path, host=host, progress=False)
    frame = pl.concat([pl.read_parquet(p) for p in record_files(tmp_path / "bw")],
                      how="diagonal_relaxed")
    cosine = {r["entry"]: r["m_direction_cosine"] for r in frame.iter_rows(named=True)}
    assert cosine["bp"] == pytest.approx(1.0)
    assert cosine["fa"] < 0.99                    # the feedback path is not W^T


def test_several_reparametrizations_apply_in_order(host):
    spec = copy.deepcopy(SPEC)
    spec["entries"] = [{"label": "bp"}, {"label": "both", "overrides": {"reparametrization": [
        {"name": "toy_feedback"}, {"name": "toy_scale", "factor": 3.0}]}}]
    name, parsed = parse_spec(spec, stem="bw")
    plan = expand(host, name, parsed)
    task = next(t for t in plan.tasks if t.entry == "both")
    assert [t["name"] for t in task.spec["reparametrization"]] == ["toy_feedback", "toy_scale"]
    from bench_core.interfaces import RunContext

    session = build_session(host, task, RunContext(seed=task.seed, device=torch.device("cpu")))
    model = session.build_model()
    assert type(model).__name__ == "_Scaled" and hasattr(model.inner[1], "feedback")
    twin = session.build_model(tied=True)          # the feedback declares tied; scaling does not
    assert type(twin).__name__ == "_Scaled" and not hasattr(twin.inner[1], "feedback")
    with pytest.raises(Exception, match="reparametrization: an empty list"):
        spec["entries"][1]["overrides"]["reparametrization"] = []
        expand(host, *parse_spec(spec, stem="bw"))


def test_the_kit_fails_a_backward_change_that_is_not_declared(host):
    from bench_core.kit.check import check_plugin

    report = check_plugin("feedback_plugin")
    seen = {(c.component, c.check): (c.status, c.message) for c in report.checks}
    status, message = seen[("reparametrization toy_halve_grad", "tied twin")]
    assert status == "fail" and "declare the keyword `tied`" in message
    assert seen[("reparametrization toy_feedback", "tied twin")][0] == "pass"
    assert seen[("reparametrization toy_scale", "tied twin")][0] == "pass"
