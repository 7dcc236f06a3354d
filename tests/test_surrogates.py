"""The activation surrogates of ``untied_plugins.troiano.surrogates`` (docs/methods/troiano.md; Troiano et
al. 2025, Section 4, Fig. 6 and Fig. 8): each backward against its formula, the tied backward
against autograd, jamming statistics and seeding, parameter validation, saved-tensor memory,
``torch.func.vmap`` and ``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from untied_plugins.backprop.activations import ACTIVATIONS

from bench_core.errors import SpecError
from bench_core.interfaces import RunContext
from bench_core.plugins import get_host
from bench_core.specs.plan import resolve_component

ACTIVATION_NAMES = list(ACTIVATIONS)
SURROGATE_NAMES = ["tied", "constant", "rect", "triangular", "d_logistic", "full_jamming",
                   "positive_jamming", "rect_jamming"]
JAMMING = ["full_jamming", "positive_jamming", "rect_jamming"]
DETERMINISTIC = [{"name": "constant", "scale": 2.5}, {"name": "rect", "width": 2.0},
                 {"name": "rect", "width": 2.0, "height": 0.5, "low_memory": True},
                 {"name": "triangular", "width": 2.0}, {"name": "d_logistic"}]
ALL_TABLES = DETERMINISTIC + [{"name": "full_jamming"}, {"name": "positive_jamming"},
                              {"name": "positive_jamming", "low_memory": True},
                              {"name": "rect_jamming", "window": 2.0},
                              {"name": "rect_jamming", "window": 2.0, "low_memory": True,
                               "normalize": "none"},
                              {"name": "positive_jamming", "window_on": "gradient"},
                              {"name": "rect_jamming", "window": 2.0, "window_on": "gradient"}]


def ids(tables):
    return ["-".join(f"{v}" if k == "name" else f"{k}={v}" for k, v in t.items())
            for t in tables]


def make_ctx(seed: int = 0) -> RunContext:
    return RunContext(seed=seed, device=torch.device("cpu"))


def activation(name: str):
    return ACTIVATIONS[name][1]


def site(table: dict | str, act: str = "relu", ctx: RunContext | None = None):
    comp, params = resolve_component(get_host(), "surrogate", table)
    return comp.factory(params, activation=activation(act), ctx=ctx or make_ctx())


def input_grad(module, x: torch.Tensor, grad_out: torch.Tensor | None = None) -> torch.Tensor:
    """dL/dx for L = sum(grad_out * module(x))."""
    x = x.detach().clone().requires_grad_()
    y = module(x)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y) if grad_out is None else grad_out)
    return dx


def g_values(table, x: torch.Tensor, act: str = "relu") -> torch.Tensor:
    """g(x) itself: the input gradient for an upstream gradient of ones."""
    return input_grad(site(table, act), x)


# ---- every surrogate is registered and leaves the forward unchanged -------------------------
def test_catalogue_is_registered_with_descriptions():
    family = get_host().family("surrogates")
    for name in SURROGATE_NAMES:
        assert name in family
        assert family[name].description, name


@pytest.mark.parametrize("table", ALL_TABLES, ids=ids(ALL_TABLES))
@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_forward_is_the_activation(table, act):
    x = torch.linspace(-4, 4, 41)
    x[20] = 0.0
    torch.testing.assert_close(site(table, act)(x), activation(act).native(x), rtol=0, atol=0)


# ---- formulas at hand-picked points -------------------------------------------------------
EDGE_POINTS = torch.tensor([-1000.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 1000.0])


@pytest.mark.parametrize("act", ["relu", "logistic", "step", "identity"])
def test_constant_is_scale(act):
    torch.testing.assert_close(g_values({"name": "constant", "scale": 2.5}, EDGE_POINTS, act),
                               torch.full_like(EDGE_POINTS, 2.5))
    torch.testing.assert_close(g_values("constant", EDGE_POINTS, act), torch.ones_like(EDGE_POINTS))


@pytest.mark.parametrize("low_memory", [False, True])
@pytest.mark.parametrize("act", ["relu", "logistic", "sign", "identity"])
def test_rect_is_an_open_window(act, low_memory):
    g = g_values({"name": "rect", "width": 2.0, "height": 0.5, "low_memory": low_memory},
                 EDGE_POINTS, act)
    # |x| = width is outside (open window); the tie at 0 is inside
    expected = torch.tensor([0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0, 0, 0])
    torch.testing.assert_close(g, expected, rtol=0, atol=0)
    defaults = g_values({"name": "rect", "low_memory": low_memory}, EDGE_POINTS, act)
    torch.testing.assert_close(defaults, (EDGE_POINTS.abs() < 1).float(), rtol=0, atol=0)


@pytest.mark.parametrize("act", ["relu", "tanh", "step", "identity"])
def test_triangular(act):
    g = g_values({"name": "triangular", "width": 2.0}, EDGE_POINTS, act)
    expected = torch.tensor([0, 0, 0, 0.5, 0.75, 1.0, 0.75, 0.5, 0, 0, 0])
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-7)
    assert (torch.signbit(g) == 0).all(), "g must be +0 outside the window, never -0"
    x = torch.linspace(-3, 3, 601)
    torch.testing.assert_close(g_values("triangular", x, act), (1 - x.abs()).clamp_min(0),
                               rtol=0, atol=1e-6)
    # height: the triangle under the logistic's derivative (peak 1/4, half-width 4, area 1)
    x = torch.linspace(-6, 6, 1201)
    under = g_values({"name": "triangular", "width": 4.0, "height": 0.25}, x, act)
    torch.testing.assert_close(under, 0.25 * (1 - x.abs() / 4).clamp_min(0), rtol=0, atol=1e-7)
    assert under.max().item() == pytest.approx(0.25)
    assert (under * 0.01).sum().item() == pytest.approx(1.0, 1e-3)


@pytest.mark.parametrize("act", ["relu", "logistic", "step", "softplus"])
def test_d_logistic(act):
    x = torch.cat([EDGE_POINTS, torch.linspace(-20, 20, 401)])
    g = g_values("d_logistic", x, act)
    s = torch.sigmoid(x.double())
    torch.testing.assert_close(g, (s * (1 - s)).float(), rtol=1e-5, atol=1e-7)
    edges = g[: len(EDGE_POINTS)]
    assert edges[EDGE_POINTS == 0.0].item() == pytest.approx(0.25)
    tails = edges[EDGE_POINTS.abs() == 1000.0]
    assert torch.isfinite(tails).all() and (tails.abs() < 1e-30).all()


@pytest.mark.parametrize("act", ACTIVATION_NAMES)
def test_tied_is_autograd_of_the_forward(act):
    x = torch.randn(64, generator=torch.Generator().manual_seed(3)) * 3
    x[0] = 0.0
    grad_out = torch.randn(64, generator=torch.Generator().manual_seed(4))
    module = site("tied", act)
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(activation(act).native(xr), xr, grad_out)
    torch.testing.assert_close(input_grad(module, x, grad_out), expected, rtol=0, atol=0)
    torch.testing.assert_close(input_grad(module, x, grad_out),
                               grad_out * activation(act).derivative(x))


@pytest.mark.parametrize("table", DETERMINISTIC, ids=ids(DETERMINISTIC))
def test_backward_multiplies_the_incoming_gradient(table):
    x = torch.randn(256, generator=torch.Generator().manual_seed(5)) * 2
    grad_out = torch.randn(256, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(input_grad(site(table), x, grad_out),
                               grad_out * g_values(table, x), rtol=1e-6, atol=1e-7)


# ---- jamming -------------------------------------------------------------------------------
def jam_grads(table, x, grad_out, act="relu", seed=0):
    return input_grad(site(table, act, make_ctx(seed)), x, grad_out)


@pytest.mark.parametrize("low_memory", [False, True])
@pytest.mark.parametrize("name", JAMMING)
def test_jamming_keeps_sign_and_support(name, low_memory):
    table = {"name": name} if name == "full_jamming" else {"name": name, "low_memory": low_memory}
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(20_000, generator=gen) * 4
    x[:7] = torch.tensor([0.0, 5.0, -5.0, 5.0001, -5.0001, -1e-30, 1e-30])
    grad_out = torch.randn(20_000, generator=gen)
    dx = jam_grads(table, x, grad_out)
    assert (dx * grad_out >= 0).all(), "g >= 0 keeps the sign of every component (Prop. 3)"
    support = {"full_jamming": torch.ones_like(x, dtype=torch.bool),
               "positive_jamming": x >= 0,
               "rect_jamming": x.abs() <= 5.0}[name]
    assert (dx[~support] == 0).all()
    assert (dx[support] != 0).float().mean() > 0.999  # u = 0 has probability ~2^-24
    # the hand-picked points: the tie at 0 and +-1e-30 around it (positive jamming), the edges
    # |x| = window (inside the closed window) and just beyond (rect jamming)
    assert ((dx[:7] != 0) == support[:7]).all()
    assert support[:7].tolist() == {"full_jamming": [True] * 7,
                                    "positive_jamming": [1, 1, 0, 1, 0, 0, 1],
                                    "rect_jamming": [1, 1, 1, 0, 0, 1, 1]}[name]


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_triangular_fused_kernel_is_bitwise_the_eager_passes(act, monkeypatch):
    """Large float32 tensors take one compiled pass (``TRIANGULAR_PRODUCT``); for every width and
    height, one after another in one process (one kernel serves them all), it gives the eager
    passes' result to the bit."""
    from untied_plugins.troiano import surrogates

    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 40_001, generator=gen) * 3
    x[0, :6] = torch.tensor([0.0, -0.0, float("nan"), 1.7, -1.7, 4.0])
    grad_out = torch.randn(2, 40_001, generator=gen)
    shapes = [(1.0, 1.0), (4.0, 0.25), (0.3, 0.7), (1.7, 1.7), (2.2, 0.1)]

    def grads():
        return [input_grad(site({"name": "triangular", "width": w, "height": h}, act), x,
                           grad_out) for w, h in shapes]

    fused = grads()
    if surrogates.TRIANGULAR_PRODUCT.failure:
        pytest.skip("no compiled kernel here: the eager passes run anyway")
    monkeypatch.setattr(surrogates.TRIANGULAR_PRODUCT, "min_elements", 1 << 62)
    for (w, h), got, want in zip(shapes, fused, grads()):
        assert got.isnan().tolist() == want.isnan().tolist(), (w, h)
        assert torch.equal(got.nan_to_num(5.0), want.nan_to_num(5.0)), (w, h)
        assert torch.equal(got.nan_to_num(5.0).signbit(), want.nan_to_num(5.0).signbit())


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_derivative_of_output_is_the_derivative_to_the_bit(act):
    """Jamming's ``k`` takes ``f'`` from the site's output where the activation gives it: the
    same values as ``derivative(x)``, so no recorded run changes."""
    a = activation(act)
    if a.derivative_of_output is None:
        pytest.skip(f"{act} gives f' of its input only")
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(9)) * 6
    x[:6] = torch.tensor([0.0, -0.0, 30.0, -30.0, 1e-30, -1e-30])
    assert torch.equal(a.derivative_of_output(a.native(x)), a.derivative(x))
    site_k = site({"name": "positive_jamming"}, act).jamming_scale
    assert torch.equal(site_k(x, a.native(x)), site_k(x))


def test_jamming_draw_called_straight_is_the_operator_draw():
    """In a plain eager backward the draw skips the custom operator's dispatch; it is the same
    draw from the same stream."""
    from untied_plugins.troiano.jamming import JammingStream, draw_uniform, uniform_like

    like = torch.empty(1000)
    straight = JammingStream(make_ctx(4))
    through = JammingStream(make_ctx(4))
    for _ in range(2):
        assert torch.equal(draw_uniform(like, straight.key), uniform_like(like, through.key))


FUSED_JAMMING_KERNELS = ("JAM_PRODUCT", "WINDOW_JAM_PRODUCT", "COUNT_IN_WINDOW")


@pytest.mark.parametrize("act", ["relu", "tanh", "identity"])
@pytest.mark.parametrize("normalize", ["batch", "none"])
@pytest.mark.parametrize("table", [{"name": "full_jamming"}, {"name": "positive_jamming"},
                                   {"name": "positive_jamming", "low_memory": True},
                                   {"name": "rect_jamming", "window": 0.5},
                                   {"name": "rect_jamming", "low_memory": True}],
                         ids=["full", "positive", "positive-mask", "rect", "rect-mask"])
def test_jamming_fused_kernels_are_bitwise_the_eager_passes(table, normalize, act, monkeypatch):
    """On large float32 tensors the window's count (forward) and the product after the draw
    (backward) are compiled passes (``FusedElementwise``); with the same draws they give the eager
    passes' result to the bit (NaN, -0.0 and the window's edges included), so no recorded run
    changes."""
    from untied_plugins.troiano import jamming

    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 70_001, generator=gen) * 2
    x[0, :8] = torch.tensor([0.0, -0.0, float("nan"), 0.5, -0.5, 0.50001, -1e-30, float("inf")])
    grad_out = torch.randn(3, 70_001, generator=gen)
    grad_out[0, 8] = -0.0
    table = {**table, "normalize": normalize}

    def two_backwards():
        module = site(table, act, make_ctx(3))
        return [input_grad(module, x, grad_out) for _ in range(2)]

    fused = two_backwards()
    if any(getattr(jamming, k).failure for k in FUSED_JAMMING_KERNELS):
        pytest.skip("no compiled kernel here: the eager passes run anyway")
    with torch.no_grad():
        assert jamming.JAM_PRODUCT.applies(x, grad_out)   # large enough: the fused path ran
    for k in FUSED_JAMMING_KERNELS:
        monkeypatch.setattr(getattr(jamming, k), "min_elements", 1 << 62)   # eager passes only
    eager = two_backwards()
    for got, want in zip(fused, eager):
        assert got.isnan().tolist() == want.isnan().tolist()
        assert torch.equal(got.nan_to_num(5.0), want.nan_to_num(5.0))
        assert torch.equal(got.signbit(), want.signbit())


JAMMING_WINDOWS = [("full_jamming", "input"), ("positive_jamming", "input"),
                   ("rect_jamming", "input"), ("positive_jamming", "gradient"),
                   ("rect_jamming", "gradient")]


def jam_multiplier(name, window_on, x, grad_out, act, normalize="batch"):
    """g for every element: dL/dx / dL/dy (grad_out has no zeros)."""
    table = {"name": name, "normalize": normalize}
    if name != "full_jamming":
        table["window_on"] = window_on
    return jam_grads(table, x, grad_out, act) / grad_out


@pytest.mark.parametrize("name,window_on", JAMMING_WINDOWS)
@pytest.mark.parametrize("act", ["relu", "logistic", "identity"])
def test_jamming_mean_matches_mean_tied_derivative(name, window_on, act):
    """Monte Carlo check of the normalisation (docs/methods/troiano.md): over the whole tensor,
    E[g] = mean f'(x) for full, positive and rectangular jamming, with the window on x or on the
    feedback gradient; with normalize="none", E[g] = share(window) / 2. n = 2^20 elements: with
    k = 2 m / share, sd(g) <= 1.3 m / sqrt(share) and the standard error is < 0.2% of m, so a
    2% tolerance is > 10 standard errors (and the seeds are fixed)."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1 << 20, generator=gen) * 3
    grad_out = torch.randn(1 << 20, generator=gen) * 6  # |dL/dy| <= 5 for ~60% of elements
    grad_out[grad_out == 0] = 1.0
    g = jam_multiplier(name, window_on, x, grad_out, act)
    mean_tied = activation(act).derivative(x).mean()
    torch.testing.assert_close(g.mean(), mean_tied, rtol=2e-2, atol=0)
    window_of = x if window_on == "input" else grad_out
    inside = {"full_jamming": torch.ones_like(x, dtype=torch.bool),
              "positive_jamming": window_of >= 0,
              "rect_jamming": window_of.abs() <= 5.0}[name]
    assert (g[~inside] == 0).all() and (g >= 0).all()
    assert 0.3 < inside.float().mean() < 1.0 or name == "full_jamming"
    g_none = jam_multiplier(name, window_on, x, grad_out, act, normalize="none")
    assert g_none.max() < 1.0
    torch.testing.assert_close(g_none.mean(), inside.float().mean() / 2, rtol=2e-2, atol=0)


@pytest.mark.parametrize("window_on", ["input", "gradient"])
def test_window_with_no_element_inside_gives_zero_not_nan(window_on):
    x = torch.full((64,), -3.0) if window_on == "input" else torch.randn(64)
    grad_out = torch.full((64,), -1.0)
    dx = jam_grads({"name": "positive_jamming", "window_on": window_on}, x, grad_out, "identity")
    assert torch.equal(dx, torch.zeros_like(dx))


def test_jamming_scale_for_identity_is_two_over_the_share():
    x = torch.randn(1 << 16)
    assert site("full_jamming", "identity").jamming_scale(x).item() == 2.0
    assert site({"name": "full_jamming", "normalize": "none"}, "identity").jamming_scale(x) is None
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 7.0, 9.0, -8.0, 3.0])  # 5 of 8 >= 0; 5 in |x| <= 5
    assert site("positive_jamming", "identity").jamming_scale(x).item() == pytest.approx(2 * 8 / 5)
    assert site("rect_jamming", "identity").jamming_scale(x).item() == pytest.approx(2 * 8 / 5)
    relu_mean = (x > 0).float().mean().item()  # f' of relu: 1 for x > 0
    assert site("positive_jamming", "relu").jamming_scale(x).item() == pytest.approx(
        2 * relu_mean * 8 / 5)
    on_gradient = site({"name": "positive_jamming", "window_on": "gradient"}, "identity")
    assert on_gradient.jamming_scale(x).item() == 2.0  # the share is taken in backward


def test_gradient_window_tests_the_feedback_gradient_not_x():
    x = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    grad_out = torch.tensor([1.0, -1.0, -1.0, 1.0])
    dx = jam_grads({"name": "positive_jamming", "window_on": "gradient"}, x, grad_out)
    assert ((dx != 0) == (grad_out >= 0)).all()
    dx = jam_grads({"name": "rect_jamming", "window": 0.5, "window_on": "gradient"}, x,
                   torch.tensor([0.1, -0.6, 0.5, -0.5]))
    assert ((dx != 0) == torch.tensor([True, False, True, True])).all()


@pytest.mark.parametrize("low_memory", [False, True])
@pytest.mark.parametrize("name", JAMMING)
def test_jamming_draws_follow_the_run_seed(name, low_memory):
    table = {"name": name} if name == "full_jamming" else {"name": name, "low_memory": low_memory}
    x = torch.randn(4096, generator=torch.Generator().manual_seed(9))
    grad_out = torch.randn(4096, generator=torch.Generator().manual_seed(10))
    global_state = torch.get_rng_state()
    first = jam_grads(table, x, grad_out, seed=11)
    same = jam_grads(table, x, grad_out, seed=11)
    other = jam_grads(table, x, grad_out, seed=12)
    assert torch.equal(torch.get_rng_state(), global_state), "the global RNG must not be used"
    torch.testing.assert_close(first, same, rtol=0, atol=0)
    assert not torch.equal(first, other)
    # fresh draws at every backward pass of one site
    module = site(table, "relu", make_ctx(11))
    assert not torch.equal(input_grad(module, x, grad_out), input_grad(module, x, grad_out))


def test_jamming_sites_share_the_run_stream_lazily_on_the_device():
    ctx = make_ctx(13)
    first, second = site("full_jamming", "relu", ctx), site("full_jamming", "relu", ctx)
    assert ("surrogate", "cpu") not in ctx._generators
    x = torch.randn(128)
    a, b = input_grad(first, x), input_grad(second, x)
    assert ("surrogate", "cpu") in ctx._generators
    assert not torch.equal(a, b)  # one stream, consecutive draws
    replay = make_ctx(13)
    torch.testing.assert_close(input_grad(site("full_jamming", "relu", replay), x), a)


def test_jamming_module_survives_deepcopy():
    module = site("rect_jamming", "relu", make_ctx(14))
    clone = copy.deepcopy(module)
    assert clone.stream.key != module.stream.key
    dx = input_grad(clone, torch.randn(64))
    assert torch.isfinite(dx).all()


# ---- parameter validation ------------------------------------------------------------------
BAD_TABLES = [
    {"name": "rect", "width": 0}, {"name": "rect", "width": -1.0}, {"name": "rect", "height": 0},
    {"name": "rect", "width": math.inf}, {"name": "rect", "wdith": 2.0},
    {"name": "constant", "scale": 0}, {"name": "constant", "scale": "big"},
    {"name": "triangular", "width": 0}, {"name": "triangular", "low_memory": True},
    {"name": "tied", "scale": 2.0}, {"name": "d_logistic", "width": 1.0},
    {"name": "full_jamming", "normalize": "layer"}, {"name": "full_jamming", "low_memory": True},
    {"name": "positive_jamming", "window": 5.0}, {"name": "rect_jamming", "window": 0},
    {"name": "rect_jamming", "window": float("nan")},
    {"name": "full_jamming", "window_on": "gradient"},
    {"name": "positive_jamming", "window_on": "output"},
    {"name": "rect_jamming", "window_on": "gradient", "low_memory": True},
]


@pytest.mark.parametrize("table", BAD_TABLES, ids=ids(BAD_TABLES))
def test_invalid_parameters_fail_validation(table):
    with pytest.raises(SpecError):
        resolve_component(get_host(), "surrogate", table)


def test_defaults():
    host = get_host()
    assert resolve_component(host, "surrogate", {"name": "rect"})[1].model_dump() == {
        "width": 1.0, "height": 1.0, "low_memory": False}
    assert resolve_component(host, "surrogate", {"name": "rect_jamming"})[1].model_dump() == {
        "window": 5.0, "normalize": "batch", "window_on": "input", "low_memory": False}
    assert resolve_component(host, "surrogate", {"name": "constant"})[1].scale == 1.0
    assert resolve_component(host, "surrogate", {"name": "triangular"})[1].width == 1.0


# ---- memory saved for backward -------------------------------------------------------------
def saved_bytes(module, x: torch.Tensor) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


SAVED_LIMITS = [  # (table, max bytes per element); low memory: exactly the 1-byte mask
    ({"name": "constant"}, 0), ({"name": "rect"}, 4), ({"name": "rect", "low_memory": True}, 1),
    ({"name": "triangular"}, 4), ({"name": "d_logistic"}, 4), ({"name": "full_jamming"}, 0),
    ({"name": "positive_jamming"}, 4), ({"name": "positive_jamming", "low_memory": True}, 1),
    ({"name": "rect_jamming"}, 4), ({"name": "rect_jamming", "low_memory": True}, 1),
    ({"name": "positive_jamming", "window_on": "gradient"}, 0),
    ({"name": "rect_jamming", "window_on": "gradient"}, 0),
]


@pytest.mark.parametrize("table,limit", SAVED_LIMITS, ids=ids([t for t, _ in SAVED_LIMITS]))
@pytest.mark.parametrize("act", ["relu", "logistic", "identity", "step"])
def test_saved_bytes_per_element(table, limit, act):
    n = 1 << 14
    x = torch.randn(n, requires_grad=True)
    scalar = 4  # the jamming scale k is one float32 per site
    saved = saved_bytes(site(table, act), x)
    assert saved <= limit * n + scalar
    if table.get("low_memory"):
        assert saved >= n  # the 1-byte mask is really kept
    if table["name"] == "constant":
        assert saved == 0
    native = saved_bytes(site("tied", act), x)
    assert saved <= max(native, 4 * n) + scalar


# ---- torch.func and torch.compile ----------------------------------------------------------
@pytest.mark.parametrize("table", ALL_TABLES, ids=ids(ALL_TABLES))
@pytest.mark.parametrize("act", ["relu", "identity"])
def test_vmap_matches_a_loop(table, act):
    xs = torch.randn(4, 32, generator=torch.Generator().manual_seed(15)) * 2
    jamming = table["name"] in JAMMING
    ys = torch.func.vmap(site(table, act))(xs)
    torch.testing.assert_close(ys, activation(act).native(xs))
    per_sample_grad = torch.func.vmap(torch.func.grad(lambda v, m: m(v).sum()),
                                      in_dims=(0, None),
                                      randomness="different" if jamming else "error")
    grads = per_sample_grad(xs, site(table, act))
    if jamming:
        assert (grads >= 0).all() and (grads.sum(1) > 0).all()
        if table == {"name": "full_jamming"} and act == "identity":
            assert grads.max() < 2.0  # k = 2 mean(f') = 2 per sample
        with pytest.raises(RuntimeError, match="randomness"):
            torch.func.vmap(torch.func.grad(lambda v, m: m(v).sum()), in_dims=(0, None))(
                xs, site(table, act))
        same = torch.func.vmap(torch.func.grad(lambda v, m: m(v).sum()), in_dims=(0, None),
                               randomness="same")(xs, site({**table, "normalize": "none"}, act))
        if table["name"] == "full_jamming":
            torch.testing.assert_close(same, same[:1].expand_as(same))
    else:
        loop = torch.stack([input_grad(site(table, act), x) for x in xs])
        torch.testing.assert_close(grads, loop)


def compiled_grad(table, act, x, grad_out, seed, backend):
    module = site(table, act, make_ctx(seed))
    fn = torch.compile(module, fullgraph=True, backend=backend)
    xr = x.clone().requires_grad_()
    (dx,) = torch.autograd.grad(fn(xr), xr, grad_out)
    return dx


@pytest.mark.parametrize("table", ALL_TABLES, ids=ids(ALL_TABLES))
def test_compiles_without_graph_breaks(table):
    """fullgraph=True fails on any graph break; ``aot_eager`` traces forward and backward through
    dynamo and AOT autograd without the C++ code generation (that is the slow test below). The
    compiled jamming draws come from the same seeded stream as eager ones."""
    torch._dynamo.reset()
    x = torch.randn(2, 48, generator=torch.Generator().manual_seed(16)) * 2
    grad_out = torch.randn(2, 48, generator=torch.Generator().manual_seed(17))
    for act in ("relu", "identity"):
        got = compiled_grad(table, act, x, grad_out, 18, "aot_eager")
        torch.testing.assert_close(got, input_grad(site(table, act, make_ctx(18)), x, grad_out))


@pytest.mark.slow
@pytest.mark.parametrize("table", ALL_TABLES, ids=ids(ALL_TABLES))
def test_inductor_compile_matches_eager(table):
    torch._dynamo.reset()
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(19)) * 2
    grad_out = torch.randn(8, 64, generator=torch.Generator().manual_seed(20))
    got = compiled_grad(table, "logistic", x, grad_out, 21, "inductor")
    torch.testing.assert_close(got, input_grad(site(table, "logistic", make_ctx(21)), x, grad_out),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("table", [{"name": "tied"}, {"name": "constant", "scale": 0.5},
                                   {"name": "rect", "width": 0.7, "height": 2.0},
                                   {"name": "rect", "low_memory": True},
                                   {"name": "triangular", "width": 1.5}, {"name": "d_logistic"}])
@pytest.mark.parametrize("act", ["relu", "logistic", "tanh", "step", "identity"])
def test_local_gradient_is_the_autograd_backward(untied_host, table, act):
    """``local_gradient(x)`` (used by trainers that run the backward by hand) is what the
    module's autograd backward multiplies the incoming gradient by."""
    from bench_core.specs.plan import resolve_component

    a_comp, a_params = resolve_component(untied_host, "activation", {"name": act})
    s_comp, s_params = resolve_component(untied_host, "surrogate", table)
    module = s_comp.factory(s_params, activation=a_comp.factory(a_params),
                            ctx=RunContext(seed=0, device=torch.device("cpu")))
    assert module.elementwise
    x = torch.linspace(-3, 3, 601, requires_grad=True)
    (grad,) = torch.autograd.grad(module(x).sum(), x)
    assert torch.allclose(module.local_gradient(x.detach()), grad, atol=1e-6)
