"""ANT Neuro visor2 ``.mrk`` (JSON) target file: writer and reader."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget import __version__
from tmstarget.errors import InputError
from tmstarget.io.files import write_json
from tmstarget.io.nifti import check_qform_sform
from tmstarget.navigation.common import NavTarget, t1w_provenance


def _qform_fields(t1w_img: nib.Nifti1Image, name: str, tol_mm: float = 0.1) -> dict:
    """NIfTI qform parameters of the T1w as visor2 writes them in ``AssociatedImageInfo``:
    ``NIfTI_quatern`` [b, c, d], ``NIfTI_qoffset`` [x, y, z] (mm) and ``NIfTI_pixdim`` [qfac, dx, dy, dz]
    (derived from the sform when only the sform is set)."""
    header = t1w_img.header.copy()
    _, qcode = header.get_qform(coded=True)
    if not qcode:
        sform = header.get_sform()
        header.set_qform(sform, code=1)
        # the shared qform/sform distance, asked for the number only: the refusal names the visor2 reason
        err = check_qform_sform(nib.Nifti1Image(t1w_img.dataobj, None, header=header), tol_mm=float("inf"),
                                name=name)["max_difference_mm"]
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
    prov = t1w_provenance(t1w_img, t1w_path)
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
