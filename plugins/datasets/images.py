"""Image datasets read from IDX files (MNIST, Fashion-MNIST).

The paper's protocol (Troiano et al. 2025, Section 4 "Datasets" and "Evaluation metrics"): every
available image is pooled and 20% is held out for testing, with 20 repetitions; here the split is
drawn from the run's ``data`` random stream (``split="random"``, the default), so the seed decides
it. ``split="official"`` uses the original 60,000 / 10,000 train and test files instead.

Files are the four original IDX files, gzipped or not::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

A folder counts when it holds at least one complete images + labels pair, so a folder with only
the official 10,000-image test split is accepted (and split 80/20 by ``split="random"``). Folders
are searched in this order, the first that counts wins:

1. the ``root`` parameter, then its dataset subfolders (``mnist/``, ``MNIST/raw`` ... below);
2. the dataset subfolders of ``$UNTIED_DATA``: ``mnist/`` and ``MNIST/raw`` for MNIST,
   ``fashion-mnist/``, ``fashion_mnist/`` and ``FashionMNIST/raw`` for Fashion-MNIST, then
   variants of those names with a suffix (``mnist-10k/``, a subset). The top level
   of ``$UNTIED_DATA`` itself is not searched: both datasets use the same file names, so files
   there could not be told apart and Fashion-MNIST could silently be read as MNIST;
3. ``~/.cache/untied/<name>`` and its torchvision subfolder (where ``download=true`` puts files);
4. system folders: ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``),
   ``/usr/share/datasets/mnist``.

With ``complete=true`` only a folder holding both parts counts (the whole data set: a subset
folder is passed over), as the ``full`` profiles of the paper specs require.
With ``download=true`` and nothing found, torchvision downloads the files into
``~/.cache/untied/<name>``; otherwise a :class:`~bench_core.errors.DataError` names every folder
searched. Decoded files are cached in memory per process, keyed on path, size and mtime.

Images are ``(1, 28, 28)`` float32 (``(1, r, r)`` with ``resize = r``: bilinear, rounded to grey
levels, before normalising): ``normalize="unit"`` (default) divides by 255,
``"standard"`` z-scores with one mean and std over all training pixels, ``"none"`` keeps 0..255.
"""

from __future__ import annotations

import gzip
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from bench_core.data import (
    SplitParams,
    cache_folder,
    data_folders,
    file_key,
    load_once,
    make_bundle,
    normalise,
    prepared_split,
    split_train_test,
)
from bench_core.errors import DataError
from bench_core.interfaces import DataBundle, DataInfo, RunContext, location_option

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
PIXEL_MAX = 255.0
PARTS = ("train", "t10k")
"""The official split files: ``train`` (60,000 images) and ``t10k`` (10,000 images)."""

DATASET_SUBFOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
}
"""Subfolders of a data root that hold one dataset (``X/raw`` is torchvision's layout)."""

SYSTEM_DATA_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}
"""System-wide folders; Debian's ``dataset-fashion-mnist`` installs the four gzipped IDX files in
``/usr/share/datasets/fashion-mnist``."""

HOW_TO_GET: dict[str, str] = {
    "mnist": "",
    "fashion_mnist": "`apt-get install dataset-fashion-mnist`, ",
}


class ImageDatasetParams(SplitParams):
    """Parameters of ``mnist`` and ``fashion_mnist``; ``test_fraction`` applies to
    ``split="random"`` only."""

    root: str | None = location_option(None, min_length=1,
                             description="folder holding the IDX files (searched first)")
    download: bool = location_option(False, description="download into ~/.cache/untied/<name> "
                                                        "if missing")
    complete: bool = Field(
        False, description="only a folder holding both official parts (train and t10k: all 70,000 "
                           "images) counts; a subset folder such as mnist-10k/ is passed over, and "
                           "with download=true the complete set is fetched")
    split: Literal["random", "official"] = Field(
        "random", description="random: pool all images, hold out test_fraction with the run's "
                              "seed (the paper's 80/20); official: the original train/test files")
    normalize: Literal["none", "unit", "standard"] = Field(
        "unit", description="unit: pixels / 255; standard: z-score with the mean and std of all "
                      "training pixels; none: 0..255")
    resize: int | None = Field(
        None, ge=2, description="resize every image to resize x resize by bilinear "
                                "interpolation, rounded to whole grey levels (as torchvision's "
                                "Resize on PIL images, e.g. BioTorch's 32x32), before normalize; "
                                "None: 28x28 as stored")


@dataclass(frozen=True)
class IdxPair:
    """The images and labels file of one official part (``train`` or ``t10k``)."""

    images: Path
    labels: Path


def candidate_folders(name: str, root: str | None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    return data_folders(name, DATASET_SUBFOLDERS[name], root, system=SYSTEM_DATA_DIRS[name])


def download_folder(name: str) -> Path:
    """Where ``download=true`` puts dataset ``name``: ``~/.cache/untied/<name>``."""
    return cache_folder(name)


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_files_in(folder: Path) -> dict[str, IdxPair]:
    """The complete images + labels pairs in ``folder``, by part; an uncompressed file is
    preferred to its ``.gz``."""
    found: dict[str, IdxPair] = {}
    if not folder.is_dir():
        return found
    for part in PARTS:
        images = _find_file(folder, f"{part}-images-idx3-ubyte")
        labels = _find_file(folder, f"{part}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            found[part] = IdxPair(images, labels)
    return found


def locate(name: str, root: str | None, complete: bool = False
           ) -> tuple[Path, dict[str, IdxPair]]:
    """The first searched folder holding a complete pair (``complete``: both parts), with its
    pairs; a one-line :class:`DataError` naming every folder searched when there is none."""
    searched = candidate_folders(name, root)
    for folder in searched:
        pairs = idx_files_in(folder)
        if pairs and (not complete or all(part in pairs for part in PARTS)):
            return folder, pairs
    raise _not_found(name, searched, complete=complete)


def _not_found(name: str, searched: list[Path], reason: str = "", *, complete: bool = False,
               download_tried: bool = False) -> DataError:
    folders = ", ".join(str(f) for f in searched)
    what = ("no folder with both the train and the t10k IDX files (complete=true: the whole "
            "data set; a subset folder such as mnist-10k/ does not count)" if complete else
            "no IDX files (train-/t10k-images-idx3-ubyte[.gz] with matching labels)")
    remedy = "" if download_tried else ", or set download=true"
    return DataError(
        f"{name}: {what} in any of: {folders}{reason}; to get them: {HOW_TO_GET[name]}set "
        f"UNTIED_DATA or the dataset's `root` to a folder holding them{remedy}")


def download(name: str) -> None:
    """Download the four IDX files with torchvision into :func:`download_folder` (torchvision
    puts them in its ``MNIST/raw`` or ``FashionMNIST/raw`` subfolder, which is searched)."""
    from torchvision.datasets import MNIST, FashionMNIST

    dataset_class = {"mnist": MNIST, "fashion_mnist": FashionMNIST}[name]
    target = download_folder(name)
    target.mkdir(parents=True, exist_ok=True)
    dataset_class(root=str(target), train=True, download=True)


def _decode(path: str, kind: Literal["images", "labels"]) -> Tensor:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if kind == "images" else read_label_file
    if not path.endswith(".gz"):
        return reader(path)
    # torchvision's readers take a plain file: decompress into a private temporary folder (never
    # next to the source, which may be a read-only system folder), read, delete.
    with tempfile.TemporaryDirectory(prefix="untied-idx-") as tmp:
        plain = Path(tmp) / Path(path).name[: -len(".gz")]
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
        return reader(str(plain))


def read_idx(path: Path, kind: Literal["images", "labels"]) -> Tensor:
    """Decode one IDX file (``uint8`` images ``(n, 28, 28)`` or ``int64`` labels ``(n,)``),
    read once per process (:func:`bench_core.data.load_once`, keyed on path, size and
    modification time). Do not modify the result."""
    key = ("idx", file_key(path), kind)
    try:
        return load_once(key, lambda: _decode(str(path), kind))
    except (AssertionError, TypeError, ValueError, OSError, EOFError, RuntimeError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        shape = re.search(r"shape '\[([\d, ]+)\]' is invalid for input of size (\d+)", detail)
        if shape:  # torchvision's reshape of a short or foreign file: say what is wrong
            promised = math.prod(int(d) for d in shape.group(1).split(","))
            detail = (f"truncated or not an {kind} file: its header promises {promised:,} "
                      f"values ({shape.group(1)}), it holds {int(shape.group(2)):,}")
        raise DataError(f"cannot read {kind} IDX file {path}: {detail}") from err


def read_part(pair: IdxPair) -> tuple[Tensor, Tensor]:
    """Images and labels of one part, checked for shape, length and label range."""
    images = read_idx(pair.images, "images")
    labels = read_idx(pair.labels, "labels")
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise DataError(f"{pair.images}: images are {tuple(images.shape[1:])}, expected "
                        f"{IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise DataError(f"{pair.images} holds {len(images)} images but {pair.labels} holds "
                        f"{len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise DataError(f"{pair.labels}: labels outside 0..{NUM_CLASSES - 1}")
    return images, labels


def normalise_images(x_train: Tensor, x_test: Tensor,
                     how: Literal["none", "unit", "standard"]) -> tuple[Tensor, Tensor]:
    """``unit``: pixels / 255; ``standard``: one mean and std over all training pixels (the usual
    image z-score). Per-pixel statistics are not used: a border pixel that is 0 in every
    training image has std ~0 and would blow a test image's non-zero value there up to ~1e10.

    The inputs must be fresh float copies: ``unit`` divides them in place, since allocating
    another 200 MB for 70,000 images costs more than the rest of loading together."""
    if how == "unit":
        return x_train.div_(PIXEL_MAX), x_test.div_(PIXEL_MAX)
    if how == "none":
        return x_train, x_test
    flat_train, flat_test = normalise(x_train.reshape(-1, 1), x_test.reshape(-1, 1), how)
    return flat_train.view_as(x_train), flat_test.view_as(x_test)


def resize_images(x: Tensor, size: int | None) -> Tensor:
    """``(n, 1, h, w)`` grey levels (0..255, float) resized to ``(n, 1, size, size)``: bilinear
    with pixel-centre alignment (``align_corners=False``, PIL's sampling grid for enlarging),
    rounded to whole levels as PIL's 8-bit result is; ``None``: unchanged."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    if len(x) == 0:
        return x.new_empty((0, x.shape[1], size, size))
    resized = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                              align_corners=False, antialias=True)
    return resized.round_().clamp_(0.0, PIXEL_MAX)


def load_idx_dataset(name: str, params: ImageDatasetParams, ctx: RunContext) -> DataBundle:
    """Find (or download), read, split, subset, normalise and move one IDX dataset."""
    try:
        folder, pairs = locate(name, params.root, params.complete)
    except DataError:
        if not params.download:
            raise
        try:
            download(name)
        except Exception as err:  # torchvision raises RuntimeError / URLError / OSError
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise _not_found(name, candidate_folders(name, params.root),
                             f" (download failed: {detail})", complete=params.complete,
                             download_tried=True) from err
        folder, pairs = locate(name, params.root, params.complete)

    if params.split == "official":
        missing = [p for p in PARTS if p not in pairs]
        if missing:
            wanted = ", ".join(f"{p}-images-idx3-ubyte[.gz] and {p}-labels-idx1-ubyte[.gz]"
                               for p in missing)
            raise DataError(f"{name}: split=\"official\" needs {wanted} in {folder}, which holds "
                            f"only the {', '.join(pairs)} files; use split=\"random\" or point "
                            f"root/UNTIED_DATA to the complete set")

    def split(gen: torch.Generator):
        if params.split == "official":
            x_train, y_train = read_part(pairs["train"])
            x_test, y_test = read_part(pairs["t10k"])
            return x_train, y_train.clone(), x_test, y_test.clone()
        parts = [read_part(pairs[p]) for p in PARTS if p in pairs]
        x_pool = torch.cat([images for images, _ in parts])
        y_pool = torch.cat([labels for _, labels in parts])
        return split_train_test(x_pool, y_pool, params.test_fraction, gen)

    def finish(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
        # (n, 28, 28) uint8 -> (n, 1, 28, 28) float32 (a copy: the cached tensors stay untouched)
        x_train, x_test = (resize_images(x.unsqueeze(1).to(torch.float32), params.resize)
                           for x in (x_train, x_test))
        return normalise_images(x_train, x_test, params.normalize)

    files = tuple((part, file_key(pair.images), file_key(pair.labels))
                  for part, pair in sorted(pairs.items()))
    key = (name, files, params.split, params.normalize, params.resize, *(
        (params.test_fraction, ctx.stream_seed("data")) if params.split == "random" else ()))
    x_train, y_train, x_test, y_test = prepared_split(
        key, ctx, params.train_subset, split, finish, elementwise=params.normalize != "standard")
    shape = (params.resize, params.resize) if params.resize else IMAGE_SHAPE
    info = DataInfo(name, (1, *shape), NUM_CLASSES, "classification", NUM_CLASSES)
    return make_bundle(info, x_train, y_train, x_test, y_test, ctx, share_key=key,
                       **params.bundle_options())


def mnist(params: ImageDatasetParams, *, ctx: RunContext) -> DataBundle:
    """MNIST handwritten digits, 28x28 grey, 10 classes (70,000 images; 80/20 seeded split)."""
    return load_idx_dataset("mnist", params, ctx)


def fashion_mnist(params: ImageDatasetParams, *, ctx: RunContext) -> DataBundle:
    """Fashion-MNIST clothing images, 28x28 grey, 10 classes (70,000; 80/20 seeded split)."""
    return load_idx_dataset("fashion_mnist", params, ctx)
