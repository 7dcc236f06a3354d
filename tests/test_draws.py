"""bench_core.draws.random_signs: packed-bit Rademacher entries for plugins."""

from __future__ import annotations

import pytest
import torch

from bench_core.draws import random_signs


def test_every_entry_is_exactly_plus_or_minus_the_value():
    gen = torch.Generator().manual_seed(0)
    for value in (1.0, 0.1, 1e-3, -2.5, 3e-30):
        s = random_signs(1000, gen, value)
        assert s.dtype == torch.float32 and s.shape == (1000,) and s.is_contiguous()
        v = torch.tensor(value, dtype=torch.float32)
        assert torch.equal(s.abs(), v.abs().expand(1000))
        assert 0 < int((s > 0).sum()) < 1000


def test_a_tensor_value_is_used_on_the_device_with_its_sign():
    gen = torch.Generator().manual_seed(1)
    seed = gen.get_state()
    from_number = random_signs(77, gen, 0.25)
    gen.set_state(seed)
    from_tensor = random_signs(77, gen, torch.tensor(-0.25))
    assert torch.equal(from_tensor, -from_number)
    with pytest.raises(ValueError, match="0-d tensor"):
        random_signs(3, gen, torch.ones(2))


def test_the_layout_is_bit_j_div_m_of_word_j_mod_m():
    n = 100
    m = -(-n // 31)
    gen = torch.Generator().manual_seed(2)
    seed = gen.get_state()
    s = random_signs(n, gen)
    gen.set_state(seed)
    words = torch.randint(0, 2**31, (1, m), generator=gen, dtype=torch.int32)[0].tolist()
    expected = [-1.0 if (words[j % m] >> (j // m)) & 1 else 1.0 for j in range(n)]
    assert s.tolist() == expected
    assert torch.equal(gen.get_state(), _advanced(seed, m))  # the words, nothing more


def _advanced(seed, m):
    gen = torch.Generator()
    gen.set_state(seed)
    torch.randint(0, 2**31, (m,), generator=gen, dtype=torch.int32)
    return gen.get_state()


def test_signs_are_balanced_and_uncorrelated():
    s = random_signs(310_000, torch.Generator().manual_seed(3))
    # mean and lag-1 / lag-m correlations of 310,000 fair signs: sd 1/sqrt(n) = 0.0018
    m = 10_000
    assert abs(float(s.mean())) < 0.01
    assert abs(float((s[1:] * s[:-1]).mean())) < 0.01
    assert abs(float((s[m:] * s[:-m]).mean())) < 0.01


def test_the_same_seed_gives_the_same_signs_and_sizes_are_exact():
    a = random_signs(1, torch.Generator().manual_seed(4))
    b = random_signs(1, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == (1,)
    assert random_signs(0, torch.Generator()).shape == (0,)
    for n in (30, 31, 32, 62, 63):
        assert random_signs(n, torch.Generator().manual_seed(n)).shape == (n,)
    with pytest.raises(ValueError, match="numel must be >= 0"):
        random_signs(-1, torch.Generator())
