"""The leaderboard spec (TOML, pydantic v2): its model, loading and merging. Imports no torch, so
that validating a spec or printing its schema stays light; the expansion into runs is
:mod:`bench_core.specs.plan`.

Leaderboard specs (TOML, pydantic v2) and their expansion into validated runs.

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
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bench_core.errors import SpecError
from bench_core.plugins import PluginHost, did_you_mean
from bench_core.specs.metrics import default_direction, is_time_to_target

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
    select_values: list[Any] | None = Field(
        None, description="this entry's own candidates for the spec's `select.parameter` "
                          "(e.g. another optimiser's rates); one value fixes it")
    select_parameter: str | None = Field(
        None, pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$",
        description="the parameter this entry chooses instead of the spec's "
                    "`select.parameter`, where its rate lives elsewhere (`rule.lr` for an entry "
                    "trained by an update rule where the spec chooses `trainer.lr`; a rule "
                    "nested in its rule: `rule.base.lr`); its candidates: `select_values`, else "
                    "the spec's")


class Select(_Strict):
    """Choose one parameter's value per entry and grid cell on a validation split, before the
    runs the table shows (:mod:`bench_core.results.selection`).

    For every entry, cell and candidate in ``values``, ``seeds`` selection runs train on the
    run's training split less a held-out ``validation_fraction`` of it and are evaluated on that
    held-out part (the test split is never used); the candidate with the best mean of
    ``metric`` there (by the metric's direction; a candidate with more failed or diverged
    seeds always ranks below one with fewer; ties go to the first listed) is the value the
    entry's runs in that cell then train with, on the whole training split, as usual.

    ``metric`` may list several metrics of one direction: each selection run then scores the
    worst of them (the largest loss, the smallest accuracy; those a run does not report are
    left out), so a method that reports several predictions (one per block, say) is chosen
    where none of them is bad, not where their average looks good."""

    parameter: str = Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$",
                           description="the parameter to choose, as a grid axis names it "
                                       "(`rule.lr`, `trainer.lr`; nested: `rule.base.lr`); "
                                       "an entry may name its own (`select_parameter`)")
    values: list[Any] = Field(min_length=1, description="the candidates, in order of preference "
                                                         "on ties")
    metric: str | list[str] | None = Field(
        None, description="a metric the trainer reports for its test split (`test_loss`; "
                          "`validation_loss` alike), measured on the validation split; a list "
                          "of metrics of one direction: the worst of them per run; default: "
                          "the spec's metric")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="share of each run's "
                                       "training split held out for validation")
    seeds: int = Field(1, ge=1, description="selection runs per candidate (their own seeds, "
                                            "not the table's)")
    enabled: bool = Field(True, description="false: a profile that runs the spec's default "
                                            "value of the parameter instead")

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        check_axis("select.values", values)
        return values

    @field_validator("metric")
    @classmethod
    def _metrics(cls, metric: str | list[str] | None) -> str | list[str] | None:
        if isinstance(metric, list):
            if not metric:
                raise ValueError("an empty list (name one metric or several)")
            check_axis("select.metric", metric)
        return metric

    @property
    def metrics(self) -> list[str]:
        """``metric`` as a list (empty when unset: the spec's metric is meant)."""
        if self.metric is None:
            return []
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)


class Pair(_Strict):
    """An (entry, grid cell) pair of a profile's ``pairs``: ``cell`` names the axes it needs;
    others match any value (as a reference's ``cell`` does)."""

    entry: str
    cell: dict[str, Any] = Field(default_factory=dict)

    def matches(self, entry: str, cell: dict[str, Any]) -> bool:
        return self.entry == entry and all(
            k in cell and canonical_json(cell[k]) == canonical_json(v) for k, v in self.cell.items())


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
    pairs: list[Pair] | None = Field(
        None, description="run only these (entry, grid cell) pairs: a check that needs a few "
                          "pairs of a grid, not its every combination")
    select: dict[str, Any] | None = Field(
        None, description="merged over the spec's `select` (e.g. other candidates, more seeds, "
                          "or enabled = false)")


class Tolerance(_Strict):
    """When a value reproduces its reference (:mod:`bench_core.results.verdicts`), in displayed units
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
        "bench_core.specs.metrics.default_direction); `direction` sets any metric's")
    direction: dict[str, Literal["higher", "lower"]] = Field(
        default_factory=dict, description="per metric name, whether higher or lower values are "
        "better (ranks, arrows, gains); a metric not named here follows its name's convention "
        "(loss, error, mse, seconds, time, ... lower; others higher)")
    divergence: Divergence = Field(default_factory=Divergence,
                                   description="when a finished run counts as diverged")
    defaults: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    select: Select | None = Field(None, description="a parameter chosen per entry and grid cell "
                                  "on a validation split before the table's runs")
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
            for i, pair in enumerate(prof.pairs or []):
                if pair.entry not in labels:
                    raise ValueError(f"profiles.{name}.pairs[{i}].entry: '{pair.entry}' is not "
                                     f"an entry label; {did_you_mean(pair.entry, labels)}")
        for name, prof in [(None, None), *self.profiles.items()]:
            chosen = self.select_for(name)
            where = "select" if name is None else f"profiles.{name}.select"
            if chosen is None:
                for field_name in ("select_values", "select_parameter"):
                    if name is None and any(getattr(e, field_name) is not None
                                            for e in self.entries):
                        raise ValueError(f"an entry sets {field_name}, but the spec has no "
                                         f"`select`")
                continue
            grids = {**self.grid, **(prof.grid if prof is not None else {})}
            for param, at in [(chosen.parameter, f"{where}.parameter"),
                              *((e.select_parameter, f"entry '{e.label}' select_parameter")
                                for e in self.entries if e.select_parameter is not None)]:
                if param in grids:
                    raise ValueError(f"{at} '{param}' is also a grid axis: a parameter is "
                                     f"either chosen or varied, not both")
        for entry in self.entries:
            if entry.select_values is not None:
                check_axis(f"entry '{entry.label}' select_values", entry.select_values)
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

    def select_for(self, profile: str | None) -> Select | None:
        """The selection a profile runs (the spec's, with the profile's `select` merged over
        it); None when there is none or it is disabled."""
        given = self.select.model_dump() if self.select is not None else None
        prof = self.profiles.get(profile) if profile is not None else None
        if prof is not None and prof.select is not None:
            given = {**(given or {}), **prof.select}
        if given is None:
            return None
        try:
            chosen = Select.model_validate(given)
        except ValidationError as exc:
            where = f"profiles.{profile}.select" if prof is not None and prof.select else "select"
            raise ValueError(f"{where}: {format_validation_error(exc)}") from None
        return chosen if chosen.enabled else None

    def direction_of(self, metric: str) -> str:
        """``higher`` or ``lower``: the spec's word for ``metric``, else its name's convention
        (:func:`bench_core.specs.metrics.default_direction`)."""
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
