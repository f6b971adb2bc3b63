"""The synthetic distorted dataset (tmstarget.demo.distortion): the forward model moves signal by the
known field (sign convention of BIDS/FSL/sdcflows), and the builder writes BIDS field maps that pass
the project's BIDS checks (pybids index of plan_raw) with the keys the specification requires.

Fast: the builder runs on a miniature demo-like dataset (a sphere head on 3 mm grids, 13 volumes,
native world = MNI), not on the real demo (that is tests/test_sdc_workflow.py, acceptance).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tmstarget.demo import distortion as dd
from tmstarget.errors import InputError

TRT_S = 0.05


def _bump_centroid_vox(profile: np.ndarray) -> float:
    w = np.clip(profile, 0, None)
    return float((w * np.arange(len(w))).sum() / w.sum())


@pytest.mark.parametrize("pe, expected_sign", [("j", 1), ("j-", -1)])
def test_constant_field_moves_a_feature_by_field_times_readout(pe, expected_sign):
    """20 Hz x 0.05 s = 1 voxel = 3 mm toward +j for PE j, toward -j for j- (tolerance 0.02 mm)."""
    shape = (6, 40, 5)
    j = np.arange(shape[1])
    volume = np.broadcast_to(np.exp(-0.5 * ((j - 18.0) / 1.5) ** 2)[None, :, None], shape).copy()
    shift = dd.shift_vox_from_field_hz(np.full(shape, 20.0), TRT_S, pe)
    out = dd.distort_volume(volume, shift, pe_axis=1)
    moved_mm = 3.0 * (_bump_centroid_vox(out[3, :, 2]) - _bump_centroid_vox(volume[3, :, 2]))
    assert moved_mm == pytest.approx(expected_sign * 3.0, abs=0.02)


def test_varying_field_moves_each_feature_by_its_local_field_and_conserves_signal():
    """Two bumps under a field ramp (0 Hz at j=10 .. 24 Hz at j=30 along j, PE j, 0.05 s): each moves by the
    field at its true position x (0.6 and 0.96 voxels, to 0.03 voxel) and the line's total signal is kept
    (Jacobian, to 0.5 %)."""
    shape = (4, 48, 4)
    j = np.arange(shape[1], dtype=float)
    profile = np.exp(-0.5 * ((j - 15.0) / 1.2) ** 2) + np.exp(-0.5 * ((j - 33.0) / 1.2) ** 2)
    volume = np.broadcast_to(profile[None, :, None], shape).copy()
    field = np.broadcast_to((1.2 * np.clip(j - 10.0, 0, None))[None, :, None], shape).copy()
    shift = dd.shift_vox_from_field_hz(field, TRT_S, "j")
    out = dd.distort_volume(volume, shift, pe_axis=1)[1, :, 1]
    assert _bump_centroid_vox(out[:24]) - 15.0 == pytest.approx(1.2 * 5 * TRT_S, abs=0.03)
    assert _bump_centroid_vox(out[24:]) + 24 - 33.0 == pytest.approx(1.2 * 23 * TRT_S, abs=0.03)
    assert out.sum() == pytest.approx(profile.sum(), rel=0.005)


def test_source_coordinates_invert_the_shift_and_undoing_it_restores_the_image():
    """x + s(x) = y to 1e-3 voxel; sampling the distorted image at x + s(x) (the BIDS/sdcflows correction)
    times the Jacobian gives back the smooth phantom to 1 % of its peak."""
    from scipy import ndimage as ndi

    shape = (20, 30, 16)
    ijk = np.indices(shape, dtype=float)
    shift = 2.0 * np.exp(-((ijk[0] - 10) ** 2 + (ijk[1] - 14) ** 2 + (ijk[2] - 8) ** 2) / (2 * 5.0 ** 2))
    x, jac, inside = dd.source_coordinates(shift, axis=1)
    lands = x + ndi.map_coordinates(shift, np.stack([ijk[0], x, ijk[2]]), order=1, mode="nearest")
    assert np.max(np.abs(lands - ijk[1])[inside]) < 1e-3
    phantom = ndi.gaussian_filter((np.linalg.norm(ijk - np.array([10, 15, 8])[:, None, None, None], axis=0) < 7)
                                  .astype(float), 1.5)
    distorted = dd.distort_volume(phantom, shift, 1)
    grid = ijk.copy()
    grid[1] += shift
    undone = ndi.map_coordinates(distorted, grid, order=3) * (1 + np.gradient(shift, axis=1))
    assert np.max(np.abs(undone - phantom)) < 0.01 * phantom.max()
    assert np.max(np.abs(distorted - phantom)) > 0.2 * phantom.max()  # the distortion itself is not small


def test_fold_over_is_refused_and_pe_direction_checked():
    shape = (4, 20, 4)
    steep = np.broadcast_to(np.linspace(0, 30, 20)[None, :, None], shape).copy()  # 1.6 voxel per voxel
    with pytest.raises(ValueError, match="fold over"):
        dd.source_coordinates(steep, 1)
    with pytest.raises(ValueError, match="PhaseEncodingDirection"):
        dd.pe_axis_and_sign("y-")
    assert dd.pe_axis_and_sign("i") == (0, 1) and dd.pe_axis_and_sign("k-") == (2, -1)


def test_phase_is_wrapped_to_minus_pi_pi():
    wrapped = dd.wrap_phase_rad(np.array([0.0, np.pi, -np.pi, 3 * np.pi / 2, -7.0]))
    assert np.all((wrapped >= -np.pi) & (wrapped < np.pi))
    assert wrapped == pytest.approx([0.0, -np.pi, -np.pi, -np.pi / 2, -7.0 + 2 * np.pi])


# ----------------------------------------------------------------------------- the builder


def _save(data, affine, path, dtype, t_r=None):
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    img.header.set_xyzt_units("mm", "sec")
    if t_r:
        img.header.set_zooms(img.header.get_zooms()[:3] + (t_r,))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _grid(shape, voxel_mm, centre=(0.0, 0.0, 0.0)):
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = np.asarray(centre) - voxel_mm * (np.asarray(shape) - 1) / 2.0
    return affine


def _sphere(shape, affine, radius_mm, centre=(0.0, 0.0, 0.0)):
    ijk = np.indices(shape, dtype=float).reshape(3, -1).T
    r = np.linalg.norm(nib.affines.apply_affine(affine, ijk) - np.asarray(centre), axis=1).reshape(shape)
    return r < radius_mm


def make_mini_demo(root):
    """A demo-like dataset: sub-01 with a sphere head (T1w 3 mm, BOLD 3 mm 13 volumes), native = MNI."""
    rng = np.random.default_rng(3)
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "mini demo", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\tn/a\tn/a\n")
    t1_shape, t1_aff = (40, 48, 40), _grid((40, 48, 40), 3.0)
    brain, head = _sphere(t1_shape, t1_aff, 55), _sphere(t1_shape, t1_aff, 66)
    _save(np.where(brain, 1000, np.where(head, 1100, 0)), t1_aff, root / "sub-01/anat/sub-01_T1w.nii.gz", np.int16)
    (root / "sub-01/anat/sub-01_T1w.json").write_text("{}")
    b_shape, b_aff = (30, 36, 24), _grid((30, 36, 24), 3.0, (0.0, 6.0, 0.0))
    base = np.where(_sphere(b_shape, b_aff, 60), 800.0, 0.0)
    base[_sphere(b_shape, b_aff, 8, (0, 30, -20))] = 1500.0  # a bright feature in the frontal "field" region
    bold = base[..., None] * (1 + 0.01 * rng.standard_normal(b_shape + (13,)))
    _save(bold, b_aff, root / "sub-01/func/sub-01_task-rest_bold.nii.gz", np.int16, 2.0)
    (root / "sub-01/func/sub-01_task-rest_bold.json").write_text(json.dumps(
        {"TaskName": "rest", "RepetitionTime": 2.0, "PhaseEncodingDirection": "j-"}))
    gt = root / "sourcedata/groundtruth/sub-01"
    m_shape, m_aff = (61, 73, 61), _grid((61, 73, 61), 2.0)
    points = nib.affines.apply_affine(m_aff, np.indices(m_shape).reshape(3, -1).T).reshape(m_shape + (3,))
    _save(points, m_aff, gt / "sub-01_mni_to_t1w_map.nii.gz", np.float32)
    t1w_points = nib.affines.apply_affine(t1_aff, np.indices(t1_shape).reshape(3, -1).T).reshape(t1_shape + (3,))
    _save(t1w_points, t1_aff, gt / "sub-01_t1w_to_mni_map.nii.gz", np.float32)
    (gt / "sub-01_groundtruth.json").write_text(json.dumps(
        {"n_dummy_scans": 3, "mni_to_t1w_map": "sub-01_mni_to_t1w_map.nii.gz",
         "t1w_to_mni_map": "sub-01_t1w_to_mni_map.nii.gz"}))
    return root


@pytest.fixture(scope="module")
def mini_demo(tmp_path_factory):
    return make_mini_demo(tmp_path_factory.mktemp("mini") / "bids")


REQUIRED_KEYS = {  # BIDS specification, fmap/ section (REQUIRED sidecar fields per suffix)
    "phasediff": ("EchoTime1", "EchoTime2"),
    "fieldmap": ("Units",),
    "epi": ("PhaseEncodingDirection", "TotalReadoutTime"),
}


@pytest.mark.parametrize("kind, match", [("phasediff", "b0field"), ("fieldmap", "intendedfor"),
                                         ("pepolar", "intendedfor-relative")])
def test_builder_writes_bids_field_maps_that_the_project_indexes(mini_demo, tmp_path, kind, match):
    from bids import BIDSLayout

    from tmstarget.bids.inputs import plan_raw

    out = dd.make_distorted_dataset(mini_demo, tmp_path / kind, kind=kind, match=match)
    plan = plan_raw(out, tmp_path / "derivatives")  # pybids with validation: every file has a BIDS name
    assert list(plan.bold_jobs) == ["sub-01/func/sub-01_task-rest"]
    layout = BIDSLayout(str(out))
    fmaps = {f.entities["suffix"]: f for f in layout.get(datatype="fmap", extension=".nii.gz")}
    expected = {"phasediff": {"phasediff", "magnitude1", "magnitude2"}, "fieldmap": {"fieldmap", "magnitude"},
                "pepolar": {"epi"}}[kind]
    assert set(fmaps) == expected
    bold = out / "sub-01/func/sub-01_task-rest_bold.nii.gz"
    bold_meta = layout.get_metadata(str(bold))
    assert bold_meta["PhaseEncodingDirection"] == "j-" and bold_meta["TotalReadoutTime"] == dd.TOTAL_READOUT_TIME_S
    n_pe = nib.load(str(bold)).shape[1]
    assert bold_meta["EffectiveEchoSpacing"] * (n_pe - 1) == pytest.approx(bold_meta["TotalReadoutTime"], rel=1e-12)
    carriers = [f for f in layout.get(datatype="fmap", extension=".nii.gz")
                if f.entities["suffix"] in REQUIRED_KEYS]
    assert carriers
    for f in carriers:
        meta = layout.get_metadata(f.path)
        assert all(k in meta for k in REQUIRED_KEYS[f.entities["suffix"]]), (f.filename, meta)
        if match == "b0field":
            assert meta["B0FieldIdentifier"] == bold_meta["B0FieldSource"]
            assert "IntendedFor" not in meta
        elif match == "intendedfor":
            assert meta["IntendedFor"] == ["bids::sub-01/func/sub-01_task-rest_bold.nii.gz"]
            assert "B0FieldSource" not in bold_meta
        else:  # the older relative form, which pybids itself resolves
            assert layout.get_fieldmap(str(bold), return_list=True)
    if kind == "phasediff":
        assert layout.get_metadata(fmaps["phasediff"].path)["EchoTime2"] > layout.get_metadata(
            fmaps["phasediff"].path)["EchoTime1"]
    if kind == "fieldmap":
        assert layout.get_metadata(fmaps["fieldmap"].path)["Units"] == "Hz"
    if kind == "pepolar":
        dirs = {f.entities["direction"]: layout.get_metadata(f.path)["PhaseEncodingDirection"]
                for f in layout.get(datatype="fmap", suffix="epi", extension=".nii.gz")}
        assert dirs == {"AP": "j-", "PA": "j"}


@pytest.fixture(scope="module")
def mini_phasediff(mini_demo, tmp_path_factory):
    return dd.make_distorted_dataset(mini_demo, tmp_path_factory.mktemp("pd") / "bids", kind="phasediff")


def test_truth_files_and_distorted_bold_agree_with_the_field(mini_demo, mini_phasediff):
    """The displacement truth is field x TotalReadoutTime x (-1 for j-) x 3 mm; the BOLD is the source BOLD
    distorted by it (every volume, to the int16 rounding), and the bright frontal feature is displaced
    several mm toward -j (how far a feature moves is tested on phantoms above)."""
    truth = dd.load_distortion_truth(mini_phasediff, "01")
    field = nib.load(str(truth["b0field_hz"])).get_fdata()
    disp = nib.load(str(truth["b0displacement_mm"])).get_fdata()
    assert disp == pytest.approx(-field * dd.TOTAL_READOUT_TIME_S * 3.0, abs=1e-4)
    source = np.asanyarray(nib.load(str(mini_demo / "sub-01/func/sub-01_task-rest_bold.nii.gz")).dataobj)
    bold = nib.load(str(mini_phasediff / "sub-01/func/sub-01_task-rest_bold.nii.gz"))
    distorted = np.asanyarray(bold.dataobj)
    expected = dd.distort_series(source, disp / 3.0, 1)  # truth stored as float32: +-1 after int16 rounding
    assert np.abs(distorted.astype(int) - expected).max() <= 1
    feature = source[..., 5] > 1200  # the bright sphere below the frontal "lobe", inside the positive field
    assert feature.sum() > 20
    assert float(disp[feature].mean()) < -5.0  # several mm, toward -j as PE j- and a positive field require


def test_true_brain_mask_on_the_bold_grid(mini_phasediff):
    """Native = MNI in the mini dataset: the mask is nilearn's MNI brain mask at the BOLD voxel centres
    (all but the voxels within 1.5 mm of a T1w-grid edge, where the known map is extrapolated)."""
    from nilearn import datasets
    from scipy import ndimage as ndi

    brain = dd.brain_mask_on_bold_grid(mini_phasediff, "01")
    bold = nib.load(str(mini_phasediff / "sub-01/func/sub-01_task-rest_bold.nii.gz"))
    mask = datasets.load_mni152_brain_mask(resolution=2)
    ijk = nib.affines.apply_affine(np.linalg.inv(mask.affine) @ bold.affine, np.indices(brain.shape).reshape(3, -1).T)
    expected = ndi.map_coordinates(np.asarray(mask.dataobj, float), ijk.T, order=0).reshape(brain.shape) > 0.5
    assert brain.shape == bold.shape[:3] and brain.sum() > 5000
    assert np.mean(brain == expected) > 0.995


def test_phasediff_is_the_wrapped_field_and_random_outside_the_head(mini_phasediff):
    truth = dd.load_distortion_truth(mini_phasediff, "01")
    fmap = mini_phasediff / "sub-01" / "fmap"
    phase_img = nib.load(str(fmap / "sub-01_phasediff.nii.gz"))
    phase = phase_img.get_fdata()
    side = json.loads((fmap / "sub-01_phasediff.json").read_text())
    assert np.all((phase >= -np.pi) & (phase < np.pi))
    model = dd.field_model_native(nib.load(str(mini_phasediff / "sourcedata/groundtruth/sub-01"
                                                / "sub-01_mni_to_t1w_map.nii.gz")))
    field = dd.field_hz_on_grid(phase.shape, phase_img.affine, model)
    expected = dd.wrap_phase_rad(2 * np.pi * field * (side["EchoTime2"] - side["EchoTime1"]))
    magnitude = nib.load(str(fmap / "sub-01_magnitude1.nii.gz")).get_fdata()
    head = magnitude > 0.3 * magnitude.max()
    assert np.abs(dd.wrap_phase_rad(phase - expected))[head].max() < 1e-5
    assert np.std(phase[magnitude == 0]) > 1.5  # uniform noise on [-pi, pi): std 1.81
    assert not np.allclose(phase_img.affine, nib.load(str(mini_phasediff / "sub-01/func/sub-01_task-rest_bold.nii.gz")).affine)
    assert truth["echo_times_s"] == [side["EchoTime1"], side["EchoTime2"]]


def test_pepolar_pair_is_distorted_in_opposite_directions(mini_demo, tmp_path):
    out = dd.make_distorted_dataset(mini_demo, tmp_path / "pe", kind="pepolar")
    truth = dd.load_distortion_truth(out, "01")
    disp_vox = nib.load(str(truth["b0displacement_mm"])).get_fdata() / 3.0
    source = np.asanyarray(nib.load(str(mini_demo / "sub-01/func/sub-01_task-rest_bold.nii.gz")).dataobj)
    ap = np.asanyarray(nib.load(str(out / "sub-01/fmap/sub-01_dir-AP_epi.nii.gz")).dataobj)
    pa = np.asanyarray(nib.load(str(out / "sub-01/fmap/sub-01_dir-PA_epi.nii.gz")).dataobj)
    assert ap.shape[3] == pa.shape[3] == dd.N_EPI_VOLUMES
    volumes = source[..., 3:3 + dd.N_EPI_VOLUMES]
    # truth stored as float32: +-1 after int16 rounding
    assert np.abs(ap.astype(int) - dd.distort_series(volumes, disp_vox, 1)).max() <= 1
    assert np.abs(pa.astype(int) - dd.distort_series(volumes, -disp_vox, 1)).max() <= 1
    assert np.abs(ap.astype(int) - pa).max() > 300  # the two differ where the field is


def test_builder_refuses_bad_requests(mini_demo, tmp_path):
    with pytest.raises(InputError, match="kind"):
        dd.make_distorted_dataset(mini_demo, tmp_path / "x", kind="phase1")
    with pytest.raises(InputError, match="sub-07"):
        dd.make_distorted_dataset(mini_demo, tmp_path / "x", subjects=["07"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(InputError, match="not an empty folder"):
        dd.make_distorted_dataset(mini_demo, tmp_path / "full")
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- report section and finding


def _with_sdc_sidecars(inputs: dict, entries: list) -> list[str]:
    """Write a preprocessing sidecar beside each preprocessed BOLD with the given correction entries."""
    paths = []
    for bold, entry in zip(inputs["preproc_bold"], entries):
        side = bold.replace(".nii.gz", ".json")
        obj = {"RepetitionTime": 2.0}
        if entry is not None:
            obj["SusceptibilityDistortionCorrection"] = entry
        with open(side, "w") as f:
            json.dump(obj, f)
        paths.append(side)
    return paths


APPLIED = {"Applied": True, "FieldMapKind": "phasediff", "MatchedBy": "B0FieldSource",
           "Sources": ["bids:raw:sub-01/fmap/sub-01_phasediff.nii.gz"],
           "Description": "susceptibility distortion corrected: phase difference",
           "PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.035,
           "MedianAbsShiftInHead_mm": 1.23, "MaxAbsShiftInHead_mm": 9.1}
UNUSED = {"Applied": False, "FieldMapKind": "unsupported", "Description": "not corrected",
          "Finding": "sub-01_task-rest_run-2_bold.nii.gz: field maps found but not used: two phase images"}


def _render_distortion(inputs):
    from tmstarget.report import SUBJECT_REPORTLETS, render_subject_html

    text = render_subject_html(inputs, reportlets=tuple(r for r in SUBJECT_REPORTLETS if r.name == "distortion"))
    return text.split('<section id="distortion">')[1].split("</section>")[0]


def test_report_says_not_corrected_and_draws_nothing_without_field_maps(tmp_path):
    from builders.report_unit import make_subject_inputs

    inputs = make_subject_inputs(tmp_path)
    _with_sdc_sidecars(inputs, [{"Applied": False, "Description": "not corrected (no field maps for this run in fmap/)"},
                                None])
    section = _render_distortion(inputs)
    assert "<td>not corrected</td>" in section
    assert "not recorded" in section  # run 2's sidecar has no entry
    assert "data:image" not in section and "WARN" not in section


def test_report_shows_the_correction_before_after_and_the_unused_field_maps(tmp_path):
    from builders.report_unit import T1W_AFFINE, T1W_SHAPE, ellipsoid_brain, make_subject_inputs
    from tmstarget.report.distortion import uncorrected_reference_path

    inputs = make_subject_inputs(tmp_path)
    _with_sdc_sidecars(inputs, [APPLIED, UNUSED])
    t1w = nib.load(inputs["t1w"])
    wm = ellipsoid_brain(T1W_SHAPE, T1W_AFFINE).astype(np.float32)
    nib.save(nib.Nifti1Image(wm, t1w.affine), inputs["t1w"].replace("_desc-preproc_T1w", "_label-WM_probseg"))
    section = _render_distortion(inputs)
    assert "corrected with a phase-difference field map; phase encoding j-, total readout time 0.0350 s" in section
    assert "median 1.2 mm, largest 9.1 mm" in section
    assert "<b>WARN</b> sub-01_task-rest_run-2_bold.nii.gz: field maps found but not used" in section
    assert "sub-01_phasediff.nii.gz" in section
    assert section.count("data:image/png;base64,") == 1 and "was not written" in section  # no uncorrected reference
    ref = nib.load(inputs["boldref_t1w"][0])
    nib.save(nib.Nifti1Image(np.roll(np.asarray(ref.dataobj), 2, axis=1), ref.affine),
             str(uncorrected_reference_path(inputs["boldref_t1w"][0])))
    section = _render_distortion(inputs)
    assert section.count("data:image/png;base64,") == 2 and 'id="flip-distortion"' in section


def test_verdict_warns_about_unused_field_maps_and_is_unchanged_without_them(tmp_path):
    from builders.report_unit import make_subject_inputs
    from tmstarget.qc.verdict import run_verdict

    inputs = make_subject_inputs(tmp_path)
    base = run_verdict(inputs, tmp_path / "v0.json", "sub-01")
    sidecars = _with_sdc_sidecars(inputs, [{"Applied": False, "Description": "not corrected"}, None])
    same = run_verdict({**inputs, "bold_sidecars": sidecars}, tmp_path / "v1.json", "sub-01")
    assert same["findings"] == base["findings"] and same["status"] == base["status"]
    sidecars = _with_sdc_sidecars(inputs, [APPLIED, UNUSED])
    v = run_verdict({**inputs, "bold_sidecars": sidecars}, tmp_path / "v2.json", "sub-01")
    kinds = {f["kind"]: f for f in v["findings"]}
    assert kinds["fieldmap_unused"]["level"] == "warn" and kinds["fieldmap_unused"]["topic"] == "distortion"
    assert kinds["distortion"]["level"] == "info" and "median shift in the head 1.2 mm" in kinds["distortion"]["text"]
    assert v["status"] == "warn" and "field maps exist" in v["action"]


def test_report_words_give_the_registration_check_before_and_after():
    """The report's line for a corrected run names the kind, the readout and the BOLD-T1w white-matter
    boundary fraction of the uncorrected and the corrected reference (the registration check)."""
    from tmstarget.report.distortion import correction_words

    entry = {"Applied": True, "FieldMapKind": "phasediff", "PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05,
             "MedianAbsShiftInHead_mm": 1.4, "MaxAbsShiftInHead_mm": 10.3,
             "WhiteMatterBoundaryFraction": {"Uncorrected": 0.9512, "Corrected": 0.9874}}
    words = correction_words({"status": "corrected", "entry": entry})
    assert words.startswith("corrected with a phase-difference field map")
    assert "boundary fraction 0.951 before, 0.987 after correction" in words
    no_check = correction_words({"status": "corrected", "entry": {**entry, "WhiteMatterBoundaryFraction": None}})
    assert "boundary fraction" not in no_check
