"""Independent readers of the written navigator files, from each vendor's own axis definition
(FORMATS.md), written without tmstarget's readers, and the handle check built on them.

Each reader returns, per pose in the file, the position (T1w world RAS mm), the direction the coil
handle points to and the direction into the head (world RAS unit vectors), read the way that
vendor defines its axes:

- Brainsight: columns m0*, m1*, m2* are its x, y, z axes; y points away from the handle (handle = -y),
  z points out of the head (into the head = -z).
- Localite InstrumentMarker: Matrix4D columns are its x, y, z axes; x points into the head, y
  towards the handle (handle = +y).
- ANT visor2: ``CoilAxesConvention: "simnibs"``: x, y, z columns; z into the head, handle = -y.
- 3D Slicer: ``orientation`` (row-major, LPS) holds tmstarget's SimNIBS axes: handle = -y, z into the head.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

LPS_FLIP = np.array([-1.0, -1.0, 1.0])


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def brainsight_poses(path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = [ln for ln in lines if ln.startswith("# Target Name")]
    assert len(header) == 1, "one '# Target Name' header line"
    columns = header[0][2:].split("\t")
    out = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        row = dict(zip(columns, line.split("\t")))
        axis = {a: np.array([float(row[f"m{a}n{c}"]) for c in range(3)]) for a in range(3)}
        out.append({"name": row["Target Name"],
                    "position_ras_mm": np.array([float(row[k]) for k in ("Loc. X", "Loc. Y", "Loc. Z")]),
                    "handle": -axis[1], "into_head": -axis[2]})
    return out


def localite_instrument_poses(path) -> list[dict]:
    root = ET.parse(path).getroot()
    assert root.tag == "InstrumentMarkerList" and root.get("coordinateSpace") == "RAS"
    out = []
    for im in root.findall("InstrumentMarker"):
        marker = im.find("Marker")
        m = marker.find("Matrix4D")
        matrix = np.array([[float(m.get(f"data{r}{c}")) for c in range(4)] for r in range(4)])
        out.append({"name": marker.get("description"), "position_ras_mm": matrix[:3, 3],
                    "handle": matrix[:3, 1], "into_head": matrix[:3, 0]})
    return out


def localite_entrytarget_points(path) -> list[dict]:
    root = ET.parse(path).getroot()
    assert root.tag == "EntryTargetList" and root.get("coordinateSpace") == "RAS"
    pairs: dict = {}
    for tag in ("Entry", "Target"):
        for el in root.findall(tag):
            vec = el.find("Marker/ColVec3D")
            pairs.setdefault(el.get("index"), {})[tag.lower()] = np.array([float(vec.get(f"data{i}")) for i in range(3)])
    return [pairs[k] for k in sorted(pairs, key=int)]


def visor2_poses(path) -> list[dict]:
    doc = json.loads(Path(path).read_text())
    out = []
    for entry in doc["TargetMarkers"]:
        ct = entry["CoilTarget"]
        assert ct["CoilAxesConvention"] == "simnibs" and ct["CoordinateSystem"] == "ASSOCIATED_IMAGE"
        assert ct["PositionalUnit"] == "mm"
        matrix = np.array(ct["CoilPose"]["RigidTransformMatrix4x4"], float)
        out.append({"name": ct["Name"], "position_ras_mm": matrix[:3, 3], "handle": -matrix[:3, 1],
                    "into_head": matrix[:3, 2]})
    return out


def slicer_poses(path) -> list[dict]:
    doc = json.loads(Path(path).read_text())
    out = []
    for markup in doc["markups"]:
        assert markup["coordinateSystem"] == "LPS" and markup["coordinateUnits"] == "mm"
        for cp in markup["controlPoints"]:
            axes_lps = np.array(cp["orientation"], float).reshape(3, 3)  # row-major; columns = axes
            out.append({"name": cp["label"], "position_ras_mm": np.array(cp["position"], float) * LPS_FLIP,
                        "handle": -axes_lps[:, 1] * LPS_FLIP, "into_head": axes_lps[:, 2] * LPS_FLIP})
    return out


def markers_tsv(path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["name"]: np.array([float(r[k]) for k in ("x", "y", "z")]) for r in csv.DictReader(f, delimiter="\t")}


def handle_angle_from_posterior_deg(handle, into_head, lateral_sign: float) -> tuple[float, float]:
    """Angle (deg) of the handle in the scalp tangent plane from posterior towards lateral, and the
    (absolute) angle between the handle and the tangent plane.

    Posterior = world -y projected onto the plane normal to ``into_head``; lateral = world x with the
    sign of the hemisphere (-1 left, +1 right), projected and made perpendicular to posterior.
    """
    n = _unit(into_head)
    h = _unit(handle)
    posterior = _unit(np.array([0.0, -1.0, 0.0]) - np.dot([0.0, -1.0, 0.0], n) * n)
    lateral = np.array([lateral_sign, 0.0, 0.0])
    lateral = lateral - np.dot(lateral, n) * n
    lateral = _unit(lateral - np.dot(lateral, posterior) * posterior)
    angle = float(np.degrees(np.arctan2(np.dot(h, lateral), np.dot(h, posterior))))
    off_plane = float(np.degrees(np.arcsin(min(1.0, abs(np.dot(h, n))))))
    return angle, off_plane


def assert_handle(pose: dict, expected_angle_deg: float, lateral_sign: float, tol_deg: float = 5.0) -> None:
    """The handle of a pose points ``expected_angle_deg`` from posterior towards lateral (within tol)."""
    angle, off_plane = handle_angle_from_posterior_deg(pose["handle"], pose["into_head"], lateral_sign)
    where = f"{pose['name']}: handle {np.round(pose['handle'], 3).tolist()}"
    assert off_plane < tol_deg, f"{where} leaves the scalp tangent plane by {off_plane:.1f} deg"
    assert abs(angle - expected_angle_deg) < tol_deg, (
        f"{where} is {angle:.1f} deg from posterior towards lateral, expected {expected_angle_deg}")
    assert pose["handle"][1] < 0 or expected_angle_deg >= 90, f"{where} does not point posterior"
    # turned 20 deg or more from posterior, the handle leans to the target's side in world x as well
    # (straight back, the tangent-plane angle above is the whole claim): one assertion for every angle
    assert expected_angle_deg < 20 or lateral_sign * pose["handle"][0] > 0, f"{where} does not point lateral"


def check_all_files(written: dict, tsv_path, expected_angle_deg: float, lateral_sign: float,
                     n_markers: int = 1) -> None:
    """Read every written file with the vendor's own axes (vendor_files) and assert the handle direction
    and that every position agrees with the markers TSV to 0.01 mm."""
    tsv = markers_tsv(tsv_path)
    target, entry = tsv["target"], tsv["scalp_entry"]
    bs = brainsight_poses(written["brainsight"])
    li = localite_instrument_poses(written["localite_instrument"])
    v2 = visor2_poses(written["visor2"])
    sl = slicer_poses(written["slicer"])
    assert len(bs) == 2 * n_markers and len(li) == len(v2) == n_markers and len(sl) == 2 * n_markers
    # the primary target: Brainsight coil + cortex rows, Localite, visor2, Slicer target + entry points
    for pose in (bs[0], bs[1], li[0], v2[0], sl[0], sl[1]):
        assert_handle(pose, expected_angle_deg, lateral_sign)
    assert bs[0]["name"].endswith("-coil") and bs[1]["name"].endswith("-cortex")
    for pose in (bs[0], li[0], v2[0], sl[1]):  # coil centre = scalp entry (skin distance 0)
        np.testing.assert_allclose(pose["position_ras_mm"], entry, atol=0.01, err_msg=pose["name"])
    for pose in (bs[1], sl[0]):
        np.testing.assert_allclose(pose["position_ras_mm"], target, atol=0.01, err_msg=pose["name"])
    pair = localite_entrytarget_points(written["localite_entrytarget"])[0]
    np.testing.assert_allclose(pair["entry"], entry, atol=0.01)
    np.testing.assert_allclose(pair["target"], target, atol=0.01)
    # the coil axis goes through the cortical target: into-head direction points from entry to target
    into = (target - entry) / np.linalg.norm(target - entry)
    for pose in (bs[0], li[0], v2[0], sl[0]):
        assert np.degrees(np.arccos(np.clip(np.dot(pose["into_head"], into), -1, 1))) < 5.0, pose["name"]
