"""The NIfTI and JSON writers of the test builders."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def save_nifti(img: nib.Nifti1Image, path: Path) -> Path:
    """Save ``img`` with qform = sform = its affine (code 1, scanner), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    nib.save(img, path)
    return path


def write_nifti(path: Path, data, affine=None, tr=None, dtype=np.float32) -> Path:
    """``data`` (cast to ``dtype``; ``None`` keeps its type) on ``affine`` (default 3 mm isotropic), with
    the TR in seconds in the header when ``tr`` is given."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        zooms = list(img.header.get_zooms())
        zooms[3] = tr
        img.header.set_zooms(zooms)
    return save_nifti(img, path)


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def centres_ras_mm(shape, affine) -> np.ndarray:
    """World RAS mm of every voxel centre of a grid, shape ``shape + (3,)``."""
    ijk = np.indices(shape).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).reshape(*shape, 3)
