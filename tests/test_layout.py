"""The layout keeps its promises: run ids survive the moves, the host imports no plugin, plugins
import no other plugin's private names, no module imports itself back through others, and the
spec model loads without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO

BOARDS = REPO / "leaderboards"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts[0] = "untied_plugins"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for root in ("bench_core", "plugins")
            for p in (REPO / root).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import of a project module in ``path`` (any depth)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            # "from package import module" imports the module
            for name in names:
                if f"{node.module}.{name}" in modules:
                    out.append((f"{node.module}.{name}", []))
            out.append((node.module, [n for n in names if f"{node.module}.{n}" not in modules]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return [(m, n) for m, n in out if m in modules]


@pytest.mark.parametrize("records", sorted(BOARDS.glob("*/*.parquet")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_records_keep_their_run_ids(records, untied_host):
    from bench_core.specs.model import load_spec
    from bench_core.specs.plan import expand

    name, spec = load_spec(BOARDS / f"{records.parent.name}.toml")
    profile = records.name.split(".")[0]
    from bench_core.results.selection import resolve

    plan = expand(untied_host, name, spec, profile=None if profile == "default" else profile)
    plan = resolve(plan, pl.scan_parquet(records))  # a spec that selects: its chosen final runs
    recorded = set(pl.read_parquet(records, columns=["run_id"])["run_id"].to_list())
    assert recorded <= {t.run_id for t in plan.all_tasks}  # selection runs too


def test_the_host_imports_no_plugin_and_plugins_no_private_names_of_another():
    modules = sources()
    for module, path in modules.items():
        for imported, names in imports_of(path, modules):
            if module.startswith("bench_core"):
                assert not imported.startswith("untied_plugins"), (module, imported)
                continue
            origin = module.split(".")[1] if module.count(".") else module
            other = imported.split(".")[1] if imported.startswith("untied_plugins.") else None
            if other is not None and other != origin:
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{module} imports private {private} of {imported}"


def test_no_import_circles():
    modules = sources()
    graph = {m: {i for i, _ in imports_of(p, modules) if i != m} for m, p in modules.items()}
    # a package's __init__ may import its own modules: that is how it registers them
    for m in graph:
        graph[m] = {i for i in graph[m] if not i.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_spec_model_imports_no_torch():
    code = ("import sys; import bench_core.specs.model as m; "
            "m.load_spec('quickstart'); assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_each_component_table_is_validated_once_per_plan(untied_host):
    """A grid of 5 cells x 3 entries x 4 seeds repeats one rule table 60 times: it is validated
    once (the expansion caches each distinct table's validation and identity)."""
    from collections import Counter
    from types import SimpleNamespace

    from pydantic import BaseModel, ConfigDict, model_validator

    import judgement_plugin
    from bench_core.hookspecs import hookimpl
    from bench_core.specs.model import parse_spec
    from bench_core.specs.plan import expand

    seen: Counter = Counter()

    class Counted(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lr: float = 0.1

        @model_validator(mode="after")
        def _count(self):
            seen[self.lr] += 1
            return self

    untied_host.add_plugin(judgement_plugin, "judgement")
    untied_host.add_plugin(SimpleNamespace(register_update_rules=hookimpl(
        lambda register: register("counted", lambda p, *, model, ctx: None, params=Counted,
                                  description="counts its validations"))), "counting")
    spec = {**judgement_plugin.SPEC, "seeds": 4,
            "grid": {"trainer.accuracy": [0.1, 0.2, 0.3, 0.4, 0.5]},
            "entries": [{"label": "a"}, {"label": "b", "overrides": {"trainer": {"seconds": 1.0}}},
                        {"label": "c", "overrides": {"trainer": {"seconds": 3.0}}}],
            "baseline": "a"}
    spec["defaults"] = {**spec["defaults"], "rule": {"name": "counted", "lr": 0.2}}
    name, parsed = parse_spec(spec, stem="counted")
    plan = expand(untied_host, name, parsed)
    assert len(plan.tasks) == 60 and seen[0.2] == 1


DOCUMENTS = ["README.md", "CONTRIBUTING.md", "leaderboards/README.md", "leaderboards/*/*.md",
             "docs/methods/*.md", "examples/*/README.md"]


def test_every_document_link_resolves_inside_the_repository():
    """A user has the repository and nothing beside it: every relative link of the README,
    CONTRIBUTING, the committed tables and the method pages points at a file of the
    repository, and no document, spec or docstring sends the reader to ../shared."""
    import re

    missing = []
    for pattern in DOCUMENTS:
        for doc in REPO.glob(pattern):
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
                if target.startswith(("http://", "https://", "mailto:")):
                    continue
                if not (doc.parent / target).resolve().exists():
                    missing.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not missing, missing
    outside = []
    for root in ("README.md", "CONTRIBUTING.md", "leaderboards", "docs/methods", "bench_core",
                 "plugins", "examples", "benchmarks", "scripts"):
        for path in ([REPO / root] if (REPO / root).is_file() else (REPO / root).rglob("*")):
            if path.is_file() and path.suffix in (".md", ".toml", ".py"):
                text = path.read_text(errors="replace")
                if "../shared" in text or "METHODS.md" in text:
                    outside.append(str(path.relative_to(REPO)))
    assert not outside, outside


def test_where_the_data_come_from_changes_no_run_id(untied_host, tmp_path):
    """``root`` and ``download`` are location options: a spec that downloads its MNIST, or reads
    it from a folder of its own, plans the runs of the committed records."""
    from bench_core.specs.model import load_spec, parse_spec
    from bench_core.specs.plan import expand

    name, spec = load_spec(BOARDS / "troiano-lenet5-relu.toml")
    raw = spec.model_dump(mode="json", exclude_none=True)
    plain = expand(untied_host, name, spec, profile="cpu")
    raw["defaults"]["dataset"] = {**raw["defaults"]["dataset"], "download": True,
                                  "root": str(tmp_path)}
    _, moved = parse_spec(raw, stem=name)
    located = expand(untied_host, name, moved, profile="cpu")
    assert [t.run_id for t in located.tasks] == [t.run_id for t in plain.tasks]
    assert [t.seed for t in located.tasks] == [t.seed for t in plain.tasks]
    assert located.tasks[0].spec["dataset"]["download"] is True     # the record still says so
