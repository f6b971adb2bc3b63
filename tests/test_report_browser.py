"""The reports in a real browser: headless Debian Chromium loads them from file://, with no failed
request, no request other than file:/data:, no console error, every image decoded, and a screenshot.

Talks to Chromium through the DevTools protocol (``--remote-debugging-port``) with the
``websocket-client`` package. CI installs Debian's ``chromium`` (.ci/run); the test skips only when
no chromium binary exists.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tmstarget.report import build_group_report, build_subject_report

from builders.browser import CHROMIUM, Browser
from builders.report_unit import fail_inputs_with_candidates, make_subject_inputs, z_map_t1w

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package 'chromium' is not installed")


def _colour_fraction(png: bytes, rgb_hex: str) -> float:
    """Fraction of screenshot pixels within 3/255 of the colour ``rgb_hex``."""
    import io

    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    rgb = np.array([int(rgb_hex[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    return float(np.mean(np.all(np.abs(img - rgb) <= 3 / 255, axis=-1)))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    inputs = make_subject_inputs(root)
    out_dir = root / "out"
    subject_html = build_subject_report(inputs, out_dir / "sub-01.html")
    entry = {"unit": "sub-01", "target_json": inputs["target_json"], "native_json": inputs["native_json"],
             "denoise_qc_json": inputs["denoise_qc_json"], "seed_json": inputs["seed_json"],
             "report_html": "sub-01.html"}
    missing = dict(entry, unit="sub-02", native_json=str(root / "nope.json"), report_html="sub-02.html")
    group_html = build_group_report([entry, missing], out_dir / "group.html", out_dir / "group_targets.tsv")
    return subject_html, group_html


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def _keep_screenshot(path: Path) -> None:
    keep = os.environ.get("TMSTARGET_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_subject_report_in_chromium(reports, browser, tmp_path):
    subject_html, _ = reports
    browser.load(subject_html.resolve().as_uri())
    assert browser.problems() == []
    requested = [e["params"]["request"]["url"][:5] for e in browser.events if e["method"] == "Network.requestWillBeSent"]
    assert requested and set(requested) <= {"file:", "data:"}
    images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == 15                         # 11 figures + 2 before/after pairs (registration)
    assert all(done and w >= 300 and h >= 100 for done, w, h in images), images
    assert browser.evaluate("document.querySelector('#qc-status').textContent").startswith("QC: PASS")
    assert browser.evaluate("getComputedStyle(document.querySelector('#qc-status')).backgroundColor") == "rgb(27, 127, 59)"
    shot = tmp_path / "subject_report.png"
    png = browser.screenshot(shot)
    _keep_screenshot(shot)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _colour_fraction(png, "#1b7f3b") > 0.001       # the green PASS banner is drawn
    assert _colour_fraction(png, "#20334d") > 0.005       # the header bar
    # the CSS-only before/after switch of the registration views: one image shown, the other after a click
    shown = ("Array.from(document.querySelectorAll('#t1w_to_mni .flip-imgs img'))"
             ".map(i => i.checkVisibility() && i.offsetHeight > 0)")
    assert browser.evaluate(shown) == [False, False]                  # a closed fold: nothing drawn
    browser.evaluate("document.querySelector('#t1w_to_mni details.fold > summary').click()")
    assert browser.evaluate(shown) == [True, False]
    browser.evaluate("document.querySelector('#t1w_to_mni .flip-label').click()")
    assert browser.evaluate(shown) == [False, True]
    browser.evaluate("document.querySelector('nav a[href=\"#seed_map\"]').click()")
    browser.drain(0.5)
    assert browser.evaluate("window.scrollY") > 500                # the table of contents jumps
    assert browser.problems() == []


def test_print_layout_in_chromium(reports, browser):
    """The layout the stylesheet promises, as Chromium computes it: on screen a section's anchor clears the
    sticky bar; printed, the bar is gone, the footer sits at the bottom of every page, the verdict banner
    prints black on white with a border (no background ink) and a heading never ends a page."""
    subject_html, _ = reports
    browser.load(subject_html.resolve().as_uri())
    style = "(sel, prop) => getComputedStyle(document.querySelector(sel)).getPropertyValue(prop)"
    get = lambda sel, prop: browser.evaluate(f"({style})({sel!r}, {prop!r})")  # noqa: E731
    assert get("nav", "position") == "sticky"
    bar_px = browser.evaluate("document.querySelector('nav').getBoundingClientRect().height")
    assert float(get("section", "scroll-margin-top").removesuffix("px")) >= bar_px > 0
    assert get("footer.print-footer", "display") == "none"          # the print footer is for paper only
    browser.call("Emulation.setEmulatedMedia", media="print")
    try:
        assert get("nav", "display") == "none"
        assert get("footer.print-footer", "display") == "block" and get("footer.print-footer", "position") == "fixed"
        assert get("footer.print-footer", "bottom") == "0px"
        assert get("#qc-status", "background-color") in ("rgba(0, 0, 0, 0)", "transparent")
        assert get("#qc-status", "color") == "rgb(0, 0, 0)" and float(get("#qc-status", "border-top-width")[:-2]) >= 3
        assert get("h2", "break-after") == "avoid"
    finally:
        browser.call("Emulation.setEmulatedMedia", media="")


def test_group_report_in_chromium(reports, browser, tmp_path):
    _, group_html = reports
    browser.load(group_html.resolve().as_uri())
    assert browser.problems() == []
    rows = browser.evaluate("Array.from(document.querySelectorAll('#units tr')).slice(1)"
                            ".map(r => [r.cells[0].textContent, r.cells[1].textContent])")
    assert rows == [["sub-02", "fail"], ["sub-01", "pass"]]          # worst first
    href = browser.evaluate("document.querySelector('#units a[href=\"sub-01.html\"]').href")
    assert href == (group_html.parent / "sub-01.html").resolve().as_uri()
    assert browser.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 300)")
    shot = tmp_path / "group_report.png"
    png = browser.screenshot(shot)
    _keep_screenshot(shot)
    assert _colour_fraction(png, "#b3261e") > 0.0001      # the red fail badge
    browser.load(href)                                     # the link opens the subject report
    assert browser.evaluate("document.title") == "tmstarget QC report: sub-01"
    assert browser.problems() == []


# ----------------------------------------------------------------------------- issue 21: FAIL page, print length

#: The figures that show where this person's target is (position, slice labels, axes in mm).
PERSONAL_FIGURES = {"target_t1w", "seed_map", "uncertainty", "gsr", "literature"}

OUTSIDE_NOT_USABLE_FOLDS = """(() => {
  const page = document.body.cloneNode(true);
  page.querySelectorAll('details.not-usable').forEach(d => d.remove());
  const svgText = Array.from(page.querySelectorAll('img[src^="data:image/svg"]'))
      .map(i => atob(i.src.split(',')[1])).join(' ');
  return {text: page.textContent, alts: Array.from(page.querySelectorAll('img')).map(i => i.alt).join(' '),
          figures: Array.from(page.querySelectorAll('img[data-figure]')).map(i => i.dataset.figure),
          svg: svgText};
})()"""


def test_fail_report_shows_no_coordinate_of_the_person_outside_the_fold_in_chromium(tmp_path, browser):
    """Issue 21 item 1: a FAILed unit (too much motion) with two candidate targets. Outside the "not usable"
    folds, neither the text (all of it, closed folds included), nor an image's alt text, nor the text drawn
    in an SVG figure holds the target, the scalp entry or a candidate; no figure of the person's target is
    drawn there, and no caption tells the reader these are the navigator's coordinates."""
    inputs = fail_inputs_with_candidates(tmp_path)
    from tmstarget.qc.verdict import run_verdict
    assert run_verdict(inputs, inputs["verdict_json"], "sub-01")["status"] == "fail"
    html = build_subject_report(inputs, tmp_path / "fail.html")
    browser.load(html.resolve().as_uri())
    assert browser.problems() == []
    assert browser.evaluate("document.querySelector('#qc-status').textContent").startswith("QC: FAIL")
    outside = browser.evaluate(OUTSIDE_NOT_USABLE_FOLDS)
    inside = browser.evaluate("Array.from(document.querySelectorAll('details.not-usable img[data-figure]'))"
                              ".map(i => i.dataset.figure)")
    assert set(inside) == PERSONAL_FIGURES                       # drawn for review, inside the folds only
    assert not set(outside["figures"]) & PERSONAL_FIGURES, outside["figures"]
    assert set(outside["figures"]) == {"motion", "carpet_before", "carpet_after", "seed_tsnr", "bold_to_t1w",
                                       "t1w_to_mni"}
    everything = " ".join([outside["text"], outside["alts"], outside["svg"]])
    for coordinate in ("-40.5, 47.2, 35.0", "-58.0, 52.0, 52.0", "-42.0, 42.0, 30.0", "-36.0, 22.0, 44.0"):
        assert coordinate in browser.evaluate("document.body.textContent"), coordinate   # in the folds
        assert coordinate not in everything, coordinate
    for label in ("x=-40", "y=47", "z=35", "x=-58", "x=-42", "y=42", "z=30"):   # slice labels of the figures
        assert label not in everything, label
    assert "These are the coordinates the navigator uses" not in everything
    assert "this figure shows the person's target, so it is folded away below" in outside["text"]


def _pdf_pages(pdf: bytes) -> int:
    import re

    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


#: A4 minus Chromium's default 1 cm margins, in CSS px (96 per inch).
A4_PRINT_WIDTH_PX, A4_PRINT_HEIGHT_PX = round((8.27 - 0.79) * 96), round((11.69 - 0.79) * 96)


def test_subject_report_prints_the_decision_first_on_few_pages(reports, browser, tmp_path):
    """Issue 21 item 8: printed on A4, the report takes at most 6 pages, and the decision (verdict, action,
    navigator box, target figure, reliability) ends within the first two."""
    subject_html, _ = reports
    browser.load(subject_html.resolve().as_uri())
    pdf = base64.b64decode(browser.call("Page.printToPDF", paperWidth=8.27, paperHeight=11.69,
                                        printBackground=True)["data"])
    (tmp_path / "report.pdf").write_bytes(pdf)
    _keep_screenshot(tmp_path / "report.pdf")
    pages = _pdf_pages(pdf)
    print("printed pages:", pages)
    assert 1 <= pages <= 6, pages
    # the print layout at the printable width: where the decision ends, in pages
    browser.call("Emulation.setEmulatedMedia", media="print")
    browser.call("Emulation.setDeviceMetricsOverride", width=A4_PRINT_WIDTH_PX, height=A4_PRINT_HEIGHT_PX,
                 deviceScaleFactor=1, mobile=False)
    try:
        bottoms = browser.evaluate(
            "['#qc-status', '#qc-action', '#reliability-line', '#navigator', '#target_t1w img.fig']"
            ".map(q => document.querySelector(q).getBoundingClientRect().bottom + window.scrollY)")
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
        browser.call("Emulation.setEmulatedMedia", media="")
    print("decision ends at", bottoms, "px; a page is", A4_PRINT_HEIGHT_PX, "px")
    assert bottoms == sorted(bottoms)                                  # in this order
    assert bottoms[-1] <= 2 * A4_PRINT_HEIGHT_PX, bottoms


SMALLEST_TEXT_PX = """(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  let smallest = [1000, ''];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode, el = node.parentElement;
    if (!node.textContent.trim() || !el.checkVisibility()) continue;
    const px = parseFloat(getComputedStyle(el).fontSize);
    if (px < smallest[0]) smallest = [px, node.textContent.trim().slice(0, 40)];
  }
  return smallest;
})()"""


def test_every_text_of_the_report_is_at_least_12_px(reports, browser):
    """Issue 21 item 9: at 100 % no text of the page (all folds opened) is drawn below 12 px; the figures'
    text is held to the same by their font sizes (test_report.py)."""
    subject_html, _ = reports
    browser.load(subject_html.resolve().as_uri())
    px, text = browser.evaluate(SMALLEST_TEXT_PX)
    assert px >= 12, (px, text)


# ----------------------------------------------------------------------------- the interactive slice viewer


@pytest.fixture(scope="module")
def viewer_page(tmp_path_factory):
    """A subject page with the summary, the static target figure and the viewer (seed map in T1w space)."""
    from tmstarget.report import SUBJECT_REPORTLETS, render_subject_html

    root = tmp_path_factory.mktemp("viewer")
    inputs = make_subject_inputs(root)
    inputs["fisherz_map_t1w"] = str(z_map_t1w(root / "sub-01_space-T1w_stat-fisherz_boldmap.nii.gz"))
    keep = ("summary", "target_t1w", "viewer")
    out = root / "sub-01_viewer.html"
    out.write_text(render_subject_html(inputs, reportlets=tuple(r for r in SUBJECT_REPORTLETS if r.name in keep)))
    return out


def _frame_box(browser) -> dict:
    r = browser.evaluate("(() => { const r = document.querySelector('#viewer iframe').getBoundingClientRect();"
                         " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; })()")
    return dict(r, scale=1)


def _shot(browser, clip: dict) -> bytes:
    return base64.b64decode(browser.call("Page.captureScreenshot", format="png", clip=clip)["data"])


def test_the_slice_viewer_runs_offline_and_follows_a_click(viewer_page, browser, tmp_path):
    browser.load(viewer_page.resolve().as_uri())
    assert browser.problems() == []                  # no CSP violation: its three scripts run by hash
    requested = {e["params"]["request"]["url"][:5] for e in browser.events
                 if e["method"] == "Network.requestWillBeSent"}
    assert requested <= {"file:", "data:", "about"}
    # open from the start: brainsprite sizes its canvas when the frame loads, and a folded frame has no width
    assert browser.evaluate("document.querySelector('#viewer details').open") is True
    browser.evaluate("document.querySelector('#viewer').scrollIntoView()")
    browser.drain(1.0)
    clip = _frame_box(browser)
    assert clip["width"] == 1050 and clip["height"] > 300         # VIEWER_WIDTH_PX
    # the sandboxed frame runs in its own process (not reachable from this page's DevTools session), so
    # the canvas is checked by its pixels: brainsprite paints the slices on black, the target ball yellow
    before = _shot(browser, clip)
    shot = tmp_path / "report_viewer.png"
    shot.write_bytes(before)
    _keep_screenshot(shot)
    assert _colour_fraction(before, "#ffd800") > 0.0005       # the target ball (TARGET_RGB) around the cursor
    assert _colour_fraction(before, "#000000") > 0.2                   # the black background around the head
    # a click on the coronal slice moves the cursor: the slices redraw
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=clip["x"] - browser.evaluate("scrollX") + 480,
                     y=clip["y"] - browser.evaluate("scrollY") + 250, button="left", clickCount=1)
    browser.drain(0.5)
    after = _shot(browser, clip)
    changed = _changed_fraction(before, after)
    assert changed > 0.01, changed
    assert browser.problems() == []
    # the print stylesheet leaves the viewer out
    browser.call("Emulation.setEmulatedMedia", media="print")
    assert browser.evaluate("getComputedStyle(document.querySelector('#viewer')).display") == "none"
    browser.call("Emulation.setEmulatedMedia", media="")


def _changed_fraction(png_a: bytes, png_b: bytes) -> float:
    import io

    import matplotlib.image as mpimg

    a, b = (mpimg.imread(io.BytesIO(p), format="png")[..., :3] for p in (png_a, png_b))
    return float(np.mean(np.any(np.abs(a - b) > 8 / 255, axis=-1)))
