"""Runs on the same data share it (bench_core.data.share_while_used / prepared_split): one test
split and one noisy copy per data seed, never a copy per run, with the numbers each run would
get alone. Toy data only (no built-in dataset)."""

from __future__ import annotations

import gc

import torch

from bench_core.data import (
    make_bundle,
    prepared_split,
    share_while_used,
    split_train_test,
    take_subset,
)
from bench_core.interfaces import DataInfo, RunContext

INFO = DataInfo("toy", (4,), 3, "classification", 3)
RAW = (torch.arange(400, dtype=torch.uint8).reshape(100, 4), torch.arange(100) % 3)


def split(gen):
    return split_train_test(*RAW, 0.2, gen)


def unit(x_train, x_test):
    return x_train.float() / 255, x_test.float() / 255


def standard(x_train, x_test):
    x_train, x_test = x_train.float(), x_test.float()
    mean, std = x_train.mean(0), x_train.std(0)
    return (x_train - mean) / std, (x_test - mean) / std


def alone(seed, subset, finish):
    """What one run computes on its own: split, pool, finish."""
    gen = RunContext(seed=seed, device=torch.device("cpu")).generator("data", device="cpu")
    x_tr, y_tr, x_te, y_te = split(gen)
    x_tr, y_tr = take_subset(x_tr, y_tr, subset, gen)
    x_tr, x_te = finish(x_tr, x_te)
    return x_tr, y_tr, x_te, y_te


def shared(seed, subset, finish, elementwise, key="toy"):
    ctx = RunContext(seed=seed, device=torch.device("cpu"))
    return prepared_split((key, ctx.stream_seed("data")), ctx, subset, split, finish,
                          elementwise=elementwise)


def test_elementwise_finish_shares_the_test_split_across_pools_with_each_runs_numbers():
    runs = {subset: shared(1, subset, unit, True) for subset in (10, 30, 50)}
    assert runs[10][2] is runs[30][2] is runs[50][2]  # one test split for the three pools
    for subset, got in runs.items():
        for a, b in zip(got, alone(1, subset, unit)):
            assert torch.equal(a, b)
    other_seed = shared(2, 10, unit, True)
    assert other_seed[2] is not runs[10][2] and not torch.equal(other_seed[2], runs[10][2])


def test_pool_statistics_share_only_between_runs_with_the_same_pool():
    a, b, c = shared(1, 20, standard, False), shared(1, 20, standard, False), \
        shared(1, 40, standard, False)
    assert a[2] is b[2] and a[0] is b[0]
    assert c[2] is not a[2]
    for got, subset in ((a, 20), (c, 40)):
        for x, y in zip(got, alone(1, subset, standard)):
            assert torch.equal(x, y)


def test_an_entry_lives_while_a_run_holds_it_then_is_built_again():
    builds = []

    def build():
        builds.append(1)
        return (torch.zeros(3), "extra")

    first = share_while_used("anchor-test", build)
    again = share_while_used("anchor-test", build)
    assert again[0] is first[0] and again[1] == "extra" and len(builds) == 1
    del first, again
    gc.collect()
    share_while_used("anchor-test", build)
    assert len(builds) == 2


def test_noisy_copies_are_shared_per_noise_seed_and_equal_unshared_ones():
    x_tr, y_tr, x_te, y_te = shared(3, 10, unit, True)
    options = {"noisy_test_std": 0.3, "noisy_test_clip": (0.0, 1.0)}

    def bundle(seed, key):
        ctx = RunContext(seed=seed, device=torch.device("cpu"))
        return make_bundle(INFO, x_tr, y_tr, x_te, y_te, ctx, share_key=key, **options)

    a, b, c = bundle(3, "toy-3"), bundle(3, "toy-3"), bundle(4, "toy-3")
    plain = bundle(3, None)
    assert a.eval_sets["noisy"][0] is b.eval_sets["noisy"][0]
    assert c.eval_sets["noisy"][0] is not a.eval_sets["noisy"][0]
    assert torch.equal(a.eval_sets["noisy"][0], plain.eval_sets["noisy"][0])
    assert plain.eval_sets["noisy"][0] is not a.eval_sets["noisy"][0]
