"""Models: SUC, MLP, LeNet5 (quadratic-mean pooling), CNN; BatchNorm and BinaryConnect options."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from untied_plugins.backprop import layers, models
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.backprop.binary_layers import BinaryConv2d, BinaryLinear, binarize
from untied_plugins.backprop.layers import QuadraticMeanPool2d
from untied_plugins.backprop.models import CNNParams, MLPParams
from untied_plugins.backprop.trainer import BackpropParams, BackpropTrainer
from untied_plugins.troiano import models as troiano_models
from untied_plugins.troiano.models import LeNet5Params, SUCParams

from bench_core.interfaces import DataBundle, DataInfo, RunContext, TrainingSession

MNIST_LIKE = DataInfo("mnist_like", (1, 28, 28), 10, "classification", 10)
CIFAR_LIKE = DataInfo("cifar_like", (3, 32, 32), 10, "classification", 10)
DIGITS_FLAT = DataInfo("digits", (64,), 10, "classification", 10)
SHAPES = [MNIST_LIKE, CIFAR_LIKE, DIGITS_FLAT]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These models are tiny: one intra-op thread is faster, and far faster on a shared CPU
    where a second thread waits for a busy core (measured 15x on the 2-core dev machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Site(nn.ReLU):
    """A marker activation site, so tests can find where the model called ``activation()``."""


def build(factory, params, info, activation=Site):
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    torch.manual_seed(0)
    return factory(params, data=info, activation=activation, ctx=ctx)


def sequence(model: nn.Module) -> list[type]:
    return [type(m) for m in model]


# ---- output shapes -------------------------------------------------------------------------
BUILDERS = {
    "suc": (troiano_models.suc, SUCParams, 1),
    "mlp": (models.mlp, MLPParams, 10),
    "lenet5": (troiano_models.lenet5, LeNet5Params, 10),
    "cnn": (models.cnn, CNNParams, 10),
}


VARIANTS = [(name, options) for name, (_, cls, _) in BUILDERS.items()
            for options in ({}, {"batchnorm": True}, {"binary_weights": True},
                            {"batchnorm": True, "binary_weights": True})
            if all(k in cls.model_fields for k in options)]


@pytest.mark.parametrize("info", SHAPES, ids=lambda i: "x".join(map(str, i.input_shape)))
@pytest.mark.parametrize("name,options", VARIANTS,
                         ids=[f"{n}-{'+'.join(o) or 'plain'}" for n, o in VARIANTS])
def test_output_shape(name, info, options):
    factory, params_cls, n_out = BUILDERS[name]
    model = build(factory, params_cls(**options), info)
    x = torch.randn(4, *info.input_shape)
    out = model(x)
    assert out.shape == (4, n_out)
    assert torch.isfinite(out).all()


def test_lenet5_layer_sizes_follow_the_input():
    """28x28: the classical 16*5*5 = 400 features; 32x32: 16*6*6; 8x8 digits: conv2 padded by 1
    (a 4x4 map would vanish under a 5x5 kernel) -> 2x2 -> pooled 1x1 -> 16 features."""
    fc_in = {}
    for info in SHAPES:
        model = build(troiano_models.lenet5, LeNet5Params(), info)
        fc_in[info.name] = [m for m in model if isinstance(m, nn.Linear)][0].in_features
        convs = [m for m in model if isinstance(m, nn.Conv2d)]
        assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
        assert convs[0].padding == (2, 2)
    assert fc_in == {"mnist_like": 400, "cifar_like": 576, "digits": 16}
    digits_model = build(troiano_models.lenet5, LeNet5Params(), DIGITS_FLAT)
    assert [m for m in digits_model if isinstance(m, nn.Conv2d)][1].padding == (1, 1)
    assert [m for m in build(troiano_models.lenet5, LeNet5Params(), MNIST_LIKE)
            if isinstance(m, nn.Conv2d)][1].padding == (0, 0)
    assert [m.out_features for m in build(troiano_models.lenet5, LeNet5Params(), MNIST_LIKE)
            if isinstance(m, nn.Linear)] == [120, 84, 10]


def test_lenet5_explicit_conv2_padding_and_too_small_inputs():
    model = build(troiano_models.lenet5, LeNet5Params(conv2_padding=2), DIGITS_FLAT)
    assert model(torch.randn(3, 64)).shape == (3, 10)  # 4x4 -> 4x4 -> 2x2: 64 features
    assert [m for m in model if isinstance(m, nn.Linear)][0].in_features == 64
    with pytest.raises(ValueError, match="at least 2x2"):
        build(troiano_models.lenet5, LeNet5Params(conv2_padding=0), DIGITS_FLAT)


@pytest.mark.parametrize("factory,params", [(troiano_models.lenet5, LeNet5Params()),
                                            (models.cnn, CNNParams())])
def test_image_models_reject_non_image_flat_inputs(factory, params):
    with pytest.raises(ValueError, match="perfect square"):
        build(factory, params, DataInfo("ones", (10,), 1))
    with pytest.raises(ValueError, match="perfect square"):
        build(factory, params, DataInfo("two_d", (28, 28), 10))


def test_cnn_structure_and_too_many_blocks():
    model = build(models.cnn, CNNParams(channels=[4, 8], kernel=5, hidden=16, pool="avg"),
                  MNIST_LIKE)
    assert sequence(model) == [nn.Conv2d, Site, nn.AvgPool2d, nn.Conv2d, Site, nn.AvgPool2d,
                               nn.Flatten, nn.Linear, Site, nn.Linear]
    assert [m for m in model if isinstance(m, nn.Linear)][0].in_features == 8 * 7 * 7
    even = build(models.cnn, CNNParams(channels=[4], kernel=2), MNIST_LIKE)  # 28 -> 29 -> 14
    assert even(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="too small"):
        build(models.cnn, CNNParams(channels=[2, 2, 2, 2]), DIGITS_FLAT)  # 8 -> 4 -> 2 -> 1 -> 0


@pytest.mark.parametrize("cls,bad", [
    (CNNParams, {"channels": []}),
    (CNNParams, {"channels": [8, 0]}),
    (CNNParams, {"kernel": 0}),
    (CNNParams, {"hidden": 0}),
    (CNNParams, {"pool": "quadratic"}),
    (CNNParams, {"depth": 3}),
    (LeNet5Params, {"pool": "median"}),
    (LeNet5Params, {"conv2_padding": -1}),
    (MLPParams, {"hidden": [16, 0]}),
    (SUCParams, {"binary_weights": "maybe"}),
])
def test_invalid_parameters_fail_validation(cls, bad):
    with pytest.raises(ValidationError):
        cls(**bad)


# ---- suc / mlp keep their behaviour ------------------------------------------------------------
def test_mlp_defaults_unchanged():
    """Same layers, and the same weights under the same seed, as plain Linear layers built in
    order (what mlp built before the new options existed)."""
    model = build(models.mlp, MLPParams(hidden=[32, 16]), DIGITS_FLAT)
    assert sequence(model) == [nn.Flatten, nn.Linear, Site, nn.Linear, Site, nn.Linear]
    torch.manual_seed(0)
    reference = [nn.Linear(64, 32), nn.Linear(32, 16), nn.Linear(16, 10)]
    for got, want in zip([m for m in model if isinstance(m, nn.Linear)], reference):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)
    suc = build(troiano_models.suc, SUCParams(bias=False), DIGITS_FLAT)
    assert sequence(suc) == [nn.Flatten, nn.Linear, Site] and suc[1].bias is None


# ---- pooling ---------------------------------------------------------------------------------
def test_quadratic_pool_value_and_gradient():
    x = torch.tensor([[[[3.0, 0.0, 1.0, 1.0],
                        [0.0, 4.0, 1.0, 1.0],
                        [-2.0, 2.0, 0.0, 0.0],
                        [2.0, -2.0, 0.0, 6.0]]]], requires_grad=True)
    y = QuadraticMeanPool2d(2)(x)
    assert y.shape == (1, 1, 2, 2)
    expected = torch.tensor([[2.5, 1.0], [2.0, 3.0]])  # sqrt(25/4), sqrt(4/4), sqrt(16/4), sqrt(36/4)
    torch.testing.assert_close(y[0, 0], expected)
    y.sum().backward()
    # dy/dx_i = x_i / (4 y): 3/10, 4/10 in the first window; 1/4 in the second; 6/12 in the last
    torch.testing.assert_close(x.grad[0, 0, :2, :2], torch.tensor([[0.3, 0.0], [0.0, 0.4]]))
    torch.testing.assert_close(x.grad[0, 0, :2, 2:], torch.full((2, 2), 0.25))
    torch.testing.assert_close(x.grad[0, 0, 3, 3], torch.tensor(0.5))


def test_quadratic_pool_gradient_finite_at_zero():
    x = torch.zeros(2, 3, 4, 4, requires_grad=True)
    y = QuadraticMeanPool2d(2)(x)
    torch.testing.assert_close(y, torch.full((2, 3, 2, 2), math.sqrt(layers.QUADRATIC_POOL_EPS)))
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()
    # tiny non-zero inputs: the gradient stays bounded by 1/2
    x_tiny = torch.full((1, 1, 2, 2), 1e-30, requires_grad=True)
    QuadraticMeanPool2d(2)(x_tiny).sum().backward()
    assert torch.isfinite(x_tiny.grad).all() and x_tiny.grad.abs().max() <= 0.5
    # the naive sqrt(mean(x^2)) is what the eps guards against
    x_naive = torch.zeros(1, 1, 2, 2, requires_grad=True)
    torch.sqrt(torch.nn.functional.avg_pool2d(x_naive * x_naive, 2)).sum().backward()
    assert torch.isnan(x_naive.grad).all()


def test_lenet5_gradient_finite_with_step_activation_and_zero_windows():
    """A step forward with a constant backward (a BNN of Section 5) makes many all-zero pooling
    windows; quadratic pooling must still give finite gradients everywhere."""
    from untied_plugins.troiano.surrogates import ConstantParams, constant

    step = ACTIVATIONS["step"][1]
    ctx = RunContext(seed=0, device=torch.device("cpu"))
    torch.manual_seed(0)
    model = troiano_models.lenet5(LeNet5Params(), data=MNIST_LIKE, ctx=ctx,
                          activation=lambda: constant(ConstantParams(), activation=step, ctx=ctx))
    x = -torch.rand(8, 1, 28, 28) - 5.0  # strongly negative: many windows of zeros after the step
    model(x).square().sum().backward()
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("pool,cls", [("quadratic", QuadraticMeanPool2d), ("avg", nn.AvgPool2d),
                                      ("max", nn.MaxPool2d)])
def test_lenet5_pool_options(pool, cls):
    model = build(troiano_models.lenet5, LeNet5Params(pool=pool), MNIST_LIKE)
    assert sequence(model) == [nn.Conv2d, Site, cls, nn.Conv2d, Site, cls, nn.Flatten,
                               nn.Linear, Site, nn.Linear, Site, nn.Linear]
    x = torch.tensor([[1.0, -3.0], [2.0, 0.5]]).reshape(1, 1, 2, 2)
    expected = {"quadratic": math.sqrt((1 + 9 + 4 + 0.25) / 4), "avg": 0.125, "max": 2.0}[pool]
    assert layers.pooling(pool)(x).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("factory,cls,info,count", [
    (troiano_models.lenet5, LeNet5Params, MNIST_LIKE, 5),
    (models.mlp, MLPParams, DIGITS_FLAT, 2)], ids=["lenet5", "mlp"])
def test_xavier_init_bounds_every_layer_and_zeroes_biases(factory, cls, info, count):
    torch.manual_seed(0)
    default = build(factory, cls(), info)
    torch.manual_seed(0)
    xavier = build(factory, cls(init="xavier_uniform"), info)
    layers = [m for m in xavier.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == count
    for layer in layers:
        w = layer.weight.detach()
        fan_in, fan_out = w[0].numel(), w.shape[0] * w[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.9 * bound      # uniform over the whole range
        assert float(layer.bias.detach().abs().max()) == 0.0
    # the default is untouched (torch's own init), so existing run identities keep their models
    assert any(float(m.bias.detach().abs().max()) > 0 for m in default.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))


# ---- batchnorm -------------------------------------------------------------------------------
def test_batchnorm_after_each_hidden_layer_before_the_activation():
    lenet = build(troiano_models.lenet5, LeNet5Params(batchnorm=True, pool="max"), MNIST_LIKE)
    assert sequence(lenet) == [
        nn.Conv2d, nn.BatchNorm2d, Site, nn.MaxPool2d, nn.Conv2d, nn.BatchNorm2d, Site,
        nn.MaxPool2d, nn.Flatten, nn.Linear, nn.BatchNorm1d, Site, nn.Linear, nn.BatchNorm1d,
        Site, nn.Linear]
    assert [m.num_features for m in lenet if isinstance(m, nn.modules.batchnorm._BatchNorm)] \
        == [6, 16, 120, 84]
    net = build(models.mlp, MLPParams(hidden=[8, 4], batchnorm=True), DIGITS_FLAT)
    assert sequence(net) == [nn.Flatten, nn.Linear, nn.BatchNorm1d, Site, nn.Linear,
                             nn.BatchNorm1d, Site, nn.Linear]
    conv = build(models.cnn, CNNParams(channels=[4, 8], batchnorm=True), MNIST_LIKE)
    assert sequence(conv) == [nn.Conv2d, nn.BatchNorm2d, Site, nn.MaxPool2d, nn.Conv2d,
                              nn.BatchNorm2d, Site, nn.MaxPool2d, nn.Flatten, nn.Linear,
                              nn.BatchNorm1d, Site, nn.Linear]
    for model in (build(troiano_models.lenet5, LeNet5Params(), MNIST_LIKE),
                  build(models.mlp, MLPParams(), DIGITS_FLAT),
                  build(models.cnn, CNNParams(), MNIST_LIKE)):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ---- BinaryConnect ---------------------------------------------------------------------------
def test_binary_linear_forward_uses_sign_of_latent_weights():
    layer = BinaryLinear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.7, 0.0], [-0.01, 0.5, -1.0]]))
        layer.bias.copy_(torch.tensor([0.25, -0.5]))
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])
    signs = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])  # sign(0) = +1
    torch.testing.assert_close(layer(x), x @ signs.T + layer.bias)
    torch.testing.assert_close(layer(x), torch.tensor([[2.25, -2.5], [2.75, -3.0]]))


def test_binary_conv_forward_uses_sign_of_latent_weights():
    layer = BinaryConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        layer.weight.uniform_(-0.5, 0.5)
    x = torch.randn(2, 2, 5, 5)
    expected = torch.nn.functional.conv2d(x, torch.where(layer.weight >= 0, 1.0, -1.0),
                                          layer.bias, padding=1)
    torch.testing.assert_close(layer(x), expected)


def test_binary_gradient_passes_only_where_latent_weight_within_one():
    latent = torch.tensor([[0.5, -1.0, 1.5], [-2.0, 0.0, 1.0]], requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (binarize(latent) * upstream).sum().backward()
    torch.testing.assert_close(latent.grad, torch.tensor([[1.0, 2.0, 0.0], [0.0, 5.0, 6.0]]))

    layer = BinaryLinear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.4, 1.3]]))  # the second is out of range
    x = torch.tensor([[2.0, 3.0], [1.0, -1.0]])
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[3.0, 0.0]]))


def test_constrain_clips_latent_weights_and_leaves_biases():
    layer = BinaryConv2d(1, 2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(-3, 3, layer.weight.numel()).reshape(layer.weight.shape))
        layer.bias.copy_(torch.tensor([5.0, -5.0]))
    inside = layer.weight.detach().abs() <= 1
    before = layer.weight.detach().clone()
    layer.constrain_()
    assert layer.weight.min() == -1 and layer.weight.max() == 1
    assert torch.equal(layer.weight[inside], before[inside])
    assert torch.equal(layer.bias.detach(), torch.tensor([5.0, -5.0]))


@pytest.mark.parametrize("name", ["suc", "mlp", "lenet5"])
def test_binary_weights_option_uses_binary_layers_everywhere(name):
    factory, params_cls, _ = BUILDERS[name]
    model = build(factory, params_cls(binary_weights=True), MNIST_LIKE)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert weighted and all(isinstance(m, (BinaryLinear, BinaryConv2d)) for m in weighted)
    plain = build(factory, params_cls(), MNIST_LIKE)
    assert not any(isinstance(m, (BinaryLinear, BinaryConv2d)) for m in plain.modules())


def test_sgd_through_the_trainer_keeps_latent_weights_in_range():
    """A step-activation BNN (constant backward) with binary weights, trained by the real
    backprop trainer with a large learning rate: unclipped, the latent weights would leave
    [-1, 1]; the trainer's constrain_ calls keep them inside, some pinned at exactly +-1."""
    from untied_plugins.troiano.surrogates import ConstantParams, constant

    ctx = RunContext(seed=0, device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(96, 16, generator=gen)
    y = (x[:, 0] > 0).long()
    info = DataInfo("toy", (16,), 2, "classification", 2)
    data = DataBundle(info, x[:64], y[:64], x[64:], y[64:])
    step = ACTIVATIONS["step"][1]
    built: list[nn.Module] = []

    def build_model(tied: bool = False) -> nn.Module:
        torch.manual_seed(0)
        model = models.mlp(MLPParams(hidden=[8], binary_weights=True), data=info, ctx=ctx,
                           activation=lambda: constant(ConstantParams(), activation=step, ctx=ctx))
        built.append(model)
        return model

    session = TrainingSession(ctx=ctx, data=data, build_model=build_model,
                              build_rule=lambda m: torch.optim.SGD(m.parameters(), lr=2.0),
                              spec={})
    metrics = BackpropTrainer(BackpropParams(epochs=3, batch_size=16)).fit(session)
    assert math.isfinite(metrics["train_loss"])
    latent = torch.cat([m.weight.detach().flatten() for m in built[0].modules()
                        if isinstance(m, BinaryLinear)])
    assert latent.abs().max() <= 1.0
    assert (latent.abs() == 1.0).any()


# ---- end to end through the host -----------------------------------------------------------
def test_lenet5_on_digits_end_to_end_beats_chance():
    from bench_core.execution.runner import execute_task
    from bench_core.plugins import get_host
    from bench_core.specs.model import parse_spec
    from bench_core.specs.plan import expand

    raw = {
        "title": "lenet5 on digits",
        "seeds": 1,
        "defaults": {
            "dataset": {"name": "digits"},
            "model": {"name": "lenet5", "pool": "quadratic"},
            "activation": {"name": "relu"},
            "rule": {"name": "adam", "lr": 0.01},
            "trainer": {"name": "backprop", "epochs": 4, "batch_size": 32},
        },
        "entries": [{"label": "ReLU/H"}],
    }
    host = get_host()
    name, spec = parse_spec(raw, stem="lenet5_digits")
    plan = expand(host, name, spec)
    assert len(plan.tasks) == 1
    row = execute_task(plan.tasks[0], host)
    assert row["status"] == "ok", row["error"]
    assert row["value"] > 0.5  # chance is 0.1


def test_quadratic_sum_pooling_is_lppool_with_a_finite_gradient_at_zero():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    pool = layers.pooling("quadratic_sum")
    torch.testing.assert_close(pool(x), nn.LPPool2d(2, 2)(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pool(x), 2 * layers.pooling("quadratic")(x))
    zeros = torch.zeros(1, 1, 4, 4, requires_grad=True)
    pool(zeros).sum().backward()
    assert torch.isfinite(zeros.grad).all()
    assert build(troiano_models.lenet5, LeNet5Params(pool="quadratic_sum"), MNIST_LIKE)(
        torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_lenet5_conv1_padding_0_on_32x32_gives_the_classical_400_features():
    """LeNet-5 as LeCun et al. 1998 (and BioTorch's LeNet MNIST): 32x32 in, unpadded 5x5 conv
    -> 28x28 -> 14x14 -> 10x10 -> 5x5 x 16 = 400 features; too small an input is refused."""
    grey32 = DataInfo("grey32", (1, 32, 32), 10, "classification", 10)
    model = build(troiano_models.lenet5, LeNet5Params(conv1_padding=0, pool="max"), grey32)
    assert [m for m in model if isinstance(m, nn.Conv2d)][0].padding == (0, 0)
    assert [m for m in model if isinstance(m, nn.Linear)][0].in_features == 400
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="conv1_padding=0"):
        build(troiano_models.lenet5, LeNet5Params(conv1_padding=0), DataInfo(
            "tiny", (1, 5, 5), 10, "classification", 10))


def test_lenet5_c5_as_a_convolution_is_the_dense_layer_with_conv_fan_out():
    """c5 = 'conv': LeCun et al.'s C5 (a 5x5 conv over the 5x5 maps), the dense layer's function
    with its weights reshaped; Xavier's bound then uses the conv's fan-out 120 * 25."""
    grey32 = DataInfo("grey32", (1, 32, 32), 10, "classification", 10)
    dense_net = build(troiano_models.lenet5, LeNet5Params(conv1_padding=0), grey32)
    conv_net = build(troiano_models.lenet5, LeNet5Params(conv1_padding=0, c5="conv"), grey32)
    c5 = [m for m in conv_net if isinstance(m, nn.Conv2d)][2]
    assert (c5.in_channels, c5.out_channels, c5.kernel_size) == (16, 120, (5, 5))
    convs = [m for m in conv_net if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for src, dst in zip([m for m in dense_net if isinstance(m, (nn.Conv2d, nn.Linear))],
                            convs):
            dst.weight.copy_(src.weight.reshape(dst.weight.shape))
            dst.bias.copy_(src.bias)
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(conv_net(x), dense_net(x))
    xavier = build(troiano_models.lenet5, LeNet5Params(conv1_padding=0, c5="conv",
                                                       init="xavier_uniform"), grey32)
    w = [m for m in xavier if isinstance(m, nn.Conv2d)][2].weight.detach()
    assert float(w.abs().max()) <= math.sqrt(6 / (400 + 3000))
    assert float(w.abs().max()) > 0.9 * math.sqrt(6 / (400 + 3000))


def test_lenet5_draws_its_initial_weights_in_layer_order():
    """Options added later must not move the random draws: the default lenet5 equals the same
    layers built one by one in order from the same seed (the committed records replay)."""
    model = build(troiano_models.lenet5, LeNet5Params(), MNIST_LIKE)
    torch.manual_seed(0)
    expected = [nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5), nn.Linear(400, 120),
                nn.Linear(120, 84), nn.Linear(84, 10)]
    got = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.weight, b.weight)
        torch.testing.assert_close(a.bias, b.bias)
