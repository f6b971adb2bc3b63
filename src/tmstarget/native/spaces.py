"""Coordinate spaces: RAS/LPS, world/voxel, ANTs point transforms MNI <-> T1w.

The qform/sform check is :func:`tmstarget.io.nifti.check_qform_sform`.

Conventions
-----------
- World coordinates are NIfTI RAS+ millimetres (+x right, +y anterior, +z superior) unless a name
  says ``lps``. ITK/ANTs work in LPS (+x left, +y posterior): ``lps = (-x, -y, z)``.
- ``ijk`` are 0-based voxel indices (continuous unless rounded by the caller).

Which transform file maps a point which way
-------------------------------------------
ANTs writes *image* transforms: ``from-T1w_to-MNI..._mode-image_xfm.h5`` resamples a T1w image onto the
MNI grid. To do that it needs, for every MNI voxel, the T1w position to sample, so the file is a
**point** map from MNI to T1w. Hence (docs/method.md; ANTs issues 1079, 1193):

- MNI point -> T1w point: apply ``from-T1w_to-MNI`` (:func:`mni_ras_mm_to_t1w_ras_mm`);
- T1w point -> MNI point: apply ``from-MNI_to-T1w`` (:func:`t1w_ras_mm_to_mni_ras_mm`);

both with points converted to LPS first and back to RAS afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget.io.files import sha256_file, write_json
from tmstarget.io.nifti import load_img_checked, nifti_img

log = logging.getLogger(__name__)

_RAS_LPS_FLIP = np.array([-1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------- RAS / LPS, world / voxel


def ras_to_lps(points_ras_mm) -> np.ndarray:
    """World RAS+ mm -> LPS mm (ITK/ANTs/DICOM); shape (3,) or (N, 3) kept."""
    return np.asarray(points_ras_mm, dtype=float) * _RAS_LPS_FLIP


def lps_to_ras(points_lps_mm) -> np.ndarray:
    """LPS mm -> world RAS+ mm; shape (3,) or (N, 3) kept (the flip is its own inverse)."""
    return np.asarray(points_lps_mm, dtype=float) * _RAS_LPS_FLIP


def world_ras_mm_to_ijk(affine, points) -> np.ndarray:
    """World RAS mm -> continuous voxel indices with an image affine.

    Parameters
    ----------
    affine : (4, 4) array, voxel ijk -> world RAS mm.
    points : (3,) or (N, 3) world RAS mm.

    Returns
    -------
    ijk : same shape as ``points``, float (round with ``np.rint`` for the containing voxel).
    """
    affine = np.asarray(affine, dtype=float)
    points = np.asarray(points, dtype=float)
    inv = np.linalg.inv(affine)
    return points @ inv[:3, :3].T + inv[:3, 3]


def ijk_to_world_ras_mm(affine, ijk) -> np.ndarray:
    """Voxel indices (3,) or (N, 3) -> world RAS mm of the voxel centres, same shape."""
    affine = np.asarray(affine, dtype=float)
    ijk = np.asarray(ijk, dtype=float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


# ----------------------------------------------------------------------------- ANTs point transforms


def check_transform_file(xfm_path, role: str = "") -> Path:
    """Check that a file looks like an ITK/ANTs transform before ITK reads it.

    ITK can crash the interpreter (segmentation fault) on a file that is not a transform, so the
    format is checked here first: HDF5 (``.h5``) must hold ITK's ``TransformGroup``; text transforms
    (``.txt``, ``.tfm``) must start with ``#Insight Transform File``; ``.mat`` must be non-empty.

    Raises
    ------
    InputError : missing file, unknown suffix or not a transform, naming the file and the fix.
    """
    import h5py

    xfm_path = Path(xfm_path)
    what = f"{role} transform" if role else "transform"
    if not xfm_path.exists():
        raise InputError(f"{xfm_path}: {what} not found; check the path or rerun preprocessing")
    fix = ("it must be an ITK/ANTs transform (a composite .h5 as written by fMRIPrep or "
           "antsRegistration --write-composite-transform); regenerate it")
    suffix = xfm_path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        ok = h5py.is_hdf5(xfm_path)
        if ok:
            with h5py.File(xfm_path, "r") as f:
                ok = "TransformGroup" in f and len(f["TransformGroup"]) > 0
    elif suffix in (".txt", ".tfm"):
        with open(xfm_path, "rb") as f:
            ok = f.read(24).startswith(b"#Insight Transform File")
    elif suffix == ".mat":
        ok = xfm_path.stat().st_size > 0
    else:
        raise InputError(f"{xfm_path.name}: unknown transform format {suffix!r}; {fix}")
    if not ok:
        raise InputError(f"{xfm_path.name}: not a readable {what}; {fix}")
    return xfm_path


def _apply_ants_to_points_ras(points_ras_mm, xfm_path, role: str) -> np.ndarray:
    """Map RAS mm points with one ANTs/ITK transform file used as a *point* transform."""
    import ants
    import pandas as pd

    xfm_path = Path(xfm_path)
    check_transform_file(xfm_path, role)
    points = np.asarray(points_ras_mm, dtype=float)
    single = points.ndim == 1
    points_2d = np.atleast_2d(points)
    if points_2d.shape[1] != 3:
        raise ValueError(f"points must have shape (3,) or (N, 3), got {points.shape}")
    frame = pd.DataFrame(ras_to_lps(points_2d), columns=["x", "y", "z"])
    try:
        mapped = ants.apply_transforms_to_points(3, frame, [str(xfm_path)], whichtoinvert=[False])
    except Exception as exc:  # ITK raises plain RuntimeErrors for unreadable files
        raise InputError(
            f"{xfm_path.name}: cannot read this {role} transform ({type(exc).__name__}: {exc}); it must be "
            "an ITK/ANTs transform (.h5 composite as written by fMRIPrep or antsRegistration)"
        ) from None
    out_ras = lps_to_ras(mapped[["x", "y", "z"]].to_numpy(dtype=float))
    if not np.all(np.isfinite(out_ras)):
        raise InputError(f"{xfm_path.name}: mapping the points gave non-finite values; the transform is broken")
    return out_ras[0] if single else out_ras


def mni_ras_mm_to_t1w_ras_mm(points_mni_ras_mm, xfm_t1w_to_mni) -> np.ndarray:
    """Map points from MNI world RAS mm to the subject's T1w world RAS mm.

    Uses the **T1w -> MNI image transform** (``*_from-T1w_to-MNI..._mode-image_xfm.h5``): an image
    transform from T1w to MNI is, point-wise, the map from MNI positions to T1w positions (it tells,
    for each MNI voxel, where to sample the T1w). Points are converted to LPS for ANTs and back.

    Parameters
    ----------
    points_mni_ras_mm : (3,) or (N, 3) MNI RAS mm.
    xfm_t1w_to_mni : path of the ``from-T1w_to-<MNI>`` ANTs/ITK transform (composite .h5 or other).

    Returns
    -------
    points_t1w_ras_mm : same shape, T1w world RAS mm.
    """
    return _apply_ants_to_points_ras(points_mni_ras_mm, xfm_t1w_to_mni, "T1w->MNI")


def t1w_ras_mm_to_mni_ras_mm(points_t1w_ras_mm, xfm_mni_to_t1w) -> np.ndarray:
    """Map points from the subject's T1w world RAS mm to MNI world RAS mm.

    Uses the **MNI -> T1w image transform** (``*_from-MNI..._to-T1w_mode-image_xfm.h5``), which point-wise
    maps T1w positions to MNI positions (see the module docstring).

    Parameters
    ----------
    points_t1w_ras_mm : (3,) or (N, 3) T1w RAS mm.
    xfm_mni_to_t1w : path of the ``from-<MNI>_to-T1w`` ANTs/ITK transform.

    Returns
    -------
    points_mni_ras_mm : same shape, MNI RAS mm.
    """
    return _apply_ants_to_points_ras(points_t1w_ras_mm, xfm_mni_to_t1w, "MNI->T1w")


# ----------------------------------------------------------------------------- masks


def snap_into_mask(point_ras_mm, mask_img: nib.Nifti1Image) -> tuple[np.ndarray, float]:
    """Move a point to the nearest voxel centre of a mask when its own voxel is outside the mask.

    Parameters
    ----------
    point_ras_mm : (3,) world RAS mm.
    mask_img : binary mask (any grid in the same world space).

    Returns
    -------
    point_ras_mm : (3,) the point itself (inside) or the nearest mask voxel centre.
    distance_mm : how far it moved (0.0 when it was inside).
    """
    point = np.asarray(point_ras_mm, dtype=float).reshape(3)
    mask = np.asanyarray(mask_img.dataobj) > 0
    if not mask.any():
        raise InputError(f"{mask_img.get_filename() or 'mask'}: the mask is empty; regenerate it")
    ijk = np.rint(world_ras_mm_to_ijk(mask_img.affine, point)).astype(int)
    if np.all((ijk >= 0) & (ijk < mask.shape)) and mask[tuple(ijk)]:
        return point, 0.0
    centres = ijk_to_world_ras_mm(mask_img.affine, np.argwhere(mask))
    dist = np.linalg.norm(centres - point, axis=1)
    best = int(np.argmin(dist))
    return centres[best], float(dist[best])


# ----------------------------------------------------------------------------- maps in T1w space


def resample_mni_map_to_t1w(map_mni_path, t1w_path, xfm_mni_to_t1w, out_path) -> Path:
    """A 3D MNI-space statistical map resampled (linear) into the subject's T1w grid.

    ``xfm_mni_to_t1w`` is the ``from-<MNI>_to-T1w_mode-image`` transform: it resamples MNI images
    into the T1w (ANTs maps each T1w voxel centre to its MNI position). Voxels outside the map's
    field of view, and non-finite map values, become 0.
    """
    import ants

    from tmstarget.io.files import save_img
    from tmstarget.preproc.headers import ants_affine_ras, nifti_to_ants

    check_transform_file(xfm_mni_to_t1w, "MNI->T1w")
    map_img = load_img_checked(map_mni_path, ndim=3, what="statistical map")
    t1w_img = load_img_checked(t1w_path, ndim=3, what="T1w")
    values = np.nan_to_num(np.asarray(map_img.get_fdata(dtype=np.float32)), nan=0.0, posinf=0.0, neginf=0.0)
    moving = nifti_to_ants(values, map_img.affine)
    fixed = nifti_to_ants(np.zeros(t1w_img.shape[:3], np.float32), t1w_img.affine)
    warped = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=[str(xfm_mni_to_t1w)],
                                   interpolator="linear", defaultvalue=0.0)
    assert np.allclose(ants_affine_ras(warped), t1w_img.affine, atol=1e-3)
    return save_img(nifti_img(warped.numpy(), t1w_img.affine), out_path)


def run_maps_to_t1w(maps_mni: dict, t1w_path, xfm_mni_to_t1w, outputs: dict, out_json=None) -> dict:
    """Workflow adapter: every MNI map of ``maps_mni`` (name -> path) into the T1w grid at ``outputs[name]``,
    and a JSON sidecar naming the sources and the transform (file names, SHA-256)."""
    written = {}
    for name, path in maps_mni.items():
        written[name] = str(resample_mni_map_to_t1w(path, t1w_path, xfm_mni_to_t1w, outputs[name]))
        log.info("%s map in T1w space: %s", name, Path(outputs[name]).name)
    if out_json:
        write_json({"Description": "sgACC seed maps resampled from MNI into the subject's T1w grid (linear): "
                                   "stat-r is Pearson r; stat-fisherz is the Fisher z-transformed Pearson "
                                   "correlation (arctanh r), not a z statistic",
                    "Sources": [Path(p).name for p in maps_mni.values()] + [Path(t1w_path).name],
                    "Transform": Path(xfm_mni_to_t1w).name, "TransformSha256": sha256_file(xfm_mni_to_t1w),
                    "T1wSha256": sha256_file(t1w_path), "Interpolation": "linear"}, out_json)
    return written
