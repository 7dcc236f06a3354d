"""The layer-local host interface (bench_core.layered): a model exposes its hidden layers as
blocks; the built-in mlp and cnn do without changing what they compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from untied_plugins.backprop.models import CNNParams, MLPParams, cnn, mlp

from bench_core.errors import UntiedError
from bench_core.interfaces import DataInfo
from bench_core.layered import Block, BlockLike, LayeredError, as_blocks


class TinyLayered(nn.Module):
    """A third-party model: two dense blocks and a head, written without any built-in help."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.head = nn.Linear(5, 7), nn.Linear(7, 3), nn.Linear(3, 2)

    def blocks(self):
        return [Block("l1", self.l1, 7, post=nn.Tanh()), Block("l2", self.l2, 3, post=nn.ReLU())]

    def forward(self, x):
        return self.head(torch.relu(self.l2(torch.tanh(self.l1(x)))))


def test_a_model_defined_elsewhere_runs_block_by_block():
    model = TinyLayered()
    blocks = as_blocks(model)
    assert [b.name for b in blocks] == ["l1", "l2"] and [b.width for b in blocks] == [7, 3]
    assert all(isinstance(b, BlockLike) for b in blocks)
    x = torch.randn(4, 5)
    h = x
    for b in blocks:
        h = b.forward(h.detach())
    assert torch.equal(model.head(h), model(x))
    assert list(blocks[0].parameters()) == [model.l1.weight, model.l1.bias]


def test_a_model_without_blocks_gets_a_one_line_error():
    with pytest.raises(LayeredError, match=r"model Sequential .* no blocks\(\) method") as err:
        as_blocks(nn.Sequential(nn.Linear(2, 2)))
    assert "\n" not in str(err.value) and isinstance(err.value, UntiedError)

    class Broken(nn.Module):
        def blocks(self):
            return [object()]

    with pytest.raises(LayeredError, match="block 0 lacks name, width, spatial, parameters"):
        as_blocks(Broken())


def build(kind: str, **params):
    data = DataInfo("toy", (1, 12, 12), 4)
    act = lambda: nn.ReLU()  # noqa: E731
    if kind == "mlp":
        return mlp(MLPParams(**params), data=data, activation=act, ctx=None)
    return cnn(CNNParams(**params), data=data, activation=act, ctx=None)


@pytest.mark.parametrize("kind,params,widths,spatial", [
    ("mlp", {"hidden": [16, 8]}, [16, 8], [False, False]),
    ("mlp", {"hidden": [6], "batchnorm": True}, [6], [False]),
    ("cnn", {"channels": [3, 5], "hidden": 9}, [3, 5, 9], [True, True, False]),
    ("cnn", {"channels": [3], "hidden": 9, "batchnorm": True}, [3, 9], [True, False]),
])
def test_builtin_models_expose_their_hidden_layers(kind, params, widths, spatial):
    torch.manual_seed(0)
    model = build(kind, **params).eval()
    blocks = as_blocks(model)
    assert [b.width for b in blocks] == widths and [b.spatial for b in blocks] == spatial
    x = torch.rand(3, 1, 12, 12) if kind == "cnn" else torch.rand(3, 144)
    h = x
    for b in blocks:
        h = b.forward(h)
    assert h.shape[1] == widths[-1]
    assert (h.dim() == 4) == spatial[-1]
    # the blocks cover every parameter of the model except the output layer, once each
    covered = [p for b in blocks for p in b.parameters()]
    head = list(model[-1].parameters())
    assert len({id(p) for p in covered}) == len(covered)
    assert {id(p) for p in covered} | {id(p) for p in head} == {id(p) for p in model.parameters()}
    # running the blocks then the head is the model's forward
    assert torch.allclose(model[-1](h.flatten(1)), model(x), atol=1e-6)


@pytest.mark.parametrize("kind,params", [("mlp", {"hidden": [16, 8]}),
                                         ("cnn", {"channels": [3, 5], "hidden": 9})])
def test_builtin_models_keep_their_parameters_and_outputs(kind, params):
    """Same parameter names and order as the plain nn.Sequential, same outputs."""
    torch.manual_seed(0)
    model = build(kind, **params)
    plain = nn.Sequential(*model)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in plain.named_parameters()]
    x = torch.rand(2, 1, 12, 12) if kind == "cnn" else torch.rand(2, 144)
    assert torch.equal(model(x), plain(x))
