"""Plots, the HTML report (its structure; tests/test_report_browser.py renders it), `untied
export` and `untied leaderboard DIR`, on a small leaderboard run once for the module."""

from __future__ import annotations

import copy
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest
import slice_plugin
import tomli_w
from conftest import FAST_SPEC
from PIL import Image

from bench_core.cli import main
from bench_core.plugins import PluginHost, set_host
from bench_core.testing import run_spec

SPEC = copy.deepcopy(FAST_SPEC)
SPEC.update(title="Plot test board", name="plot-test", source="a made-up paper, Table 1",
            columns=["train_loss"], labels={"rule.lr": "learning rate (step size)",
                                            "test_accuracy": "test accuracy (fraction)"},
            reference=[{"entry": "const", "cell": {"rule.lr": 0.5}, "value": 0.5}])


def assert_image_not_blank(path: Path, min_colors: int = 8, max_white: float = 0.98) -> None:
    """A valid image with several colours and less than ``max_white`` of it (near) white."""
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        assert rgb.width > 200 and rgb.height > 150
        colors = rgb.getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) >= min_colors, f"{path} has too few colours"
        white = sum(n for n, c in colors if min(c) > 245)
        assert white < max_white * rgb.width * rgb.height, f"{path} is blank"


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """(spec file, results root) of a recorded leaderboard with two entries, two cells."""
    root = tmp_path_factory.mktemp("board")
    spec_file = root / "plot-test.toml"
    spec_file.write_text(tomli_w.dumps(SPEC))
    host = PluginHost()
    host.load_entry_points()
    try:
        run_spec(host, SPEC, root / "results")
    finally:
        set_host(None)
    return spec_file, root / "results"


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plot_writes_valid_png_and_svg_that_are_not_blank(board, tmp_path, capsys):
    spec_file, results = board
    code, _, err = cli(capsys, "plot", spec_file, "--results", results, "--output", tmp_path)
    assert code == 0, err
    for stem in ("test-accuracy-vs-rule-lr", "curves-test-accuracy", "curves-train-loss"):
        png, svg = tmp_path / f"{stem}.png", tmp_path / f"{stem}.svg"
        assert png.is_file() and svg.is_file(), sorted(p.name for p in tmp_path.iterdir())
        assert_image_not_blank(png)
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
        text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
        assert "Plot test board" in text and "profile default" in text  # the title
        assert "tied (baseline)" in text and "const" in text             # the legend
    axis_svg = (tmp_path / "test-accuracy-vs-rule-lr.svg").read_text()
    assert "learning rate (step size)" in axis_svg and "paper" in axis_svg
    # `untied leaderboard SPEC --plot DIR` writes the same set
    code, out, _ = cli(capsys, "leaderboard", spec_file, "--results", results, "--plot",
                       tmp_path / "again")
    assert code == 0 and "const" in out
    assert {p.name for p in (tmp_path / "again").iterdir()} == \
        {p.name for p in tmp_path.iterdir() if p.is_file()}


def test_function_slices_are_recorded_and_plotted(untied_host, run_leaderboard, tmp_path):
    untied_host.add_plugin(slice_plugin, "slices")
    spec = {"title": "slices", "metric": "test_mse", "higher_is_better": False, "seeds": 2,
            "defaults": {"dataset": {"name": "toy_wave"}, "model": {"name": "toy_line"},
                         "trainer": {"name": "toy_lstsq"}},
            "entries": [{"label": "lstsq"}]}
    run_leaderboard(spec)
    records = pl.read_parquet(next((tmp_path / "results" / "test").glob("*.parquet")))
    cut = json.loads(records["slices_json"][0])["x1"]
    assert len(cut["x"]) == 41 and cut["x"][0] == -2.0 and cut["label"] == "x1"
    assert cut["target"] == pytest.approx([__import__("math").sin(x) for x in cut["x"]], abs=1e-6)
    slope = (cut["prediction"][-1] - cut["prediction"][0]) / 4.0
    assert 0.3 < slope < 1.0  # the least-squares line through sin on [-2, 2]
    spec_file = tmp_path / "slices.toml"
    spec_file.write_text(tomli_w.dumps({**spec, "name": "test"}))
    assert main(["plot", str(spec_file), "--results", str(tmp_path / "results"),
                 "--output", str(tmp_path / "plots")]) == 0
    assert_image_not_blank(tmp_path / "plots" / "slice-x1.png")


def test_export_gives_one_table_of_records_with_different_parameters(board, tmp_path, capsys):
    spec_file, results = board
    out = tmp_path / "all.parquet"
    assert cli(capsys, "export", spec_file, "--results", results, "-o", out)[0] == 0
    frame = pl.read_parquet(out)
    assert frame.height == 8 and frame["run_id"].n_unique() == 8
    by_entry = dict(zip(frame["entry"], frame["p_surrogate.name"]))
    assert by_entry == {"tied": None, "const": "constant"}  # only `const` has a surrogate
    code, text, _ = cli(capsys, "export", results / "plot-test", "--format", "csv")
    assert code == 0
    csv = pl.read_csv(text.encode())
    assert csv.height == 8
    assert len(json.loads(csv["curve_test_accuracy"][0])) == 2  # curves as JSON arrays
    code, _, err = cli(capsys, "export", spec_file, "--results", results)
    assert code == 2 and "needs --output" in err


def test_leaderboard_of_a_results_folder_shows_what_the_spec_shows(board, capsys):
    spec_file, results = board
    _, from_spec, _ = cli(capsys, "leaderboard", spec_file, "--results", results,
                          "--format", "markdown")
    code, from_dir, _ = cli(capsys, "leaderboard", results / "plot-test", "--format", "markdown")

    def body(text):  # the regenerate command names what was given: the spec path, the board
        return [line for line in text.splitlines() if not line.startswith("Generated by")]

    assert code == 0 and body(from_dir) == body(from_spec)
    assert f"Generated by `untied leaderboard {spec_file} " in from_spec
    assert from_dir.startswith("# Plot test board") and "Source: a made-up paper" in from_dir
    header = next(line for line in from_dir.splitlines() if line.startswith("| rule.lr"))
    assert header.rstrip(" |").endswith("train_loss ↓")  # the extra column, its direction


def test_committed_records_stand_in_for_missing_results(board, tmp_path, capsys):
    spec_file, results = board
    spec_copy = tmp_path / "plot-test.toml"
    shutil.copy(spec_file, spec_copy)
    (tmp_path / "plot-test").mkdir()
    assert cli(capsys, "export", spec_file, "--results", results, "-o",
               tmp_path / "plot-test" / "default.parquet")[0] == 0
    code, out, err = cli(capsys, "leaderboard", spec_copy, "--results", tmp_path / "empty")
    assert code == 0 and "reading the committed records" in err and "const" in out
    _, direct, _ = cli(capsys, "leaderboard", spec_file, "--results", results)
    assert out == direct


def test_report_pages_hold_tables_plots_environment_and_commands(board, tmp_path, capsys):
    spec_file, results = board
    code, _, err = cli(capsys, "report", spec_file, "--results", results, "-o", tmp_path)
    assert code == 0, err
    page = (tmp_path / "plot-test" / "index.html").read_text()
    index = (tmp_path / "index.html").read_text()
    assert 'href="plot-test/index.html"' in index and "Plot test board" in index
    table = re.search(r'<table class="leaderboard" data-table="test_accuracy">(.*?)</table>',
                      page, re.S).group(1)
    assert table.count("<tr") == 1 + 4  # header + 2 entries x 2 cells
    assert "<th>paper</th>" in table and "0.5000" in table and "tied (baseline)" in table
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 3 and all((tmp_path / "plot-test" / src).is_file() for src in images)
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert not [u for u in links if re.match(r"[a-z]+://", u)]  # nothing outside the folder
    assert "<script" not in page and "torch threads per run" in page
    assert f"untied run {spec_file}" in page and "Source: a made-up paper" in page
    assert list((tmp_path / "plot-test" / "plots").glob("*.svg")) and ">SVG</a>" in page


def test_report_without_svg_has_png_plots_only(board, tmp_path, capsys):
    spec_file, results = board
    code, _, err = cli(capsys, "report", spec_file, "--results", results, "-o", tmp_path,
                       "--no-svg")
    assert code == 0, err
    plots = tmp_path / "plot-test" / "plots"
    assert list(plots.glob("*.png")) and not list(plots.glob("*.svg"))
    assert ">SVG</a>" not in (tmp_path / "plot-test" / "index.html").read_text()


def test_report_of_a_spec_without_records_is_an_error(tmp_path, capsys):
    spec_file = tmp_path / "none.toml"
    spec_file.write_text(tomli_w.dumps(SPEC))
    code, _, err = cli(capsys, "report", spec_file, "--results", tmp_path / "r", "-o",
                       tmp_path / "out")
    assert code == 2 and "no records" in err and "Traceback" not in err


def test_plots_and_page_of_a_board_with_several_metrics_scale_and_summaries(tmp_path):
    """The views of tests/test_leaderboard_views.py (two metrics, a display scale, a
    categorical and a numeric axis, a constant axis, summary tables), plotted and paged."""
    from types import SimpleNamespace

    from test_leaderboard_views import SPEC as VIEWS
    from test_leaderboard_views import write_runs

    from bench_core.results.leaderboard import aggregate, overlay_plan, summarise
    from bench_core.results.plotting import plot_leaderboard
    from bench_core.results.records import read_records
    from bench_core.results.report import leaderboard_page
    from bench_core.specs.model import parse_spec

    tasks = write_runs(tmp_path / "records")
    _, spec = parse_spec(VIEWS)
    records = read_records(tmp_path / "records")
    aggs = {m: aggregate(overlay_plan(records, tasks, m, spec)) for m in ("loss", "noisy_loss")}
    agg = pl.concat(list(aggs.values()), how="diagonal_relaxed")
    plan = SimpleNamespace(spec=spec, name="views", profile="default", tasks=tasks)
    plots = plot_leaderboard(plan, records, agg, tmp_path / "plots")
    names = {p.name for p in plots}
    assert names == {"loss-vs-data", "loss-vs-pool", "noisy-loss-vs-data", "noisy-loss-vs-pool"}
    for plot in plots:
        assert_image_not_blank(plot.files[0])
    svg = (tmp_path / "plots" / "loss-vs-pool.svg").read_text()
    assert "loss (× 10000) vs pool" in svg  # a scaled metric says its scale
    summaries = {m: summarise(a, ["data"], spec.reference, "loss") for m, a in aggs.items()}
    page = leaderboard_page(plan, agg, summaries, records.collect(), plots, ["a note"], ["cmd"])
    assert page.count('data-table="loss"') == 1 and 'data-table="summary:loss"' in page
    assert "Same in every cell: noise = 0.3." in page


def test_report_renders_a_verdict_column_when_the_aggregate_has_one(tmp_path):
    """Verdicts (reproduced / differs / not comparable) come from the aggregate when it has
    them; the page shows them per cell and counts the reproduced cells."""
    from types import SimpleNamespace

    from test_leaderboard import write_set

    from bench_core.results.leaderboard import aggregate
    from bench_core.results.records import read_records
    from bench_core.results.report import metric_tables, verdict_summary

    write_set(tmp_path)
    agg = aggregate(read_records(tmp_path))
    assert verdict_summary(agg) is None
    verdicts = ["reproduced", "differs"] + ["not comparable"] * (agg.height - 2)
    agg = agg.with_columns(pl.Series("verdict", verdicts))
    assert verdict_summary(agg) == "1 reproduced, 1 differ, 0 inconclusive of 2 paper values"
    spec = SimpleNamespace(columns=[], relative=False, summary_by=[])
    html = "\n".join(metric_tables(agg, spec, {}))
    assert "<th>verdict</th>" in html and '<td class="verdict reproduced">reproduced</td>' in html


def test_report_of_all_profiles_pages_each_recorded_profile_and_counts_each_run_once(
        tmp_path, capsys):
    """``--all-profiles``: a page per profile with records (``NAME@PROFILE``), a note for one
    without; the index counts every recorded run once, a diverged one too."""
    spec = copy.deepcopy(SPEC)
    spec.update(name="profiled", profiles={"one-cell": {"grid": {"rule.lr": [0.2]}, "seeds": 1},
                                           "never-run": {"grid": {"rule.lr": [0.3]}}})
    spec_file = tmp_path / "profiled.toml"
    spec_file.write_text(tomli_w.dumps(spec))
    results = tmp_path / "results"
    host = PluginHost()
    host.load_entry_points()
    try:
        run_spec(host, spec, results, name="profiled")
        run_spec(host, spec, results, name="profiled", profile="one-cell")
    finally:
        set_host(None)
    record = sorted((results / "profiled").glob("*.parquet"))[0]
    frame = pl.read_parquet(record)
    frame.with_columns(pl.lit("diverged").alias("status")).write_parquet(record)

    code, _, err = cli(capsys, "report", spec_file, "--results", results, "-o", tmp_path / "out",
                       "--all-profiles", "--no-svg")
    assert code == 0, err
    index = (tmp_path / "out" / "index.html").read_text()
    assert 'href="profiled/index.html"' in index and 'href="profiled@one-cell/index.html"' in index
    assert "<td>8/8</td>" in index and "<td>2/2</td>" in index
    assert "never-run" in err and "no page" in err and "never-run" not in index
    page = (tmp_path / "out" / "profiled@one-cell" / "index.html").read_text()
    assert "<code>one-cell</code>" in page
