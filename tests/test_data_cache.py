"""bench_core.data.load_once: raw data read once per process, re-read when its file changes."""

from __future__ import annotations

import os

import pytest
import torch

from bench_core import data
from bench_core.data import file_key, load_once


@pytest.fixture(autouse=True)
def empty_cache():
    data._LOADED.clear()
    yield
    data._LOADED.clear()


def test_loads_once_per_key_and_shares_the_result():
    calls = []

    def load():
        calls.append(1)
        return [len(calls)]

    first = load_once("k", load)
    assert load_once("k", load) is first
    assert load_once("other", load) == [2]
    assert len(calls) == 2


def test_a_changed_file_is_read_again(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("1,2\n")
    reads = []

    def read():
        reads.append(path.read_text())
        return reads[-1]

    assert load_once(("t", file_key(path)), read) == "1,2\n"
    assert load_once(("t", file_key(path)), read) == "1,2\n"
    path.write_text("3,4,5\n")
    os.utime(path, ns=(1, 1))          # a new size and time, as an edit gives
    assert load_once(("t", file_key(path)), read) == "3,4,5\n"
    assert len(reads) == 2


def test_a_load_that_raises_caches_nothing():
    def broken():
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        load_once("k", broken)
    assert load_once("k", lambda: "read") == "read"


def test_least_recently_used_entries_leave_first(monkeypatch):
    monkeypatch.setattr(data, "LOAD_ONCE_SIZE", 2)
    load_once("a", lambda: 1)
    load_once("b", lambda: 2)
    load_once("a", lambda: 0)          # a is used again: b is now the oldest
    load_once("c", lambda: 3)
    assert set(data._LOADED) == {"a", "c"}


def test_digits_read_without_scikit_learn_equal_its_loader():
    from sklearn.datasets import load_digits
    from untied_plugins.datasets.digits import _read_digits, digits_file

    assert digits_file() is not None, "scikit-learn no longer ships digits.csv.gz there"
    x, y = _read_digits()
    raw = load_digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32
    assert torch.equal(x, torch.tensor(raw.data, dtype=torch.float32))
    assert torch.equal(y, torch.tensor(raw.target, dtype=torch.int64))
