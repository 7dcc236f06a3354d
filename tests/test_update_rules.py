"""The sgd/adam rules and their gradient manipulations (Troiano et al. eqs. 17-21), each checked
against a hand computation on a tiny model: with SGD at lr = 1 the weight change of one step
is exactly the manipulated gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from untied_plugins.backprop.rules import ManipulatedGradients

from bench_core.errors import SpecError
from bench_core.interfaces import RunContext
from bench_core.plugins import get_host
from bench_core.specs.plan import resolve_component


def tiny_model() -> nn.Module:
    """A conv weight (2, 1, 2, 2), a dense weight (2, 3) and two biases."""
    torch.manual_seed(0)
    return nn.ModuleDict({"conv": nn.Conv2d(1, 2, 2), "fc": nn.Linear(3, 2)})


def fixed_grads(model: nn.Module) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return [torch.randn(w.shape, generator=gen) for w in model.parameters()]


def make_rule(model: nn.Module, name: str = "sgd", seed: int = 0, **options):
    comp, params = resolve_component(get_host(), "rule", {"name": name, **options})
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    return comp.factory(params, model=model, ctx=ctx)


def update(model: nn.Module, grads: list[torch.Tensor], seed: int = 0, **options
           ) -> list[torch.Tensor]:
    """The manipulated gradient: the change of every parameter after one SGD step at lr = 1."""
    rule = make_rule(model, seed=seed, lr=1.0, **options)
    before = [w.detach().clone() for w in model.parameters()]
    rule.zero_grad(set_to_none=True)
    for w, g in zip(model.parameters(), grads):
        w.grad = g.clone()
    rule.step()
    return [b - w.detach() for b, w in zip(before, model.parameters())]


def rule_stream(seed: int = 0) -> torch.Generator:
    """A fresh copy of the ``rule`` stream a run with ``seed`` draws noise and masks from."""
    return RunContext(seed=seed, device=torch.device("cpu")).generator("rule")


def split_like(flat: torch.Tensor, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return [c.view_as(g) for c, g in zip(flat.split([g.numel() for g in grads]), grads)]


def assert_all_close(got, expected, **tol):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_no_manipulation_gives_the_plain_torch_optimizer(name, cls):
    rule = make_rule(tiny_model(), name)
    assert type(rule) is cls
    assert isinstance(make_rule(tiny_model(), name, grad_scale=2.0), ManipulatedGradients)


def test_plain_sgd_step_is_the_raw_gradient():
    model = tiny_model()
    grads = fixed_grads(model)
    assert_all_close(update(model, grads), grads)


def test_centralize_subtracts_each_output_units_mean_from_weights_only():
    model = tiny_model()
    grads = fixed_grads(model)
    conv_w, conv_b, fc_w, fc_b = grads
    expected = [conv_w - conv_w.mean(dim=(1, 2, 3), keepdim=True), conv_b,
                fc_w - fc_w.mean(dim=1, keepdim=True), fc_b]
    got = update(model, grads, centralize=True)
    assert_all_close(got, expected)
    assert got[2].sum(1).abs().max() < 1e-6  # each unit's input gradients now sum to 0


def test_scale_multiplies_every_gradient():
    model = tiny_model()
    grads = fixed_grads(model)
    assert_all_close(update(model, grads, grad_scale=2.5), [2.5 * g for g in grads])


def test_noise_is_gaussian_from_the_rule_stream():
    model = tiny_model()
    grads = fixed_grads(model)
    total = sum(g.numel() for g in grads)
    noise = split_like(torch.randn(total, generator=rule_stream()), grads)
    got = update(model, grads, grad_noise_std=0.3)
    assert_all_close(got, [g + 0.3 * z for g, z in zip(grads, noise)])


def test_dropout_keeps_elements_with_probability_p_and_rescales_them():
    model = tiny_model()
    grads = fixed_grads(model)
    total = sum(g.numel() for g in grads)
    keep = split_like(torch.rand(total, generator=rule_stream()) < 0.6, grads)
    got = update(model, grads, grad_keep_prob=0.6)
    assert_all_close(got, [g * k / 0.6 for g, k in zip(grads, keep)])
    dropped = torch.cat([(~k).flatten() for k in keep])
    assert 0 < dropped.sum() < total  # the mask really drops some elements and keeps others


def test_dropout_is_unbiased():
    """E[g * M / p] = g: the mean over many seeded draws approaches the raw gradient."""
    model = nn.Linear(50, 40)
    grads = [torch.ones_like(w) for w in model.parameters()]
    comp, params = resolve_component(get_host(), "rule", {"name": "sgd", "lr": 1.0,
                                                            "grad_keep_prob": 0.25})
    rule = comp.factory(params, model=model, ctx=RunContext(seed=1, device=torch.device("cpu")))
    total = torch.zeros(())
    for _ in range(20):
        for w, g in zip(model.parameters(), grads):
            w.grad = g.clone()
        rule.manipulate()
        total += sum(w.grad.sum() for w in model.parameters())
    mean = total / (20 * sum(g.numel() for g in grads))
    assert abs(float(mean) - 1.0) < 0.05


def test_clip_rescales_to_the_threshold_only_above_it():
    model = tiny_model()
    grads = fixed_grads(model)
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    assert norm > 1.0
    got = update(model, grads, clip_norm=1.0)
    assert_all_close(got, [g / norm for g in grads], rtol=1e-5, atol=1e-6)
    untouched = update(tiny_model(), grads, clip_norm=float(norm) * 2)
    assert_all_close(untouched, grads)


def test_all_manipulations_apply_in_the_documented_order():
    """centralise -> scale -> noise -> dropout -> clip, by hand; any other order differs."""
    model = tiny_model()
    grads = fixed_grads(model)
    options = dict(centralize=True, grad_scale=3.0, grad_noise_std=0.5, grad_keep_prob=0.7,
                   clip_norm=2.0)
    gen = rule_stream()
    total = sum(g.numel() for g in grads)
    noise = split_like(torch.randn(total, generator=gen), grads)
    keep = split_like(torch.rand(total, generator=gen) < 0.7, grads)
    g = [x - x.mean(dim=tuple(range(1, x.dim())), keepdim=True) if x.dim() > 1 else x
         for x in grads]
    g = [3.0 * x for x in g]
    g = [x + 0.5 * z for x, z in zip(g, noise)]
    g = [x * k / 0.7 for x, k in zip(g, keep)]
    norm = torch.linalg.vector_norm(torch.cat([x.flatten() for x in g]))
    assert norm > 2.0
    expected = [x * 2.0 / norm for x in g]
    got = update(model, grads, **options)
    assert_all_close(got, expected, rtol=1e-5, atol=1e-6)
    # Noise before scaling would give a different update: the order is observable.
    swapped = [(x + 0.5 * z) * 3.0 for x, z in zip(grads, noise)]
    assert not torch.allclose(got[0], swapped[0] * keep[0] / 0.7, atol=1e-3)
    final = torch.linalg.vector_norm(torch.cat([x.flatten() for x in got]))
    assert float(final) == pytest.approx(2.0, rel=1e-5)


def test_stochastic_manipulations_are_seeded():
    grads = fixed_grads(tiny_model())
    opts = dict(grad_noise_std=0.1, grad_keep_prob=0.5)
    first = update(tiny_model(), grads, **opts)
    again = update(tiny_model(), grads, **opts)
    assert_all_close(first, again, rtol=0, atol=0)
    other_seed = update(tiny_model(), grads, seed=7, **opts)
    assert not all(torch.equal(a, b) for a, b in zip(first, other_seed))


def test_stochastic_manipulations_leave_the_global_rng_alone():
    model, grads = tiny_model(), fixed_grads(tiny_model())  # (tiny_model seeds the global RNG)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    update(model, grads, grad_noise_std=0.1, grad_keep_prob=0.5)
    assert torch.equal(torch.rand(3), expected)


def test_wrapped_rule_zero_grad_and_parameters_without_gradient():
    model = tiny_model()
    rule = make_rule(model, lr=1.0, grad_scale=2.0, centralize=True)
    weights = list(model.parameters())
    weights[0].grad = torch.ones_like(weights[0])
    before = [w.detach().clone() for w in weights]
    rule.step()  # only the conv weight has a gradient; the others must stay as they are
    assert all(torch.equal(b, w) for b, w in zip(before[1:], weights[1:]))
    assert torch.equal(before[0], weights[0].detach())  # centralised ones are 0
    rule.zero_grad(set_to_none=True)
    assert all(w.grad is None for w in weights)
    assert rule.param_groups[0]["lr"] == 1.0


def test_adam_applies_the_manipulations_and_ignores_the_scale():
    """Adam normalises by the gradient's RMS, so grad_scale changes its first step only by eps,
    while centralisation changes it."""
    grads = fixed_grads(tiny_model())

    def adam_step(**options):
        model = tiny_model()
        rule = make_rule(model, "adam", lr=0.1, **options)
        before = [w.detach().clone() for w in model.parameters()]
        for w, g in zip(model.parameters(), grads):
            w.grad = g.clone()
        rule.step()
        return [b - w.detach() for b, w in zip(before, model.parameters())]

    plain = adam_step()
    assert_all_close(adam_step(grad_scale=100.0), plain, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(adam_step(centralize=True)[2], plain[2])


@pytest.mark.parametrize("rule", ["sgd", "adam"])
@pytest.mark.parametrize("option, value", [
    ("clip_norm", 0), ("clip_norm", -1.0), ("grad_scale", 0), ("grad_noise_std", -0.1),
    ("grad_keep_prob", 0), ("grad_keep_prob", 1.5), ("centralize", "sometimes"),
])
def test_invalid_options_are_rejected(rule, option, value):
    with pytest.raises(SpecError, match=option):
        resolve_component(get_host(), "rule", {"name": rule, option: value})


def test_valid_options_and_defaults():
    _, params = resolve_component(get_host(), "rule", {"name": "sgd", "clip_norm": 1.0,
                                                         "grad_keep_prob": 1})
    assert params.clip_norm == 1.0 and params.grad_keep_prob == 1
    _, defaults = resolve_component(get_host(), "rule", {"name": "adam"})
    assert not defaults.manipulates()
