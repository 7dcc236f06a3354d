"""``compile = true`` on the backprop trainer, and graph breaks of the built-in autograd
Functions under torch.compile (target: 0). The counts are printed (pytest -s shows them)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from bench_core.interfaces import DataInfo, RunContext
from bench_core.specs.plan import resolve_component

SURROGATES = [{"name": "tied"}, {"name": "constant"}, {"name": "rect"},
              {"name": "rect", "low_memory": True}, {"name": "triangular"},
              {"name": "d_logistic"}, {"name": "full_jamming"}, {"name": "positive_jamming"},
              {"name": "rect_jamming", "low_memory": True}]


def model_with(host, surrogate, activation="relu"):
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    act_comp, act_params = resolve_component(host, "activation", {"name": activation})
    act = act_comp.factory(act_params)
    s_comp, s_params = resolve_component(host, "surrogate", surrogate)
    m_comp, m_params = resolve_component(host, "model", {"name": "mlp", "hidden": [16, 8]})
    return m_comp.factory(m_params, data=DataInfo("t", (12,), 3),
                          activation=lambda: s_comp.factory(s_params, activation=act, ctx=ctx),
                          ctx=ctx)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: "-".join(map(str, s.values())))
def test_surrogate_training_step_has_no_graph_break(untied_host, surrogate):
    model = model_with(untied_host, surrogate)
    x, y = torch.randn(5, 12), torch.randint(3, (5,))

    def step(x, y):
        return torch.nn.functional.cross_entropy(model(x), y)

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(step)(x, y)
    print(f"graph breaks with {surrogate}: {explanation.graph_break_count}")
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_compile_option_disables_grouping(untied_host):
    comp, params = resolve_component(untied_host, "trainer", {"name": "backprop",
                                                              "compile": True})
    trainer = comp.factory(params)
    assert trainer.group_key({"dataset": {}, "model": {}, "rule": {"name": "sgd"}}) is None


@pytest.mark.slow
def test_compiled_training_matches_eager(untied_host, fast_spec, tmp_path):
    import copy

    from bench_core.testing import run_spec

    raw = copy.deepcopy(fast_spec)
    raw["defaults"]["surrogate"] = {"name": "rect"}
    raw["grid"] = {}
    # The test loss, not the accuracy: after 2 epochs the logits are still nearly uniform, so
    # float-reordering differences of ~1e-6 flip argmaxes (accuracy moved by 0.05 here), while
    # the loss moves by about as much as the floats do.
    raw["metric"], raw["higher_is_better"] = "test_loss", False
    eager = run_spec(untied_host, raw, tmp_path / "e", seeds=1)
    raw["defaults"]["trainer"]["compile"] = True
    compiled = run_spec(untied_host, raw, tmp_path / "c", seeds=1)
    assert compiled["n"].to_list() == [1, 1]
    assert compiled["mean"].to_list() == pytest.approx(eager["mean"].to_list(), rel=1e-3)
