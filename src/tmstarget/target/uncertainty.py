"""Uncertainty of a target: block bootstrap, split halves, candidate targets, the confidence call.

The split-half study itself (every split of the blocks, halves denoised on their own) is
:mod:`tmstarget.target.reliability`; :func:`rule_split_half_study` runs it with one rule.
"""

from __future__ import annotations

import numpy as np

from tmstarget.errors import InputError
from tmstarget.denoise.arrays import RawRuns, load_raw_runs
from tmstarget.target.reliability import clean_half, first_second_rows, split_half_study
from tmstarget.target.rules import SearchSpace, safe_select
from tmstarget.target.selection import Denoised, Problem, columns_of


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
        sel = safe_select(method, params, ts_search[rows], ref_t[rows], space,
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
        sel = safe_select(method, params, ts_search[rows], ref_t[rows], space,
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



def confidence(uncertainty: dict, params: dict) -> tuple[bool | None, list[str]]:
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



def rule_split_half_study(method, params, prob: Problem, space: SearchSpace, den: Denoised, seed, search,
                      halves_npz) -> dict:
    """:func:`tmstarget.target.reliability.split_half_study` with this rule: joint halves from ``prob``, and
    halves denoised on their own from the denoise step's raw series (``halves_npz``) when available."""

    def joint(rows):
        sel = safe_select(method, params, prob.ts_search[rows], prob.ref_t[rows], space,
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
            sel = safe_select(method, params, ts[:, search_pos], ref, space,
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

