"""The backprop trainer's `autocast = "bfloat16"` execution option: the training forward runs in
bfloat16 (weights stay float32), the run is paired with the float32 one (same seed, new run id)
and learns; its numbers differ from float32's."""

from __future__ import annotations

import torch

from bench_core.execution.runner import build_session, build_trainer
from bench_core.interfaces import RunContext
from bench_core.plugins import get_host
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


def plan(autocast: str):
    trainer = {"name": "backprop", "epochs": 3, "batch_size": 64}
    if autocast != "none":
        trainer["autocast"] = autocast
    raw = {"title": "amp", "seeds": 1, "metric": "test_accuracy",
           "defaults": {"dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
                        "activation": {"name": "relu"}, "rule": {"name": "sgd", "lr": 0.1},
                        "trainer": trainer},
           "entries": [{"label": "BP"}]}
    name, spec = parse_spec(raw, stem="amp")
    return expand(get_host(), name, spec).tasks[0]


def test_bfloat16_autocast_trains_paired_with_float32():
    host = get_host()
    seen = []

    def train(task):
        ctx = RunContext(seed=task.seed, device=torch.device("cpu"))
        session = build_session(host, task, ctx)
        model = session.build_model()
        model.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        session.build_model = lambda tied=False: model
        return build_trainer(host, task.spec).fit(session), model

    full, amp = plan("none"), plan("bfloat16")
    assert full.seed == amp.seed and full.run_id != amp.run_id
    m32, model32 = train(full)
    assert set(seen) == {torch.float32}
    seen.clear()
    m16, model16 = train(amp)
    assert torch.bfloat16 in seen                      # training forwards ran in bfloat16
    assert all(p.dtype == torch.float32 for p in model16.parameters())
    assert m16["test_accuracy"] > 0.5 and m32["test_accuracy"] > 0.5  # chance: 0.1
    assert m16["train_loss"] != m32["train_loss"]


def test_autocast_runs_are_not_grouped():
    host = get_host()
    assert build_trainer(host, plan("bfloat16").spec).group_key(plan("bfloat16").spec) is None
    assert build_trainer(host, plan("none").spec).group_key(plan("none").spec) is not None
