"""Spatial smoothing inside the brain mask (Gaussian, FWHM in mm, normalised convolution).

Smoothing is linear and acts on space, so it commutes with the temporal operator of
:mod:`tmstarget.denoise.temporal` (docs/method.md, denoising).
"""

from __future__ import annotations

import math

import numpy as np

from tmstarget.denoise.temporal import chunks

# ----------------------------------------------------------------------------- images


def gaussian_matrix(n: int, sigma_vox: float, truncate: float = 4.0) -> np.ndarray:
    """(n, n) float32 matrix of a 1D Gaussian filter with zero padding.

    Identical to :func:`scipy.ndimage.gaussian_filter1d` with ``mode="constant"``: the kernel is
    truncated at ``int(truncate * sigma + 0.5)`` samples and normalised to sum 1.
    """
    radius = int(truncate * sigma_vox + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma_vox) ** 2)
    kernel /= kernel.sum()
    idx = np.arange(n)
    offset = idx[None, :] - idx[:, None]
    g = np.where(np.abs(offset) <= radius, kernel[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    return g.astype(np.float32)


def _smooth_block(vols: np.ndarray, mats) -> np.ndarray:
    """Separable smoothing of (B, X, Y, Z) float32 volumes with one (n, n) matrix per spatial axis.

    Each axis is one BLAS product (:func:`numpy.tensordot`); single-threaded this costs about the
    same as :func:`scipy.ndimage.gaussian_filter`, and BLAS uses every core.
    """
    out = vols
    for axis, g in zip((1, 2, 3), mats):
        out = np.moveaxis(np.tensordot(out, g, axes=([axis], [1])), -1, axis)
    return out


def smooth_masked(data_tv: np.ndarray, mask_3d: np.ndarray, voxel_size_mm, fwhm_mm: float | None) -> np.ndarray:
    """Gaussian smoothing of each volume inside the mask (normalised convolution), in place.

    Each volume is put back on its grid (zeros outside the mask), smoothed with a Gaussian of FWHM
    ``fwhm_mm`` (sigma in voxels = FWHM / sqrt(8 ln 2) / voxel size, per axis; kernel truncated at 4
    sigma, as scipy.ndimage) and divided by the smoothed mask, so border voxels are weighted averages
    of brain voxels only (no darkening by the zeros outside the brain).

    Parameters
    ----------
    data_tv : ndarray float32, shape (T, V)
    mask_3d : ndarray bool, shape (X, Y, Z)
    voxel_size_mm : sequence of 3 floats
        Voxel edge lengths in mm (from the affine), so the FWHM is in mm on any grid.
    fwhm_mm : float or None

    Returns
    -------
    ndarray, the same array as ``data_tv``.
    """
    if not fwhm_mm:
        return data_tv
    sigma_vox = fwhm_mm / math.sqrt(8 * math.log(2)) / np.asarray(voxel_size_mm, dtype=np.float64)
    reach = np.array([int(4.0 * s + 0.5) for s in sigma_vox])
    nz = np.nonzero(mask_3d)
    lo = [max(0, int(a.min()) - r) for a, r in zip(nz, reach)]
    hi = [min(s, int(a.max()) + r + 1) for a, s, r in zip(nz, mask_3d.shape, reach)]
    mask_box = mask_3d[tuple(slice(a, b) for a, b in zip(lo, hi))]
    mats = [gaussian_matrix(n, s) for n, s in zip(mask_box.shape, sigma_vox)]
    weight = _smooth_block(mask_box[None].astype(np.float32), mats)[0]
    inv_weight = (1.0 / weight[mask_box]).astype(np.float32)
    batch = max(1, int(2 ** 22 // mask_box.size))      # ~16 MB of float32 volumes per product
    vols = np.zeros((batch,) + mask_box.shape, np.float32)
    for t0 in range(0, data_tv.shape[0], batch):
        n = min(batch, data_tv.shape[0] - t0)
        vols[:n][:, mask_box] = data_tv[t0: t0 + n]
        data_tv[t0: t0 + n] = _smooth_block(vols[:n], mats)[:, mask_box] * inv_weight
    return data_tv


def raw_smoothed_columns(raw_tv: np.ndarray, good: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                         mask_3d: np.ndarray, vox_mm, fwhm_mm) -> np.ndarray:
    """Some columns of a run's kept volumes centred and smoothed but not cleaned, (len(rows), C) float32.

    The temporal operator commutes with the smoothing, so ``operator[:, rows] @ result`` equals the
    cleaned, smoothed columns before z-scoring: halves can be denoised on their own from it
    (:mod:`tmstarget.target.reliability`). Each connected group of the chosen voxels (seed, search region) is
    smoothed inside its bounding box widened by the kernel's reach, which gives the same values as
    smoothing the whole brain at a fraction of the cost; volumes go a batch at a time.
    """
    from scipy import ndimage

    ijk = np.argwhere(mask_3d)[columns]
    chosen = np.zeros(mask_3d.shape, bool)
    chosen[tuple(ijk.T)] = True
    if fwhm_mm:
        sigma_vox = fwhm_mm / math.sqrt(8 * math.log(2)) / np.asarray(vox_mm, dtype=np.float64)
        reach = np.array([int(4.0 * sg + 0.5) for sg in sigma_vox]) + 1
    else:
        reach = np.zeros(3, int)
    labels, _ = ndimage.label(chosen, structure=np.ones((3, 3, 3)))
    group_of_column = labels[tuple(ijk.T)]
    out = np.empty((len(rows), len(columns)), np.float32)
    for group, box in enumerate(ndimage.find_objects(labels), start=1):
        in_box = np.zeros(mask_3d.shape, bool)
        in_box[tuple(slice(max(0, sl.start - r), min(n, sl.stop + r))
                     for sl, n, r in zip(box, mask_3d.shape, reach))] = True
        sub_cols = np.flatnonzero(in_box[mask_3d])          # mask columns inside the box, C order
        keep = group_of_column == group
        pos = np.searchsorted(sub_cols, columns[keep])
        mean_v = raw_tv[:, sub_cols][good].astype(np.float64).mean(axis=0)
        for sl in chunks(len(rows), 32):
            vols = (raw_tv[rows[sl]][:, sub_cols].astype(np.float64) - mean_v).astype(np.float32)
            out[sl, keep] = smooth_masked(vols, mask_3d & in_box, vox_mm, fwhm_mm)[:, pos]
    return out
