"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from their original *binary* files.

Files (the "binary version" on https://www.cs.toronto.edu/~kriz/cifar.html)::

    cifar-10-batches-bin/   data_batch_1.bin .. data_batch_5.bin, test_batch.bin
                            each record: 1 label byte, then 3072 pixel bytes
    cifar-100-binary/       train.bin, test.bin
                            each record: 1 coarse label byte, 1 fine label byte, 3072 pixel bytes

Pixels are stored channel by channel (1024 red, 1024 green, 1024 blue), rows first, so a record
reshapes directly to ``(3, 32, 32)``. CIFAR-100 uses the 100 fine labels by default
(``labels = "coarse"`` gives the 20 superclasses).

Only the binary version is read. The "python version" (``cifar-10-batches-py``, what
torchvision downloads) stores the same arrays as pickles, and unpickling a data file can execute
arbitrary code; a folder holding only that version gets an error saying which archive to fetch.

Folders are searched in this order, the first holding the files (or the archive
``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz``, which is extracted into
``~/.cache/untied/<name>``) wins: the ``root`` parameter; ``$UNTIED_DATA/cifar10`` (or
``cifar-10``, ``CIFAR10``, and suffixed variants); ``~/.cache/untied/<name>``; system folders
``/usr/share/datasets/cifar10`` (``cifar100``). Each candidate is tried as is and with the
archive's folder name (``cifar-10-batches-bin``) appended. ``download = true`` fetches the
official binary archive into the cache when nothing is found.

``split = "official"`` (the default here: CIFAR's results are conventionally reported on its
10,000-image test set) uses the 50,000 training and 10,000 test images; ``"random"`` pools both
and holds out ``test_fraction`` with the run's seed, like the MNIST datasets. ``normalize``:
``unit`` divides by 255; ``standard`` z-scores each colour channel with the training split's mean
and std (the usual CIFAR preprocessing).
"""

from __future__ import annotations

import functools
import os
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from bench_core.data import (
    SplitParams,
    cache_folder,
    data_folders,
    file_key,
    make_bundle,
    prepared_split,
    split_train_test,
)
from bench_core.errors import DataError
from bench_core.interfaces import DataBundle, DataInfo, RunContext, location_option

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant's binary files live and how a record is laid out."""

    name: str
    folder: str                       # the folder the official archive unpacks to
    archive: str                      # the official archive's file name
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int                  # bytes before the pixels of each record
    subfolders: tuple[str, ...]       # names of the dataset's folder under $UNTIED_DATA
    python_folder: str                # the pickle version's folder (recognised, not read)

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXELS

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


FORMATS: dict[str, CifarFormat] = {
    "cifar10": CifarFormat(
        "cifar10", "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1,
        ("cifar10", "cifar-10", "CIFAR10"), "cifar-10-batches-py"),
    "cifar100": CifarFormat(
        "cifar100", "cifar-100-binary", "cifar-100-binary.tar.gz", ("train.bin",), ("test.bin",),
        2, ("cifar100", "cifar-100", "CIFAR100"), "cifar-100-python"),
}

SYSTEM_DATA_DIRS: dict[str, tuple[str, ...]] = {
    "cifar10": ("/usr/share/datasets/cifar10",),
    "cifar100": ("/usr/share/datasets/cifar100",),
}


class CifarParams(SplitParams):
    """Parameters of ``cifar10`` and ``cifar100``; ``test_fraction`` applies to
    ``split="random"`` only."""

    root: str | None = location_option(None, min_length=1,
                             description="folder holding the binary files (searched first)")
    download: bool = location_option(False, description="download the binary archive into "
                                              "~/.cache/untied/<name> if missing")
    split: Literal["official", "random"] = Field(
        "official", description="official: 50,000 train / 10,000 test; random: pool all and hold "
                                "out test_fraction with the run's seed")
    normalize: Literal["none", "unit", "standard"] = Field(
        "unit", description="unit: pixels / 255; standard: per-channel z-score (training "
                            "statistics); none: 0..255")


class Cifar100Params(CifarParams):
    labels: Literal["fine", "coarse"] = Field("fine", description="100 fine classes or 20 "
                                                                  "coarse superclasses")


def candidate_folders(fmt: CifarFormat, root: str | None) -> list[Path]:
    """The folders searched, in order (module docstring)."""
    return data_folders(fmt.name, fmt.subfolders, root, system=SYSTEM_DATA_DIRS[fmt.name],
                        inside=(fmt.folder,))


def has_files(fmt: CifarFormat, folder: Path) -> bool:
    return all((folder / f).is_file() for f in fmt.train_files + fmt.test_files)


def extract_archive(fmt: CifarFormat, archive: Path) -> Path:
    """Extract the binary files of a local official archive into the cache; return their folder.
    Only the expected member names are extracted (never paths chosen by the archive)."""
    wanted = {f"{fmt.folder}/{f}" for f in fmt.train_files + fmt.test_files}
    target = cache_folder(fmt.name)
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
            if len(members) != len(wanted):
                missing = sorted(wanted - {m.name for m in members})
                raise DataError(f"{archive}: not the {fmt.name} binary archive (missing "
                                f"{', '.join(missing[:2])}{' ...' if len(missing) > 2 else ''})")
            out = target / fmt.folder
            out.mkdir(exist_ok=True)
            for m in members:
                src = tar.extractfile(m)
                assert src is not None
                fd, tmp = tempfile.mkstemp(dir=out, prefix=".part-")
                with os.fdopen(fd, "wb") as dst:
                    dst.write(src.read())
                os.replace(tmp, out / Path(m.name).name)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot extract {archive}: {err}") from err
    return out


def locate(fmt: CifarFormat, root: str | None, download: bool) -> Path:
    """The folder holding the binary files; a one-line :class:`DataError` naming every folder
    searched when there is none (and saying so when only the pickle version was found)."""
    searched = candidate_folders(fmt, root)
    for folder in searched:
        if has_files(fmt, folder):
            return folder
        if (folder / fmt.archive).is_file():
            return extract_archive(fmt, folder / fmt.archive)
    if download:
        target = cache_folder(fmt.name)
        target.mkdir(parents=True, exist_ok=True)
        archive = target / fmt.archive
        fd, tmp = tempfile.mkstemp(dir=target, prefix=".download-")
        os.close(fd)
        try:
            urllib.request.urlretrieve(fmt.url, tmp)  # noqa: S310 - fixed https URL
            os.replace(tmp, archive)
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            raise DataError(f"{fmt.name}: download of {fmt.url} failed ({err}); put "
                            f"{fmt.archive} or its files in a searched folder") from err
        return extract_archive(fmt, archive)
    pickled = [f for base in searched for f in (base / fmt.python_folder, base)
               if f.name == fmt.python_folder and f.is_dir()]
    hint = (f"; found only the python (pickle) version in {pickled[0]}, which is not read "
            f"because unpickling data can execute code" if pickled else "")
    files = ", ".join((fmt.train_files + fmt.test_files)[:2])
    raise DataError(f"{fmt.name}: no binary files ({files}, ...) or {fmt.archive} in any of: "
                    f"{', '.join(str(f) for f in searched)}{hint}; get {fmt.url}, set UNTIED_DATA "
                    f"or the dataset's `root` to its folder, or set download=true")


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, size: int, mtime_ns: int, label_bytes: int
                 ) -> tuple[Tensor, Tensor]:
    record = label_bytes + PIXELS
    if size == 0 or size % record:
        raise DataError(f"{path}: {size} bytes is not a whole number of {record}-byte CIFAR "
                        f"records (truncated, or not a CIFAR binary file)")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, record)
    labels = torch.from_numpy(raw[:, :label_bytes].astype(np.int64))
    images = torch.from_numpy(raw[:, label_bytes:].reshape(-1, *IMAGE_SHAPE).copy())
    return images, labels


def read_batch(path: Path, label_bytes: int) -> tuple[Tensor, Tensor]:
    """Images ``(n, 3, 32, 32)`` uint8 and labels ``(n, label_bytes)`` int64 of one binary file,
    cached per process on path, size and modification time. Do not modify the result."""
    stat = path.stat()
    return _read_cached(str(path), stat.st_size, stat.st_mtime_ns, label_bytes)


def read_part(fmt: CifarFormat, folder: Path, files: tuple[str, ...], label_column: int,
              num_classes: int) -> tuple[Tensor, Tensor]:
    parts = [read_batch(folder / f, fmt.label_bytes) for f in files]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1][:, label_column] for p in parts])
    if int(labels.max()) >= num_classes:
        raise DataError(f"{fmt.name} in {folder}: label {int(labels.max())} outside "
                        f"0..{num_classes - 1} (wrong file, or wrong dataset?)")
    return images, labels


def normalise_channels(x_train: Tensor, x_test: Tensor, how: str) -> tuple[Tensor, Tensor]:
    """``unit``: / 255 (in place, on fresh float copies); ``standard``: per-channel z-score with
    the training split's statistics; ``none``: unchanged."""
    if how == "unit":
        return x_train.div_(255.0), x_test.div_(255.0)
    if how == "standard":
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        return (x_train - mean) / std, (x_test - mean) / std
    return x_train, x_test


def load_cifar(name: str, params: CifarParams, ctx: RunContext, label_column: int = 0,
               num_classes: int = 10) -> DataBundle:
    fmt = FORMATS[name]
    folder = locate(fmt, params.root, params.download)

    def split(gen: torch.Generator):
        x_train, y_train = read_part(fmt, folder, fmt.train_files, label_column, num_classes)
        x_test, y_test = read_part(fmt, folder, fmt.test_files, label_column, num_classes)
        if params.split == "random":
            return split_train_test(torch.cat([x_train, x_test]), torch.cat([y_train, y_test]),
                                    params.test_fraction, gen)
        return x_train, y_train, x_test, y_test

    def finish(x_train: Tensor, x_test: Tensor) -> tuple[Tensor, Tensor]:
        return normalise_channels(x_train.to(torch.float32), x_test.to(torch.float32),
                                  params.normalize)

    files = tuple(file_key(folder / f) for f in (*fmt.train_files, *fmt.test_files))
    key = (name, label_column, files, params.split, params.normalize, *(
        (params.test_fraction, ctx.stream_seed("data")) if params.split == "random" else ()))
    x_train, y_train, x_test, y_test = prepared_split(
        key, ctx, params.train_subset, split, finish, elementwise=params.normalize != "standard")
    info = DataInfo(name, IMAGE_SHAPE, num_classes, "classification", num_classes)
    return make_bundle(info, x_train, y_train, x_test, y_test, ctx, share_key=key,
                       **params.bundle_options())


def cifar10(params: CifarParams, *, ctx: RunContext) -> DataBundle:
    """CIFAR-10: 32x32 colour images, 10 classes (50,000 train / 10,000 test; binary files)."""
    return load_cifar("cifar10", params, ctx)


def cifar100(params: Cifar100Params, *, ctx: RunContext) -> DataBundle:
    """CIFAR-100: 32x32 colour images, 100 fine (or 20 coarse) classes (binary files)."""
    fine = params.labels == "fine"
    return load_cifar("cifar100", params, ctx, label_column=1 if fine else 0,
                      num_classes=100 if fine else 20)
