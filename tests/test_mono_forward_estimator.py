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


def setup(block, spatial=False, projection=(None, 1), n=16, classes=3):
    """``projection``: ``(projection_dim, channels)`` of the read-out."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 6, 6, generator=gen) if spatial else torch.randn(n, 6, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    with torch.no_grad():
        flat = block.forward(x)[0].numel()
    readout = Readout(classes, flat, projection[0], gen, torch.device("cpu"), projection[1])
    return x, y, readout


def clean_pass(block, readout, x):
    """``(xin, Q, z, a, G)``: the clean pass the batched evaluation starts from."""
    xin = block.pre(x)
    z = block.layer(xin)
    a = block.post(z)
    return xin, readout.combined(), z, a, readout.project(a) @ readout.M.T


def flat(pairs):
    return torch.cat([g.flatten() for _, g in pairs])


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_chunks_cover_every_parameter_exactly_once_and_hold_at_most_chunk_size(kind):
    cases = [(10, 785, 1024), (32, 19, 100), (7, 5, 12), (10, 64, None), (1, 3, 1),
             (4, 1569, 1024), (3, 10, 3), (2, 7, 2), (5, 13, 4)]
    for rows, row, size in cases:
        c = dd.chunking(rows, row, size)
        n = c.sizes(rows)
        assert rows % c.per_chunk == 0 and len(n) == c.chunks and n.sum() == rows * row
        assert size is None or n.max() <= size
        assert c.segments == 1 or c.per_chunk == 1
        v = dd.directions(2, rows, c, torch.Generator().manual_seed(0), "cpu", kind)
        assert v.shape == (2, rows, c.width) and v.is_contiguous()
        assert not v[..., row:].any()                       # padding after a row's last segment
        # a chunk is a set of entries whose direction has unit norm; the chunks partition the
        # entries: put chunk ids on the entries and check every direction's support
        ids = torch.arange(c.chunks).view(rows // c.per_chunk, c.segments, 1)
        ids = ids.expand(-1, -1, c.per_chunk * c.segment).reshape(rows, c.width)[:, :row]
        assert torch.equal(torch.bincount(ids.flatten(), minlength=c.chunks), n.long())
        for p in range(2):
            sq = torch.zeros(c.chunks).index_add_(0, ids.flatten(), v[p, :, :row].flatten() ** 2)
            assert torch.allclose(sq, torch.ones_like(sq), atol=1e-4)
        if kind == "rademacher":  # signs / sqrt(n): every entry's magnitude is its chunk's
            assert torch.allclose(v[0, :, :row].abs(), n[ids].rsqrt())
    # the CNN's dense block (8 x 14 x 14 inputs + bias): two segments of 785 and 784, not 1569
    c = dd.chunking(64, 1569, 1024)
    assert (c.segments, c.per_chunk) == (2, 1) and c.sizes(1).tolist() == [785.0, 784.0]
    block = dense_block()
    g = dd.rows_of(block.layer)
    parts = dd.split_rows(torch.arange(g.numel(), dtype=torch.float).view_as(g), block.layer)
    seen = torch.cat([part.flatten() for _, part in parts]).sort().values
    assert torch.equal(seen, torch.arange(g.numel(), dtype=torch.float))
    assert [p for p, _ in parts] == [block.layer.weight, block.layer.bias]


def test_rademacher_directions_have_the_covariance_of_the_gaussian_ones(float64):
    """E[n v_hat v_hat^T] = I for both kinds, so both estimates have the gradient as mean."""
    c = dd.chunking(1, 6, None)
    for kind in ("gaussian", "rademacher"):
        v = dd.directions(20000, 1, c, torch.Generator().manual_seed(1), "cpu", kind)[:, 0]
        cov = 6 * v.T @ v / len(v)
        assert torch.allclose(cov, torch.eye(6), atol=0.05), kind


def test_rademacher_signs_are_balanced_and_independent_across_one_draw():
    """Each 24-bit draw fills two table rows, one in each half of the output: every position of
    a row is +-scale half the time, and the two halves of the same draws are uncorrelated."""
    half = 12 * 40000
    s = dd._signs(2 * half - 5, 0.5, torch.Generator().manual_seed(3), "cpu")
    assert s.shape == (2 * half - 5,) and set(s.unique().tolist()) == {-0.5, 0.5}
    signs = torch.cat([s, s.new_full((5,), 0.5)]).view(2, -1, 12) * 2
    assert signs.mean(1).abs().max() < 0.02                   # each bit position balanced
    assert (signs[0] * signs[1]).mean(0).abs().max() < 0.02    # low and high halves independent
    assert (signs[0, :, :-1] * signs[0, :, 1:]).mean().abs() < 0.01   # neighbouring bits too


@pytest.mark.parametrize("kind", ["dense", "dense_segments", "conv", "conv_segments",
                                  "conv_projected", "conv_channelwise"])
@pytest.mark.parametrize("expansion", [True, False])
def test_batched_evaluation_equals_the_naive_loop(float64, kind, expansion):
    block = dense_block() if kind.startswith("dense") else conv_block()
    projection = {"conv_projected": (8, 1), "conv_channelwise": (8, 4)}.get(kind, (None, 1))
    x, y, readout = setup(block, spatial=not kind.startswith("dense"), projection=projection)
    P, eps = 3, 1e-3
    with torch.inference_mode():
        xin = block.pre(x)
        z = block.layer(xin)
        a = block.post(z)
        h = readout.project(a)
        G = h @ readout.M.T
        rows = dd.rows_of(block.layer)
        row = rows.shape[1]
        # 2 units per chunk, or (segments) each row in 3 chunks
        size = -(-row // 3) if kind.endswith("segments") else 2 * row
        c = dd.chunking(rows.shape[0], row, size)
        assert (c.segments > 1) == kind.endswith("segments")
        v = dd.directions(P, c.rows, c, torch.Generator().manual_seed(5), "cpu")
        Q = readout.combined()
        batched = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, "mean", 0, expansion)
        # the same rows in two slabs give the same losses
        half = dd.unit_losses(block, xin, z, a, G, Q, y, v[:, 2:], c, eps, "mean", 2, expansion)
        skip = (2 // c.per_chunk) * c.segments
        assert torch.allclose(batched[:, :, skip:], half, atol=1e-12)
        layer = block.layer
        naive = dd.naive_losses([layer.weight.detach().view(c.rows, -1),
                                 layer.bias.detach().view(c.rows, 1)], v, c, eps,
                                lambda: local_loss(readout.goodness(block.forward(x)), y, "mean"))
        assert torch.allclose(batched, naive, atol=1e-10)
        g_b, g_n = dd.combine(batched, v, c, eps), dd.combine(naive, v, c, eps)
        assert torch.allclose(g_b, g_n, atol=1e-5)
        # the read-out matrix M, chunked by classes (or its rows in segments)
        D = readout.M.shape[1]
        for size in (D, -(-D // 2)):
            cm = dd.chunking(*readout.M.shape, size)
            vm = dd.directions(P, cm.rows, cm, torch.Generator().manual_seed(6), "cpu")
            batched_m = dd.readout_losses(h, G, y, vm, cm, eps, "mean")
            naive_m = dd.naive_losses([readout.M], vm, cm, eps,
                                      lambda: local_loss(readout.goodness(block.forward(x)), y,
                                                         "mean"))
            assert torch.allclose(batched_m, naive_m, atol=1e-10)


def test_the_rank_one_update_falls_back_to_the_exact_loss_for_large_perturbations(
        float64, monkeypatch):
    """eps = 1 moves the logits by O(1): the cumulant expansion alone would be wrong, the
    fallback keeps the losses exact (dense block, one unit per chunk)."""
    block = dense_block()
    x, y, readout = setup(block)
    with torch.inference_mode():
        xin, Q, z, a, G = clean_pass(block, readout, x)
        rows = dd.rows_of(block.layer)
        c = dd.chunking(rows.shape[0], rows.shape[1], rows.shape[1])
        v = dd.directions(2, c.rows, c, torch.Generator().manual_seed(5), "cpu")
        for eps in (1e-3, 1.0):
            fast = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, "mean", 0, True)
            exact = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, "mean", 0, False)
            # the expansion's error bound: below float32's rounding of the loss
            assert torch.allclose(fast, exact, atol=3e-7, rtol=0), (fast - exact).abs().max()
        # without the fallback the expansion is off at eps = 1 (so the fallback was used)
        monkeypatch.setattr(dd, "EXPANSION_LIMIT", math.inf)
        series = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, 1.0, "mean", 0, True)
        assert (series - exact).abs().max() > 1e-4



@pytest.mark.parametrize("segments", [False, True])
@pytest.mark.parametrize("post", [nn.Tanh, nn.ReLU])
def test_fused_rank_one_losses_equal_the_eager_ones(float64, segments, post):
    """``fused`` (one compiled kernel, :data:`dd.FUSED_CHANGES`) gives the eager expansion's
    losses (dense block, one unit or one segment per chunk) and falls back to it, and so to the
    exact losses, where the perturbation is too large for the expansion (eps = 1)."""
    block = dense_block(post=post())
    x, y, readout = setup(block)
    with torch.inference_mode():
        xin, Q, z, a, G = clean_pass(block, readout, x)
        rows = dd.rows_of(block.layer)
        row = rows.shape[1]
        c = dd.chunking(rows.shape[0], row, -(-row // 3) if segments else row)
        assert c.per_chunk == 1 and (c.segments > 1) == segments
        v = dd.directions(3, c.rows, c, torch.Generator().manual_seed(5), "cpu")
        for eps in (1e-3, 1.0):
            eager = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, "mean", 0, True)
            fused = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, "mean", 0, True, True)
            if dd.FUSED_CHANGES.failure is not None:
                pytest.skip(f"no compiled kernel here ({dd.FUSED_CHANGES.failure})")
            assert torch.allclose(fused, eager, atol=1e-12, rtol=0), (fused - eager).abs().max()
            assert dd.FUSED_CHANGES.compiled is not None   # the compiled kernel ran
            summed = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, eps, "sum", 0, True, True)
            assert torch.allclose(summed, eager * len(x), atol=0, rtol=1e-12)
        exact = dd.unit_losses(block, xin, z, a, G, Q, y, v, c, 1.0, "mean", 0, False)
        # eps = 1: within the expansion's error bound of the exact losses (as the eager path)
        assert torch.allclose(fused, exact, atol=3e-7, rtol=0)


def test_fused_estimate_matches_the_eager_one_in_float32():
    """``DDConfig(fused=True)`` through :func:`dd_estimate` (what ``fused_losses = true`` runs):
    the same draws give the same estimate up to float32's rounding of the per-sample sums."""
    block = dense_block(fan_in=6, units=4, post=nn.ReLU())
    x, y, readout = setup(block, n=64)
    estimates = []
    for fused in (False, True):
        cfg = DDConfig(directions=4, chunk_size=7, direction_kind="rademacher", fused=fused)
        with torch.inference_mode():
            pairs, _, loss = dd_estimate(block, readout, x, y, cfg,
                                         torch.Generator().manual_seed(3))
        estimates.append((flat(pairs), loss))
    if dd.FUSED_CHANGES.failure is not None:
        pytest.skip(f"no compiled kernel here ({dd.FUSED_CHANGES.failure})")
    (g_eager, loss_eager), (g_fused, loss_fused) = estimates
    assert torch.equal(loss_eager, loss_fused)
    # each coefficient is a difference of two losses near 1: float32 keeps ~1e-7 of each
    assert torch.allclose(g_fused, g_eager, atol=1e-3 * g_eager.abs().max().item())
    assert cosine(g_fused, g_eager) > 0.999

def test_channelwise_projection_is_one_projection_per_channel():
    gen = torch.Generator().manual_seed(0)
    r = Readout(3, 4 * 25, 8, gen, torch.device("cpu"), channels=4)
    a = torch.randn(5, 4, 5, 5)
    h = r.project(a)
    assert h.shape == (5, 8)
    # changing channel 2 only changes its own 2 projected values
    b = a.clone()
    b[:, 2] += 1
    moved = (r.project(b) - h).abs().sum(0) > 0
    assert moved.tolist() == [False] * 4 + [True] * 2 + [False] * 2
    # each channel's projection is its own random matrix, and Q = M R matches the projection
    assert not torch.allclose(r.R[0], r.R[1])
    assert torch.allclose(a.flatten(1) @ r.combined().T, r.goodness(a), atol=1e-5)
    whole = Readout(3, 100, 8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.allclose(a.flatten(1) @ whole.combined().T, whole.goodness(a), atol=1e-5)
    assert (whole.project(b) - whole.project(a)).abs().sum(0).gt(0).all()
    with pytest.raises(ValueError, match="not a multiple of the block's 3 channels"):
        Readout(3, 75, 8, gen, torch.device("cpu"), channels=3)


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
