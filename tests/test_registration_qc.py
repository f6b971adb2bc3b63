"""Registration checks (tmstarget.preproc.registration_qc) and the registration helpers (tmstarget.preproc.registration):
levels and texts, measurements from files, the verdict FAIL and the export gate, the rotation search,
the working resolution and the thread pin. Small generated images; about half a minute."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tmstarget.preproc import templates as ptpl
from tmstarget.qc import gate
from tmstarget.qc import verdict as qc
from tmstarget.preproc import registration as rg
from tmstarget.preproc import registration_qc as rq
from tmstarget.preproc.headers import RAS_TO_LPS, nifti_to_ants


def test_levels_and_status():
    checks = rq.anat_checks(0.93, 1659.0)
    assert [c["level"] for c in checks] == ["pass", "pass"]
    assert rq.status_of(checks) == "pass"
    assert [c["level"] for c in rq.anat_checks(0.6, 2100.0)] == ["warn", "warn"]
    failed = rq.anat_checks(0.35, 1482.0)
    assert failed[0]["level"] == "fail" and rq.status_of(failed) == "fail"
    assert "the T1w could not be aligned to the template; the target is not usable" in failed[0]["text"]
    assert rq.anat_checks(0.9, 2500.0)[1]["level"] == "fail"
    run = rq.bold_checks("sub-01_task-rest", 0.9, 0.05)
    assert [c["level"] for c in run] == ["pass", "fail"] and run[1]["run"] == "sub-01_task-rest"
    assert "could not be aligned to the T1w" in run[1]["text"]
    # thresholds are settings
    assert rq.anat_checks(0.6, 1500.0, {"warn_template_correlation": 0.5})[0]["level"] == "pass"
    with pytest.raises(TypeError, match="unknown"):
        rq.resolve_thresholds({"warn_template_corr": 0.5})


def _template_files(tmp_path, shift_vox=0):
    """The 2 mm template as an 'MNI-space T1w', its mask as BOLD mask (optionally shifted)."""
    tpl = ptpl.load_template(2)
    t1 = np.roll(tpl["t1"].get_fdata(), shift_vox, axis=1)
    mask = np.roll(tpl["mask"].get_fdata() > 0, shift_vox, axis=1)
    paths = {"t1w_mni": tmp_path / f"t1_{shift_vox}.nii.gz", "mask_mni": tmp_path / f"m_{shift_vox}.nii.gz"}
    nib.save(nib.Nifti1Image(t1.astype(np.float32), tpl["t1"].affine), paths["t1w_mni"])
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), tpl["t1"].affine), paths["mask_mni"])
    return paths


def test_measurements_from_files_see_a_shift(tmp_path):
    good = _template_files(tmp_path, 0)
    bad = _template_files(tmp_path, 10)  # 20 mm along y
    assert rq.template_correlation(good["t1w_mni"]) == pytest.approx(1.0, abs=1e-6)
    assert rq.template_correlation(bad["t1w_mni"]) < 0.5
    assert rq.mask_dice_with_template(good["mask_mni"]) == pytest.approx(1.0)
    assert rq.mask_dice_with_template(bad["mask_mni"]) < 0.8
    # brain volume of the template's own mask: 2 mm voxels
    vol = rq.brain_volume_ml(good["mask_mni"])
    assert 1500 < vol < 2200, vol
    # the same T1w as 'BOLD in T1w': edges agree; 10 mm off: much less
    t1 = nib.load(good["t1w_mni"])
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.roll(t1.get_fdata(), 5, axis=1).astype(np.float32), t1.affine), shifted)
    same = rq.bold_t1w_edge_correlation(good["t1w_mni"], good["t1w_mni"], good["mask_mni"])
    off = rq.bold_t1w_edge_correlation(shifted, good["t1w_mni"], good["mask_mni"])
    assert same == pytest.approx(1.0, abs=1e-3) and off < 0.6, (same, off)  # T1w masked: not exactly 1


def test_mask_dice_is_judged_within_the_field_of_view(tmp_path):
    """A run that images a 60 mm axial slab (MNI z -10..+50, which holds the sgACC seed and the DLPFC) with a
    correct mask: Dice with the whole template brain is low (what it never imaged counts as a miss: a WARN,
    and a thinner slab FAILs), within its field of view (non-zero MNI BOLD reference) it is 1. The same
    slab's mask 20 mm off along y still lowers it."""
    tpl = ptpl.load_template(2)
    nz = tpl["t1"].shape[2]
    z_mm = (tpl["t1"].affine @ np.vstack([np.zeros((2, nz)), np.arange(nz)[None], np.ones((1, nz))]))[2]
    slab = np.zeros(tpl["t1"].shape, bool)
    slab[:, :, (z_mm >= -10) & (z_mm <= 50)] = True
    brain = tpl["mask"].get_fdata() > 0
    paths = {}
    for name, arr, dtype in (("mask", brain & slab, np.uint8), ("off", np.roll(brain, 10, axis=1) & slab, np.uint8),
                             ("boldref", np.where(slab, 100.0 + tpl["t1"].get_fdata(), 0.0), np.float32)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr.astype(dtype), tpl["t1"].affine), paths[name])
    whole = rq.mask_dice_with_template(paths["mask"])
    in_fov = rq.mask_dice_with_template(paths["mask"], paths["boldref"])
    off = rq.mask_dice_with_template(paths["off"], paths["boldref"])
    coverage = rq.template_brain_coverage(paths["mask"])
    print(f"slab: Dice whole brain {whole:.3f}, within the field of view {in_fov:.3f}, 20 mm off {off:.3f}; "
          f"coverage {coverage:.3f}")
    assert whole < 0.80 and in_fov == pytest.approx(1.0) and off < 0.9  # measured 0.756, 1.000, 0.849
    assert coverage == pytest.approx((brain & slab).sum() / brain.sum())
    check = rq.bold_checks("r", in_fov, None, coverage=coverage, dice_in_fov=True)[0]
    assert check["level"] == "pass" and check["coverage"] == pytest.approx(coverage, abs=1e-4)
    assert "within the run's field of view" in check["text"]
    assert check["text"].endswith(f"(the run covers {100 * coverage:.0f}% of the template brain)")
    # through assess_registration: the field of view is used when the MNI BOLD reference is given
    result = rq.assess_registration({}, [{"name": "r", "mask_mni": str(paths["mask"]), "boldref_mni": str(paths["boldref"])}])
    (dice,) = result["checks"]
    assert dice["value"] == pytest.approx(1.0) and "field of view" in dice["text"] and dice["level"] == "pass"
    result = rq.assess_registration({}, [{"name": "r", "mask_mni": str(paths["mask"])}])
    assert result["checks"][0]["value"] == pytest.approx(whole, abs=1e-4) and "field of view" not in result["checks"][0]["text"]
    # an MNI BOLD reference on another grid is not a field of view: the whole brain is used
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)), other)
    assert rq.mask_dice_with_template(paths["mask"], other) == pytest.approx(whole)


def test_wm_boundary_fraction_sees_alignment(tmp_path):
    """A white-matter ball in grey matter; the 'BOLD' is darker in WM (T2* contrast). Aligned: every
    boundary point has GM brighter outside; the BOLD moved 6 mm: many points disagree."""
    shape, voxel = (60, 60, 60), 1.5
    affine = np.diag([voxel, voxel, voxel, 1.0])
    ijk = np.indices(shape).astype(float)
    r_mm = np.linalg.norm(ijk - 29.5, axis=0) * voxel
    r2_mm = np.linalg.norm(ijk - 29.5 - np.array([4, 0, 0])[:, None, None, None], axis=0) * voxel  # 6 mm along x
    wm = 1 / (1 + np.exp((r_mm - 25) / 1.0))
    brain = r_mm < 40
    noise = np.random.default_rng(0).normal(0, 2.0, shape)  # flat regions: no systematic contrast
    paths = {}
    for name, arr in (("wm", wm), ("mask", brain),
                      ("bold", (100 - 30 / (1 + np.exp((r_mm - 25) / 0.5)) + noise) * brain),
                      ("moved", (100 - 30 / (1 + np.exp((r2_mm - 25) / 0.5)) + noise) * brain)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr.astype(np.float32), affine), paths[name])
    aligned = rq.wm_boundary_fraction(paths["bold"], paths["wm"], paths["mask"])
    moved = rq.wm_boundary_fraction(paths["moved"], paths["wm"], paths["mask"])
    print("boundary fraction aligned", aligned, "moved 6 mm", moved)
    assert aligned > 0.99 and moved < 0.9  # measured 1.00 and 0.82
    assert [c["level"] for c in rq.bold_checks("r", None, None, boundary_fraction=0.52)] == ["fail"]


def test_failed_registration_fails_the_verdict_and_blocks_exports(tmp_path):
    bad = _template_files(tmp_path, 10)
    out = tmp_path / "sub-01_desc-registration_qc.json"
    result = rq.run_registration_qc({"t1w_mni": str(bad["t1w_mni"]), "brain_mask": str(bad["mask_mni"])},
                                    [{"name": "sub-01_task-rest", "mask_mni": str(bad["mask_mni"])}], out)
    assert json.loads(out.read_text()) == result
    assert set(result) == {"checks", "status", "Sources"} and result["status"] == "fail"
    assert all(set(c) >= {"name", "value", "threshold", "level", "text"} for c in result["checks"])
    assert str(tmp_path) not in out.read_text()
    v = qc.assess(None, None, None, None, unit="sub-01", registration_qc=result)
    assert v["status"] == "fail" and not v["coordinate_usable"]
    reasons = [r for r in v["reasons"] if "template" in r]
    assert any("the T1w could not be aligned to the template; the target is not usable" in r for r in reasons), \
        v["reasons"]
    verdict_json = tmp_path / "verdict.json"
    verdict_json.write_text(json.dumps(v))
    assert gate.export_gate(verdict_json, tmp_path / "nav") is False
    assert [p.name for p in (tmp_path / "nav").iterdir()] == [gate.NOT_EXPORTED]


# ----------------------------------------------------------------------------- registration helpers


def _rigid_ras(angles_deg, shift_mm) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rg._rotation_xyz_deg(angles_deg)
    m[:3, 3] = shift_mm
    return m


def test_rotation_search_finds_a_rotated_head():
    """The 2 mm template moved by 20 / -15 / 10 degrees and 25 mm: the search starts within one grid step."""
    tpl = ptpl.load_template(2)
    fixed = ptpl.to_ants(tpl["t1"])
    moved = _rigid_ras((20, -15, 10), (10, -20, 15))
    moving = nifti_to_ants(tpl["t1"].get_fdata().astype(np.float32), moved @ tpl["t1"].affine)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = rg.search_initial_transform(fixed, moving, f"{tmp}/init.mat")
        matrix_lps, _ = rg.affine_parameters_lps(res["transform"])
    matrix_ras = RAS_TO_LPS @ matrix_lps @ RAS_TO_LPS
    # fixed -> moving points should be ``moved``; compare on points of a 70 mm ball
    rng = np.random.default_rng(0)
    pts = np.c_[rng.normal(0, 40, (200, 3)), np.ones(200)]
    err = np.linalg.norm((pts @ matrix_ras.T - pts @ moved.T)[:, :3], axis=1)
    print("search:", res, "median error", np.median(err))
    assert res["score"] > res["score_identity"]
    assert np.median(err) < 12.0  # the grid is 15 degrees; the affine stage refines from here


def test_working_image_resamples_only_finer_images_and_keeps_the_world():
    affine = np.diag([0.7, 0.7, 0.7, 1.0])
    affine[:3, 3] = [-30, -40, -20]
    data = ndimage.gaussian_filter(np.random.default_rng(0).random((80, 90, 70)), 3).astype(np.float32)
    fine = nifti_to_ants(data, affine)
    work = rg.working_image(fine, 1.0)
    assert np.allclose(work.spacing, 1.0) and np.allclose(work.origin, fine.origin)
    back = rg.to_grid(work, fine)
    assert back.shape == fine.shape
    inner = (slice(5, -5),) * 3
    assert np.corrcoef(back.numpy()[inner].ravel(), data[inner].ravel())[0, 1] > 0.99
    coarse = nifti_to_ants(data, np.diag([1.5, 1.5, 1.5, 1.0]))
    assert rg.working_image(coarse, 1.0) is coarse


def test_padded_working_image_covers_the_whole_fine_grid():
    """The 1 mm copy of a 0.7 mm grid of 229 slices ends 0.6 mm short of the fine grid's last centre;
    resampled back, that slice was 0 (and the bias-corrected T1w, divided by it, inf/NaN)."""
    affine = np.diag([0.7, 0.7, 0.7, 1.0])
    affine[:3, 3] = [-30, -40, -20]
    field = 1.0 + 0.2 * np.sin(np.indices((40, 30, 229)).sum(axis=0) / 60.0).astype(np.float32)
    fine = nifti_to_ants(field, affine)
    work = rg.working_image(fine, 1.0)
    plain = rg.to_grid(work, fine).numpy()
    assert (plain[:, :, -1] == 0).all()  # the failure this guards against
    padded = rg.pad_edges(work)
    assert np.allclose(padded.origin, np.asarray(work.origin) - np.asarray(work.direction) @ work.spacing)
    back = rg.to_grid(padded, fine).numpy()
    assert back.min() > 0.75
    # inside the copy's extent the padding changes nothing; at the edge it extrapolates by < 1 %
    np.testing.assert_allclose(back[:, :, :-1], plain[:, :, :-1], rtol=1e-5)
    np.testing.assert_allclose(back, field, rtol=0.01)


def test_make_ants_repeatable_pins_one_itk_thread(monkeypatch):
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
    rg.make_ants_repeatable()
    assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"
    import ants.config

    assert ants.config._random_seed == rg.ANTS_RANDOM_SEED
