"""Tests a plugin author writes, using untied-bench's test kit fixtures."""

from importlib import resources

import torch

import untied_sign_sgd
from bench_core.testing import assert_plugin_conforms


def test_step_moves_each_weight_by_lr_against_the_gradient_sign():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = untied_sign_sgd.SignSGD([w], lr=0.5, momentum=0.0)
    w.grad = torch.tensor([10.0, -0.1, 0.0])
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([0.5, -1.5, 3.0]))


def test_signsgd_learns_digits(untied_host, run_leaderboard):
    if "sign_sgd" not in untied_host.plugins:  # not installed: load it in-process instead
        untied_host.add_plugin(untied_sign_sgd, "sign_sgd")
    spec = resources.files("untied_sign_sgd").joinpath("leaderboard.toml").read_text()
    table = run_leaderboard(spec, seeds=1)
    means = dict(zip(table["entry"], table["mean"]))
    assert means["signSGD"] > 0.8 and means["SGD"] > 0.8


def test_sign_sgd_conforms():
    """untied-bench's conformance kit: parameters, build, a training step, determinism,
    records (the same checks as `untied check-plugin untied-sign-sgd`)."""
    assert_plugin_conforms("untied_sign_sgd")
