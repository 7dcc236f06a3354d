"""The registry of analytic target functions for the ``function_approx`` dataset.

A :class:`Target` is a named torch function of ``dim`` variables with a default domain (the
same interval on every axis) and ``outputs`` components (1: a scalar function). Built-ins
(:data:`BUILTIN_TARGETS`): a ReLU ridge, ``sin x cos y``, a Gaussian bump and a saddle, each in
2 and 3 variables, and two vector-valued ones: ``sin_cos_field`` (2 -> 2) and
``bump_ridge_saddle_3d`` (3 -> 3, the 3-d bump, ridge and saddle as one vector).

Third-party targets come in two ways, both ending in :func:`register_target`:

- a package declares an entry point in the group ``untied.function_targets`` whose object is a
  ``Target`` or a list of them; they are loaded the first time a target is looked up::

      [project.entry-points."untied.function_targets"]
      franke = "my_package.targets:FRANKE"

- in-process code (a notebook, a test, an untied plugin module at import) calls
  ``register_target(Target(...))``.

Names are lower case, digits and ``_``, unique: a clash is an error naming both sources. An
entry point that fails to load is reported by name in the "unknown target" error, not raised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterable

import torch
from torch import Tensor

from bench_core.plugins import did_you_mean

ENTRY_POINT_GROUP = "untied.function_targets"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Target:
    """``fn(x) -> y``: ``x`` of shape ``(N, dim)``, ``y`` of shape ``(N,)`` or ``(N, 1)`` for a
    scalar target, ``(N, outputs)`` for a vector-valued one (the paper's "vector functions"),
    elementwise torch ops only (it runs in float64 on the CPU)."""

    name: str
    dim: int
    fn: Callable[[Tensor], Tensor]
    description: str
    domain: tuple[float, float] = (-1.0, 1.0)
    outputs: int = 1


TARGETS: dict[str, Target] = {}
_SOURCES: dict[str, str] = {}
_LOAD_ERRORS: dict[str, str] = {}
_loaded = False


def register_target(target: Target, source: str = "register_target()") -> Target:
    """Add ``target`` to the registry; ``source`` names who registered it (for clash errors)."""
    if not isinstance(target, Target):
        raise TypeError(f"{source}: expected a Target, got {type(target).__name__}")
    if not _NAME_RE.match(target.name):
        raise ValueError(f"{source}: invalid target name {target.name!r} (lower case, digits, _)")
    low, high = target.domain
    if target.outputs < 1:
        raise ValueError(f"{source}: target '{target.name}' needs outputs >= 1 (got "
                         f"{target.outputs})")
    if target.dim < 1 or not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{source}: target '{target.name}' needs dim >= 1 and a finite domain "
                         f"low < high (got dim {target.dim}, domain {target.domain})")
    if target.name in TARGETS:
        raise ValueError(f"function target '{target.name}' is registered by {_SOURCES[target.name]} "
                         f"and by {source}")
    TARGETS[target.name] = target
    _SOURCES[target.name] = source
    return target


def load_entry_points(reload: bool = False) -> None:
    """Register the targets of the ``untied.function_targets`` entry points (once per process;
    ``reload`` looks again for entry points not loaded yet)."""
    global _loaded
    if _loaded and not reload:
        return
    _loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        source = f"entry point '{ep.name}' of {dist}"
        if any(s == source for s in _SOURCES.values()) or ep.name in _LOAD_ERRORS:
            continue
        try:
            obj = ep.load()
            for target in ([obj] if isinstance(obj, Target) else list(obj)):
                register_target(target, source)
        except Exception as exc:  # noqa: BLE001 - reported with the unknown-target error
            _LOAD_ERRORS[ep.name] = f"{type(exc).__name__}: {exc}"


def get_target(name: str) -> Target:
    """The registered target ``name``; ValueError listing the choices otherwise."""
    load_entry_points()
    if name not in TARGETS:
        failed = "".join(f"; entry point '{k}' failed to load ({v})"
                         for k, v in _LOAD_ERRORS.items())
        raise ValueError(f"unknown target '{name}'; {did_you_mean(name, TARGETS)}"
                         f"targets: {', '.join(sorted(TARGETS))}{failed}")
    return TARGETS[name]


def _norm2(x: Tensor) -> Tensor:
    return x.square().sum(-1)


def _ridge(weights: Iterable[float], bias: float) -> Callable[[Tensor], Tensor]:
    w = torch.tensor(list(weights), dtype=torch.float64)
    return lambda x: torch.relu(x @ w.to(x.dtype) + bias)


BUILTIN_TARGETS = [
    Target("relu_ridge", 2, _ridge((0.8, 0.6), 0.1),
           "ReLU ridge max(0, 0.8x + 0.6y + 0.1) (a ReLU-type target, Fig. 3)"),
    Target("sin_cos", 2, lambda x: torch.sin(x[:, 0]) * torch.cos(x[:, 1]),
           "sin(x) cos(y) on [-pi, pi]^2", (-math.pi, math.pi)),
    Target("gaussian_bump", 2, lambda x: torch.exp(-4 * _norm2(x)), "exp(-4 (x^2 + y^2))"),
    Target("saddle", 2, lambda x: x[:, 0] ** 2 - x[:, 1] ** 2, "x^2 - y^2"),
    Target("relu_ridge_3d", 3, _ridge((2 / 3, 2 / 3, 1 / 3), 0.1),
           "max(0, (2x + 2y + z)/3 + 0.1)"),
    Target("sin_cos_3d", 3, lambda x: torch.sin(x[:, 0]) * torch.cos(x[:, 1]) * torch.cos(x[:, 2]),
           "sin(x) cos(y) cos(z) on [-pi, pi]^3", (-math.pi, math.pi)),
    Target("gaussian_bump_3d", 3, lambda x: torch.exp(-4 * _norm2(x)),
           "exp(-4 (x^2 + y^2 + z^2))"),
    Target("saddle_3d", 3, lambda x: x[:, 0] ** 2 + x[:, 1] ** 2 - 2 * x[:, 2] ** 2,
           "x^2 + y^2 - 2 z^2"),
    Target("sin_cos_field", 2, lambda x: torch.stack(
        (torch.sin(x[:, 0]) * torch.cos(x[:, 1]), -torch.cos(x[:, 0]) * torch.sin(x[:, 1])), 1),
           "vector field (sin x cos y, -cos x sin y) on [-pi, pi]^2", (-math.pi, math.pi), 2),
    Target("bump_ridge_saddle_3d", 3, lambda x: torch.stack(
        (torch.exp(-4 * _norm2(x)), torch.relu(x @ torch.tensor([2 / 3, 2 / 3, 1 / 3],
                                                                  dtype=x.dtype) + 0.1),
         x[:, 0] ** 2 + x[:, 1] ** 2 - 2 * x[:, 2] ** 2), 1),
           "vector (exp(-4 |x|^2), max(0, (2x + 2y + z)/3 + 0.1), x^2 + y^2 - 2 z^2)",
           outputs=3),
]
for _target in BUILTIN_TARGETS:
    register_target(_target, "untied-bench (built-in)")
