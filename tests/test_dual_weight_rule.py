"""The dual-weight rule (Wang 2025) against a direct loop over eqs. 15-17 and Appendix B, its
mini-batch form, and the l2 baseline's penalty gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from untied_plugins.backprop.activations import ACTIVATIONS
from untied_plugins.dual_weight.rules import DualWeightRule, L2NormSGD

from bench_core.interfaces import NativeActivation

RELU = ACTIVATIONS["relu"][1]


def tiny_net(seed: int = 0) -> nn.Sequential:
    """3 -> 4 -> 2, ReLU, float64; hidden unit 3 is dead (bias -50): its error is always 0."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), NativeActivation(RELU), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].bias[3] = -50.0
    return net


def stream(n: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    ys = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return xs, ys


class ReferenceDualWeight:
    """Eqs. 15-17 (and Appendix B when ``stable``), neuron by neuron, written out plainly."""

    def __init__(self, net: nn.Sequential, eta: float, stable: bool, output_error=None) -> None:
        self.eta, self.stable = eta, stable
        # dE/dz at the output; default: loss = mean over outputs of (z - y)^2
        self.output_error = output_error or (lambda z, y: 2 * (z - y) / len(y))
        self.W1 = [net[0].weight.detach().clone(), net[2].weight.detach().clone()]
        self.W2 = [torch.zeros_like(w) for w in self.W1]
        self.b = [net[0].bias.detach().clone(), net[2].bias.detach().clone()]
        self.G = [torch.ones(len(b), dtype=torch.float64) for b in self.b]
        self.zero_errors = 0

    def W(self, layer: int) -> torch.Tensor:
        return self.W1[layer] - self.W2[layer]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        z1 = self.W(0) @ x + self.b[0]
        a1 = torch.clamp(z1, min=0)
        z2 = self.W(1) @ a1 + self.b[1]
        d2 = self.output_error(z2, y)
        d1 = (self.W(1).t() @ d2) * (z1 > 0).double()
        for layer, (inp, d) in enumerate(((x, d1), (a1, d2))):
            for i in range(len(d)):
                g = float(d[i])
                if g == 0:                                     # eq. 17: no change
                    self.zero_errors += 1
                else:
                    rate = self.eta * abs(g)
                    if self.stable:                            # Appendix B
                        rate = self.eta * min(0.1 * abs(g) / float(self.G[layer][i]), 1.0)
                    target = self.W1 if g < 0 else self.W2     # eq. 15 / eq. 16
                    target[layer][i] = target[layer][i] * (1 - rate) + inp * rate
                    if self.stable:
                        self.G[layer][i] = self.G[layer][i] * (1 - self.eta) + abs(g) * self.eta
                self.b[layer][i] -= self.eta * g               # biases: plain SGD


@pytest.mark.parametrize("stable", [False, True])
def test_the_rule_follows_eqs_15_to_17_and_appendix_b(stable):
    net = tiny_net()
    eta = 0.05
    rule = DualWeightRule(net, eta, 0.1 if stable else None)
    ref = ReferenceDualWeight(net, eta, stable)
    xs, ys = stream(300)
    worst = 0.0
    for x, y in zip(xs, ys):
        loss = (net(x.unsqueeze(0)) - y).square().mean()
        rule.zero_grad()
        loss.backward()
        rule.step()
        ref.step(x, y)
        for layer, lin in enumerate((net[0], net[2])):
            worst = max(worst,
                        float((rule.w1[lin] - ref.W1[layer]).abs().max()),
                        float((rule.w2[lin] - ref.W2[layer]).abs().max()),
                        float((lin.weight.detach() - ref.W(layer)).abs().max()),
                        float((lin.bias.detach() - ref.b[layer]).abs().max()))
    assert worst < 1e-6
    assert ref.zero_errors >= 300                # the dead unit: delta = 0 every step
    dead = net[0]
    assert torch.equal(rule.w1[dead][3], ref.W1[0][3]) and not rule.w2[dead][3].any()
    assert float(rule.w2[net[2]].abs().sum()) > 0 and float(rule.w1[net[2]].abs().sum()) > 0


def test_minibatch_form_is_the_rate_weighted_mean_and_reduces_to_batch_size_one():
    net = tiny_net()
    rule = DualWeightRule(net, 0.01)
    xs, ys = stream(8)
    lin = net[2]
    w1, w2 = rule.w1[lin].clone(), rule.w2[lin].clone()
    hidden = torch.relu(net[0](xs)).detach()
    out = net(xs)
    loss = (out - ys).square().mean(1).sum()           # summed over the batch
    rule.zero_grad()
    loss.backward()
    rule.step()
    g = (2 * (out - ys) / 2).detach()                  # per-sample dE/dz2
    a = 0.01 * g.abs()
    a1, a2 = a * (g < 0), a * (g > 0)
    want1 = w1 * (1 - a1.sum(0)).unsqueeze(1) + a1.t() @ hidden
    want2 = w2 * (1 - a2.sum(0)).unsqueeze(1) + a2.t() @ hidden
    assert torch.allclose(rule.w1[lin], want1, atol=1e-12)
    assert torch.allclose(rule.w2[lin], want2, atol=1e-12)
    # first order in eta, the same as applying the 8 samples one after another
    seq1, seq2 = w1.clone(), w2.clone()
    for b in range(8):
        seq1 = seq1 * (1 - a1[b]).unsqueeze(1) + a1[b].unsqueeze(1) * hidden[b]
        seq2 = seq2 * (1 - a2[b]).unsqueeze(1) + a2[b].unsqueeze(1) * hidden[b]
    assert float((seq1 - want1).abs().max()) < 10 * float(a.sum(0).max()) ** 2 + 1e-12
    # batch size 1 is eqs. 15-16 exactly
    net_a, net_b = tiny_net(), tiny_net()
    rule_a = DualWeightRule(net_a, 0.05)
    ref = ReferenceDualWeight(net_b, 0.05, stable=False)
    x, y = xs[0], ys[0]
    loss = (net_a(x.unsqueeze(0)) - y).square().mean()
    loss.backward()
    rule_a.step()
    ref.step(x, y)
    assert torch.allclose(rule_a.w1[net_a[0]], ref.W1[0], atol=1e-12)


def test_total_rate_is_capped_so_rows_stay_weighted_means():
    net = tiny_net()
    rule = DualWeightRule(net, 10.0)                   # absurd rate: every A_i > 1
    xs, ys = stream(4)
    hidden = torch.relu(net[0](xs)).detach()
    loss = (net(xs) - ys).square().mean(1).sum()
    loss.backward()
    rule.step()
    lo, hi = hidden.min(0).values, hidden.max(0).values
    for w in (rule.w1[net[2]], rule.w2[net[2]]):
        moved = w.abs().sum(1) > 0
        assert bool(((w[moved] >= lo - 1e-9) & (w[moved] <= hi + 1e-9)).all())


def test_the_rule_leaves_the_model_alone_and_trains_under_no_grad_eval():
    net = tiny_net()
    modules_before = [type(m) for m in net.modules()]
    rule = DualWeightRule(net, 0.05)
    with torch.no_grad():
        net(torch.zeros(2, 3, dtype=torch.float64))     # evaluation captures nothing
    assert not rule._inputs and not rule._errors
    rule.step()                                         # nothing captured: no change
    assert [type(m) for m in net.modules()] == modules_before


def test_binary_layers_are_refused_with_a_clear_error():
    from untied_plugins.backprop.binary_layers import BinaryLinear

    with pytest.raises(ValueError, match="BinaryConnect"):
        DualWeightRule(nn.Sequential(BinaryLinear(3, 2)), 0.1)


@pytest.mark.parametrize("squared", [False, True])
def test_l2_adds_the_gradient_of_its_penalty_to_weight_matrices_only(squared):
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    lam, lr = 0.1, 0.5
    rule = L2NormSGD(a, lr, lam, squared)
    rule.zero_grad()
    ((a(x) - y) ** 2).mean().backward()
    rule.step()
    penalty = 0.5 * b.weight.square().sum() if squared else b.weight.norm()
    loss = ((b(x) - y) ** 2).mean() + lam * penalty
    loss.backward()
    with torch.no_grad():
        for p in b.parameters():
            p -= lr * p.grad
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
    assert torch.allclose(a.bias, b.bias, atol=1e-6)       # biases are not penalised


def test_l2_penalty_at_zero_weights_is_zero_not_nan():
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.zero_()
    rule = L2NormSGD(lin, 0.1, 0.1, False)
    lin(torch.ones(1, 2)).sum().backward()
    rule.step()
    assert math.isfinite(float(lin.weight.detach().sum()))
