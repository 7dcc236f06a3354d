"""The function_approx dataset and its target registry: shapes, determinism per seed, grid
and random sampling, noise on training targets only, the built-in targets' formulas, and new
targets from a third-party package (entry point) or in-process code."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch
from untied_plugins.separated import targets
from untied_plugins.separated.function_approx import (
    FunctionApproxParams,
    function_approx,
)
from untied_plugins.separated.targets import Target, get_target, register_target

from bench_core.errors import SpecError
from bench_core.interfaces import RunContext
from bench_core.specs.plan import resolve_component


def bundle(seed: int = 0, **options):
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    return function_approx(FunctionApproxParams(**options), ctx=ctx)


@pytest.fixture
def registry(monkeypatch):
    """Targets registered in a test are gone afterwards."""
    monkeypatch.setattr(targets, "TARGETS", dict(targets.TARGETS))
    monkeypatch.setattr(targets, "_SOURCES", dict(targets._SOURCES))
    monkeypatch.setattr(targets, "_LOAD_ERRORS", {})
    return targets


def test_shapes_task_and_domain():
    data = bundle(target="sin_cos", n_train=300, n_test=200)
    assert data.info.task == "regression" and data.info.input_shape == (2,)
    assert data.info.num_outputs == 1
    assert data.x_train.shape == (300, 2) and data.y_train.shape == (300, 1)
    assert data.x_test.shape == (200, 2) and data.y_test.dtype == torch.float32
    assert data.x_train.abs().max() <= math.pi and data.x_train.abs().max() > 3.0
    three = bundle(target="gaussian_bump_3d", n_train=50, domain=(0.0, 0.5))
    assert three.x_train.shape == (50, 3) and three.info.input_shape == (3,)
    assert three.x_train.min() >= 0 and three.x_train.max() <= 0.5


def test_the_same_seed_gives_the_same_points_and_another_seed_others():
    a, b, c = bundle(0, target="saddle"), bundle(0, target="saddle"), bundle(1, target="saddle")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_train[:100], a.x_test[:100])  # test points are drawn apart


def test_grid_sampling_covers_a_regular_grid_with_its_endpoints():
    data = bundle(target="saddle", sampling="grid", n_train=1024)
    assert data.x_train.shape == (1024, 2)  # 32 x 32
    assert set(data.x_train[:, 0].unique().tolist()) == set(
        torch.linspace(-1, 1, 32, dtype=torch.float64).float().tolist())
    assert bundle(target="saddle_3d", sampling="grid", n_train=1024).x_train.shape == (1000, 3)


@pytest.mark.parametrize("name, formula", [
    ("relu_ridge", lambda x, y, z: max(0.0, 0.8 * x + 0.6 * y + 0.1)),
    ("sin_cos", lambda x, y, z: math.sin(x) * math.cos(y)),
    ("gaussian_bump", lambda x, y, z: math.exp(-4 * (x * x + y * y))),
    ("saddle", lambda x, y, z: x * x - y * y),
    ("relu_ridge_3d", lambda x, y, z: max(0.0, (2 * x + 2 * y + z) / 3 + 0.1)),
    ("sin_cos_3d", lambda x, y, z: math.sin(x) * math.cos(y) * math.cos(z)),
    ("gaussian_bump_3d", lambda x, y, z: math.exp(-4 * (x * x + y * y + z * z))),
    ("saddle_3d", lambda x, y, z: x * x + y * y - 2 * z * z),
])
def test_builtin_targets(name, formula):
    data = bundle(target=name, n_train=20, n_test=5)
    for x, y in zip(data.x_test.double().tolist(), data.y_test.squeeze(1).tolist()):
        assert y == pytest.approx(formula(*x, *([0.0] * (3 - len(x)))), abs=1e-6)


@pytest.mark.parametrize("name, formula", [
    ("sin_cos_field", lambda x, y, z: [math.sin(x) * math.cos(y), -math.cos(x) * math.sin(y)]),
    ("bump_ridge_saddle_3d", lambda x, y, z: [math.exp(-4 * (x * x + y * y + z * z)),
                                              max(0.0, (2 * x + 2 * y + z) / 3 + 0.1),
                                              x * x + y * y - 2 * z * z]),
])
def test_vector_valued_targets_give_one_output_per_component(name, formula):
    data = bundle(target=name, n_train=40, n_test=6)
    k = get_target(name).outputs
    assert k > 1 and data.info.num_outputs == k
    assert data.y_train.shape == (40, k) and data.y_test.shape == (6, k)
    for x, y in zip(data.x_test.double().tolist(), data.y_test.tolist()):
        assert y == pytest.approx(formula(*x, *([0.0] * (3 - len(x)))), abs=1e-6)


def test_a_vector_target_trains_an_mlp_with_one_output_per_component():
    from untied_plugins.backprop.losses import evaluate
    from untied_plugins.backprop.models import MLPParams, mlp
    from untied_plugins.backprop.activations import ACTIVATIONS

    from bench_core.interfaces import NativeActivation

    data = bundle(target="sin_cos_field", n_train=64, n_test=16)
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    model = mlp(MLPParams(hidden=[8]), data=data.info,
                activation=lambda: NativeActivation(ACTIVATIONS["relu"][1]), ctx=ctx)
    assert model(data.x_test).shape == (16, 2)
    got = evaluate(model, data.x_test, data.y_test, "mse", "regression", 16)
    with torch.no_grad():
        want = (model(data.x_test) - data.y_test).square().mean()
    torch.testing.assert_close(got["mse"], want)  # the mean over samples and components


def test_a_target_needs_at_least_one_output(registry):
    with pytest.raises(ValueError, match="needs outputs >= 1"):
        register_target(Target("none_out", 2, lambda x: x[:, 0], "no outputs", outputs=0))


def test_noise_goes_on_training_targets_only():
    clean, noisy = bundle(target="saddle"), bundle(target="saddle", noise=0.1)
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.y_test, noisy.y_test)
    residual = noisy.y_train - clean.y_train
    assert residual.std().item() == pytest.approx(0.1, rel=0.1)
    assert abs(residual.mean().item()) < 0.02


def test_bad_parameters_fail_before_anything_runs(untied_host):
    with pytest.raises(SpecError, match=r"unknown target 'sin_coss'; did you mean 'sin_cos'"):
        resolve_component(untied_host, "dataset", {"name": "function_approx",
                                                   "target": "sin_coss"})
    with pytest.raises(SpecError, match=r"dataset.domain: .*low < high"):
        resolve_component(untied_host, "dataset", {"name": "function_approx",
                                                   "domain": [1.0, -1.0]})


def test_in_process_registration_and_name_clash(registry):
    register_target(Target("ring", 2, lambda x: (x.square().sum(-1) - 0.5).abs(), "|r^2 - 1/2|"))
    assert bundle(target="ring", n_train=10).y_train.shape == (10, 1)
    with pytest.raises(ValueError, match="'saddle' is registered by untied-bench \\(built-in\\) "
                                         "and by register_target\\(\\)"):
        register_target(Target("saddle", 2, lambda x: x[:, 0], "another saddle"))
    with pytest.raises(ValueError, match="invalid target name"):
        register_target(Target("Bad-Name", 2, lambda x: x[:, 0], "x"))


def write_target_package(root, name: str, source: str, entry_points: str) -> None:
    """A distribution the way pip installs it: a module and an ``entry_points.txt`` with the
    ``untied.function_targets`` group."""
    (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[untied.function_targets]\n{textwrap.dedent(entry_points)}")


def test_a_third_party_package_adds_targets_through_its_entry_point(
        registry, tmp_path, monkeypatch, untied_host):
    write_target_package(tmp_path, "fakeplug_franke", """
        import torch
        from untied_plugins.separated.targets import Target

        def franke(x):
            x, y = 9 * x[:, 0] - 2, 9 * x[:, 1] - 2
            return 0.75 * torch.exp(-(x ** 2 + y ** 2) / 4)

        FRANKE = Target("franke", 2, franke, "first term of Franke's function", (0.0, 1.0))
        BOTH = [Target("plane", 2, lambda x: x.sum(-1), "x + y")]
    """, "franke = fakeplug_franke:FRANKE\nplane = fakeplug_franke:BOTH\n"
         "broken = fakeplug_franke:MISSING\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.load_entry_points(reload=True)
    assert get_target("franke").domain == (0.0, 1.0) and "plane" in registry.TARGETS
    assert "fakeplug_franke" in registry._SOURCES["franke"]
    # usable from a spec like any built-in target
    comp, params = resolve_component(untied_host, "dataset", {"name": "function_approx",
                                                              "target": "franke"})
    data = comp.factory(params, ctx=RunContext(seed=0, device=torch.device("cpu")))
    assert data.x_train.min() >= 0 and data.y_train.max() <= 0.75
    # the entry point that fails to load is named when a target is not found
    with pytest.raises(ValueError, match=r"entry point 'broken' failed to load \(AttributeError"):
        get_target("nope")
