"""The gallery's controls in a real headless browser (Debian's Chromium, driven by Playwright): search, filters kept
in the address, sortable headers, the full view with previous/next, the not-like-training filter and badge."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from conftest import prediction_rows, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, synth_root, tiny_export):
    assert CHROMIUM, "Chromium is missing: `make test` installs Debian's chromium"
    d = tmp_path_factory.mktemp("gallery")
    scans = d / "scans"
    shutil.copytree(synth_root / "classification_task" / "test", scans)
    Image.new("L", (200, 200), 0).save(scans / "black.png")  # blank: always flagged out of distribution
    out = d / "o"
    run_cli("brisc.inference.cli", scans, "--model", tiny_export / "vit.onnx", "--out", out, "--heatmaps", "--panels")
    return out / "index.html"


@pytest.fixture(scope="module")
def page(gallery):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield pg
        browser.close()


def paths(pg) -> list[str]:
    return pg.eval_on_selector_all("#rows td.path", "tds => tds.map(t => t.textContent)")


def test_search_filters_and_keeps_its_state_in_the_address(page, gallery):
    page.goto(gallery.as_uri())
    assert page.text_content("#count") == "13 of 13 scans"
    page.fill("#q", "00002")
    got = paths(page)
    assert len(got) == 1 and "00002" in got[0] and page.text_content("#count") == "1 of 13 scans"
    assert "q=00002" in page.url
    page.reload()  # the address alone brings the view back
    assert page.input_value("#q") == "00002" and all("00002" in p for p in paths(page))


def test_headers_sort_both_ways(page, gallery):
    page.goto(gallery.as_uri())
    page.click("th[data-sort=path]")
    first = paths(page)
    assert first == sorted(first)
    page.click("th[data-sort=path]")
    assert paths(page) == sorted(first, reverse=True)
    assert page.get_attribute("th[data-sort=path]", "class") in ("asc", "desc")


def test_full_view_steps_through_the_scans(page, gallery):
    page.goto(gallery.as_uri())
    page.click("#rows img >> nth=0")
    assert page.is_visible("#viewer") and page.text_content("#vcap").startswith("1 of 13")
    page.click("#vnext")
    assert page.text_content("#vcap").startswith("2 of 13")
    page.keyboard.press("ArrowLeft")
    assert page.text_content("#vcap").startswith("1 of 13")
    assert page.get_attribute("#vimg", "src").endswith(".panel.png")
    page.keyboard.press("Escape")
    assert not page.is_visible("#viewer")


def test_not_like_training_filter_badge_and_per_class_table(page, gallery):
    page.goto(gallery.as_uri() + "#ood=out")
    flagged = sorted(r["path"] for r in prediction_rows(gallery.parent) if r["in_distribution"] is False)
    assert "black.png" in flagged and sorted(paths(page)) == flagged and page.is_visible(".badge")
    assert "not reliable" in page.text_content(".badge")
    assert page.is_visible("#perclass") and "sensitivity" in page.text_content("#perclass")


def test_a_screenful_shows_many_scans(page, gallery):
    page.goto(gallery.as_uri())
    visible = page.eval_on_selector_all("#rows tr", "rs => rs.filter(r => r.getBoundingClientRect().bottom <= innerHeight).length")
    assert visible >= 6  # 72-px rows: a 1400x1000 window holds several times the 4 rows it used to
