"""A leaderboard spec expanded into validated runs: each component resolved against the plugin
that registered it, run identities and seeds, grid axes that must reach every entry.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import itertools
import sys
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from bench_core.errors import PluginError, SpecError
from bench_core.interfaces import (
    derive_seed,
    is_execution_option,
    is_location_option,
    value_revision,
)
from bench_core.plugins import Component, PluginHost, did_you_mean
from bench_core.specs.model import (
    COMPONENT_FIELDS,
    LIST_FIELDS,
    REQUIRED_FIELDS,
    Entry,
    LeaderboardSpec,
    Profile,
    canonical_json,
    find_reference,
    format_validation_error,
    merge,
    short_hash,
    unflatten,
)

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass


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
    stage: str = "final"
    """``"final"``: a run the table shows; ``"selection"``: a run that chooses a parameter's
    value on a validation split (:class:`~bench_core.specs.model.Select`)."""
    validation_fraction: float | None = None
    """A selection run's held-out share of the training split (its test split then)."""
    selected: dict[str, Any] | None = None
    """A final run's parameter value chosen by selection (``{"rule.lr": 0.02}``)."""


@dataclass
class SelectionStage:
    """The selection runs of a plan (:class:`~bench_core.specs.model.Select`) and how each
    (entry, cell) pair's final runs are made once its value is chosen."""

    select: Any
    tasks: list[RunTask]
    candidates: dict[tuple[str, int], list[Any]]
    """The candidates of each (entry, cell index) pair, in order."""
    builders: dict[tuple[str, int], Any] = field(repr=False, default_factory=dict)
    """(entry, cell index) -> a function of the chosen value that gives the pair's final runs."""
    choices: dict[tuple[str, int], Any] = field(default_factory=dict)
    """The value chosen for each pair whose selection is complete (:func:`finalize`)."""
    parameters: dict[str, str] = field(default_factory=dict)
    """entry label -> the parameter it chooses (its ``select_parameter``, else the spec's)."""

    def parameter_of(self, entry: str) -> str:
        """The parameter an entry's selection chooses."""
        return self.parameters.get(entry, self.select.parameter)

    @property
    def metrics(self) -> list[str]:
        """The selection metrics as selection records name them (``validation_*``)."""
        return [validation_name(m) for m in self.select.metrics]

    def label(self, quoted: bool = True) -> str:
        """How a table names the score: `` `validation_loss` `` or the worst of several."""
        names = [f"`{m}`" if quoted else m for m in self.metrics]
        if len(names) == 1:
            return names[0]
        return f"worst of {', '.join(names[:-1])} and {names[-1]}"


def validation_name(metric: str) -> str:
    """``test_loss`` -> ``validation_loss``: a selection run's test split is its validation
    split, and its records say so."""
    return "validation_" + metric[len("test_"):] if metric.startswith("test_") else metric


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
    selection: SelectionStage | None = None
    """Where the spec chooses a parameter on a validation split: its selection runs; then
    ``tasks`` holds the final runs of the pairs whose choice is made (:func:`finalize`)."""

    @property
    def all_tasks(self) -> list[RunTask]:
        """Selection runs, then final runs: every run whose records belong to the plan."""
        return [*(self.selection.tasks if self.selection else []), *self.tasks]

    @property
    def comparable(self) -> bool:
        """Whether this plan's runs follow the source's protocol (its profile says so, or the
        spec for runs without a profile): only then do its cells get verdicts."""
        prof = self.spec.profiles.get(self.profile)
        return prof.comparable if prof is not None else self.spec.comparable


# ---- validation against plugins -----------------------------------------------------------
_RESOLVED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("resolved", default=None)
"""While a plan is expanded (:func:`resolving_once`): each distinct component table's validation
and identity, so that a table shared by every cell of a grid is validated once per plan."""


@contextlib.contextmanager
def resolving_once():
    """Validate each distinct component table once within this block (plan expansion: a grid
    of many cells repeats the same tables in every cell, entry and seed)."""
    token = _RESOLVED.set({})
    try:
        yield
    finally:
        _RESOLVED.reset(token)


def resolve_component(host: PluginHost, fieldname: str, table: Any
                      ) -> tuple[Component, BaseModel]:
    """Validate one component table; errors name the field path, value and choices. Inside
    :func:`resolving_once` a table validated before is not validated again."""
    cache = _RESOLVED.get()
    if cache is None:
        return _resolve_component(host, fieldname, table)
    key = ("resolve", fieldname, canonical_json(table))
    if key not in cache:
        try:
            cache[key] = _resolve_component(host, fieldname, table)
        except SpecError as exc:
            cache[key] = exc
    found = cache[key]
    if isinstance(found, SpecError):
        raise SpecError(str(found)) from None
    return found


def _resolve_component(host: PluginHost, fieldname: str, table: Any
                       ) -> tuple[Component, BaseModel]:
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
REVISION_KEY = "@revised"
"""Where the revisions of the parameter values a run uses enter its identity
(:func:`bench_core.interfaces.revised_option`)."""


def identity(comp: Component, model: BaseModel, *, for_seed: bool = False,
             versioned: bool = True) -> dict[str, Any]:
    """A component table as it identifies a run: its name and the parameters that differ from
    their defaults, and its version (:attr:`bench_core.plugins.Component.version`) when it is
    not ``"1"``, and the revision of any parameter value declared with
    :func:`bench_core.interfaces.revised_option`. Writing a default out, or a plugin adding a
    parameter with a default, then changes neither a run's seed nor its run id (the record
    still holds every parameter); bumping a version or a value's revision changes the run id,
    so records of the old numerics are never taken for the new ones. ``for_seed`` also leaves
    out the version, the revisions and the parameters declared with
    :func:`bench_core.interfaces.execution_option` (they change how a run executes or rounds,
    not what it draws); ``versioned=False`` only the version and the revisions (the run's id
    across versions)."""
    cache = _RESOLVED.get()
    key = ("identity", comp.family, comp.name, canonical_json(model.model_dump(mode="json")),
           for_seed, versioned)
    if cache is not None and key in cache:
        return dict(cache[key])
    out = _identity(comp, model, for_seed=for_seed, versioned=versioned)
    if cache is not None:
        cache[key] = out
    return dict(out)


def _identity(comp: Component, model: BaseModel, *, for_seed: bool, versioned: bool
              ) -> dict[str, Any]:
    given = model.model_dump(mode="json")
    fields = comp.params.model_fields
    given = {k: v for k, v in given.items() if k not in fields or not is_location_option(fields[k])}
    if for_seed:
        given = {k: v for k, v in given.items()
                 if k not in fields or not is_execution_option(fields[k])}
    required = {k: given[k] for k, f in comp.params.model_fields.items() if f.is_required()}
    try:
        defaults = comp.params.model_validate(required).model_dump(mode="json")
    except ValidationError:
        defaults = {}
    version = getattr(comp, "version", DEFAULT_VERSION)
    tag = ({VERSION_KEY: version} if versioned and not for_seed and version != DEFAULT_VERSION
           else {})
    if versioned and not for_seed:
        revised = {k: rev for k, f in fields.items() if k in given
                   and (rev := value_revision(f, given[k])) is not None}
        if revised:
            tag[REVISION_KEY] = revised
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


def expand(host: PluginHost, name: str, spec: LeaderboardSpec, **options: Any) -> Plan:
    """Expand a leaderboard into validated run tasks (:func:`_expand`), validating each distinct
    component table once (:func:`resolving_once`)."""
    with resolving_once():
        return _expand(host, name, spec, **options)


def _expand(host: PluginHost, name: str, spec: LeaderboardSpec, *, profile: str | None = None,
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

    select = spec.select_for(profile)
    if select is not None:
        metrics = ["test_" + m[len("validation_"):] if m.startswith("validation_") else m
                   for m in (select.metrics or [spec.metric])]
        directions = {m: spec.direction_of(m) for m in metrics}
        if len(set(directions.values())) > 1:
            raise SpecError("select.metric: the worst of several metrics needs one direction; "
                            + ", ".join(f"{m} is {d} is better" for m, d in directions.items()))
        select = select.model_copy(update={"metric": metrics[0] if len(metrics) == 1
                                           else metrics})
        size *= 1 + len(select.values) * select.seeds

    def make_tasks(entry: Entry, entry_index: int, cell: dict[str, Any], cell_index: int,
                   resolved: dict[str, Any], seeds: list[tuple[int, int]], ref: Any,
                   **stage: Any) -> list[RunTask]:
        ident = run_identity(host, resolved)
        unversioned = run_identity(host, resolved, versioned=False)
        versions = component_versions(host, resolved)
        marker = ({"select": {"validation_fraction": stage["validation_fraction"]}}
                  if stage.get("stage") == "selection" else {})
        out = []
        for base, seed in seeds:
            run_id = short_hash({"entry": entry.label, "spec": ident, "seed": seed, **marker})
            base_id = (run_id if unversioned == ident else short_hash(
                {"entry": entry.label, "spec": unversioned, "seed": seed, **marker}))
            metric = (validation_name(select.metrics[0]) if stage.get("stage") == "selection"
                      else spec.metric)
            out.append(RunTask(
                leaderboard=name, profile=profile or "default", entry=entry.label,
                entry_index=entry_index,
                is_baseline=entry.label == spec.baseline, cell=cell, cell_index=cell_index,
                seed_index=base,
                seed=seed, spec=resolved, run_id=run_id, metric=metric,
                higher_is_better=spec.higher_is_better_for(
                    select.metrics[0] if stage.get("stage") == "selection" else spec.metric),
                reference=ref.value if ref else None,
                reference_std=ref.std if ref else None,
                results_dir=results_dir, device=device,
                base_run_id=base_id, versions=versions, **stage,
            ))
        return out

    keys = list(grid)
    tasks: list[RunTask] = []
    stage = (SelectionStage(select=select, tasks=[], candidates={})
             if select is not None else None)
    for cell_index, values in enumerate(itertools.product(*(grid[k] for k in keys))):
        cell = dict(zip(keys, values))
        cell_raw = merge(defaults, cell)
        cell_canonical = _canonical_cell(host, cell_raw)
        for entry in entries:
            entry_index = spec.entries.index(entry)
            raw = reapply(cell, prof.defaults, entry, merge(cell_raw, entry.overrides))
            where = f"entry '{entry.label}'" + (f", cell {canonical_json(cell)}" if cell else "")
            try:
                resolved = resolve_run(host, raw)
            except SpecError as exc:
                raise SpecError(f"{exc} [{where}]") from None
            check_reach(cell, prof.defaults, entry, resolved, profile)
            ref = find_reference(spec, entry.label, cell, spec.metric)
            if prof.referenced_only and ref is None:
                continue
            if prof.pairs is not None and not any(pair.matches(entry.label, cell)
                                                  for pair in prof.pairs):
                continue
            final_seeds = [(base, derive_seed(base, cell_canonical)) for base in seed_list]
            if stage is None:
                tasks += make_tasks(entry, entry_index, cell, cell_index, resolved,
                                    final_seeds, ref)
                continue
            param = entry.select_parameter or select.parameter
            named = "select_parameter" if entry.select_parameter else "select.parameter"
            stage.parameters[entry.label] = param
            candidates = (entry.select_values if entry.select_values is not None
                          else select.values)
            key = (entry.label, cell_index)
            stage.candidates[key] = list(candidates)
            with_value = {}
            for value in candidates:
                raw_v = merge(_as_tables(raw), {param: value})
                try:
                    resolved_v = resolve_run(host, raw_v)
                except SpecError as exc:
                    raise SpecError(f"{exc} [{where}, {named} {param} = "
                                    f"{canonical_json(value)}]") from None
                *path, field_name = param.split(".")
                node = resolved_v
                for part in path:
                    node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, dict) or not _same(value, node.get(field_name)):
                    raise SpecError(f"{named} {param} = {canonical_json(value)} does "
                                    f"not reach entry '{entry.label}' (its {'.'.join(path)} has "
                                    f"no parameter {field_name}) [{where}]")
                with_value[canonical_json(value)] = resolved_v
                if len(candidates) > 1:
                    sel_seeds = [(s, derive_seed(f"select-{s}", cell_canonical))
                                 for s in range(select.seeds)]
                    stage.tasks += make_tasks(
                        entry, entry_index, {**cell, param: value}, cell_index, resolved_v,
                        sel_seeds, None, stage="selection",
                        validation_fraction=select.validation_fraction)

            def builder(value: Any, *, _e=entry, _ei=entry_index, _c=cell, _ci=cell_index,
                        _r=with_value, _s=final_seeds, _ref=ref, _p=param) -> list[RunTask]:
                return make_tasks(_e, _ei, _c, _ci, _r[canonical_json(value)], _s, _ref,
                                  selected={_p: value})

            stage.builders[key] = builder
            if len(candidates) == 1:           # nothing to choose: the entry's fixed value
                stage.choices[key] = candidates[0]
    planned = bool(tasks) or (stage is not None and bool(stage.builders))
    if not planned and prof.referenced_only:
        raise SpecError(f"profile '{profile}': referenced_only, but no entry has a reference "
                        f"value of {spec.metric} in the profile's grid")
    if not planned and prof.pairs is not None:
        raise SpecError(f"profile '{profile}': none of its pairs is an (entry, cell) of its grid")
    plan = Plan(spec=spec, name=name, profile=profile or "default", seeds=seed_list, grid=grid,
                tasks=tasks, selection=stage)
    if stage is not None:
        finalize(plan, stage.choices)
    return plan


def _as_tables(raw: dict[str, Any]) -> dict[str, Any]:
    """A run spec whose components given by name alone (``rule = "sgd"``) are tables."""
    return {k: {"name": v} if isinstance(v, str) and k in COMPONENT_FIELDS else v
            for k, v in raw.items()}


def finalize(plan: Plan, choices: dict[tuple[str, int], Any]) -> Plan:
    """Set the value chosen for each (entry, cell index) pair in ``choices`` and make
    ``plan.tasks`` the final runs of every pair chosen so far, in the table's order (cells,
    then entries); pairs still being selected have none yet."""
    stage = plan.selection
    if stage is None:
        return plan
    stage.choices.update(choices)
    tasks = []
    for key, build in stage.builders.items():
        if key in stage.choices:
            tasks += build(stage.choices[key])
    plan.tasks = tasks
    return plan


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


def reapply(cell: dict[str, Any], profile_defaults: dict[str, Any], entry: Entry,
            raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (the cell's run spec merged with the entry's overrides) with the grid values and
    profile defaults put back into a component the overrides replaced (another ``name``), so
    that they reach the entry's own component: a grid axis ``surrogate.scale`` applies to
    every entry's own surrogate, whichever it names. Only parameters the entry does not set
    itself; a value the replacing component has no parameter for is then a clear validation error."""
    overrides = _leaves(entry.overrides)
    replaced = {comp for (comp, key) in overrides if key == "name"}
    if not replaced:
        return raw
    cell_leaves = _leaves(cell)
    given = {**{k: v for k, v in _leaves(profile_defaults).items() if k not in cell_leaves},
             **cell_leaves}
    out = copy.deepcopy(raw)
    for (comp, key), value in given.items():
        if comp in replaced and key != "name" and (comp, key) not in overrides \
                and isinstance(out.get(comp), dict):
            out[comp][key] = copy.deepcopy(value)
    return out


def check_reach(cell: dict[str, Any], profile_defaults: dict[str, Any], entry: Entry,
                resolved: dict[str, dict[str, Any]], profile: str | None) -> None:
    """Refuse a grid value or profile default that an entry's overrides keep from its runs.

    Overrides are merged after the grid and the profile. An override that gives a component
    another ``name`` replaces its whole table, and :func:`reapply` puts the grid's and the
    profile's values back into it. An entry that sets the same parameter itself, or names
    another component where the grid names one, would keep the cell's value from its runs,
    which would sit in cells labelled with values they did not use: that is an error naming
    the axis and the entry."""
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
