"""Denoising of preprocessed resting-state BOLD: confounds by strategy, censoring, filtering,
nuisance regression, smoothing and per-run z-scoring.

Inputs are fMRIPrep-layout files (the built-in preprocessing writes the same): a 4D BOLD in template
space, its brain mask and ``*_desc-confounds_timeseries.tsv``.

Order of operations for one run (the temporal part mirrors :func:`nilearn.signal.clean`, and the
result matches it to float32 precision):

1. drop the leading non-steady-state volumes (``non_steady_state_outlier_XX`` columns);
2. censoring mask: FD > ``fd_threshold_mm`` (plus ``censor_before``/``censor_after`` neighbours)
   and any later ``non_steady_state_outlier`` volume;
3. interpolate-then-censor: censored volumes inside the run are replaced by a cubic spline through
   the kept volumes (censored volumes at the start or end are dropped), so the filter never sees a
   motion spike; then linear detrend, Butterworth band-pass (order 5, zero phase), and removal of the
   censored volumes;
4. the confound regressors go through exactly the same interpolation, detrending, filtering and
   censoring before they are regressed out (Lindquist et al. 2019: regressing unfiltered confounds
   from filtered data re-introduces noise in the stop band);
5. spatial smoothing (Gaussian, FWHM in mm converted with the voxel size of the image), restricted to
   the brain mask (normalised convolution);
6. z-score each voxel over time (ddof=1). Runs are then concatenated along time.

Steps 1-4 are linear and identical for every voxel, so they are one matrix ``L`` of shape
(T kept, T) built once per run from the identity; the whole run is then cleaned by one BLAS matrix
product per voxel chunk (float32), which is what makes this fast. Smoothing (a spatial linear
operator) commutes with the temporal operator ``L``, so smoothing after ``L`` gives the same result
as smoothing the raw images first, up to the mask border; it is done after ``L`` because then only
the kept volumes are smoothed and no out-of-brain intensity is blurred into the brain. It must come
before the z-scoring, which is not linear.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.bids.preflight import check_confounds_rows
from tmstarget.denoise.arrays import DenoiseResult, RawRuns, save_denoised_npz, save_raw_runs
from tmstarget.denoise.confounds import censoring_mask, confound_matrix, dummy_volume_count
from tmstarget.io.tables import read_confounds
from tmstarget.denoise.smooth import raw_smoothed_columns, smooth_masked
from tmstarget.denoise.strategy import denoising_default, validate_strategy
from tmstarget.denoise.temporal import (VOXEL_CHUNK, ShortRun, butterworth_sos, chunks, temporal_operator,
                                        zscore_columns)
from tmstarget.errors import InputError, QCFailure
from tmstarget.io.files import write_json
from tmstarget.io.nifti import load_img_checked
from tmstarget.io.nifti import load_masked_bold, open_bold_4d, read_t_r, same_grid, voxel_size_mm

log = logging.getLogger(__name__)


@dataclass
class _RunPlan:
    bold: Path
    img: nib.Nifti1Image
    confounds_path: Path
    volumes_total: int
    dummy: int
    kept: np.ndarray           # (T,) bool after dummies
    confounds_tk: np.ndarray
    confound_names: list
    fd_mm: np.ndarray          # (volumes_total,)
    operator_kt: np.ndarray | None = None
    out_volumes: np.ndarray | None = None
    note: str | None = None
    constant_volumes: list = field(default_factory=list)   # file indices of all-zero / constant volumes
    raw_tc: np.ndarray | None = None   # centred, smoothed, not cleaned kept volumes of some columns


def common_mask(mask_paths, bold_imgs) -> nib.Nifti1Image:
    """Intersection of the run brain masks (all on the grid of the BOLD runs) as a uint8 image."""
    mask = None
    ref = None
    for mpath, bimg in zip(mask_paths, bold_imgs):
        mimg = load_img_checked(mpath, ndim=3, what="brain mask")
        if not same_grid(mimg, bimg):
            raise InputError(
                f"{Path(mpath).name} (grid {mimg.shape[:3]}) is not on the grid of "
                f"{Path(bimg.get_filename()).name} (grid {bimg.shape[:3]}); use the brain mask written "
                "with this BOLD run (same space and resolution)"
            )
        if ref is not None and not same_grid(mimg, ref):
            raise InputError(
                f"{Path(mpath).name} is on a different grid from the first run's mask; all runs of one "
                "target must be in the same space and resolution (e.g. res-2)"
            )
        if ref is None:
            ref = mimg
        m = np.asarray(mimg.dataobj) > 0
        mask = m if mask is None else (mask & m)
    if not mask.any():
        raise InputError(f"the brain masks {[Path(p).name for p in mask_paths]} have no voxel in common; "
                         "check that all runs are in the same template space")
    return nib.Nifti1Image(mask.astype(np.uint8), ref.affine)


def _plan_run(run: dict, strategy: dict, strategy_name: str, t_r: float) -> _RunPlan:
    bold = Path(run["bold"])
    img = open_bold_4d(bold)
    n_total = img.shape[3]
    conf_path = Path(run["confounds"])
    df = read_confounds(conf_path)
    check_confounds_rows(len(df), conf_path, bold, n_total)
    dummy, flagged = dummy_volume_count(df)
    if "framewise_displacement" in df.columns:
        fd_mm = np.nan_to_num(df["framewise_displacement"].to_numpy(dtype=np.float64))
    elif strategy["fd_threshold_mm"] is not None:
        raise InputError(f"{conf_path.name} has no framewise_displacement column; regenerate the confounds "
                         f"or set denoising.strategies.{strategy_name}.fd_threshold_mm to null")
    else:
        fd_mm = np.zeros(n_total)
    x_tk, names = confound_matrix(df, strategy, conf_path, strategy_name)
    censored = censoring_mask(fd_mm, strategy["fd_threshold_mm"], strategy["censor_before"], strategy["censor_after"])
    censored |= flagged
    kept = ~censored[dummy:]
    return _RunPlan(bold, img, conf_path, n_total, dummy, kept, x_tk[dummy:], names, fd_mm)


def _build_operator(plan: _RunPlan, t_r: float, strategy: dict, strategy_name: str) -> None:
    n = plan.volumes_total - plan.dummy
    k = plan.confounds_tk.shape[1]
    n_kept = int(plan.kept.sum())
    if n_kept <= k + 2:
        plan.note = (f"{plan.bold.name}: left out, only {n_kept} volumes kept after censoring for "
                     f"{k} confound regressors")
        return
    try:
        plan.operator_kt, plan.out_volumes = temporal_operator(n, plan.kept, t_r, strategy, plan.confounds_tk)
    except ShortRun as exc:
        plan.note = (f"{plan.bold.name}: left out, {exc.n} volumes between the first and last kept volume "
                     f"are too few for the band-pass filter (needs > {exc.padlen})")
        return
    if plan.operator_kt.shape[0] <= k + 2:
        plan.note = f"{plan.bold.name}: left out, too few volumes kept for {k} confound regressors"
        plan.operator_kt = None


def constant_volumes(raw_tv: np.ndarray) -> np.ndarray:
    """(T,) bool: volumes whose in-mask voxels all have one value (all-zero or constant volumes).

    Such volumes come from a scanner or conversion fault (a dropped volume written as zeros); they
    carry no brain signal and would otherwise lower the tSNR as if the seed had dropped out.
    """
    if raw_tv.shape[1] == 0:
        return np.zeros(raw_tv.shape[0], bool)
    return np.ptp(raw_tv, axis=1) == 0


def _clean_run(plan: _RunPlan, mask_3d: np.ndarray, out_tv: np.ndarray | None, tsnr_sum_v: np.ndarray,
               smoothing_fwhm_mm, vox_mm, t_r: float, strategy: dict, strategy_name: str,
               raw_columns: np.ndarray | None = None) -> np.ndarray:
    """Read one run, add its tSNR to ``tsnr_sum_v`` and return its cleaned, smoothed, z-scored kept
    volumes, written into ``out_tv`` (T_out, V) or, if None, into the leading rows of the array the
    raw data were read into (no second (T, V) buffer).

    All-zero or constant volumes found while reading are censored (the operator is rebuilt, so the
    result can have fewer rows than planned; an empty array when the run is then left out) and
    listed in ``plan.constant_volumes``; the tSNR ignores them. With ``raw_columns`` (column indices),
    ``plan.raw_tc`` gets those columns of the centred, smoothed, not cleaned kept volumes
    (:func:`raw_smoothed_columns`)."""
    raw_tv = load_masked_bold(plan.img, mask_3d, first_volume=plan.dummy)
    n = raw_tv.shape[0]
    constant = constant_volumes(raw_tv)
    if constant.any():
        # all-zero or constant volumes are a scanner or conversion fault, not brain signal: censor them
        plan.constant_volumes = (np.flatnonzero(constant) + plan.dummy).tolist()
        plan.kept = plan.kept & ~constant
        log.warning("%s: %d all-zero or constant volume(s) censored (volumes %s)", plan.bold.name,
                    len(plan.constant_volumes), plan.constant_volumes[:10])
        _build_operator(plan, t_r, strategy, strategy_name)
        if plan.operator_kt is None:
            return raw_tv[:0]
    if raw_columns is not None:
        plan.raw_tc = raw_smoothed_columns(raw_tv, ~constant, plan.out_volumes, raw_columns, mask_3d, vox_mm,
                                           smoothing_fwhm_mm)
    op32 = plan.operator_kt.astype(np.float32)
    n_out = op32.shape[0]
    if out_tv is None:
        out_tv = raw_tv[:n_out]
    else:
        out_tv = out_tv[:n_out]
    good = ~constant
    t = np.arange(n, dtype=np.float64)[good]
    t -= t.mean()
    sst = float(t @ t)
    n_good = int(good.sum())
    for sl in chunks(raw_tv.shape[1], VOXEL_CHUNK):
        x = raw_tv[:, sl].astype(np.float64)
        mean_v = x[good].mean(axis=0)
        x -= mean_v
        xg = x[good] if constant.any() else x
        # tSNR: mean over the std after linear detrending (ddof=2: mean and slope removed)
        slope_v = (t @ xg) / sst
        resid_ss = np.einsum("tv,tv->v", xg, xg) - slope_v ** 2 * sst
        sd_v = np.sqrt(np.maximum(resid_ss, 0.0) / max(n_good - 2, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            tsnr_sum_v[sl] += np.where(sd_v > 0, mean_v / sd_v, 0.0)
        # The operator maps a constant to a constant, which the z-scoring removes, so centred data
        # give the same result with far less float32 rounding. x is a copy: writing rows of the
        # same columns of raw_tv is safe.
        out_tv[:, sl] = op32 @ x.astype(np.float32)
    smooth_masked(out_tv, mask_3d, vox_mm, smoothing_fwhm_mm)
    zscore_columns(out_tv)
    log.info("run %s: %d of %d volumes kept", plan.bold.name, n_out, plan.volumes_total)
    return out_tv


def denoise_runs(runs: list[dict], strategy: dict, min_retained_minutes: float | None = None,
                 warn_retained_minutes: float | None = None, strategy_name: str = "strategy",
                 halves_mask_3d: np.ndarray | None = None) -> DenoiseResult:
    """Denoise one or more runs of one subject and concatenate them.

    Parameters
    ----------
    runs : list of dict
        Each with ``bold`` (4D template-space BOLD), ``mask`` (its brain mask), ``confounds``
        (fMRIPrep confounds TSV) and optionally ``t_r`` (seconds); other keys are ignored.
    strategy : dict
        Denoising strategy (:func:`tmstarget.denoise.strategy.validate_strategy`).
    min_retained_minutes : float, optional
        Below this many minutes kept in total, :class:`QCFailure` (default: ``denoising.min_retained_minutes``
        of ``config/config.yaml``).
    warn_retained_minutes : float, optional
        Below this, a warning is recorded in the QC (default: ``denoising.warn_retained_minutes``).
    strategy_name : str
        Name used in messages and in the QC record.
    halves_mask_3d : ndarray bool, optional
        Voxels (e.g. seed and search region, on the grid of the runs) whose raw series are kept in
        ``DenoiseResult.halves`` (:class:`tmstarget.denoise.arrays.RawRuns`) so that split halves can be
        denoised on their own.

    Returns
    -------
    DenoiseResult

    Raises
    ------
    InputError
        Unreadable or inconsistent inputs (grids, TRs, confound columns, strategy keys).
    QCFailure
        Too little data left after censoring (or everything censored).
    """
    if not runs:
        raise InputError("no BOLD run given to denoise; check the input dataset and the task name")
    strat = validate_strategy(strategy, strategy_name)
    if min_retained_minutes is None:
        min_retained_minutes = denoising_default("min_retained_minutes")
    if warn_retained_minutes is None:
        warn_retained_minutes = denoising_default("warn_retained_minutes")
    t_rs = [read_t_r(r["bold"], r.get("t_r")) for r in runs]
    if max(t_rs) - min(t_rs) > 1e-3:
        raise InputError(
            "runs with different repetition times cannot be concatenated: "
            + ", ".join(f"{Path(r['bold']).name} TR {t:g} s" for r, t in zip(runs, t_rs))
            + "; process them as separate units (group_runs_by) or drop the odd run"
        )
    t_r = float(t_rs[0])
    butterworth_sos(t_r, strat["high_pass_hz"], strat["low_pass_hz"], f"denoising.strategies.{strategy_name}")
    plans = [_plan_run(r, strat, strategy_name, t_r) for r in runs]
    mask_img = common_mask([r["mask"] for r in runs], [p.img for p in plans])
    mask_3d = np.asarray(mask_img.dataobj) > 0
    for p in plans:
        _build_operator(p, t_r, strat, strategy_name)

    warnings: list[str] = [p.note for p in plans if p.note]
    for w in warnings:
        log.warning(w)
    run_lengths = np.array([0 if p.operator_kt is None else p.operator_kt.shape[0] for p in plans], dtype=int)
    volumes_total = int(sum(p.volumes_total for p in plans))
    volumes_kept = int(run_lengths.sum())
    minutes_kept = volumes_kept * t_r / 60.0
    fd_key = f"denoising.strategies.{strategy_name}.fd_threshold_mm"
    if volumes_kept == 0 or minutes_kept < min_retained_minutes:
        raise QCFailure(
            f"{', '.join(p.bold.name for p in plans)}: only {minutes_kept:.1f} min of data kept after "
            f"censoring (FD > {strat['fd_threshold_mm']} mm, {volumes_kept} of {volumes_total} volumes); "
            f"at least {min_retained_minutes:g} min are required for a reliable target. Add resting-state "
            f"runs, or (knowingly) raise {fd_key} or lower denoising.min_retained_minutes"
        )
    if minutes_kept < warn_retained_minutes:
        msg = (f"only {minutes_kept:.1f} min kept after censoring; targets are less reliable below "
               f"{warn_retained_minutes:g} min")
        log.warning(msg)
        warnings.append(msg)

    n_vox = int(mask_3d.sum())
    log.info("denoising %d run(s), %d voxels, strategy %s: %s", len(plans), n_vox, strategy_name, strat)
    data_tv = None
    tsnr_sum_v = np.zeros(n_vox, dtype=np.float64)
    vox_mm = voxel_size_mm(mask_img.affine)
    used = [p for p in plans if p.operator_kt is not None]
    raw_columns = None
    if halves_mask_3d is not None:
        if np.shape(halves_mask_3d) != mask_3d.shape:
            raise InputError(f"the seed/search masks (grid {np.shape(halves_mask_3d)}) are not on the grid of the "
                             f"BOLD runs {mask_3d.shape}; rebuild the masks from this unit's brain mask")
        raw_columns = np.flatnonzero(np.asarray(halves_mask_3d, bool)[mask_3d])
    clean = dict(smoothing_fwhm_mm=strat["smoothing_fwhm_mm"], vox_mm=vox_mm, t_r=t_r, strategy=strat,
                 strategy_name=strategy_name, raw_columns=raw_columns)
    if len(used) == 1:
        data_tv = _clean_run(used[0], mask_3d, None, tsnr_sum_v, **clean)
    else:
        data_tv = np.empty((volumes_kept, n_vox), dtype=np.float32)
        row = 0
        for p in used:
            n_out = p.operator_kt.shape[0]
            row += _clean_run(p, mask_3d, data_tv[row: row + n_out], tsnr_sum_v, **clean).shape[0]
        data_tv = data_tv[:row]
    tsnr_v = (tsnr_sum_v / max(len(used), 1)).astype(np.float32)
    n_constant = sum(len(p.constant_volumes) for p in plans)
    if n_constant:
        # constant volumes were censored while reading: the kept data shrank
        run_lengths = np.array([0 if p.operator_kt is None else p.operator_kt.shape[0] for p in plans], dtype=int)
        volumes_kept = int(run_lengths.sum())
        minutes_kept = volumes_kept * t_r / 60.0
        msg = (f"{n_constant} all-zero or constant volume(s) censored ("
               + ", ".join(f"{p.bold.name}: {p.constant_volumes[:10]}" for p in plans if p.constant_volumes) + ")")
        warnings.append(msg)
        warnings += [p.note for p in plans if p.note and p.note not in warnings]
        if volumes_kept == 0 or minutes_kept < min_retained_minutes:
            raise QCFailure(
                f"{', '.join(p.bold.name for p in plans)}: only {minutes_kept:.1f} min of data kept after censoring "
                f"{n_constant} all-zero or constant volumes and FD > {strat['fd_threshold_mm']} mm "
                f"({volumes_kept} of {volumes_total} volumes); at least {min_retained_minutes:g} min are required "
                "for a reliable target. Check the scanner export of this run (empty volumes), or re-scan"
            )

    qc_runs = []
    for p, n_out in zip(plans, run_lengths):
        kept_idx = set() if p.out_volumes is None else set((p.out_volumes + p.dummy).tolist())
        censored_idx = sorted(set(range(p.dummy, p.volumes_total)) - kept_idx)
        fd_steady = p.fd_mm[p.dummy:]
        qc_runs.append({
            "bold": p.bold.name, "confounds": p.confounds_path.name,
            "volumes_total": p.volumes_total, "dummy_volumes": p.dummy,
            "censored_volumes": censored_idx, "volumes_kept": int(n_out),
            "minutes_kept": round(int(n_out) * t_r / 60.0, 4),
            "framewise_displacement_mm": [round(float(v), 5) for v in p.fd_mm],
            "mean_fd_mm": round(float(fd_steady[1:].mean()) if fd_steady.size > 1 else 0.0, 5),
            "confounds_used": list(p.confound_names),
            "constant_volumes": list(p.constant_volumes),
            "included": p.operator_kt is not None,
        })
    qc = {
        "strategy": strategy_name, "strategy_parameters": strat, "t_r": t_r,
        "runs": qc_runs, "volumes_total": volumes_total, "volumes_kept": volumes_kept,
        "minutes_kept": round(minutes_kept, 4), "fd_threshold_mm": strat["fd_threshold_mm"],
        "min_retained_minutes": min_retained_minutes, "warn_retained_minutes": warn_retained_minutes,
        "voxels": n_vox, "warnings": warnings,
    }
    log.info("kept %d of %d volumes (%.1f min)", volumes_kept, volumes_total, minutes_kept)
    halves = None
    if raw_columns is not None:
        kept_runs = [p for p in used if p.operator_kt is not None]
        halves = RawRuns(np.concatenate([p.raw_tc for p in kept_runs]), raw_columns,
                         [p.kept.copy() for p in kept_runs], [p.confounds_tk for p in kept_runs], t_r, strat)
    return DenoiseResult(data_tv, mask_img, t_r, run_lengths, tsnr_v, qc, halves)


def run_denoise(runs: list[dict], strategy: dict, out_npz, out_qc_json, min_retained_minutes: float | None = None,
                warn_retained_minutes: float | None = None, strategy_name: str | None = None, out_halves_npz=None,
                halves_mask_paths=()) -> DenoiseResult:
    """Workflow adapter: denoise the runs of one unit, write the npz and the QC JSON.

    With ``out_halves_npz``, also the raw series of the voxels of ``halves_mask_paths`` (seed and
    search masks) for independently denoised split halves (:mod:`tmstarget.target.reliability`).
    Writes nothing when denoising fails (:class:`InputError`, :class:`QCFailure`). Settings left
    out take the ``denoising`` defaults of ``config/config.yaml`` (the strategy name: ``strategy``).
    """
    halves_mask = None
    for mpath in halves_mask_paths if out_halves_npz else ():
        m = np.asarray(load_img_checked(mpath, ndim=3, what="seed/search mask").dataobj) > 0
        halves_mask = m if halves_mask is None else (halves_mask | m)
    strategy_name = denoising_default("strategy") if strategy_name is None else strategy_name
    result = denoise_runs(runs, strategy, min_retained_minutes, warn_retained_minutes, strategy_name,
                          halves_mask_3d=halves_mask)
    if out_halves_npz:
        save_raw_runs(result.halves, out_halves_npz)
    save_denoised_npz(result, out_npz)
    qc = dict(result.qc)
    qc["status"] = "warn" if qc["warnings"] else "pass"
    write_json(qc, out_qc_json)
    return result
