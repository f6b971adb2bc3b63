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
from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path, save_img, sha256_file
from tmstarget.native.spaces import check_qform_sform, ijk_to_world_ras_mm, world_ras_mm_to_ijk


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
    return write_text(path, "\n".join(lines) + "\n")


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
