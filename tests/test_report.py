"""Tests of the QC reports: QC thresholds, privacy/escaping, tolerant readers, figure files, dataset table.

Fixtures follow the file contracts of docs/architecture.md exactly (target JSON, T1w target JSON,
denoising QC JSON, seed sidecar, denoised npz) on a coarse 6 mm MNI grid so the file runs in seconds.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tmstarget import report
from tmstarget.qc.findings import qc_findings
from tmstarget.qc.metrics import mean_fd_mm
from tmstarget.qc.text import scrub_paths
from tmstarget.report.sections import REGISTRATION_FAILURE_WORDS
from tmstarget.qc.verdict import assess, assess_qc, run_verdict, thresholds_from_config
from tmstarget.report import (SUBJECT_REPORTLETS, build_group_report, build_subject_report, read_masked_timeseries,
                              write_reportlets)

from builders.report_pages import html_outside_not_usable_folds, text_outside_not_usable_folds
from builders.report_unit import (SECRET_DESCRIP, SECRET_DIR, denoise_qc, fail_inputs_with_candidates,
                                  make_subject_inputs, native_markers, seed_sidecar, target_markers, write_verdict)


def assert_private_and_escaped(text: str) -> None:
    for secret in (SECRET_DIR, SECRET_DESCRIP, "SECRETDB", "SECRETAUX", "SECRETINTENT"):
        assert secret not in text, secret
    assert "<script" not in text.lower()
    assert re.search(r"(src|href)=\"(https?:)?//", text) is None       # no network resource


# ----------------------------------------------------------------------------- QC rules


def _qc(target=None, native="default", qc=None, seed=None, **kw):
    t = target_markers() if target is None else target
    n = native_markers(t, Path("/x")) if native == "default" else native
    return assess_qc(t, n, denoise_qc(Path("/x")) if qc is None else qc, seed_sidecar() if seed is None else seed, **kw)


def test_good_unit_passes_with_no_reasons():
    assert _qc() == ("pass", [])


@pytest.mark.parametrize("minutes, expected", [(4.9, "fail"), (5.0, "warn"), (7.9, "warn"), (8.0, "pass")])  # denoising.warn_retained_minutes 8 (docs/reliability.md)
def test_minutes_kept_thresholds(minutes, expected):
    status, reasons = _qc(qc=denoise_qc(Path("/x"), minutes_kept=minutes))
    assert status == expected
    assert any(f"{minutes:.1f} min" in r for r in reasons) == (expected != "pass")   # named unless it passes


def test_thresholds_are_parameters():
    assert _qc(qc=denoise_qc(Path("/x"), minutes_kept=7.0))[0] == "warn"
    assert _qc(qc=denoise_qc(Path("/x"), minutes_kept=7.0), warn_minutes=6.0)[0] == "pass"
    assert _qc(qc=denoise_qc(Path("/x"), minutes_kept=7.0), fail_minutes=8.0)[0] == "fail"


def test_mean_fd_is_weighted_by_run_length():
    qc = {"runs": [{"volumes_total": 100, "mean_fd_mm": 0.1}, {"volumes_total": 300, "mean_fd_mm": 0.4},
                   {"volumes_total": 50, "mean_fd_mm": 9.0, "included": False}]}
    assert mean_fd_mm(qc) == pytest.approx((100 * 0.1 + 300 * 0.4) / 400, abs=1e-12)
    # fallback: mean of the FD trace after the dummy volumes, first value dropped
    qc = {"runs": [{"dummy_volumes": 2, "framewise_displacement_mm": [5, 5, 0, 0.2, 0.4, None]}]}
    assert mean_fd_mm(qc) == pytest.approx(0.3, abs=1e-12)
    assert mean_fd_mm({}) is None


@pytest.mark.parametrize("scale, expected", [(1.0, "pass"), (3.0, "warn"), (8.0, "fail")])
def test_motion_threshold(scale, expected):
    qc = denoise_qc(Path("/x"), fd_scale=scale)
    fd = mean_fd_mm(qc)
    assert (fd <= 0.2) == (expected == "pass") and (fd > 0.5) == (expected == "fail")
    status, reasons = _qc(qc=qc)
    assert status == expected
    assert reasons == ([] if expected == "pass" else
                       [f"mean framewise displacement {fd:.2f} mm (above {0.5 if expected == 'fail' else 0.2:g} mm)"])


@pytest.mark.parametrize("change, expected, words", [
    ({"z_at_target": 0.05}, "fail", "not anticorrelated"),
    ({"z_at_target": -0.05}, "warn", "weak anticorrelation"),
    ({"in_ba46": False}, "warn", "outside BA46"),
    ({"in_search_mask": False}, "warn", "outside the search mask"),
    ({"gsr_comparison": {"strategy": "acompcor", "target_mni_ras_mm": [-30, 30, 40], "shift_mm": 12.0}}, "warn",
     "moves 12.0 mm without global signal"),
    ({"gsr_comparison": {"strategy": "acompcor", "target_mni_ras_mm": None, "shift_mm": None, "note": "no voxel"}},
     "warn", "no-GSR comparison gave no target: no voxel"),
])
def test_target_checks(change, expected, words):
    status, reasons = _qc(target=target_markers(**change))
    assert status == expected
    assert len(reasons) == 1 and words in reasons[0]


def test_bootstrap_spread_is_a_detail_and_unconfident_flag_warns():
    t = target_markers()
    t["uncertainty"] = dict(t["uncertainty"], p95_distance_mm=10.5)
    status, reasons = _qc(target=t)  # the bootstrap can look stable on noise: an info detail only
    assert status == "pass" and reasons == []
    assert any(f.level == "info" and "within 10.5 mm" in f.text
               for f in qc_findings(t, native_markers(t, Path("/x")), {}, seed_sidecar()))
    t["uncertainty"] = dict(t["uncertainty"], p95_distance_mm=9.5, confident=False)
    status, reasons = _qc(target=t)
    assert status == "warn" and reasons == ["the targeting stage flagged the target as uncertain (see Uncertainty)"]


def test_seed_dropout_and_fov_warn():
    status, reasons = _qc(seed=seed_sidecar(seed_low_tsnr_fraction=0.7))
    assert status == "warn" and "70% of seed voxels have tSNR below 20" in reasons[0]
    status, reasons = _qc(seed=seed_sidecar(seed_voxels_in_mask=10))
    assert status == "warn" and "only 10 of 19 seed voxels" in reasons[0]


def test_missing_native_target_fails_and_missing_files_do_not_crash():
    status, reasons = _qc(native=None)
    assert status == "fail" and "no T1w-space target" in reasons[0]
    status, reasons = assess_qc(None, None, None, None)
    assert status == "fail"
    assert any("no target file" in r for r in reasons) and any("minutes of data" in r for r in reasons)
    # optional keys absent: no crash, the minutes fall back to the target JSON's denoising block
    t = target_markers()
    for k in ("uncertainty", "gsr_comparison", "in_ba46", "z_at_target"):
        t.pop(k)
    status, reasons = assess_qc(t, native_markers(t, Path("/x")), {}, seed_sidecar())
    assert status == "pass", reasons
    findings = qc_findings(t, native_markers(t, Path("/x")), {}, seed_sidecar())
    assert sum(f.level == "info" for f in findings) == 5


def test_roundtrip_warns():
    t = target_markers()
    n = native_markers(t, Path("/x"))
    n["roundtrip_error_mm"] = 1.6
    status, reasons = assess_qc(t, n, denoise_qc(Path("/x")), seed_sidecar())
    assert status == "warn" and "round trip error 1.60 mm" in reasons[0]


# ----------------------------------------------------------------------------- helpers


def test_scrub_paths_keeps_only_file_names():
    assert scrub_paths("/data/SITE/bids/sub-01/anat/sub-01_T1w.nii.gz") == "sub-01_T1w.nii.gz"
    assert scrub_paths("cannot read /a/b/c.json: bad; see /x/y") == "cannot read c.json: bad; see y"
    assert scrub_paths("bids:preproc:sub-01/func/run.nii.gz") == "bids:preproc:sub-01/func/run.nii.gz"
    assert scrub_paths("C:\\Users\\me\\scan.nii") == "scan.nii"
    assert scrub_paths("FD > 0.5 mm, 3/4 runs") == "FD > 0.5 mm, 3/4 runs"


def test_read_masked_timeseries_matches_direct_indexing(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7, 9)).astype(np.float32)
    mask = rng.random((5, 6, 7)) > 0.5
    p = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), p)
    cols = report.carpet_rows(int(mask.sum()), max_rows=20)
    assert len(cols) == 20 and cols[0] == 0 and cols[-1] == mask.sum() - 1
    got = read_masked_timeseries(p, mask, cols)
    np.testing.assert_allclose(got, data[mask][cols].T, atol=0)


def test_a_failing_figure_is_reported_without_paths_and_the_rest_survives():
    def broken(ctx):
        raise ValueError(f"/data/{SECRET_DIR}/sub-01/anat/bad.nii.gz: header is odd")

    def fine(ctx):
        import matplotlib.pyplot as plt
        return plt.figure(figsize=(2, 1))

    bad = report.Reportlet("broken", "Broken", "cap", figure=broken)
    ok = report.Reportlet("fine", "Fine", "cap", figure=fine)
    text = report.render_subject_html({}, reportlets=(bad, ok))
    assert "could not be drawn (ValueError: bad.nii.gz: header is odd)" in text
    assert ('<section id="fine"><details class="fold"><summary><h2>Fine</h2></summary><p class="caption">cap</p>'
            '<img class="fig" alt="Fine" data-figure="fine" src="data:image/png') in text
    assert_private_and_escaped(text)


# ----------------------------------------------------------------------------- subject report


FIGURE_CALLS: list[str] = []  # formats of the figures drawn while the `subject` fixture built its report


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """One full report, built as the workflow builds it (page + reportlet files), shared by the tests
    that read the whole page; ``figure_calls`` counts the figures drawn for both outputs."""
    from tmstarget.report import figures

    root = tmp_path_factory.mktemp("rep")
    inputs = make_subject_inputs(root)
    real = figures.figure_bytes
    calls = []

    def counting(fig, fmt="png"):
        calls.append(fmt)
        return real(fig, fmt)

    figures.figure_bytes = counting
    try:
        out = build_subject_report(inputs, root / "out" / "sub-01.html", reportlet_dir=root / "figs")
    finally:
        figures.figure_bytes = real
    FIGURE_CALLS[:] = calls
    return root, inputs, out, out.read_text()


def test_subject_report_has_every_section_with_a_figure(subject):
    _, _, out, text = subject
    for r in SUBJECT_REPORTLETS:
        assert f'<section id="{r.name}">' in text
    assert "Not available" not in text and "could not be drawn" not in text
    n_png = text.count('src="data:image/png;base64,')
    n_svg = text.count('src="data:image/svg+xml;base64,')
    n_figs = sum(1 for r in SUBJECT_REPORTLETS if r.name not in report.HTML_REPORTLETS)
    n_flicker = 2 * sum(r.flicker is not None for r in SUBJECT_REPORTLETS)
    assert (n_png, n_svg) == (sum(r.fmt == "png" and r.figure is not None for r in SUBJECT_REPORTLETS) + n_flicker,
                              sum(r.fmt == "svg" for r in SUBJECT_REPORTLETS))
    assert n_png + n_svg - n_flicker == n_figs == 11 and n_flicker == 4
    assert not list(out.parent.glob(".*tmp*"))                    # atomic write left nothing behind


def test_subject_summary_shows_targets_status_and_numbers(subject):
    _, _, _, text = subject
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert 'class="status status-pass"' in summary
    assert "(-40.5, 47.2, 35.0)" in summary            # T1w target (numpy rounds 47.25 to even)
    assert "(-42.0, 42.0, 30.0)" in summary            # MNI target
    assert "12.5 min" in summary and "18.3 mm" in summary and "-0.41 / -0.44" in summary
    assert "sub-01_desc-preproc_T1w.nii.gz" in summary
    assert "research" in summary.lower()


def test_subject_report_is_private_and_escaped(subject):
    _, _, _, text = subject
    assert_private_and_escaped(text)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text  # the hostile label, escaped (autoescape)
    assert "Content-Security-Policy" in text
    # embedded figures carry no path either
    import base64
    for b64 in re.findall(r'data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)', text):
        svg = base64.b64decode(b64).decode()
        assert SECRET_DIR not in svg
        ET.fromstring(svg)


def test_subject_report_with_missing_inputs(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    Path(inputs["native_json"]).unlink()
    Path(inputs["denoised_npz"]).unlink()
    Path(inputs["seed_json"]).write_text("{not json")
    inputs["boldref_t1w"] = []
    inputs.pop("t1w_mni")
    t = json.loads(Path(inputs["target_json"]).read_text())
    for k in ("uncertainty", "gsr_comparison", "literature_distances_mm"):
        t.pop(k)
    Path(inputs["target_json"]).write_text(json.dumps(t))
    run_verdict(inputs, inputs["verdict_json"], "sub-01")      # as the workflow would
    text = build_subject_report(inputs, tmp_path / "r.html", title="Patient <b>").read_text()
    assert 'class="status status-fail"' in text and "no T1w-space target" in text
    assert "<title>Patient &lt;b&gt;</title>" in text
    na = {r.name for r in SUBJECT_REPORTLETS
          if "Not available" in text.split(f'<section id="{r.name}">')[1].split("</section>")[0]}
    assert na == {"target_t1w", "carpet_after", "seed_tsnr", "bold_to_t1w", "t1w_to_mni", "uncertainty", "gsr"}
    assert "could not be drawn" not in text
    assert "seed_json: sub-01_task-rest_space-MNI152NLin2009aSym_desc-sgacc_stat-r_boldmap.json is not readable JSON" in text
    assert_private_and_escaped(text)
    # the figure files keep their names: missing figures become placeholder images
    paths = write_reportlets(inputs, tmp_path / "figs")
    assert [p.name for p in paths] == report.reportlet_filenames()
    assert paths[1].name == "target_t1w.png" and paths[1].read_bytes()[:4] == b"\x89PNG"
    assert ET.fromstring((tmp_path / "figs" / "gsr.svg").read_bytes()) is not None


def test_reportlet_files_one_per_section(subject):
    """The files `snakemake --report` shows, as the workflow writes them (build_subject_report with a
    reportlet_dir, in the `subject` fixture); write_reportlets writes the same names
    (test_subject_report_with_missing_inputs)."""
    root = subject[0]
    paths = [root / "figs" / name for name in report.reportlet_filenames()]
    assert [p.stem for p in paths] == [r.name for r in SUBJECT_REPORTLETS]
    assert sorted(p.name for p in (root / "figs").iterdir()) == sorted(p.name for p in paths)  # nothing else
    for r, p in zip(SUBJECT_REPORTLETS, paths):
        data = p.read_bytes()
        if r.name in report.HTML_REPORTLETS:
            assert p.suffix == ".html" and b"<section" in data
            assert_private_and_escaped(data.decode())
        elif r.fmt == "png":
            assert p.suffix == ".png" and data[:8] == b"\x89PNG\r\n\x1a\n"
            w, h = np.frombuffer(data[16:24], dtype=">u4")
            assert w >= 600 and h >= 150
        else:
            assert p.suffix == ".svg"
            ET.fromstring(data)
            assert SECRET_DIR.encode() not in data


# ----------------------------------------------------------------------------- dataset report


def test_group_report_table_and_tsv(tmp_path):
    base = tmp_path / SECRET_DIR
    base.mkdir()
    entries = []
    variants = {"sub-01": {}, "sub-02": {"in_ba46": False}, "sub-03<i>": {}}
    for k, (unit, change) in enumerate(variants.items()):
        t = target_markers(**change, target_mni_ras_mm=[-40.0 - k, 40.0, 30.0])
        paths = {key: base / f"u{k}_{key}.json" for key in ("target_json", "native_json", "denoise_qc_json", "seed_json")}
        paths["target_json"].write_text(json.dumps(t))
        if unit != "sub-03<i>":                          # native stage failed for the third unit
            paths["native_json"].write_text(json.dumps(native_markers(t, tmp_path)))
        paths["denoise_qc_json"].write_text(json.dumps(denoise_qc(tmp_path)))
        paths["seed_json"].write_text(json.dumps(seed_sidecar()))
        entries.append({"unit": unit, **{k2: str(v) for k2, v in paths.items()}, "report_html": f"{unit}.html"})
    entries[0]["report_html"] = str(tmp_path / "out" / "sub-01.html")   # absolute link -> made relative
    out = build_group_report(entries, tmp_path / "out" / "group.html", tmp_path / "out" / "group_targets.tsv")
    tsv = pd.read_csv(tmp_path / "out" / "group_targets.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    assert list(tsv.columns) == list(report.GROUP_COLUMNS)
    assert tsv["status"].tolist() == ["pass", "warn", "fail"]
    # a FAIL row never lists a coordinate as usable
    np.testing.assert_allclose(tsv["target_mni_x"].iloc[:2], [-40, -41], atol=1e-9)
    assert np.isnan(tsv["target_mni_x"].iloc[2]) and tsv["coordinate_usable"].tolist() == [True, True, False]
    np.testing.assert_allclose(tsv["split_half_median_mm"], 4.2, atol=1e-9)
    np.testing.assert_allclose(tsv["target_t1w_y"].iloc[:2], [47.25, 47.25], atol=1e-9)
    assert np.isnan(tsv["target_t1w_y"].iloc[2])
    np.testing.assert_allclose(tsv["minutes_kept"], 12.5, atol=1e-9)
    assert tsv["reasons"].iloc[1] == "target lies outside BA46 (HCPex label)"
    assert tsv["in_ba46"].tolist() == [True, False, True]
    text = out.read_text()
    # the page's one script is the packaged sort/filter script (tests/test_group_report.py); all else escaped
    script = (Path(report.__file__).parent / "templates" / "group_table.js").read_text()
    assert text.count("<script>") == 1 and f"<script>{script}</script>" in text
    assert_private_and_escaped(text.replace(f"<script>{script}</script>", ""))
    assert 'href="sub-01.html"' in text and 'href="sub-03&lt;i&gt;.html"' in text
    assert ">sub-03&lt;i&gt;</a>" in text
    assert "3 unit(s): 1 pass, 1 warn, 1 fail" in text
    assert text.count("data:image/png;base64,") == 1 and "Not available" not in text


# ----------------------------------------------------------------------------- navigator box, coil glyph


def _navbox(text: str) -> str:
    return text.split('<div class="navbox" id="navigator">')[1].split("<h4>Files to import</h4>")[0]


def test_navigator_box_names_the_t1w_coordinates_handle_depth_and_files(subject):
    _, _, _, text = subject
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert 'id="navigator"' in summary                       # next to the coordinate, in the summary
    box = _navbox(summary)
    assert "sub-01_desc-preproc_T1w.nii.gz" in box
    # the full SHA-256 in a read-only field (a double click selects all 64 characters to copy)
    assert f'<input class="sha256" id="t1w-sha256" type="text" readonly value="{"ab" * 32}"' in box
    assert "(-40.5, 47.2, 35.0)" in box and "(-58.0, 52.0, 52.0)" in box
    assert "NIfTI world coordinates of this file: x to the right, y to the front, z up" in box
    assert "posterior-lateral, 45 deg from posterior towards left" in box
    assert "18.3 mm" in box
    assert "<svg class=\"handle-glyph\"" in box and ">handle</text>" in box
    assert "Header warning" not in box
    files = summary.split('<div class="navbox" id="navigator">')[1]
    for nav, name in (("Brainsight", "nav/sub-01_desc-target_brainsight.txt"),
                      ("Localite TMS Navigator", "nav/localite/InstrumentMarkers/InstrumentMarker"),
                      ("ANT Neuro visor2", "nav/sub-01_desc-target_visor2.mrk"),
                      ("3D Slicer", "nav/sub-01_desc-target_slicer.mrk.json")):
        assert nav in files and name in files


def test_navigator_box_lists_only_the_configured_exports_and_header_warnings(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    inputs["nav_formats"] = ["brainsight"]
    objs = [json.loads(Path(inputs[k]).read_text()) for k in ("target_json", "native_json", "denoise_qc_json",
                                                                "seed_json")]
    v = assess(*objs, unit="sub-01", header_warnings=[
        "sub-01_bold.nii.gz: qform_code and sform_code are both 0, so the orientation is not recorded"])
    assert v["status"] == "warn"
    Path(inputs["verdict_json"]).write_text(json.dumps(v))
    text = report.render_subject_html(inputs, reportlets=(report.SUBJECT_REPORTLETS[0],))
    box = _navbox(text)
    assert "<b>Header warning:</b> 1 input header(s) in doubt, see Problems above." in box  # stated once, above
    assert "a left-right flip cannot be excluded" in text.split('id="navigator"')[0]
    files = text.split("<h4>Files to import</h4>")[1]
    assert "brainsight.txt" in files and "visor2" not in files and "localite" not in files


def test_navigator_box_on_fail_says_nothing_was_exported(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    v = json.loads(Path(inputs["verdict_json"]).read_text())
    v.update(status="fail", status_word="FAIL", coordinate_usable=False)
    Path(inputs["verdict_json"]).write_text(json.dumps(v))
    text = report.render_subject_html(inputs, reportlets=(report.SUBJECT_REPORTLETS[0],))
    files = text.split("<h4>Files to import</h4>")[1]
    assert "No navigator file was exported" in files and "brainsight.txt" not in files


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_handle_words_and_glyph_follow_the_recorded_handle(side):
    from tmstarget.native.scalp import handle_direction_ras

    entry = np.array([side * 58.0, 52.0, 52.0])
    target = np.array([side * 40.5, 47.25, 35.0])
    normal = (target - entry) / np.linalg.norm(target - entry)
    for angle in (0.0, 45.0, 90.0):
        handle = handle_direction_ras(entry, normal, angle)
        native = {"entry_t1w_ras_mm": entry.tolist(), "target_t1w_ras_mm": target.tolist(),
                  "inward_normal_t1w_ras": normal.tolist(), "handle_direction_t1w_ras": handle.tolist()}
        got, hemi = report.handle_angle_from_posterior_deg(handle, normal, entry)
        assert got == pytest.approx(angle, abs=0.5) and hemi == ("left" if side < 0 else "right")
        words = report.handle_in_words(native)
        assert f"{angle:.0f} deg from posterior towards {hemi}" in words
        glyph = report.coil_glyph_ras_mm(report.coil_geometry(native))
        d = glyph["handle"][1] - glyph["handle"][0]
        assert np.degrees(np.arccos(np.clip(np.dot(d / np.linalg.norm(d), handle), -1, 1))) < 0.5  # along the handle
        assert np.allclose(np.linalg.norm(glyph["circle"] - entry, axis=1), report.COIL_GLYPH_RADIUS_MM)
        assert np.allclose((glyph["circle"] - entry) @ normal, 0, atol=1e-9)     # circle in the scalp plane
    # a reversed handle (the issue-11 defect) is not called posterior
    native["handle_direction_t1w_ras"] = (-handle_direction_ras(entry, normal, 45.0)).tolist()
    assert report.handle_in_words(native).startswith("anterior-medial, 135 deg")


def test_entry_figure_draws_the_coil_circle_and_a_labelled_handle(subject):
    _, inputs, _, _ = subject
    fig = report.render_target_t1w(report.SubjectContext(inputs))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("handle") == 3                       # one per view of the entry row
    magenta = [ln for ax in fig.axes for ln in ax.lines if ln.get_color() == "#ff4fd8"]
    assert len(magenta) == 3
    # entry and target on every view of both rows, joined by the dashed coil axis
    axis_lines = [ln for ax in fig.axes for ln in ax.lines if ln.get_linestyle() == "--" and ln.get_color() == "white"]
    assert len(axis_lines) == 6
    for ln in axis_lines:
        assert len(ln.get_xdata()) == 2
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_tsnr_map_has_no_coloured_background(subject):
    import matplotlib.pyplot as plt

    from tmstarget.report import figures

    _, inputs, _, _ = subject
    fig = figures.render_seed_tsnr(report.SubjectContext(inputs))
    tsnr_images = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "viridis"]
    slices = [im.get_array() for im in tsnr_images if im.get_array().ndim == 2 and min(im.get_array().shape) > 5]
    assert len(slices) >= 3
    masked = [a for a in slices if np.ma.is_masked(a) and np.ma.getmaskarray(a).mean() > 0.2]
    assert len(masked) >= 3                                     # outside the brain: transparent, not purple
    plt.close(fig)


# ----------------------------------------------------------------------------- the verdict, shown once


def _summary(inputs: dict) -> str:
    text = report.render_subject_html(inputs, reportlets=(report.SUBJECT_REPORTLETS[0],))
    return text.split('<section id="summary">')[1].split("</section>")[0]


def test_report_shows_the_verdict_file_not_its_own_judgement(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    v = json.loads(Path(inputs["verdict_json"]).read_text())
    v.update(status="warn", status_word="WARN", reasons=["a reason only the verdict knows"],
             action="usable for research with care: acquire 4 more minutes")
    Path(inputs["verdict_json"]).write_text(json.dumps(v))
    summary = _summary(inputs)       # the inputs alone would PASS: the banner follows the verdict file
    assert 'class="status status-warn" id="qc-status">QC: WARN' in summary
    assert "<li>a reason only the verdict knows</li>" in summary
    assert "<b>What to do:</b> usable for research with care: acquire 4 more minutes" in summary
    assert "not-usable" not in summary
    Path(inputs["verdict_json"]).unlink()                       # no verdict: never shown as usable
    summary = _summary(inputs)
    assert "QC: FAIL" in summary and "verdict (*_desc-verdict_qc.json) is missing" in summary


def test_on_fail_the_coordinate_is_folded_away_as_not_usable(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    Path(inputs["denoise_qc_json"]).write_text(json.dumps(denoise_qc(tmp_path, fd_scale=8.0)))
    v = write_verdict(inputs)
    assert v["status"] == "fail"
    summary = _summary(inputs)
    assert "QC: FAIL" in summary and "mean framewise displacement" in summary
    banner, rest = summary.split("<details class='not-usable'>", 1)
    assert "(-40.5, 47.2, 35.0)" not in banner                   # no coordinate before the fold
    assert "Coordinate (not usable: verdict FAIL" in rest and "(-40.5, 47.2, 35.0)" in rest
    assert "do not use this coordinate" in banner


def test_on_fail_no_coordinate_of_this_person_is_shown_outside_a_fold(tmp_path):
    """A FAILed unit with two candidate targets: the target, the scalp entry and both candidates appear
    only inside 'not usable' folds, in every section of the page, and the verdict's reasons (what the
    terminal prints) name the candidates without their coordinates. Published site coordinates of the
    literature section are not this person's and may show."""
    inputs = fail_inputs_with_candidates(tmp_path)
    v = write_verdict(inputs)
    assert v["status"] == "fail"
    assert "two or more separated candidate targets (coordinates withheld: verdict FAIL)" in v["reasons"]
    assert not any("-36.0" in r or "-42.0" in r for r in v["reasons"])
    html = report.render_subject_html(inputs)
    outside = text_outside_not_usable_folds(html)
    for coordinate in ("(-40.5, 47.2, 35.0)", "(-58.0, 52.0, 52.0)", "(-42.0, 42.0, 30.0)", "(-36.0, 22.0, 44.0)"):
        assert coordinate in html, coordinate                     # still there for review, folded away
        assert coordinate not in outside, coordinate
    assert "Figure (not usable: verdict FAIL; shown for review only)" in html
    for name in ("target_t1w", "seed_map", "uncertainty", "gsr", "literature"):   # figures of the target: folded
        assert f'data-figure="{name}"' in html and f'data-figure="{name}"' not in html_outside_not_usable_folds(html)
    assert "These are the coordinates the navigator uses" not in outside
    # the same unit passing its motion check shows the candidates with their coordinates
    Path(inputs["denoise_qc_json"]).write_text(json.dumps(denoise_qc(tmp_path)))
    v = write_verdict(inputs)
    assert v["status"] == "warn" and any("MNI (-36.0, 22.0, 44.0) with 40 %" in r for r in v["reasons"])
    assert "(-36.0, 22.0, 44.0)" in text_outside_not_usable_folds(report.render_subject_html(inputs))


@pytest.mark.parametrize("minutes, status, words", [(4.0, "warn", "only 4.0 min of data kept"),
                                                     (2.5, "fail", "(minimum 3 min, denoising.min_retained_minutes)")])
def test_report_uses_the_run_thresholds(tmp_path, minutes, status, words):
    inputs = make_subject_inputs(tmp_path)
    Path(inputs["denoise_qc_json"]).write_text(json.dumps(denoise_qc(tmp_path, minutes_kept=minutes)))
    thresholds = thresholds_from_config({"denoising": {"min_retained_minutes": 3.0}})
    write_verdict(inputs, thresholds=thresholds)
    summary = _summary(inputs)
    assert f"QC: {status.upper()}" in summary and words in summary
    assert "minimum 5 min" not in summary
    assert "<tr><th><code>denoising.min_retained_minutes</code></th><td>3.00</td></tr>" in summary


def test_every_header_warning_is_a_finding(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    warnings = ["sub-01_task-rest_bold.nii.gz: the qform and sform disagree (a corner of the image moves 3.10 mm)",
                "sub-01_task-rest_bold.nii.gz: header TR 2.5 s differs from the sidecar's RepetitionTime 2 s",
                "sub-01_T1w.nii.gz: qform_code and sform_code are both 0, so the orientation is not recorded"]
    v = assess(*[json.loads(Path(inputs[k]).read_text()) for k in ("target_json", "native_json", "denoise_qc_json",
                                                                   "seed_json")], unit="sub-01", header_warnings=warnings)
    Path(inputs["verdict_json"]).write_text(json.dumps(v))
    summary = _summary(inputs)
    problems = summary.split("<ul class='banner-reasons")[1].split("</ul>")[0]
    assert "qform and sform disagree (a corner of the image moves 3.10 mm)" in problems
    assert "header TR 2.5 s differs" in problems
    assert "a left-right flip cannot be excluded" in problems
    assert problems.count("<li>") == 3 and "<h4>Problems</h4>" not in summary    # stated once, in the banner


def test_reliability_is_split_half_words_bootstrap_a_detail_and_candidates_shown(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    t = json.loads(Path(inputs["target_json"]).read_text())
    t["uncertainty"]["reliability"] = {
        "measure": "split-half", "median_distance_mm": 14.2, "first_vs_second_half_mm": 16.0, "repeats": 10,
        "limit_mm": 8.0, "reproducible": False,
        "plain_words": "targets from the two halves of the data lie 14 mm apart: not reproducible"}
    t["uncertainty"]["multiple_candidates"] = True
    t["uncertainty"]["candidates"] = [
        {"target_mni_ras_mm": [-42.0, 42.0, 30.0], "support_fraction": 0.55, "n_targets": 28},
        {"target_mni_ras_mm": [-36.0, 22.0, 44.0], "support_fraction": 0.4, "n_targets": 20}]
    Path(inputs["target_json"]).write_text(json.dumps(t))
    write_verdict(inputs)
    text = render_only(inputs, "summary", "uncertainty")
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert ("<p class='reliability-line' id='reliability-line'><b>Reliability (split halves):</b> targets from the "
            "two halves of the data lie 14 mm apart: not reproducible</p>") in summary
    assert "Judged reproducible" not in text
    unc = text.split('<section id="uncertainty">')[1].split("</section>")[0]
    boot = unc.split("<details class='bootstrap'>")[1].split("</details>")[0]
    assert "7.9 mm" in boot and "optimistic" in boot and "share" in boot
    assert "<details class='bootstrap'>" not in summary                      # a detail: once, in its section
    cands = summary.split("id='candidates'")[1].split("</div>")[0]
    assert "(-36.0, 22.0, 44.0)" in cands and "55 %" in cands and "40 %" in cands
    # each candidate's distance from the headline target (-42, 42, 30): the first is the same voxel
    assert "<td>same voxel</td>" in cands and "<td>25.1 mm</td>" in cands
    assert "id='candidates'" not in unc and "listed in the Summary" in unc and "14 mm apart" in unc
    t["uncertainty"]["multiple_candidates"] = False
    Path(inputs["target_json"]).write_text(json.dumps(t))
    assert "id='candidates'" not in render_only(inputs, "summary", "uncertainty")


def test_page_and_reportlet_files_share_the_figures_drawn_once(subject):
    import base64

    from tmstarget.report import page

    root, _, out, text = subject
    n_figs = sum(r.figure is not None for r in SUBJECT_REPORTLETS) + 2 * sum(r.flicker is not None
                                                                             for r in SUBJECT_REPORTLETS)
    assert len(FIGURE_CALLS) == n_figs == 15           # each figure drawn once for both outputs
    png = (root / "figs" / "seed_map.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in text
    assert sorted(p.name for p in (root / "figs").iterdir()) == sorted(report.reportlet_filenames())
    assert page.ENV.autoescape is True


# ----------------------------------------------------------------------------- issue 12: contradictions, figures, print


@pytest.fixture(scope="module")
def page_text(subject):
    return subject[3]


def _section_of(text: str, name: str) -> str:
    return text.split(f'<section id="{name}">')[1].split("</section>")[0]


def render_only(inputs: dict, *names: str, **kwargs) -> str:
    """The subject page with only the named sections: the figures of the other sections (carpets,
    registration views, seed map) cost most of a full render and these tests do not read them."""
    chosen = tuple(r for r in SUBJECT_REPORTLETS if r.name in names)
    assert [r.name for r in chosen] == [n for n in (r.name for r in SUBJECT_REPORTLETS) if n in names], names
    return report.render_subject_html(inputs, reportlets=chosen, **kwargs)


def test_no_contradictions_in_the_words(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    t = json.loads(Path(inputs["target_json"]).read_text())
    t["gsr_comparison"]["shift_mm"] = 0.0                       # same voxel with and without GSR
    t["uncertainty"]["split_half_distance_mm"] = 1.2
    Path(inputs["target_json"]).write_text(json.dumps(t))
    v = json.loads(Path(inputs["verdict_json"]).read_text())
    v.update(status="warn", status_word="WARN", reasons=["only 6.5 min of data kept after censoring"])
    Path(inputs["verdict_json"]).write_text(json.dumps(v))
    text = render_only(inputs, "summary", "seed_map", "uncertainty", "gsr", "literature", "caveats")
    assert "Good: status PASS" not in text and "Judged reproducible" not in text
    summary = _section_of(text, "summary")
    assert "<tr><th>Shift without GSR</th><td>&lt; 6 mm (same or neighbouring voxel of the 6 mm grid)</td></tr>" \
        in summary and "0.0 mm" not in text
    assert "1.2 mm" not in _section_of(text, "uncertainty") and "&lt; 6 mm" in _section_of(text, "uncertainty")
    # the reliability caveat names this run's own data and check, not only the literature
    assert "This run kept 12.5 min; its own split-half check says:" in _section_of(text, "caveats")
    # BA46 region (label) vs BA46 site (a point) and "(unverified)" are explained
    assert "<th>Inside the BA46 region (HCPex label)</th>" in summary
    lit = _section_of(text, "literature")
    assert "a target can lie inside the region and still 10-20 mm from the BA46 site point" in lit
    assert "(unverified): this coordinate is widely quoted but was not checked" in lit
    # the anticorrelated blob outside the search region is explained in the caption
    assert "Blue areas outside the green outline, even larger ones, are expected" in _section_of(text, "seed_map")


def test_seed_map_scale_includes_the_target_and_uses_the_subject_anatomy(subject):
    from matplotlib.text import Text

    from tmstarget.report import figures

    data = np.concatenate([np.linspace(-0.5, 0.5, 1000), [-0.86]])
    assert figures.seed_map_vmax(data, -0.86) >= 0.86
    assert figures.seed_map_vmax(data, -0.1) == pytest.approx(np.percentile(np.abs(data), 99), abs=1e-9)
    _, inputs, _, _ = subject
    fig = figures.render_seed_map(report.SubjectContext(inputs))
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert any("on the subject's T1w in MNI" in t for t in texts)
    assert texts.count("A") >= 2 and texts.count("P") >= 2          # sagittal views labelled
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_figure_fonts_are_readable_and_gsr_markers_stay_visible(subject):
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from tmstarget.report import figures

    _, inputs, _, _ = subject
    ctx = report.SubjectContext(inputs)
    for render in (figures.render_motion, figures.render_uncertainty, figures.render_gsr):
        fig = render(ctx)
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert sizes and min(sizes) >= 10, (render.__name__, min(sizes))  # 13.9 px at 100 dpi (issue 21: >= 12 px)
        plt.close(fig)
    t = json.loads(Path(inputs["target_json"]).read_text())
    t["gsr_comparison"] = {"strategy": "acompcor", "target_mni_ras_mm": t["target_mni_ras_mm"], "shift_mm": 0.0}
    ctx = report.SubjectContext(dict(inputs, target_json=None))
    ctx._cache["target_json"] = t
    fig = figures.render_gsr(ctx)
    rings = [c for ax in fig.axes for c in ax.collections if c.get_sizes()[0] > 200]
    assert len(rings) == 3 and all(len(c.get_facecolors()) == 0 or c.get_facecolors()[0][3] == 0 for c in rings)
    assert "same position" in fig._suptitle.get_text()
    plt.close(fig)


def test_literature_sites_are_named_in_the_figure(subject):
    import matplotlib.pyplot as plt

    from tmstarget.report import figures

    _, inputs, _, _ = subject
    fig = figures.render_literature(report.SubjectContext(inputs))
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "BA46 site" in legend and "Beam F3 site" in legend and "this target" in legend
    plt.close(fig)


def test_registration_views_are_large_with_a_css_only_switch(page_text):
    for name in ("bold_to_t1w", "t1w_to_mni"):
        sec = _section_of(page_text, name)
        assert f'<input type="checkbox" id="flip-{name}" class="flip-toggle">' in sec
        assert sec.count('class="fig flip-') == 2
        assert html.escape(REGISTRATION_FAILURE_WORDS) in sec
    # the switch itself (one image shown, the other after a click) is checked in Chromium
    # (test_report_browser.py::test_subject_report_in_chromium): it needs no script
    assert "<script" not in page_text
    from tmstarget.report.figures import REGISTRATION_FIGSIZE_IN
    assert REGISTRATION_FIGSIZE_IN[0] * 100 == 1050       # as wide as the page column: large, never scaled down


def test_print_footer_names_the_unit_and_the_time(page_text):
    """What the printed footer says; how the print stylesheet lays the page out is checked in Chromium
    (test_report_browser.py::test_print_layout_in_chromium)."""
    footer = page_text.split('<footer class="print-footer">')[1].split("</footer>")[0]
    assert footer.startswith("sub-01 - tmstarget ") and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+", footer)


def test_methods_show_the_command_that_was_run(tmp_path, monkeypatch):
    """Issue 21 item 6: the Methods show the command as typed (from OUT/logs/commands.jsonl) and where it
    was run; absolute paths are cut to names in the report, kept whole in the log."""
    import html

    from tmstarget.config.record import record_command

    out, workdir = tmp_path / "rec" / "out", tmp_path / "rec" / "study"
    (out / "logs").mkdir(parents=True)
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    record_command(out / "logs", ["demo/bids", "demo/out", "group", "--participant-label", "01 02", "--cores", "1"])
    inputs = make_subject_inputs(tmp_path)
    inputs["run_config"] = {"bids_dir": str(tmp_path / "bids"), "output_dir": str(out), "task": "rest"}
    methods = html.unescape(_section_of(render_only(inputs, "methods"), "methods"))
    assert "<code id='command-line'>tmstarget demo/bids demo/out group --participant-label '01 02' --cores 1</code>" \
        in methods
    assert "<code id='working-directory'>study</code>" in methods
    assert "--config logs/config.yaml" not in methods
    record = json.loads((out / "logs" / "commands.jsonl").read_text().splitlines()[-1])
    assert record["working_directory"] == str(workdir)


def test_glossary_and_methods(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    inputs["run_config"] = {"bids_dir": f"/data/{SECRET_DIR}/bids", "output_dir": f"/data/{SECRET_DIR}/out",
                            "participant_label": ["01"], "task": "rest",
                            "denoising": {"strategy": "fox", "min_retained_minutes": 3.0}}
    text = render_only(inputs, "glossary", "methods")
    glossary = _section_of(text, "glossary")
    for term in ("RAS", "MNI152NLin2009aSym", "r / Fisher z", "FD", "Censoring", "tSNR", "GSR", "aCompCor",
                 "Split-half", "Carpet plot", "Cluster rule", "HCPex", "5-cm rule", "Beam F3"):
        assert f"<dt>{term}</dt>" in glossary, term
    methods = _section_of(text, "methods")
    assert "following Fox et al. (2012)" in methods and "Biol Psychiatry. 2012;72(7):595-603." in methods
    import html
    words = html.unescape(methods)
    assert "with ANTs (Avants et al. 2008" in words and "the 'cluster' rule (Cash et al. 2021)" in words
    assert "also computed with the 'acompcor' strategy (aCompCor, Behzadi et al. 2007)" in words
    fmriprep = _section_of(report.render_subject_html(dict(inputs, input_route="fmriprep"),
                                                      reportlets=(report.SUBJECT_REPORTLETS[-2],)), "methods")
    assert "preprocessed with fMRIPrep (its derivatives were the input)" in fmriprep and "with ANTs" not in fmriprep
    # no command recorded in OUT/logs/commands.jsonl: an equivalent command, said to be one
    assert "<code id='command-line'>not recorded; equivalent: tmstarget bids out participant --participant-label 01 " \
           "--task rest --config logs/config.yaml</code>" in methods
    assert "min_retained_minutes: 3.0" in methods
    from tmstarget import __version__
    assert f"<tr><th>tmstarget version</th><td>{__version__}</td></tr>" in methods
    assert re.search(r"<td id='report-date'>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(UTC[+-]\d{4}\)</td>", methods)
    assert_private_and_escaped(text)


def test_group_report_names_template_version_units_and_spaces(tmp_path):
    from matplotlib.text import Text

    from tmstarget.report import figures

    rows = [{"unit": "sub-01", "status": "pass", "target_mni_x": -40.0, "target_mni_y": 40.0, "target_mni_z": 30.0},
            {"unit": "sub-02", "status": "fail", "target_mni_x": None, "target_mni_y": None, "target_mni_z": None}]
    fig = figures.render_group_targets(rows, "MNI152NLin2009aSym")
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert "sub-01" in texts and "sub-02" not in texts
    assert any("targets in MNI152NLin2009aSym" in t for t in texts)
    import matplotlib.pyplot as plt
    plt.close(fig)
    entries = []
    for k in range(2):
        t = target_markers(target_mni_ras_mm=[-40.0 - k, 40.0, 30.0])
        paths = {key: tmp_path / f"u{k}_{key}.json" for key in ("target_json", "native_json", "denoise_qc_json",
                                                                "seed_json")}
        objs = {"target_json": t, "native_json": native_markers(t, tmp_path), "denoise_qc_json": denoise_qc(tmp_path),
                "seed_json": seed_sidecar()}
        for key, obj in objs.items():
            paths[key].write_text(json.dumps(obj))
        entries.append({"unit": f"sub-0{k + 1}", **{k2: str(v) for k2, v in paths.items()},
                        "report_html": f"sub-0{k + 1}.html"})
    text = build_group_report(entries, tmp_path / "group.html", tmp_path / "g.tsv").read_text()
    assert "<th>scalp to cortex (mm)</th>" in text and "<td>18.3</td>" in text
    about = text.split("id='group-about'>")[1].split("</p>")[0]
    assert "MNI152NLin2009aSym" in about and "each in their own subject's T1w world space" in about
    from tmstarget import __version__
    assert f"tmstarget {__version__}, report made " in about and re.search(r"\(UTC[+-]\d{4}\)", about)


def test_methods_paragraph_says_which_cluster_rule_ran():
    from tmstarget.report.methods import cluster_rule_words

    default = {"rule": "cluster", "percentile": 20.0, "percentile_of": "all", "weight_by_abs_r": True,
               "connectivity": 26}
    assert cluster_rule_words(default) == (
        ", here: voxels at or below the 20th percentile of all search voxels, the largest 26-connected cluster "
        "and its |r|-weighted centre, snapped to the nearest grey-matter search voxel")
    cash = {**default, "percentile": 10.0, "percentile_of": "negative", "weight_by_abs_r": False}
    assert "10th percentile of the negative r values" in cluster_rule_words(cash)
    assert "its unweighted centroid" in cluster_rule_words(cash)
    # seedmap records the cluster settings under "cluster"; peak has none
    assert "20th percentile of all" in cluster_rule_words({"rule": "seedmap", "cluster": default})
    assert cluster_rule_words({"rule": "peak"}) == "" and cluster_rule_words(None) == ""


# ----------------------------------------------------------------------------- the T1w drawn once, where it is


def test_t1w_figures_draw_the_resampled_t1w_where_the_markers_are(tmp_path):
    """An oblique T1w (tilted 12 degrees, 1.3 mm voxels) with a bright ball at the target: the report's one
    resampled copy (axis-aligned, DISPLAY_VOXEL_MM) keeps the ball's world position, and in each view of the
    target figure the ball is drawn under the yellow X within one displayed pixel."""
    import matplotlib.pyplot as plt

    from builders.nifti import centres_ras_mm
    from builders.report_unit import TARGET_T1W, head_t1, save_private_nifti
    from tmstarget.report.common import DISPLAY_VOXEL_MM

    inputs = make_subject_inputs(tmp_path)
    a = np.deg2rad(12.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) * 1.3
    shape = (140, 170, 150)
    affine[:3, 3] = np.asarray([0.0, -18.0, 10.0]) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    data = head_t1(shape, affine)
    target = np.asarray(TARGET_T1W)
    data[np.linalg.norm(centres_ras_mm(shape, affine) - target, axis=-1) <= 4.0] = 400.0
    inputs["t1w"] = str(save_private_nifti(tmp_path / "oblique_T1w.nii.gz", data, affine))
    ctx = report.SubjectContext(inputs)
    grid = ctx.on_t1w_grid("t1w")
    assert np.allclose(grid.affine[:3, :3], np.eye(3) * DISPLAY_VOXEL_MM)            # axis-aligned, display voxels
    ball = np.asarray(grid.dataobj) > 250
    centre_ras_mm = nib.affines.apply_affine(grid.affine, np.argwhere(ball).mean(0))
    assert np.linalg.norm(centre_ras_mm - target) < 0.5 * DISPLAY_VOXEL_MM              # mm
    assert ctx.on_t1w_grid("t1w") is grid                                                # resampled once
    fig = report.render_target_t1w(ctx)
    fig.canvas.draw()
    checked = 0
    for ax in fig.axes:
        if ax.get_position().y0 < 0.45 or not ax.get_images():                           # the row cut at the target
            continue
        marks = [ln for ln in ax.lines if ln.get_marker() == "X" and ln.get_color() == "yellow"]
        slices = [im for im in ax.get_images() if im.get_array().ndim == 2]         # not the black backdrop
        if not marks or not slices:
            continue
        im = slices[-1]
        arr = np.ma.filled(im.get_array(), 0)
        left, right, bottom, top = im.get_extent()
        rows, cols = np.nonzero(arr > 250)
        origin_lower = im.origin == "lower"
        x = left + (cols.mean() + 0.5) / arr.shape[1] * (right - left)
        y = (bottom + (rows.mean() + 0.5) / arr.shape[0] * (top - bottom)) if origin_lower else \
            (top - (rows.mean() + 0.5) / arr.shape[0] * (top - bottom))
        mm_per_px = abs(np.diff(ax.get_xlim())[0]) / ax.get_window_extent().width
        assert np.hypot(x - marks[0].get_xdata()[0], y - marks[0].get_ydata()[0]) <= max(mm_per_px, 0.5), ax
        checked += 1
    plt.close(fig)
    assert checked == 3                                                                  # sagittal, coronal, axial
