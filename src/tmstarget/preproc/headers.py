"""Header checks and nibabel <-> ANTs image conversion for the built-in preprocessing.

ANTs works in LPS physical space and reads a NIfTI's orientation its own way (ITK prefers the
qform in some versions, the sform in others). To stay in control, tmstarget never lets ANTs read a
raw file: images are loaded with nibabel, one affine is chosen and checked here (RAS mm), and the
ANTs image is built from that affine with :func:`nifti_to_ants`. Transforms estimated by ANTs then
relate exactly the world spaces that tmstarget writes into its own outputs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ants
import nibabel as nib
import numpy as np

from tmstarget.errors import InputError

log = logging.getLogger(__name__)

#: maps RAS+ to LPS+ and back (its own inverse)
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: qform and sform disagree when a voxel corner moves more than this (mm)
QFORM_SFORM_TOLERANCE_MM = 0.1


def affine_disagreement_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple) -> float:
    """Largest distance (mm) between the world positions two affines give the 8 corners of a grid.

    Parameters
    ----------
    affine_a, affine_b : array (4, 4)
        Voxel-to-world affines (RAS mm).
    shape : tuple of int
        Spatial grid shape (first 3 entries used).
    """
    corners_ijk = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                            for k in (0, shape[2] - 1)])
    diff = corners_ijk @ (np.asarray(affine_a) - np.asarray(affine_b)).T
    return float(np.max(np.linalg.norm(diff[:, :3], axis=1)))


def choose_affine(img: nib.Nifti1Image, path: str | os.PathLike, what: str = "image",
                  disagreement: str = "error") -> tuple[np.ndarray, list[str]]:
    """Pick the voxel-to-world affine (RAS mm) of an image and explain problems.

    Rules: sform if ``sform_code > 0`` (nibabel's and most tools' choice), else qform if
    ``qform_code > 0``, else the voxel-size-only affine (NIfTI "method 1"), with a warning that the
    orientation is not recorded and registration has to find it. When both codes are set and the
    two matrices move a grid corner by more than :data:`QFORM_SFORM_TOLERANCE_MM`, raise
    :class:`InputError` (``disagreement="error"``) or warn and use the sform (``"warn"``).

    Parameters
    ----------
    img : nibabel.Nifti1Image
    path : path-like
        The file the image came from (named in messages).
    what : str
        Word for the image in messages ("T1w", "BOLD run").
    disagreement : {"error", "warn"}

    Returns
    -------
    affine : array (4, 4)
        RAS mm voxel-to-world affine to use.
    warnings : list of str
        Human-readable warnings (also logged).
    """
    name = Path(path).name
    header = img.header
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    shape = img.shape[:3]
    warnings: list[str] = []
    if scode > 0 and qcode > 0:
        qform, sform = header.get_qform(), header.get_sform()
        dist_mm = affine_disagreement_mm(qform, sform, shape)
        if dist_mm > QFORM_SFORM_TOLERANCE_MM:
            msg = (f"{name}: the qform and sform of this {what} disagree (a corner of the image moves "
                   f"{dist_mm:.2f} mm between them); viewers and navigators differ on which one they read. "
                   "Make them equal (e.g. nibabel: img.set_qform(img.get_sform()); or "
                   "fslorient -copysform2qform) after checking which one is right")
            if disagreement == "error":
                raise InputError(msg)
            msg += "; using the sform"
            log.warning(msg)
            warnings.append(msg)
        affine = sform
    elif scode > 0:
        affine = header.get_sform()
    elif qcode > 0:
        affine = header.get_qform()
    else:
        # NIfTI-1 "method 1": x = pixdim[1] * i, y = pixdim[2] * j, z = pixdim[3] * k (no flip; nibabel's
        # get_base_affine flips x, the Analyze convention, which mirrored RAS-stored data), centred
        affine = header.get_base_affine()
        affine[0, :] *= -1
        msg = (f"{name}: qform_code and sform_code are both 0, so the {what}'s orientation in the "
               "scanner is not recorded; using voxel sizes only with the voxel axes taken as R, A, S (NIfTI "
               "method 1) and letting the registration's centre-of-mass and rotation search find the "
               "position and tilt. A left-right flip cannot be detected this way: check the BOLD->T1w figure, and set "
               "sform_code/qform_code to 1 if the stored matrices are right (e.g. re-convert the DICOMs "
               "with dcm2niix)")
        log.warning(msg)
        warnings.append(msg)
    affine = np.asarray(affine, dtype=float)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(np.isfinite(affine)) or np.any(zooms < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{name}: the {what}'s affine is singular or not finite ({affine.tolist()}); "
                         "fix the header (pixdim, qform, sform) or re-convert the image")
    return affine, warnings


def is_oblique(affine: np.ndarray, tolerance_deg: float = 1.0) -> bool:
    """True if the voxel axes are tilted more than ``tolerance_deg`` from the world axes."""
    directions = np.asarray(affine)[:3, :3] / np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    cos_max = np.max(np.abs(directions), axis=0)
    return bool(np.any(np.degrees(np.arccos(np.clip(cos_max, -1, 1))) > tolerance_deg))


def nifti_to_ants(data: np.ndarray, affine_ras: np.ndarray) -> "ants.ANTsImage":
    """Build a 3D ANTs image (LPS physical space) from a voxel array and a RAS mm affine.

    Parameters
    ----------
    data : array (X, Y, Z)
        Voxel values, indexed ``[i, j, k]`` as in nibabel.
    affine_ras : array (4, 4)
        Voxel-to-world affine, RAS mm. Shears are not representable in ANTs and raise.
    """
    affine_lps = RAS_TO_LPS @ np.asarray(affine_ras, dtype=float)
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    direction = affine_lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError("the image affine has shears, which ANTs cannot represent; reslice the image "
                         "to an orthogonal grid first")
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=affine_lps[:3, 3].tolist(),
                           spacing=spacing.tolist(), direction=direction)


def ants_affine_ras(image: "ants.ANTsImage") -> np.ndarray:
    """RAS mm voxel-to-world affine (4, 4) of an ANTs image."""
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.asarray(image.direction) * np.asarray(image.spacing)[None, :]
    affine_lps[:3, 3] = image.origin
    return RAS_TO_LPS @ affine_lps


def ants_to_nifti(image: "ants.ANTsImage", affine_ras: np.ndarray | None = None,
                  dtype=np.float32) -> nib.Nifti1Image:
    """NIfTI image (qform = sform, code 1 = scanner) from an ANTs image.

    ``affine_ras`` overrides the affine (use the input's exact affine for outputs on the input grid).
    """
    affine = ants_affine_ras(image) if affine_ras is None else np.asarray(affine_ras, dtype=float)
    img = nib.Nifti1Image(image.numpy().astype(dtype), affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def nifti_img(data: np.ndarray, affine_ras: np.ndarray, dtype=np.float32, code: int = 1) -> nib.Nifti1Image:
    """NIfTI image with qform = sform = ``affine_ras`` (so every reader sees one world)."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), np.asarray(affine_ras, dtype=float))
    img.set_qform(affine_ras, code)
    img.set_sform(affine_ras, code)
    img.header.set_xyzt_units("mm", "sec")
    return img
