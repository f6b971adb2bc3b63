"""The MNI152NLin2009aSym template shipped with nilearn: its images, its grid, and nibabel -> ANTs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from tmstarget.preproc.headers import nifti_to_ants

if TYPE_CHECKING:
    import ants

TEMPLATE_SPACE = "MNI152NLin2009aSym"


def load_template(resolution_mm: int = 2) -> dict:
    """nilearn's MNI152NLin2009aSym template (brain-only T1), brain mask and GM/WM maps.

    Returns
    -------
    dict of nibabel images
        ``t1``, ``mask``, ``gm``, ``wm`` on nilearn's template grid (99x117x95 at 2 mm,
        197x233x189 at 1 mm); no network access (the files ship with nilearn).
    """
    from nilearn import datasets

    return {
        "t1": datasets.load_mni152_template(resolution=resolution_mm),
        "mask": datasets.load_mni152_brain_mask(resolution=resolution_mm),
        "gm": datasets.load_mni152_gm_template(resolution=resolution_mm),
        "wm": datasets.load_mni152_wm_template(resolution=resolution_mm),
    }


def to_ants(img: nib.Nifti1Image) -> "ants.ANTsImage":
    """A nibabel image as an ANTsImage (float32, LPS physical space;
    :func:`tmstarget.preproc.headers.nifti_to_ants`)."""
    return nifti_to_ants(np.asarray(img.get_fdata(dtype=np.float32)), img.affine)


def template_grid(voxel_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of a grid over nilearn's MNI 2 mm box with voxels of ``voxel_mm``
    (the 2 mm template grid itself when ``voxel_mm`` <= 2.5)."""
    tpl = load_template(2)["t1"]
    if voxel_mm <= 2.5:
        return tuple(tpl.shape[:3]), tpl.affine.copy()
    v = float(voxel_mm)
    shape = tuple(int(np.ceil(n * 2.0 / v)) for n in tpl.shape[:3])
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = tpl.affine[:3, 3]
    return shape, affine
