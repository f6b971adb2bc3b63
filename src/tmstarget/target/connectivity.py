"""Seed-based connectivity: seed time series, chunked voxelwise Pearson r and Fisher z maps.

Inputs are the denoised time series of :mod:`tmstarget.denoise.run` (``data_tv``, float32 (T, V), the
voxels of ``mask_img`` in C order) and a seed mask on the same grid (the sgACC sphere by default).
The correlation is computed one voxel chunk at a time with a matrix-vector product in float64, so
the extra memory is bounded by ``chunk_voxels * T * 8`` bytes whatever the image size.

Seed dropout policy: the sgACC often loses signal (susceptibility dropout). When more than
``max_low_tsnr_fraction`` of the seed voxels have tSNR below ``min_seed_tsnr``, a warning is recorded
in the sidecar and logged, and the map is still written. It is not a hard failure because absolute
tSNR depends on the scanner, voxel size and multiband factor, so one fixed threshold cannot tell
unusable data from a low-SNR protocol; the report shows the warning next to the seed tSNR numbers
and the clinician decides.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.config.settings import with_defaults
from tmstarget.denoise.arrays import load_denoised_npz
from tmstarget.errors import InputError
from tmstarget.io.files import save_img, write_json
from tmstarget.io.nifti import load_img_checked

log = logging.getLogger(__name__)

DEFAULT_CHUNK_VOXELS = 20000   # memory bound, not a setting: the maps do not depend on it
_R_CLIP = 1.0 - 1e-7


def mask_columns(mask_img: nib.Nifti1Image, roi_img: nib.Nifti1Image) -> np.ndarray:
    """Columns of ``data_tv`` (voxels of ``mask_img`` in C order) that lie in ``roi_img`` (> 0).

    Parameters
    ----------
    mask_img, roi_img : Nifti1Image
        3D images on the same grid.

    Returns
    -------
    ndarray of int, shape (n,)
    """
    mask = np.asarray(mask_img.dataobj) > 0
    roi = np.asarray(roi_img.dataobj) > 0
    if roi.shape != mask.shape or not np.allclose(roi_img.affine, mask_img.affine, atol=1e-3):
        raise InputError(f"{_name(roi_img)} is not on the grid of the BOLD mask ({mask.shape}); resample it")
    return np.flatnonzero(roi[mask])


def seed_timeseries(data_tv: np.ndarray, mask_img: nib.Nifti1Image, seed_mask_img: nib.Nifti1Image) -> np.ndarray:
    """Mean time series of the seed voxels inside the analysis mask.

    Parameters
    ----------
    data_tv : ndarray, shape (T, V)
        Denoised time series of the voxels of ``mask_img`` (C order).
    mask_img : Nifti1Image
        3D analysis mask.
    seed_mask_img : Nifti1Image
        3D seed mask (> 0 inside) on the grid of ``mask_img``.

    Returns
    -------
    ndarray float64, shape (T,)
    """
    cols = mask_columns(mask_img, seed_mask_img)
    if cols.size == 0:
        raise InputError(f"seed mask {_name(seed_mask_img)} has no voxel inside the BOLD brain mask; the "
                         "seed lies outside the field of view: check the seed centre (MNI RAS mm) and the BOLD coverage")
    return np.asarray(data_tv[:, cols], dtype=np.float64).mean(axis=1)


def correlation_map_r(data_tv: np.ndarray, seed_t: np.ndarray, chunk_voxels: int = DEFAULT_CHUNK_VOXELS) -> np.ndarray:
    """Pearson correlation of every column of ``data_tv`` with ``seed_t``, computed in voxel chunks.

    Parameters
    ----------
    data_tv : ndarray, shape (T, V)
    seed_t : ndarray, shape (T,)
    chunk_voxels : int
        Voxels per chunk; extra memory is about ``chunk_voxels * T * 8`` bytes.

    Returns
    -------
    ndarray float32, shape (V,)
        r in [-1, 1]; 0 for constant voxels (and everywhere if the seed is constant).
    """
    data_tv = np.asarray(data_tv)
    seed = np.asarray(seed_t, dtype=np.float64).ravel()
    if data_tv.ndim != 2 or seed.shape[0] != data_tv.shape[0]:
        raise ValueError(f"data_tv {data_tv.shape} and seed_t {seed.shape} disagree on the number of volumes")
    seed = seed - seed.mean()
    seed_norm = np.sqrt(seed @ seed)
    r_v = np.zeros(data_tv.shape[1], dtype=np.float32)
    if seed_norm <= 1e-12 * max(1.0, np.abs(seed_t).max(initial=0.0)):
        log.warning("the seed time series is constant; the correlation map is all zeros")
        return r_v
    seed /= seed_norm
    chunk_voxels = max(1, int(chunk_voxels))
    for a in range(0, data_tv.shape[1], chunk_voxels):
        x = np.asarray(data_tv[:, a: a + chunk_voxels], dtype=np.float64)
        x = x - x.mean(axis=0)
        norm_v = np.sqrt(np.einsum("tv,tv->v", x, x))
        num_v = seed @ x
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(norm_v > 0, num_v / norm_v, 0.0)
        r_v[a: a + chunk_voxels] = np.clip(r, -1.0, 1.0)
    return r_v


R_MAP_DESCRIPTION = "Pearson correlation r of each voxel's denoised time course with the mean sgACC seed time course"
FISHERZ_MAP_DESCRIPTION = ("Fisher z-transformed Pearson correlation (arctanh r), not a z statistic: r of each voxel's "
                           "denoised time course with the mean sgACC seed time course, r clipped to +-(1 - 1e-7)")


def fisher_z(r) -> np.ndarray:
    """Fisher z = arctanh(r), with r clipped to +-(1 - 1e-7) so that |r| = 1 stays finite (float32)."""
    r = np.clip(np.asarray(r, dtype=np.float64), -_R_CLIP, _R_CLIP)
    return np.arctanh(r).astype(np.float32)


def unmask_to_img(values_v: np.ndarray, mask_img: nib.Nifti1Image, fill: float = 0.0) -> nib.Nifti1Image:
    """A 3D float32 image with ``values_v`` (V,) at the voxels of ``mask_img`` (C order), ``fill`` elsewhere
    (:func:`nilearn.masking.unmask`, with the qform/sform set to the mask's affine and units mm)."""
    from nilearn.masking import unmask

    mask = np.asarray(mask_img.dataobj) > 0
    values_v = np.asarray(values_v)
    if values_v.shape != (int(mask.sum()),):
        raise ValueError(f"{values_v.shape[0]} values for a mask of {int(mask.sum())} voxels")
    binary = nib.Nifti1Image(mask.astype(np.int8), mask_img.affine)
    vol = np.asarray(unmask(values_v.astype(np.float32), binary).dataobj, dtype=np.float32)
    if fill != 0:
        vol[~mask] = fill
    img = nib.Nifti1Image(vol, mask_img.affine)
    img.set_qform(mask_img.affine, 1)
    img.set_sform(mask_img.affine, 1)
    img.header.set_xyzt_units("mm")
    return img


def seed_tsnr_summary(tsnr_v: np.ndarray, seed_cols: np.ndarray, min_seed_tsnr: float) -> dict:
    """Median tSNR of the seed voxels and the fraction below ``min_seed_tsnr``."""
    vals = np.asarray(tsnr_v, dtype=np.float64)[seed_cols]
    if vals.size == 0:
        return {"seed_median_tsnr": None, "seed_low_tsnr_fraction": None}
    return {"seed_median_tsnr": round(float(np.median(vals)), 3),
            "seed_low_tsnr_fraction": round(float(np.mean(vals < min_seed_tsnr)), 4)}


def _name(img) -> str:
    f = img.get_filename() if hasattr(img, "get_filename") else None
    return Path(f).name if f else "(in memory)"


def _seed_on_grid(seed_path: Path, mask_img: nib.Nifti1Image) -> nib.Nifti1Image:
    seed_img = load_img_checked(seed_path, ndim=3, what="seed mask")
    if seed_img.shape[:3] == mask_img.shape[:3] and np.allclose(seed_img.affine, mask_img.affine, atol=1e-3):
        return seed_img
    from nilearn.image import resample_to_img

    log.info("%s is on another grid than the BOLD mask: resampled (nearest neighbour)", seed_path.name)
    binary = nib.Nifti1Image((np.asarray(seed_img.dataobj) > 0).astype(np.uint8), seed_img.affine)
    out = resample_to_img(binary, mask_img, interpolation="nearest", force_resample=True, copy_header=True)
    out.set_filename(str(seed_path))
    return out


def run_seedmap(denoised_npz, seed_mask_path, out_r, out_fisherz, out_json, out_fisherz_json=None,
                seed_definition: dict | None = None,
                min_seed_tsnr: float | None = None,
                max_low_tsnr_fraction: float | None = None,
                chunk_voxels: int = DEFAULT_CHUNK_VOXELS) -> dict:
    """Workflow adapter: seed correlation maps (r and Fisher z NIfTI) and their JSON sidecars.

    Parameters
    ----------
    denoised_npz : path
        ``work/*_denoised.npz`` written by :func:`tmstarget.denoise.run.run_denoise`.
    seed_mask_path : path
        3D seed mask (> 0 inside), normally on the BOLD grid (else resampled, nearest neighbour).
    out_r, out_fisherz, out_json : path
        Outputs (written atomically): Pearson r map, Fisher z-transformed r map (arctanh r, not a z
        statistic) and the r map's sidecar.
    out_fisherz_json : path, optional
        Sidecar of the Fisher z map (its Description and Sources).
    seed_definition : dict
        The seed settings of the config, recorded in the sidecar.
    min_seed_tsnr : float, optional
        Seed voxels below this tSNR (before denoising) count as low-signal (None: ``seed.min_seed_tsnr``
        of config/config.yaml).
    max_low_tsnr_fraction : float, optional
        If more than this fraction of the seed voxels is low-signal, a warning is recorded (None:
        ``seed.max_low_tsnr_fraction`` of config/config.yaml).
    chunk_voxels : int
        Voxels per correlation chunk (bounds memory).

    Returns
    -------
    dict
        The sidecar content.
    """
    seed_mask_path = Path(seed_mask_path)
    limits = with_defaults("seed", {"min_seed_tsnr": min_seed_tsnr, "max_low_tsnr_fraction": max_low_tsnr_fraction})
    min_seed_tsnr, max_low_tsnr_fraction = limits["min_seed_tsnr"], limits["max_low_tsnr_fraction"]
    d = load_denoised_npz(denoised_npz)
    mask_img = d["mask_img"]
    data_tv = d["data_tv"]
    seed_img = _seed_on_grid(seed_mask_path, mask_img)
    seed_total = int((np.asarray(seed_img.dataobj) > 0).sum())
    seed_cols = mask_columns(mask_img, seed_img)
    if seed_cols.size == 0:
        raise InputError(
            f"seed mask {seed_mask_path.name} ({seed_total} voxels) has no voxel inside the BOLD brain mask "
            f"stored in {Path(denoised_npz).name} (from the run's *_desc-brain_mask.nii.gz): the seed is "
            "outside the field of view. Check the seed centre (seed.center_mni_ras_mm, MNI RAS mm) and that "
            "the BOLD covers the ventral frontal lobe"
        )
    seed_t = data_tv[:, seed_cols].astype(np.float64).mean(axis=1)
    r_v = correlation_map_r(data_tv, seed_t, chunk_voxels=chunk_voxels)
    z_v = fisher_z(r_v)
    save_img(unmask_to_img(r_v, mask_img), out_r)
    save_img(unmask_to_img(z_v, mask_img), out_fisherz)

    warnings = []
    tsnr = seed_tsnr_summary(d["tsnr_v"], seed_cols, min_seed_tsnr)
    if seed_cols.size < seed_total:
        warnings.append(f"{seed_total - seed_cols.size} of {seed_total} seed voxels are outside the BOLD mask")
    if tsnr["seed_low_tsnr_fraction"] > max_low_tsnr_fraction:
        warnings.append(
            f"{100 * tsnr['seed_low_tsnr_fraction']:.0f}% of the seed voxels have tSNR < {min_seed_tsnr:g} "
            f"(median {tsnr['seed_median_tsnr']:.1f}): possible signal dropout in the seed; the map is less reliable"
        )
    for w in warnings:
        log.warning(w)
    sidecar = {
        "Description": R_MAP_DESCRIPTION,
        "seed": dict(seed_definition or {}),
        "seed_voxels_total": seed_total, "seed_voxels_in_mask": int(seed_cols.size),
        **tsnr, "min_seed_tsnr": min_seed_tsnr, "max_low_tsnr_fraction": max_low_tsnr_fraction,
        "volumes": int(data_tv.shape[0]), "t_r": d["t_r"],
        "r_min": round(float(r_v.min()), 5), "r_max": round(float(r_v.max()), 5),
        "warnings": warnings,
        "Sources": [Path(denoised_npz).name, seed_mask_path.name],
    }
    write_json(sidecar, out_json)
    if out_fisherz_json is not None:
        write_json({"Description": FISHERZ_MAP_DESCRIPTION,
                    "Sources": [Path(denoised_npz).name, seed_mask_path.name, Path(out_r).name]}, out_fisherz_json)
    log.info("seed map: %d seed voxels, %d volumes, r in [%.3f, %.3f]", seed_cols.size, data_tv.shape[0],
             r_v.min(), r_v.max())
    return sidecar
