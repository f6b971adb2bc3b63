"""Navigator exports: hand-computed files for one coil pose, round trips through each reader, Slicer
schema validation, refusal of T1w files whose qform and sform disagree."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest

from tmstarget.errors import InputError
from tmstarget.io import sha256_file, write_json
from tmstarget.navigation import (NavTarget, read_brainsight, read_localite_entrytarget,
                                  read_localite_instrument, read_markers_tsv, read_slicer, read_visor2,
                                  run_exports, sphere_mask_img, write_brainsight, write_localite_entrytarget,
                                  write_localite_instrument, write_markers_tsv, write_slicer, write_visor2)

DATA = Path(__file__).parent / "data"
A = np.sqrt(0.5)
# Hand example: entry (-50, 40, 40), inward normal (1, 0, 0), handle 45 deg (see test_scalp):
# SimNIBS axes x = (0, -a, a), y = (0, -a, -a), z = (1, 0, 0).
POSE_SIMNIBS = np.array([
    [0.0, 0.0, 1.0, -50.0],
    [-A, -A, 0.0, 40.0],
    [A, -A, 0.0, 40.0],
    [0.0, 0.0, 0.0, 1.0],
])
TARGET = NavTarget("sgACC-anticorrelation", np.array([-40.0, 40.0, 40.0]), np.array([-50.0, 40.0, 40.0]), POSE_SIMNIBS)
WRITERS = [write_brainsight, write_localite_instrument, write_localite_entrytarget, write_visor2, write_slicer]


def _oblique_affine(angle_deg=10.0):
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 1.2, 1.1])
    affine[:3, 3] = [-80.0, -100.0, -60.0]
    return affine


def _t1w(tmp_path, affine=None, qcode=1, scode=1, name="sub-01_T1w.nii.gz") -> tuple[nib.Nifti1Image, Path]:
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    if affine is not None and np.allclose(affine, np.eye(4)):
        affine = affine.copy()
        affine[:3, 3] = [-80.0, -100.0, -60.0]
    img = nib.Nifti1Image(np.zeros((160, 200, 150), np.uint8), affine)
    img.set_qform(affine, qcode)
    img.set_sform(affine, scode)
    path = tmp_path / name
    nib.save(img, path)
    return nib.load(path), path


def _random_pose(rng):
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.linalg.det(q))
    pose = np.eye(4)
    pose[:3, :3] = q
    pose[:3, 3] = rng.uniform(-80, 80, 3)
    return pose


# ----------------------------------------------------------------------------- hand-computed files


def test_brainsight_hand_example(tmp_path):
    img, path = _t1w(tmp_path)
    out = write_brainsight(tmp_path / "bs.txt", [TARGET], img)
    lines = out.read_text().splitlines()
    assert lines[0] == "# Version: 12"
    assert lines[1] == "# Coordinate system: NIfTI:Scanner"
    # the T1w by file name and SHA-256 only: its folder could name the patient
    assert any(sha256_file(path) in line and path.name in line for line in lines if line.startswith("#"))
    assert not any(str(path.parent) in line for line in lines)
    fields = lines[-1].split("\t")
    assert fields[0] == "sgACC-anticorrelation"
    # Brainsight axes = (-x, y, -z) of SimNIBS: (0, a, -a), (0, -a, -a), (-1, 0, 0); m<axis>n<component>
    expected = [-40, 40, 40, 0, A, -A, 0, -A, -A, -1, 0, 0]
    np.testing.assert_allclose([float(v) for v in fields[1:]], expected, atol=1e-6)


def test_brainsight_names_the_intent_of_the_header(tmp_path):
    img, _ = _t1w(tmp_path, qcode=2, scode=2)
    out = write_brainsight(tmp_path / "bs.txt", [TARGET], img)
    assert "# Coordinate system: NIfTI:Aligned" in out.read_text().splitlines()


def test_localite_instrument_hand_example(tmp_path):
    img, path = _t1w(tmp_path)
    out = write_localite_instrument(tmp_path / "loc.xml", [TARGET], img)
    root = ET.parse(out).getroot()
    assert root.tag == "InstrumentMarkerList" and root.get("coordinateSpace") == "RAS"
    marker = root.find("InstrumentMarker/Marker")
    assert marker.get("description") == "sgACC-anticorrelation"
    assert sha256_file(path) in marker.get("additionalInformation")
    m = marker.find("Matrix4D")
    got = np.array([[float(m.get(f"data{r}{c}")) for c in range(4)] for r in range(4)])
    # Localite x = SimNIBS z = (1,0,0), y = -SimNIBS y = (0,a,a), z = SimNIBS x = (0,-a,a); centre = entry
    expected = np.array([
        [1.0, 0.0, 0.0, -50.0],
        [0.0, A, -A, 40.0],
        [0.0, A, A, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_localite_entrytarget_hand_example(tmp_path):
    img, _ = _t1w(tmp_path)
    out = write_localite_entrytarget(tmp_path / "et.xml", [TARGET], img)
    root = ET.parse(out).getroot()
    assert root.tag == "EntryTargetList" and root.get("coordinateSpace") == "RAS"
    entry = root.find("Entry/Marker/ColVec3D")
    target = root.find("Target/Marker/ColVec3D")
    np.testing.assert_allclose([float(entry.get(f"data{i}")) for i in range(3)], [-50, 40, 40], atol=1e-4)
    np.testing.assert_allclose([float(target.get(f"data{i}")) for i in range(3)], [-40, 40, 40], atol=1e-4)


def _affine_from_quatern(b, c, d, qoffset, pixdim):
    """NIfTI-1 method 2 (nifti1.h), written out independently of nibabel."""
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rot = np.array([
        [a * a + b * b - c * c - d * d, 2 * b * c - 2 * a * d, 2 * b * d + 2 * a * c],
        [2 * b * c + 2 * a * d, a * a + c * c - b * b - d * d, 2 * c * d - 2 * a * b],
        [2 * b * d - 2 * a * c, 2 * c * d + 2 * a * b, a * a + d * d - c * c - b * b],
    ])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
    affine[:3, 3] = qoffset
    return affine


def test_visor2_hand_example_and_qform(tmp_path):
    img, path = _t1w(tmp_path, affine=_oblique_affine())
    out = write_visor2(tmp_path / "t.mrk", [TARGET], img)
    doc = json.loads(out.read_text())
    info = doc["Configuration"]["AssociatedImageInfo"]
    assert info["Sha256"] == sha256_file(path)
    rebuilt = _affine_from_quatern(*info["NIfTI_quatern"], info["NIfTI_qoffset"], info["NIfTI_pixdim"])
    np.testing.assert_allclose(rebuilt, _oblique_affine(), atol=1e-4)
    target = doc["TargetMarkers"][0]["CoilTarget"]
    assert target["CoordinateSystem"] == "ASSOCIATED_IMAGE" and target["PositionalUnit"] == "mm"
    assert target["CoilAxesConvention"] == "simnibs"
    expected_rows = [[0, 0, 1, -50], [-A, -A, 0, 40], [A, -A, 0, 40], [0, 0, 0, 1]]
    np.testing.assert_allclose(target["CoilPose"]["RigidTransformMatrix4x4"], expected_rows, atol=1e-12)


def test_visor2_derives_qform_when_only_sform_is_set(tmp_path):
    img, _ = _t1w(tmp_path, affine=_oblique_affine(), qcode=0, scode=2)
    info = json.loads(write_visor2(tmp_path / "t.mrk", [TARGET], img).read_text())["Configuration"]["AssociatedImageInfo"]
    rebuilt = _affine_from_quatern(*info["NIfTI_quatern"], info["NIfTI_qoffset"], info["NIfTI_pixdim"])
    np.testing.assert_allclose(rebuilt, _oblique_affine(), atol=1e-4)


def test_slicer_hand_example_is_valid_against_schema(tmp_path):
    img, path = _t1w(tmp_path)
    out = write_slicer(tmp_path / "t.mrk.json", [TARGET], img)
    doc = json.loads(out.read_text())
    schema = json.loads((DATA / "markups-schema-v1.0.3.json").read_text())
    jsonschema.Draft7Validator(schema).validate(doc)
    markup = doc["markups"][0]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    target, entry = markup["controlPoints"]
    np.testing.assert_allclose(target["position"], [40, -40, 40], atol=1e-12)  # RAS (-40, 40, 40)
    np.testing.assert_allclose(entry["position"], [50, -40, 40], atol=1e-12)
    # SimNIBS axes in LPS: x = (0, a, a), y = (0, a, -a), z = (-1, 0, 0); row-major with axes as columns
    np.testing.assert_allclose(target["orientation"], [0, 0, -1, A, A, 0, A, -A, 0], atol=1e-12)
    assert sha256_file(path) in target["description"]


def test_slicer_schema_rejects_a_broken_file(tmp_path):
    schema = json.loads((DATA / "markups-schema-v1.0.3.json").read_text())
    broken = {"@schema": "x", "markups": [{"type": "Fiducial", "coordinateSystem": "IJK"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


# ----------------------------------------------------------------------------- round trips


@pytest.fixture
def random_targets():
    rng = np.random.default_rng(3)
    out = []
    for n in range(3):
        pose = _random_pose(rng)
        out.append(NavTarget(f"t{n}", rng.uniform(-60, 60, 3), pose[:3, 3].copy(), pose))
    return out


def test_round_trips_through_each_reader(tmp_path, random_targets):
    img, _ = _t1w(tmp_path, affine=_oblique_affine())
    bs = read_brainsight(write_brainsight(tmp_path / "bs.txt", random_targets, img))
    li = read_localite_instrument(write_localite_instrument(tmp_path / "li.xml", random_targets, img))
    et = read_localite_entrytarget(write_localite_entrytarget(tmp_path / "et.xml", random_targets, img))
    v2 = read_visor2(write_visor2(tmp_path / "v.mrk", random_targets, img))
    sl = read_slicer(write_slicer(tmp_path / "s.mrk.json", random_targets, img))
    assert li["coordinate_space"] == "RAS" and et["coordinate_space"] == "RAS"
    for n, t in enumerate(random_targets):
        axes = t.pose_simnibs[:3, :3]
        assert bs["targets"][n]["name"] == t.name
        np.testing.assert_allclose(bs["targets"][n]["position_ras_mm"], t.target_ras_mm, atol=1e-4)
        np.testing.assert_allclose(bs["targets"][n]["axes_simnibs"], axes, atol=1e-6)
        assert li["markers"][n]["name"] == t.name
        np.testing.assert_allclose(li["markers"][n]["pose_simnibs"], t.pose_simnibs, atol=1e-6)
        np.testing.assert_allclose(et["pairs"][n]["entry_ras_mm"], t.entry_ras_mm, atol=1e-4)
        np.testing.assert_allclose(et["pairs"][n]["target_ras_mm"], t.target_ras_mm, atol=1e-4)
        np.testing.assert_allclose(v2["markers"][n]["pose_simnibs"], t.pose_simnibs, atol=1e-12)
        np.testing.assert_allclose(sl["points"][2 * n]["position_ras_mm"], t.target_ras_mm, atol=1e-12)
        np.testing.assert_allclose(sl["points"][2 * n + 1]["position_ras_mm"], t.entry_ras_mm, atol=1e-12)
        np.testing.assert_allclose(sl["points"][2 * n]["axes_simnibs_ras"], axes, atol=1e-12)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_every_writer_refuses_disagreeing_qform_and_sform(tmp_path, writer):
    img, path = _t1w(tmp_path)
    shifted = img.affine.copy()
    shifted[:3, 3] += [3.0, 0.0, 0.0]
    img.set_qform(shifted, 1)
    nib.save(img, path)
    bad = nib.load(path)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"sub-01_T1w\.nii\.gz: qform and sform disagree by up to 3\.00 mm"):
        writer(out, [TARGET], bad)
    assert not out.exists()


def _native_json(tmp_path, t1w_path) -> Path:
    marker = {"name": TARGET.name, "target_t1w_ras_mm": TARGET.target_ras_mm.tolist(),
              "entry_t1w_ras_mm": TARGET.entry_ras_mm.tolist(), "coil_pose_t1w_ras": POSE_SIMNIBS.tolist()}
    return write_json({"t1w_path": str(t1w_path), "t1w_sha256": sha256_file(t1w_path), "markers_t1w": [marker]},
                      tmp_path / "native.json")


def test_run_exports_writes_every_format(tmp_path):
    _, t1w_path = _t1w(tmp_path)
    native = _native_json(tmp_path, t1w_path)
    keys = ["brainsight", "localite_instrument", "localite_entrytarget", "visor2", "slicer"]
    written = run_exports(native, t1w_path, {k: tmp_path / "nav" / k for k in keys})
    assert sorted(written) == sorted(keys)
    li = read_localite_instrument(written["localite_instrument"])
    np.testing.assert_allclose(li["markers"][0]["pose_simnibs"], POSE_SIMNIBS, atol=1e-6)
    bs = read_brainsight(written["brainsight"])
    np.testing.assert_allclose(bs["targets"][0]["position_ras_mm"], [-40, 40, 40], atol=1e-4)


def test_run_exports_refuses_another_t1w_and_bad_headers(tmp_path):
    _, t1w_path = _t1w(tmp_path)
    native = _native_json(tmp_path, t1w_path)
    _, other = _t1w(tmp_path, affine=_oblique_affine(), name="sub-02_T1w.nii.gz")
    with pytest.raises(InputError, match="not the T1w the target was mapped to"):
        run_exports(native, other, {"brainsight": tmp_path / "bs.txt"})
    img = nib.load(t1w_path)
    shifted = img.affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 2.0]
    img.set_qform(shifted, 1)
    nib.save(img, t1w_path)
    with pytest.raises(InputError, match="qform and sform disagree"):
        run_exports(native, t1w_path, {"slicer": tmp_path / "s.mrk.json"})
    with pytest.raises(InputError, match="unknown export key"):
        run_exports(native, t1w_path, {"brainsite": tmp_path / "x"})


# ----------------------------------------------------------------------------- generic: TSV, sphere


def test_markers_tsv_hand_example(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    img = nib.Nifti1Image(np.zeros((20, 20, 20), np.uint8), affine)
    rows = [{"name": "target", "t1w_ras_mm": [0.0, 0.0, 0.0], "mni_ras_mm": [-40.0, 44.0, 26.0],
             "description": "hand"},
            {"name": "scalp_entry", "t1w_ras_mm": [-9.2, 1.1, 2.9], "mni_ras_mm": [-60.0, 44.0, 30.0]}]
    path = write_markers_tsv(tmp_path / "m.tsv", rows, img)
    assert path.read_text().splitlines()[0] == "name\tx\ty\tz\tmni_x\tmni_y\tmni_z\ti\tj\tk\tdescription"
    back = read_markers_tsv(path)
    assert [r["name"] for r in back] == ["target", "scalp_entry"]
    np.testing.assert_array_equal(back[0]["ijk"], [5, 10, 15])   # (0 - -10)/2, (0 - -20)/2, (0 - -30)/2
    np.testing.assert_array_equal(back[1]["ijk"], [0, 11, 16])   # 0.4 -> 0, 10.55 -> 11, 16.45 -> 16
    np.testing.assert_allclose(back[1]["t1w_ras_mm"], [-9.2, 1.1, 2.9], atol=1e-3)
    np.testing.assert_allclose(back[0]["mni_ras_mm"], [-40, 44, 26], atol=1e-3)


def test_sphere_voxel_count_and_centre():
    affine = np.eye(4)
    affine[:3, 3] = [-20, -20, -20]
    ref = nib.Nifti1Image(np.zeros((41, 41, 41), np.uint8), affine)
    sphere = sphere_mask_img([1.0, -2.0, 3.0], ref, 5.0).get_fdata() > 0
    assert sphere.sum() == 515  # integer lattice points with x^2 + y^2 + z^2 <= 25
    centroid = np.argwhere(sphere).mean(axis=0) + affine[:3, 3]
    np.testing.assert_allclose(centroid, [1, -2, 3], atol=1e-12)
    tiny = sphere_mask_img([1.3, -2.0, 3.0], ref, 0.1).get_fdata() > 0
    assert tiny.sum() == 1 and tiny[21, 18, 23]
    with pytest.raises(InputError, match="outside the T1w grid"):
        sphere_mask_img([100.0, 0.0, 0.0], ref, 5.0)
