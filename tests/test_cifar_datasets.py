"""The CIFAR-10/100 plugins, on small generated files in the original binary format."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from untied_plugins.datasets import cifar as cds
from untied_plugins.datasets.cifar import Cifar100Params, CifarParams, cifar10, cifar100

from bench_core.errors import DataError
from bench_core.interfaces import RunContext


def records(n: int, seed: int, label_bytes: int, num_classes: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n CIFAR records: labels (n, label_bytes) then pixels (n, 3, 32, 32), as the file bytes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(n, label_bytes), dtype=np.uint8)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    raw = np.concatenate([labels, images.reshape(n, -1)], axis=1)
    return raw.tobytes(), images, labels


def write_cifar10(folder: Path, per_batch: int = 4, n_test: int = 6) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    imgs, labs = [], []
    for i in range(1, 6):
        data, x, y = records(per_batch, i, 1, 10)
        (folder / f"data_batch_{i}.bin").write_bytes(data)
        imgs.append(x)
        labs.append(y[:, 0])
    data, xt, yt = records(n_test, 99, 1, 10)
    (folder / "test_batch.bin").write_bytes(data)
    return {"x_train": np.concatenate(imgs), "y_train": np.concatenate(labs), "x_test": xt,
            "y_test": yt[:, 0]}


def write_cifar100(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    data, x, y = records(n_train, 1, 2, 20)
    (folder / "train.bin").write_bytes(data)
    data_t, xt, yt = records(n_test, 2, 2, 20)
    (folder / "test.bin").write_bytes(data_t)
    return {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data visible: empty HOME, no UNTIED_DATA, no system folders."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UNTIED_DATA", raising=False)
    monkeypatch.setattr(cds, "SYSTEM_DATA_DIRS", {"cifar10": (), "cifar100": ()})
    cds._read_cached.cache_clear()
    return tmp_path


def ctx(seed: int = 0) -> RunContext:
    return RunContext(seed=seed, device=torch.device("cpu"))


def test_cifar10_reads_records_channel_first_with_labels(isolated):
    root = isolated / "c10"
    truth = write_cifar10(root)
    b = cifar10(CifarParams(root=str(root), normalize="none"), ctx=ctx())
    assert b.info.input_shape == (3, 32, 32) and b.info.num_outputs == 10
    assert b.x_train.shape == (20, 3, 32, 32) and b.x_test.shape == (6, 3, 32, 32)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    assert torch.equal(b.x_train, torch.from_numpy(truth["x_train"]).float())
    assert torch.equal(b.y_train, torch.from_numpy(truth["y_train"]).long())
    assert torch.equal(b.x_test, torch.from_numpy(truth["x_test"]).float())
    assert torch.equal(b.y_test, torch.from_numpy(truth["y_test"]).long())


def test_cifar100_fine_and_coarse_labels(isolated):
    root = isolated / "c100"
    truth = write_cifar100(root)
    fine = cifar100(Cifar100Params(root=str(root)), ctx=ctx())
    coarse = cifar100(Cifar100Params(root=str(root), labels="coarse"), ctx=ctx())
    assert fine.info.num_outputs == 100 and coarse.info.num_outputs == 20
    assert torch.equal(fine.y_train, torch.from_numpy(truth["y_train"][:, 1]).long())
    assert torch.equal(coarse.y_test, torch.from_numpy(truth["y_test"][:, 0]).long())
    assert torch.allclose(fine.x_train * 255, torch.from_numpy(truth["x_train"]).float())


def test_standard_is_per_channel_on_training_statistics(isolated):
    root = isolated / "c10"
    write_cifar10(root)
    b = cifar10(CifarParams(root=str(root), normalize="standard"), ctx=ctx())
    means = b.x_train.mean(dim=(0, 2, 3))
    stds = b.x_train.std(dim=(0, 2, 3))
    assert torch.allclose(means, torch.zeros(3), atol=1e-5)
    assert torch.allclose(stds, torch.ones(3), atol=1e-4)


def test_random_split_subset_and_seed(isolated):
    root = isolated / "c10"
    write_cifar10(root)
    p = CifarParams(root=str(root), split="random", test_fraction=0.25, train_subset=10)
    a, b, c = cifar10(p, ctx=ctx(1)), cifar10(p, ctx=ctx(1)), cifar10(p, ctx=ctx(2))
    assert len(a.x_test) == round(0.25 * 26) and len(a.x_train) == 10
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)


def test_untied_data_subfolder_and_archive_folder_name(isolated, monkeypatch):
    env = isolated / "data"
    write_cifar10(env / "cifar10" / "cifar-10-batches-bin")
    monkeypatch.setenv("UNTIED_DATA", str(env))
    assert len(cifar10(CifarParams(), ctx=ctx()).x_train) == 20


def test_local_archive_is_extracted_into_the_cache(isolated):
    src = isolated / "src" / "cifar-10-batches-bin"
    truth = write_cifar10(src)
    archive_dir = isolated / "downloads"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    b = cifar10(CifarParams(root=str(archive_dir), normalize="none"), ctx=ctx())
    assert torch.equal(b.y_test, torch.from_numpy(truth["y_test"]).long())
    cache = Path(isolated / "home" / ".cache" / "untied" / "cifar10" / "cifar-10-batches-bin")
    assert (cache / "test_batch.bin").is_file()
    assert not (isolated / "home" / ".cache" / "untied" / "evil.txt").exists()
    assert not (isolated / "evil.txt").exists()


def test_missing_data_is_one_line_naming_folders_and_the_pickle_version(isolated, monkeypatch):
    env = isolated / "data"
    (env / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    monkeypatch.setenv("UNTIED_DATA", str(env))
    with pytest.raises(DataError) as err:
        cifar10(CifarParams(), ctx=ctx())
    msg = str(err.value)
    assert "\n" not in msg and str(env / "cifar10") in msg
    assert "pickle" in msg and "cifar-10-binary.tar.gz" in msg


def test_download_false_never_touches_the_network(isolated, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(cds.urllib.request, "urlretrieve", boom)
    with pytest.raises(DataError):
        cifar10(CifarParams(), ctx=ctx())


def test_download_failure_is_a_data_error(isolated, monkeypatch):
    def offline(url, filename):
        raise OSError("no network")

    monkeypatch.setattr(cds.urllib.request, "urlretrieve", offline)
    with pytest.raises(DataError, match="download of https://www.cs.toronto.edu/~kriz/"):
        cifar100(Cifar100Params(download=True), ctx=ctx())
    assert not list((isolated / "home" / ".cache" / "untied" / "cifar100").glob(".download-*"))


def test_truncated_file_is_a_data_error_naming_it(isolated):
    root = isolated / "c10"
    write_cifar10(root)
    (root / "data_batch_3.bin").write_bytes((root / "data_batch_3.bin").read_bytes()[:-7])
    with pytest.raises(DataError, match="data_batch_3.bin.*not a whole number"):
        cifar10(CifarParams(root=str(root)), ctx=ctx())


def test_labels_out_of_range_are_a_data_error(isolated):
    root = isolated / "c10"
    write_cifar10(root)
    raw = bytearray((root / "test_batch.bin").read_bytes())
    raw[0] = 42
    (root / "test_batch.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="label 42 outside 0..9"):
        cifar10(CifarParams(root=str(root)), ctx=ctx())


@pytest.mark.parametrize("bad", [{"split": "test"}, {"normalize": "z"}, {"root": ""},
                                 {"test_fraction": 1.5}])
def test_invalid_parameters_fail_validation(bad):
    with pytest.raises(ValidationError):
        CifarParams(**bad)
    with pytest.raises(ValidationError):
        Cifar100Params(labels="medium")


def test_registered_through_the_plugin_host():
    from bench_core.plugins import PluginHost

    host = PluginHost()
    host.load_entry_points()
    assert {"cifar10", "cifar100"} <= set(host.family("datasets"))
    assert host.get("datasets", "cifar10").plugin == "datasets"
