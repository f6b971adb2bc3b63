"""Target selection (peak, cluster, seedmap, hierarchical) with bootstrap uncertainty.

All rules work on the denoised time series (``data_tv``, T x V, columns = voxels of the analysis
mask in C order) restricted to the search region, and on one reference time course: the mean of the
sgACC seed voxels, or for ``seedmap`` the group-map-weighted sum of all voxels (Fox et al. 2013).
Because the reference is a fixed linear combination of voxel columns, a bootstrap resample only
needs to index rows of the search-voxel matrix and of the reference: 50 resamples take seconds.

Rules (docs/method.md):

- ``peak``: the search voxel with the most negative Pearson r with the reference.
- ``cluster``: the negative tail of r, its largest connected cluster, that cluster's centre. Two
  variants, chosen by the ``cluster`` keys:

  * the default (``percentile: 20``, ``percentile_of: all``, ``weight_by_abs_r: true``,
    ``connectivity: 26``): search voxels with r at or below the 20th percentile of r over *all*
    search voxels (and r < 0), the largest 26-connected cluster, its centre of mass weighted by |r|.
  * the published rule of Cash et al. 2021 as contarg codes it (``contarg.utils.cluster`` with
    ``sign="negative"`` and ``contarg.seedmap.get_com_in_mm``; ``percentile: 10``,
    ``percentile_of: negative``, ``weight_by_abs_r: false``, ``connectivity: 26``): voxels at or
    below the 10th percentile of the *negative* r values only, the largest 26-connected (AFNI NN3)
    cluster, its unweighted centroid.

  The default therefore keeps a wider tail (20 % of all voxels rather than 10 % of the negative
  ones) and pulls the centre towards the strongest anticorrelation. Ties between equally large
  clusters go to the more negative summed r (contarg takes the last label of a sort).
- ``seedmap``: reference = sum over voxels of (group sgACC map value x voxel time course), the
  search region zeroed in the weights; then the ``selection`` rule (cluster or peak) on that r map.
- ``hierarchical`` (SAINT-like, as in contarg): single-linkage clustering of the search voxels by
  1 - Spearman rho cut at ``distance_threshold`` (likewise the seed voxels); keep clusters with more
  than ``min_cluster_voxels`` voxels and negative net correlation with the seed clusters; rank by
  size x concentration x net correlation; the centre of the best cluster.

Every rule snaps its point to the nearest voxel of the search mask, which ``regions.search_mask``
restricts to grey matter, so the target is always a grey-matter voxel inside the search region; the
point before snapping is kept as ``unsnapped_point_mni_ras_mm`` (contarg reports that point itself
and does not snap).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist

from tmstarget.denoise.arrays import Denoised, RawRuns, load_denoised, load_raw_runs
from tmstarget.errors import InputError, QCFailure
from tmstarget.io.files import load_img_checked, sha256_file, write_json
from tmstarget.target.regions import grey_matter_probability, in_ba46, literature_sites_mni_ras_mm
from tmstarget.target.reliability import clean_half, first_second_rows, split_half_study

log = logging.getLogger(__name__)

METHODS = ("peak", "cluster", "seedmap", "hierarchical")
PERCENTILE_OF = ("all", "negative")  # the voxels whose r distribution sets the cluster threshold
TARGET_DEFAULTS: dict = {
    "method": "cluster",
    "bootstrap_samples": 50,          # block-bootstrap resamples of time (0: skip)
    "block_length_s": 60.0,           # block length of the bootstrap and of the split halves, seconds
    "split_half": True,               # also a target from each half of the time series
    "split_half_max_splits": 500,     # every block split up to this many, else this many drawn (reliability.py)
    "random_seed": 0,
    "confident_median_distance_mm": 6.0,  # bootstrap median above which a target is flagged
    "confident_split_half_median_mm": 8.0,  # split-half median (all block splits) above which it is flagged
    "candidate_separation_mm": 10.0,  # split-half targets farther apart than this form separate candidates
    "multiple_candidates_min_support": 0.25,  # a second candidate with this support flags two targets
    "peak": {},
    "cluster": {"percentile": 20.0, "percentile_of": "all", "weight_by_abs_r": True,  # docs/reliability.md
                "connectivity": 26},
    "seedmap": {"normative_map": None, "selection": "cluster"},
    "hierarchical": {"distance_threshold": 0.5, "min_cluster_voxels": 50, "linkage": "single",
                     "weights": {"size": 1.0, "concentration": 1.0, "net_correlation": 1.0}},
}


SPLIT_HALF_REPEATS_GONE = (
    "targeting.split_half_repeats was replaced by targeting.split_half_max_splits: every split of the data "
    "into halves of whole blocks is used up to that many (so the figure depends on no random seed), above it "
    "that many are drawn; remove split_half_repeats from the config (config/README.md)")


def resolve_target_cfg(cfg: dict | None) -> dict:
    """:data:`TARGET_DEFAULTS` overlaid with ``cfg`` (nested dicts merged; ``None`` keeps defaults)."""

    def merge(base, over):
        out = copy.deepcopy(base)
        for key, value in (over or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            elif value is not None or key not in out:
                out[key] = value
        return out

    if "split_half_repeats" in (cfg or {}):
        raise InputError(SPLIT_HALF_REPEATS_GONE)
    out = merge(TARGET_DEFAULTS, cfg)
    if out["method"] not in METHODS:
        raise InputError(f"targeting.method '{out['method']}' is not one of {', '.join(METHODS)}; fix the config")
    if out["cluster"]["percentile_of"] not in PERCENTILE_OF:
        raise InputError(f"targeting.cluster.percentile_of '{out['cluster']['percentile_of']}' is not one of "
                         f"{', '.join(PERCENTILE_OF)}; fix the config")
    if out["seedmap"]["selection"] not in ("cluster", "peak"):
        raise InputError("targeting.seedmap.selection must be cluster or peak; fix the config")
    return out


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------
def _grid_mask(path, den: Denoised, what: str) -> np.ndarray:
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
# Correlation helpers
# --------------------------------------------------------------------------------------------------
def _zscore(x: np.ndarray, axis: int = 0) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=axis, keepdims=True)
    sd = x.std(axis=axis, keepdims=True)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)


def pearson_r(ts_tv: np.ndarray, ref_t: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``ts_tv`` (T, V) with ``ref_t`` (T,); returns (V,)."""
    return _zscore(ts_tv).T @ _zscore(ref_t) / len(ref_t)


def spearman_matrix(ts_tv: np.ndarray) -> np.ndarray:
    """Spearman rho between all columns of ``ts_tv`` (T, V); returns (V, V) float32."""
    from scipy.stats import rankdata

    z = _zscore(rankdata(ts_tv, axis=0)).astype(np.float32)
    return z.T @ z / len(z)


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------
@dataclass
class Selection:
    """A selected target, as an index into the search voxels."""

    index: int                     # row of the search voxel arrays
    point_mni_ras_mm: np.ndarray   # (3,) point before snapping (centre of mass or peak)
    cluster_size_voxels: int | None
    score: float                   # rule r (or net correlation) at the target


@dataclass
class SearchSpace:
    """Search voxels and their positions, shared by every rule."""

    ijk: np.ndarray      # (Vs, 3) int voxel indices
    xyz_mm: np.ndarray   # (Vs, 3) MNI RAS mm

    def snap(self, point_mni_ras_mm) -> int:
        """Index of the search voxel nearest (Euclidean mm) to a point."""
        return int(np.argmin(np.sum((self.xyz_mm - np.asarray(point_mni_ras_mm)) ** 2, axis=1)))


def select_peak(r_search: np.ndarray, space: SearchSpace) -> Selection:
    """The most negative voxel."""
    i = int(np.argmin(r_search))
    return Selection(i, space.xyz_mm[i].copy(), None, float(r_search[i]))


def tail_threshold(r_search: np.ndarray, percentile: float, percentile_of: str = "all") -> float:
    """The r at or below which a search voxel joins the negative tail.

    ``percentile_of="all"``: the ``percentile``-th percentile of every search voxel's r (capped at 0);
    ``"negative"``: of the negative r values only (Cash et al. 2021; contarg ``utils.cluster``).

    Raises
    ------
    QCFailure
        No search voxel is anticorrelated with the reference.
    """
    negative = r_search[r_search < 0]
    if negative.size == 0:
        raise QCFailure("no search-region voxel is anticorrelated with the seed; the target cannot be chosen "
                        "(check the seed map and the denoising)")
    pool = negative if percentile_of == "negative" else r_search
    return float(min(np.percentile(pool, percentile), 0.0))


def select_cluster(r_search: np.ndarray, space: SearchSpace, percentile: float = 10.0,
                   weight_by_abs_r: bool = True, connectivity: int = 26,
                   percentile_of: str = "all") -> Selection:
    """Largest connected cluster of the most negative tail, its (|r|-weighted) centre, snapped.

    Parameters
    ----------
    r_search : (Vs,) r of the search voxels with the reference.
    percentile, percentile_of : voxels with r at or below :func:`tail_threshold` (and r < 0) form the tail.
    connectivity : 6, 18 or 26 (neighbourhood of the cluster labelling).
    weight_by_abs_r : centre of mass weighted by |r|; False gives the plain centroid (Cash/contarg).

    Raises
    ------
    QCFailure
        No search voxel is anticorrelated with the reference.
    """
    thr = tail_threshold(r_search, percentile, percentile_of)
    tail = (r_search <= thr) & (r_search < 0)
    lo = space.ijk.min(axis=0)
    box = np.zeros(tuple(space.ijk.max(axis=0) - lo + 1), bool)
    box[tuple((space.ijk[tail] - lo).T)] = True
    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[int(connectivity)])
    labels, n = ndimage.label(box, structure=structure)
    lab_v = np.where(tail, labels[tuple((space.ijk - lo).T)], 0)
    sizes = np.bincount(lab_v, minlength=n + 1)[1:]
    sums = np.bincount(lab_v, weights=r_search, minlength=n + 1)[1:]
    best = np.lexsort((sums, -sizes))[0] + 1          # largest; ties: more negative summed r
    members = lab_v == best
    w = np.abs(r_search[members]) if weight_by_abs_r else np.ones(int(members.sum()))
    com = (space.xyz_mm[members] * w[:, None]).sum(axis=0) / w.sum()
    i = space.snap(com)
    return Selection(i, com, int(members.sum()), float(r_search[i]))


def cluster_labels(rho: np.ndarray, distance_threshold: float, linkage: str = "single") -> np.ndarray:
    """Agglomerative clustering of voxels on the distance 1 - rho, cut at ``distance_threshold``.

    ``single`` linkage (contarg's choice) is computed exactly as the connected components of the
    graph whose edges have 1 - rho < threshold; ``average`` / ``complete`` use scipy's hierarchy.

    Returns
    -------
    numpy.ndarray of int, shape (V,)
    """
    if linkage == "single":
        adjacency = sparse.csr_matrix((1.0 - rho) < distance_threshold)
        return connected_components(adjacency, directed=False)[1]
    from scipy.cluster.hierarchy import fcluster, linkage as hlinkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - rho.astype(np.float64), 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    tree = hlinkage(squareform(dist, checks=False), method=linkage)
    return fcluster(tree, t=distance_threshold - 1e-9, criterion="distance") - 1


def _cluster_medians(ts_tv: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster ids, sizes and median time courses (T, n_clusters)."""
    ids, counts = np.unique(labels, return_counts=True)
    med = np.stack([np.median(ts_tv[:, labels == c], axis=1) for c in ids], axis=1)
    return ids, counts, med


def select_hierarchical(ts_search: np.ndarray, ts_seed: np.ndarray, space: SearchSpace,
                        distance_threshold: float = 0.5, min_cluster_voxels: int = 50,
                        weights: dict | None = None, linkage: str = "single") -> Selection:
    """SAINT-like clustering of search voxels by time-series similarity (contarg's reimplementation).

    Parameters
    ----------
    ts_search : (T, Vs) search-voxel time series.
    ts_seed : (T, Vseed) seed-voxel time series.

    Returns
    -------
    Selection
        ``score`` is the net correlation (seed-cluster-size-weighted mean Spearman rho between the
        cluster's median time course and each seed cluster's median time course).

    Raises
    ------
    QCFailure
        No cluster has more than ``min_cluster_voxels`` voxels and a negative net correlation.
    """
    from scipy.stats import rankdata

    weights = {"size": 1.0, "concentration": 1.0, "net_correlation": 1.0, **(weights or {})}
    s_labels = cluster_labels(spearman_matrix(ts_search), distance_threshold, linkage)
    r_labels = cluster_labels(spearman_matrix(ts_seed), distance_threshold, linkage)
    s_ids, s_n, s_med = _cluster_medians(ts_search, s_labels)
    _, r_n, r_med = _cluster_medians(ts_seed, r_labels)
    big = s_n > min_cluster_voxels
    if not big.any():
        raise QCFailure(f"hierarchical rule: no cluster of more than {min_cluster_voxels} coherent voxels "
                        "in the search region; use targeting.method cluster or lower "
                        "targeting.hierarchical.min_cluster_voxels")
    zs = _zscore(rankdata(s_med[:, big], axis=0))
    zr = _zscore(rankdata(r_med, axis=0))
    net = (zs.T @ zr / len(zs)) @ r_n / r_n.sum()
    cand = np.flatnonzero(big)[net < 0]
    net = net[net < 0]
    if len(cand) == 0:
        raise QCFailure("hierarchical rule: no large cluster is anticorrelated with the seed; "
                        "use targeting.method cluster")
    size = s_n[cand].astype(float)
    conc = np.array([n / pdist(space.xyz_mm[s_labels == s_ids[c]]).mean() for c, n in zip(cand, size)])

    def rank(values, descending):
        order = np.argsort(-values if descending else values, kind="stable")
        out = np.empty(len(values))
        out[order] = np.arange(1, len(values) + 1)
        return out

    product = ((rank(size, True) * weights["size"]) * (rank(conc, True) * weights["concentration"])
               * (rank(net, False) * weights["net_correlation"]))
    best = int(np.lexsort((net, product))[0])
    members = s_labels == s_ids[cand[best]]
    com = space.xyz_mm[members].mean(axis=0)
    i = space.snap(com)
    return Selection(i, com, int(members.sum()), float(net[best]))


def select(method: str, params: dict, ts_search: np.ndarray, ref_t: np.ndarray, space: SearchSpace,
           ts_seed: np.ndarray | None = None) -> Selection:
    """Apply one rule to (possibly resampled) time series.

    Parameters
    ----------
    method : "peak" | "cluster" | "seedmap" | "hierarchical"
    params : resolved targeting config (:func:`resolve_target_cfg`).
    ts_search : (T, Vs) search-voxel time series; ``ref_t`` (T,) the reference (seed mean or seedmap
        series); ``ts_seed`` (T, Vseed) only for ``hierarchical``.
    """
    if method == "hierarchical":
        return select_hierarchical(ts_search, ts_seed, space, **params["hierarchical"])
    r = pearson_r(ts_search, ref_t)
    rule = params["seedmap"]["selection"] if method == "seedmap" else method
    if rule == "peak":
        return select_peak(r, space)
    return select_cluster(r, space, **params["cluster"])


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
# Uncertainty
# --------------------------------------------------------------------------------------------------
def block_bootstrap_indices(run_lengths, block_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one moving-block bootstrap resample of the concatenated runs.

    Blocks of ``block_volumes`` consecutive volumes never cross a run boundary (a run shorter than a
    block is one block); blocks are drawn uniformly until the total length is reached.

    Returns
    -------
    numpy.ndarray of int, shape (sum(run_lengths),)
    """
    starts, lengths, offset = [], [], 0
    for n in np.asarray(run_lengths, int):
        b = min(block_volumes, n)
        starts += list(range(offset, offset + n - b + 1))
        lengths += [b] * (n - b + 1)
        offset += n
    starts, lengths = np.asarray(starts), np.asarray(lengths)
    out, total = [], 0
    while total < offset:
        k = rng.integers(len(starts))
        out.append(np.arange(starts[k], starts[k] + lengths[k]))
        total += lengths[k]
    return np.concatenate(out)[:offset]


def _safe_select(*args, **kwargs) -> Selection | None:
    try:
        return select(*args, **kwargs)
    except QCFailure:
        return None


def bootstrap_targets(method: str, params: dict, ts_search, ref_t, space: SearchSpace, run_lengths,
                      t_r: float, ts_seed=None) -> np.ndarray:
    """Targets of ``params['bootstrap_samples']`` block-bootstrap resamples, (n, 3) MNI RAS mm.

    Rows are NaN where a resample gave no target (e.g. nothing anticorrelated).
    """
    n = int(params["bootstrap_samples"])
    rng = np.random.default_rng(params["random_seed"])
    block = max(1, int(round(params["block_length_s"] / t_r)))
    out = np.full((n, 3), np.nan)
    for b in range(n):
        rows = block_bootstrap_indices(run_lengths, block, rng)
        sel = _safe_select(method, params, ts_search[rows], ref_t[rows], space,
                           None if ts_seed is None else ts_seed[rows])
        if sel is not None:
            out[b] = space.xyz_mm[sel.index]
    return out


def split_half_targets(method: str, params: dict, ts_search, ref_t, space: SearchSpace,
                       ts_seed=None, rows_a=None, rows_b=None) -> tuple[np.ndarray, np.ndarray]:
    """Targets from two disjoint sets of rows of the jointly denoised series, each (3,) MNI RAS mm
    (NaN if a half gives none). Default halves: the first and the second half of the concatenated series.
    """
    if rows_a is None or rows_b is None:
        rows_a, rows_b = first_second_rows(len(ref_t))
    out = []
    for rows in (rows_a, rows_b):
        sel = _safe_select(method, params, ts_search[rows], ref_t[rows], space,
                           None if ts_seed is None else ts_seed[rows])
        out.append(space.xyz_mm[sel.index] if sel is not None else np.full(3, np.nan))
    return out[0], out[1]


BOOTSTRAP_NOTE = ("The block bootstrap resamples volumes of this one session, whose time points are "
                  "autocorrelated and all share the session's noise, so its spread understates how far the "
                  "target moves between sessions (about 2-4 times on a real 6.5-minute run); the split-half "
                  "distance is the reliability measure.")


def has_multiple_candidates(candidates: list[dict], min_support: float = 0.25) -> bool:
    """True when the second candidate (by support) holds at least ``min_support`` of the targets."""
    return bool(len(candidates) > 1 and candidates[1]["support_fraction"] >= min_support)


def target_candidates(points_mni_ras_mm, space: SearchSpace | None = None,
                      separation_mm: float = 10.0) -> list[dict]:
    """Group resampled targets into candidate targets separated by more than ``separation_mm``.

    Greedy density grouping (the "leader" step of quality-threshold clustering): the target with the
    most other targets within ``separation_mm`` leads the first candidate, which takes every target
    within ``separation_mm`` of it; the same is repeated on the targets left. Single linkage (used
    before) chained a broad spread of targets into one candidate with 100 % support: on a real run whose
    halves disagree by a median 19 mm it reported one candidate. Each candidate is the mean of its
    targets, snapped to the nearest search voxel when ``space`` is given. NaN rows (no target) are left
    out. Ties go to the earlier target, so the result depends only on the targets and their order.

    Returns
    -------
    list of dict
        ``target_mni_ras_mm``, ``support_fraction`` (share of the targets) and ``n_targets``, sorted
        by support (largest first).
    """
    pts = np.asarray(points_mni_ras_mm, float).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return []
    near = np.linalg.norm(pts[:, None] - pts[None], axis=2) <= separation_mm
    left = np.ones(len(pts), bool)
    out = []
    while left.any():
        counts = np.where(left, (near & left[None, :]).sum(axis=1), -1)
        leader = int(np.argmax(counts))
        members = near[leader] & left
        left &= ~members
        centre = pts[members].mean(axis=0)
        if space is not None:
            centre = space.xyz_mm[space.snap(centre)]
        out.append({"target_mni_ras_mm": [float(v) for v in centre],
                    "support_fraction": float(members.sum() / len(pts)), "n_targets": int(members.sum())})
    out.sort(key=lambda c: (-c["n_targets"], c["target_mni_ras_mm"]))
    for c in out:
        c["support"] = c["support_fraction"]   # the key qc.py's finding reads
    return out


def summarize_spread(targets_mni_ras_mm: np.ndarray, target_mni_ras_mm: np.ndarray) -> dict:
    """Median and 95th percentile of the distance (mm) of resampled targets from the target."""
    ok = np.all(np.isfinite(targets_mni_ras_mm), axis=1)
    d = np.linalg.norm(targets_mni_ras_mm[ok] - target_mni_ras_mm, axis=1)
    return {
        "median_distance_mm": float(np.median(d)) if len(d) else None,
        "p95_distance_mm": float(np.percentile(d, 95)) if len(d) else None,
        "n_failed": int((~ok).sum()),
    }


# --------------------------------------------------------------------------------------------------
# One unit, end to end
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


def _space_of(search: np.ndarray, den: Denoised) -> SearchSpace:
    ijk = np.argwhere(search & den.mask)   # C order, the same order as columns_of
    return SearchSpace(ijk, nib.affines.apply_affine(den.affine, ijk))


def _target_of(den, seed, search, method, params, weights):
    space = _space_of(search, den)
    prob = build_problem(den, seed, search, method, weights)
    sel = select(method, params, prob.ts_search, prob.ref_t, space, prob.ts_seed)
    return space, prob, sel


def _seedmap_weights(cfg, den, search, group_map_paths) -> tuple[np.ndarray, dict]:
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


def _split_half_study(method, params, prob: Problem, space: SearchSpace, den: Denoised, seed, search,
                      halves_npz) -> dict:
    """:func:`tmstarget.target.reliability.split_half_study` with this rule: joint halves from ``prob``, and
    halves denoised on their own from the denoise step's raw series (``halves_npz``) when available."""

    def joint(rows):
        sel = _safe_select(method, params, prob.ts_search[rows], prob.ref_t[rows], space,
                           None if prob.ts_seed is None else prob.ts_seed[rows])
        return space.xyz_mm[sel.index] if sel is not None else np.full(3, np.nan)

    independent, note = None, None
    if method == "seedmap":
        note = ("seedmap rule: its reference weights every brain voxel, whose raw series the denoise step does "
                "not keep, so the halves are cut from the jointly denoised series")
    elif halves_npz is None:
        note = "no raw series of the seed and search voxels (halves npz) given: halves cut from the joint series"
    else:
        raw = load_raw_runs(halves_npz)
        if not np.array_equal(raw.run_lengths, den.run_lengths[den.run_lengths > 0]):
            raise InputError(f"{raw.name}: kept volumes per run {raw.run_lengths.tolist()} differ from {den.name} "
                             f"{den.run_lengths.tolist()}; rerun the denoise step")
        seed_pos, search_pos = _positions(raw, columns_of(seed, den)), _positions(raw, columns_of(search, den))

        def independent(rows):
            ts = clean_half(raw, rows)
            if len(ts) == 0:
                return np.full(3, np.nan)
            ref = ts[:, seed_pos].mean(axis=1)
            if not np.std(ref) > 0:
                return np.full(3, np.nan)
            sel = _safe_select(method, params, ts[:, search_pos], ref, space,
                               ts[:, seed_pos] if method == "hierarchical" else None)
            return space.xyz_mm[sel.index] if sel is not None else np.full(3, np.nan)

    return split_half_study(joint, independent, den.run_lengths, den.t_r, float(params["block_length_s"]),
                            int(params["split_half_max_splits"]), int(params["random_seed"]),
                            float(params["confident_split_half_median_mm"]), note)


def _positions(raw: RawRuns, cols: np.ndarray) -> np.ndarray:
    """Positions in ``raw.columns`` of data_tv columns ``cols``."""
    pos = np.searchsorted(raw.columns, cols)
    pos = np.clip(pos, 0, len(raw.columns) - 1)
    if len(cols) == 0 or not np.array_equal(raw.columns[pos], cols):
        raise InputError(f"{raw.name}: the seed or search voxels are not all in the raw series of the denoise step; "
                         "rerun the denoise step with the current seed and search masks")
    return pos


def run_target(denoised_npz, seed_mask_path, search_mask_path, fisherz_map_path, cfg: dict, out_json,
               comparison_npz=None, group_map_paths=(), seed_definition=None,
               search_definition=None, template_space: str | None = None, halves_npz=None) -> dict:
    """Choose the target in template space and write the target JSON (step adapter).

    Parameters
    ----------
    denoised_npz : path
        Main-strategy denoised time series (``data_tv`` T x V, ``mask``, ``affine``, ``t_r``,
        ``run_lengths``).
    seed_mask_path, search_mask_path : path
        uint8 NIfTI masks in the grid of ``mask`` (``regions.run_masks``).
    fisherz_map_path : path
        Seed map (``stat-fisherz``: Fisher z-transformed r, arctanh r; not a z statistic) of the main
        strategy, same grid; gives ``z_at_target`` (that Fisher z) / ``r_at_target``.
    cfg : dict
        ``config["targeting"]``; keys and defaults in :data:`TARGET_DEFAULTS`.
    out_json : path
        ``*_desc-target_markers.json`` (layout in docs/architecture.md).
    comparison_npz : path, optional
        Denoised data of the no-GSR strategy; the same rule gives ``gsr_comparison``.
    group_map_paths : sequence of paths
        The other subjects' sgACC r maps (seedmap rule without a normative map).
    seed_definition, search_definition : dict, optional
        Recorded as ``seed`` and ``search_region``.
    template_space : str, optional
        Default: the ``space-`` entity of the Fisher z map's file name.
    halves_npz : path, optional
        ``*_desc-<strategy>_halves.npz`` of the main strategy (raw seed and search series): split halves
        are then each denoised on their own (the reliability headline, :mod:`tmstarget.target.reliability`).

    Returns
    -------
    dict
        The JSON content.
    """
    params = resolve_target_cfg(cfg)
    method = params["method"]
    den = load_denoised(denoised_npz)
    seed = _grid_mask(seed_mask_path, den, "seed mask")
    search = _grid_mask(search_mask_path, den, "search mask")
    z_img = load_img_checked(fisherz_map_path, ndim=3, what="seed Fisher z map")
    if z_img.shape[:3] != den.mask.shape:
        raise InputError(f"{Path(fisherz_map_path).name}: grid {z_img.shape[:3]} differs from {den.name} "
                         f"{den.mask.shape}; recompute the seed map from the same denoised data")
    warnings: list[str] = []
    weights, seedmap_info = None, None
    if method == "seedmap":
        weights, seedmap_info = _seedmap_weights(params, den, search, group_map_paths)
    space, prob, sel = _target_of(den, seed, search, method, params, weights)
    target_mm = space.xyz_mm[sel.index]
    target_ijk = space.ijk[sel.index]
    log.info("%s target at MNI %s (cluster %s voxels)", method, np.round(target_mm, 1), sel.cluster_size_voxels)

    if method == "hierarchical" and sel.cluster_size_voxels > 0.5 * len(space.ijk):
        warnings.append(f"the hierarchical cluster holds {sel.cluster_size_voxels} of {len(space.ijk)} search "
                        "voxels: single linkage chains spatially smoothed voxels into one cluster, so the "
                        "target is the region's centre; use unsmoothed data (denoising smoothing_fwhm_mm: 0) "
                        "or targeting.hierarchical.linkage: average")
    z_at = float(np.asanyarray(z_img.dataobj)[tuple(target_ijk)])
    r_seed = float(pearson_r(prob.ts_search[:, [sel.index]], prob.seed_ref_t)[0])
    if abs(np.tanh(z_at) - r_seed) > 0.1:
        warnings.append(f"the seed map gives r = {np.tanh(z_at):.2f} at the target but the denoised data give "
                        f"{r_seed:.2f}: the seed map and the time series may come from different inputs")

    # uncertainty
    uncertainty = {"method": "block-bootstrap", "n": int(params["bootstrap_samples"]),
                   "block_length_s": float(params["block_length_s"]), "random_seed": params["random_seed"]}
    if params["bootstrap_samples"] > 0:
        boots = bootstrap_targets(method, params, prob.ts_search, prob.ref_t, space, den.run_lengths,
                                  den.t_r, prob.ts_seed)
        uncertainty["targets_mni_ras_mm"] = [None if not np.all(np.isfinite(b)) else b.tolist() for b in boots]
        uncertainty.update(summarize_spread(boots, target_mm))
    if params["split_half"]:
        study = _split_half_study(method, params, prob, space, den, seed, search, halves_npz)
        head, rel = study["headline"], study["reliability"]
        uncertainty["split_half_targets_mni_ras_mm"] = [
            x.tolist() if np.all(np.isfinite(x)) else None for x in study["first_second"]]
        uncertainty["split_half_distance_mm"] = head["first_vs_second_half_mm"]
        uncertainty["split_half_n_splits"] = rel["n_splits"]
        uncertainty["split_half_distances_mm"] = head["distances_mm"]
        uncertainty["split_half_median_distance_mm"] = head["median_distance_mm"]
        uncertainty["split_half_n_failed"] = head["n_failed"]
        uncertainty["split_half_pair_targets_mni_ras_mm"] = [
            [x.tolist() if np.all(np.isfinite(x)) else None for x in pair] for pair in study["pairs"]]
        uncertainty["reliability"] = rel
        cand_points = np.concatenate([study["first_second"], study["pairs"].reshape(-1, 3)])
        cand_from = f"split-half targets ({rel['measure']}: first/second half and {rel['n_splits']} block splits)"
    elif params["bootstrap_samples"] > 0:
        cand_points, cand_from = boots, "bootstrap targets (split-half disabled)"
    else:
        cand_points = None
    if params["bootstrap_samples"] > 0:
        uncertainty["bootstrap_note"] = BOOTSTRAP_NOTE
    if cand_points is not None:
        cands = target_candidates(cand_points, space, float(params["candidate_separation_mm"]))
        uncertainty["candidates"] = cands
        uncertainty["candidates_from"] = cand_from
        uncertainty["candidate_separation_mm"] = float(params["candidate_separation_mm"])
        uncertainty["multiple_candidates"] = has_multiple_candidates(
            cands, float(params["multiple_candidates_min_support"]))
        if uncertainty["multiple_candidates"]:
            warnings.append("two or more separated candidate targets: " + "; ".join(
                f"MNI ({', '.join(f'{v:.0f}' for v in c['target_mni_ras_mm'])}) with {c['support_fraction']:.0%} "
                "of the split-half targets" for c in cands[:3]))
    uncertainty["confident"], reasons = _confidence(uncertainty, params)
    if reasons:
        warnings.append("uncertain target: " + "; ".join(reasons) + "; collect more data or use the "
                        "group/literature site")

    # GSR comparison
    gsr = None
    if comparison_npz is not None:
        cden = load_denoised(comparison_npz)
        if cden.mask.shape != den.mask.shape or not np.allclose(cden.affine, den.affine, atol=1e-3):
            raise InputError(f"{cden.name}: grid differs from {den.name}; rerun the denoise step")
        cweights = None if weights is None else _seedmap_weights(params, cden, search, group_map_paths)[0]
        try:
            cspace, _, csel = _target_of(cden, seed, search, method, params, cweights)
            c_mm = cspace.xyz_mm[csel.index]
            gsr = {"strategy": cden.strategy, "target_mni_ras_mm": c_mm.tolist(),
                   "shift_mm": float(np.linalg.norm(c_mm - target_mm))}
        except QCFailure as exc:
            gsr = {"strategy": cden.strategy, "target_mni_ras_mm": None, "shift_mm": None, "note": str(exc)}

    sites = literature_sites_mni_ras_mm()
    gm_at = float(grey_matter_probability(nib.Nifti1Image(den.mask.astype(np.uint8), den.affine))[tuple(target_ijk)])
    space_name = template_space
    if space_name is None:
        m = re.search(r"space-([A-Za-z0-9]+)", Path(fisherz_map_path).name)
        space_name = m.group(1) if m else None
    minutes = len(den.data_tv) * den.t_r / 60.0
    method_parameters = {"rule": method}
    if method == "seedmap":
        method_parameters.update(params["seedmap"], cluster=params["cluster"], **seedmap_info)
    elif method in ("cluster", "hierarchical"):
        method_parameters.update(params[method])
    result = {
        "TemplateSpace": space_name,
        "target_mni_ras_mm": target_mm.tolist(),
        "target_ijk": target_ijk.tolist(),
        "method": method,
        "method_parameters": method_parameters,
        "unsnapped_point_mni_ras_mm": sel.point_mni_ras_mm.tolist(),
        "rule_score_at_target": sel.score,
        "r_at_target": float(np.tanh(z_at)),
        "z_at_target": z_at,
        "r_at_target_from_denoised": r_seed,
        "cluster_size_voxels": sel.cluster_size_voxels,
        "in_ba46": bool(in_ba46(target_mm, hemisphere="both")),
        "in_search_mask": bool(search[tuple(target_ijk)]),
        "grey_matter_probability_at_target": gm_at,
        "seed": seed_definition or {},
        "search_region": search_definition or {"mask": Path(search_mask_path).name,
                                               "voxels": int(search.sum())},
        "uncertainty": uncertainty,
        "gsr_comparison": gsr,
        "literature_distances_mm": {k: float(np.linalg.norm(target_mm - v)) for k, v in sites.items()},
        "denoising": {"strategy": den.strategy, "t_r": den.t_r, "volumes_kept": int(len(den.data_tv)),
                      "run_lengths": den.run_lengths.tolist(), "minutes_kept": round(minutes, 2)},
        "targeting_parameters": {k: v for k, v in params.items() if k not in METHODS},
        "warnings": warnings,
        "Sources": [Path(p).name for p in (denoised_npz, seed_mask_path, search_mask_path, fisherz_map_path)]
                   + ([Path(comparison_npz).name] if comparison_npz else []),
        "software": _software(),
    }
    write_json(result, out_json)
    return result


def _confidence(uncertainty: dict, params: dict) -> tuple[bool | None, list[str]]:
    """Whether the target is reproducible enough to call confident, and the reasons if not.

    None when neither the bootstrap nor the repeated split-half was run.
    """
    reasons, checked = [], False
    nan = float("nan")
    uncertainty["confident_median_distance_mm"] = float(params["confident_median_distance_mm"])
    uncertainty["confident_split_half_median_mm"] = float(params["confident_split_half_median_mm"])
    if uncertainty.get("n", 0) > 0:
        checked = True
        median, limit = uncertainty.get("median_distance_mm"), float(params["confident_median_distance_mm"])
        if median is None or median > limit:
            reasons.append(f"bootstrap targets lie a median {median if median is not None else nan:.1f} mm "
                           f"from it (limit {limit:g} mm)")
        if uncertainty.get("n_failed"):
            reasons.append(f"{uncertainty['n_failed']} bootstrap resamples gave no target")
    if "split_half_median_distance_mm" in uncertainty:
        checked = True
        split, limit = uncertainty["split_half_median_distance_mm"], float(params["confident_split_half_median_mm"])
        if split is None or split > limit:
            reasons.append(f"targets of disjoint halves of the data lie a median "
                           f"{split if split is not None else nan:.1f} mm apart (limit {limit:g} mm)")
        if uncertainty.get("split_half_n_failed"):
            reasons.append(f"{uncertainty['split_half_n_failed']} split halves gave no target")
    return (not reasons) if checked else None, reasons


def _software() -> dict:
    try:
        from tmstarget.bids.derivatives import software_versions

        return software_versions()
    except ImportError:  # pragma: no cover
        return {}
