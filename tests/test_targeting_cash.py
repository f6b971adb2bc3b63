"""The Cash et al. / contarg cluster rule (``tmstarget.target.rules.select_cluster`` with ``percentile_of="negative"``).

contarg's own rule is ``contarg.utils.cluster(stat_img, stim_roi, percentile=10, sign="negative",
connectivity="NN3")`` followed by ``contarg.seedmap.get_com_in_mm`` (github nih-fmrif/contarg, commit
dffdf1a): threshold at the 10th percentile of the negative values inside the ROI, keep voxels at or
below it, label 26-connected clusters, keep the largest, return the plain mean of its voxel centres in
mm. It cannot run here: the only contarg on PyPI (0.0.4) predates that function (it ships only
``hierarchical.py``), and the repository has no licence file, so its code is not copied into this
repository. ``CONTARG_RESULTS`` below are what contarg's code printed on the two maps that
:func:`shared_maps` builds, run once by hand on 2026-12-07 on a local copy of that commit (its heavy imports,
niworkflows/nipype/templateflow, stubbed: ``cluster`` and ``get_com_in_mm`` use only nilearn, numpy and
scipy.ndimage). The maps are analytic (no random numbers), so they are the same on every machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from tmstarget.target import params as TP, rules as TR
from tmstarget.errors import InputError, QCFailure

VOXEL_MM = 2.0
# MNI152 2 mm orientation (x flipped), cropped around the left DLPFC: voxel (0, 0, 0) at MNI (-14, 20, 4)
AFFINE_MNI_2MM = np.array([[-VOXEL_MM, 0, 0, -14.0], [0, VOXEL_MM, 0, 20.0], [0, 0, VOXEL_MM, 4.0], [0, 0, 0, 1]])
SHAPE = (30, 32, 30)
DLPFC_CENTRE_MNI_RAS_MM = np.array([-40.0, 44.0, 30.0])

# contarg utils.cluster(percentile=10, sign="negative", connectivity="NN3") + seedmap.get_com_in_mm on
# each map, as printed by the hand run: (centroid MNI RAS mm, voxels in the largest cluster).
CONTARG_RESULTS = {
    "blobs": (np.array([-43.9777777778, 39.4814814815, 33.9777777778]), 270),
    "irregular": (np.array([-38.7894736842, 28.1052631579, 17.2105263158]), 38),
}


def voxel_centres_mni_ras_mm(shape=SHAPE, affine=AFFINE_MNI_2MM) -> np.ndarray:
    """(X, Y, Z, 3) MNI RAS mm of every voxel centre."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def shared_maps() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two r maps on the 2 mm MNI-oriented grid with their search masks: {name: (r_map, search_mask)}.

    ``blobs``: a 25 mm sphere around the left DLPFC; r is two Gaussian anticorrelation blobs (sigma 6 and
    4 mm) on a gentle gradient. ``irregular``: a 28 mm sphere with folded slabs cut out (a sulcus-like
    grey-matter ribbon), r a sum of incommensurate sinusoids, so the negative tail breaks into 34
    irregular clusters (largest 38, 34, 33, 32 voxels) and the centroid lies off the voxel grid.
    """
    xyz = voxel_centres_mni_ras_mm()
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    dist_mm = np.linalg.norm(xyz - DLPFC_CENTRE_MNI_RAS_MM, axis=-1)

    def gauss(centre, sigma_mm):
        return np.exp(-np.sum((xyz - np.asarray(centre)) ** 2, axis=-1) / (2 * sigma_mm ** 2))

    blobs_r = (0.05 + 0.004 * (y - 44.0) - 0.55 * gauss([-44, 40, 34], 6.0) - 0.35 * gauss([-34, 52, 24], 4.0))
    blobs_mask = dist_mm <= 25.0

    irregular_r = (0.45 * np.sin(0.31 * x + 0.7) * np.cos(0.23 * y - 0.4) * np.sin(0.19 * z + 1.1)
                   + 0.25 * np.cos(0.5 * x + 0.37 * y) + 0.15 * np.sin(0.41 * z - 0.29 * y) - 0.05)
    ribbon = np.sin(0.35 * x + 0.2 * z) + 0.6 * np.cos(0.27 * y - 0.15 * x) > -0.4
    irregular_mask = (dist_mm <= 28.0) & ribbon
    return {"blobs": (np.clip(blobs_r, -0.99, 0.99), blobs_mask),
            "irregular": (np.clip(irregular_r, -0.99, 0.99), irregular_mask)}


def search_space(mask: np.ndarray) -> TR.SearchSpace:
    ijk = np.argwhere(mask)
    return TR.SearchSpace(ijk, ijk @ AFFINE_MNI_2MM[:3, :3].T + AFFINE_MNI_2MM[:3, 3])


def cash_rule(r_map, mask) -> tuple[TR.Selection, TR.SearchSpace]:
    space = search_space(mask)
    sel = TR.select_cluster(r_map[mask], space, percentile=10.0, percentile_of="negative",
                           weight_by_abs_r=False, connectivity=26)
    return sel, space


@pytest.mark.parametrize("name", sorted(CONTARG_RESULTS))
def test_cash_rule_gives_contargs_centroid_and_a_target_within_one_voxel(name):
    r_map, mask = shared_maps()[name]
    contarg_mm, contarg_voxels = CONTARG_RESULTS[name]
    sel, space = cash_rule(r_map, mask)
    assert sel.cluster_size_voxels == contarg_voxels
    # the point before snapping is contarg's target (measured: 0.0 mm on both maps; 1e-6 mm = rounding)
    np.testing.assert_allclose(sel.point_mni_ras_mm, contarg_mm, atol=1e-6)
    # the target is that point snapped to the nearest search voxel: measured 0.52 mm (blobs), 1.12 mm
    # (irregular) from contarg's point; acceptance is within one voxel (2 mm)
    snapped_distance_mm = np.linalg.norm(space.xyz_mm[sel.index] - contarg_mm)
    assert snapped_distance_mm <= VOXEL_MM
    assert mask[tuple(space.ijk[sel.index])]


def test_default_rule_is_not_the_cash_rule_on_the_irregular_map():
    """The default (20th percentile of all r, |r|-weighted) picks another region here: 24.2 mm away."""
    r_map, mask = shared_maps()["irregular"]
    cash, space = cash_rule(r_map, mask)
    params = TP.resolve_target_cfg(None)["cluster"]  # the resolved default config, as select() passes it
    default = TR.select_cluster(r_map[mask], space, **params)
    assert params == {"percentile": 20.0, "percentile_of": "all", "weight_by_abs_r": True, "connectivity": 26}
    assert default.cluster_size_voxels == 281 and cash.cluster_size_voxels == 38
    assert np.linalg.norm(space.xyz_mm[default.index] - space.xyz_mm[cash.index]) == pytest.approx(24.17, abs=0.01)


def test_tail_threshold_over_all_or_only_negative_values():
    r = np.array([-0.5, -0.4, -0.3, -0.2, -0.1, 0.1, 0.2, 0.3, 0.4, 0.5])
    # numpy's linear percentile: all ten values, rank 0.2 * 9 = 1.8 -> -0.4 + 0.8 * 0.1
    assert TR.tail_threshold(r, 20.0, "all") == pytest.approx(-0.32, abs=1e-12)
    # the five negative values, rank 0.2 * 4 = 0.8 -> -0.5 + 0.8 * 0.1
    assert TR.tail_threshold(r, 20.0, "negative") == pytest.approx(-0.42, abs=1e-12)
    # a percentile above the negative share of all voxels is capped at 0 (every negative voxel kept)
    assert TR.tail_threshold(r, 80.0, "all") == 0.0
    with pytest.raises(QCFailure, match="anticorrelated"):
        TR.tail_threshold(np.abs(r), 10.0, "negative")


def test_percentile_of_is_checked_and_defaults_to_all():
    assert TP.resolve_target_cfg({"cluster": {"percentile": 10}})["cluster"]["percentile_of"] == "all"
    with pytest.raises(InputError, match="percentile_of 'positive'"):
        TP.resolve_target_cfg({"cluster": {"percentile_of": "positive"}})
