"""What every navigator file shares: the target (:class:`NavTarget`), the T1w check and provenance, the
markers TSV and the NIfTI target sphere. One module per vendor writes and reads its own file
(:mod:`.brainsight`, :mod:`.localite`, :mod:`.ant`, :mod:`.slicer`); :mod:`.exports` writes them all.

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
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget import __version__
from tmstarget.io.files import atomic_path, sha256_file
from tmstarget.native.outputs import (MARKERS_TSV_COLUMNS, save_sphere, sphere_mask_img,  # noqa: F401 (the one copy, in native)
                                      write_markers_tsv)
from tmstarget.io.nifti import check_qform_sform


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

# ----------------------------------------------------------------------------- T1w checks and provenance


def t1w_provenance(t1w_img: nib.Nifti1Image, t1w_path=None, tol_mm: float = 0.1) -> dict:
    """qform/sform check (raises InputError) plus the T1w's file name and SHA-256 for the files."""
    path = Path(t1w_path) if t1w_path is not None else (
        Path(t1w_img.get_filename()) if t1w_img.get_filename() else None)
    info = check_qform_sform(t1w_img, tol_mm=tol_mm, name=path.name if path else None)
    info["t1w_path"] = path.name if path else None  # file name only (a folder can name the patient)
    info["t1w_sha256"] = sha256_file(path) if path and path.exists() else None
    return info


def provenance_text(prov: dict) -> str:
    return f"T1w: {prov['t1w_path']} sha256: {prov['t1w_sha256']} (created by tmstarget {__version__})"


def write_text(path, text: str) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# ----------------------------------------------------------------------------- generic: TSV, sphere

def read_markers_tsv(path) -> list[dict]:
    """Rows of a markers TSV with ``t1w_ras_mm``, ``mni_ras_mm`` (float arrays) and ``ijk`` (int array)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [{"name": r["name"], "description": r["description"],
             "t1w_ras_mm": np.array([float(r[k]) for k in ("x", "y", "z")]),
             "mni_ras_mm": np.array([float(r[k]) for k in ("mni_x", "mni_y", "mni_z")]),
             "ijk": np.array([int(r[k]) for k in ("i", "j", "k")])} for r in rows]
