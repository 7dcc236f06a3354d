"""Leaderboard specs: validation errors name the path, value and choices; expansion; seeds."""

from __future__ import annotations

import pytest

from bench_core.errors import SpecError
from bench_core.plugins import get_host
from bench_core.specs.model import load_spec, merge, parse_spec
from bench_core.specs.plan import expand


def plan_of(raw, **kw):
    name, spec = parse_spec(raw)
    return expand(get_host(), name, spec, **kw)


def error_of(raw, **kw) -> str:
    with pytest.raises(SpecError) as err:
        plan_of(raw, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_expansion_entries_cells_seeds(fast_spec):
    plan = plan_of(fast_spec)
    assert len(plan.tasks) == 2 * 2 * 2
    assert len({t.run_id for t in plan.tasks}) == 8
    t = next(t for t in plan.tasks if t.entry == "const")
    assert t.spec["surrogate"] == {"name": "constant", "scale": 1.0}
    assert t.spec["rule"]["lr"] == t.cell["rule.lr"]
    assert t.spec["trainer"]["loss"] == "cross_entropy"  # defaults filled in


def test_entries_of_a_cell_share_the_seed_cells_and_seeds_differ(fast_spec):
    plan = plan_of(fast_spec)
    by = {(t.entry, t.cell["rule.lr"], t.seed_index): t.seed for t in plan.tasks}
    assert by[("tied", 0.2, 0)] == by[("const", 0.2, 0)]
    assert by[("tied", 0.2, 0)] != by[("tied", 0.5, 0)]
    assert by[("tied", 0.2, 0)] != by[("tied", 0.2, 1)]
    again = plan_of(fast_spec)
    assert [t.seed for t in again.tasks] == [t.seed for t in plan.tasks]
    assert [t.run_id for t in again.tasks] == [t.run_id for t in plan.tasks]


def test_run_id_ignores_spelling_of_defaults(fast_spec):
    before = {t.run_id for t in plan_of(fast_spec).tasks}
    fast_spec["defaults"]["trainer"]["loss"] = "cross_entropy"  # the default, written out
    assert {t.run_id for t in plan_of(fast_spec).tasks} == before


def test_unknown_dataset_names_choices(fast_spec):
    fast_spec["defaults"]["dataset"] = {"name": "digit"}
    msg = error_of(fast_spec)
    assert msg.startswith("dataset.name: unknown dataset 'digit'; did you mean 'digits'?")
    assert "choices:" in msg and "ones" in msg


def test_unknown_parameter_suggests(fast_spec):
    fast_spec["defaults"]["rule"]["learning_rate"] = 0.1
    msg = error_of(fast_spec)
    assert "rule.learning_rate: unknown parameter of update_rule 'sgd'" in msg
    assert "parameters: lr, momentum" in msg


def test_wrong_type_names_path_and_value(fast_spec):
    fast_spec["defaults"]["trainer"]["epochs"] = "many"
    msg = error_of(fast_spec)
    assert msg.startswith("trainer.epochs:") and "'many'" in msg


def test_out_of_range_value_in_an_entry_names_the_entry(fast_spec):
    fast_spec["entries"][1]["overrides"] = {"rule.lr": -1}
    msg = error_of(fast_spec)
    assert "rule.lr: Input should be greater than 0 (got -1)" in msg
    assert "entry 'const'" in msg


def test_bad_baseline_and_structure_errors(fast_spec):
    fast_spec["baseline"] = "tide"
    assert "did you mean 'tied'" in error_of(fast_spec)
    fast_spec["baseline"] = "tied"
    fast_spec["grdi"] = {}
    assert error_of(fast_spec).startswith("spec: grdi: unknown field")


def test_missing_component_and_unknown_run_field(fast_spec):
    del fast_spec["defaults"]["trainer"]
    assert error_of(fast_spec).startswith("trainer: missing")
    fast_spec["defaults"]["trainer"] = {"name": "backprop"}
    fast_spec["defaults"]["optimizer"] = {"name": "sgd"}
    assert "did you mean" in error_of(fast_spec) or "unknown run field" in error_of(fast_spec)


def test_component_name_change_drops_old_params():
    base = {"surrogate": {"name": "rect", "width": 2.0}}
    assert merge(base, {"surrogate.name": "constant"}) == {"surrogate": {"name": "constant"}}
    assert merge(base, {"surrogate.width": 3.0}) == {"surrogate": {"name": "rect", "width": 3.0}}


def test_profiles_overlay_and_seeds(fast_spec):
    fast_spec["profiles"] = {"tiny": {"description": "1 epoch", "seeds": 1,
                                      "defaults": {"trainer.epochs": 1},
                                      "grid": {"rule.lr": [0.3]}, "entries": ["tied"]}}
    plan = plan_of(fast_spec, profile="tiny")
    assert len(plan.tasks) == 1 and plan.tasks[0].spec["trainer"]["epochs"] == 1
    assert plan.tasks[0].profile == "tiny"
    assert len(plan_of(fast_spec, seeds=5).tasks) == 5 * 4
    assert "profiles: tiny" in error_of(fast_spec, profile="tyni")


def test_reference_attached_to_its_cell(fast_spec):
    fast_spec["reference"] = [{"entry": "tied", "cell": {"rule.lr": 0.2}, "value": 0.9,
                               "std": 0.01}]
    refs = {(t.entry, t.cell["rule.lr"]): t.reference for t in plan_of(fast_spec).tasks}
    assert refs[("tied", 0.2)] == 0.9 and refs[("tied", 0.5)] is None
    assert refs[("const", 0.2)] is None


def test_referenced_only_profile_runs_the_pairs_with_a_reference(fast_spec):
    fast_spec["reference"] = [
        {"entry": "tied", "cell": {"rule.lr": 0.2}, "value": 0.9},
        {"entry": "const", "value": 0.5},                      # every cell
        {"entry": "tied", "cell": {"rule.lr": 0.5}, "value": 0.1, "metric": "test_loss"}]
    fast_spec["metrics"] = ["test_loss"]
    fast_spec["profiles"] = {"paper": {"referenced_only": True},
                             "none": {"referenced_only": True, "entries": ["tied"],
                                      "grid": {"rule.lr": [0.7]}}}
    plan = plan_of(fast_spec, profile="paper")
    pairs = {(t.entry, t.cell["rule.lr"]) for t in plan.tasks}
    assert pairs == {("tied", 0.2), ("const", 0.2), ("const", 0.5)}   # not another metric's
    assert len(plan.tasks) == 3 * 2 and all(t.reference is not None for t in plan.tasks)
    assert {t.run_id for t in plan.tasks} <= {t.run_id for t in plan_of(fast_spec).tasks}
    assert "referenced_only, but no entry has a reference" in error_of(fast_spec, profile="none")


def test_a_profile_may_run_only_some_pairs_of_its_grid(fast_spec):
    fast_spec["profiles"] = {"two": {"pairs": [{"entry": "tied", "cell": {"rule.lr": 0.2}},
                                               {"entry": "const", "cell": {"rule.lr": 0.5}}]},
                             "none": {"pairs": [{"entry": "tied", "cell": {"rule.lr": 0.9}}]},
                             "bad": {"pairs": [{"entry": "tide"}]}}
    plan = plan_of({**fast_spec, "profiles": {"two": fast_spec["profiles"]["two"]}},
                   profile="two")
    assert {(t.entry, t.cell["rule.lr"]) for t in plan.tasks} == {("tied", 0.2), ("const", 0.5)}
    full = plan_of({**fast_spec, "profiles": {}})
    assert {t.run_id for t in plan.tasks} <= {t.run_id for t in full.tasks}   # the same runs
    assert "none of its pairs" in error_of(
        {**fast_spec, "profiles": {"none": fast_spec["profiles"]["none"]}}, profile="none")
    with pytest.raises(SpecError, match=r"pairs\[0\].entry: 'tide' is not an entry label; "
                                        r"did you mean 'tied'"):
        parse_spec(fast_spec)


def test_toml_errors_and_builtin_names(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("title = \n")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="built-ins: .*quickstart"):
        load_spec("quickstrat")
    name, spec = load_spec("quickstart")
    assert name == "quickstart" and spec.baseline


def test_every_shipped_leaderboard_validates():
    from bench_core.specs.model import builtin_leaderboards

    for name in builtin_leaderboards():
        n, spec = load_spec(name)
        for prof in [None, *spec.profiles]:
            # a spec that selects a parameter knows its selection runs; its final runs follow
            assert expand(get_host(), n, spec, profile=prof).all_tasks


def test_a_parameter_added_with_a_default_changes_no_seed_or_run_id():
    """Run identity holds only parameters that differ from their defaults, so a plugin that
    grows a new option (with a default) keeps every earlier run resumable and every seed."""
    import types

    from pydantic import BaseModel, ConfigDict

    from bench_core.hookspecs import hookimpl
    from bench_core.plugins import PluginHost

    def host_with(params):
        mod = types.ModuleType("growing")

        @hookimpl
        def register_update_rules(register):
            register("growing", lambda p, *, model, ctx: None, params=params,
                     description="a rule that gains an option")

        mod.register_update_rules = register_update_rules
        host = PluginHost()
        host.load_entry_points()
        host.add_plugin(mod, "growing")
        return host

    class V1(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lr: float = 0.1

    class V2(V1):
        momentum: float = 0.0

    raw = {"title": "g", "seeds": 2,
           "defaults": {"dataset": {"name": "digits"}, "model": {"name": "mlp"},
                        "activation": {"name": "relu"}, "rule": {"name": "growing", "lr": 0.3},
                        "trainer": {"name": "backprop"}},
           "entries": [{"label": "a"}]}
    name, spec = parse_spec(raw)
    one = expand(host_with(V1), name, spec).tasks
    two = expand(host_with(V2), name, spec).tasks
    assert [(t.run_id, t.seed) for t in one] == [(t.run_id, t.seed) for t in two]
    assert two[0].spec["rule"] == {"name": "growing", "lr": 0.3, "momentum": 0.0}
    raw["defaults"]["rule"]["momentum"] = 0.9                  # a real change: a new run
    assert expand(host_with(V2), *parse_spec(raw)).tasks[0].run_id != two[0].run_id


def test_execution_options_identify_the_run_but_not_its_seed():
    """A parameter declared with execution_option (compile, a diagnostic, an evaluation
    interval) gives a new run id but the same seed: both runs see the same data, weights and
    batches. A toy trainer: no built-in method involved."""
    import types

    from pydantic import BaseModel, ConfigDict

    from bench_core.hookspecs import hookimpl
    from bench_core.interfaces import execution_option
    from bench_core.plugins import PluginHost

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        epochs: int = 1
        log_every: int = execution_option(1, ge=1)

    mod = types.ModuleType("toy_trainer")

    @hookimpl
    def register_trainers(register):
        register("toy", lambda p: None, params=Params, description="a toy trainer")

    mod.register_trainers = register_trainers
    host = PluginHost()
    host.load_entry_points()
    host.add_plugin(mod, "toy_trainer")

    def first(trainer):
        raw = {"title": "x", "seeds": 1, "entries": [{"label": "a"}],
               "defaults": {"dataset": {"name": "digits"}, "model": {"name": "mlp"},
                            "activation": {"name": "relu"}, "rule": {"name": "sgd"},
                            "trainer": {"name": "toy", **trainer}}}
        return expand(host, *parse_spec(raw)).tasks[0]

    plain, logged, longer = first({}), first({"log_every": 5}), first({"epochs": 2})
    assert logged.seed == plain.seed and logged.run_id != plain.run_id
    assert longer.seed != plain.seed and longer.run_id != plain.run_id
