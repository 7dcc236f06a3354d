"""The MNIST / Fashion-MNIST plugins: IDX reading, search path, splits, errors, real data."""

from __future__ import annotations

import gzip
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from pydantic import ValidationError
from untied_plugins.datasets import images as imgds
from untied_plugins.datasets.images import ImageDatasetParams, fashion_mnist, mnist

from bench_core.errors import DataError
from bench_core.interfaces import RunContext

SHARED_MNIST_10K = Path(__file__).parents[1] / ".." / "shared" / "data" / "mnist-10k"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An IDX file: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_part(folder: Path, part: str, n: int, seed: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    """Write ``part`` (train / t10k) with n random images and labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{part}-images-idx3-ubyte", images, gz)
    write_idx(folder / f"{part}-labels-idx1-ubyte", labels, gz)
    return images, labels


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data is visible: empty HOME, no UNTIED_DATA, empty system folder list."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UNTIED_DATA", raising=False)
    monkeypatch.setattr(imgds, "SYSTEM_DATA_DIRS", {"mnist": (), "fashion_mnist": ()})
    return tmp_path


def ctx(seed: int = 0) -> RunContext:
    return RunContext(seed=seed, device=torch.device("cpu"))


def params(**kw) -> ImageDatasetParams:
    return ImageDatasetParams(**kw)


def rows(x: torch.Tensor) -> set[bytes]:
    """Each image as bytes, to compare which images landed in a split."""
    return {bytes(r) for r in x.reshape(len(x), -1).to(torch.uint8).numpy()}


@pytest.mark.parametrize("gz", [False, True])
def test_reads_idx_shapes_dtypes_labels_and_unit_range(isolated, gz):
    root = isolated / "data"
    train_images, train_labels = make_part(root, "train", 40, seed=1, gz=gz)
    test_images, test_labels = make_part(root, "t10k", 10, seed=2, gz=gz)
    bundle = mnist(params(root=str(root), split="official"), ctx=ctx())
    assert bundle.info.input_shape == (1, 28, 28)
    assert bundle.info.num_outputs == 10 and bundle.info.task == "classification"
    assert bundle.x_train.shape == (40, 1, 28, 28) and bundle.x_test.shape == (10, 1, 28, 28)
    assert bundle.x_train.dtype == torch.float32 and bundle.y_train.dtype == torch.int64
    # official split keeps the file order: exact pixel and label round trip
    assert torch.equal(bundle.x_train[:, 0] * 255, torch.from_numpy(train_images).float())
    assert torch.equal(bundle.x_test[:, 0] * 255, torch.from_numpy(test_images).float())
    assert bundle.y_train.tolist() == train_labels.tolist()
    assert bundle.y_test.tolist() == test_labels.tolist()
    assert float(bundle.x_train.min()) >= 0.0 and float(bundle.x_train.max()) <= 1.0


def test_normalize_none_and_standard(isolated):
    root = isolated / "data"
    make_part(root, "train", 50, seed=3, gz=False)
    make_part(root, "t10k", 20, seed=4, gz=True)
    raw = mnist(params(root=str(root), split="official", normalize="none"), ctx=ctx())
    assert float(raw.x_train.max()) > 200 and torch.equal(raw.x_train, raw.x_train.round())
    std = mnist(params(root=str(root), split="official", normalize="standard"), ctx=ctx())
    assert abs(float(std.x_train.mean())) < 1e-4 and abs(float(std.x_train.std()) - 1) < 1e-4
    mean, sd = raw.x_train.mean(), raw.x_train.std()
    torch.testing.assert_close(std.x_test, (raw.x_test - mean) / sd)


def test_standard_stays_finite_where_a_pixel_is_zero_in_all_training_images(isolated):
    root = isolated / "data"
    images, _ = make_part(root, "train", 20, seed=5, gz=False)
    images[:, 0, 0] = 0
    write_idx(root / "train-images-idx3-ubyte", images, gz=False)
    test_images, _ = make_part(root, "t10k", 10, seed=6, gz=False)
    test_images[:, 0, 0] = 255
    write_idx(root / "t10k-images-idx3-ubyte", test_images, gz=False)
    bundle = mnist(params(root=str(root), split="official", normalize="standard"), ctx=ctx())
    assert float(bundle.x_test.abs().max()) < 10


def test_random_split_pools_both_parts_and_follows_the_seed(isolated):
    root = isolated / "data"
    make_part(root, "train", 80, seed=7, gz=True)
    make_part(root, "t10k", 20, seed=8, gz=False)
    a = mnist(params(root=str(root), normalize="none"), ctx=ctx(seed=1))
    b = mnist(params(root=str(root), normalize="none"), ctx=ctx(seed=1))
    c = mnist(params(root=str(root), normalize="none"), ctx=ctx(seed=2))
    assert len(a.x_train) == 80 and len(a.x_test) == 20  # 100 pooled, 20% held out
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert rows(a.x_test) != rows(c.x_test)
    assert not rows(a.x_train) & rows(a.x_test)
    assert len(rows(a.x_train) | rows(a.x_test)) == 100
    quarter = mnist(params(root=str(root), test_fraction=0.25), ctx=ctx(seed=1))
    assert len(quarter.x_test) == 25


def test_train_subset_and_test_noise(isolated):
    root = isolated / "data"
    make_part(root, "train", 60, seed=9, gz=False)
    make_part(root, "t10k", 20, seed=10, gz=False)
    full = mnist(params(root=str(root), split="official"), ctx=ctx(seed=3))
    sub = mnist(params(root=str(root), split="official", train_subset=15), ctx=ctx(seed=3))
    assert len(sub.x_train) == 15 and len(sub.x_test) == 20
    assert rows(sub.x_train * 255) <= rows(full.x_train * 255)
    noisy = mnist(params(root=str(root), split="official", test_noise=0.5), ctx=ctx(seed=3))
    assert torch.equal(noisy.x_train, full.x_train)
    assert 0.3 < float((noisy.x_test - full.x_test).std()) < 0.7


def test_resize_to_32x32_matches_torchvisions_pil_resize(isolated):
    """``resize = 32`` (BioTorch's input): (1, 32, 32) images, whole grey levels, within one
    level of torchvision's Resize on PIL images; subsets and splits keep working."""
    from PIL import Image
    from torchvision.transforms import Resize

    root = isolated / "data"
    train_images, _ = make_part(root, "train", 30, seed=12, gz=False)
    make_part(root, "t10k", 10, seed=13, gz=False)
    bundle = mnist(params(root=str(root), split="official", resize=32, normalize="none"),
                   ctx=ctx())
    assert bundle.info.input_shape == (1, 32, 32)
    assert bundle.x_train.shape == (30, 1, 32, 32) and bundle.x_test.shape == (10, 1, 32, 32)
    assert torch.equal(bundle.x_train, bundle.x_train.round())
    pil = torch.stack([torch.from_numpy(np.array(Resize((32, 32))(Image.fromarray(im))))
                       for im in train_images]).unsqueeze(1).float()
    assert (bundle.x_train - pil).abs().max() <= 1.0
    sub = mnist(params(root=str(root), split="official", resize=32, train_subset=7), ctx=ctx())
    assert sub.x_train.shape == (7, 1, 32, 32) and sub.x_test.shape == (10, 1, 32, 32)
    unit = mnist(params(root=str(root), resize=32), ctx=ctx())
    assert unit.x_train.shape[1:] == (1, 32, 32) and float(unit.x_train.max()) <= 1.0


def test_root_with_only_t10k_is_split_80_20(isolated):
    root = isolated / "only-test"
    make_part(root, "t10k", 50, seed=11, gz=True)
    bundle = mnist(params(root=str(root)), ctx=ctx())
    assert len(bundle.x_train) == 40 and len(bundle.x_test) == 10


def test_complete_passes_over_a_subset_folder(isolated, monkeypatch):
    data_root = isolated / "untied-data"
    make_part(data_root / "mnist-10k", "t10k", 20, seed=14, gz=False)
    monkeypatch.setenv("UNTIED_DATA", str(data_root))
    assert len(mnist(params(), ctx=ctx()).x_train) == 16  # the subset counts by default
    with pytest.raises(DataError, match="both the train and the t10k") as err:
        mnist(params(complete=True), ctx=ctx())
    assert str(data_root / "mnist-10k") in str(err.value) and "\n" not in str(err.value)
    cache = isolated / "home" / ".cache" / "untied" / "mnist"  # searched after UNTIED_DATA
    make_part(cache, "train", 30, seed=15, gz=False)
    make_part(cache, "t10k", 10, seed=16, gz=False)
    assert len(mnist(params(), ctx=ctx()).x_train) == 16  # still the subset, found first
    bundle = mnist(params(complete=True), ctx=ctx())
    assert len(bundle.x_train) + len(bundle.x_test) == 40


def test_official_split_without_train_files_names_them(isolated):
    root = isolated / "only-test"
    make_part(root, "t10k", 10, seed=12, gz=False)
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as err:
        mnist(params(root=str(root), split="official"), ctx=ctx())
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_incomplete_pair_does_not_count(isolated):
    root = isolated / "half"
    make_part(root, "t10k", 10, seed=13, gz=False)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="no IDX files"):
        mnist(params(root=str(root)), ctx=ctx())


def test_missing_data_one_line_error_names_every_folder(isolated, monkeypatch):
    data_root = isolated / "untied-data"
    data_root.mkdir()
    monkeypatch.setenv("UNTIED_DATA", str(data_root))
    system = isolated / "system-fashion"
    monkeypatch.setattr(imgds, "SYSTEM_DATA_DIRS", {"mnist": (), "fashion_mnist": (str(system),)})
    given_root = isolated / "nowhere"
    with pytest.raises(DataError) as err:
        fashion_mnist(params(root=str(given_root)), ctx=ctx())
    message = str(err.value)
    assert "\n" not in message
    home = Path(isolated / "home")
    for folder in (given_root, data_root / "fashion-mnist", data_root / "fashion_mnist",
                   data_root / "FashionMNIST" / "raw", home / ".cache" / "untied" / "fashion_mnist",
                   system):
        assert str(folder) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "UNTIED_DATA" in message and "download=true" in message


def test_search_order_untied_data_subfolders_cache_and_system(isolated, monkeypatch):
    data_root = isolated / "untied-data"
    make_part(data_root / "MNIST" / "raw", "t10k", 10, seed=14, gz=False)
    make_part(data_root / "fashion-mnist", "t10k", 20, seed=15, gz=False)
    make_part(data_root, "t10k", 30, seed=16, gz=False)  # top level: ambiguous, never read
    monkeypatch.setenv("UNTIED_DATA", str(data_root))
    assert len(mnist(params(split="random"), ctx=ctx()).y_test) == 2
    assert len(fashion_mnist(params(), ctx=ctx()).y_test) == 4
    # a suffixed variant (mnist-10k, a subset) counts after the exact names
    variants = isolated / "variants"
    make_part(variants / "mnist-10k", "t10k", 50, seed=20, gz=False)
    monkeypatch.setenv("UNTIED_DATA", str(variants))
    assert len(mnist(params(), ctx=ctx()).y_test) == 10
    monkeypatch.setenv("UNTIED_DATA", str(data_root))
    # an explicit root comes first
    root = isolated / "root"
    make_part(root, "t10k", 40, seed=17, gz=False)
    assert len(mnist(params(root=str(root)), ctx=ctx()).y_test) == 8
    # without UNTIED_DATA: the download cache, then the system folders
    monkeypatch.delenv("UNTIED_DATA")
    system = isolated / "system"
    make_part(system, "t10k", 60, seed=18, gz=True)
    monkeypatch.setattr(imgds, "SYSTEM_DATA_DIRS", {"mnist": (str(system),), "fashion_mnist": ()})
    assert len(mnist(params(), ctx=ctx()).y_test) == 12
    make_part(isolated / "home" / ".cache" / "untied" / "mnist", "t10k", 70, seed=19, gz=False)
    assert len(mnist(params(), ctx=ctx()).y_test) == 14


def test_download_false_never_touches_the_network(isolated, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network or download used with download=false")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", refuse)
    monkeypatch.setattr(imgds, "download", refuse)
    for factory in (mnist, fashion_mnist):
        with pytest.raises(DataError, match="download=true"):
            factory(params(download=False), ctx=ctx())


def test_download_true_fetches_into_the_cache_when_missing(isolated, monkeypatch):
    calls = []

    class FakeFashionMNIST:
        """Stands in for torchvision's class: writes tiny files where torchvision would."""

        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "FashionMNIST" / "raw"
            make_part(raw, "train", 30, seed=20, gz=False)
            make_part(raw, "t10k", 10, seed=21, gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    bundle = fashion_mnist(params(download=True, split="official"), ctx=ctx())
    cache = isolated / "home" / ".cache" / "untied" / "fashion_mnist"
    assert calls == [(str(cache), True, True)]
    assert len(bundle.x_train) == 30 and len(bundle.x_test) == 10
    # the files are there now: a second load does not download again
    fashion_mnist(params(download=True), ctx=ctx())
    assert len(calls) == 1


def test_download_failure_is_a_one_line_data_error(isolated, monkeypatch):
    class OfflineMNIST:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror")

    monkeypatch.setattr(torchvision.datasets, "MNIST", OfflineMNIST)
    with pytest.raises(DataError, match="download failed: Error downloading") as err:
        mnist(params(download=True), ctx=ctx())
    assert "\n" not in str(err.value)


def test_corrupt_file_is_a_data_error(isolated):
    root = isolated / "bad"
    make_part(root, "t10k", 10, seed=22, gz=False)
    (root / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x09garbage")
    with pytest.raises(DataError, match="cannot read images IDX file"):
        mnist(params(root=str(root)), ctx=ctx())


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_mislabelled_files_say_what_is_wrong(isolated, gz):
    root = isolated / "short"
    make_part(root, "t10k", 20, seed=23, gz=gz)
    suffix = ".gz" if gz else ""
    images = root / f"t10k-images-idx3-ubyte{suffix}"
    data = gzip.decompress(images.read_bytes()) if gz else images.read_bytes()
    cut = data[: 16 + 28 * 28 * 7]                           # 7 of 20 images
    images.write_bytes(gzip.compress(cut) if gz else cut)
    with pytest.raises(DataError) as err:
        mnist(params(root=str(root)), ctx=ctx())
    msg = str(err.value)
    assert str(images) in msg and "truncated or not an images file" in msg and "\n" not in msg
    labels = root / f"t10k-labels-idx1-ubyte{suffix}"       # an images file named as labels
    make_part(root, "t10k", 20, seed=23, gz=gz)
    labels.write_bytes(images.read_bytes())
    with pytest.raises(DataError, match="cannot read labels IDX file .*t10k-labels"):
        mnist(params(root=str(root)), ctx=ctx())


def test_decoded_files_are_cached_and_refreshed_when_changed(isolated):
    root = isolated / "data"
    make_part(root, "t10k", 10, seed=23, gz=True)
    path = root / "t10k-images-idx3-ubyte.gz"
    first = imgds.read_idx(path, "images")
    assert imgds.read_idx(path, "images") is first
    make_part(root, "t10k", 12, seed=24, gz=True)
    assert len(imgds.read_idx(path, "images")) == 12
    # the cached tensor is not handed out: normalising a bundle leaves it intact
    before = first.clone()
    mnist(params(root=str(root), normalize="standard"), ctx=ctx())
    assert torch.equal(first, before)


@pytest.mark.parametrize("bad", [{"test_fraction": 0.0}, {"train_subset": 0},
                                 {"test_noise": -1.0}, {"split": "val"}, {"normalize": "minmax"},
                                 {"root": ""}, {"roots": "x"}, {"resize": 1}])
def test_invalid_parameters_fail_validation(bad):
    with pytest.raises(ValidationError):
        ImageDatasetParams(**bad)


def test_registered_through_the_plugin_host():
    from bench_core.plugins import get_host

    datasets = get_host().family("datasets")
    for name, factory in (("mnist", mnist), ("fashion_mnist", fashion_mnist)):
        assert datasets[name].factory is factory
        assert datasets[name].params is ImageDatasetParams
        assert datasets[name].plugin == "datasets"


def test_real_mnist_10k_check_values():
    if not (SHARED_MNIST_10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("shared MNIST-10k data not present")
    bundle = mnist(params(root=str(SHARED_MNIST_10K), normalize="none"), ctx=ctx())
    labels = torch.cat([bundle.y_train, bundle.y_test])
    assert labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    pixels = torch.cat([bundle.x_train, bundle.x_test])
    assert abs(float(pixels.double().mean()) - 33.79) < 0.01
    assert len(bundle.x_train) == 8000 and len(bundle.x_test) == 2000


def test_real_debian_fashion_mnist(monkeypatch):
    if len(imgds.idx_files_in(DEBIAN_FASHION)) < 2:
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.delenv("UNTIED_DATA", raising=False)
    bundle = fashion_mnist(params(root=str(DEBIAN_FASHION), split="official"), ctx=ctx())
    labels = torch.cat([bundle.y_train, bundle.y_test])
    assert len(labels) == 70_000
    assert labels.bincount().tolist() == [7000] * 10
    assert len(bundle.x_train) == 60_000


def test_top_level_of_untied_data_is_not_read(isolated, monkeypatch):
    """Both datasets share file names, so files directly in $UNTIED_DATA are ambiguous."""
    data_root = isolated / "untied-data"
    make_part(data_root, "t10k", 10, seed=25, gz=False)
    monkeypatch.setenv("UNTIED_DATA", str(data_root))
    with pytest.raises(DataError, match="no IDX files"):
        fashion_mnist(params(), ctx=ctx())
