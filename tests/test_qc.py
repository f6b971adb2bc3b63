"""The verdict of one unit (tmstarget.qc.verdict, findings, gate): JSON contract, configured thresholds, header and registration
findings, reliability, the export gate and the group table. Plain dict fixtures; runs in about a second."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tmstarget.qc.actions import ACTIONS, FINDING_ACTIONS, minutes_action
from tmstarget.qc.findings import CODES_ZERO_RISK, TOPICS, header_finding
from tmstarget.qc.gate import export_gate
from tmstarget.qc.headers import bold_header_warnings
from tmstarget.qc.verdict import (THRESHOLDS, default_thresholds, assess, failed_verdict, resolved_thresholds, run_verdict,
                                  thresholds_from_config)
from tmstarget.qc.group import GROUP_COLUMNS, group_row, write_group_tsv

CONTRACT_KEYS = {"status", "status_word", "action", "reasons", "findings", "coordinate_usable", "thresholds",
                 "unit", "Sources"}


def target(**overrides) -> dict:
    t = {"target_mni_ras_mm": [-42.0, 42.0, 30.0], "method": "cluster", "r_at_target": -0.41,
         "z_at_target": -0.44, "in_ba46": True, "in_search_mask": True,
         "uncertainty": {"median_distance_mm": 3.1, "p95_distance_mm": 7.9, "split_half_distance_mm": 4.2,
                         "split_half_median_distance_mm": 5.0, "confident": True},
         "gsr_comparison": {"shift_mm": 6.4}, "denoising": {"minutes_kept": 12.5}}
    t.update(overrides)
    return t


def native(**overrides) -> dict:
    n = {"target_t1w_ras_mm": [-40.5, 47.25, 35.0], "scalp_to_cortex_mm": 18.3, "roundtrip_error_mm": 0.3,
         "t1w_qform_sform": {"qform_code": 1, "sform_code": 1, "affine_used": "sform", "max_difference_mm": 0.0}}
    n.update(overrides)
    return n


def denoise(minutes=12.5, fd=0.1) -> dict:
    return {"minutes_kept": minutes, "runs": [{"volumes_total": 200, "mean_fd_mm": fd}]}


def seed() -> dict:
    return {"seed_voxels_total": 19, "seed_voxels_in_mask": 19, "seed_median_tsnr": 42.0,
            "seed_low_tsnr_fraction": 0.1, "min_seed_tsnr": 20.0}


def verdict(t=None, n="default", q=None, s="default", **kw) -> dict:
    return assess(target() if t is None else t, native() if n == "default" else n,
                     denoise() if q is None else q, seed() if s == "default" else s, unit="sub-01", **kw)


def test_good_unit_passes_with_the_contract_keys():
    v = verdict()
    assert set(v) == CONTRACT_KEYS
    assert (v["status"], v["status_word"], v["reasons"], v["coordinate_usable"]) == ("pass", "PASS", [], True)
    assert v["unit"] == "sub-01" and v["action"].startswith("usable for research")
    assert all(set(f) == {"level", "topic", "kind", "text"} and f["topic"] in TOPICS for f in v["findings"])
    assert all(f["kind"] in FINDING_ACTIONS or f["kind"] in ("minutes", "bootstrap") for f in v["findings"])
    assert v["thresholds"]["fail_minutes"] == {"value": 5.0, "config_key": "denoising.min_retained_minutes"}
    # every threshold is a configuration key
    assert {t["config_key"] for t in v["thresholds"].values()} == set(THRESHOLDS.values())
    json.dumps(v, allow_nan=False)


def test_configured_minimum_minutes_gives_the_matching_sentence():
    """Issue 16 item 4: a run allowed with 3 minutes must not be judged against a hidden 5-minute minimum."""
    config = {"denoising": {"min_retained_minutes": 3.0, "warn_retained_minutes": 10.0}}
    thresholds = thresholds_from_config(config)
    assert thresholds["fail_minutes"] == 3.0 and thresholds["warn_minutes"] == 10.0
    v = verdict(q=denoise(minutes=4.0), thresholds=thresholds)
    assert v["status"] == "warn"
    assert v["reasons"] == ["only 4.0 min of data kept after censoring (below 10 min targets are less reliable)"]
    assert v["action"] == ("usable for research with care: acquire 6 more minutes of resting-state data (this run "
                           "kept 4.0 min, 10 min give a more reliable target)")
    assert v["thresholds"]["fail_minutes"]["value"] == 3.0
    v = verdict(q=denoise(minutes=2.5), thresholds=thresholds)
    assert v["status"] == "fail" and not v["coordinate_usable"]
    assert v["reasons"][0] == ("only 2.5 min of data kept after censoring (minimum 3 min, "
                               "denoising.min_retained_minutes)")
    assert v["action"] == ("do not use this coordinate: re-scan with a longer resting-state run (this run kept "
                           "2.5 min, the minimum is 3 min, 10 min give a more reliable target)")


def test_thresholds_from_config_reads_every_key_and_defaults():
    assert thresholds_from_config({}) == default_thresholds()
    assert default_thresholds()["fail_minutes"] == 5.0 and default_thresholds()["warn_mean_fd_mm"] == 0.2
    cfg = {"qc": {"fail_mean_fd_mm": 0.3, "warn_mean_fd_mm": 0.1}, "seed": {"max_low_tsnr_fraction": 0.2},
           "targeting": {"confident_split_half_median_mm": 4.0}}
    th = thresholds_from_config(cfg)
    assert (th["fail_mean_fd_mm"], th["warn_mean_fd_mm"], th["warn_seed_low_tsnr_fraction"],
            th["reliability_limit_mm"]) == (0.3, 0.1, 0.2, 4.0)
    v = verdict(q=denoise(fd=0.35), thresholds=th)   # fail texts first, then warnings
    assert v["status"] == "fail"
    assert v["reasons"] == ["mean framewise displacement 0.35 mm (above 0.3 mm)",
                            "target not reproducible: the targets of repeated split halves lie a median 5.0 mm "
                            "apart (limit 4 mm)"]
    assert verdict()["status"] == "pass"                 # 5.0 mm is within the default 8 mm
    with pytest.raises(TypeError, match="unknown QC threshold"):
        verdict(thresholds={"fail_minuets": 3})


def test_codes_zero_header_warning_is_a_warn_with_the_plain_risk():
    msg = ("/data/SITE/sub-01_task-rest_bold.nii.gz: qform_code and sform_code are both 0, so the BOLD run's "
           "orientation in the scanner is not recorded; using voxel sizes only")
    v = verdict(header_warnings=[msg, msg])
    assert v["status"] == "warn"
    header = [f for f in v["findings"] if f["topic"] == "header" and f["level"] == "warn"]
    assert len(header) == 1 and "SITE" not in header[0]["text"]
    assert header[0]["text"].startswith("sub-01_task-rest_bold.nii.gz: the image header records no orientation")
    assert header[0]["text"].endswith(CODES_ZERO_RISK)
    assert "vitamin-E marker" in v["action"]


def test_bold_header_warnings_from_the_header(tmp_path):
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 5), np.float32), affine)
    img.header.set_zooms((3.0, 3.0, 3.0, 2.5))
    img.set_qform(affine, 1)
    shifted = affine.copy()
    shifted[0, 3] = 5.0
    img.set_sform(shifted, 1)
    nib.save(img, tmp_path / "b.nii.gz")
    msgs = bold_header_warnings(tmp_path / "b.nii.gz", 2.0)
    assert len(msgs) == 2
    assert "disagree (a corner of the image moves 5.00 mm" in msgs[0]
    assert "header TR 2.5 s differs from the sidecar's RepetitionTime 2 s" in msgs[1]
    img.set_qform(affine, 0)
    img.set_sform(affine, 0)
    img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
    nib.save(img, tmp_path / "c.nii.gz")
    [msg] = bold_header_warnings(tmp_path / "c.nii.gz", 2.0)
    assert header_finding(msg).text.endswith(CODES_ZERO_RISK)


def test_bold_header_tr_honours_its_unit(tmp_path):
    """The header TR is read with its unit (msec and usec, as tmstarget.io.nifti.read_t_r reads it)."""
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    for unit, zoom in (("msec", 2000.0), ("usec", 2.0e6), ("sec", 2.0)):
        img = nib.Nifti1Image(np.zeros((4, 4, 4, 5), np.float32), affine)
        img.header.set_zooms((3.0, 3.0, 3.0, zoom))
        img.header.set_xyzt_units("mm", unit)
        nib.save(img, tmp_path / f"{unit}.nii.gz")
        assert bold_header_warnings(tmp_path / f"{unit}.nii.gz", 2.0) == []
        [msg] = bold_header_warnings(tmp_path / f"{unit}.nii.gz", 2.5)
        assert "header TR 2 s differs from the sidecar's RepetitionTime 2.5 s" in msg


def test_registration_checks_become_findings_and_a_fail_fails():
    reg = {"checks": [{"name": "template_correlation", "value": 0.91, "threshold": 0.8, "level": "pass",
                       "text": "T1w-template correlation 0.91"},
                      {"name": "brain_volume_ml", "value": 3100, "threshold": 2200, "level": "fail",
                       "text": "brain mask volume 3100 ml (above 2200 ml)"}], "status": "fail"}
    v = verdict(registration_qc=reg)
    reg_f = [f for f in v["findings"] if f["topic"] == "registration"]
    assert [f["level"] for f in reg_f] == ["pass", "fail"]
    assert v["status"] == "fail"
    assert v["reasons"] == ["the T1w could not be aligned reliably: brain mask volume 3100 ml (above 2200 ml)"]
    assert "T1w could not be aligned" in v["action"]


def test_reliability_is_the_split_half_finding_and_bootstrap_is_info():
    unc = {"p95_distance_mm": 14.0, "reliability": {
        "measure": "split-half", "median_distance_mm": 11.2, "first_vs_second_half_mm": 9.0, "repeats": 20,
        "limit_mm": 8.0, "reproducible": False,
        "plain_words": "halves of the data give targets a median 11.2 mm apart (limit 8 mm)"}}
    v = verdict(t=target(uncertainty=unc))
    assert v["status"] == "warn"
    assert v["reasons"] == ["target not reproducible: halves of the data give targets a median 11.2 mm apart "
                            "(limit 8 mm)"]
    info = [f for f in v["findings"] if f["level"] == "info" and "bootstrap" in f["text"]]
    assert len(info) == 1 and "14.0 mm" in info[0]["text"]
    unc["reliability"]["reproducible"] = True
    assert verdict(t=target(uncertainty=unc))["status"] == "pass"
    unc.update(multiple_candidates=True, candidates=[
        {"target_mni_ras_mm": [-40, 40, 30], "support": 0.55}, {"target_mni_ras_mm": [-36, 24, 44], "support": 0.45}])
    v = verdict(t=target(uncertainty=unc))
    assert v["status"] == "warn"
    assert v["reasons"] == ["two or more separated candidate targets: MNI (-40.0, 40.0, 30.0) with 55 % of the "
                            "split-half targets; MNI (-36.0, 24.0, 44.0) with 45 % of the split-half targets"]


def test_constant_volumes_are_a_data_finding():
    q = denoise()
    q["runs"][0]["constant_volumes"] = [17, 18]
    v = verdict(q=q)
    assert v["status"] == "warn"
    assert v["reasons"] == ["2 all-zero or constant volume(s) in the BOLD data were censored (a scanner or "
                            "conversion fault, not brain signal)"]


def test_missing_native_fails_and_run_verdict_writes_the_json(tmp_path):
    files = {}
    for key, obj in (("target_json", target()), ("denoise_qc_json", denoise()), ("seed_json", seed())):
        files[key] = tmp_path / f"{key}.json"
        files[key].write_text(json.dumps(obj))
    files["native_json"] = tmp_path / "absent.json"
    side = tmp_path / "bold.json"
    side.write_text(json.dumps({"HeaderWarnings": ["x.nii.gz: header TR 3 s differs from the sidecar's "
                                                   "RepetitionTime 2 s; using the sidecar (BIDS rule)"]}))
    out = tmp_path / "sub-01_desc-verdict_qc.json"
    v = run_verdict({**{k: str(p) for k, p in files.items()}, "bold_sidecars": [str(side)]}, out, "sub-01",
                       thresholds={"fail_minutes": 3.0})
    assert json.loads(out.read_text()) == v
    assert v["status"] == "fail" and not v["coordinate_usable"]
    assert v["reasons"][0].startswith("no T1w-space target")
    assert "x.nii.gz: header TR 3 s differs" in v["reasons"][1]
    assert v["Sources"] == ["absent.json", "denoise_qc_json.json", "seed_json.json", "target_json.json"]
    assert str(tmp_path) not in out.read_text()


def test_export_gate_writes_only_a_note_on_fail(tmp_path):
    nav = tmp_path / "nav"
    bad = tmp_path / "fail.json"
    bad.write_text(json.dumps(verdict(q=denoise(minutes=2.0))))
    assert export_gate(bad, nav) is False
    assert [p.name for p in nav.iterdir()] == ["NOT_EXPORTED.txt"]
    note = (nav / "NOT_EXPORTED.txt").read_text()
    assert "verdict is FAIL" in note and "only 2.0 min of data kept" in note and "Action: do not use" in note
    good = tmp_path / "warn.json"
    good.write_text(json.dumps(verdict(q=denoise(minutes=7.0))))
    assert export_gate(good, nav) is True and not (nav / "NOT_EXPORTED.txt").exists()
    assert export_gate(tmp_path / "missing.json", nav) is False
    assert "could not be read" in (nav / "NOT_EXPORTED.txt").read_text()


def test_group_row_takes_the_verdict_and_hides_failed_coordinates(tmp_path):
    rows = []
    for unit, minutes in (("sub-01", 12.5), ("sub-02", 2.0)):
        paths = {}
        for key, obj in (("target_json", target()), ("native_json", native()), ("denoise_qc_json", denoise(minutes)),
                         ("seed_json", seed()),
                         ("verdict_json", verdict(q=denoise(minutes), thresholds={"fail_minutes": 3.0}))):
            paths[key] = tmp_path / f"{unit}_{key}.json"
            paths[key].write_text(json.dumps(obj))
        rows.append(group_row({"unit": unit, **{k: str(p) for k, p in paths.items()}}))
    write_group_tsv(rows, tmp_path / "group_targets.tsv")
    tsv = pd.read_csv(tmp_path / "group_targets.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    assert list(tsv.columns) == list(GROUP_COLUMNS)
    assert tsv["status"].tolist() == ["pass", "fail"]
    assert tsv["coordinate_usable"].tolist() == [True, False]
    assert tsv["reasons"].iloc[1] == "only 2.0 min of data kept after censoring (minimum 3 min, " \
                                     "denoising.min_retained_minutes)"
    np.testing.assert_allclose(tsv["target_t1w_y"].iloc[0], 47.25, atol=1e-9)
    assert tsv[[f"target_{s}_{a}" for s in ("mni", "t1w") for a in "xyz"]].iloc[1].isna().all()
    np.testing.assert_allclose(tsv["split_half_median_mm"], 5.0, atol=1e-9)
    np.testing.assert_allclose(tsv["scalp_to_cortex_mm"], 18.3, atol=1e-9)


def test_a_bold_to_t1w_registration_failure_names_the_bold_in_the_action():
    bold = verdict(registration_qc={"status": "fail", "checks": [
        {"name": "bold_wm_boundary_fraction", "value": 0.43, "level": "fail",
         "text": "sub-01_task-rest: BOLD grey/white contrast 0.43 is below 0.6: the BOLD run could not be "
                 "aligned to the T1w; the target is not usable"}]})
    assert bold["status"] == "fail" and "the BOLD run could not be aligned to the T1w" in bold["action"]
    assert "the T1w could not be aligned:" not in bold["action"]


# ----------------------------------------------------------------------------- issue 21 item 2: one action per finding


def _only(v: dict, level: str) -> list[str]:
    return [f["kind"] for f in v["findings"] if f["level"] == level]


def test_each_finding_kind_has_an_action_at_each_level_it_is_emitted():
    """Every (kind, level) the verdict can give has its own sentence; no sentence mentions clinical use (the
    report says "Research coordinate, not a clinical verdict" above it)."""
    for kind, by_level in FINDING_ACTIONS.items():
        for level, sentence in by_level.items():
            assert level in ("warn", "fail") and sentence and "clinical" not in sentence, (kind, level)
    assert "clinical" not in " ".join(ACTIONS.values())


@pytest.mark.parametrize("kept, warn_min, more, words", [(5.3, 8.0, 3, "3 more minutes"), (7.2, 8.0, 1, "1 more minute "),
                                                         (7.0, 8.0, 1, "1 more minute "), (4.01, 10.0, 6, "6 more minutes")])
def test_minutes_warn_asks_for_the_missing_minutes_computed_from_the_threshold(kept, warn_min, more, words):
    th = thresholds_from_config({"denoising": {"min_retained_minutes": 3.0, "warn_retained_minutes": warn_min}})
    v = verdict(q=denoise(minutes=kept), thresholds=th)
    assert _only(v, "warn") == ["minutes"]
    assert more == int(np.ceil(warn_min - kept))
    assert v["action"] == (f"usable for research with care: acquire {words.strip()} of resting-state data (this run "
                           f"kept {kept:.1f} min, {warn_min:g} min give a more reliable target)")


def test_minutes_at_or_above_the_threshold_ask_for_nothing():
    th = resolved_thresholds(None)
    assert minutes_action("warn", 8.0, th) is None and minutes_action("warn", 9.7, th) is None
    assert minutes_action("warn", None, th) is None


def test_constant_volumes_with_enough_minutes_do_not_ask_for_more_minutes():
    """9.7 min kept (above the 8 min warning) and all-zero volumes: the action is about the conversion."""
    q = denoise(minutes=9.7)
    q["runs"][0]["constant_volumes"] = [0, 1, 2]
    v = verdict(q=q)
    assert _only(v, "warn") == ["constant_volumes"]
    assert v["action"] == ("usable for research with care: check the BOLD conversion (all-zero or constant volumes "
                           "are a scanner or conversion fault, censored, so no re-scan is needed for them)")
    assert "minute" not in v["action"]


def test_header_tr_mismatch_asks_to_confirm_the_tr_not_the_orientation():
    v = verdict(header_warnings=["sub-01_task-rest_bold.nii.gz: header TR 2.5 s differs from the sidecar's "
                                 "RepetitionTime 2 s; using the sidecar (BIDS rule)"])
    assert _only(v, "warn") == ["header_tr"]
    assert v["action"] == ("usable for research with care: confirm the TR with the scan protocol (the sidecar's "
                           "RepetitionTime was used, not the header's) and correct the file that is wrong")
    assert "orientation" not in v["action"] and "fiducial" not in v["action"]


@pytest.mark.parametrize("message, kind, words", [
    ("b.nii.gz: qform_code and sform_code are both 0, so the orientation is not recorded", "header_orientation",
     "confirm the left-right orientation (fiducial or vitamin-E marker) before stimulating"),
    ("b.nii.gz: the qform and sform disagree (a corner of the image moves 3.10 mm between them)", "header_qform_sform",
     "check which of qform and sform your navigator reads (they disagree in the file named above)"),
    ("b.nii.gz: something else about the header", "header_other", "check the image header named above")])
def test_each_header_warning_kind_has_its_action(message, kind, words):
    v = verdict(header_warnings=[message])
    assert _only(v, "warn") == [kind]
    assert v["action"] == f"usable for research with care: {words}"


@pytest.mark.parametrize("change, kind, level, words", [
    (lambda t, n, q, s: q["runs"][0].update(mean_fd_mm=0.3), "motion", "warn",
     "look at the motion and carpet plots (more head motion than usual)"),
    (lambda t, n, q, s: q["runs"][0].update(mean_fd_mm=0.9), "motion", "fail",
     "re-scan with less head motion (padding, instructions)"),
    (lambda t, n, q, s: s.update(seed_low_tsnr_fraction=0.8), "seed_tsnr", "warn",
     "look at the seed tSNR figure (with sgACC signal dropout the target is less reliable)"),
    (lambda t, n, q, s: s.update(seed_voxels_in_mask=5), "seed_fov", "warn",
     "check that the BOLD field of view covers the subgenual cingulate (seed tSNR figure)"),
    (lambda t, n, q, s: t.update(z_at_target=-0.05), "anticorrelation", "warn",
     "compare with the anatomical BA46 site (the anticorrelation at the target is weak)"),
    (lambda t, n, q, s: t.update(z_at_target=0.2), "anticorrelation", "fail",
     "re-scan (the seed map shows no anticorrelated target, check the seed tSNR figure first)"),
    (lambda t, n, q, s: t["uncertainty"].update(split_half_median_distance_mm=12.0), "reliability", "warn",
     "acquire more data or prefer the anatomical site (the target is not stable in this data)"),
    (lambda t, n, q, s: t["uncertainty"].update(multiple_candidates=True, candidates=[]), "candidates", "warn",
     "choose between the candidate targets with a specialist (Reliability section), or acquire more data"),
    (lambda t, n, q, s: t["gsr_comparison"].update(shift_mm=14.0), "gsr", "warn",
     "compare the targets with and without global signal regression (GSR section): the target depends on it"),
    (lambda t, n, q, s: t.update(in_ba46=False), "ba46", "warn",
     "check on the T1w figure that the target lies in the left middle frontal gyrus"),
    (lambda t, n, q, s: t.update(in_search_mask=False), "search_mask", "warn",
     "check on the seed map that the target lies in the left-DLPFC search region"),
    (lambda t, n, q, s: n.update(roundtrip_error_mm=2.5), "roundtrip", "warn",
     "check the T1w-MNI transforms (round trip above the limit) and rerun the native step"),
    (lambda t, n, q, s: n["t1w_qform_sform"].update(max_difference_mm=2.0), "t1w_qform_sform", "fail",
     "fix the T1w header named above (qform and sform must agree) and rerun"),
])
def test_each_finding_kind_gives_its_own_action(change, kind, level, words):
    t, n, q, s = target(), native(), denoise(), seed()
    change(t, n, q, s)
    v = verdict(t, n, q, s)
    assert v["status"] == level and _only(v, level) == [kind]
    start = {"warn": "usable for research with care", "fail": "do not use this coordinate"}[level]
    assert v["action"] == f"{start}: {words}"


def test_missing_inputs_and_stopped_runs_have_their_actions():
    v = verdict(s=None)
    assert _only(v, "warn") == ["seed_missing"]
    assert v["action"] == ("usable for research with care: rerun the seed-map step (its sidecar is missing) to check "
                           "sgACC signal dropout")
    v = verdict(n=None)
    assert _only(v, "fail") == ["no_native"]
    assert v["action"] == ("do not use this coordinate: rerun the workflow (the T1w-space stage did not finish, its "
                           "log says why)")
    v = verdict(q={"runs": [{"volumes_total": 200, "mean_fd_mm": 0.1}]}, t=target(denoising={}))
    assert _only(v, "warn") == ["minutes_unknown"]
    f = failed_verdict("sub-01", ["job native failed"])
    assert f["findings"][0]["kind"] == "workflow_error"
    assert f["action"] == "do not use this coordinate: fix the cause named above and run the same command again"


@pytest.mark.parametrize("name, kind, words", [
    ("bold_wm_boundary_fraction", "registration_bold", "look at the BOLD-to-T1w figure (the red edges must follow "
                                                       "the brain)"),
    ("template_correlation", "registration_t1w", "look at the T1w-to-MNI figure (the template edges must follow the "
                                                 "brain)")])
def test_registration_warn_points_to_its_own_figure(name, kind, words):
    v = verdict(registration_qc={"checks": [{"name": name, "value": 0.5, "level": "warn", "text": "low"}],
                                 "status": "warn"})
    assert _only(v, "warn") == [kind] and v["action"] == f"usable for research with care: {words}"


def test_two_findings_give_two_actions_once_each_in_finding_order():
    q = denoise(minutes=6.0)
    q["runs"][0]["constant_volumes"] = [3]
    v = verdict(q=q, header_warnings=["a.nii.gz: header TR 2.5 s differs", "b.nii.gz: header TR 2.5 s differs"])
    assert _only(v, "warn") == ["minutes", "constant_volumes", "header_tr", "header_tr"]
    parts = v["action"].split(": ", 1)[1].split("; ")
    assert parts[0].startswith("acquire 2 more minutes") and parts[1].startswith("check the BOLD conversion")
    assert sum("confirm the TR" in p for p in parts) == 1
