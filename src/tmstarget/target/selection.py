"""One unit's data for target selection: the denoised series, its masks, the rule's inputs.

:class:`Denoised` (the denoise step's npz), the seed and search masks on its grid, the search voxels
(:class:`~tmstarget.target.rules.SearchSpace`), the rule's time series (:class:`Problem`) and, for
the ``seedmap`` rule, the voxel weights from group or normative sgACC maps (Fox et al. 2013).
The rules themselves are in :mod:`tmstarget.target.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.denoise.arrays import Denoised
from tmstarget.errors import InputError, QCFailure
from tmstarget.io.files import sha256_file
from tmstarget.io.nifti import load_img_checked
from tmstarget.target.rules import SearchSpace, select


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------
def grid_mask(path, den: Denoised, what: str) -> np.ndarray:
    img = load_img_checked(path, ndim=3, what=what)
    if img.shape[:3] != den.mask.shape or not np.allclose(img.affine, den.affine, atol=1e-3):
        raise InputError(f"{Path(path).name}: {what} grid {img.shape[:3]} does not match the denoised data "
                         f"{den.mask.shape} ({den.name}); rebuild the masks from the same BOLD mask")
    return np.asanyarray(img.dataobj) > 0


def columns_of(region: np.ndarray, den: Denoised) -> np.ndarray:
    """Column indices into ``data_tv`` of the voxels of a 3D boolean region (inside the mask)."""
    col = np.full(den.mask.shape, -1, dtype=np.int64)
    col[den.mask] = np.arange(int(den.mask.sum()))
    return col[region & den.mask]


# --------------------------------------------------------------------------------------------------
# Seedmap weights (Fox 2013)
# --------------------------------------------------------------------------------------------------
def group_map_weights(map_paths, den: Denoised, search_region: np.ndarray, fisher: bool = True) -> np.ndarray:
    """Voxel weights (V,) from group sgACC maps: mean (Fisher z) map, zero in the search region.

    Maps on another grid are resampled (linear) to the grid of the denoised data.
    """
    from nilearn.image import resample_to_img

    ref = nib.Nifti1Image(den.mask.astype(np.uint8), den.affine)
    acc = np.zeros(int(den.mask.sum()))
    for path in map_paths:
        img = load_img_checked(path, ndim=3, what="group seed map")
        if img.shape[:3] != den.mask.shape or not np.allclose(img.affine, den.affine, atol=1e-3):
            img = resample_to_img(img, ref, interpolation="continuous", force_resample=True, copy_header=True)
        values = np.asarray(img.get_fdata(), float)[den.mask]
        acc += np.arctanh(np.clip(values, -0.999, 0.999)) if fisher else values
    weights = acc / len(map_paths)
    weights[search_region[den.mask]] = 0.0
    return weights



# --------------------------------------------------------------------------------------------------
# A rule's inputs from one denoised dataset
# --------------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """Everything a rule needs from one denoised dataset."""

    ts_search: np.ndarray
    ref_t: np.ndarray
    ts_seed: np.ndarray | None
    seed_ref_t: np.ndarray


def build_problem(den: Denoised, seed: np.ndarray, search: np.ndarray, method: str,
                  weights: np.ndarray | None = None) -> Problem:
    """Search-voxel time series and the reference time course of a rule."""
    seed_cols, search_cols = columns_of(seed, den), columns_of(search, den)
    if len(seed_cols) == 0:
        raise InputError(f"{den.name}: no seed voxel inside the analysis mask; rebuild the seed mask")
    seed_ref = den.data_tv[:, seed_cols].mean(axis=1)
    if np.std(seed_ref) == 0:
        raise QCFailure(f"{den.name}: the seed time course is constant; the seed has no signal")
    ref = seed_ref
    if method == "seedmap":
        ref = den.data_tv @ weights.astype(np.float32)
        if not np.std(ref) > 0:
            raise InputError("the seedmap weights are zero outside the search region; give a whole-brain "
                             "group or normative sgACC map")
    ts_seed = den.data_tv[:, seed_cols] if method == "hierarchical" else None
    return Problem(den.data_tv[:, search_cols], ref, ts_seed, seed_ref)


def space_of(search: np.ndarray, den: Denoised) -> SearchSpace:
    ijk = np.argwhere(search & den.mask)   # C order, the same order as columns_of
    return SearchSpace(ijk, nib.affines.apply_affine(den.affine, ijk))


def target_of(den, seed, search, method, params, weights):
    space = space_of(search, den)
    prob = build_problem(den, seed, search, method, weights)
    sel = select(method, params, prob.ts_search, prob.ref_t, space, prob.ts_seed)
    return space, prob, sel


def seedmap_weights(cfg, den, search, group_map_paths) -> tuple[np.ndarray, dict]:
    normative = cfg["seedmap"].get("normative_map")
    if normative:
        return (group_map_weights([normative], den, search, fisher=False),
                {"source": "normative", "normative_map": Path(normative).name,
                 "normative_map_sha256": sha256_file(normative)})
    if not group_map_paths:
        raise InputError("targeting.method seedmap needs a group sgACC map: add subjects to the dataset "
                         "(the map of the other subjects is used, leave-one-out) or give "
                         "targeting.seedmap.normative_map (a whole-brain sgACC map in the same template)")
    return (group_map_weights(group_map_paths, den, search, fisher=True),
            {"source": "leave-one-out group map (mean Fisher z of the other subjects' r maps)",
             "n_group_maps": len(group_map_paths), "group_maps": [Path(p).name for p in group_map_paths]})
