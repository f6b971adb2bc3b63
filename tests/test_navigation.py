"""Navigator exports: hand-computed files for one coil pose, round trips through each reader, Slicer
schema validation, refusal of T1w files whose qform and sform disagree, and the coil handle read back
from every written file with the vendor's own axis definition (tests/builders/vendor_files.py) on a head of
known geometry and on the mini fMRIPrep tree."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest

from tmstarget.errors import InputError
from tmstarget.io.files import sha256_file, write_json
from tmstarget.navigation.ant import read_visor2, write_visor2
from tmstarget.navigation.brainsight import read_brainsight, write_brainsight
from tmstarget.navigation.common import (NavTarget, read_markers_tsv, write_markers_tsv)
from tmstarget.navigation.exports import run_exports
from tmstarget.navigation.localite import (localite_timestamp, read_localite_entrytarget, read_localite_instrument,
                                           write_localite_entrytarget, write_localite_instrument)
from tmstarget.navigation.slicer import read_slicer, write_slicer
from tmstarget.navigation.steps import describe_direction

from builders.vendor_files import check_all_files

DATA = Path(__file__).parent / "data"
A = np.sqrt(0.5)
# Hand example: entry (-50, 40, 40), inward normal (1, 0, 0), handle 45 deg (see test_scalp): the
# handle points (0, -a, -a) (posterior-inferior). SimNIBS axes: y away from the handle = (0, a, a),
# z = (1, 0, 0), x = y cross z = (0, a, -a).
POSE_SIMNIBS = np.array([
    [0.0, 0.0, 1.0, -50.0],
    [A, A, 0.0, 40.0],
    [-A, A, 0.0, 40.0],
    [0.0, 0.0, 0.0, 1.0],
])
HANDLE_RAS = np.array([0.0, -A, -A])
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
    # version 14 (Brainsight >= 2.5.3) names qform or sform; SimNIBS reads "NIfTI:Q:..." in v14 files
    assert lines[0] == "# Version: 14"
    assert lines[1] == "# Coordinate system: NIfTI:Q:Scanner"
    assert any("T1w's qform (code 1)" in line and "sform (code 1) agrees" in line for line in lines)
    # the T1w by file name and SHA-256 only: its folder could name the patient
    assert any(sha256_file(path) in line and path.name in line for line in lines if line.startswith("#"))
    assert not any(str(path.parent) in line for line in lines)
    header = [line for line in lines if line.startswith("# Target Name")]
    assert header == ["# Target Name\tLoc. X\tLoc. Y\tLoc. Z\t" + "\t".join(
        f"m{a}n{c}" for a in range(3) for c in range(3))]
    coil, cortex = (line.split("\t") for line in lines[-2:])
    assert coil[0] == "sgACC-anticorrelation-coil" and cortex[0] == "sgACC-anticorrelation-cortex"
    # Brainsight axes = (-x, y, -z) of SimNIBS: (0, -a, a), (0, a, a), (-1, 0, 0); m<axis>n<component>
    orientation = [0, -A, A, 0, A, A, -1, 0, 0]
    np.testing.assert_allclose([float(v) for v in coil[1:]], [-50, 40, 40] + orientation, atol=1e-6)
    np.testing.assert_allclose([float(v) for v in cortex[1:]], [-40, 40, 40] + orientation, atol=1e-6)
    # read as Brainsight defines it: the handle is -y (posterior-inferior here), z out of the head
    np.testing.assert_allclose(-np.array([float(v) for v in coil[7:10]]), HANDLE_RAS, atol=1e-6)
    np.testing.assert_allclose([float(v) for v in coil[10:13]], [-1, 0, 0], atol=1e-6)


@pytest.mark.parametrize("qcode, scode, line", [(2, 2, "NIfTI:Q:Aligned"), (0, 2, "NIfTI:S:Aligned"),
                                                 (1, 0, "NIfTI:Q:Scanner"), (4, 4, "NIfTI:Q:MNI-152")])
def test_brainsight_names_the_transform_and_intent_of_the_header(tmp_path, qcode, scode, line):
    img, _ = _t1w(tmp_path, qcode=qcode, scode=scode)
    out = write_brainsight(tmp_path / "bs.txt", [TARGET], img)
    text = out.read_text().splitlines()
    assert f"# Coordinate system: {line}" in text
    form = "qform" if line.startswith("NIfTI:Q") else "sform"
    assert any(f"world RAS mm of the T1w's {form}" in t for t in text)


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
    # Localite x = SimNIBS z = (1,0,0), y = -SimNIBS y = (0,-a,-a) (towards the handle),
    # z = SimNIBS x = (0,a,-a); centre = entry
    expected = np.array([
        [1.0, 0.0, 0.0, -50.0],
        [0.0, -A, A, 40.0],
        [0.0, -A, -A, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got[:3, 1], HANDLE_RAS, atol=1e-6)  # Localite: the handle is +y
    assert root.find("InstrumentMarker").attrib == {"alwaysVisible": "false", "index": "0", "selected": "false"}


def test_localite_entrytarget_hand_example(tmp_path):
    img, _ = _t1w(tmp_path)
    out = write_localite_entrytarget(tmp_path / "et.xml", [TARGET], img)
    root = ET.parse(out).getroot()
    assert root.tag == "EntryTargetList" and root.get("coordinateSpace") == "RAS"
    entry = root.find("Entry/Marker/ColVec3D")
    target = root.find("Target/Marker/ColVec3D")
    np.testing.assert_allclose([float(entry.get(f"data{i}")) for i in range(3)], [-50, 40, 40], atol=1e-4)
    np.testing.assert_allclose([float(target.get(f"data{i}")) for i in range(3)], [-40, 40, 40], atol=1e-4)
    # the attributes of a file Localite writes (SimNIBS's test data, EntryTarget/EntryTarget<stamp>.xml)
    for tag in ("Entry", "Target"):
        el = root.find(tag)
        assert el.attrib == {"alwaysVisible": "false", "index": "0", "selected": "true"}
        marker = el.find("Marker")
        assert set(marker.attrib) == {"color", "description", "drawAura", "radius", "set"}
        assert float(marker.get("radius")) == 4.0 and marker.get("set") == "true"
    assert root.find("Entry/Marker").get("drawAura") == "false"
    assert root.find("Target/Marker").get("drawAura") == "true"


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
    # exactly what visor2 writes: readers compare this block key by key with the T1w header
    assert sorted(info) == ["NIfTI_pixdim", "NIfTI_qoffset", "NIfTI_quatern"]
    assert len(info["NIfTI_pixdim"]) == 4 and info["NIfTI_pixdim"][0] in (-1.0, 1.0)  # qfac, dx, dy, dz
    header = nib.load(path).header
    np.testing.assert_allclose(info["NIfTI_quatern"], [header["quatern_b"], header["quatern_c"], header["quatern_d"]],
                               atol=1e-7)
    np.testing.assert_allclose(info["NIfTI_pixdim"], header["pixdim"][:4], atol=1e-7)
    assert doc["Configuration"]["SourceInfo"]["AppName"] == "tmstarget"
    assert doc["Provenance"]["T1wSha256"] == sha256_file(path) and doc["Provenance"]["T1wFileName"] == path.name
    rebuilt = _affine_from_quatern(*info["NIfTI_quatern"], info["NIfTI_qoffset"], info["NIfTI_pixdim"])
    np.testing.assert_allclose(rebuilt, _oblique_affine(), atol=1e-4)
    target = doc["TargetMarkers"][0]["CoilTarget"]
    assert target["CoordinateSystem"] == "ASSOCIATED_IMAGE" and target["PositionalUnit"] == "mm"
    assert target["CoilAxesConvention"] == "simnibs"
    expected_rows = [[0, 0, 1, -50], [A, A, 0, 40], [-A, A, 0, 40], [0, 0, 0, 1]]
    np.testing.assert_allclose(target["CoilPose"]["RigidTransformMatrix4x4"], expected_rows, atol=1e-12)
    # SimNIBS convention: the handle is -y
    np.testing.assert_allclose(-np.array(target["CoilPose"]["RigidTransformMatrix4x4"])[:3, 1], HANDLE_RAS, atol=1e-12)


def test_visor2_derives_qform_when_only_sform_is_set(tmp_path):
    img, _ = _t1w(tmp_path, affine=_oblique_affine(), qcode=0, scode=2)
    info = json.loads(write_visor2(tmp_path / "t.mrk", [TARGET], img).read_text())["Configuration"]["AssociatedImageInfo"]
    rebuilt = _affine_from_quatern(*info["NIfTI_quatern"], info["NIfTI_qoffset"], info["NIfTI_pixdim"])
    np.testing.assert_allclose(rebuilt, _oblique_affine(), atol=1e-4)


def test_visor2_refuses_an_sform_with_shear_when_there_is_no_qform(tmp_path):
    """A qform cannot hold a shear: derived from such an sform it moves the grid corners (measured by the
    shared qform/sform check), so the visor2 writer refuses instead of writing a shifted image frame."""
    sheared = _oblique_affine()
    sheared[0, 1] += 0.2                       # 0.2 mm per voxel along j: tens of mm at the far corner
    img, _ = _t1w(tmp_path, affine=sheared, qcode=0, scode=2)
    with pytest.raises(InputError, match="sform has shear that a qform cannot express"):
        write_visor2(tmp_path / "t.mrk", [TARGET], img)
    assert not (tmp_path / "t.mrk").exists()
    slight = _oblique_affine()
    slight[0, 1] += 1e-5                       # far below 0.1 mm at the corners: accepted
    img, _ = _t1w(tmp_path, affine=slight, qcode=0, scode=2, name="slight_T1w.nii.gz")
    assert write_visor2(tmp_path / "s.mrk", [TARGET], img).exists()


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
    # SimNIBS axes in LPS: x = (0, -a, -a), y = (0, -a, a), z = (-1, 0, 0); row-major with axes as columns
    np.testing.assert_allclose(target["orientation"], [0, 0, -1, -A, -A, 0, -A, A, 0], atol=1e-12)
    y_lps = np.array(target["orientation"]).reshape(3, 3)[:, 1]
    np.testing.assert_allclose(-y_lps * [-1, -1, 1], HANDLE_RAS, atol=1e-12)  # handle = -y, back to RAS
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
    assert bs["version"] == 14
    for n, t in enumerate(random_targets):
        axes = t.pose_simnibs[:3, :3]
        coil, cortex = bs["targets"][2 * n], bs["targets"][2 * n + 1]
        assert (coil["name"], cortex["name"]) == (f"{t.name}-coil", f"{t.name}-cortex")
        np.testing.assert_allclose(coil["position_ras_mm"], t.pose_simnibs[:3, 3], atol=1e-4)
        np.testing.assert_allclose(cortex["position_ras_mm"], t.target_ras_mm, atol=1e-4)
        np.testing.assert_allclose(coil["axes_simnibs"], axes, atol=1e-6)
        np.testing.assert_allclose(cortex["axes_simnibs"], axes, atol=1e-6)
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
    return write_json({"t1w_path": t1w_path.name, "t1w_sha256": sha256_file(t1w_path), "markers_t1w": [marker],
                       "target_t1w_ras_mm": TARGET.target_ras_mm.tolist(),
                       "entry_t1w_ras_mm": TARGET.entry_ras_mm.tolist(), "handle_direction_t1w_ras": HANDLE_RAS.tolist(),
                       "handle_angle_deg": 45.0},
                      tmp_path / "sub-01_space-T1w_desc-target_markers.json")


def test_run_exports_writes_every_format_into_the_nav_folder(tmp_path):
    _, t1w_path = _t1w(tmp_path)
    native = _native_json(tmp_path, t1w_path)
    nav = tmp_path / "nav"
    written = run_exports(native, t1w_path, nav, ["brainsight", "localite", "visor2", "slicer"])
    assert sorted(written) == ["brainsight", "localite_entrytarget", "localite_instrument", "readme", "slicer",
                               "visor2"]
    rel = {k: Path(p).relative_to(nav).as_posix() for k, p in written.items()}
    # Localite stamps its files with the time the markers were made: here the time of the run that wrote the
    # T1w-space target (the native JSON), in UTC, to the millisecond
    import os
    os.utime(native, (1765200000.25, 1765200000.25))           # 2025-12-08 13:20:00.250 UTC
    stamp = "20251208132000250"
    assert localite_timestamp(native) == stamp
    written = run_exports(native, t1w_path, nav, ["brainsight", "localite", "visor2", "slicer"])
    rel = {k: Path(p).relative_to(nav).as_posix() for k, p in written.items()}
    assert rel == {"brainsight": "sub-01_desc-target_brainsight.txt",
                   # Localite session layout; readers take the marker type and date from the name
                   "localite_instrument": f"localite/InstrumentMarkers/InstrumentMarker{stamp}.xml",
                   "localite_entrytarget": f"localite/EntryTarget/EntryTarget{stamp}.xml",
                   "visor2": "sub-01_desc-target_visor2.mrk", "slicer": "sub-01_desc-target_slicer.mrk.json",
                   "readme": "README.txt"}
    li = read_localite_instrument(written["localite_instrument"])
    np.testing.assert_allclose(li["markers"][0]["pose_simnibs"], POSE_SIMNIBS, atol=1e-6)
    bs = read_brainsight(written["brainsight"])
    np.testing.assert_allclose(bs["targets"][1]["position_ras_mm"], [-40, 40, 40], atol=1e-4)
    readme = written["readme"].read_text()
    assert f"Load this T1w as the anatomy: {t1w_path.name} (sha256 {sha256_file(t1w_path)})" in readme
    assert "posterior-inferior" in readme and str(tmp_path) not in readme
    # the import steps travel with the files (the operator has no docs/ folder)
    assert f"InstrumentMarker{stamp}.xml\n  Localite TMS Navigator: copy into the session's InstrumentMarkers/" in readme
    assert "  1. New project: open the T1w NIfTI named above as the anatomical data" in readme
    assert "docs/navigation.md" not in readme
    # the same run's target, the same bytes (the stamp is read from the native JSON, not the clock)
    again = run_exports(native, t1w_path, tmp_path / "nav2", ["brainsight", "localite", "visor2", "slicer"])
    for key, path in written.items():
        assert Path(path).read_bytes() == Path(again[key]).read_bytes(), key
    # only the requested formats
    only = run_exports(native, t1w_path, tmp_path / "nav3", ["slicer"])
    assert sorted(only) == ["readme", "slicer"]
    assert sorted(p.name for p in (tmp_path / "nav3").rglob("*") if p.is_file()) == [
        "README.txt", "sub-01_desc-target_slicer.mrk.json"]


def test_run_exports_refuses_another_t1w_and_bad_headers(tmp_path):
    _, t1w_path = _t1w(tmp_path)
    native = _native_json(tmp_path, t1w_path)
    _, other = _t1w(tmp_path, affine=_oblique_affine(), name="sub-02_T1w.nii.gz")
    with pytest.raises(InputError, match="not the T1w the target was mapped to"):
        run_exports(native, other, tmp_path / "nav", ["brainsight"])
    img = nib.load(t1w_path)
    shifted = img.affine.copy()
    shifted[:3, 3] += [0.0, 0.0, 2.0]
    img.set_qform(shifted, 1)
    nib.save(img, t1w_path)
    with pytest.raises(InputError, match="qform and sform disagree"):
        run_exports(native, t1w_path, tmp_path / "nav", ["slicer"])
    with pytest.raises(InputError, match="unknown export format"):
        run_exports(native, t1w_path, tmp_path / "nav", ["brainsite"])


def test_describe_direction_words():
    assert describe_direction([0, -A, -A]) == "posterior-inferior"
    assert describe_direction([-0.5, -0.7, -0.5]) == "posterior-left-inferior"
    assert describe_direction([0.9, 0.1, 0.1]) == "right"
    assert describe_direction([0, 0, 0]) == "undefined"


# ----------------------------------------------------------------------------- generic: markers TSV read back (the writer and the sphere: test_native_outputs.py)


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


# ----------------------------------------------------------------------------- the handle in every written file


@pytest.fixture(scope="module")
def sphere_inputs(tmp_path_factory):
    """The spherical head of test_scalp on disk with identity T1w<->MNI transforms."""
    from builders.mini_fmriprep import write_translation_h5
    from builders.sphere_head import sphere_t1w_and_brain

    root = tmp_path_factory.mktemp("sphere")
    t1w_img, brain_img = sphere_t1w_and_brain()
    nib.save(t1w_img, root / "sub-01_T1w.nii.gz")
    nib.save(brain_img, root / "sub-01_desc-brain_mask.nii.gz")
    for name in ("from-T1w_to-MNI", "from-MNI_to-T1w"):
        write_translation_h5(root / f"sub-01_{name}_mode-image_xfm.h5", np.zeros(3))
    return root


def _run_native_and_exports(root, out, target_mni, cfg, t1w, xfm_to_mni, xfm_to_t1w, brain, extra=None):
    from tmstarget.native.outputs import run_native

    out.mkdir(parents=True, exist_ok=True)
    doc = {"target_mni_ras_mm": list(map(float, target_mni)), "Sources": [], **(extra or {})}
    tjson = write_json(doc, out / "target.json")
    base = out / "sub-01_space-T1w_desc-target"
    result = run_native(tjson, t1w, xfm_to_mni, xfm_to_t1w, brain, cfg, f"{base}_markers.tsv",
                        f"{base}_markers.json", out / "sub-01_space-T1w_coordsystem.json", f"{base}_mask.nii.gz",
                        out_sphere_json=f"{base}_mask.json")
    written = run_exports(f"{base}_markers.json", t1w, out / "nav", ["brainsight", "localite", "visor2", "slicer"])
    return result, written, Path(f"{base}_markers.tsv")


@pytest.mark.parametrize("lateral_sign, angle", [(-1.0, 45.0), (-1.0, 0.0), (1.0, 45.0), (-1.0, 70.0)],
                         ids=["left-45", "left-0", "right-45", "left-70"])
def test_every_written_file_has_the_handle_posterior_lateral_on_a_sphere(sphere_inputs, tmp_path,
                                                                         lateral_sign, angle):
    from builders.sphere_head import HEAD_CENTRE

    root = sphere_inputs
    # over DLPFC: left (lateral = -x) or right (+x), anterior and superior of the centre, 35 mm deep
    u = np.array([0.65 * lateral_sign, 0.55, 0.5])
    target = HEAD_CENTRE + 35.0 * u / np.linalg.norm(u)
    result, written, tsv = _run_native_and_exports(
        root, tmp_path, target, {"handle_angle_deg": angle}, root / "sub-01_T1w.nii.gz",
        root / "sub-01_from-T1w_to-MNI_mode-image_xfm.h5", root / "sub-01_from-MNI_to-T1w_mode-image_xfm.h5",
        root / "sub-01_desc-brain_mask.nii.gz")
    check_all_files(written, tsv, angle, lateral_sign)
    # the native JSON: the handle direction key and the corrected convention text
    handle = np.array(result["handle_direction_t1w_ras"])
    np.testing.assert_allclose(handle, -np.array(result["coil_pose_t1w_ras"])[:3, 1], atol=1e-12)
    assert result["coil_axes_convention"] == ("simnibs: columns x, y, z, centre; z into the head, y points away "
                                              "from the handle (handle along -y), x = y cross z")
    from builders import vendor_files as vf

    got, _ = vf.handle_angle_from_posterior_deg(handle, result["inward_normal_t1w_ras"], lateral_sign)
    assert got == pytest.approx(angle, abs=1e-6)
    # the target sphere names its T1w and is in mm
    sphere = nib.load(tmp_path / "sub-01_space-T1w_desc-target_mask.nii.gz")
    sha = sha256_file(root / "sub-01_T1w.nii.gz")
    assert sphere.header.get_xyzt_units()[0] == "mm"
    assert sphere.header["descrip"].tobytes().rstrip(b"\0").decode() == f"T1w sha256:{sha}"
    side = json.loads((tmp_path / "sub-01_space-T1w_desc-target_mask.json").read_text())
    assert side["T1wFileName"] == "sub-01_T1w.nii.gz" and side["T1wSha256"] == sha


def test_native_maps_uncertainty_candidates_to_t1w(sphere_inputs, tmp_path):
    """Candidates (from the reliability step) get ``target_t1w_ras_mm`` mapped like the bootstrap cloud."""
    from builders.mini_fmriprep import write_translation_h5
    from builders.sphere_head import HEAD_CENTRE

    root = sphere_inputs
    shift = np.array([2.0, -3.0, 1.0])  # image transform T1w->MNI as a point map MNI -> T1w: p + shift
    write_translation_h5(tmp_path / "to_mni.h5", shift)
    write_translation_h5(tmp_path / "to_t1w.h5", -shift)
    target = HEAD_CENTRE + np.array([-22.0, 20.0, 18.0]) - shift
    candidates = [{"rank": 1, "target_mni_ras_mm": (target + [1.0, 0.0, 0.0]).tolist(), "score": 0.5},
                  {"rank": 2, "target_mni_ras_mm": None},
                  {"rank": 3, "target_mni_ras_mm": (target + [0.0, -2.0, 3.0]).tolist()}]
    extra = {"uncertainty": {"method": "block-bootstrap", "targets_mni_ras_mm": [target.tolist(), None],
                             "candidates": candidates}}
    result, _, _ = _run_native_and_exports(root, tmp_path / "out", target, {}, root / "sub-01_T1w.nii.gz",
                                           tmp_path / "to_mni.h5", tmp_path / "to_t1w.h5",
                                           root / "sub-01_desc-brain_mask.nii.gz", extra)
    written = json.loads((tmp_path / "out" / "sub-01_space-T1w_desc-target_markers.json").read_text())
    got = written["uncertainty"]["candidates"]
    assert [c["rank"] for c in got] == [1, 2, 3] and got[0]["score"] == 0.5
    np.testing.assert_allclose(got[0]["target_t1w_ras_mm"], target + [1.0, 0.0, 0.0] + shift, atol=1e-3)
    assert got[1]["target_t1w_ras_mm"] is None
    np.testing.assert_allclose(got[2]["target_t1w_ras_mm"], target + [0.0, -2.0, 3.0] + shift, atol=1e-3)
    np.testing.assert_allclose(written["uncertainty"]["targets_t1w_ras_mm"][0], target + shift, atol=1e-3)
    assert written["uncertainty"]["targets_t1w_ras_mm"][1] is None
    assert result["uncertainty"]["candidates"][0]["target_t1w_ras_mm"] == got[0]["target_t1w_ras_mm"]


def test_every_written_file_has_the_handle_posterior_lateral_on_the_mini_fmriprep_tree(tmp_path):
    """The head-shaped T1w of the mini fMRIPrep tree, its real .h5 transforms, the planted left-DLPFC target."""
    from builders.mini_fmriprep import PLANTED_TARGET_MNI_RAS_MM, SPACE, make_mini_fmriprep

    deriv = make_mini_fmriprep(tmp_path / "fmriprep", n_volumes=10)
    anat = deriv / "sub-01" / "anat"
    result, written, tsv = _run_native_and_exports(
        deriv, tmp_path / "out", PLANTED_TARGET_MNI_RAS_MM, {"handle_angle_deg": 45},
        anat / "sub-01_desc-preproc_T1w.nii.gz", anat / f"sub-01_from-T1w_to-{SPACE}_mode-image_xfm.h5",
        anat / f"sub-01_from-{SPACE}_to-T1w_mode-image_xfm.h5", anat / "sub-01_desc-brain_mask.nii.gz")
    check_all_files(written, tsv, 45.0, lateral_sign=-1.0)
    assert describe_direction(result["handle_direction_t1w_ras"]).startswith("posterior-left")
