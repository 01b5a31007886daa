"""The report and the comparison opened in a real headless Chromium: no console errors, no
network requests, every image decoded; a screenshot is kept for a human to look at."""

import os
from pathlib import Path

import pytest
from PIL import Image

from dpaudit.reports.html import write_comparison, write_report
from tests.reports.cdp import find_chromium, open_page
from tests.reports.fakes import fake_result

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"),
]


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $DPAUDIT_SCREENSHOTS if set (to keep them), else the test's tmp dir."""
    folder = Path(os.environ.get("DPAUDIT_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_clean_load(page: dict, n_images: int) -> None:
    fetched = [url for url in page["requests"] if not url.startswith(("file:", "data:"))]
    assert fetched == [], f"the page made network requests: {fetched}"
    assert [url for url in page["requests"] if url.startswith("file:")] == [page["url"]], "loaded another local file"
    assert page["errors"] == [], f"console errors: {page['errors']}"
    assert len(page["images"]) == n_images
    for img in page["images"]:
        assert img["scheme"] == "data" and img["complete"] and img["width"] > 0 and img["height"] > 0, img


def load(path: Path, tmp_path: Path, shot: Path, **options) -> dict:
    page = open_page(CHROMIUM, path.resolve().as_uri(), tmp_path / "profile", shot, **options)
    page["url"] = path.resolve().as_uri()
    return page


# JavaScript run in the loaded page
OVERFLOW = "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
SCORECARD_BOTTOM = "document.getElementById('scorecard').getBoundingClientRect().bottom"
FIGURES = """Array.from(document.querySelectorAll('figure')).map(f => {
  const img = f.querySelector('img'); let h = f.previousElementSibling;
  while (h && !/^H[1-4]$/.test(h.tagName)) h = h.previousElementSibling;
  return {alt: img ? img.alt : null, heading: h ? h.textContent.trim() : (f.closest('section').querySelector('h2') || {}).textContent};
})"""
FOLDED_TABLE_SHOWN = "document.querySelector('details.more table').checkVisibility()"
NAV_DISPLAY = "getComputedStyle(document.querySelector('nav')).display"


def test_report_in_chromium(tmp_path):
    report = write_report(fake_result(), tmp_path / "report.html")
    shot = screenshot_dir(tmp_path) / "report.png"
    page = load(report, tmp_path, shot)
    assert_clean_load(page, n_images=10)
    width, height = Image.open(shot).size
    assert width >= 1000 and height > 3000  # the whole page, not just the first screen


@pytest.mark.parametrize("width, height, mobile", [(1280, 800, False), (390, 844, True)])
def test_report_fits_the_screen_with_the_scorecard_first(tmp_path, width, height, mobile):
    """No horizontal overflow on a laptop or a phone; on the laptop's first screen, the whole scorecard."""
    report = write_report(fake_result(), tmp_path / "report.html")
    shot = screenshot_dir(tmp_path) / f"report-top-{width}.png"
    page = load(report, tmp_path, shot, width=width, height=height, mobile=mobile, full_page=False,
                probes={"overflow": OVERFLOW, "scorecard_bottom": SCORECARD_BOTTOM})
    assert_clean_load(page, n_images=10)
    assert page["probes"]["overflow"] <= 0, f"{page['probes']['overflow']} px of horizontal overflow at {width} px"
    if not mobile:
        assert 0 < page["probes"]["scorecard_bottom"] <= height


def test_every_figure_has_a_heading_and_an_alt_text(tmp_path):
    page = load(write_report(fake_result(), tmp_path / "report.html"), tmp_path, tmp_path / "r.png",
                probes={"figures": FIGURES})
    figures = page["probes"]["figures"]
    assert len(figures) == 10
    for figure in figures:
        assert figure["alt"] and figure["heading"], figure


def test_print_to_pdf_unfolds_and_drops_the_navigation(tmp_path):
    report = write_report(fake_result(), tmp_path / "report.html")
    pdf = tmp_path / "report.pdf"
    page = load(report, tmp_path, tmp_path / "print.png", media="print", pdf=pdf,
                probes={"folded": FOLDED_TABLE_SHOWN, "nav": NAV_DISPLAY, "overflow": OVERFLOW})
    assert page["probes"]["nav"] == "none"
    assert page["probes"]["folded"] is True  # the metrics folded on screen are printed
    assert page["probes"]["overflow"] <= 0
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().count(b"/Type /Page") > 1
    screen = load(report, tmp_path, tmp_path / "screen.png", probes={"folded": FOLDED_TABLE_SHOWN})
    assert screen["probes"]["folded"] is False  # folded on screen: the check above can fail


def test_comparison_in_chromium(tmp_path):
    results = [fake_result(generator="dp-merf"), fake_result(generator="dpsgd-gan", auc=0.7, eps_lb=2.5, tstr=0.6, seed=1)]
    page = load(write_comparison(results, tmp_path / "compare.html"), tmp_path, screenshot_dir(tmp_path) / "compare.png")
    assert_clean_load(page, n_images=3)
    phone = load(tmp_path / "compare.html", tmp_path, tmp_path / "phone.png", width=390, height=844, mobile=True,
                 probes={"overflow": OVERFLOW})
    assert phone["probes"]["overflow"] <= 0


def test_the_harness_sees_requests_and_errors(tmp_path):
    """The checks above can fail: a page that fetches and logs an error is caught."""
    page_file = tmp_path / "bad.html"
    page_file.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>')
    page = load(page_file, tmp_path, tmp_path / "bad.png")
    assert "http://127.0.0.1:9/x.png" in page["requests"]
    assert any("boom" in str(error) for error in page["errors"])
    assert page["images"][0]["width"] == 0
