"""The forward_forward trainer (Hinton 2022, Sections 2 and 3.3): the label embedding, negative
labels from the seeded stream, goodness and the loss by hand, no gradient across blocks, the
prediction rule on a constructed model, learning on digits, one-line errors, the kit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from untied_plugins.forward_forward import goodness as ff
from untied_plugins.forward_forward import trainer as ff_trainer

from bench_core.execution.runner import execute_task
from bench_core.interfaces import RunContext
from bench_core.layered import Block
from bench_core.plugins import get_host
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand
from bench_core.testing import assert_plugin_conforms


def execute(seed: int = 0, **over) -> dict:
    """One run's row on digits (whatever its status): mlp 32-32, relu, Adam 0.01."""
    defaults = {"dataset": {"name": "digits", **over.pop("dataset", {})},
                "model": over.pop("model", {"name": "mlp", "hidden": [32, 32]}),
                "activation": {"name": "relu"}, "rule": {"name": "adam", "lr": 0.01},
                "trainer": {"name": "forward_forward", "epochs": 4, "batch_size": 32, **over}}
    name, spec = parse_spec({"title": "ff", "seeds": seed + 1, "entries": [{"label": "x"}],
                             "defaults": defaults})
    host = get_host()
    task = [t for t in expand(host, name, spec).tasks if t.seed_index == seed][0]
    return execute_task(task, host=host)


def metrics(row: dict) -> dict:
    return {k[2:]: v for k, v in row.items() if k.startswith("m_")}


# ---- the pieces ---------------------------------------------------------------------------
def test_the_label_replaces_the_first_features_scaled_to_the_given_value():
    x = torch.arange(12.0).reshape(2, 1, 2, 3)            # images: flattened in memory order
    out = ff.embed_labels(x, torch.tensor([2, 0]), 3, torch.tensor(7.0))
    assert out.shape == x.shape
    assert out.reshape(2, -1).tolist() == [[0, 0, 7, 3, 4, 5], [7, 0, 0, 9, 10, 11]]
    assert x[0, 0, 0, 0] == 0 and x[1, 0, 0, 0] == 6       # the input itself is unchanged


def test_negative_labels_are_never_the_true_ones_cover_the_others_and_follow_the_seed():
    y = torch.arange(10).repeat(500)
    draws = [ff.negative_labels(y, 10, RunContext(seed=s, device=torch.device("cpu"))
                                .generator("forward_forward.negatives")) for s in (3, 3, 4)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    neg = draws[0]
    assert not (neg == y).any()
    for c in range(10):                                      # uniform over the 9 wrong labels
        counts = torch.bincount(neg[y == c], minlength=10).float()
        assert counts[c] == 0 and counts.sum() == 500
        assert (counts[torch.arange(10) != c] - 500 / 9).abs().max() < 5 * math.sqrt(500 / 9)


def test_goodness_and_the_loss_by_hand():
    a = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    assert ff.goodness(a).tolist() == [5.0, 9.0]
    g_pos, g_neg = torch.tensor([5.0, 9.0]), torch.tensor([1.0, 4.0])
    theta = 4.0
    # softplus(theta - g_pos) + softplus(g_neg - theta) = log(1 + e^(...))
    by_hand = [math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-3.0)),
               math.log1p(math.exp(-5.0)) + math.log1p(math.exp(0.0))]
    assert ff.ff_loss(g_pos, g_neg, theta).item() == pytest.approx(sum(by_hand) / 2)
    assert ff.ff_loss(g_pos, g_neg, theta, "sum").item() == pytest.approx(sum(by_hand))


def test_the_length_normalisation_keeps_only_the_orientation():
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    unit = ff.normalise_length(x, rms=False)
    assert torch.allclose(unit, torch.tensor([[0.6, 0.8, 0, 0], [0, 0, 0, 1.0]]))
    assert torch.allclose(ff.normalise_length(x), 2 * unit)     # sqrt(4 features)
    assert torch.allclose(ff.normalise_length(5 * x), ff.normalise_length(x))


def dense_block(name: str, weights: list[list[float]]) -> Block:
    layer = nn.Linear(len(weights[0]), len(weights), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights))
    return Block(name=name, layer=layer, width=len(weights), post=nn.ReLU())


def test_no_gradient_crosses_blocks():
    torch.manual_seed(0)
    blocks = [Block(f"h{i}", nn.Linear(n_in, 5), 5, post=nn.ReLU())
              for i, n_in in enumerate((6, 5, 5))]
    trainer = ff_trainer.ForwardForwardTrainer(ff_trainer.ForwardForwardParams())
    trainer.classes, trainer.scale, trainer.rms, trainer.thresholds = 3, 1.0, True, [5.0] * 3
    x, y = torch.rand(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    gen = torch.Generator().manual_seed(1)
    trainer.step(blocks, x, y, gen).backward()
    together = [p.grad.clone() for b in blocks for p in b.parameters()]
    # each block's own loss alone, on the same inputs, gives the same gradient
    neg = ff.negative_labels(y, 3, torch.Generator().manual_seed(1))
    h = torch.cat([ff.embed_labels(x, y, 3, 1.0), ff.embed_labels(x, neg, 3, 1.0)])
    alone = []
    for block in blocks:
        out = block.forward(ff.normalise_length(h.detach()))
        g = ff.goodness(out)
        params = list(block.parameters())
        alone += torch.autograd.grad(ff.ff_loss(g[:8], g[8:], 5.0), params)
        h = out
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(together, alone))
    # and the last block's loss leaves the earlier blocks without a gradient
    for b in blocks:
        for p in b.parameters():
            p.grad = None
    out = blocks[1].forward(ff.normalise_length(blocks[0].forward(x).detach()))
    ff.goodness(out).sum().backward()
    assert all(p.grad is None for p in blocks[0].parameters())


@pytest.mark.parametrize("rms", [True, False])
def test_the_shared_image_product_equals_embedding_each_label(rms):
    torch.manual_seed(0)
    x = torch.rand(5, 1, 4, 4)
    labels = torch.tensor([[0, 1, 2, 0, 1], [2, 2, 0, 1, 0]])
    dense = Block("h", nn.Linear(16, 6), 6, pre=nn.Flatten(), post=nn.ReLU())
    conv = Block("c", nn.Conv2d(1, 2, 3, padding=1), 2, spatial=True, post=nn.ReLU())
    assert ff.shares_the_image_product(dense) and not ff.shares_the_image_product(conv)
    for block in (dense, conv):
        naive = torch.cat([block.forward(ff.normalise_length(
            ff.embed_labels(x, row, 3, torch.tensor(0.7)), rms)) for row in labels])
        shared = ff.embedded_first_block(block, x, labels, 3, torch.tensor(0.7), rms)
        assert shared.shape == naive.shape and torch.allclose(shared, naive, atol=1e-6)


def test_prediction_is_the_label_of_largest_summed_goodness():
    # input: 3 label features and one zero feature; block 1 favours label 0, block 2 label 1
    blocks = [dense_block("h1", [[3, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]),
              dense_block("h2", [[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])]
    x = torch.zeros(1, 4)
    per_label = ff.label_goodness(blocks, x, 3, 1.0)
    # embedded input e_c, rms-normalised 2 e_c; block 1: (2 w_c)^2; block 2 sees 2 e_c again
    assert torch.allclose(per_label[:, :, 0], torch.tensor([[36.0, 4.0, 4.0],
                                                             [4.0, 16.0, 4.0]]))
    assert ff.predict(per_label, skip_first_layer=True).tolist() == [1]    # block 2 only
    assert ff.predict(per_label, skip_first_layer=False).tolist() == [0]   # 40 > 20 > 8


def test_the_expected_loss_averages_the_negative_term_over_every_wrong_label():
    per_label = torch.tensor([[[5.0], [1.0], [3.0]]])       # one block, 3 labels, 1 sample
    loss = ff.expected_ff_loss(per_label, torch.tensor([0]), [4.0])
    sp = F.softplus
    want = sp(torch.tensor(-1.0)) + (sp(torch.tensor(-3.0)) + sp(torch.tensor(-1.0))) / 2
    assert torch.allclose(loss, want.reshape(1))


# ---- through the host ---------------------------------------------------------------------
def test_a_short_run_learns_digits_far_above_chance():
    row = execute(model={"name": "mlp", "hidden": [64, 64]}, epochs=8)
    assert row["status"] == "ok", row["error"]
    m = metrics(row)
    assert m["test_accuracy"] > 0.8, m                       # chance: 0.1
    for key in ("test_accuracy", "test_ff_loss", "train_loss"):
        curve = row[f"curve_{key}"]
        assert len(curve) == 8 and all(math.isfinite(v) for v in curve)
    assert row["curve_train_loss"][-1] < row["curve_train_loss"][0]
    assert "test_loss" not in m                              # no class probabilities


def test_negatives_come_from_the_run_seed(monkeypatch):
    drawn: list[torch.Tensor] = []

    def recording(labels, classes, gen):
        out = ff.negative_labels(labels, classes, gen)
        drawn.append(out)
        return out

    monkeypatch.setattr(ff_trainer, "negative_labels", recording)
    runs = []
    for seed in (0, 0, 1):
        drawn.clear()
        execute(seed=seed, epochs=1, dataset={"train_subset": 64})
        runs.append(torch.cat(drawn))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_sgd_and_a_cnn_train_too():
    row = execute(model={"name": "cnn", "channels": [4], "hidden": 16}, epochs=1,
                  dataset={"train_subset": 256})
    assert row["status"] == "ok", row["error"]
    name, spec = parse_spec({"title": "ff", "entries": [{"label": "x"}], "defaults": {
        "dataset": {"name": "digits"}, "model": {"name": "mlp", "hidden": [64, 64]},
        "activation": {"name": "relu"}, "rule": {"name": "sgd", "lr": 0.01},
        "trainer": {"name": "forward_forward", "epochs": 10, "batch_size": 32}}})
    host = get_host()
    row = execute_task(expand(host, name, spec).tasks[0], host=host)
    assert row["status"] == "ok", row["error"]
    assert metrics(row)["test_accuracy"] > 0.5, metrics(row)


@pytest.mark.parametrize("over, message", [
    ({"model": {"name": "lenet5"}}, "no blocks() method"),
    ({"model": {"name": "mlp", "hidden": [16]}}, "skip_first_layer = true needs at least two"),
    ({"dataset": {"name": "ones", "dim": 1}, "model": {"name": "mlp", "hidden": [4, 4]}},
     "input of 1 features is too small to embed 2 labels"),
])
def test_bad_setups_fail_with_a_one_line_reason(over, message):
    dataset = over.pop("dataset", None)
    if dataset is not None:
        defaults = {"dataset": dataset, "model": over["model"], "activation": {"name": "relu"},
                    "trainer": {"name": "forward_forward", "epochs": 1}}
        name, spec = parse_spec({"title": "ff", "entries": [{"label": "x"}],
                                 "defaults": defaults})
        host = get_host()
        row = execute_task(expand(host, name, spec).tasks[0], host=host)
    else:
        row = execute(epochs=1, **over)
    assert row["status"] != "ok" and message in row["error"] and "\n" not in row["error"]


def test_a_one_block_model_trains_without_skipping_the_first_layer():
    row = execute(model={"name": "mlp", "hidden": [32]}, skip_first_layer=False, epochs=2)
    assert row["status"] == "ok", row["error"]
    assert metrics(row)["test_accuracy"] > 0.5


def test_the_plugin_conforms():
    assert_plugin_conforms("untied_plugins.forward_forward")
