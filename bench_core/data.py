"""Helpers for dataset plugins: seeded splits, subsets and normalisation (plain tensor ops), and
a per-process cache of raw data read from files."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, Literal, Sequence, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from bench_core.interfaces import DataBundle, DataInfo, FunctionSlice, RunContext

T = TypeVar("T")
_LOADED: OrderedDict[Hashable, Any] = OrderedDict()
_LOADED_LOCK = threading.Lock()
LOAD_ONCE_SIZE = 16
"""How many raw datasets :func:`load_once` keeps per process (least recently used go first)."""


def file_key(path: Path) -> tuple[str, int, int]:
    """A cache key for a file's content: its resolved path, size and modification time, so an
    edited or replaced file is read again."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def cache_folder(name: str) -> Path:
    """Where a dataset downloaded with ``download = true`` is kept: ``~/.cache/untied/<name>``."""
    return Path.home() / ".cache" / "untied" / name


def data_folders(name: str, subfolders: Sequence[str], root: str | None = None, *,
                 system: Sequence[str] = (), inside: Sequence[str] = ()) -> list[Path]:
    """The folders where dataset ``name``'s files are looked for, in order, each once:

    1. ``root`` (the dataset's parameter), and ``root/<sub>`` for each of ``subfolders``;
    2. ``$UNTIED_DATA/<sub>``, then variants ``$UNTIED_DATA/<sub>-*`` sorted (``mnist-10k``,
       a subset; only for plain names, not ``MNIST/raw``);
    3. :func:`cache_folder` (``~/.cache/untied/<name>``, where ``download = true`` puts them),
       and the nested ``subfolders`` under it (``MNIST/raw``: torchvision's layout);
    4. ``system`` folders (Debian's packages: ``/usr/share/datasets/fashion-mnist``).

    ``inside``: folders an archive unpacks into (``cifar-10-batches-bin``), tried under each of
    the above. A dataset reads the first folder that holds its files and names them all in its
    error when none does."""
    bases: list[Path] = []
    if root is not None:
        base = Path(root).expanduser()
        bases += [base] + [base / sub for sub in subfolders]
    env_root = os.environ.get("UNTIED_DATA")
    if env_root:
        env = Path(env_root).expanduser()
        bases += [env / sub for sub in subfolders]
        bases += sorted(p for sub in subfolders if "/" not in sub for p in env.glob(f"{sub}-*")
                        if p.is_dir())
    cache = cache_folder(name)
    bases += [cache] + [cache / sub for sub in subfolders if "/" in sub]
    bases += [Path(p) for p in system]
    out: list[Path] = []
    for base in bases:
        for folder in (base, *(base / extra for extra in inside)):
            if folder not in out:
                out.append(folder)
    return out


def load_once(key: Hashable, load: Callable[[], T]) -> T:
    """``load()``'s result, computed once per process for ``key`` and then shared.

    For the raw arrays a dataset reads from disk (a gzipped CSV, IDX files), which every run of a
    grid, and every session of a grouped run, would otherwise parse again: 20 grouped quickstart
    runs spent a third of their time re-reading scikit-learn's digits. Key files with
    :func:`file_key`. The result is shared: never modify it in place (the seeded splits of this
    module index it, which copies). A ``load`` that raises caches nothing."""
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    value = load()
    with _LOADED_LOCK:
        _LOADED[key] = value
        while len(_LOADED) > LOAD_ONCE_SIZE:
            _LOADED.popitem(last=False)
    return value


_SHARED: dict[Hashable, tuple[weakref.ref, tuple]] = {}


def share_while_used(key: Hashable, build: Callable[[], tuple[Any, ...]]
                     ) -> tuple[Any, ...]:
    """``build()``'s tuple, built once and shared by every caller with an equal ``key`` for as
    long as some caller still holds its first item, the *anchor* (a tensor every user keeps,
    such as a test split); once the anchor is freed, the entry goes and the next call builds
    afresh. The other items are held by the entry while the anchor lives.

    For data a grouped run's members would otherwise each hold a copy of: the runs of a group
    that use the same data (same files, options, seed of the ``data`` stream, device) then hold
    one test split between them, not one each (75 Fashion-MNIST runs held 75 copies). Unlike
    :func:`load_once` nothing stays cached after the last user is done. Never modify the
    result in place."""
    with _LOADED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None:
            anchor = entry[0]()
            if anchor is not None:
                return (anchor, *entry[1])
    value = build()
    anchor, rest = value[0], tuple(value[1:])
    with _LOADED_LOCK:
        _SHARED[key] = (weakref.ref(anchor), rest)
    weakref.finalize(anchor, _forget_shared, key, id(anchor))
    return value


def _forget_shared(key: Hashable, anchor_id: int) -> None:
    with _LOADED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and (entry[0]() is None or id(entry[0]()) == anchor_id):
            del _SHARED[key]


def prepared_split(key: Hashable, ctx: RunContext, train_subset: int | None,
                   split: Callable[[torch.Generator], tuple[Tensor, Tensor, Tensor, Tensor]],
                   finish: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], *,
                   elementwise: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A run's ``x_train, y_train, x_test, y_test`` on its device, with what runs on the same
    data can share built once (:func:`share_while_used`).

    ``split(gen)``: the raw training and test parts (drawing from the run's ``data`` stream
    ``gen`` if the split is random; ``key`` must then include that stream's seed); then the
    training pool is cut to ``train_subset`` (:func:`take_subset`, same stream) and
    ``finish(x_train, x_test)`` converts and normalises. ``elementwise``: ``finish`` treats each
    sample on its own (pixels / 255), so the test part does not depend on the pool and is shared
    by runs with different pools, each cutting its own (the data stream continues from the same
    state, so every run draws what it would alone); otherwise (statistics of the pool) the pool
    size and seed join the key. The numbers are those of split, subset, finish done per run."""
    gen = ctx.generator("data", device="cpu")
    dev = ctx.device
    pool_per_run = train_subset is not None and elementwise
    # what the entry's training part is: raw (each run cuts its pool), all of it, or one pool
    pool_key = "raw" if pool_per_run else "all" if train_subset is None else (
        train_subset, ctx.stream_seed("data"))

    def build():
        x_tr, y_tr, x_te, y_te = split(gen)
        if pool_per_run:
            _, x_te = finish(x_tr[:0], x_te)
        else:
            x_tr, y_tr = take_subset(x_tr, y_tr, train_subset, gen)
            x_tr, x_te = finish(x_tr, x_te)
            x_tr, y_tr = x_tr.to(dev), y_tr.to(dev)
        return x_te.to(dev), y_te.to(dev), x_tr, y_tr, gen.get_state()

    x_te, y_te, x_tr, y_tr, state = share_while_used(("split", key, pool_key, str(dev)), build)
    gen.set_state(state)
    if pool_per_run:
        x_tr, y_tr = take_subset(x_tr, y_tr, train_subset, gen)
        x_tr = finish(x_tr, x_te[:0])[0].to(dev)
        y_tr = y_tr.to(dev)
    return x_tr, y_tr, x_te, y_te


def split_train_test(x: Tensor, y: Tensor, test_fraction: float, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shuffle with ``generator`` and hold out ``round(test_fraction * n)`` samples for test."""
    n = len(x)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    n_test = int(round(test_fraction * n))
    test, train = perm[:n_test].to(x.device), perm[n_test:].to(x.device)
    return x[train], y[train], x[test], y[test]


def hold_out_validation(data: DataBundle, fraction: float, generator: torch.Generator
                        ) -> DataBundle:
    """The bundle a selection run trains on (:class:`~bench_core.specs.model.Select`): its
    training split less ``round(fraction * n)`` samples drawn with ``generator``, which become
    its test split; the test split and further evaluation sets are dropped, so a selection
    never sees them. The kept training samples stay in their order; the data stay on their
    device (only the index tensors move). A dataset's own preprocessing (a ``standard``
    normalisation's statistics) was computed before, on the whole training split."""
    n = len(data.x_train)
    n_val = int(round(fraction * n))
    if not 0 < n_val < n:
        raise ValueError(f"select.validation_fraction {fraction} of {n} training samples leaves "
                         f"an empty validation or training split")
    perm = torch.randperm(n, generator=generator, device=generator.device)
    val = perm[:n_val].sort().values.to(data.x_train.device)
    train = perm[n_val:].sort().values.to(data.x_train.device)
    return DataBundle(data.info, data.x_train[train], data.y_train[train], data.x_train[val],
                      data.y_train[val], eval_sets={}, slices=dict(data.slices))


def take_subset(x: Tensor, y: Tensor, size: int | None, generator: torch.Generator
                ) -> tuple[Tensor, Tensor]:
    """A random subset of ``size`` samples (all of them if ``size`` is None or too large)."""
    if size is None or size >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=generator, device=generator.device)[:size].to(x.device)
    return x[idx], y[idx]


def normalise(x_train: Tensor, x_test: Tensor, how: Literal["none", "unit", "standard"],
              max_value: float | None = None) -> tuple[Tensor, Tensor]:
    """``unit``: divide by ``max_value`` (the format's range); ``standard``: per-feature zero mean
    and unit variance, with statistics from the training split only."""
    if how == "none":
        return x_train, x_test
    if how == "unit":
        scale = max_value if max_value is not None else float(x_train.abs().max().clamp_min(1e-12))
        return x_train / scale, x_test / scale
    mean = x_train.mean(0, keepdim=True)
    std = x_train.std(0, keepdim=True).clamp_min(1e-8)
    return (x_train - mean) / std, (x_test - mean) / std


def make_bundle(info: DataInfo, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                ctx: RunContext, test_noise: float = 0.0, *, noisy_test_std: float = 0.0,
                noisy_test_clip: tuple[float, float] | None = None,
                share_key: Hashable | None = None) -> DataBundle:
    """Move the split to the run's device (once).

    ``test_noise``: replace the test inputs by ``x + N(0, test_noise^2)`` (drawn from the run's
    ``test_noise`` stream). ``noisy_test_std``: keep the clean test set and add a second
    evaluation set ``"noisy"`` = the same test inputs plus ``N(0, noisy_test_std^2)`` (the run's
    ``noisy_test`` stream), clipped to ``noisy_test_clip`` if given (e.g. ``(0, 1)`` for pixels);
    trainers report its metrics as ``noisy_test_<metric>``, from the same trained model.

    ``share_key``: a key naming ``x_test``'s content (that of :func:`prepared_split`): the noisy
    copies are then built once per noise seed and shared by the runs that hold them
    (:func:`share_while_used`)."""
    dev = ctx.device

    def noisy(stream: str, base: Tensor, std: float, clip) -> Tensor:
        def build() -> tuple[Tensor]:
            gen = ctx.generator(stream, device="cpu")
            draw = std * torch.randn(base.shape, generator=gen, dtype=base.dtype)
            out = base + draw.to(base.device)
            return ((out if clip is None else out.clamp(*clip)).to(dev),)
        if share_key is None:
            return build()[0]
        key = ("noisy", share_key, test_noise, stream, std, clip, ctx.stream_seed(stream), str(dev))
        return share_while_used(key, build)[0]

    if test_noise > 0:
        x_test = noisy("test_noise", x_test, test_noise, None)
    eval_sets: dict[str, tuple[Tensor, Tensor]] = {}
    if noisy_test_std > 0:
        eval_sets["noisy"] = (noisy("noisy_test", x_test, noisy_test_std, noisy_test_clip),
                              y_test.to(dev))
    return DataBundle(info, x_train.to(dev), y_train.to(dev), x_test.to(dev), y_test.to(dev),
                      eval_sets=eval_sets)


def axis_slice(fn: Callable[[Tensor], Tensor], low: float, high: float, dim: int, *,
               axis: int = 0, at: float | list[float] | None = None, points: int = 201,
               label: str | None = None, output: int = 0) -> FunctionSlice:
    """A :class:`~bench_core.interfaces.FunctionSlice` of ``fn`` along input ``axis``: that
    coordinate runs over ``[low, high]`` in ``points`` steps while the others stay at ``at``
    (a value, or one per input; default the middle of the domain). ``fn`` maps float64 inputs
    ``(N, dim)`` to targets ``(N,)`` or ``(N, 1)``; inputs are stored as float32; ``output``:
    the model output compared with the target."""
    if not 0 <= axis < dim:
        raise ValueError(f"axis {axis} outside 0..{dim - 1}")
    fixed = [(low + high) / 2] * dim if at is None else (
        [float(at)] * dim if isinstance(at, (int, float)) else [float(a) for a in at])
    if len(fixed) != dim:
        raise ValueError(f"at: {len(fixed)} values for {dim} inputs")
    coordinate = torch.linspace(low, high, points, dtype=torch.float64)
    x = torch.tensor(fixed, dtype=torch.float64).repeat(points, 1)
    x[:, axis] = coordinate
    others = ", ".join(f"x{i + 1} = {v:g}" for i, v in enumerate(fixed) if i != axis)
    return FunctionSlice(coordinate=coordinate, inputs=x.float(), target=fn(x).reshape(-1),
                         label=label or f"x{axis + 1}" + (f" ({others})" if others else ""),
                         output=output)


# ---- options every built-in dataset shares -----------------------------------------------
class SplitParams(BaseModel):
    """Options every built-in dataset shares: the held-out share, the training-pool size (a
    seeded subset of the training split) and test-time input noise."""

    model_config = ConfigDict(extra="forbid")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of the samples")
    train_subset: int | None = Field(None, ge=1, description="training pool: train on this many "
                                     "samples of the training split (a seeded subset)")
    test_noise: float = Field(0.0, ge=0, description="std of N(0, s) noise added to test inputs")
    noisy_test_std: float = Field(0.0, ge=0, description="also evaluate on the test inputs plus "
                                  "N(0, s) noise (metrics noisy_test_*), from the same model")
    noisy_test_clip: tuple[float, float] | None = Field(
        None, description="clip the noisy test inputs to [lo, hi] (e.g. [0, 1] for pixels)")

    def bundle_options(self) -> dict:
        """The keyword arguments of :func:`bench_core.data.make_bundle` these options set."""
        clip = self.noisy_test_clip
        if clip is not None and clip[0] > clip[1]:
            raise ValueError(f"noisy_test_clip: lower bound {clip[0]} above upper bound {clip[1]}")
        return {"test_noise": self.test_noise, "noisy_test_std": self.noisy_test_std,
                "noisy_test_clip": clip}


def finish_split(info: DataInfo, x: Tensor, y: Tensor, params: SplitParams, ctx,
                 max_value: float | None) -> DataBundle:
    """A dataset of ``x, y`` finished as the built-ins finish theirs: split by
    ``params.test_fraction`` with the run's ``data`` stream, the training pool cut to
    ``train_subset``, inputs normalised by ``params.normalize`` (when the params have it;
    ``max_value`` is the largest raw input, for ``unit``), and the noisy test set made."""
    gen = ctx.generator("data", device="cpu")
    x_tr, y_tr, x_te, y_te = split_train_test(x, y, params.test_fraction, gen)
    x_tr, y_tr = take_subset(x_tr, y_tr, params.train_subset, gen)
    how = getattr(params, "normalize", "none")
    x_tr, x_te = normalise(x_tr, x_te, how, max_value)
    return make_bundle(info, x_tr, y_tr, x_te, y_te, ctx, **params.bundle_options())
