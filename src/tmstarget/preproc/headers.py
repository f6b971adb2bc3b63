"""nibabel <-> ANTs image conversion for the built-in preprocessing (the header checks it relies on,
:func:`tmstarget.io.nifti.choose_affine` and friends, live in :mod:`tmstarget.io.nifti`).

ANTs works in LPS physical space and reads a NIfTI's orientation its own way (ITK prefers the
qform in some versions, the sform in others). To stay in control, tmstarget never lets ANTs read a
raw file: images are loaded with nibabel, one affine is chosen and checked (RAS mm,
:func:`tmstarget.io.nifti.choose_affine`), and the ANTs image is built from that affine with :func:`nifti_to_ants`.
Transforms estimated by ANTs then relate exactly the world spaces that tmstarget writes into its own outputs.
"""

from __future__ import annotations

import ants
import nibabel as nib
import numpy as np

from tmstarget.errors import InputError

#: maps RAS+ to LPS+ and back (its own inverse)
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


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
