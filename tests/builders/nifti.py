"""The NIfTI and JSON writers of the test builders (every test image is written through ``save_nifti``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def save_nifti(img: nib.Nifti1Image, path: Path, codes=(1, 1), qform=None) -> Path:
    """Save ``img``, creating the folder. ``codes`` (qform code, sform code) are set with the sform =
    the image's affine and the qform = ``qform`` (default: the same affine); ``codes=None`` keeps
    nibabel's defaults (qform code 0, sform code 2)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codes is not None:
        img.set_qform(img.affine if qform is None else qform, codes[0])
        img.set_sform(img.affine, codes[1])
    nib.save(img, path)
    return path


def write_nifti(path: Path, data, affine=None, tr=None, dtype=np.float32, codes=(1, 1), qform=None) -> Path:
    """``data`` (cast to ``dtype``; ``None`` keeps its type) on ``affine`` (default 3 mm isotropic), with
    the TR in seconds in the header when ``tr`` is given; ``codes`` and ``qform`` as in ``save_nifti``."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        zooms = list(img.header.get_zooms())
        zooms[3] = tr
        img.header.set_zooms(zooms)
    return save_nifti(img, path, codes, qform)


def write_json(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def centres_ras_mm(shape, affine) -> np.ndarray:
    """World RAS mm of every voxel centre of a grid, shape ``shape + (3,)``."""
    ijk = np.indices(shape).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).reshape(*shape, 3)
