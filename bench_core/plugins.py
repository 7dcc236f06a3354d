"""Plugin loading and the component registries.

Every plugin, built-in or third party, is found through ``importlib.metadata`` entry points in
group ``untied``. ``UNTIED_PLUGINS`` (comma list) restricts loading to the built-ins plus the
plugins named (empty: built-ins only); ``UNTIED_DISABLE_PLUGINS`` (comma list) skips plugins.
A plugin that fails to import, implements an unknown hook or raises while registering is
reported by name and skipped; the others still load.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy
from pydantic import BaseModel, ConfigDict

from bench_core import hookspecs
from bench_core.errors import PluginError

BUILTIN_DISTRIBUTION = "untied-bench"
HOST_PLUGINS = {"host": "bench_core.execution.executors"}
"""Plugins that are part of the host itself: loaded first, always, whatever ``UNTIED_PLUGINS``
and ``UNTIED_DISABLE_PLUGINS`` say (the default executors ``local`` and ``processes``: without
them ``untied run`` could not run anything)."""
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class NoParams(BaseModel):
    """Parameter model of a component that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Component:
    """One registered component."""

    family: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    description: str
    plugin: str
    version: str = "1"
    """Bumped by its plugin when the component's numerics change (same parameters, other
    results): part of the run id when not ``"1"``, so records of another version are never
    mixed into a table (:func:`bench_core.specs.plan.identity`)."""

    def parameters(self) -> list[dict[str, Any]]:
        """Name, type, default and description of each parameter (for listings)."""
        rows = []
        for pname, f in self.params.model_fields.items():
            tname = type_name(f.annotation)
            default = None if f.is_required() else f.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):  # a nested parameter table
                default = default.model_dump(mode="json")
            rows.append(
                {
                    "name": pname,
                    "type": tname,
                    "default": default,
                    "required": f.is_required(),
                    "description": f.description or "",
                }
            )
        return rows


def type_name(ann: Any) -> str:
    """A short readable name of a type annotation: ``float``, ``list[int]``, ``'a'|'b'``,
    ``float | None``."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else origin.__name__
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    builtin: bool = False


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _env_list(var: str) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


class PluginHost:
    """The pluggy manager plus one registry per component family."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.registries: dict[str, dict[str, Component]] = {f: {} for f in hookspecs.FAMILIES}
        self._collected = False

    # ---- loading -------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        self._load_host_plugins()
        only = _env_list("UNTIED_PLUGINS")
        disabled = set(_env_list("UNTIED_DISABLE_PLUGINS") or [])
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            builtin = dist is not None and _normalise(dist) == _normalise(BUILTIN_DISTRIBUTION)
            if ep.name in seen:
                continue  # the same distribution seen twice on sys.path
            seen.add(ep.name)
            if ep.name in disabled or (only is not None and not builtin and ep.name not in only):
                continue
            info = PluginInfo(ep.name, dist, version, builtin=builtin)
            self.plugins[ep.name] = info
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
                info.error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
                continue
            self._register(obj, info)

    def _load_host_plugins(self) -> None:
        from importlib import import_module

        from bench_core import __version__

        for name, module in HOST_PLUGINS.items():
            if name in self.plugins:
                continue
            info = PluginInfo(name, BUILTIN_DISTRIBUTION, __version__, builtin=True)
            self.plugins[name] = info
            self._register(import_module(module), info)

    def add_plugin(self, obj: Any, name: str, distribution: str | None = None,
                   version: str | None = None) -> PluginInfo:
        """Register an in-process plugin object (tests, notebooks): the same checks apply."""
        if name in self.plugins:
            raise PluginError(f"a plugin named '{name}' is already loaded")
        info = PluginInfo(name, distribution, version)
        self.plugins[name] = info
        self._register(obj, info)
        self._collected = False
        return info

    def _register(self, obj: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, duplicate objects
            info.error = f"rejected: {exc}"
            return
        unknown = [
            impl.function.__name__
            for caller in self.pm.get_hookcallers(obj) or []
            if caller.spec is None
            for impl in caller.get_hookimpls()
            if impl.plugin is obj
        ]
        if unknown:
            self.pm.unregister(obj)
            info.error = f"implements unknown hook(s) {', '.join(sorted(unknown))}; " \
                f"known hooks: {', '.join(hookspecs.FAMILIES.values())}"
            return
        info.hooks = sorted(
            c.name for c in self.pm.get_hookcallers(obj) or [] if c.spec is not None
        )

    # ---- registries ---------------------------------------------------------------------
    def collect(self) -> None:
        """Call every plugin's ``register_*`` hooks and fill the registries."""
        self.pm.check_pending()
        self.registries = {f: {} for f in hookspecs.FAMILIES}
        for family, hook_name in hookspecs.FAMILIES.items():
            caller = getattr(self.pm.hook, hook_name)
            impls = caller.get_hookimpls()  # registration order, built-ins first: on a name
            impls.sort(key=lambda i: not getattr(self.plugins.get(i.plugin_name), "builtin", 0))
            for impl in impls:             # clash the later plugin is the one dropped
                info = self.plugins.get(impl.plugin_name)
                if info is None or info.error:
                    continue
                staged: list[Component] = []
                try:
                    impl.function(register=self._make_register(family, impl.plugin_name, staged))
                    clash = next((c for c in staged if c.name in self.registries[c.family]),
                                 None)
                    if clash is not None:
                        other = self.registries[clash.family][clash.name]
                        info.error = (
                            f"{clash.family} name clash: '{clash.name}' is registered by plugin "
                            f"'{other.plugin}' and by plugin '{clash.plugin}'; '{clash.plugin}' "
                            f"is not loaded (rename its component, or disable '{other.plugin}' "
                            f"with UNTIED_DISABLE_PLUGINS)")
                    else:
                        for comp in staged:
                            self._add(comp)
                except Exception as exc:  # noqa: BLE001 - a raising plugin is reported by name
                    info.error = f"{hook_name} raised {type(exc).__name__}: {exc}"
                if info.error:
                    self._drop(impl.plugin_name)
        self._collected = True

    def _make_register(self, family: str, plugin: str, staged: list[Component]):
        def register(name: str, factory: Callable[..., Any], *, params: type[BaseModel] | None = None,
                     description: str | None = None, version: str | int = "1") -> None:
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise ValueError(f"invalid {family} name {name!r} (use lower case, digits, _)")
            if not callable(factory):
                raise TypeError(f"{family} '{name}': factory is not callable")
            if params is None:
                params = NoParams
            if not (isinstance(params, type) and issubclass(params, BaseModel)):
                raise TypeError(f"{family} '{name}': params must be a pydantic BaseModel subclass")
            if "name" in params.model_fields:
                raise TypeError(f"{family} '{name}': a parameter may not be called 'name'")
            desc = description or (inspect.getdoc(factory) or "").strip().splitlines()[:1]
            if isinstance(desc, list):
                desc = desc[0] if desc else ""
            version = str(version).strip()
            if not version or not re.fullmatch(r"[A-Za-z0-9._+-]+", version):
                raise ValueError(f"{family} '{name}': version {version!r} (use e.g. \"2\" or "
                                 f"\"1.1\")")
            staged.append(Component(family, name, factory, params, desc or MISSING_DESCRIPTION,
                                    plugin, version))

        return register

    def _drop(self, plugin: str) -> None:
        """Remove every component ``plugin`` registered (it failed; the others carry on)."""
        for fam in self.registries.values():
            for key in [k for k, c in fam.items() if c.plugin == plugin]:
                del fam[key]

    def _add(self, comp: Component) -> None:
        reg = self.registries[comp.family]
        if comp.name in reg:
            other = reg[comp.name]
            raise PluginError(
                f"{comp.family} name clash: '{comp.name}' is registered by plugin "
                f"'{other.plugin}' and by plugin '{comp.plugin}'; disable one with "
                f"UNTIED_DISABLE_PLUGINS"
            )
        reg[comp.name] = comp

    def family(self, family: str) -> dict[str, Component]:
        if family not in self.registries:
            raise PluginError(
                f"unknown component family '{family}'; {did_you_mean(family, self.registries)}"
                f"families: {', '.join(self.registries)}"
            )
        if not self._collected:
            self.collect()
        return self.registries[family]

    def get(self, family: str, name: str) -> Component:
        reg = self.family(family)
        if name not in reg:
            singular = family[:-1] if family.endswith("s") else family
            failed = [f"'{p.name}' ({p.error})" for p in self.plugins.values() if p.error]
            note = (f"; plugins that failed to load: {'; '.join(failed)}" if failed else "")
            raise PluginError(
                f"unknown {singular} '{name}'; {did_you_mean(name, reg)}"
                f"choices: {', '.join(sorted(reg))}{note}"
            )
        return reg[name]

    def failures(self) -> list[PluginInfo]:
        if not self._collected:
            self.collect()
        return [p for p in self.plugins.values() if p.error]

    def versions(self) -> dict[str, str]:
        """``plugin -> "distribution==version"`` for every loaded plugin (recorded per run)."""
        return {
            p.name: f"{p.distribution or '?'}=={p.version or '?'}"
            for p in self.plugins.values()
            if not p.error
        }


MISSING_DESCRIPTION = "(no description)"
"""Shown for a component registered without a description or factory docstring: it loads (one
missing line of text must not take a plugin's every component away), and the conformance kit
fails it until it has one."""


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


_HOST: PluginHost | None = None


def get_host(refresh: bool = False) -> PluginHost:
    """The process-wide host, loading entry points on first use."""
    global _HOST
    if _HOST is None or refresh:
        host = PluginHost()
        host.load_entry_points()
        host.collect()
        _HOST = host
    return _HOST


def set_host(host: PluginHost | None) -> None:
    """Install ``host`` as the process-wide host (test kit); ``None`` reloads on next use."""
    global _HOST
    _HOST = host
