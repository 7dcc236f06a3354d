"""`untied report` pages rendered in a real browser: headless Chromium driven by Selenium.

For the report of a small leaderboard and for every committed report (docs/report/): each page
loads with no console error and no request off the disk, its tables have the expected rows,
every image loads (naturalWidth > 0) and a screenshot is not blank. Skips where Chromium or
chromedriver is absent (Debian packages ``chromium`` and ``chromium-driver``; .ci/run installs
them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO
from test_plots_and_report import assert_image_not_blank, board  # noqa: F401 - fixture

from bench_core.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
COMMITTED = REPO / "docs" / "report"

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1800",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def load(browser, page: Path) -> dict:
    """Open ``page``; return its console errors, images, tables and off-disk requests."""
    browser.get(page.resolve().as_uri())
    seen = {
        "images": browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
            "i.naturalWidth])"),
        "tables": browser.execute_script(
            "return Object.fromEntries(Array.from(document.querySelectorAll('table.leaderboard'))"
            ".map(t => [t.dataset.table, t.querySelectorAll('tbody tr').length]))"),
        "remote": browser.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)"
            ".filter(n => !n.startsWith('file:') && !n.startsWith('data:'))"),
        "screenshot": browser.get_screenshot_as_png(),
    }
    # read the console last: on a loaded machine a script error can reach the log after get()
    # returns (reading it straight away missed one)
    seen["errors"] = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return seen


def check_page(browser, page: Path, tmp_path: Path) -> dict:
    seen = load(browser, page)
    assert seen["errors"] == [], seen["errors"]
    assert seen["remote"] == []
    for src, complete, width in seen["images"]:
        assert complete and width > 0, f"{page}: image {src} did not load"
    shot = tmp_path / f"{page.parent.name}.png"
    shot.write_bytes(seen["screenshot"])
    assert_image_not_blank(shot, max_white=0.995)  # text pages are mostly white
    return seen


def test_report_renders_in_chromium(board, browser, tmp_path):  # noqa: F811
    spec_file, results = board
    out = tmp_path / "report"
    assert main(["report", str(spec_file), "--results", str(results), "-o", str(out)]) == 0
    seen = check_page(browser, out / "plot-test" / "index.html", tmp_path)
    assert seen["tables"]["test_accuracy"] == 4          # 2 entries x 2 grid cells
    assert len(seen["images"]) >= 3                       # metric vs lr, two curve plots
    index = check_page(browser, out / "index.html", tmp_path)
    assert index["tables"] == {"index": 1}


@pytest.mark.parametrize("page", sorted(COMMITTED.glob("*/index.html")),
                         ids=lambda p: p.parent.name)
def test_committed_reports_render_in_chromium(page, browser, tmp_path):
    seen = check_page(browser, page, tmp_path)
    assert seen["images"], "a committed report without plots"
    assert seen["tables"] and all(rows > 0 for rows in seen["tables"].values())


def test_committed_index_links_every_report(browser, tmp_path):
    if not (COMMITTED / "index.html").is_file():
        pytest.skip("no committed report")
    seen = check_page(browser, COMMITTED / "index.html", tmp_path)
    assert seen["tables"]["index"] == len(list(COMMITTED.glob("*/index.html")))


def test_the_browser_checks_catch_a_broken_page(browser, tmp_path):
    page = tmp_path / "broken" / "index.html"
    page.parent.mkdir()
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<p>text</p><img src="missing.png"><script>undefinedCall()</script>'
                    '</body></html>')
    seen = load(browser, page)
    assert len(seen["errors"]) >= 2  # the missing image and the script error
    assert [width for _, _, width in seen["images"]] == [0]
