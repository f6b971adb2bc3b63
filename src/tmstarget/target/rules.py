"""Target rules (peak, cluster, seedmap, hierarchical) on search-voxel time series and one reference.

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

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist

from tmstarget.errors import QCFailure


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
    params : resolved targeting config (:func:`tmstarget.target.params.resolve_target_cfg`).
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



def safe_select(*args, **kwargs) -> Selection | None:
    """:func:`select`, or None when the rule finds no target (:class:`QCFailure`)."""
    try:
        return select(*args, **kwargs)
    except QCFailure:
        return None
