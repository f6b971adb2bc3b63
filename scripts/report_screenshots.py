"""Screenshots of a subject report for docs/img/: top screen, navigator box, seed map, coil, the slice
viewer, printed pages 1 and 2, and the candidate targets when the report lists two or more; prints the
page's height at 1280 px and its number of printed pages (the measures of issue 21 item 8).

Usage: PYTHONPATH=src python scripts/report_screenshots.py REPORT.html OUT_DIR

Needs Debian's ``chromium`` and ``pdftoppm`` (poppler-utils). Drives Chromium through the DevTools
protocol with the Browser class of tests/builders/browser.py; the printed page is made with
``chromium --print-to-pdf`` (background graphics off, the browser default) and ``pdftoppm -r 60``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from builders.browser import CHROMIUM, Browser  # noqa: E402


def element_shot(browser: Browser, selector: str, path: Path, pad: int = 8,
                 beyond_viewport: bool = True) -> None:
    rect = json.loads(browser.evaluate(
        f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return JSON.stringify({x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height}); })()"))
    clip = {"x": max(0, rect["x"] - pad), "y": max(0, rect["y"] - pad), "width": rect["w"] + 2 * pad,
            "height": rect["h"] + 2 * pad, "scale": 1}
    data = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=beyond_viewport,
                        clip=clip)["data"]
    path.write_bytes(base64.b64decode(data))


OPEN_FOLDS_OF = ("(sel => { let e = document.querySelector(sel); while (e) { if (e.tagName === 'DETAILS') "
                 "e.open = true; e = e.parentElement; } "
                 "document.querySelectorAll(sel + ' details.fold, ' + sel + ' details.not-usable')"
                 ".forEach(d => { d.open = true; }); return true; })")


def main(report_html: str, out_dir: str) -> None:
    html = Path(report_html).resolve()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        browser = Browser(Path(tmp) / "profile", width=1280, height=1000)
        try:
            browser.load(html.as_uri())
            problems = browser.problems()
            if problems:
                raise SystemExit(f"{html.name}: {problems}")
            print(f"page height at 1280 px (folds closed): {browser.evaluate('document.body.scrollHeight')} px")
            data = browser.call("Page.captureScreenshot", format="png")["data"]
            (out / "report_top.png").write_bytes(base64.b64decode(data))
            browser.evaluate(f"{OPEN_FOLDS_OF}('#navigator')")
            element_shot(browser, "#navigator", out / "report_navigator.png")
            browser.evaluate(f"{OPEN_FOLDS_OF}('#seed_map')")   # a closed fold (on FAIL also 'not usable')
            element_shot(browser, "#seed_map", out / "report_seed_map.png")
            browser.evaluate(f"{OPEN_FOLDS_OF}('#target_t1w')")
            element_shot(browser, "#target_t1w", out / "report_coil.png")
            if browser.evaluate("document.querySelector('#viewer details') !== null") is True:
                # the interactive slice viewer, once drawn: its sandboxed frame (another process) is in the
                # picture only when scrolled into view and captured without captureBeyondViewport
                browser.evaluate("document.querySelector('#viewer').scrollIntoView()")
                browser.drain(2.0)
                element_shot(browser, "#viewer", out / "report_viewer.png", beyond_viewport=False)
            if browser.evaluate("document.querySelector('#candidates') !== null") is True:
                # on a FAIL the table sits in a 'not usable' fold: open it for the picture
                browser.evaluate(f"{OPEN_FOLDS_OF}('#candidates')")
                element_shot(browser, "#candidates", out / "report_candidates.png")
        finally:
            browser.close()
        pdf = Path(tmp) / "report.pdf"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        f"--user-data-dir={tmp}/profile2", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
                        html.as_uri()], check=True, capture_output=True, timeout=180)
        info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True, timeout=60).stdout
        print("printed pages:", next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
        for page in (1, 2):
            subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", str(page), "-l", str(page), "-singlefile", str(pdf),
                            str(out / f"report_print_page{page}")], check=True, timeout=120)
    for p in sorted(out.glob("report_*.png")):
        print(p)


if __name__ == "__main__":
    main(*sys.argv[1:3])
