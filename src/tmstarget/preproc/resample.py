"""Resampling through composed transforms: grid points through ANTs transforms, sampling at voxel
indices, a streamed 4D NIfTI writer, and fMRIPrep's ``space-T1w`` BOLD resampled into the template."""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage

from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path, save_img, write_json
from tmstarget.preproc.headers import RAS_TO_LPS, ants_affine_ras, nifti_to_ants
from tmstarget.io.nifti import nifti_img
from tmstarget.preproc.templates import template_grid

log = logging.getLogger(__name__)


def grid_points_through_transforms_lps(fixed: "ants.ANTsImage", transformlist: list[str]) -> np.ndarray:
    """LPS mm position, after ``transformlist`` (ANTs order, composed once), of every voxel centre of
    ``fixed``: where resampling onto ``fixed`` would read the moving image.

    Returns
    -------
    array (X, Y, Z, 3)
        On the grid of ``fixed``.
    """
    with tempfile.TemporaryDirectory(prefix="tmstarget_compose_") as tmp:
        field_path = ants.apply_transforms(fixed=fixed, moving=fixed, transformlist=[str(t) for t in transformlist],
                                           whichtoinvert=[False] * len(transformlist), compose=f"{tmp}/comp_")
        disp_lps = np.asarray(nib.load(field_path).dataobj, dtype=np.float64).reshape(fixed.shape + (3,))
    ijk = np.indices(fixed.shape, dtype=np.float64).reshape(3, -1)
    affine_lps = RAS_TO_LPS @ ants_affine_ras(fixed)
    points_lps = (affine_lps[:3, :3] @ ijk + affine_lps[:3, 3:4]).T.reshape(fixed.shape + (3,))
    return points_lps + disp_lps


def mni_to_boldref_points_lps(mni_ref: "ants.ANTsImage", boldref: "ants.ANTsImage", xfm_t1w_to_mni: str,
                              xfm_bold_to_t1w: str) -> np.ndarray:
    """BOLD-reference LPS mm position of every MNI voxel centre (T1w->MNI then BOLD->T1w, composed once).

    Returns
    -------
    array (X, Y, Z, 3)
        On the MNI grid of ``mni_ref``.
    """
    return grid_points_through_transforms_lps(mni_ref, [xfm_t1w_to_mni, xfm_bold_to_t1w])


def sample_volume(volume: np.ndarray, ijk_3n: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of a 3D volume at fractional voxel indices (3, N); 0 outside the volume."""
    return ndimage.map_coordinates(volume, ijk_3n, order=order, mode="constant", cval=0.0, prefilter=False)


def world_to_voxel_indices(points_lps: np.ndarray, transform_lps: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """Voxel indices (3, N) in a volume of the points (N, 3) moved by a 4x4 LPS transform."""
    to_ijk = np.linalg.inv(RAS_TO_LPS @ affine_ras) @ transform_lps
    return to_ijk[:3, :3] @ points_lps.T + to_ijk[:3, 3:4]


def write_nifti_streamed(path: str | os.PathLike, shape_xyz: tuple, affine_ras: np.ndarray, t_r: float,
                         volumes, n_volumes: int, compresslevel: int = 4) -> Path:
    """Write a float32 4D NIfTI (.nii.gz) volume by volume, atomically, without holding it in memory.

    NIfTI stores x fastest and time slowest, so each volume is one contiguous block after the
    352-byte header; ``volumes`` yields arrays (X, Y, Z) in order.
    """
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(shape_xyz) + (n_volumes,))
    header.set_data_dtype(np.float32)
    header.set_qform(affine_ras, 1)
    header.set_sform(affine_ras, 1)
    header.set_xyzt_units("mm", "sec")
    zooms = np.linalg.norm(np.asarray(affine_ras)[:3, :3], axis=0)
    header.set_zooms(tuple(zooms) + (t_r,))
    header["vox_offset"] = 352
    written = 0
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wb", compresslevel=compresslevel) as f:
            header.write_to(f)  # 348 bytes + the 4-byte extension flag
            f.write(b"\x00" * (352 - f.tell()))
            for vol in volumes:
                f.write(np.asarray(vol, dtype="<f4").tobytes(order="F"))
                written += 1
        if written != n_volumes:
            raise RuntimeError(f"wrote {written} volumes, expected {n_volumes}")
    return Path(path)


def sidecar_path(path) -> Path:
    """The JSON sidecar beside a ``.nii.gz``, ``.nii`` or ``.tsv`` file."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def resample_t1w_bold_to_template(t1w_bold, t1w_mask, xfm_t1w_to_mni, out_bold, out_mask, space: str,
                                  t_r: float | None = None) -> dict:
    """fMRIPrep's ``space-T1w`` BOLD resampled (trilinear) into the template space of the transform.

    ``xfm_t1w_to_mni`` is fMRIPrep's ``from-T1w_to-<template>_mode-image_xfm.h5``: it resamples T1w
    images into the template, i.e. ANTs maps each template point to its T1w point. The map is composed
    once on the output grid (2 mm, or the BOLD's voxel size if coarser) and every volume is sampled
    with it and streamed to disk. This is a second interpolation after fMRIPrep's own, noted in the
    sidecar; asking fMRIPrep for ``--output-spaces MNI152NLin2009cAsym:res-2`` avoids it.
    """
    from tmstarget.io.nifti import load_masked_bold, open_bold_4d, read_t_r

    img = open_bold_4d(t1w_bold)
    t_r = read_t_r(t1w_bold, t_r)
    mask_img = nib.load(str(t1w_mask))
    if tuple(mask_img.shape[:3]) != tuple(img.shape[:3]):
        raise InputError(f"{Path(t1w_mask).name}: its grid {mask_img.shape[:3]} differs from the BOLD's "
                         f"{img.shape[:3]}; use the brain mask fMRIPrep wrote beside this run")
    mask = np.asarray(mask_img.dataobj) > 0
    read_mask = ndimage.binary_dilation(mask, iterations=2)  # so trilinear edges see real values
    data_tv = load_masked_bold(img, read_mask)
    voxel_mm = float(np.mean(np.linalg.norm(img.affine[:3, :3], axis=0)))
    shape, affine = template_grid(voxel_mm)
    grid = nifti_to_ants(np.zeros(shape, np.float32), affine)
    points_lps = grid_points_through_transforms_lps(grid, [xfm_t1w_to_mni]).reshape(-1, 3)
    ijk_bold = world_to_voxel_indices(points_lps, np.eye(4), img.affine)
    inside = sample_volume(mask.astype(np.float32), ijk_bold) > 0.5
    idx = np.flatnonzero(inside)
    ijk_in = ijk_bold[:, idx]
    save_img(nifti_img(inside.reshape(shape), affine, dtype=np.uint8), out_mask)
    volume = np.zeros(img.shape[:3], np.float32)

    def volumes():
        for t in range(data_tv.shape[0]):
            volume[read_mask] = data_tv[t]
            out = np.zeros(inside.size, np.float32)
            out[idx] = sample_volume(volume, ijk_in)
            yield out.reshape(shape)

    write_nifti_streamed(out_bold, shape, affine, t_r, volumes(), data_tv.shape[0])
    write_json({"RepetitionTime": t_r, "SkullStripped": False, "TemplateSpace": space,
                "Resolution": f"{np.linalg.norm(affine[:3, 0]):g} mm",
                "Sources": [Path(t1w_bold).name, Path(xfm_t1w_to_mni).name],
                "Description": "fMRIPrep space-T1w BOLD resampled (trilinear) into the template by tmstarget: "
                               "a second interpolation after fMRIPrep's"}, sidecar_path(out_bold))
    log.info("%s -> %s: %d volumes, %d brain voxels", Path(t1w_bold).name, space, data_tv.shape[0], idx.size)
    return {"volumes": int(data_tv.shape[0]), "brain_voxels": int(idx.size), "shape": list(shape)}
