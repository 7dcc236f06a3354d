"""Leaderboard specs (TOML, pydantic v2) and their expansion into validated runs.

A run spec holds one table per component, each ``{name = "...", ...params}``:
``dataset``, ``model``, ``activation``, ``surrogate``, ``rule``, ``trainer`` and, optionally,
``reparametrization`` (applied to the built model before its rule; a list of tables applies
several in order). A leaderboard spec
holds ``defaults`` (a partial run spec), a ``grid`` (dotted keys -> lists; cartesian product),
``entries`` (the methods compared: a label and overrides), a ``baseline`` entry label, ``seeds``,
optional ``profiles`` (overlays such as ``cpu`` = reduced scale), optional ``reference`` values
(a paper's numbers per entry and grid cell) and ``compare``, how entries are set against the
baseline in the table (difference, ratio or log10 ratio of the means).

Overrides are merged into defaults key by key, except that giving a component a *different*
``name`` replaces its table: the old component's parameters do not leak into the new one.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench_core.errors import PluginError, SpecError
from bench_core.interfaces import derive_seed, is_execution_option
from bench_core.metrics import default_direction, is_time_to_target
from bench_core.plugins import Component, PluginHost, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMPONENT_FIELDS: dict[str, str] = {
    "dataset": "datasets",
    "model": "models",
    "activation": "activations",
    "surrogate": "surrogates",
    "rule": "update_rules",
    "trainer": "trainers",
    "reparametrization": "reparametrizations",
}
"""Run-spec field -> component family."""
REQUIRED_FIELDS = ("dataset", "model", "trainer")
LIST_FIELDS = frozenset({"reparametrization"})
"""Run-spec fields that may also hold a list of component tables, applied in order."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Entry(_Strict):
    label: str = Field(min_length=1, description="name of the method in the table")
    overrides: dict[str, Any] = Field(default_factory=dict, description="partial run spec")
    description: str = ""


class Profile(_Strict):
    description: str = ""
    comparable: bool = Field(False, description="every run follows the source's protocol "
                             "(data, steps, model, loss; fewer seeds or grid cells allowed), so "
                             "its cells get verdicts; false for reduced profiles")
    seeds: int | list[int] | None = None
    defaults: dict[str, Any] = Field(default_factory=dict, description="merged over defaults")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="replaces grid keys")
    entries: list[str] | None = Field(default=None, description="restrict to these entry labels")
    referenced_only: bool = Field(
        False, description="run only the (entry, grid cell) pairs for which the spec gives a "
                           "reference value of its metric: a reproduction profile that spends "
                           "no compute on pairs the source does not report")


class Tolerance(_Strict):
    """When a value reproduces its reference (:mod:`bench_core.verdicts`), in displayed units
    (after ``scale``). The rule's tolerance is ``max(floor, stderr * sqrt(se_ours^2 +
    se_paper^2))`` with ``floor = max(absolute, relative * |paper|)``; a value further from the
    paper than that ``differs``. A value within it is ``reproduced`` only when the tolerance
    itself is at most ``limit = max(max, relative_max * |paper|)``; a wider one (few seeds that
    split between outcomes, a paper std of a collapsed cell) makes it ``inconclusive``: more
    seeds would decide. ``relative`` and ``relative_max`` are for metrics whose scale varies by
    cell (MSE); both default to 0, so the limit of an accuracy is ``max``, by default three
    times ``absolute``."""

    absolute: float = Field(0.02, ge=0, description="the smallest difference that counts")
    stderr: float = Field(2.0, ge=0, description="how many combined standard errors count")
    max: float | None = Field(None, ge=0, description="the widest tolerance that still decides "
                              "(default 3 x absolute); beyond it a value within tolerance is "
                              "inconclusive")
    relative: float = Field(0.0, ge=0, description="floor as a fraction of |paper| (for metrics "
                            "whose scale varies by cell)")
    relative_max: float | None = Field(None, ge=0, description="the widest tolerance that still "
                                       "decides, as a fraction of |paper| (default 3 x relative)")

    @model_validator(mode="after")
    def _limits(self) -> "Tolerance":
        if self.max is not None and self.max < self.absolute:
            raise ValueError(f"tolerance.max ({self.max:g}) is below tolerance.absolute "
                             f"({self.absolute:g}): no value could be reproduced")
        if self.relative_max is not None and self.relative_max < self.relative:
            raise ValueError(f"tolerance.relative_max ({self.relative_max:g}) is below "
                             f"tolerance.relative ({self.relative:g})")
        return self

    @property
    def limit_absolute(self) -> float:
        return 3 * self.absolute if self.max is None else self.max

    @property
    def limit_relative(self) -> float:
        return 3 * self.relative if self.relative_max is None else self.relative_max


class Divergence(_Strict):
    """When a run counts as ``diverged`` although it finished (judged when records are
    aggregated, from its curves, so recorded runs are judged without rerunning): its
    ``curve`` (a per-epoch training loss) holds a non-finite value, or a value above ``factor``
    times its first logged value. The default factor, 100, was chosen from the committed
    records: the largest growth of a run that trained and recovered is 73x (a transient Adam
    spike of podoprosvetov-approx), the smallest of a run that visibly blew up 183x (an MF+DD
    run of mf-zo-rq2 that ended there), the next 1.4e11 (linear networks of
    troiano-linear-fashion whose loss reached 1e23-1e32 but were recorded ``ok``)."""

    factor: float | None = Field(100.0, gt=1, description="a loss above factor x the first "
                                 "logged loss is a divergence; null: only non-finite losses")
    curve: str = Field("train_loss", min_length=1, description="the per-epoch curve judged "
                       "(records' curve_<name>)")


class Reference(_Strict):
    """A value the source reports for ``entry`` in the grid cells that match ``cell``: every
    key given must equal the cell's value; keys left out match any value (so a reference need
    not repeat an axis that is constant or irrelevant). ``metric`` defaults to the spec's;
    ``summary = true`` marks a value of the summary table (``summary_by``), whose ``cell`` names
    only those axes."""

    entry: str
    cell: dict[str, Any] = Field(default_factory=dict)
    value: float
    std: float | None = None
    metric: str | None = None
    summary: bool = False

    def matches(self, entry: str, cell: dict[str, Any], metric: str, default_metric: str) -> bool:
        return (not self.summary and self.entry == entry
                and (self.metric or default_metric) == metric
                and all(k in cell and canonical_json(cell[k]) == canonical_json(v)
                        for k, v in self.cell.items()))


class LeaderboardSpec(_Strict):
    """A leaderboard: the methods (entries) compared on the same grid, seeds and budget."""

    title: str
    name: str | None = Field(default=None, description="results folder name; default file stem")
    description: str = ""
    source: str = Field(default="", description="the paper or report the leaderboard follows")
    metric: str = "test_accuracy"
    higher_is_better: bool | None = Field(
        None, description="direction of `metric` (default: by its name, "
        "bench_core.metrics.default_direction); `direction` sets any metric's")
    direction: dict[str, Literal["higher", "lower"]] = Field(
        default_factory=dict, description="per metric name, whether higher or lower values are "
        "better (ranks, arrows, gains); a metric not named here follows its name's convention "
        "(loss, error, mse, seconds, time, ... lower; others higher)")
    divergence: Divergence = Field(default_factory=Divergence,
                                   description="when a finished run counts as diverged")
    defaults: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    entries: list[Entry] = Field(min_length=1)
    baseline: str | None = None
    seeds: int | list[int] = 1
    profiles: dict[str, Profile] = Field(default_factory=dict)
    default_profile: str | None = None
    reference: list[Reference] = Field(default_factory=list)
    reference_note: str = ""
    reference_n: int | None = Field(None, ge=1, description="runs behind each reference value "
                                    "(the source's repetitions), for its standard error")
    tolerance: Tolerance = Field(default_factory=Tolerance,
                                 description="when a value reproduces its reference")
    comparable: bool = Field(False, description="the spec's own settings (no profile) follow "
                             "the source's protocol; profiles say so themselves")
    protocol: str = Field("", description="choices made where the source is silent (epochs, "
                          "optimiser, loss, split, ...), shown in every table's header")
    source_notes: str = Field("", description="inconsistencies or errata of the source that "
                              "touch this leaderboard, shown in every table's header")
    columns: list[str] = Field(default_factory=list,
                               description="extra reported metrics to show (means)")
    metrics: list[str] = Field(default_factory=list, description="further metrics, each "
                               "tabulated like `metric` (Δ baseline, rank, references)")
    scale: float = Field(1.0, gt=0, description="display multiplier of the metrics' values "
                         "(e.g. 1e4 for MSE x 10^4, 100 for percent); references use it too")
    relative: bool = Field(False, description="show each entry's relative gain over the "
                           "baseline in percent (positive = better)")
    summary_by: list[str] = Field(default_factory=list, description="grid keys: add a table of "
                                  "each entry's mean relative gain per value of these axes")
    labels: dict[str, str] = Field(default_factory=dict, description="plot labels with units "
                                   "of grid axes, metrics (stating any display `scale`) and `epoch` (the curves' x "
                                   "axis), e.g. "
                                   "{\"rule.lr\" = \"learning rate (step size)\"}")
    compare: Literal["difference", "ratio", "log10_ratio"] = Field(
        "difference", description="how an entry's mean is compared with the baseline's in the "
        "same cell: entry - baseline, entry / baseline, or log10(entry / baseline) (orders of "
        "magnitude; ratios suit positive metrics such as errors)")

    @model_validator(mode="after")
    def _check(self) -> "LeaderboardSpec":
        labels = [e.label for e in self.entries]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(f"duplicate entry labels: {', '.join(sorted(dup))}")
        if self.baseline is not None and self.baseline not in labels:
            raise ValueError(
                f"baseline '{self.baseline}' is not an entry label; "
                f"{did_you_mean(self.baseline, labels)}entries: {', '.join(labels)}"
            )
        for where, grid in [("grid", self.grid)] + [(f"profiles.{n}.grid", p.grid)
                                                    for n, p in self.profiles.items()]:
            for key, values in grid.items():
                check_axis(f"{where}.{key}", values)
        for name, prof in self.profiles.items():
            for lab in prof.entries or []:
                if lab not in labels:
                    raise ValueError(f"profiles.{name}.entries: '{lab}' is not an entry label")
        if self.default_profile and self.default_profile not in self.profiles:
            raise ValueError(f"default_profile '{self.default_profile}' is not a profile")
        if self.summary_by and not self.baseline:
            raise ValueError("summary_by needs a baseline entry (gains are relative to it)")
        known = {self.metric, *self.metrics}
        if self.higher_is_better is not None and self.metric in self.direction and \
                (self.direction[self.metric] == "higher") != self.higher_is_better:
            raise ValueError(f"higher_is_better = {str(self.higher_is_better).lower()} and "
                             f"direction.{self.metric} = '{self.direction[self.metric]}' disagree")
        for metric in (self.metric, *self.metrics):
            if is_time_to_target(metric):
                raise ValueError(f"'{metric}' is a time to a target: unreached runs have no "
                                 f"value, so it goes in `columns` (shown as the share reached "
                                 f"and a censored median), not in `metric` or `metrics`")
        for i, ref in enumerate(self.reference):
            if ref.metric is not None and ref.metric not in known:
                raise ValueError(f"reference[{i}].metric '{ref.metric}' is not one of the "
                                 f"spec's metrics ({', '.join(sorted(known))})")
            if ref.entry not in labels:
                raise ValueError(
                    f"reference[{i}].entry '{ref.entry}' is not an entry label; "
                    f"{did_you_mean(ref.entry, labels)}"
                )
        return self

    def direction_of(self, metric: str) -> str:
        """``higher`` or ``lower``: the spec's word for ``metric``, else its name's convention
        (:func:`bench_core.metrics.default_direction`)."""
        if metric in self.direction:
            return self.direction[metric]
        if metric == self.metric and self.higher_is_better is not None:
            return "higher" if self.higher_is_better else "lower"
        return default_direction(metric)

    def higher_is_better_for(self, metric: str) -> bool:
        return self.direction_of(metric) == "higher"


def check_axis(where: str, values: list[Any]) -> None:
    """A grid axis needs values, each once: a repeated value would plan the same run twice
    (one run id) and count one seed's result twice."""
    if not values:
        raise ValueError(f"{where} is an empty list")
    seen: dict[str, Any] = {}
    for value in values:
        key = canonical_json(value)
        if key in seen:
            raise ValueError(f"{where} repeats the value {value!r}; each value of a grid axis "
                             f"must be distinct")
        seen[key] = value


@dataclass
class RunTask:
    """One run of a leaderboard: everything needed to execute it in another process."""

    leaderboard: str
    profile: str
    entry: str
    entry_index: int
    is_baseline: bool
    cell: dict[str, Any]
    cell_index: int
    seed_index: int
    seed: int
    spec: dict[str, dict[str, Any]]
    run_id: str
    metric: str
    higher_is_better: bool
    reference: float | None = None
    reference_std: float | None = None
    results_dir: str = ""
    device: str = "cpu"
    threads: int | None = None
    timeout: float | None = None
    force: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    base_run_id: str = ""
    """The run id without component versions: the same run under every version (records of
    another version are recognised, and re-run, by it)."""
    versions: dict[str, Any] = field(default_factory=dict)
    """Each component's version (a list field: a list), as recorded."""


@dataclass
class Plan:
    spec: LeaderboardSpec
    name: str
    profile: str
    seeds: list[int]
    grid: dict[str, list[Any]]
    tasks: list[RunTask]
    spec_ref: str | None = None
    """The spec file or built-in name the plan came from (finds its committed records)."""

    @property
    def comparable(self) -> bool:
        """Whether this plan's runs follow the source's protocol (its profile says so, or the
        spec for runs without a profile): only then do its cells get verdicts."""
        prof = self.spec.profiles.get(self.profile)
        return prof.comparable if prof is not None else self.spec.comparable


# ---- loading -------------------------------------------------------------------------------
def builtin_leaderboards() -> dict[str, Any]:
    """Leaderboard specs shipped inside the package: name -> resource."""
    root = resources.files("bench_core.leaderboards")
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def resolve_spec_path(ref: str | Path) -> tuple[str, str]:
    """(name, TOML text) for a spec path, or for the name of a built-in leaderboard."""
    path = Path(ref)
    if path.is_file():
        try:
            return path.stem, path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{ref}: not UTF-8 text (byte {exc.start}: "
                            f"{exc.object[exc.start:exc.start + 1]!r}); TOML files are UTF-8") from None
        except OSError as exc:
            raise SpecError(f"{ref}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise SpecError(f"{ref} is a directory, not a spec file")
    builtins = builtin_leaderboards()
    if str(ref) in builtins:
        return str(ref), builtins[str(ref)].read_text(encoding="utf-8")
    raise SpecError(
        f"no spec file '{ref}' and no built-in leaderboard of that name; "
        f"{did_you_mean(str(ref), builtins)}built-ins: {', '.join(sorted(builtins))}"
    )


def load_spec(ref: str | Path) -> tuple[str, LeaderboardSpec]:
    stem, text = resolve_spec_path(ref)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{ref}: invalid TOML: {exc}") from None
    return parse_spec(raw, source=str(ref), stem=stem)


def parse_spec(raw: dict[str, Any], source: str = "spec", stem: str = "leaderboard"
               ) -> tuple[str, LeaderboardSpec]:
    try:
        spec = LeaderboardSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {format_validation_error(exc)}") from None
    return spec.name or stem, spec


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as one line: ``path: message (got value)``."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in (prefix, *err["loc"]) if x != "")
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    got = err.get("input")
    shown = "" if err["type"] in ("missing",) or isinstance(got, (dict, list)) else f" (got {got!r})"
    if err["type"] == "value_error":  # a check of the whole spec: its message says it all
        msg, shown = msg.removeprefix("Value error, "), ""
    more = len(exc.errors()) - 1
    tail = f" [+{more} more]" if more else ""
    return f"{loc}: {msg}{shown}{tail}" if loc else f"{msg}{shown}{tail}"


# ---- merging -------------------------------------------------------------------------------
def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"rule.lr": 0.1}`` -> ``{"rule": {"lr": 0.1}}``; nested tables pass through."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpecError(f"'{key}' sets a field inside a non-table value")
        if isinstance(value, dict):
            value = unflatten(value)
            if isinstance(node.get(parts[-1]), dict):
                value = merge(node[parts[-1]], value)
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; a changed component ``name`` replaces."""
    out = copy.deepcopy(base)
    for key, value in unflatten(over).items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "name" in value and value["name"] != old.get("name"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any) -> str:
    return hashlib.blake2b(canonical_json(obj).encode(), digest_size=8).hexdigest()


# ---- validation against plugins -----------------------------------------------------------
def resolve_component(host: PluginHost, fieldname: str, table: Any
                      ) -> tuple[Component, BaseModel]:
    """Validate one component table; errors name the field path, value and choices."""
    family = COMPONENT_FIELDS[fieldname]
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict):
        raise SpecError(f"{fieldname}: expected a table {{name = ...}} (got {table!r})")
    if "name" not in table:
        raise SpecError(f"{fieldname}.name: missing (choices: {', '.join(sorted(host.family(family)))})")
    name = table["name"]
    try:
        comp = host.get(family, str(name))
    except PluginError as exc:
        raise SpecError(f"{fieldname}.name: {exc}") from None
    params = {k: v for k, v in table.items() if k != "name"}
    fields = comp.params.model_fields
    for key in params:
        if key not in fields:
            raise SpecError(
                f"{fieldname}.{key}: unknown parameter of {family[:-1]} '{name}' (got "
                f"{params[key]!r}); {did_you_mean(key, fields)}"
                f"parameters: {', '.join(fields) or 'none'}"
            )
    try:
        model = comp.params.model_validate(params)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, prefix=fieldname)) from None
    for key, given in params.items():
        got = getattr(model, key, given)
        if isinstance(given, str) and not isinstance(got, str) and got is not None:
            raise SpecError(f"{fieldname}.{key}: expected {type(got).__name__}, got the string "
                            f"{given!r} (TOML has types: write {given} without quotes)")
    return comp, model


def resolve_run(host: PluginHost, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate a full run spec; return it canonical (every parameter, defaults filled)."""
    unknown = [k for k in raw if k not in COMPONENT_FIELDS]
    if unknown:
        k = unknown[0]
        raise SpecError(f"{k}: unknown run field; {did_you_mean(k, COMPONENT_FIELDS)}"
                        f"fields: {', '.join(COMPONENT_FIELDS)}")
    for req in REQUIRED_FIELDS:
        if req not in raw:
            raise SpecError(f"{req}: missing (every run needs {', '.join(REQUIRED_FIELDS)})")
    out: dict[str, Any] = {}
    for fieldname in COMPONENT_FIELDS:
        if fieldname not in raw:
            continue
        tables = raw[fieldname]
        if fieldname in LIST_FIELDS and isinstance(tables, list):
            if not tables:
                raise SpecError(f"{fieldname}: an empty list (leave the field out for none)")
            out[fieldname] = []
            for i, table in enumerate(tables):
                comp, model = resolve_component(host, fieldname, table)
                out[fieldname].append({"name": comp.name, **model.model_dump(mode="json")})
            continue
        comp, model = resolve_component(host, fieldname, tables)
        out[fieldname] = {"name": comp.name, **model.model_dump(mode="json")}
    return out


def resolve_components(host: PluginHost, fieldname: str, value: Any
                       ) -> list[tuple[Component, BaseModel]]:
    """The components of one run-spec field: one, or several for a list (:data:`LIST_FIELDS`)."""
    if fieldname in LIST_FIELDS and isinstance(value, list):
        return [resolve_component(host, fieldname, table) for table in value]
    return [resolve_component(host, fieldname, value)]


# ---- expansion -----------------------------------------------------------------------------
DEFAULT_VERSION = "1"
VERSION_KEY = "@version"
"""Where a component's version enters its identity (no parameter can be called that)."""


def identity(comp: Component, model: BaseModel, *, for_seed: bool = False,
             versioned: bool = True) -> dict[str, Any]:
    """A component table as it identifies a run: its name and the parameters that differ from
    their defaults, and its version (:attr:`bench_core.plugins.Component.version`) when it is
    not ``"1"``. Writing a default out, or a plugin adding a parameter with a default, then
    changes neither a run's seed nor its run id (the record still holds every parameter);
    bumping a version changes the run id, so records of the old numerics are never taken for
    the new ones. ``for_seed`` also leaves out the version and the parameters declared with
    :func:`bench_core.interfaces.execution_option` (they change how a run executes or rounds,
    not what it draws); ``versioned=False`` only the version (the run's id across versions)."""
    given = model.model_dump(mode="json")
    if for_seed:
        given = {k: v for k, v in given.items()
                 if k not in comp.params.model_fields
                 or not is_execution_option(comp.params.model_fields[k])}
    required = {k: given[k] for k, f in comp.params.model_fields.items() if f.is_required()}
    try:
        defaults = comp.params.model_validate(required).model_dump(mode="json")
    except ValidationError:
        defaults = {}
    version = getattr(comp, "version", DEFAULT_VERSION)
    tag = ({VERSION_KEY: version} if versioned and not for_seed and version != DEFAULT_VERSION
           else {})
    return {"name": comp.name, **{k: v for k, v in given.items()
                                  if k not in defaults or defaults[k] != v}, **tag}


def run_identity(host: PluginHost, spec: dict[str, Any], versioned: bool = True
                 ) -> dict[str, Any]:
    """:func:`identity` of every component of a resolved run spec (a list field: a list)."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        idents = [identity(*pair, versioned=versioned)
                  for pair in resolve_components(host, key, value)]
        out[key] = idents if isinstance(value, list) else idents[0]
    return out


def component_versions(host: PluginHost, spec: dict[str, Any]) -> dict[str, Any]:
    """``{field: version}`` of a resolved run spec's components (a list field: a list)."""
    out: dict[str, Any] = {}
    for key, value in spec.items():
        found = [getattr(comp, "version", DEFAULT_VERSION)
                 for comp, _ in resolve_components(host, key, value)]
        out[key] = found if isinstance(value, list) else found[0]
    return out


def _canonical_cell(host: PluginHost, raw: dict[str, Any]) -> str:
    """The cell's run spec with each valid component reduced to its :func:`identity` (for the
    seed: without execution options), so defaults written out or added later, ``compile`` or a
    diagnostic do not change the seed; tables that entries complete stay as written."""
    out: dict[str, Any] = {}
    for key, table in raw.items():
        try:
            idents = [identity(*pair, for_seed=True)
                      for pair in resolve_components(host, key, table)]
            out[key] = idents if isinstance(table, list) else idents[0]
        except (SpecError, KeyError):
            out[key] = table
    return canonical_json(out)


MAX_PLAN_RUNS = 100_000
"""Plans larger than this are refused unless asked for (``untied run/validate --yes``): a typo
in a grid can otherwise plan millions of runs."""


def expand(host: PluginHost, name: str, spec: LeaderboardSpec, *, profile: str | None = None,
           seeds: int | None = None, results_dir: str = "", device: str = "cpu",
           max_runs: int | None = MAX_PLAN_RUNS) -> Plan:
    """Expand a leaderboard into validated run tasks (entries x grid cells x seeds).

    Seeds: the run seed is ``derive_seed(base seed, canonical spec of the grid cell)``: it hashes
    the cell's run spec *without* the entry's overrides, so every entry (method) in a cell sees
    the same data split, initialisation stream and batch order for a given base seed (paired
    comparison with the baseline), while different cells and base seeds get independent seeds.
    """
    profile = profile if profile is not None else spec.default_profile
    prof = Profile()
    if profile is not None:
        if profile not in spec.profiles:
            raise SpecError(
                f"--profile '{profile}': not defined; {did_you_mean(profile, spec.profiles)}"
                f"profiles: {', '.join(spec.profiles) or 'none'}"
            )
        prof = spec.profiles[profile]
    defaults = merge(spec.defaults, prof.defaults)
    grid = {**spec.grid, **prof.grid}
    seed_spec = prof.seeds if prof.seeds is not None else spec.seeds
    if seeds is not None:
        if seeds < 1:
            raise SpecError(f"--seeds must be >= 1 (got {seeds})")
        seed_spec = seeds
    seed_list = list(range(seed_spec)) if isinstance(seed_spec, int) else list(seed_spec)
    if not seed_list:
        raise SpecError("seeds: at least one seed is needed")
    entries = [e for e in spec.entries if prof.entries is None or e.label in prof.entries]
    size = len(entries) * len(seed_list)
    for values in grid.values():
        size *= len(values)
    if max_runs is not None and size > max_runs:
        raise SpecError(f"the plan has {size:,} runs, more than {max_runs:,}; check the grid, or "
                        f"pass --yes to expand it anyway")

    keys = list(grid)
    tasks: list[RunTask] = []
    for cell_index, values in enumerate(itertools.product(*(grid[k] for k in keys))):
        cell = dict(zip(keys, values))
        cell_raw = merge(defaults, cell)
        cell_canonical = _canonical_cell(host, cell_raw)
        for entry in entries:
            entry_index = spec.entries.index(entry)
            raw = merge(cell_raw, entry.overrides)
            where = f"entry '{entry.label}'" + (f", cell {canonical_json(cell)}" if cell else "")
            try:
                resolved = resolve_run(host, raw)
            except SpecError as exc:
                raise SpecError(f"{exc} [{where}]") from None
            check_reach(cell, prof.defaults, entry, resolved, profile)
            ref = find_reference(spec, entry.label, cell, spec.metric)
            if prof.referenced_only and ref is None:
                continue
            ident = run_identity(host, resolved)
            unversioned = run_identity(host, resolved, versioned=False)
            versions = component_versions(host, resolved)
            for base in seed_list:
                seed = derive_seed(base, cell_canonical)
                run_id = short_hash({"entry": entry.label, "spec": ident, "seed": seed})
                base_id = (run_id if unversioned == ident else
                           short_hash({"entry": entry.label, "spec": unversioned, "seed": seed}))
                tasks.append(RunTask(
                    leaderboard=name, profile=profile or "default", entry=entry.label,
                    entry_index=entry_index,
                    is_baseline=entry.label == spec.baseline, cell=cell, cell_index=cell_index,
                    seed_index=base,
                    seed=seed, spec=resolved, run_id=run_id, metric=spec.metric,
                    higher_is_better=spec.higher_is_better_for(spec.metric),
                    reference=ref.value if ref else None,
                    reference_std=ref.std if ref else None,
                    results_dir=results_dir, device=device,
                    base_run_id=base_id, versions=versions,
                ))
    if not tasks and prof.referenced_only:
        raise SpecError(f"profile '{profile}': referenced_only, but no entry has a reference "
                        f"value of {spec.metric} in the profile's grid")
    return Plan(spec=spec, name=name, profile=profile or "default", seeds=seed_list, grid=grid,
                tasks=tasks)


def _leaves(table: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """``{(component, parameter): value}`` of a partial run spec (dotted or nested keys); a
    component given as a string names it."""
    out: dict[tuple[str, str], Any] = {}
    for comp, value in unflatten(table).items():
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict):
            for key, leaf in value.items():
                out[(comp, key)] = leaf
    return out


def _same(given: Any, used: Any) -> bool:
    """Whether the value a run used is the value given (numbers by value, tables by the keys
    given)."""
    if isinstance(given, dict) and isinstance(used, dict):
        return all(k in used and _same(v, used[k]) for k, v in given.items())
    if isinstance(given, (list, tuple)) and isinstance(used, (list, tuple)):
        return len(given) == len(used) and all(_same(a, b) for a, b in zip(given, used))
    numbers = (int, float)
    if isinstance(given, numbers) and isinstance(used, numbers) and \
            not isinstance(given, bool) and not isinstance(used, bool):
        return float(given) == float(used)
    return given == used


def check_reach(cell: dict[str, Any], profile_defaults: dict[str, Any], entry: Entry,
                resolved: dict[str, dict[str, Any]], profile: str | None) -> None:
    """Refuse a grid value or profile default that an entry's overrides keep from its runs.

    Overrides are merged after the grid and the profile, and an override that gives a
    component another ``name`` replaces its whole table: a grid axis ``trainer.lr`` then never
    reaches an entry that overrides ``trainer``, and its runs would sit in cells labelled with
    learning rates they did not use. That is an error naming the axis and the entry; so is an
    entry that sets the same parameter itself."""
    overrides = _leaves(entry.overrides)
    replaced = {comp for (comp, key) in overrides if key == "name"}
    given = [("grid axis", k, v) for k, v in _leaves(cell).items()]
    given += [(f"profile '{profile}' default", k, v) for k, v in _leaves(profile_defaults).items()
              if k not in _leaves(cell)]
    for what, (comp, key), value in given:
        used = resolved.get(comp, {}).get(key, None)
        if comp in resolved and key in resolved[comp] and _same(value, used):
            continue
        if (comp, key) in overrides:
            how = f"set {comp}.{key} = {canonical_json(overrides[(comp, key)])} themselves"
        elif comp in replaced:
            how = (f"replace the {comp} table (name = '{resolved.get(comp, {}).get('name')}'), "
                   f"which the {what.split(' ')[0]} set")
        else:
            continue      # no override touches it: the component's own coercion of the value
        shown = "" if key == "name" else f".{key}"
        label = (f"in a cell labelled {canonical_json(value)}" if what == "grid axis"
                 else f"not the profile's {canonical_json(value)}")
        raise SpecError(
            f"{what} {comp}{shown} = {canonical_json(value)} does not reach entry "
            f"'{entry.label}': its overrides {how}, so its runs would use "
            f"{comp}{shown} = {canonical_json(used)}, {label}; drop {comp}.{key} from the "
            f"entry's overrides, or restrict the profile's entries")


def find_reference(spec: LeaderboardSpec, entry: str, cell: dict[str, Any], metric: str
                   ) -> Reference | None:
    """The first reference of ``spec`` that matches (``Reference.matches``)."""
    return next((r for r in spec.reference if r.matches(entry, cell, metric, spec.metric)), None)


def json_schema(host: PluginHost | None = None) -> dict[str, Any]:
    """JSON Schema of a leaderboard spec, with each registered component's parameters under
    ``$defs`` (``<family>.<name>``) so editors can complete component tables."""
    schema = LeaderboardSpec.model_json_schema()
    if host is not None:
        defs = schema.setdefault("$defs", {})
        for fieldname, family in COMPONENT_FIELDS.items():
            variants = []
            for cname, comp in sorted(host.family(family).items()):
                sub = comp.params.model_json_schema()
                sub.setdefault("properties", {})["name"] = {"const": cname}
                sub["required"] = ["name", *sub.get("required", [])]
                sub["description"] = comp.description
                sub["additionalProperties"] = False
                for k, v in sub.pop("$defs", {}).items():
                    defs[k] = v
                defs[f"{family}.{cname}"] = sub
                variants.append({"$ref": f"#/$defs/{family}.{cname}"})
            defs[f"component.{fieldname}"] = {"oneOf": variants}
        defs["RunSpec"] = {
            "type": "object",
            "properties": {f: ({"oneOf": [{"$ref": f"#/$defs/component.{f}"},
                                          {"type": "array", "minItems": 1,
                                           "items": {"$ref": f"#/$defs/component.{f}"}}]}
                               if f in LIST_FIELDS else {"$ref": f"#/$defs/component.{f}"})
                           for f in COMPONENT_FIELDS},
            "additionalProperties": False,
        }
        schema["properties"]["defaults"]["description"] = (
            "partial run spec; full runs follow #/$defs/RunSpec"
        )
    return schema
