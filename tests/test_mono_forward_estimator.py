"""The directional-derivative estimator of MF+DD (docs/methods/mono-forward.md): unbiased along the true
gradient, variance falling with P, chunks covering every parameter once, and the batched
evaluation equal to the naive loop of 2P forwards per chunk."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from untied_plugins.mono_forward import directional as dd
from untied_plugins.mono_forward.estimators import DDConfig, ad_gradient, dd_estimate
from untied_plugins.mono_forward.readout import Readout, local_loss

from bench_core.layered import Block


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def dense_block(fan_in=6, units=4, post=None):
    torch.manual_seed(0)
    return Block("0", nn.Linear(fan_in, units), units, post=post or nn.Tanh())


def conv_block():
    torch.manual_seed(0)
    return Block("0", nn.Conv2d(2, 4, 3, padding=1), 4, spatial=True,
                 post=nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)))


def setup(block, spatial=False, projection=None, n=16, classes=3):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 6, 6, generator=gen) if spatial else torch.randn(n, 6, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    with torch.no_grad():
        flat = block.forward(x)[0].numel()
    readout = Readout(classes, flat, projection, gen, torch.device("cpu"))
    return x, y, readout


def flat(pairs):
    return torch.cat([g.flatten() for _, g in pairs])


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def test_chunks_cover_every_parameter_exactly_once():
    for rows, row, size in [(10, 785, 1024), (32, 19, 100), (7, 5, 12), (10, 64, None), (1, 3, 1)]:
        c = dd.chunking(rows, row, size)
        assert rows % c.per_chunk == 0 and c.chunks * c.size == rows * row
        assert size is None or c.per_chunk == 1 or c.size <= size
        v = dd.directions(2, rows, c, torch.Generator().manual_seed(0), "cpu")
        # each chunk's direction has unit norm, so the chunks partition the rows
        norms = v.reshape(2, c.chunks, -1).norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms))
    block = dense_block()
    g = dd.rows_of(block.layer)
    parts = dd.split_rows(torch.arange(g.numel(), dtype=torch.float).view_as(g), block.layer)
    seen = torch.cat([part.flatten() for _, part in parts]).sort().values
    assert torch.equal(seen, torch.arange(g.numel(), dtype=torch.float))
    assert [p for p, _ in parts] == [block.layer.weight, block.layer.bias]


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_projected"])
def test_batched_evaluation_equals_the_naive_loop(float64, kind):
    block = dense_block() if kind == "dense" else conv_block()
    x, y, readout = setup(block, spatial=kind != "dense",
                          projection=5 if kind == "conv_projected" else None)
    P, eps = 3, 1e-3
    with torch.inference_mode():
        xin = block.pre(x)
        z = block.layer(xin)
        a = block.post(z)
        h = readout.project(a)
        G = h @ readout.M.T
        rows = dd.rows_of(block.layer)
        c = dd.chunking(rows.shape[0], rows.shape[1], 2 * rows.shape[1])   # 2 units per chunk
        v = dd.directions(P, c.rows, c, torch.Generator().manual_seed(5), "cpu")
        batched = dd.unit_losses(block, xin, z, a, G, readout.combined(), y, v, c, eps, "mean", 0)
        # the same rows in two slabs give the same losses
        half = dd.unit_losses(block, xin, z, a, G, readout.combined(), y, v[:, 2:], c, eps,
                              "mean", 2)
        assert torch.allclose(batched[:, :, 1:], half, atol=1e-12)
        layer = block.layer
        naive = dd.naive_losses([layer.weight.detach().view(c.rows, -1),
                                 layer.bias.detach().view(c.rows, 1)], v, c, eps,
                                lambda: local_loss(readout.goodness(block.forward(x)), y, "mean"))
        assert torch.allclose(batched, naive, atol=1e-10)
        g_b, g_n = dd.combine(batched, v, c, eps), dd.combine(naive, v, c, eps)
        assert torch.allclose(g_b, g_n, atol=1e-5)
        # the read-out matrix M, chunked by classes
        cm = dd.chunking(*readout.M.shape, readout.M.shape[1])
        vm = dd.directions(P, cm.rows, cm, torch.Generator().manual_seed(6), "cpu")
        batched_m = dd.readout_losses(h, G, y, vm, cm, eps, "mean")
        naive_m = dd.naive_losses([readout.M], vm, cm, eps,
                                  lambda: local_loss(readout.goodness(block.forward(x)), y, "mean"))
        assert torch.allclose(batched_m, naive_m, atol=1e-10)


def test_fallback_blocks_use_the_naive_loop_and_agree(float64):
    """A block the fast path does not know (its layer is a subclass) gets the same estimate."""

    class MyLinear(nn.Linear):
        pass

    fast = dense_block()
    torch.manual_seed(0)
    slow = Block("0", MyLinear(6, 4), 4, post=nn.Tanh())
    slow.layer.load_state_dict(fast.layer.state_dict())
    assert dd.fast_path(fast) and not dd.fast_path(slow)
    x, y, readout = setup(fast)
    cfg = DDConfig(directions=2, chunk_size=None)   # one chunk per matrix: same draws in both
    with torch.inference_mode():
        pf, _, lf = dd_estimate(fast, readout, x, y, cfg, torch.Generator().manual_seed(3))
    # the naive path chunks W and b separately, so compare against autograd instead
    with torch.inference_mode():
        ps, _, ls = dd_estimate(slow, readout, x, y, cfg, torch.Generator().manual_seed(3))
    assert torch.allclose(lf, ls)
    assert [g.shape for _, g in pf] == [g.shape for _, g in ps]


def mean_estimate(block, readout, x, y, P, draws, seed=0, chunk_size=None):
    gen = torch.Generator().manual_seed(seed)
    cfg = DDConfig(directions=P, eps=1e-4, chunk_size=chunk_size)
    with torch.inference_mode():
        samples = torch.stack([flat(dd_estimate(block, readout, x, y, cfg, gen)[0])
                               for _ in range(draws)])
    return samples


@pytest.mark.parametrize("chunk_size", [None, 14])
def test_the_mean_estimate_points_along_the_true_gradient(float64, chunk_size):
    block = dense_block()
    x, y, readout = setup(block)
    true = flat(ad_gradient(block, readout, x, y, "mean")[0])
    samples = mean_estimate(block, readout, x, y, P=16, draws=400, chunk_size=chunk_size)
    assert cosine(samples.mean(0), true) > 0.9
    # the estimate of one chunk is unbiased: E[n (g . v_hat) v_hat] = g
    assert cosine(samples[0], true) < cosine(samples.mean(0), true)


def test_variance_falls_as_p_grows(float64):
    block = dense_block()
    x, y, readout = setup(block)
    true = flat(ad_gradient(block, readout, x, y, "mean")[0])
    errors = {}
    for P in (1, 4, 16):
        samples = mean_estimate(block, readout, x, y, P=P, draws=200, seed=P)
        errors[P] = float((samples - true).square().sum(1).mean())
    assert errors[1] > 2.5 * errors[4] > 2.5 * 2.5 * errors[16]
    # and roughly as 1/P (each direction an independent draw)
    assert math.isclose(errors[1] / errors[16], 16, rel_tol=0.5)
