"""Localite marker files (InstrumentMarkerList and EntryTargetList XML) and their time stamp: writers and readers."""

from __future__ import annotations

import datetime as _dt
import xml.etree.ElementTree as ET
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.navigation.common import NavTarget, provenance_text, t1w_provenance, write_text

#: Localite names marker files <Kind><YYYYMMDDhhmmssSSS>.xml, stamped with the time the markers were made,
#: and loads the latest of a session folder; readers (SimNIBS's among them) take the marker type and the
#: date from that name. tmstarget stamps them with the time of the run that computed the T1w-space target
#: (:func:`localite_timestamp`): recorded once per run, so re-running the export or resuming an interrupted
#: run gives the same names and bytes.
LOCALITE_TIMESTAMP_FORMAT = "%Y%m%d%H%M%S%f"  # cut to milliseconds: 17 digits


def simnibs_to_localite_axes(axes_simnibs) -> np.ndarray:
    """(3, 3) SimNIBS axes -> Localite axes: x_L = z_S (into the head), y_L = -y_S (towards the
    handle), z_L = x_S."""
    a = np.asarray(axes_simnibs, float)
    return np.column_stack([a[:, 2], -a[:, 1], a[:, 0]])


def localite_to_simnibs_axes(axes_localite) -> np.ndarray:
    """Inverse of :func:`simnibs_to_localite_axes`: x_S = z_L, y_S = -y_L, z_S = x_L."""
    a = np.asarray(axes_localite, float)
    return np.column_stack([a[:, 2], -a[:, 1], a[:, 0]])


def localite_timestamp(native_json) -> str:
    """The 17-digit Localite stamp (``YYYYMMDDhhmmssSSS``, UTC) of a run: the time its T1w-space target
    was written (the modification time of ``native_json``, written once per run by the native step; the
    export and the report read the same file, so both name the same files)."""
    mtime = Path(native_json).stat().st_mtime
    return _dt.datetime.fromtimestamp(mtime, tz=_dt.timezone.utc).strftime(LOCALITE_TIMESTAMP_FORMAT)[:17]


def _xml_text(root: ET.Element, comment: str) -> str:
    root.insert(0, ET.Comment(f" {comment} "))
    ET.indent(root, space="    ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_localite_instrument(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None) -> Path:
    """Localite InstrumentMarkerList (full coil poses at the coil centre), RAS.

    ``Matrix4D`` holds Localite's axes as columns (x into the head = SimNIBS z, y towards the handle
    = -SimNIBS y, z = SimNIBS x) and the coil centre in data03, data13, data23. Localite and readers of
    its files take the marker type from the file name: name it ``InstrumentMarker<timestamp>.xml``
    (see :func:`run_exports`).
    """
    prov = t1w_provenance(t1w_img, t1w_path)
    root = ET.Element("InstrumentMarkerList", coordinateSpace="RAS")
    for index, t in enumerate(targets):
        matrix = np.eye(4)
        matrix[:3, :3] = simnibs_to_localite_axes(t.pose_simnibs[:3, :3])
        matrix[:3, 3] = t.pose_simnibs[:3, 3]
        marker_el = ET.SubElement(
            ET.SubElement(root, "InstrumentMarker", alwaysVisible="false", index=str(index), selected="false"),
            "Marker", additionalInformation=provenance_text(prov), color="#ff0000", description=t.name,
            set="true")
        ET.SubElement(marker_el, "Matrix4D",
                      {f"data{r}{c}": f"{matrix[r, c]:+.6f}" for r in range(4) for c in range(4)})
    return write_text(path, _xml_text(root, "All positions are world RAS mm of the NIfTI T1w. "
                                             + provenance_text(prov)))


def read_localite_instrument(path) -> dict:
    """``{"coordinate_space": "RAS"|"LPS", "markers": [{"name", "matrix_localite" (4, 4),
    "pose_simnibs" (4, 4)}]}``."""
    root = ET.parse(path).getroot()
    markers = []
    for marker_el in root.iter("Marker"):
        m_el = marker_el.find("Matrix4D")
        matrix = np.array([[float(m_el.get(f"data{r}{c}")) for c in range(4)] for r in range(4)])
        pose = np.eye(4)
        pose[:3, :3] = localite_to_simnibs_axes(matrix[:3, :3])
        pose[:3, 3] = matrix[:3, 3]
        markers.append({"name": marker_el.get("description"), "matrix_localite": matrix, "pose_simnibs": pose})
    return {"coordinate_space": root.get("coordinateSpace"), "markers": markers}


def write_localite_entrytarget(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None,
                               radius_mm: float = 4.0) -> Path:
    """Localite EntryTargetList: scalp entry and cortical target points (no orientation), RAS.

    Attributes as in files Localite writes: ``alwaysVisible``, ``index``, ``selected`` on Entry/Target
    (the first pair selected), ``color``, ``description``, ``drawAura``, ``radius`` (mm), ``set`` on
    Marker. Name the file ``EntryTarget<timestamp>.xml`` (see :func:`run_exports`).
    """
    prov = t1w_provenance(t1w_img, t1w_path)
    root = ET.Element("EntryTargetList", coordinateSpace="RAS")
    for index, t in enumerate(targets):
        for tag, point, color, aura in (("Entry", t.entry_ras_mm, "#00ff00", "false"),
                                        ("Target", t.target_ras_mm, "#00ffff", "true")):
            el = ET.SubElement(root, tag, alwaysVisible="false", index=str(index),
                               selected="true" if index == 0 else "false")
            marker_el = ET.SubElement(el, "Marker", color=color, description=t.name, drawAura=aura,
                                      radius=f"{float(radius_mm):.1f}", set="true")
            ET.SubElement(marker_el, "ColVec3D", {f"data{i}": f"{point[i]:+.4f}" for i in range(3)})
    return write_text(path, _xml_text(root, "All positions are world RAS mm of the NIfTI T1w. Entry = scalp "
                                             "entry, Target = cortical target. " + provenance_text(prov)))


def read_localite_entrytarget(path) -> dict:
    """``{"coordinate_space": str, "pairs": [{"name", "entry_ras_mm" (3,), "target_ras_mm" (3,)}]}``
    (pairs matched by ``index``)."""
    root = ET.parse(path).getroot()
    pairs: dict[str, dict] = {}
    for tag, key in (("Entry", "entry_ras_mm"), ("Target", "target_ras_mm")):
        for el in root.findall(tag):
            marker_el = el.find("Marker")
            vec = marker_el.find("ColVec3D")
            pair = pairs.setdefault(el.get("index"), {"name": marker_el.get("description")})
            pair[key] = np.array([float(vec.get(f"data{i}")) for i in range(3)])
    return {"coordinate_space": root.get("coordinateSpace"),
            "pairs": [pairs[k] for k in sorted(pairs, key=int)]}
