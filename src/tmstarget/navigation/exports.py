"""Neuronavigation exports (writers and their readers): Brainsight, Localite, ANT visor2, 3D Slicer,
markers TSV, NIfTI sphere.

All positions are millimetres in the world space of one T1w file: the one loaded into the navigator
(FORMATS.md, docs/navigation.md). Writers take coil poses in SimNIBS axes, built by
:func:`tmstarget.native.scalp.coil_pose_simnibs` from the one handle definition
(:func:`tmstarget.native.scalp.handle_direction_ras`): a 4x4 whose columns are the coil x, y, z axes and the
coil centre; z points into the head, **y points away from the handle (the handle lies along -y)**,
x = y cross z. Each writer converts that pose to its vendor's convention:

=============  ==========================================  ==========================================
format         axes relative to SimNIBS (x, y, z);         positions written
               where the handle points
=============  ==========================================  ==========================================
Brainsight     (-x, y, -z): z out of the head; handle -y    ``<name>-coil``: coil centre (scalp);
                                                            ``<name>-cortex``: cortical target, same
                                                            orientation; "NIfTI:Q:<intent>" (v14)
Localite       (z, -y, x): x into the head; handle +y       coil centre (InstrumentMarker) / entry and
                                                            target points (EntryTarget), RAS
visor2         SimNIBS ("CoilAxesConvention": simnibs);     coil centre, RAS of the associated image
               handle -y
Slicer         SimNIBS axes, expressed in LPS; handle -y    target and entry control points, LPS
=============  ==========================================  ==========================================

Every writer refuses a T1w whose qform and sform disagree and records the T1w's file name and
SHA-256 where the format has room for it (comments, descriptions, a provenance block).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget import __version__
from tmstarget.errors import InputError
from tmstarget.navigation.steps import describe_direction, readme_text  # noqa: F401 (describe_direction: public here before)
from tmstarget.io.files import atomic_path, load_img_checked, read_json, save_img, sha256_file, write_json
from tmstarget.native.spaces import (check_qform_sform, ijk_to_world_ras_mm, lps_to_ras, ras_to_lps,
                     world_ras_mm_to_ijk)

log = logging.getLogger(__name__)

SLICER_SCHEMA_URL = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                     "Resources/Schema/markups-schema-v1.0.3.json#")
#: Brainsight text format version 14 (Brainsight >= 2.5.3) names the NIfTI transform as
#: "NIfTI:Q:<intent>" (qform) or "NIfTI:S:<intent>" (sform).
BRAINSIGHT_VERSION = 14
BRAINSIGHT_INTENT_NAMES = {1: "Scanner", 2: "Aligned", 3: "Talairach", 4: "MNI-152", 5: "Other-Template"}
#: Localite names marker files <Kind><YYYYMMDDhhmmssSSS>.xml, stamped with the time the markers were made,
#: and loads the latest of a session folder; readers (SimNIBS's among them) take the marker type and the
#: date from that name. tmstarget stamps them with the time of the run that computed the T1w-space target
#: (:func:`localite_timestamp`): recorded once per run, so re-running the export or resuming an interrupted
#: run gives the same names and bytes.
LOCALITE_TIMESTAMP_FORMAT = "%Y%m%d%H%M%S%f"  # cut to milliseconds: 17 digits
_RAS_TO_LPS_3X3 = np.diag([-1.0, -1.0, 1.0])


@dataclass
class NavTarget:
    """One target for the navigator, T1w world RAS mm.

    Attributes
    ----------
    name : label shown in the navigator.
    target_ras_mm : (3,) cortical target.
    entry_ras_mm : (3,) scalp entry.
    pose_simnibs : (4, 4) coil pose in SimNIBS axes (columns x, y, z, centre; handle along -y).
    """

    name: str
    target_ras_mm: np.ndarray
    entry_ras_mm: np.ndarray
    pose_simnibs: np.ndarray

    @classmethod
    def from_marker(cls, marker: dict) -> "NavTarget":
        """From one entry of ``markers_t1w`` in the native JSON."""
        return cls(name=str(marker["name"]),
                   target_ras_mm=np.asarray(marker["target_t1w_ras_mm"], float).reshape(3),
                   entry_ras_mm=np.asarray(marker["entry_t1w_ras_mm"], float).reshape(3),
                   pose_simnibs=np.asarray(marker["coil_pose_t1w_ras"], float).reshape(4, 4))


# ----------------------------------------------------------------------------- axis conventions


def simnibs_to_brainsight_axes(axes_simnibs) -> np.ndarray:
    """(3, 3) SimNIBS axes (columns x, y, z) -> Brainsight axes (columns -x, y, -z).

    Brainsight's y, like SimNIBS's, points away from the handle; its z points out of the head.
    """
    a = np.asarray(axes_simnibs, float)
    return np.column_stack([-a[:, 0], a[:, 1], -a[:, 2]])


def brainsight_to_simnibs_axes(axes_brainsight) -> np.ndarray:
    """Inverse of :func:`simnibs_to_brainsight_axes` (the same sign flips)."""
    return simnibs_to_brainsight_axes(axes_brainsight)


def simnibs_to_localite_axes(axes_simnibs) -> np.ndarray:
    """(3, 3) SimNIBS axes -> Localite axes: x_L = z_S (into the head), y_L = -y_S (towards the
    handle), z_L = x_S."""
    a = np.asarray(axes_simnibs, float)
    return np.column_stack([a[:, 2], -a[:, 1], a[:, 0]])


def localite_to_simnibs_axes(axes_localite) -> np.ndarray:
    """Inverse of :func:`simnibs_to_localite_axes`: x_S = z_L, y_S = -y_L, z_S = x_L."""
    a = np.asarray(axes_localite, float)
    return np.column_stack([a[:, 2], -a[:, 1], a[:, 0]])


# ----------------------------------------------------------------------------- T1w checks and provenance


def _t1w_provenance(t1w_img: nib.Nifti1Image, t1w_path=None, tol_mm: float = 0.1) -> dict:
    """qform/sform check (raises InputError) plus the T1w's file name and SHA-256 for the files."""
    path = Path(t1w_path) if t1w_path is not None else (
        Path(t1w_img.get_filename()) if t1w_img.get_filename() else None)
    info = check_qform_sform(t1w_img, tol_mm=tol_mm, name=path.name if path else None)
    info["t1w_path"] = path.name if path else None  # file name only (a folder can name the patient)
    info["t1w_sha256"] = sha256_file(path) if path and path.exists() else None
    return info


def _provenance_text(prov: dict) -> str:
    return f"T1w: {prov['t1w_path']} sha256: {prov['t1w_sha256']} (created by tmstarget {__version__})"


def _write_text(path, text: str) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------- Brainsight

BRAINSIGHT_COLUMNS = ["Target Name", "Loc. X", "Loc. Y", "Loc. Z"] + [f"m{a}n{c}" for a in range(3) for c in range(3)]


def brainsight_coordinate_system(prov: dict) -> tuple[str, str]:
    """Brainsight (v14) coordinate-system name for a NIfTI T1w and which transform it names.

    The qform is named when it is set (``NIfTI:Q:<intent>``; SimNIBS reads only those in v14 files),
    else the sform (``NIfTI:S:<intent>``). Both give the same positions here, as T1w files whose qform
    and sform disagree are refused.

    Parameters
    ----------
    prov : output of :func:`tmstarget.native.spaces.check_qform_sform` (``qform_code``, ``sform_code``).

    Returns
    -------
    (name, "qform" | "sform").
    """
    form, code = ("qform", prov["qform_code"]) if prov["qform_code"] > 0 else ("sform", prov["sform_code"])
    if code not in BRAINSIGHT_INTENT_NAMES:
        raise InputError(f"{prov.get('t1w_path') or 'T1w'}: {form}_code {code} is not a NIfTI intent Brainsight "
                         f"knows ({sorted(BRAINSIGHT_INTENT_NAMES)}); re-export the T1w from DICOM (e.g. dcm2niix)")
    return f"NIfTI:{form[0].upper()}:{BRAINSIGHT_INTENT_NAMES[code]}", form


def write_brainsight(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None) -> Path:
    """Brainsight target import file (version 14, tab-separated), two rows per target.

    ``<name>-coil``: Loc. X/Y/Z is the coil centre on the scalp (what SimNIBS and Brainsight's coil
    display take as the position of a pose); ``<name>-cortex``: the cortical target with the same
    orientation (the trajectory's end in the brain). Positions are T1w world RAS mm of the transform
    named on the coordinate-system line. m0n0..m2n2: mXnY is component Y of axis X in Brainsight's
    convention (SimNIBS x and z negated: z points out of the head, y away from the handle).
    """
    prov = _t1w_provenance(t1w_img, t1w_path)
    system, form = brainsight_coordinate_system(prov)
    other = "sform" if form == "qform" else "qform"
    other_code = prov["sform_code"] if form == "qform" else prov["qform_code"]
    agreement = (f"the {other} (code {other_code}) agrees within {prov['max_difference_mm']:.3f} mm"
                 if other_code else f"no {other} is set")
    lines = [
        f"# Version: {BRAINSIGHT_VERSION}",
        f"# Coordinate system: {system}",
        f"# Created by: tmstarget {__version__}",
        "# Units: millimetres, degrees, milliseconds, and microvolts",
        "# Encoding: UTF-8",
        "# Notes: Each column is delimited by a tab. Each value within a column is delimited by a semicolon.",
        f"# tmstarget: positions are world RAS mm of the T1w's {form} (code {prov[form + '_code']}); {agreement}. "
        "<name>-coil = coil centre on the scalp, <name>-cortex = cortical target on the same trajectory. "
        "Coil y points away from the handle.",
        f"# {_provenance_text(prov)}",
        "# " + "\t".join(BRAINSIGHT_COLUMNS),
    ]
    for t in targets:
        axes = simnibs_to_brainsight_axes(t.pose_simnibs[:3, :3])
        orientation = [f"{axes[c, a]:.6f}" for a in range(3) for c in range(3)]
        name = t.name.replace("\t", " ")
        for suffix, point in (("coil", t.pose_simnibs[:3, 3]), ("cortex", t.target_ras_mm)):
            lines.append("\t".join([f"{name}-{suffix}"] + [f"{v:.4f}" for v in point] + orientation))
    return _write_text(path, "\n".join(lines) + "\n")


def read_brainsight(path) -> dict:
    """Read a Brainsight target file: ``{"version": int, "coordinate_system": str, "targets": [{"name",
    "position_ras_mm" (3,), "axes_brainsight" (3, 3) columns = axes, "axes_simnibs" (3, 3)}]}``."""
    version, system, columns = None, None, None
    targets = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# Version:"):
            version = int(line.split(":", 1)[1])
        elif line.startswith("# Coordinate system:"):
            system = line.split(":", 1)[1].strip()
        elif line.startswith("# Target Name"):
            columns = line[2:].split("\t")
        if not line.strip() or line.startswith("#"):
            continue
        row = dict(zip(columns or BRAINSIGHT_COLUMNS, line.split("\t")))
        axes = np.array([[float(row[f"m{a}n{c}"]) for a in range(3)] for c in range(3)])
        targets.append({"name": row["Target Name"],
                        "position_ras_mm": np.array([float(row[f"Loc. {k}"]) for k in "XYZ"]),
                        "axes_brainsight": axes, "axes_simnibs": brainsight_to_simnibs_axes(axes)})
    return {"version": version, "coordinate_system": system, "targets": targets}


# ----------------------------------------------------------------------------- Localite


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
    prov = _t1w_provenance(t1w_img, t1w_path)
    root = ET.Element("InstrumentMarkerList", coordinateSpace="RAS")
    for index, t in enumerate(targets):
        matrix = np.eye(4)
        matrix[:3, :3] = simnibs_to_localite_axes(t.pose_simnibs[:3, :3])
        matrix[:3, 3] = t.pose_simnibs[:3, 3]
        marker_el = ET.SubElement(
            ET.SubElement(root, "InstrumentMarker", alwaysVisible="false", index=str(index), selected="false"),
            "Marker", additionalInformation=_provenance_text(prov), color="#ff0000", description=t.name,
            set="true")
        ET.SubElement(marker_el, "Matrix4D",
                      {f"data{r}{c}": f"{matrix[r, c]:+.6f}" for r in range(4) for c in range(4)})
    return _write_text(path, _xml_text(root, "All positions are world RAS mm of the NIfTI T1w. "
                                             + _provenance_text(prov)))


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
    prov = _t1w_provenance(t1w_img, t1w_path)
    root = ET.Element("EntryTargetList", coordinateSpace="RAS")
    for index, t in enumerate(targets):
        for tag, point, color, aura in (("Entry", t.entry_ras_mm, "#00ff00", "false"),
                                        ("Target", t.target_ras_mm, "#00ffff", "true")):
            el = ET.SubElement(root, tag, alwaysVisible="false", index=str(index),
                               selected="true" if index == 0 else "false")
            marker_el = ET.SubElement(el, "Marker", color=color, description=t.name, drawAura=aura,
                                      radius=f"{float(radius_mm):.1f}", set="true")
            ET.SubElement(marker_el, "ColVec3D", {f"data{i}": f"{point[i]:+.4f}" for i in range(3)})
    return _write_text(path, _xml_text(root, "All positions are world RAS mm of the NIfTI T1w. Entry = scalp "
                                             "entry, Target = cortical target. " + _provenance_text(prov)))


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


# ----------------------------------------------------------------------------- ANT Neuro visor2


def _qform_fields(t1w_img: nib.Nifti1Image, name: str, tol_mm: float = 0.1) -> dict:
    """NIfTI qform parameters of the T1w as visor2 writes them in ``AssociatedImageInfo``:
    ``NIfTI_quatern`` [b, c, d], ``NIfTI_qoffset`` [x, y, z] (mm) and ``NIfTI_pixdim`` [qfac, dx, dy, dz]
    (derived from the sform when only the sform is set)."""
    header = t1w_img.header.copy()
    _, qcode = header.get_qform(coded=True)
    if not qcode:
        sform = header.get_sform()
        header.set_qform(sform, code=1)
        corners = np.array([[i, j, k] for i in (0, t1w_img.shape[0] - 1) for j in (0, t1w_img.shape[1] - 1)
                            for k in (0, t1w_img.shape[2] - 1)], float)
        err = np.max(np.linalg.norm(ijk_to_world_ras_mm(header.get_qform(), corners)
                                    - ijk_to_world_ras_mm(sform, corners), axis=1))
        if err > tol_mm:
            raise InputError(f"{name}: has no qform and its sform has shear that a qform cannot express; "
                             "visor2 reads the qform: resample the T1w to an unsheared grid")
    return {"NIfTI_quatern": [float(header["quatern_b"]), float(header["quatern_c"]), float(header["quatern_d"])],
            "NIfTI_qoffset": [float(header["qoffset_x"]), float(header["qoffset_y"]), float(header["qoffset_z"])],
            "NIfTI_pixdim": [float(v) for v in header["pixdim"][:4]]}


def write_visor2(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None) -> Path:
    """ANT Neuro visor2 ``.mrk`` (JSON): coil poses in SimNIBS axes at the coil centre, in the world RAS
    of the associated image.

    ``Configuration`` holds ``SourceInfo`` (AppName, AppVersion) and ``AssociatedImageInfo`` with
    exactly the three qform fields visor2 writes (readers compare that block field by field with the
    T1w header, so nothing else goes in it); the T1w's file name and SHA-256 are in the top-level
    ``Provenance`` block.
    """
    prov = _t1w_provenance(t1w_img, t1w_path)
    doc = {
        "Configuration": {
            "SourceInfo": {"AppName": "tmstarget", "AppVersion": __version__},
            "AssociatedImageInfo": _qform_fields(t1w_img, Path(prov["t1w_path"] or "T1w").name),
        },
        "TargetMarkers": [{"CoilTarget": {
            "Name": t.name,
            "CoordinateSystem": "ASSOCIATED_IMAGE",
            "PositionalUnit": "mm",
            "CoilAxesConvention": "simnibs",
            "CoilInfo": {"Type": "", "Id": ""},
            "CoilPose": {"RigidTransformMatrix4x4": np.asarray(t.pose_simnibs, float).tolist()},
        }} for t in targets],
        "Provenance": {
            "T1wFileName": prov["t1w_path"], "T1wSha256": prov["t1w_sha256"],
            "CreatedBy": f"tmstarget {__version__}",
            "CoilAxes": "simnibs: z into the head, y points away from the handle (handle along -y)",
            "CorticalTargetsRasMm": {t.name: np.round(t.target_ras_mm, 4).tolist() for t in targets},
        },
    }
    return write_json(doc, path)


def read_visor2(path) -> dict:
    """``{"image_info": dict, "source_info": dict, "markers": [{"name", "pose_simnibs" (4, 4),
    "coordinate_system", "convention"}]}``."""
    doc = json.loads(Path(path).read_text())
    markers = []
    for entry in doc["TargetMarkers"]:
        ct = entry["CoilTarget"]
        markers.append({"name": ct["Name"], "coordinate_system": ct["CoordinateSystem"],
                        "convention": ct["CoilAxesConvention"],
                        "pose_simnibs": np.asarray(ct["CoilPose"]["RigidTransformMatrix4x4"], float)})
    conf = doc["Configuration"]
    return {"image_info": conf["AssociatedImageInfo"], "source_info": conf.get("SourceInfo"), "markers": markers}


# ----------------------------------------------------------------------------- 3D Slicer


def write_slicer(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None) -> Path:
    """3D Slicer markups (``.mrk.json``, schema v1.0.3): one Fiducial list in LPS with the target and the
    scalp entry of each target; ``orientation`` holds the SimNIBS coil axes in LPS, row-major, so
    (orientation[0], orientation[3], orientation[6]) is the coil x axis and the handle points along
    minus (orientation[1], orientation[4], orientation[7])."""
    prov = _t1w_provenance(t1w_img, t1w_path)
    points = []
    for t in targets:
        axes_lps = _RAS_TO_LPS_3X3 @ t.pose_simnibs[:3, :3]
        for suffix, point in (("", t.target_ras_mm), (" scalp entry", t.entry_ras_mm)):
            points.append({
                "id": str(len(points) + 1), "label": f"{t.name}{suffix}", "description": "orientation = SimNIBS coil axes (handle along -y); " + _provenance_text(prov),
                "associatedNodeID": "", "position": ras_to_lps(point).tolist(),
                "orientation": axes_lps.reshape(-1).tolist(), "selected": True, "locked": True,
                "visibility": True, "positionStatus": "defined"})
    doc = {"@schema": SLICER_SCHEMA_URL,
           "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                        "locked": True, "labelFormat": "%N-%d", "name": "tmstarget", "controlPoints": points}]}
    return write_json(doc, path)


def read_slicer(path) -> dict:
    """``{"points": [{"label", "position_ras_mm" (3,), "axes_simnibs_ras" (3, 3)}]}`` (LPS or RAS files)."""
    doc = json.loads(Path(path).read_text())
    points = []
    for markup in doc["markups"]:
        lps = markup.get("coordinateSystem", "LPS") == "LPS"
        for cp in markup.get("controlPoints", []):
            position = np.asarray(cp["position"], float)
            axes = np.asarray(cp.get("orientation", np.eye(3).ravel()), float).reshape(3, 3)
            points.append({"label": cp.get("label", ""),
                           "position_ras_mm": lps_to_ras(position) if lps else position,
                           "axes_simnibs_ras": _RAS_TO_LPS_3X3 @ axes if lps else axes})
    return {"points": points}


# ----------------------------------------------------------------------------- generic: TSV, sphere

MARKERS_TSV_COLUMNS = ["name", "x", "y", "z", "mni_x", "mni_y", "mni_z", "i", "j", "k", "description"]


def write_markers_tsv(path, rows: list[dict], t1w_img: nib.Nifti1Image) -> Path:
    """BEP037-style markers TSV: one row per point; x, y, z T1w world RAS mm, MNI RAS mm, T1w voxel ijk.

    Parameters
    ----------
    rows : dicts with ``name``, ``t1w_ras_mm`` (3,), ``mni_ras_mm`` (3,) and optional ``description``.
    t1w_img : the T1w whose grid gives i, j, k (nearest voxel, 0-based).
    """
    lines = ["\t".join(MARKERS_TSV_COLUMNS)]
    for row in rows:
        t1w = np.asarray(row["t1w_ras_mm"], float)
        mni = np.asarray(row["mni_ras_mm"], float)
        ijk = np.rint(world_ras_mm_to_ijk(t1w_img.affine, t1w)).astype(int)
        values = ([row["name"]] + [f"{v:.3f}" for v in t1w] + [f"{v:.3f}" for v in mni]
                  + [str(v) for v in ijk] + [row.get("description", "n/a") or "n/a"])
        lines.append("\t".join(str(v).replace("\t", " ") for v in values))
    return _write_text(path, "\n".join(lines) + "\n")


def read_markers_tsv(path) -> list[dict]:
    """Rows of a markers TSV with ``t1w_ras_mm``, ``mni_ras_mm`` (float arrays) and ``ijk`` (int array)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [{"name": r["name"], "description": r["description"],
             "t1w_ras_mm": np.array([float(r[k]) for k in ("x", "y", "z")]),
             "mni_ras_mm": np.array([float(r[k]) for k in ("mni_x", "mni_y", "mni_z")]),
             "ijk": np.array([int(r[k]) for k in ("i", "j", "k")])} for r in rows]


def sphere_mask_img(center_ras_mm, reference_img: nib.Nifti1Image, radius_mm: float) -> nib.Nifti1Image:
    """uint8 mask of the voxels whose centres lie within ``radius_mm`` of a point, in a reference grid.

    The voxel containing the point is always included, so a radius smaller than a voxel still marks it.
    """
    shape = reference_img.shape[:3]
    centre = np.asarray(center_ras_mm, float).reshape(3)
    centre_ijk = world_ras_mm_to_ijk(reference_img.affine, centre)
    zooms = np.linalg.norm(reference_img.affine[:3, :3], axis=0)
    half = np.ceil(radius_mm / zooms).astype(int) + 1
    lo = np.maximum(np.floor(centre_ijk).astype(int) - half, 0)
    hi = np.minimum(np.ceil(centre_ijk).astype(int) + half + 1, shape)
    data = np.zeros(shape, np.uint8)
    if np.all(hi > lo):
        ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        inside = np.linalg.norm(ijk_to_world_ras_mm(reference_img.affine, ijk) - centre, axis=1) <= radius_mm
        data[tuple(ijk[inside].T)] = 1
    own = np.rint(centre_ijk).astype(int)
    if np.all((own >= 0) & (own < shape)):
        data[tuple(own)] = 1
    else:
        raise InputError(f"target {np.round(centre, 1).tolist()} mm lies outside the T1w grid; cannot mark it")
    img = nib.Nifti1Image(data, reference_img.affine)
    img.set_qform(reference_img.affine, 1)
    img.set_sform(reference_img.affine, 1)
    img.header.set_xyzt_units("mm")
    return img


def save_sphere(path, center_ras_mm, reference_img: nib.Nifti1Image, radius_mm: float,
                t1w_sha256: str | None = None) -> Path:
    """Write :func:`sphere_mask_img` atomically; with ``t1w_sha256`` the header's ``descrip`` (80 bytes)
    names the T1w by checksum (``T1w sha256:<hex>``; its file name goes in the JSON sidecar)."""
    img = sphere_mask_img(center_ras_mm, reference_img, radius_mm)
    if t1w_sha256:
        img.header["descrip"] = f"T1w sha256:{t1w_sha256}"[:80].encode("ascii")
    return save_img(img, path)


# ----------------------------------------------------------------------------- adapter

#: Formats of the config's ``exports.formats`` and the file keys each writes.
EXPORT_FORMATS = {
    "brainsight": ["brainsight"],
    "localite": ["localite_instrument", "localite_entrytarget"],
    "visor2": ["visor2"],
    "slicer": ["slicer"],
}

WRITERS = {
    "brainsight": write_brainsight,
    "localite_instrument": write_localite_instrument,
    "localite_entrytarget": write_localite_entrytarget,
    "visor2": write_visor2,
    "slicer": write_slicer,
}

NATIVE_JSON_SUFFIX = "_space-T1w_desc-target_markers.json"


def localite_timestamp(native_json) -> str:
    """The 17-digit Localite stamp (``YYYYMMDDhhmmssSSS``, UTC) of a run: the time its T1w-space target
    was written (the modification time of ``native_json``, written once per run by the native step; the
    export and the report read the same file, so both name the same files)."""
    mtime = Path(native_json).stat().st_mtime
    return _dt.datetime.fromtimestamp(mtime, tz=_dt.timezone.utc).strftime(LOCALITE_TIMESTAMP_FORMAT)[:17]


def export_names(prefix: str, stamp: str) -> dict[str, str]:
    """File names under the ``nav`` folder, relative to it, for a unit prefix (``sub-01[_ses-1]``).

    The Localite files follow the layout of a Localite session folder (``InstrumentMarkers/``,
    ``EntryTarget/``) with the run's ``stamp`` (:func:`localite_timestamp`), because Localite and readers
    of its files (SimNIBS's) take the marker type and date from the file name.
    """
    if not re.fullmatch(r"\d{17}", str(stamp)):
        raise ValueError(f"Localite time stamp {stamp!r} is not YYYYMMDDhhmmssSSS (17 digits)")
    return {
        "brainsight": f"{prefix}_desc-target_brainsight.txt",
        "localite_instrument": f"localite/InstrumentMarkers/InstrumentMarker{stamp}.xml",
        "localite_entrytarget": f"localite/EntryTarget/EntryTarget{stamp}.xml",
        "visor2": f"{prefix}_desc-target_visor2.mrk",
        "slicer": f"{prefix}_desc-target_slicer.mrk.json",
        "readme": "README.txt",
    }


def run_exports(native_json, t1w_path, nav_dir, formats, prefix: str | None = None) -> dict[str, Path]:
    """Write the neuronavigation files for the targets of a native JSON into one folder.

    Parameters
    ----------
    native_json : ``*_space-T1w_desc-target_markers.json`` from :func:`tmstarget.native.outputs.run_native`.
    t1w_path : the T1w to be loaded into the navigator; must be the file the native JSON was computed
        for (same SHA-256) and have agreeing qform and sform.
    nav_dir : output folder (created); file names in :func:`export_names`.
    formats : iterable of ``brainsight``, ``localite``, ``visor2``, ``slicer`` (config ``exports.formats``).
    prefix : file-name prefix; default: the unit taken from the native JSON's name (``sub-01`` of
        ``sub-01_space-T1w_desc-target_markers.json``).

    Returns
    -------
    ``{key: path written}``; keys among ``brainsight``, ``localite_instrument``, ``localite_entrytarget``,
    ``visor2``, ``slicer``, plus ``readme`` (``README.txt``: which T1w to load, the handle direction).
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise InputError(f"unknown export format(s) {unknown}; allowed: {sorted(EXPORT_FORMATS)}")
    native = read_json(native_json)
    t1w_path = Path(t1w_path)
    t1w_img = load_img_checked(t1w_path, ndim=3, what="T1w image")
    check_qform_sform(t1w_img, name=t1w_path.name)
    recorded = native.get("t1w_sha256")
    if recorded and recorded != sha256_file(t1w_path):
        raise InputError(
            f"{t1w_path.name}: this is not the T1w the target was mapped to ({Path(native_json).name} records "
            f"{native.get('t1w_path')} with sha256 {recorded[:12]}...); export for that file or rerun the native step"
        )
    markers = native.get("markers_t1w")
    if not markers:
        raise InputError(f"{Path(native_json).name}: no 'markers_t1w'; rerun the native step")
    targets = [NavTarget.from_marker(m) for m in markers]
    if prefix is None:
        name = Path(native_json).name
        prefix = name[:-len(NATIVE_JSON_SUFFIX)] if name.endswith(NATIVE_JSON_SUFFIX) else "target"
    nav_dir = Path(nav_dir)
    nav_dir.mkdir(parents=True, exist_ok=True)
    names = export_names(prefix, localite_timestamp(native_json))
    written: dict[str, Path] = {}
    for fmt in dict.fromkeys(formats):
        for key in EXPORT_FORMATS[fmt]:
            written[key] = WRITERS[key](nav_dir / names[key], targets, t1w_img, t1w_path=t1w_path)
            log.info("wrote %s: %s", key, names[key])
    shown = {k: names[k] for k in written}
    written["readme"] = _write_text(nav_dir / names["readme"], readme_text(prefix, native, shown, __version__))
    return written
