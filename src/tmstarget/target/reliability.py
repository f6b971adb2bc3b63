"""Split-half reliability of a target: seed-free block splits, halves denoised on their own.

The reliability figure is the distance between the targets of two disjoint halves of one session's
data (docs/reliability_method.md):

- **Blocks and splits.** The kept volumes of each run are cut into consecutive blocks of
  ``block_length_s`` (the last block of a run may be shorter; a block never crosses a run boundary).
  A split gives whole blocks to half A or B with equal block counts (one more in B when the count is
  odd); (A, B) and (B, A) are the same split. Every such split is used when there are at most
  ``split_half_max_splits`` of them (7 blocks: 35 splits, 12 blocks: 462), so the figure depends on
  no random seed; above that, that many distinct splits are drawn with ``random_seed``.
- **Independent halves** (the headline). Each half is denoised on its own, as a second session would
  be: the temporal operator of :func:`tmstarget.denoise.temporal.temporal_operator` is built with the other
  half's volumes treated as censored, so interpolation, detrending, band-pass and the confound fit
  (global signal included) see only that half's volumes, exactly as
  :func:`nilearn.signal.clean` treats a ``sample_mask``; each half is then z-scored per run. Spatial
  smoothing commutes with that operator (both linear, on different axes), so the operator is applied
  to the centred, smoothed, not cleaned series of the seed and search voxels, which the denoise step
  writes (``*_desc-<strategy>_halves.npz``, :class:`tmstarget.denoise.arrays.RawRuns`).
- **Joint halves.** The rows of the jointly denoised series (filter, global signal and confound fits
  shared by both halves) are split instead. They share their cleaning, so they agree more than two
  sessions could; the figure is kept for comparison.

The plain words say only what was measured and add one sourced sentence on what a second session
usually adds (:data:`BETWEEN_SESSION_WORDS`).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tmstarget.denoise.arrays import RawRuns
from tmstarget.denoise.temporal import ShortRun, temporal_operator, zscore_columns

#: What a second session adds, from published test-retest studies (docs/reliability_method.md). Nothing
#: in it is measured on this scan.
BETWEEN_SESSION_WORDS = (
    "A second session adds changes (head position, registration, brain state) that no split of one scan "
    "shows; published targets lie a median of about 2 mm apart between days with 30 minutes of data per day "
    "(Cash et al. 2021), and more than 20-30 minutes are needed for targets to repeat within 1 cm "
    "(Cao et al. 2024).")


# --------------------------------------------------------------------------------------------------
# Blocks and splits
# --------------------------------------------------------------------------------------------------
def time_blocks(run_lengths, block_volumes: int) -> list[np.ndarray]:
    """Row indices (into the concatenated kept volumes) of consecutive blocks within each run.

    A run shorter than one block is one block; the last block of a run may be shorter.
    """
    blocks, offset = [], 0
    for n in np.asarray(run_lengths, int):
        blocks += [np.arange(s, min(s + block_volumes, offset + n)) for s in range(offset, offset + n, block_volumes)]
        offset += n
    return blocks


def count_balanced_splits(n_blocks: int) -> int:
    """Number of unordered splits of ``n_blocks`` blocks into halves of equal block counts (+-1)."""
    if n_blocks < 2:
        return 0
    half = n_blocks // 2
    return math.comb(n_blocks, half) // (2 if n_blocks % 2 == 0 else 1)


def _canonical(in_a: np.ndarray) -> np.ndarray:
    """The one of (A, B) / (B, A) used: A is the smaller half, or holds block 0 when both are equal."""
    n_a = int(in_a.sum())
    if n_a * 2 > len(in_a) or (n_a * 2 == len(in_a) and not in_a[0]):
        return ~in_a
    return in_a


def balanced_block_splits(n_blocks: int, max_splits: int, random_seed: int = 0) -> tuple[np.ndarray, bool]:
    """The block splits used: every one when there are at most ``max_splits``, else a random sample.

    Returns
    -------
    in_a : ndarray of bool, shape (n_splits, n_blocks)
        True where a block belongs to half A (the smaller half; with equal halves, the one with block 0).
    enumerated : bool
        True when every split is used (the result then depends on no seed).
    """
    total = count_balanced_splits(n_blocks)
    if total == 0:
        return np.zeros((0, n_blocks), bool), True
    half = n_blocks // 2
    if total <= max_splits:
        from itertools import combinations

        rows = {tuple(_canonical(np.isin(np.arange(n_blocks), c))) for c in combinations(range(n_blocks), half)}
        return np.array(sorted(rows, reverse=True), bool), True
    rng = np.random.default_rng(random_seed)
    seen, rows = set(), []
    while len(rows) < max_splits:
        in_a = np.zeros(n_blocks, bool)
        in_a[rng.choice(n_blocks, half, replace=False)] = True
        key = tuple(_canonical(in_a))
        if key not in seen:
            seen.add(key)
            rows.append(key)
    return np.array(rows, bool), False


def split_rows(blocks: list[np.ndarray], in_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices of half A and half B of one split."""
    a = np.sort(np.concatenate([b for b, x in zip(blocks, in_a) if x]))
    b = np.sort(np.concatenate([b for b, x in zip(blocks, in_a) if not x]))
    return a, b


def first_second_rows(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the first and the second half of the concatenated kept volumes."""
    return np.arange(n_rows // 2), np.arange(n_rows // 2, n_rows)


# --------------------------------------------------------------------------------------------------
# Independent halves: the raw series the denoise step keeps
# --------------------------------------------------------------------------------------------------
def clean_half(raw: RawRuns, rows: np.ndarray) -> np.ndarray:
    """One half denoised on its own: (T_half, C) float32, z-scored per run.

    ``rows`` index the concatenated kept volumes (as ``data_tv``). In each run the operator of
    :func:`tmstarget.denoise.temporal.temporal_operator` is built with every volume outside ``rows`` censored, and
    applied to the raw series; a run whose half is too short for the filter or the confound fit is
    left out (an empty array when no run is left).
    """
    in_half = np.zeros(len(raw.raw_tc), bool)
    in_half[np.asarray(rows, int)] = True
    out, offset = [], 0
    for kept, conf in zip(raw.kept, raw.confounds):
        kept_idx = np.flatnonzero(kept)
        here = in_half[offset: offset + len(kept_idx)]
        raw_run = raw.raw_tc[offset: offset + len(kept_idx)]
        offset += len(kept_idx)
        half_kept = np.zeros_like(kept)
        half_kept[kept_idx[here]] = True
        if half_kept.sum() <= conf.shape[1] + 2:
            continue
        try:
            op_kt, _ = temporal_operator(len(kept), half_kept, raw.t_r, raw.strategy, conf)
        except ShortRun:
            continue
        if op_kt.shape[0] <= conf.shape[1] + 2:
            continue
        # columns of censored volumes are zero: only the run's kept volumes are needed
        cleaned = op_kt[:, kept_idx].astype(np.float32) @ raw_run
        out.append(zscore_columns(cleaned))
    return np.concatenate(out) if out else np.zeros((0, raw.raw_tc.shape[1]), np.float32)


# --------------------------------------------------------------------------------------------------
# Split-half targets and the figure
# --------------------------------------------------------------------------------------------------
def split_targets(target_of_rows: Callable[[np.ndarray], np.ndarray], halves: list) -> np.ndarray:
    """Targets of each split's two halves, (n, 2, 3) MNI RAS mm (NaN where a half gave no target).

    ``target_of_rows(rows)`` returns the (3,) target of one half (NaN when none); ``halves`` holds the
    (rows_a, rows_b) of each split.
    """
    out = np.full((len(halves), 2, 3), np.nan)
    for k, (a, b) in enumerate(halves):
        out[k, 0], out[k, 1] = target_of_rows(a), target_of_rows(b)
    return out


def split_distances(pairs_mni_ras_mm: np.ndarray) -> dict:
    """Median, 10th and 90th percentile (mm) of the distances between the two targets of each split."""
    d = np.linalg.norm(pairs_mni_ras_mm[:, 0] - pairs_mni_ras_mm[:, 1], axis=1)
    ok = np.isfinite(d)
    pct = (lambda q: float(np.percentile(d[ok], q)) if ok.any() else None)
    return {"median_distance_mm": pct(50), "p10_distance_mm": pct(10), "p90_distance_mm": pct(90),
            "distances_mm": [float(x) if np.isfinite(x) else None for x in d], "n_failed": int((~ok).sum())}


def plain_words(median_mm: float | None, p10_mm: float | None, p90_mm: float | None, n_splits: int,
                minutes: float, independent: bool, limit_mm: float) -> str:
    """The reliability in words that claim only what was measured, plus :data:`BETWEEN_SESSION_WORDS`."""
    scan = f"this {minutes:.1f}-minute scan"
    if median_mm is None:
        return (f"The halves of {scan} did not both give a target, so its reliability is unknown; treat the "
                "target as unconfirmed.")
    how = ", each half cleaned on its own," if independent else " (cleaned together)"
    words = (f"Targets from two halves of {scan}{how} lie a median {median_mm:.1f} mm apart "
             f"(10th-90th percentile {p10_mm:.1f}-{p90_mm:.1f} mm, {n_splits} splits)")
    words += "." if median_mm <= limit_mm else f", more than the {limit_mm:g} mm accepted."
    return words + " " + BETWEEN_SESSION_WORDS


def reliability_record(independent: dict | None, joint: dict, n_splits: int, enumerated: bool, n_blocks: int,
                       block_length_s: float, minutes: float, limit_mm: float, note: str | None = None) -> dict:
    """``uncertainty.reliability``: the headline (independent halves when computed, else joint) and both.

    ``independent`` and ``joint`` are :func:`split_distances` records plus ``first_vs_second_half_mm``.
    ``reproducible`` is median <= ``limit_mm``.
    """
    head = independent if independent is not None else joint
    median = head["median_distance_mm"]
    short = ("median_distance_mm", "p10_distance_mm", "p90_distance_mm", "first_vs_second_half_mm", "n_failed")
    rec = {
        "measure": "split-half, independent halves" if independent is not None else "split-half, joint halves",
        "halves_cleaned": "independently" if independent is not None else "jointly",
        "median_distance_mm": median, "p10_distance_mm": head["p10_distance_mm"],
        "p90_distance_mm": head["p90_distance_mm"],
        "first_vs_second_half_mm": head.get("first_vs_second_half_mm"),
        "n_splits": int(n_splits), "splits_enumerated": bool(enumerated), "n_blocks": int(n_blocks),
        "block_length_s": float(block_length_s), "minutes": round(float(minutes), 2),
        "limit_mm": float(limit_mm),
        "reproducible": None if median is None else bool(median <= limit_mm),
        "independent_halves": None if independent is None else {k: independent.get(k) for k in short},
        "joint_halves": {k: joint.get(k) for k in short},
        "plain_words": plain_words(median, head["p10_distance_mm"], head["p90_distance_mm"], n_splits, minutes,
                                   independent is not None, limit_mm),
        "between_session_note": BETWEEN_SESSION_WORDS,
    }
    if note:
        rec["note"] = note
    return rec


def split_half_study(joint_target_of_rows: Callable, independent_target_of_rows: Callable | None, run_lengths,
                     t_r: float, block_length_s: float, max_splits: int, random_seed: int, limit_mm: float,
                     note: str | None = None) -> dict:
    """Targets of every block split (or ``max_splits`` drawn ones) and of the first/second half, both ways.

    Parameters
    ----------
    joint_target_of_rows, independent_target_of_rows : callable
        ``f(rows) -> (3,)`` MNI RAS mm target of the half made of those rows of the concatenated kept
        volumes (NaN when none), from the jointly denoised series and from the half denoised on its own
        (None: not available; the headline is then the joint figure and ``note`` says why).
    run_lengths : kept volumes per run; ``t_r`` seconds.

    Returns
    -------
    dict
        ``reliability`` (:func:`reliability_record`), ``headline`` (the :func:`split_distances` record
        of the headline halves), ``pairs`` (n, 2, 3) and ``first_second`` (2, 3) targets of the headline
        halves, ``joint_pairs``.
    """
    run_lengths = np.asarray(run_lengths, int)
    blocks = time_blocks(run_lengths, max(1, int(round(block_length_s / t_r))))
    in_a, enumerated = balanced_block_splits(len(blocks), int(max_splits), int(random_seed))
    halves = [first_second_rows(int(run_lengths.sum()))] + [split_rows(blocks, x) for x in in_a]

    def study(target_of_rows):
        pairs = split_targets(target_of_rows, halves)
        rec = split_distances(pairs[1:])
        d = float(np.linalg.norm(pairs[0, 0] - pairs[0, 1]))
        rec["first_vs_second_half_mm"] = d if np.isfinite(d) else None
        return rec, pairs

    joint, joint_pairs = study(joint_target_of_rows)
    independent, pairs = (None, joint_pairs) if independent_target_of_rows is None else \
        study(independent_target_of_rows)
    minutes = float(run_lengths.sum()) * t_r / 60.0
    rel = reliability_record(independent, joint, len(in_a), enumerated, len(blocks), block_length_s, minutes,
                             limit_mm, note)
    head = independent if independent is not None else joint
    return {"reliability": rel, "headline": head, "pairs": pairs[1:], "first_second": pairs[0],
            "joint_pairs": joint_pairs[1:]}
