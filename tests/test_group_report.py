"""The dataset report (issue 23 item 5): verdict counts, units worst first, no FAILed coordinate anywhere,
the between-session (test-retest) distance, a page that stays small and offline at 1000 units, and a
table that sorts and filters in a real browser."""

from __future__ import annotations

import base64
import hashlib
import html
import re

import numpy as np
import pandas as pd
import pytest

from tmstarget.qc.group import (GROUP_COLUMNS, add_between_session_mm, between_session_median_mm,
                                distance_summary_mm, unit_subject_session, worst_first)
from tmstarget.report import build_group_report

from builders.browser import CHROMIUM, Browser
from builders.group_units import fake_cohort, write_unit

#: A FAILed unit's target (MNI and T1w RAS mm), with decimals no other number on the page has.
FAIL_MNI, FAIL_T1W = (-51.3, 27.7, 43.9), (-47.9, 31.1, 49.3)


def _units_rows(html: str) -> list[list[str]]:
    """(unit, status) of each table row, in page order."""
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    return [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", row)[:2]]
            for row in body.split("</tr>") if "<td>" in row]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Six units of known verdicts and split-half medians (one FAIL with a distinctive target)."""
    root = tmp_path_factory.mktemp("group")
    spec = [("sub-01", "pass", 3.0), ("sub-02", "warn", 9.0), ("sub-03", "fail", 2.0), ("sub-04", "pass", 6.5),
            ("sub-05", "warn", 12.0), ("sub-06", "fail", 7.0)]
    entries = []
    for k, (unit, status, sh) in enumerate(spec):
        fail = unit == "sub-03"
        entries.append(write_unit(root / "in", unit, status, FAIL_MNI if fail else (-40.0 - k, 40.0, 30.0), sh,
                                  target_t1w=FAIL_T1W if fail else None))
    html = build_group_report(entries, root / "out" / "group.html", root / "out" / "group_targets.tsv")
    return root, html.read_text(), root / "out" / "group_targets.tsv"


def test_counts_and_worst_first_order(small):
    _, text, tsv = small
    assert "6 unit(s): 2 pass, 2 warn, 2 fail" in text
    counts = text.split("id='verdict-counts'>")[1].split("</div>")[0]
    assert re.findall(r"class='count (\w+)'>\w+ <b>(\d+)</b>", counts) == [("fail", "2"), ("warn", "2"),
                                                                           ("pass", "2")]
    # FAIL, WARN, PASS; within each, split-half median descending
    assert _units_rows(text) == [["sub-06", "fail"], ["sub-03", "fail"], ["sub-05", "warn"], ["sub-02", "warn"],
                                 ["sub-04", "pass"], ["sub-01", "pass"]]
    # the TSV keeps the entries' order
    assert pd.read_csv(tsv, sep="\t")["unit"].tolist() == [f"sub-0{k}" for k in range(1, 7)]
    # split-half summary over the 4 usable units: 3, 6.5, 9, 12 -> median 7.75, IQR 5.625 to 9.75
    assert "median 7.8 mm (IQR 5.6 to 9.8 mm), n = 4 usable units" in text
    assert "n/a: units are subjects" in text and "<th>between sessions (mm)</th>" not in text


def test_worst_first_puts_missing_split_half_after_known_ones():
    rows = [{"unit": u, "status": s, "split_half_median_mm": v} for u, s, v in
            [("a", "pass", None), ("b", "pass", 2.0), ("c", "warn", None), ("d", "fail", 1.0), ("e", "pass", 5.0)]]
    assert [r["unit"] for r in worst_first(rows)] == ["d", "c", "e", "b", "a"]


def test_a_failed_target_is_nowhere_in_the_page_table_or_figure(small):
    _, text, tsv = small
    for v in FAIL_MNI + FAIL_T1W:
        assert f"{v:.1f}" not in text, v                   # the figure is a PNG: its data is checked below
    row = pd.read_csv(tsv, sep="\t", na_values="n/a", keep_default_na=False).set_index("unit").loc["sub-03"]
    assert not row["coordinate_usable"] and row[[c for c in GROUP_COLUMNS if c.startswith("target_")]].isna().all()
    assert text.count("data:image/png;base64,") == 1


def test_the_figure_never_draws_or_names_a_failed_target():
    from matplotlib.collections import PathCollection
    from matplotlib.text import Text

    from tmstarget.report.figures_points import render_group_targets

    # a FAIL row that still carries its coordinate (defence in depth: group_row already removes it)
    rows = [{"unit": "sub-01", "status": "pass", "target_mni_x": -40.0, "target_mni_y": 40.0, "target_mni_z": 30.0},
            {"unit": "sub-02", "status": "fail", "target_mni_x": FAIL_MNI[0], "target_mni_y": FAIL_MNI[1],
             "target_mni_z": FAIL_MNI[2]}]
    fig = render_group_targets(rows)
    drawn = np.vstack([c.get_offsets() for ax in fig.axes for c in ax.collections
                       if isinstance(c, PathCollection) and len(c.get_offsets())])
    assert not np.any(np.isclose(drawn[..., None], np.asarray(FAIL_MNI), atol=1e-6))
    assert np.any(np.all(np.isclose(drawn, [-40.0, 40.0]), axis=1))         # the PASS target on the top view
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert "sub-01" in texts and "sub-02" not in texts and any("(n=1)" in t for t in texts)
    import matplotlib.pyplot as plt
    plt.close(fig)
    # above MAX_LABELLED_TARGETS targets, no unit names (the table has them): the cost stays flat
    many = [dict(rows[0], unit=f"sub-{k:02d}", target_mni_y=30.0 + k) for k in range(30)]
    fig = render_group_targets(many)
    assert not [t for t in (t.get_text() for t in fig.findobj(Text)) if t.startswith("sub-")]
    assert any("usable targets in MNI152NLin2009aSym (n=30)" in t.get_text() for t in fig.findobj(Text))
    plt.close(fig)


# ----------------------------------------------------------------------------- between sessions


def test_between_session_median_is_the_median_pairwise_distance():
    assert between_session_median_mm([(0, 0, 0)]) is None
    assert between_session_median_mm([(0, 0, 0), (3, 4, 0)]) == pytest.approx(5.0, abs=1e-12)
    # three sessions: pairwise 5, 12, 13 mm -> 12
    assert between_session_median_mm([(0, 0, 0), (3, 4, 0), (0, 0, 12)]) == pytest.approx(12.0, abs=1e-12)
    assert unit_subject_session({"unit": "sub-01_ses-2"}) == ("01", "2")
    assert unit_subject_session({"unit": "sub-01"}) == ("01", None)
    assert unit_subject_session({"unit": "x", "subject": "07", "session": "b"}) == ("07", "b")
    assert distance_summary_mm([5.0, 13.0, None]) == {"n": 2, "median": 9.0, "q1": 7.0, "q3": 11.0}


def test_between_session_distance_of_two_subjects_with_two_sessions(tmp_path):
    """sub-01: (-40, 40, 30) and (-43, 44, 30), 5 mm apart; sub-02: (-38, 36, 32) and (-38, 48, 27), 13 mm;
    sub-03: its second session FAILed, so no distance (and its target is not used)."""
    spec = [("sub-01_ses-1", "pass", (-40, 40, 30)), ("sub-01_ses-2", "warn", (-43, 44, 30)),
            ("sub-02_ses-1", "pass", (-38, 36, 32)), ("sub-02_ses-2", "pass", (-38, 48, 27)),
            ("sub-03_ses-1", "pass", (-41, 41, 31)), ("sub-03_ses-2", "fail", FAIL_MNI)]
    entries = [write_unit(tmp_path / "in", unit, status, mni) for unit, status, mni in spec]
    entries[0].update(subject="01", session="1")           # as unit_group_entries gives them; others parsed
    out = build_group_report(entries, tmp_path / "out" / "group.html", tmp_path / "out" / "group_targets.tsv")
    tsv = pd.read_csv(tmp_path / "out" / "group_targets.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    assert list(tsv.columns) == list(GROUP_COLUMNS)
    np.testing.assert_allclose(tsv["between_session_median_mm"].iloc[:4], [5.0, 5.0, 13.0, 13.0], atol=1e-3)
    assert tsv["between_session_median_mm"].iloc[4:].isna().all()
    assert tsv["sessions_usable"].tolist()[:5] == [2, 2, 2, 2, 1] and np.isnan(tsv["sessions_usable"].iloc[5])
    text = out.read_text()
    assert "<th>between sessions (mm)</th>" in text
    # one value per subject: 5 and 13 mm -> median 9, IQR 7 to 11 (numpy's linear percentiles)
    assert "median 9.0 mm (IQR 7.0 to 11.0 mm), n = 2 subjects with two or more usable sessions" in text
    rows = {r[0]: r for r in (re.findall(r"<td>(.*?)</td>", row) for row in text.split("</tr>"))
            if r and "sub-0" in r[0]}
    assert [rows[k][3] for k in sorted(rows) if "sub-01" in k] == ["5.0", "5.0"]
    assert rows[next(k for k in rows if ">sub-03_ses-1<" in k)][3] == "n/a (1 usable session)"


def test_add_between_session_leaves_subject_units_alone():
    rows = [{"unit": "sub-01", "subject": "01", "session": None, "status": "pass", "target_mni_x": 1.0,
             "target_mni_y": 2.0, "target_mni_z": 3.0, "between_session_median_mm": None, "sessions_usable": None}]
    assert add_between_session_mm(rows)[0]["between_session_median_mm"] is None


# ----------------------------------------------------------------------------- 1000 units


def test_a_1000_unit_page_is_small_offline_and_scripted_by_hash(tmp_path):
    entries = fake_cohort(tmp_path / "in", 1000)
    out = build_group_report(entries, tmp_path / "out" / "group.html", tmp_path / "out" / "group_targets.tsv")
    size = out.stat().st_size
    print(f"group.html at 1000 units: {size / 1e6:.2f} MB")
    assert size < 5e6
    text = out.read_text()
    assert "1000 unit(s): 700 pass, 200 warn, 100 fail" in text
    assert len(_units_rows(text)) == 1000
    # nothing loaded from the network: no http(s) or protocol-relative src/href, a CSP that allows only data:
    # images, inline styles and the one inline script by its hash
    assert re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.I) is None
    assert "http://" not in text and "https://" not in text
    script = text.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1))
    assert csp == f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'"
    # without JavaScript the filter controls stay hidden and the table is already worst first
    assert "<div class='table-tools' id='unit-tools' hidden>" in text
    assert [s for _, s in _units_rows(text)[:101]] == ["fail"] * 100 + ["warn"]


# ----------------------------------------------------------------------------- in a browser


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package 'chromium' is not installed")
def test_sorting_and_filtering_in_chromium(small, tmp_path):
    root, _, _ = small
    b = Browser(tmp_path / "profile", width=1400, height=1800)
    try:
        b.load((root / "out" / "group.html").resolve().as_uri())
        assert b.problems() == []                              # the script ran (CSP by hash), no request failed
        units = "Array.from(document.querySelectorAll('#units tbody tr')).filter(r => !r.hidden)" \
                ".map(r => r.cells[0].textContent)"
        assert b.evaluate("document.querySelector('#unit-tools').hidden") is False
        assert b.evaluate("document.querySelector('#unit-shown').textContent") == "showing 6 of 6 units"
        head = "document.querySelectorAll('#units thead th')"
        b.evaluate(f"{head}[2].click()")                        # split-half, ascending
        assert b.evaluate(units) == ["sub-03", "sub-01", "sub-04", "sub-06", "sub-02", "sub-05"]
        b.evaluate(f"{head}[2].click()")                        # again: descending
        assert b.evaluate(units) == ["sub-05", "sub-02", "sub-06", "sub-04", "sub-01", "sub-03"]
        assert b.evaluate(f"{head}[2].getAttribute('aria-sort')") == "descending"
        b.evaluate(f"{head}[3].click()")                        # target MNI: by x; FAIL rows (n/a) last
        assert b.evaluate(units)[-2:] == ["sub-06", "sub-03"]     # ties keep the worst-first order
        b.evaluate(f"{head}[1].click()")                        # QC: FAIL first
        assert b.evaluate(units)[:2] == ["sub-06", "sub-03"]
        b.evaluate("document.querySelector('input[data-status=pass]').click()")
        assert sorted(b.evaluate(units)) == ["sub-02", "sub-03", "sub-05", "sub-06"]
        b.evaluate("const s = document.querySelector('#unit-search'); s.value = 'SUB-05';"
                   "s.dispatchEvent(new Event('input'))")
        assert b.evaluate(units) == ["sub-05"]
        assert b.evaluate("document.querySelector('#unit-shown').textContent") == "showing 1 of 6 units"
        png = b.screenshot(tmp_path / "group_filtered.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert b.problems() == []
    finally:
        b.close()
