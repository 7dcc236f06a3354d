"""The plugin host: entry-point loading, strict hook validation, clashes, env controls."""

from __future__ import annotations

import pytest

from bench_core.errors import PluginError
from bench_core.plugins import PluginHost

GOOD = """
from pydantic import BaseModel, ConfigDict, Field
from bench_core.hookspecs import hookimpl

class P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(0.1, gt=0)

def halve(params, *, model, ctx):
    '''An update rule that exists only in this test.'''
    import torch
    return torch.optim.SGD(model.parameters(), lr=params.lr / 2)

@hookimpl
def register_update_rules(register):
    register("halved_sgd", halve, params=P)
"""


def load(**env) -> PluginHost:
    host = PluginHost()
    host.load_entry_points()
    host.collect()
    return host


def test_builtins_come_from_entry_points_of_this_distribution():
    host = load()
    builtin = {p.name for p in host.plugins.values() if p.builtin}
    # one plugin per origin, the host's own
    assert builtin == {"host", "backprop", "troiano", "datasets", "dual_weight", "separated",
                       "mono_forward", "library_surrogates", "perturbation",
                       "feedback_alignment", "forward_forward", "dask"}
    assert all(p.distribution == "untied-bench" for p in host.plugins.values() if p.builtin)
    assert "sgd" in host.family("update_rules") and "digits" in host.family("datasets")


def test_external_package_plugin_is_loaded_with_distribution_and_version(installed):
    installed("untied-halved", {"halved": "fakeplug_halved"}, {"fakeplug_halved": GOOD})
    host = load()
    info = host.plugins["halved"]
    assert (info.distribution, info.version, info.hooks) == (
        "untied-halved", "1.2.3", ["register_update_rules"])
    comp = host.get("update_rules", "halved_sgd")
    assert comp.plugin == "halved" and comp.description.startswith("An update rule")
    assert host.versions()["halved"] == "untied-halved==1.2.3"


def test_unknown_hook_is_rejected_and_others_still_load(installed):
    bad = "from bench_core.hookspecs import hookimpl\n@hookimpl\ndef register_optimisers(register):\n    pass\n"
    installed("untied-bad", {"bad": "fakeplug_bad"}, {"fakeplug_bad": bad})
    installed("untied-halved", {"halved": "fakeplug_halved"}, {"fakeplug_halved": GOOD})
    host = load()
    assert "unknown hook(s) register_optimisers" in host.plugins["bad"].error
    assert "halved_sgd" in host.family("update_rules")


def test_wrong_hook_argument_is_rejected(installed):
    bad = "from bench_core.hookspecs import hookimpl\n@hookimpl\ndef register_models(registry):\n    pass\n"
    installed("untied-badarg", {"badarg": "fakeplug_badarg"}, {"fakeplug_badarg": bad})
    host = load()
    assert host.plugins["badarg"].error.startswith("rejected:")
    assert "registry" in host.plugins["badarg"].error


def test_import_failure_is_reported_by_name_and_others_still_load(installed):
    installed("untied-broken", {"broken": "fakeplug_broken"},
              {"fakeplug_broken": "raise RuntimeError('boom at import')\n"})
    installed("untied-halved", {"halved": "fakeplug_halved"}, {"fakeplug_halved": GOOD})
    host = load()
    err = host.plugins["broken"].error
    assert "failed to import fakeplug_broken" in err and "boom at import" in err
    assert "halved_sgd" in host.family("update_rules")
    with pytest.raises(PluginError) as err:
        host.get("update_rules", "nosuch")
    # the plugin and why, in the one line
    assert "plugins that failed to load: 'broken' (failed to import fakeplug_broken: " \
           "RuntimeError: boom at import)" in str(err.value) and "\n" not in str(err.value)


def test_a_component_without_description_loads_and_the_kit_says_what_to_add(installed):
    src = GOOD.replace('register("halved_sgd", halve, params=P)',
                       'register("halved_sgd", lambda p, *, model, ctx: halve(p, model=model, '
                       'ctx=ctx), params=P)')
    installed("untied-undescribed", {"undescribed": "fakeplug_undescribed"},
              {"fakeplug_undescribed": src})
    host = load()
    assert host.plugins["undescribed"].error is None
    assert host.family("update_rules")["halved_sgd"].description == "(no description)"
    from bench_core.kit.check import check_plugin

    checks = {c.check: c for c in check_plugin("untied-undescribed").checks
              if c.component == "update_rule halved_sgd"}
    assert checks["parameters"].status == "fail"
    assert "registered without a description" in checks["parameters"].message


def test_raising_register_hook_drops_only_that_plugin(installed):
    src = GOOD.replace('register("halved_sgd", halve, params=P)',
                       'register("halved_sgd", halve, params=P)\n    raise ValueError("half-way")')
    installed("untied-raiser", {"raiser": "fakeplug_raiser"}, {"fakeplug_raiser": src})
    host = load()
    assert "register_update_rules raised ValueError: half-way" in host.plugins["raiser"].error
    assert "halved_sgd" not in host.family("update_rules")
    assert "sgd" in host.family("update_rules")


def test_name_clash_names_both_plugins(installed):
    installed("untied-one", {"one": "fakeplug_one"}, {"fakeplug_one": GOOD})
    installed("untied-two", {"two": "fakeplug_two"}, {"fakeplug_two": GOOD})
    host = PluginHost()
    host.load_entry_points()
    host.collect()                       # the later plugin is dropped, the others carry on
    msg = host.plugins["two"].error
    assert "'halved_sgd'" in msg and "'one'" in msg and "'two'" in msg
    assert host.get("update_rules", "halved_sgd").plugin == "one"
    assert [p.name for p in host.failures()] == ["two"]


def test_clash_with_a_builtin_names_both():
    import types

    from bench_core.hookspecs import hookimpl

    mod = types.ModuleType("dup")

    @hookimpl
    def register_update_rules(register):
        register("sgd", lambda params, *, model, ctx: None, description="another sgd")

    mod.register_update_rules = register_update_rules
    host = PluginHost()
    host.load_entry_points()
    host.add_plugin(mod, "dup")
    host.collect()
    assert "by plugin 'backprop' and by plugin 'dup'" in host.plugins["dup"].error
    assert host.get("update_rules", "sgd").plugin == "backprop"   # the built-in stays


@pytest.mark.parametrize("name", ["Bad", "1x", "has-dash", ""])
def test_invalid_component_names_fail_the_plugin(name):
    import types

    from bench_core.hookspecs import hookimpl

    mod = types.ModuleType("badname")

    @hookimpl
    def register_models(register):
        register(name, lambda params, **kw: None, description="x")

    mod.register_models = register_models
    host = PluginHost()
    host.add_plugin(mod, "badname")
    host.collect()
    assert "invalid models name" in host.plugins["badname"].error


def test_untied_plugins_env_restricts_to_builtins_plus_named(installed, monkeypatch):
    installed("untied-halved", {"halved": "fakeplug_halved"}, {"fakeplug_halved": GOOD})
    monkeypatch.setenv("UNTIED_PLUGINS", "")
    assert "halved" not in load().plugins
    monkeypatch.setenv("UNTIED_PLUGINS", "halved")
    assert "halved" in load().plugins


def test_untied_disable_plugins_skips_named(installed, monkeypatch):
    installed("untied-halved", {"halved": "fakeplug_halved"}, {"fakeplug_halved": GOOD})
    monkeypatch.setenv("UNTIED_DISABLE_PLUGINS", "halved, troiano, host")
    host = load()
    assert "halved" not in host.plugins and "troiano" not in host.plugins
    assert "backprop" in host.plugins
    assert "local" in host.family("executors")   # the host's own executors cannot be disabled


def test_unknown_family_and_component_suggest():
    host = load()
    with pytest.raises(PluginError, match="did you mean 'datasets'"):
        host.family("dataset")
    with pytest.raises(PluginError, match="did you mean 'digits'.*choices: "):
        host.get("datasets", "digit")


def test_a_nested_parameter_table_default_is_listed_as_a_plain_table():
    from pydantic import BaseModel, ConfigDict, Field

    from bench_core.plugins import Component

    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lr: float = 0.1

    class Outer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inner: Inner = Field(default_factory=Inner)

    comp = Component("update_rules", "nested", lambda p: None, Outer, "nested", "test")
    assert comp.parameters()[0]["default"] == {"lr": 0.1}
