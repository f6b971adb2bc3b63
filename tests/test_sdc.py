"""Susceptibility distortion correction (tmstarget.preproc.fieldmap): each field map kind recovers a
known field, and the shift added to the sampling indices undoes a known distortion of a phantom.

Phantom: the MNI template at 4 mm (``small_head``). Known field: a 60 Hz Gaussian blob over the
ventral frontal lobe plus 0.1 Hz/mm along y; with a 50 ms readout along j that shifts up to 3.2
voxels (12.9 mm) in the head. Residuals are |estimated - true shift| in mm along the PE axis inside
the brain (voxels above a fifth of the robust maximum)."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tmstarget.preproc import fieldmap as pfm
from tmstarget.preproc.headers import RAS_TO_LPS
from tmstarget.preproc.resample import sample_volume, world_to_voxel_indices
from test_preproc_stream import fake_anat  # noqa: F401  (fixture: the MNI template as the T1w)

READOUT_S = 0.05
PE_AXIS = 1


def _world(shape, affine):
    ijk = np.indices(shape, dtype=np.float64)
    return np.tensordot(affine[:3, :3], ijk, axes=1) + affine[:3, 3][:, None, None, None]


def true_field_hz(shape, affine):
    x, y, z = _world(shape, affine)
    blob = np.exp(-(x ** 2 / (2 * 25 ** 2) + (y - 45) ** 2 / (2 * 20 ** 2) + (z + 15) ** 2 / (2 * 20 ** 2)))
    return 60 * blob + 0.1 * y


def distort(image, shift_vox, axis=PE_AXIS, jacobian=True):
    """The EPI a true image gives: tissue at y appears at y + shift(y) (x = y + s(y) solved for y by
    fixed-point iteration), intensity times the Jacobian 1 / (1 + ds/dy) when ``jacobian``."""
    idx = np.indices(image.shape, dtype=np.float64).reshape(3, -1)
    y = idx.copy()
    for _ in range(30):
        y[axis] = idx[axis] - ndimage.map_coordinates(shift_vox, y, order=1, mode="nearest")
    out = ndimage.map_coordinates(image, y, order=1)
    if jacobian:
        out = out * ndimage.map_coordinates(1 / (1 + np.gradient(shift_vox, axis=axis)), y, order=1, mode="nearest")
    return out.reshape(image.shape).astype(np.float32)


@pytest.fixture(scope="module")
def phantom(small_head):
    head, affine = small_head
    brain = head > 0.2 * np.percentile(head, 98)
    field = true_field_hz(head.shape, affine)
    return {"head": head, "affine": affine, "brain": brain, "field_hz": field,
            "shift_vox": pfm.shift_vox_from_field_hz(field, READOUT_S, +1), "voxel_mm": 4.0}


def _residual_mm(shift_vox, phantom):
    res = np.abs(shift_vox - phantom["shift_vox"])[phantom["brain"]] * phantom["voxel_mm"]
    return float(np.median(res)), float(np.percentile(res, 95))


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), path)
    return str(path)


def _plan(kind, files, **extra):
    return {"kind": kind, "files": files, "pe_direction": "j", "pe_axis": PE_AXIS, "pe_sign": 1,
            "total_readout_time_s": READOUT_S, **extra}


def test_phasediff_recovers_field_through_wraps_and_another_grid(phantom, tmp_path):
    """Phase difference with dTE 10 ms (60 Hz -> 3.8 rad: wraps), on a 3 mm grid shifted by 1 mm from the
    BOLD's, mapped by scanner coordinates and unwrapped. Measured 2026-12-08: median 0.004 mm, p95 0.010 mm."""
    affine_fm = np.diag([3.0, 3.0, 3.0, 1.0])
    affine_fm[:3, 3] = phantom["affine"][:3, 3] + 1.0
    shape_fm = tuple(int(n * 4 / 3) + 1 for n in phantom["head"].shape)
    field_fm = true_field_hz(shape_fm, affine_fm)
    phase = np.angle(np.exp(1j * 2 * np.pi * field_fm * 0.010))
    assert np.abs(2 * np.pi * field_fm * 0.010).max() > np.pi  # the test needs wraps
    magnitude = pfm.field_to_grid_hz(phantom["head"], phantom["affine"], shape_fm, affine_fm)
    plan = _plan("phasediff", {"phasediff": _save(tmp_path / "pd.nii.gz", phase * 4096 / np.pi, affine_fm),
                               "magnitude1": _save(tmp_path / "m1.nii.gz", magnitude, affine_fm)},
                 echo_time1_s=0.005, echo_time2_s=0.015)
    est = pfm.estimate_shift_vox(plan, phantom["head"], phantom["affine"])
    median, p95 = _residual_mm(est["shift_vox"], phantom)
    print(f"phasediff residual: median {median:.3f} mm, p95 {p95:.3f} mm")
    assert median < 0.5 and p95 < 0.1


def test_fieldmap_in_rad_per_s_recovers_field(phantom, tmp_path):
    """A _fieldmap in rad/s on the BOLD's grid: exact up to float32 (median and p95 below 0.001 mm)."""
    plan = _plan("fieldmap", {"fieldmap": _save(tmp_path / "fm.nii.gz", phantom["field_hz"] * 2 * np.pi,
                                                phantom["affine"])}, units="rad/s")
    est = pfm.estimate_shift_vox(plan, phantom["head"], phantom["affine"])
    median, p95 = _residual_mm(est["shift_vox"], phantom)
    assert median < 0.001 and p95 < 0.001
    assert pfm.field_hz_from_fieldmap(np.array([1e-6]), "T")[0] == pytest.approx(42.577478)


@pytest.mark.slow
def test_pepolar_recovers_field(phantom, tmp_path):
    """Reversed-PE pair (j and j-, Jacobian-modulated, 50 ms readouts): SyN restricted to the PE axis.
    Measured 2026-12-08: median 0.041 mm, p95 1.63 mm (p95 from the brain edge, where the two images'
    intensities differ most)."""
    same = distort(phantom["head"], phantom["shift_vox"])
    opposite = distort(phantom["head"], -phantom["shift_vox"])
    epi = [{"path": _save(tmp_path / "pa.nii.gz", opposite, phantom["affine"]), "pe_axis": PE_AXIS, "pe_sign": -1,
            "pe_direction": "j-", "total_readout_time_s": READOUT_S},
           {"path": _save(tmp_path / "ap.nii.gz", same, phantom["affine"]), "pe_axis": PE_AXIS, "pe_sign": 1,
            "pe_direction": "j", "total_readout_time_s": READOUT_S}]
    plan = _plan("pepolar", {"epi_opposite": epi[0]["path"], "epi_same": epi[1]["path"]}, epi=epi)
    est = pfm.estimate_shift_vox(plan, same, phantom["affine"])
    median, p95 = _residual_mm(est["shift_vox"], phantom)
    print(f"pepolar residual: median {median:.3f} mm, p95 {p95:.3f} mm")
    assert median < 0.5 and p95 < 3.0


def test_shift_in_sampling_indices_undoes_a_known_distortion(phantom):
    """The bold.py path (world -> voxel indices of a moved volume, shift added along PE, one linear
    sample) on a smooth phantom distorted by the known field (no Jacobian: the BOLD is not modulated).
    The error inside the brain falls to under a fifth of the uncorrected one."""
    smooth = ndimage.gaussian_filter(phantom["head"], 1.5)
    affine = phantom["affine"]
    distorted = distort(smooth, phantom["shift_vox"], jacobian=False)
    shape = smooth.shape
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    points_lps = ((RAS_TO_LPS @ affine)[:3, :3] @ ijk + (RAS_TO_LPS @ affine)[:3, 3:4]).T
    ijk_ref = world_to_voxel_indices(points_lps, np.eye(4), affine)
    plain = sample_volume(distorted, ijk_ref).reshape(shape)
    shift_pts = sample_volume(phantom["shift_vox"].astype(np.float32), ijk_ref)
    corrected = sample_volume(distorted, pfm.sampling_indices_with_shift(ijk_ref, shift_pts, PE_AXIS)).reshape(shape)
    brain = phantom["brain"]
    err_before = np.abs(plain - smooth)[brain].mean()
    err_after = np.abs(corrected - smooth)[brain].mean()
    print(f"mean abs error in the brain: {err_before:.1f} uncorrected, {err_after:.1f} corrected")
    assert err_after < 0.2 * err_before
    assert pfm.sampling_indices_with_shift(ijk_ref, None, PE_AXIS) is ijk_ref  # no field: indices untouched
    unwarped = pfm.unwarp_volume(distorted, phantom["shift_vox"], PE_AXIS)
    assert np.abs(unwarped - smooth)[brain].mean() < 0.2 * err_before


def test_preprocess_bold_with_a_field_map_corrects_the_run(phantom, fake_anat, tmp_path):
    """The whole BOLD step on a 12-volume run of the distorted phantom with its Hz field map: the
    reference is unwarped before coregistration and every volume sampled once with the shift, so the
    MNI reference matches the undistorted head (mean abs error in the brain under half the
    uncorrected head's), and the sidecar and QC say what was applied. Measured 2026-12-08: 3.3
    corrected, 16.0 uncorrected."""
    from tmstarget.bids.inputs import preproc_bold_paths
    from tmstarget.preproc import bold as pb
    from tmstarget.preproc.templates import load_template

    affine = phantom["affine"]
    mni = load_template(2)["t1"]
    # the template sampled at the 4 mm voxel centres by world coordinates (small_head's zoom stretches y by
    # 2 %, which the coregistration would take up), smoothed so that interpolation blur does not dominate
    head = ndimage.gaussian_filter(pfm.field_to_grid_hz(mni.get_fdata() * 1000, mni.affine, (46, 55, 46), affine),
                                   1.0).astype(np.float32)
    field_hz = true_field_hz(head.shape, affine)
    shift_vox = pfm.shift_vox_from_field_hz(field_hz, READOUT_S, +1)
    distorted = distort(head, shift_vox, jacobian=False)
    rng = np.random.default_rng(0)
    run = distorted[..., None] + rng.normal(0, 5, head.shape + (12,)).astype(np.float32)
    bold = _save(tmp_path / "sub-01_task-rest_bold.nii.gz", run, affine)
    plan = _plan("fieldmap", {"fieldmap": _save(tmp_path / "fm.nii.gz", field_hz, affine)}, units="Hz",
                 matched_by="IntendedFor", sources=["bids:raw:sub-01/fmap/sub-01_fieldmap.nii.gz"])
    out = preproc_bold_paths(tmp_path / "out", "sub-01_task-rest")
    qc = pb.preprocess_bold(bold, {"RepetitionTime": 2.0}, fake_anat, out,
                            {"dummy_scans": 0, "chunk_volumes": 5, "registration_init": "header"}, fieldmap=plan)
    side = json.loads(open(out["bold_mni"].replace(".nii.gz", ".json")).read())
    sdc = side["SusceptibilityDistortionCorrection"]
    assert sdc == qc["distortion_correction"] and sdc["Applied"] and sdc["PhaseEncodingDirection"] == "j"
    assert sdc["MaxAbsShiftInHead_mm"] == pytest.approx(np.abs(shift_vox[head > np.percentile(head, 98) / 8]).max() * 4,
                                                        rel=0.3)
    assert "bids:raw:sub-01/fmap/sub-01_fieldmap.nii.gz" in side["Sources"]
    before = nib.load(str(pb.uncorrected_boldref_t1w_path(out["boldref_t1w"])))  # for the report's figure
    assert before.shape == nib.load(out["boldref_t1w"]).shape
    # the registration check before and after, on the two references through the one transform
    fractions = sdc["WhiteMatterBoundaryFraction"]
    assert set(fractions) == {"Uncorrected", "Corrected"}
    assert all(0.0 <= v <= 1.0 for v in fractions.values()), fractions
    assert fractions["Corrected"] != fractions["Uncorrected"]
    ref_mni = nib.load(out["boldref_mni"]).get_fdata()
    truth = pfm.field_to_grid_hz(head, affine, mni.shape, mni.affine)
    uncorrected = pfm.field_to_grid_hz(distorted, affine, mni.shape, mni.affine)
    brain = truth > 0.2 * np.percentile(truth, 98)
    err_after = np.abs(ref_mni - truth)[brain].mean()
    err_before = np.abs(uncorrected - truth)[brain].mean()
    print(f"boldref_mni mean abs error in the brain: {err_after:.1f} corrected, {err_before:.1f} uncorrected head")
    assert err_after < 0.5 * err_before
    bold_mni = nib.load(out["bold_mni"]).dataobj
    assert np.corrcoef(np.asarray(bold_mni[..., 3])[brain], truth[brain])[0, 1] > 0.95


def test_preprocess_bold_without_field_map_says_not_corrected():
    info = pb_distortion(None, "auto")
    assert info == {"Applied": False, "Description": "not corrected (no field maps for this run in fmap/)"}
    assert pb_distortion(None, "none")["Description"] == "not corrected (preprocessing.distortion_correction is none)"
    finding = pb_distortion({"kind": "unsupported", "finding": "x_bold.nii.gz: field maps found but not used: two "
                             "phase images", "sources": []}, "auto")
    assert not finding["Applied"] and finding["Finding"].startswith("x_bold.nii.gz: field maps found but not used")


def pb_distortion(fieldmap, mode):
    from tmstarget.preproc import bold as pb

    shift, info = pb._distortion_shift(fieldmap, np.ones((4, 4, 4), np.float32), np.eye(4), "x_bold.nii.gz",
                                       {"distortion_correction": mode})
    assert shift is None
    return info
