"""The judgement rules of bench_core, each with the toy plugin ``judgement_plugin`` (no built-in
method): divergence judged from a run's curve, a direction per metric, a time to target as a
censored median, grid axes that must reach every entry, bad files named by every command that
reads records, and one count of recorded runs for a table's header and the report's index."""

from __future__ import annotations

import copy
import re

import judgement_plugin
import polars as pl
import pytest
import tomli_w
from judgement_plugin import SPEC

from bench_core.execution.runner import run_plan
from bench_core.results.leaderboard import aggregate, display_rows, overlay_plan
from bench_core.results.records import record_files, write_record
from bench_core.results.tables import plan_report
from bench_core.specs.model import parse_spec
from bench_core.specs.plan import expand


@pytest.fixture
def host(untied_host):
    untied_host.add_plugin(judgement_plugin, "judgement")
    return untied_host


def plan_of(host, spec, **kw):
    name, parsed = parse_spec(spec, stem="judge")
    return expand(host, name, parsed, **kw)


def run(host, spec, folder, **kw):
    plan = plan_of(host, spec, **kw)
    run_plan(plan, folder, host=host, progress=False)
    return plan


def by_entry(agg: pl.DataFrame, metric: str | None = None) -> dict[str, dict]:
    if metric is not None:
        agg = agg.filter(pl.col("metric") == metric)
    return {r["entry"]: r for r in agg.iter_rows(named=True)}


# ---- divergence beyond NaN -------------------------------------------------------------------
def test_a_finite_loss_explosion_is_diverged_when_records_are_aggregated(host, tmp_path):
    plan = run(host, SPEC, tmp_path)
    folder = tmp_path / "judge"
    on_disk = pl.concat([pl.read_parquet(p) for p in record_files(folder)],
                        how="diagonal_relaxed")
    assert set(on_disk["status"]) == {"ok"}        # every number was finite: the runner saw no NaN
    report = plan_report(plan, folder)
    rows = by_entry(report.agg)
    assert (rows["boom"]["diverged"], rows["calm"]["diverged"]) == (2, 0)
    assert rows["boom"]["n"] == 2 and rows["boom"]["mean"] == pytest.approx(0.1)  # last metrics
    note = next(n for n in report.notes if n.startswith("Divergence"))
    assert "exceeds 100 x its first logged value" in note and "Diverged runs (2)" in note
    runs = overlay_plan(pl.scan_parquet(record_files(folder)), plan.tasks, spec=plan.spec)
    boom = runs.filter(pl.col("entry") == "boom").collect()
    assert set(boom["status"]) == {"diverged"}
    assert boom["error"][0].startswith("train_loss reached 1.1e+23 at epoch 3, over 100 x")
    excluded = plan_report(plan, folder, include_diverged=False)
    assert by_entry(excluded.agg)["boom"]["n"] == 0
    # the factor is the spec's, applied to the same records (same run ids: nothing reruns)
    loose = copy.deepcopy(SPEC)
    loose["divergence"] = {"factor": 1e30}
    loose_plan = plan_of(host, loose)
    assert [t.run_id for t in loose_plan.tasks] == [t.run_id for t in plan.tasks]
    assert by_entry(plan_report(loose_plan, folder).agg)["boom"]["diverged"] == 0
    with pytest.raises(Exception, match="divergence.factor"):
        parse_spec({**SPEC, "divergence": {"factor": 0.5}})


def test_a_non_finite_value_in_a_recorded_curve_is_diverged(tmp_path):
    from bench_core.results.divergence import judge_divergence

    lf = pl.LazyFrame({"run_id": ["a", "b", "c"], "status": ["ok", "ok", "failed"],
                       "curve_epoch": [[1.0, 2.0]] * 3,
                       "curve_train_loss": [[1.0, float("inf")], [0.0, 5.0], [1.0, 1e9]]})
    out = judge_divergence(lf).collect()
    # a, not finite; b, a first loss of 0 has no ratio; c keeps its own status
    assert out["status"].to_list() == ["diverged", "ok", "failed"]
    assert out["error"][0] == "train_loss is not finite at epoch 2 (judged from the curve)"
    assert judge_divergence(lf.drop("curve_train_loss")).collect()["status"].to_list() == [
        "ok", "ok", "failed"]


# ---- a direction per metric ------------------------------------------------------------------
def test_every_metric_ranks_and_points_by_its_own_direction(host, tmp_path):
    spec = copy.deepcopy(SPEC)
    spec["metrics"] = ["train_seconds", "test_loss"]
    spec["divergence"] = {"factor": None}
    plan = run(host, spec, tmp_path)
    report = plan_report(plan, tmp_path / "judge")
    acc, seconds, loss = (by_entry(report.agg, m) for m in (
        "test_accuracy", "train_seconds", "test_loss"))
    assert (acc["calm"]["rank"], acc["boom"]["rank"]) == (1, 2)
    # boom took 0.5 s, calm 2 s: lower is better for seconds and for a loss, by their names
    assert (seconds["boom"]["rank"], seconds["calm"]["rank"]) == (1, 2)
    assert seconds["boom"]["gain_pct"] == pytest.approx(75.0)     # positive = better
    assert (loss["calm"]["rank"], loss["boom"]["rank"]) == (1, 2)
    text = report.render("markdown")
    assert "train_seconds ↓" in text and "test_accuracy ↑" in text and "test_loss ↓" in text
    assert "`train_seconds` (lower is better)" in text
    # a spec's word wins over the name's convention
    spec["direction"] = {"train_seconds": "higher"}
    again = plan_report(plan_of(host, spec), tmp_path / "judge")
    assert by_entry(again.agg, "train_seconds")["calm"]["rank"] == 1
    with pytest.raises(Exception, match="disagree"):
        parse_spec({**SPEC, "higher_is_better": False, "direction": {"test_accuracy": "higher"}})


def test_direction_and_range_conventions_by_name():
    from bench_core.specs.metrics import default_direction, value_range

    assert [default_direction(m) for m in ("test_accuracy", "test_mse", "train_seconds",
                                           "steps_to_target", "noisy_test_loss",
                                           "direction_cosine")] == [
        "higher", "lower", "lower", "lower", "lower", "higher"]
    assert value_range("test_accuracy") == (0.0, 1.0)
    assert value_range("train_loss") == (0.0, None) and value_range("cos/1") == (-1.0, 1.0)
    assert value_range("gain") == (None, None)


# ---- time to target: censored median and share reached ---------------------------------------
def _target_records(rows: dict[str, tuple[list, list]]) -> pl.LazyFrame:
    out = []
    for entry, (steps, budgets) in rows.items():
        for i, (s, b) in enumerate(zip(steps, budgets)):
            out.append({"leaderboard": "t", "profile": "p", "cell_json": "{}", "entry": entry,
                        "status": "ok", "value": 0.5, "reference": None, "reference_std": None,
                        "wall_time_s": 1.0, "is_baseline": entry == "A", "metric": "acc",
                        "higher_is_better": True, "entry_index": 0, "cell_index": 0,
                        "m_steps_to_target": s, "m_steps_trained": b, "run_id": f"{entry}{i}"})
    return pl.LazyFrame(out, schema_overrides={"m_steps_to_target": pl.Float64,
                                               "m_steps_trained": pl.Float64,
                                               "reference": pl.Float64,
                                               "reference_std": pl.Float64})


def test_time_to_target_is_a_censored_median_with_the_share_reached():
    records = _target_records({
        "A": ([10, 20, None, None, None], [100] * 5),   # mean of the survivors: 15
        "B": ([10, 20, 30, None, None], [100] * 5),
        "C": ([10, 20, None, None], [100] * 4),         # even: (20 + 100) / 2 at least
        "D": ([None, None, 5], [None] * 3),             # the budget was not recorded
    })
    agg = aggregate(records, ["steps_to_target"])
    rows = by_entry(agg)
    assert rows["A"]["steps_to_target"] == 100 and rows["A"]["steps_to_target_censored"]
    assert (rows["A"]["steps_to_target_reached"], rows["A"]["steps_to_target_runs"]) == (2, 5)
    assert rows["B"]["steps_to_target"] == 30 and not rows["B"]["steps_to_target_censored"]
    header, table = display_rows(agg, ["steps_to_target"])
    assert header[-1] == "steps_to_target ↓ (median, reached)"
    assert [r[-1] for r in table] == ["≥ 100 (2/5)", "30 (3/5)", "≥ 60 (2/4)", "≥ budget (1/3)"]


def test_a_run_that_never_reaches_the_target_counts_at_its_budget_end_to_end(host, tmp_path):
    spec = copy.deepcopy(SPEC)
    spec["defaults"]["trainer"]["reach_at"] = 2
    spec["columns"] = ["target_reached", "steps_to_target"]
    spec["entries"][1]["overrides"]["trainer"]["reach_at"] = None
    plan = run(host, spec, tmp_path)
    report = plan_report(plan, tmp_path / "judge")
    rows = by_entry(report.agg)
    assert rows["calm"]["steps_to_target"] == 20 and rows["boom"]["steps_to_target_censored"]
    text = report.render("markdown")
    assert "| 20 (2/2)" in text and "| ≥ 30 (0/2)" in text
    assert "Time to target (`steps_to_target`): the median over every run that trained" in text
    with pytest.raises(Exception, match="goes in `columns`"):
        parse_spec({**SPEC, "metrics": ["steps_to_target"]})


# ---- a grid axis must reach every entry's run ------------------------------------------------
def test_a_grid_axis_reaches_every_entry_or_is_an_error(host):
    """A grid axis (or profile default) reaches a component an entry replaced (it is applied
    after the override); an entry that sets the same parameter itself, or names another
    component where the grid names one, keeps the cell's value from its runs: an error."""
    from bench_core.errors import SpecError

    spec = copy.deepcopy(SPEC)
    spec["grid"] = {"trainer.lr": [0.01, 0.02]}
    spec["entries"] = [{"label": "calm"},
                       {"label": "other", "overrides": {"trainer": {"name": "toy_other"}}}]
    plan = plan_of(host, spec)                   # the replacing table gets the grid's value
    assert {(t.spec["trainer"]["name"], t.spec["trainer"]["lr"], t.cell["trainer.lr"])
            for t in plan.tasks} == {("toy_curve", 0.01, 0.01), ("toy_curve", 0.02, 0.02),
                                     ("toy_other", 0.01, 0.01), ("toy_other", 0.02, 0.02)}
    spec["entries"][1]["overrides"] = {"trainer": {"name": "toy_other", "lr": 0.05}}
    with pytest.raises(SpecError) as err:
        plan_of(host, spec)
    assert str(err.value) == (
        "grid axis trainer.lr = 0.01 does not reach entry 'other': its overrides set "
        "trainer.lr = 0.05 themselves, so its runs would use trainer.lr = 0.05, in a cell "
        "labelled 0.01; drop trainer.lr from the entry's overrides, or restrict the profile's "
        "entries")
    spec["entries"][1]["overrides"] = {"trainer": {"lr": 0.05}}
    with pytest.raises(SpecError, match="its overrides set trainer.lr = 0.05 themselves"):
        plan_of(host, spec)
    spec["entries"][1]["overrides"] = {"trainer": {"accuracy": 0.5}}  # another parameter: fine
    plan = plan_of(host, spec)
    assert all(t.spec["trainer"]["lr"] == t.cell["trainer.lr"] for t in plan.tasks)
    spec["entries"][1]["overrides"] = {"trainer": {"accuracy": 0.5}}
    spec["profiles"] = {"p": {"defaults": {"trainer.accuracy": 0.7}}}
    with pytest.raises(SpecError, match="profile 'p' default trainer.accuracy = 0.7 does not "
                                        "reach entry 'other'"):
        plan_of(host, spec, profile="p")
    spec["grid"] = {"trainer.name": ["toy_curve"]}
    spec["entries"][1]["overrides"] = {"trainer": {"name": "toy_other"}}
    with pytest.raises(SpecError, match="grid axis trainer = \"toy_curve\" does not reach"):
        plan_of(host, spec)


# ---- bad files named by every command that reads records -------------------------------------
def test_bad_files_are_named_by_every_command_that_reads_records(host, tmp_path, capsys):
    from bench_core.cli import main

    spec_file = tmp_path / "judge.toml"
    spec_file.write_bytes(tomli_w.dumps(SPEC).encode())
    results = tmp_path / "results"
    assert main(["run", str(spec_file), "--results", str(results), "--quiet"]) == 0
    folder = results / "judge"
    good = record_files(folder)[0]
    truncated = folder / "0123456789abcdef.parquet"
    truncated.write_bytes(good.read_bytes()[:200])
    foreign = folder / "foreign.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(foreign)
    capsys.readouterr()
    spec, res = str(spec_file), ["--results", str(results)]
    commands = {
        "leaderboard by spec": ["leaderboard", spec, *res],
        "leaderboard by folder": ["leaderboard", str(folder)],
        "plot": ["plot", spec, *res, "--output", str(tmp_path / "plots")],
        "report": ["report", spec, *res, "--output", str(tmp_path / "report"), "--no-svg"],
        "export": ["export", spec, *res, "--output", str(tmp_path / "all.parquet")],
        "run (resume)": ["run", spec, *res, "--quiet"],
    }
    for what, argv in commands.items():
        assert main(argv) == 0, what
        err = capsys.readouterr().err
        for bad in (truncated, foreign):
            lines = [line for line in err.splitlines() if str(bad) in line]
            assert len(lines) == 1, (what, bad.name, err)    # named once per command
            assert lines[0].startswith("warning: ") and lines[0].endswith("; skipped")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert main(["leaderboard", spec, "--records", str(broken)]) == 2
    assert f"{broken}: not a readable records file" in capsys.readouterr().err


# ---- one count of recorded runs --------------------------------------------------------------
def test_the_header_and_the_report_index_count_runs_alike(host, tmp_path, capsys):
    from bench_core.cli import main

    spec_file = tmp_path / "judge.toml"
    spec_file.write_bytes(tomli_w.dumps(SPEC).encode())
    results = tmp_path / "results"
    assert main(["run", str(spec_file), "--results", str(results), "--quiet"]) == 0
    path = record_files(results / "judge")[0]
    row = pl.read_parquet(path).row(0, named=True)
    write_record(path.parent, {**row, "status": "timeout", "m_test_accuracy": None,
                               "value": None, "error": "took longer than 1 s"})
    capsys.readouterr()
    assert main(["leaderboard", str(spec_file), "--results", str(results)]) == 0
    header = re.search(r"(\d+)/(\d+) runs recorded", capsys.readouterr().out).groups()
    assert main(["report", str(spec_file), "--results", str(results), "--output",
                 str(tmp_path / "report"), "--no-svg"]) == 0
    index = (tmp_path / "report" / "index.html").read_text()
    assert header == ("4", "4") and "<td>4/4</td>" in index


# ---- what a reader sees first ----------------------------------------------------------------
def test_the_report_page_opens_with_the_verdicts_and_the_fidelity_plot(host, tmp_path):
    from bench_core.cli import main

    spec = copy.deepcopy(SPEC)
    spec.update(comparable=True, reference_n=10, protocol="three epochs, our choice",
                reference=[{"entry": "calm", "value": 0.9, "std": 0.01},
                           {"entry": "boom", "value": 0.5, "std": 0.01}])
    spec_file = tmp_path / "judge.toml"
    spec_file.write_bytes(tomli_w.dumps(spec).encode())
    results = tmp_path / "results"
    assert main(["run", str(spec_file), "--results", str(results), "--quiet"]) == 0
    assert main(["report", str(spec_file), "--results", str(results), "--output",
                 str(tmp_path / "report"), "--no-svg"]) == 0
    page = (tmp_path / "report" / "judge" / "index.html").read_text()
    order = [page.index(marker) for marker in (
        'class="verdict-summary"', "Sign test: ours above the paper in 0, below in 1",
        'src="plots/fidelity-test-accuracy.png"', "<details>", "three epochs, our choice",
        "</details>", "<h2>Tables</h2>")]
    assert order == sorted(order)
    assert "1 reproduced, 1 differ, 0 inconclusive of 2 paper values" in page
    assert (tmp_path / "report" / "judge" / "plots" / "fidelity-test-accuracy.png").is_file()


def test_bands_stay_in_the_metric_range_and_exploding_curves_get_a_log_axis(host, tmp_path,
                                                                           monkeypatch):
    from bench_core.results.figures import Figures
    from bench_core.results.plotting import curve_plots, spans_orders

    spec = copy.deepcopy(SPEC)
    spec["divergence"] = {"factor": None}       # keep the exploding runs among the curves
    plan = run(host, spec, tmp_path)
    figs = Figures(plan, tmp_path / "plots", ("png",))
    fig, (ax,) = figs.panels(1, "band")
    figs.line(ax, "calm", [1, 2, 3], [0.9, 0.95, 0.5], [0.2, 0.2, 0.6],
              bounds=figs.bounds("test_accuracy"))
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(1.0) and ys.min() == pytest.approx(0.0)
    assert figs.bounds("train_loss") == (0.0, None) and figs.bounds("gain") == (None, None)
    scales = {}

    def keep(fig, name, *args, **kw):
        scales[name] = [ax.get_yscale() for ax in fig.axes if ax.get_visible()]
        return None

    monkeypatch.setattr(figs, "save", keep)
    runs = overlay_plan(pl.scan_parquet(record_files(tmp_path / "judge")), plan.tasks,
                        spec=plan.spec).filter(pl.col("status") == "ok")
    curve_plots(figs, runs)
    assert scales["curves-train-loss"][0] == "log" and scales["curves-test-accuracy"][0] == "linear"
    assert spans_orders([1.0, 0.5, 1e23]) and not spans_orders([0.9, 0.2]) \
        and not spans_orders([-1.0, 500.0])
