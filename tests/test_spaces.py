"""Spaces: RAS/LPS and voxel conversions, qform/sform checks, and ANTs point mapping proven on a real
(small) antspyx registration whose true map is known: round trip, truth, marker images, run_native."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tmstarget.errors import InputError
from tmstarget.native.outputs import run_native
from tmstarget.navigation.common import read_markers_tsv
from tmstarget.io.nifti import check_qform_sform
from tmstarget.native.spaces import (check_transform_file, ijk_to_world_ras_mm, lps_to_ras,
                              mni_ras_mm_to_t1w_ras_mm, ras_to_lps, snap_into_mask,
                              t1w_ras_mm_to_mni_ras_mm, world_ras_mm_to_ijk)

from builders.nifti import write_nifti

TEMPLATE = "MNI152NLin2009aSym"

# ----------------------------------------------------------------------------- conversions by hand


def test_ras_lps_hand_values():
    np.testing.assert_array_equal(ras_to_lps([-40.0, 42.0, 30.0]), [40.0, -42.0, 30.0])
    np.testing.assert_array_equal(lps_to_ras([[40.0, -42.0, 30.0], [1.0, 2.0, 3.0]]),
                                  [[-40.0, 42.0, 30.0], [-1.0, -2.0, 3.0]])


def test_world_voxel_hand_values_and_round_trip():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -30.0]
    np.testing.assert_allclose(world_ras_mm_to_ijk(affine, [0.0, 0.0, 0.0]), [5.0, 10.0, 15.0])
    np.testing.assert_allclose(ijk_to_world_ras_mm(affine, [[0, 0, 0], [1, 2, 3]]), [[-10, -20, -30], [-8, -16, -24]])
    t = np.radians(20)
    oblique = np.eye(4)
    oblique[:3, :3] = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]]) @ np.diag([-1.0, 1.2, 0.9])
    oblique[:3, 3] = [90, -120, 40]
    points = np.random.default_rng(0).uniform(-80, 80, (10, 3))
    np.testing.assert_allclose(ijk_to_world_ras_mm(oblique, world_ras_mm_to_ijk(oblique, points)), points, atol=1e-9)


# ----------------------------------------------------------------------------- qform / sform


def _save(path, affine, qcode, scode, qform_affine=None):
    return write_nifti(path, np.zeros((100, 100, 100)), affine, codes=(qcode, scode), qform=qform_affine)


def test_check_qform_sform_agree_disagree_and_missing(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-50, -50, -50]
    info = check_qform_sform(_save(tmp_path / "ok.nii.gz", affine, 1, 1))
    assert info["affine_used"] == "sform" and info["intent_code"] == 1
    assert info["max_difference_mm"] < 1e-4
    shifted = affine.copy()
    shifted[:3, 3] += [0.0, 0.05, 0.0]
    info = check_qform_sform(_save(tmp_path / "small.nii.gz", affine, 1, 1, qform_affine=shifted))
    assert info["max_difference_mm"] == pytest.approx(0.05, abs=1e-4)
    # a 2 degree rotation about the origin moves the far corner (49, 49, 49) mm by |p| * 2 sin(1 deg)
    t = np.radians(2.0)
    rotated = affine.copy()
    rotated[:3, :] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) @ affine[:3, :]
    path = _save(tmp_path / "sub-01_T1w.nii.gz", affine, 1, 1, qform_affine=rotated)
    far = np.linalg.norm([-50, -50]) * 2 * np.sin(t / 2)
    with pytest.raises(InputError, match=rf"sub-01_T1w\.nii\.gz: qform and sform disagree by up to {far:.2f} mm"):
        check_qform_sform(path)
    assert check_qform_sform(path, tol_mm=far + 0.01)["max_difference_mm"] == pytest.approx(far, abs=1e-3)
    with pytest.raises(InputError, match="neither qform nor sform"):
        check_qform_sform(_save(tmp_path / "none.nii.gz", affine, 0, 0))
    only_q = check_qform_sform(_save(tmp_path / "q.nii.gz", affine, 1, 0))
    assert only_q["affine_used"] == "qform" and only_q["max_difference_mm"] == 0.0


def test_transform_files_are_checked_before_itk_reads_them(tmp_path):
    stand_in = tmp_path / f"sub-01_from-T1w_to-{TEMPLATE}_mode-image_xfm.h5"
    stand_in.write_bytes(b"stand-in")  # ITK would crash the interpreter on this
    with pytest.raises(InputError, match="not a readable T1w->MNI transform"):
        mni_ras_mm_to_t1w_ras_mm([0.0, 0.0, 0.0], stand_in)
    with pytest.raises(InputError, match="not found"):
        check_transform_file(tmp_path / "missing.h5", "T1w->MNI")
    other = tmp_path / "xfm.nii"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="unknown transform format"):
        check_transform_file(other)


# ----------------------------------------------------------------------------- a real registration

# True map: MNI point p -> T1w point q = C + R S p (an affine with anisotropic scaling and a
# rotation; SyN only needs to find it). The T1w grid is itself oblique and left-right flipped.
SHIFT_MM = np.array([4.0, -3.0, 6.0])
_T = np.radians(8.0)
ROT = np.array([[np.cos(_T), -np.sin(_T), 0], [np.sin(_T), np.cos(_T), 0], [0, 0, 1]])
SCALE = np.diag([0.95, 1.06, 0.92])
HEAD_RADII_MM = np.array([40.0, 48.0, 38.0])
BRAIN_RADII_MM = np.array([31.0, 39.0, 29.0])
_BLOB_RNG = np.random.default_rng(5)
#: 24 Gaussian blobs (centre MNI mm, amplitude) that give the phantom's interior texture to register
BLOBS_MNI = list(zip(_BLOB_RNG.uniform([-25, -32, -22], [25, 32, 22], (24, 3)),
                     _BLOB_RNG.choice([-40.0, -25.0, 25.0, 40.0, 60.0], 24)))
#: largest error accepted between the registration's map and the true map, in mm. Registration
#: accuracy is not under test here (and ITK's multithreaded optimiser is not deterministic): with
#: 2 mm voxels and few SyN iterations it was 0.1-3 mm; the direction/convention errors this test
#: exists to catch are > 10 mm (see the wrong-file check).
REGISTRATION_TOL_MM = 3.5


def true_mni_to_t1w(points_mni):
    return np.asarray(points_mni, float) @ (ROT @ SCALE).T + SHIFT_MM


def true_t1w_to_mni(points_t1w):
    return (np.asarray(points_t1w, float) - SHIFT_MM) @ np.linalg.inv(ROT @ SCALE).T


def _phantom_mni(points_mni):
    """Intensity of the MNI phantom at (N, 3) MNI RAS mm: head, brain, asymmetric blobs."""
    head = np.linalg.norm(points_mni / HEAD_RADII_MM, axis=1)
    brain = np.linalg.norm(points_mni / BRAIN_RADII_MM, axis=1)
    value = 100.0 / (1 + np.exp((head - 1) * 30)) + 20.0 / (1 + np.exp((brain - 1) * 30))
    for centre, amp in BLOBS_MNI:
        value += amp * np.exp(-np.sum((points_mni - centre) ** 2, axis=1) / (2 * 5.0 ** 2)) * (brain < 1)
    return value


def _grid_img(shape, affine, values_fn):
    ijk = np.indices(shape).reshape(3, -1).T
    data = values_fn(ijk_to_world_ras_mm(affine, ijk)).reshape(shape).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    return img


def _t1w_affine():
    t = np.radians(-10.0)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) @ np.diag([-2.0, 2.0, 2.0])
    affine[:3, 3] = [60.0, -62.0, -52.0]
    return affine


@pytest.fixture(scope="module")
def registration(tmp_path_factory):
    """Register the T1w phantom to the MNI phantom with antspyx (affine + SyN, composite .h5 like
    the built-in preprocessing) and name the files like fMRIPrep's."""
    import ants

    root = tmp_path_factory.mktemp("reg")
    mni_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mni_affine[:3, 3] = [-50.0, -58.0, -46.0]
    mni_img = _grid_img((51, 59, 47), mni_affine, _phantom_mni)
    t1w_img = _grid_img((60, 64, 56), _t1w_affine(), lambda q: _phantom_mni(true_t1w_to_mni(q)))
    rng = np.random.default_rng(0)
    t1w_img = nib.Nifti1Image(np.asarray(t1w_img.dataobj) + rng.normal(0, 2.0, t1w_img.shape).astype(np.float32),
                              t1w_img.affine, t1w_img.header)
    mni_path, t1w_path = root / "mni.nii.gz", root / "sub-01_desc-preproc_T1w.nii.gz"
    nib.save(mni_img, mni_path)
    nib.save(t1w_img, t1w_path)
    brain = _grid_img(t1w_img.shape, t1w_img.affine,
                      lambda q: (np.linalg.norm(true_t1w_to_mni(q) / BRAIN_RADII_MM, axis=1) < 1).astype(np.float32))
    brain_path = root / "sub-01_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(brain.dataobj).astype(np.uint8), brain.affine, brain.header), brain_path)
    reg = ants.registration(ants.image_read(str(mni_path)), ants.image_read(str(t1w_path)), "SyN",
                            reg_iterations=(40, 20, 0), write_composite_transform=True,
                            outprefix=str(root / "sub-01_"), random_seed=1)
    to_mni = root / f"sub-01_from-T1w_to-{TEMPLATE}_mode-image_xfm.h5"
    to_t1w = root / f"sub-01_from-{TEMPLATE}_to-T1w_mode-image_xfm.h5"
    Path(reg["fwdtransforms"]).rename(to_mni)
    Path(reg["invtransforms"]).rename(to_t1w)
    return {"root": root, "mni": mni_path, "t1w": t1w_path, "brain": brain_path,
            "to_mni": to_mni, "to_t1w": to_t1w}


# points well inside the brain (MNI RAS mm)
POINTS_MNI = np.array([[-20.0, 25.0, 10.0], [-22.0, 12.0, 5.0], [10.0, -15.0, 12.0], [0.0, 0.0, 0.0],
                       [-8.0, 30.0, -12.0]])


def test_round_trip_mni_t1w_mni_below_1mm(registration):
    t1w = mni_ras_mm_to_t1w_ras_mm(POINTS_MNI, registration["to_mni"])
    back = t1w_ras_mm_to_mni_ras_mm(t1w, registration["to_t1w"])
    assert np.max(np.linalg.norm(back - POINTS_MNI, axis=1)) < 1.0
    single = mni_ras_mm_to_t1w_ras_mm(POINTS_MNI[0], registration["to_mni"])
    assert single.shape == (3,)
    np.testing.assert_allclose(single, t1w[0], atol=1e-6)


def test_mapping_matches_the_true_map_and_the_wrong_file_does_not(registration):
    t1w = mni_ras_mm_to_t1w_ras_mm(POINTS_MNI, registration["to_mni"])
    errors = np.linalg.norm(t1w - true_mni_to_t1w(POINTS_MNI), axis=1)
    assert np.max(errors) < REGISTRATION_TOL_MM, errors
    mni = t1w_ras_mm_to_mni_ras_mm(true_mni_to_t1w(POINTS_MNI), registration["to_t1w"])
    assert np.max(np.linalg.norm(mni - POINTS_MNI, axis=1)) < REGISTRATION_TOL_MM
    # the classic mistakes are off by far more: the other file (image-transform direction for points) ...
    wrong = t1w_ras_mm_to_mni_ras_mm(POINTS_MNI, registration["to_t1w"])
    assert np.min(np.linalg.norm(wrong - true_mni_to_t1w(POINTS_MNI), axis=1)) > 10.0
    # ... and RAS coordinates handed to ANTs without the LPS flip
    import ants
    import pandas as pd

    no_flip = ants.apply_transforms_to_points(3, pd.DataFrame(POINTS_MNI, columns=["x", "y", "z"]),
                                              [str(registration["to_mni"])])[["x", "y", "z"]].to_numpy()
    assert np.min(np.linalg.norm(no_flip - true_mni_to_t1w(POINTS_MNI), axis=1)) > 5.0


def _centroid_ras_mm(img_path):
    img = nib.load(img_path)
    data = np.asarray(img.dataobj, float)
    ijk = np.argwhere(data > 0.5 * data.max())
    weights = data[tuple(ijk.T)]
    return ijk_to_world_ras_mm(img.affine, (ijk * weights[:, None]).sum(0) / weights.sum())


def _blob(path, reference_path, centre_ras_mm, sigma_mm=4.0):
    ref = nib.load(reference_path)
    img = _grid_img(ref.shape, ref.affine,
                    lambda p: 100 * np.exp(-np.sum((p - centre_ras_mm) ** 2, axis=1) / (2 * sigma_mm ** 2)))
    nib.save(img, path)
    return path


def test_marker_image_t1w_to_mni(registration, tmp_path):
    """A blob at a T1w point warped to MNI as an image lands where the point mapping puts it."""
    import ants

    point_t1w = true_mni_to_t1w([-30.0, 22.0, 8.0])
    blob = _blob(tmp_path / "blob_t1w.nii.gz", registration["t1w"], point_t1w)
    warped = ants.apply_transforms(ants.image_read(str(registration["mni"])), ants.image_read(str(blob)),
                                   [str(registration["to_mni"])], interpolator="linear")
    ants.image_write(warped, str(tmp_path / "blob_mni.nii.gz"))
    mapped = t1w_ras_mm_to_mni_ras_mm(point_t1w, registration["to_t1w"])
    assert np.linalg.norm(_centroid_ras_mm(tmp_path / "blob_mni.nii.gz") - mapped) < 2.0


def test_marker_image_mni_to_t1w(registration, tmp_path):
    import ants

    point_mni = np.array([-30.0, 22.0, 8.0])
    blob = _blob(tmp_path / "blob_mni.nii.gz", registration["mni"], point_mni)
    warped = ants.apply_transforms(ants.image_read(str(registration["t1w"])), ants.image_read(str(blob)),
                                   [str(registration["to_t1w"])], interpolator="linear")
    ants.image_write(warped, str(tmp_path / "blob_t1w.nii.gz"))
    mapped = mni_ras_mm_to_t1w_ras_mm(point_mni, registration["to_mni"])
    assert np.linalg.norm(_centroid_ras_mm(tmp_path / "blob_t1w.nii.gz") - mapped) < 2.0


# ----------------------------------------------------------------------------- snapping and run_native


def test_snap_into_mask_hand_example():
    affine = np.eye(4)
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[2:5, 2:5, 2:5] = 1
    img = nib.Nifti1Image(mask, affine)
    point, dist = snap_into_mask([3.2, 3.0, 2.9], img)
    np.testing.assert_allclose(point, [3.2, 3.0, 2.9])
    assert dist == 0.0
    point, dist = snap_into_mask([7.0, 3.0, 3.0], img)
    np.testing.assert_allclose(point, [4.0, 3.0, 3.0])
    assert dist == pytest.approx(3.0)


def _target_json(path, target_mni, nogsr_mni=None, cloud=None):
    doc = {"TemplateSpace": TEMPLATE, "target_mni_ras_mm": list(target_mni), "method": "cluster",
           "Sources": ["bids:preproc:sub-01/func/x.nii.gz"]}
    if nogsr_mni is not None:
        doc["gsr_comparison"] = {"strategy": "acompcor", "target_mni_ras_mm": list(nogsr_mni), "shift_mm": 5.0}
    if cloud is not None:
        doc["uncertainty"] = {"method": "block-bootstrap", "n": len(cloud), "targets_mni_ras_mm": cloud,
                              "split_half_targets_mni_ras_mm": [cloud[0], None]}
    path.write_text(json.dumps(doc))
    return path


def _outputs(tmp_path):
    base = tmp_path / "sub-01_space-T1w_desc-target"
    return (f"{base}_markers.tsv", f"{base}_markers.json", f"{base}_coordsystem.json", f"{base}_mask.nii.gz")


def test_run_native_on_the_registration(registration, tmp_path):
    target_mni = [-20.0, 25.0, 10.0]
    nogsr_mni = [-18.0, 20.0, 10.0]
    cloud = [[-21.0, 25.0, 10.0], None, [-19.0, 26.0, 9.0], [-20.0, 24.0, 12.0]]  # None: a resample without target
    tjson = _target_json(tmp_path / "target.json", target_mni, nogsr_mni, cloud)
    out_tsv, out_json, out_cs, out_sphere = _outputs(tmp_path)
    result = run_native(tjson, registration["t1w"], registration["to_mni"], registration["to_t1w"],
                        registration["brain"], {"handle_angle_deg": 45, "target_sphere_radius_mm": 4},
                        out_tsv, out_json, out_cs, out_sphere)
    written = json.loads(Path(out_json).read_text())
    assert written["target_t1w_ras_mm"] == pytest.approx(result["target_t1w_ras_mm"])
    target_t1w = np.array(written["target_t1w_ras_mm"])
    np.testing.assert_allclose(target_t1w, mni_ras_mm_to_t1w_ras_mm(target_mni, registration["to_mni"]), atol=1e-6)
    assert np.linalg.norm(target_t1w - true_mni_to_t1w(target_mni)) < REGISTRATION_TOL_MM
    assert written["target_snapped_to_brain_mask"] is False
    assert written["roundtrip_error_mm"] < 1.0
    assert written["t1w_sha256"] and written["transform_sha256"] and written["inverse_transform_sha256"]
    assert written["transform_path"].endswith(f"from-T1w_to-{TEMPLATE}_mode-image_xfm.h5")
    # the scalp entry lies on the phantom's head surface (normalised radius 1 in MNI)
    entry = np.array(written["entry_t1w_ras_mm"])
    assert np.linalg.norm(true_t1w_to_mni(entry) / HEAD_RADII_MM) == pytest.approx(1.0, abs=0.06)
    pose = np.array(written["coil_pose_t1w_ras"])
    np.testing.assert_allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(pose[:3, 3], entry)
    # SimNIBS axes: the handle lies along -y; the target sits left of the midline, so lateral = -x
    handle = np.array(written["handle_direction_t1w_ras"])
    np.testing.assert_allclose(handle, -pose[:3, 1], atol=1e-12)
    assert handle[1] < 0 and handle[0] < 0
    assert written["markers_t1w"][0]["handle_direction_t1w_ras"] == written["handle_direction_t1w_ras"]
    assert written["entry_to_target_mm"] == pytest.approx(np.linalg.norm(entry - target_t1w))
    assert 0 < written["scalp_to_cortex_mm"] < written["entry_to_target_mm"]
    # bootstrap cloud and no-GSR target mapped with the same transform
    cloud_t1w = written["uncertainty"]["targets_t1w_ras_mm"]
    assert cloud_t1w[1] is None and len(cloud_t1w) == 4
    valid = [p for p in cloud if p is not None]
    np.testing.assert_allclose([p for p in cloud_t1w if p is not None],
                               mni_ras_mm_to_t1w_ras_mm(valid, registration["to_mni"]), atol=1e-6)
    np.testing.assert_allclose(written["uncertainty"]["split_half_targets_t1w_ras_mm"][0],
                               mni_ras_mm_to_t1w_ras_mm(valid[0], registration["to_mni"]), atol=1e-6)
    assert written["uncertainty"]["split_half_targets_t1w_ras_mm"][1] is None
    np.testing.assert_allclose(written["gsr_comparison"]["target_t1w_ras_mm"],
                               mni_ras_mm_to_t1w_ras_mm(nogsr_mni, registration["to_mni"]), atol=1e-6)
    assert [m["name"] for m in written["markers_t1w"]] == ["sgACC-anticorrelation", "sgACC-anticorrelation-noGSR"]
    # TSV rows, voxel indices in the T1w grid
    rows = read_markers_tsv(out_tsv)
    assert [r["name"] for r in rows] == ["target", "scalp_entry", "target_nogsr", "scalp_entry_nogsr"]
    np.testing.assert_allclose(rows[0]["t1w_ras_mm"], target_t1w, atol=1e-3)
    np.testing.assert_allclose(rows[0]["mni_ras_mm"], target_mni, atol=1e-3)
    t1w_img = nib.load(registration["t1w"])
    np.testing.assert_array_equal(rows[0]["ijk"], np.rint(world_ras_mm_to_ijk(t1w_img.affine, target_t1w)))
    assert written["target_t1w_ijk"] == rows[0]["ijk"].tolist()
    # sphere in the T1w grid, centred on the target
    sphere = nib.load(out_sphere)
    np.testing.assert_allclose(sphere.affine, t1w_img.affine, atol=1e-6)
    ijk = np.argwhere(np.asarray(sphere.dataobj) > 0)
    assert np.max(np.linalg.norm(ijk_to_world_ras_mm(sphere.affine, ijk) - target_t1w, axis=1)) <= 4.0 + 1e-6
    assert np.linalg.norm(ijk_to_world_ras_mm(sphere.affine, ijk.mean(0)) - target_t1w) < 1.0
    cs = json.loads(Path(out_cs).read_text())
    assert cs["IntendedFor"] == Path(registration["t1w"]).name and cs["NIBSCoordinateUnits"] == "mm"


def test_run_native_snaps_a_target_outside_the_brain(registration, tmp_path):
    # (0, 0, 33) mm: above the brain (z radius 29) but inside the head (z radius 38)
    tjson = _target_json(tmp_path / "target.json", [0.0, 0.0, 33.0])
    out = _outputs(tmp_path)
    result = run_native(tjson, registration["t1w"], registration["to_mni"], registration["to_t1w"],
                        registration["brain"], {}, *out)
    assert result["target_snapped_to_brain_mask"] is True
    before = np.array(result["target_t1w_ras_mm_before_snap"])
    after = np.array(result["target_t1w_ras_mm"])
    assert result["target_snap_distance_mm"] == pytest.approx(np.linalg.norm(after - before))
    assert 2.0 < result["target_snap_distance_mm"] < 8.0
    brain = nib.load(registration["brain"])
    assert np.asarray(brain.dataobj)[tuple(np.rint(world_ras_mm_to_ijk(brain.affine, after)).astype(int))] == 1
    assert "snapped" in read_markers_tsv(out[0])[0]["description"]


def test_run_native_refuses_bad_headers_and_config(registration, tmp_path):
    tjson = _target_json(tmp_path / "target.json", [-20.0, 25.0, 10.0])
    img = nib.load(registration["t1w"])
    bad = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    shifted = img.affine.copy()
    shifted[:3, 3] += [5.0, 0.0, 0.0]
    bad.set_sform(img.affine, 1)
    bad.set_qform(shifted, 1)
    bad_path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(bad, bad_path)
    out = _outputs(tmp_path)
    with pytest.raises(InputError, match=r"sub-01_T1w\.nii\.gz: qform and sform disagree"):
        run_native(tjson, bad_path, registration["to_mni"], registration["to_t1w"], registration["brain"], {}, *out)
    with pytest.raises(InputError, match="unknown key"):
        run_native(tjson, registration["t1w"], registration["to_mni"], registration["to_t1w"],
                   registration["brain"], {"handle_angle": 45}, *out)
    assert not any(Path(p).exists() for p in out)


# ----------------------------------------------------------------------------- demo: the known warp (slow)

# cortical and seed points (MNI RAS mm): literature DLPFC sites and the sgACC seed centre
DEMO_POINTS_MNI = np.array([[-44.0, 40.0, 29.0], [-38.0, 44.0, 26.0], [-36.0, 39.0, 43.0], [-41.0, 16.0, 54.0],
                            [-37.0, 26.0, 49.0], [6.0, 16.0, -10.0]])


def _sample_vector_map(map_img, points_ras_mm):
    """Trilinear samples (N, 3) of a 3-vector map image (last axis 3) at world RAS mm points."""
    from scipy import ndimage

    data = np.asarray(map_img.dataobj, dtype=np.float64)
    ijk = world_ras_mm_to_ijk(map_img.affine, np.atleast_2d(points_ras_mm)).T
    return np.stack([ndimage.map_coordinates(data[..., a], ijk, order=1) for a in range(3)], axis=1)


@pytest.fixture(scope="module")
def demo_anat(demo_workflow, tmp_path_factory):
    """Demo sub-01's built-in anatomical preprocessing, from the session's shared workflow run."""
    from tmstarget.bids.inputs import preproc_anat_paths
    from tmstarget.demo.truth import load_ground_truth

    bids = demo_workflow["bids"]
    anat = preproc_anat_paths(demo_workflow["preproc"], "sub-01/anat/sub-01")
    return {"root": tmp_path_factory.mktemp("demo_native"), "t1w": bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
            "anat": anat, "truth": load_ground_truth(bids, "01")}


@pytest.mark.slow
def test_demo_point_mapping_matches_the_known_warp(demo_anat):
    anat, truth = demo_anat["anat"], demo_anat["truth"]
    points_mni = np.vstack([truth["target_mni_ras_mm"], DEMO_POINTS_MNI])
    true_t1w = _sample_vector_map(nib.load(truth["mni_to_t1w_map"]), points_mni)
    np.testing.assert_allclose(true_t1w[0], truth["target_t1w_ras_mm"], atol=0.5)  # the map and the JSON agree
    ours_t1w = mni_ras_mm_to_t1w_ras_mm(points_mni, anat["xfm_t1w_to_mni"])
    errors = np.linalg.norm(ours_t1w - true_t1w, axis=1)
    print("MNI->T1w point error vs demo truth (mm):", np.round(errors, 2))
    assert np.max(errors) < 2.0, errors
    back = t1w_ras_mm_to_mni_ras_mm(ours_t1w, anat["xfm_mni_to_t1w"])
    assert np.max(np.linalg.norm(back - points_mni, axis=1)) < 1.0


@pytest.mark.slow
def test_demo_marker_image_through_the_true_warp(demo_anat):
    """A blob at the MNI target, carried into the T1w grid by the demo's true warp, is centred where
    our point mapping (through the estimated registration) puts the target."""
    anat, truth = demo_anat["anat"], demo_anat["truth"]
    target_mni = truth["target_mni_ras_mm"]
    t1w_to_mni = nib.load(truth["t1w_to_mni_map"])  # T1w grid; MNI position of each voxel centre
    mni_of_voxel = np.asarray(t1w_to_mni.dataobj, dtype=np.float64)
    blob = np.exp(-np.sum((mni_of_voxel - target_mni) ** 2, axis=-1) / (2 * 3.0 ** 2))
    ijk = np.argwhere(blob > 0.5)
    weights = blob[tuple(ijk.T)]
    centroid_t1w = ijk_to_world_ras_mm(t1w_to_mni.affine, (ijk * weights[:, None]).sum(0) / weights.sum())
    mapped = mni_ras_mm_to_t1w_ras_mm(target_mni, anat["xfm_t1w_to_mni"])
    assert np.linalg.norm(centroid_t1w - mapped) < 2.0


@pytest.mark.slow
def test_demo_run_native_and_exports(demo_anat):
    from tmstarget.navigation.exports import run_exports
    from tmstarget.navigation.localite import read_localite_entrytarget

    anat, truth, root = demo_anat["anat"], demo_anat["truth"], demo_anat["root"]
    tjson = _target_json(root / "target.json", truth["target_mni_ras_mm"].tolist())
    out = _outputs(root / "native")
    result = run_native(tjson, demo_anat["t1w"], anat["xfm_t1w_to_mni"], anat["xfm_mni_to_t1w"],
                        anat["brain_mask"], {"handle_angle_deg": 45, "target_sphere_radius_mm": 5}, *out)
    target_t1w = np.array(result["target_t1w_ras_mm"])
    assert np.linalg.norm(target_t1w - truth["target_t1w_ras_mm"]) < 2.0 + result["target_snap_distance_mm"]
    assert result["roundtrip_error_mm"] < 1.0
    entry = np.array(result["entry_t1w_ras_mm"])
    # the entry is on the skin: just outside it the T1w is air, just inside it is tissue
    t1w_img = nib.load(demo_anat["t1w"])
    normal = np.array(result["inward_normal_t1w_ras"])
    data = np.asarray(t1w_img.dataobj, dtype=np.float64)
    tissue_level = np.percentile(data, 90)  # skin/fat/brain; air is the bottom half of the FOV

    def value(p):
        return data[tuple(np.rint(world_ras_mm_to_ijk(t1w_img.affine, p)).astype(int))]

    assert value(entry - 3 * normal) < 0.2 * tissue_level
    assert value(entry + 2 * normal) > 0.5 * tissue_level
    assert 3.0 < result["scalp_to_cortex_mm"] < result["entry_to_target_mm"]
    written = run_exports(out[1], demo_anat["t1w"], root / "nav", ["brainsight", "localite", "visor2", "slicer"])
    pair = read_localite_entrytarget(written["localite_entrytarget"])["pairs"][0]
    np.testing.assert_allclose(pair["target_ras_mm"], target_t1w, atol=1e-3)
    np.testing.assert_allclose(pair["entry_ras_mm"], entry, atol=1e-3)
    # every file, read with the vendor's own axes: the handle 45 deg posterior-lateral (left target)
    from builders.vendor_files import check_all_files

    check_all_files(written, out[0], 45.0, lateral_sign=-1.0)
