"""3D Slicer markups (``.mrk.json``, schema v1.0.3): writer and reader."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.io.files import write_json
from tmstarget.native.spaces import lps_to_ras, ras_to_lps
from tmstarget.navigation.common import NavTarget, provenance_text, t1w_provenance

SLICER_SCHEMA_URL = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                     "Resources/Schema/markups-schema-v1.0.3.json#")
_RAS_TO_LPS_3X3 = np.diag([-1.0, -1.0, 1.0])


def write_slicer(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None) -> Path:
    """3D Slicer markups (``.mrk.json``, schema v1.0.3): one Fiducial list in LPS with the target and the
    scalp entry of each target; ``orientation`` holds the SimNIBS coil axes in LPS, row-major, so
    (orientation[0], orientation[3], orientation[6]) is the coil x axis and the handle points along
    minus (orientation[1], orientation[4], orientation[7])."""
    prov = t1w_provenance(t1w_img, t1w_path)
    points = []
    for t in targets:
        axes_lps = _RAS_TO_LPS_3X3 @ t.pose_simnibs[:3, :3]
        for suffix, point in (("", t.target_ras_mm), (" scalp entry", t.entry_ras_mm)):
            points.append({
                "id": str(len(points) + 1), "label": f"{t.name}{suffix}", "description": "orientation = SimNIBS coil axes (handle along -y); " + provenance_text(prov),
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
