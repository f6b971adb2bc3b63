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

import json
import logging
import math
import os
import re
import zlib
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import linalg
from scipy import signal as sp_signal
from scipy.interpolate import CubicSpline

from tmstarget.errors import InputError, QCFailure
from tmstarget.io.files import atomic_path, load_img_checked, write_json
from tmstarget.io.nifti import (load_masked_bold, open_bold_4d, read_t_r, same_grid,  # noqa: F401 (read_t_r: denoise API)
                                 voxel_size_mm)
from tmstarget.bids.preflight import check_confounds_rows

log = logging.getLogger(__name__)

#: Keys of a denoising strategy, their default values (used for keys a strategy leaves out) and
#: meanings. ``None`` switches a filter or a step off.
STRATEGY_DEFAULTS: dict = {
    "motion": 24,              # 0, 6 (trans/rot), 12 (+ derivatives), 24 (+ squares of both)
    "wm_csf": True,            # mean white-matter and CSF signals
    "global_signal": True,     # mean global signal (GSR)
    "derivatives": False,      # also the temporal derivatives of the WM/CSF/global regressors
    "acompcor": 0,             # number of anatomical CompCor components (a_comp_cor_XX)
    "high_pass_hz": 0.01,      # Butterworth high-pass cut-off (Hz) or None
    "low_pass_hz": 0.1,        # Butterworth low-pass cut-off (Hz) or None
    "fd_threshold_mm": 0.5,    # censor volumes with framewise displacement above this, or None
    "censor_before": 0,        # also censor this many volumes before each high-motion volume
    "censor_after": 0,         # ... and this many after it
    "smoothing_fwhm_mm": 4.0,  # Gaussian FWHM in mm, or None / 0 for no smoothing (docs/reliability.md)
    "detrend": True,           # remove a linear trend before filtering
}

DEFAULT_STRATEGIES: dict[str, dict] = {
    "fox": dict(STRATEGY_DEFAULTS),
    "acompcor": {**STRATEGY_DEFAULTS, "wm_csf": False, "global_signal": False, "acompcor": 5},
}

MOTION_BASE = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
BUTTERWORTH_ORDER = 5
_VOXEL_CHUNK = 32768         # voxels per matrix product


# ----------------------------------------------------------------------------- strategy


def validate_strategy(strategy: dict, name: str = "strategy") -> dict:
    """Check a strategy dict and return it completed with :data:`STRATEGY_DEFAULTS`.

    Parameters
    ----------
    strategy : dict
        Keys of :data:`STRATEGY_DEFAULTS` (missing keys take the default).
    name : str
        Strategy name, used in error messages (``denoising.strategies.<name>``).

    Returns
    -------
    dict
        All keys of :data:`STRATEGY_DEFAULTS`, with validated values.

    Raises
    ------
    InputError
        Unknown key, wrong type or inconsistent filter band.
    """
    where = f"denoising.strategies.{name}"
    if not isinstance(strategy, dict):
        raise InputError(f"{where} must be a mapping of settings, got {type(strategy).__name__}")
    unknown = sorted(set(strategy) - set(STRATEGY_DEFAULTS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(STRATEGY_DEFAULTS)}")
    s = {**STRATEGY_DEFAULTS, **strategy}

    def fail(key, what):
        raise InputError(f"{where}.{key} = {s[key]!r}: {what}; fix it in the config file")

    if s["motion"] not in (0, 6, 12, 24) or isinstance(s["motion"], bool):
        fail("motion", "must be 0, 6, 12 or 24")
    for key in ("wm_csf", "global_signal", "derivatives", "detrend"):
        if not isinstance(s[key], bool):
            fail(key, "must be true or false")
    for key in ("acompcor", "censor_before", "censor_after"):
        if isinstance(s[key], bool) or not isinstance(s[key], (int, np.integer)) or s[key] < 0:
            fail(key, "must be an integer >= 0")
    for key in ("high_pass_hz", "low_pass_hz", "fd_threshold_mm", "smoothing_fwhm_mm"):
        v = s[key]
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            fail(key, "must be a number or null")
        if v < 0 or (v == 0 and key in ("low_pass_hz", "fd_threshold_mm")):
            fail(key, "must be positive (or null to switch it off)")
        s[key] = float(v)
    if s["high_pass_hz"] == 0:
        s["high_pass_hz"] = None
    if s["smoothing_fwhm_mm"] == 0:
        s["smoothing_fwhm_mm"] = None
    if s["high_pass_hz"] is not None and s["low_pass_hz"] is not None and s["high_pass_hz"] >= s["low_pass_hz"]:
        fail("high_pass_hz", f"must be below low_pass_hz ({s['low_pass_hz']})")
    s["motion"] = int(s["motion"])
    for key in ("acompcor", "censor_before", "censor_after"):
        s[key] = int(s[key])
    return s


# ----------------------------------------------------------------------------- confounds and censoring


def read_confounds(path: str | os.PathLike) -> pd.DataFrame:
    """Read an fMRIPrep ``*_desc-confounds_timeseries.tsv`` (``n/a`` becomes NaN)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: confounds file not found; it must sit beside the BOLD run "
                         "(fMRIPrep's *_desc-confounds_timeseries.tsv)")
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A", "NaN", "nan", ""], keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read this confounds table ({exc}); regenerate it") from None
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"{path.name}: non-numeric values in column(s) {bad[:5]}; only numbers and "
                         "'n/a' are allowed in a confounds table")
    return df


def _column(df: pd.DataFrame, name: str, path, strategy_name: str) -> np.ndarray:
    """One confound column; derived fMRIPrep columns are computed from their base when absent."""
    if name in df.columns:
        return df[name].to_numpy(dtype=np.float64)
    for suffix, fn in (("_derivative1_power2", lambda x: _derivative(x) ** 2),
                       ("_derivative1", _derivative), ("_power2", lambda x: x ** 2)):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in df.columns:
            log.info("%s: column %s absent, computed from %s", Path(path).name, name, base)
            return fn(df[base].to_numpy(dtype=np.float64))
    raise InputError(
        f"{Path(path).name}: confound column '{name}' needed by denoising strategy '{strategy_name}' is "
        f"missing; use a confounds file with fMRIPrep column names or choose another strategy "
        f"(denoising.strategy)"
    )


def _derivative(x: np.ndarray) -> np.ndarray:
    """Backward difference as fMRIPrep computes it (first value undefined: NaN)."""
    d = np.empty_like(x)
    d[0] = np.nan
    d[1:] = np.diff(x)
    return d


def confound_column_names(strategy: dict, columns) -> list[str]:
    """Names of the confound regressors a (validated) strategy selects.

    Parameters
    ----------
    strategy : dict
        Output of :func:`validate_strategy`.
    columns : sequence of str
        Columns of the confounds table (used to pick the ``a_comp_cor_XX`` components).
    """
    names: list[str] = []
    motion = strategy["motion"]
    if motion:
        names += list(MOTION_BASE)
        if motion in (12, 24):
            names += [f"{m}_derivative1" for m in MOTION_BASE]
        if motion == 24:
            names += [f"{m}_power2" for m in MOTION_BASE] + [f"{m}_derivative1_power2" for m in MOTION_BASE]
    tissue = (["white_matter", "csf"] if strategy["wm_csf"] else []) + (["global_signal"] if strategy["global_signal"] else [])
    names += tissue
    if strategy["derivatives"]:
        names += [f"{t}_derivative1" for t in tissue]
    n_comp = strategy["acompcor"]
    if n_comp:
        comp = sorted((c for c in columns if re.fullmatch(r"a_comp_cor_\d+", c)), key=lambda c: int(c.rsplit("_", 1)[1]))
        names += comp[:n_comp] if len(comp) >= n_comp else [f"a_comp_cor_{i:02d}" for i in range(n_comp)]
    return names


def _acompcor_combined(confounds_path: Path, n_comp: int) -> list[str] | None:
    """The first ``n_comp`` aCompCor columns of the combined WM+CSF mask, from fMRIPrep's JSON sidecar."""
    sidecar = confounds_path.with_name(confounds_path.name.replace(".tsv", ".json"))
    if not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    comb = [k for k, v in meta.items() if k.startswith("a_comp_cor_") and isinstance(v, dict)
            and str(v.get("Mask", "")).lower() == "combined" and v.get("Retained", True)]
    comb.sort(key=lambda c: int(c.rsplit("_", 1)[1]))
    return comb[:n_comp] if len(comb) >= n_comp else None


def confound_matrix(df: pd.DataFrame, strategy: dict, path, strategy_name: str = "strategy") -> tuple[np.ndarray, list[str]]:
    """Confound regressors (T, k) float64 selected by ``strategy``.

    The undefined first row of a derivative (``*_derivative1*``: NaN) takes the value of the second
    row, as nilearn's ``load_confounds`` does (``nilearn.interfaces.fmriprep.load_confounds_utils.
    prepare_output``, nilearn 0.10-0.13). A column-mean fill instead puts a step at volume 0 that
    detrending and the band-pass filter spread through the run. Any other NaN (not written by
    fMRIPrep) takes the column mean.
    """
    names = confound_column_names(strategy, df.columns)
    if strategy["acompcor"]:
        combined = _acompcor_combined(Path(path), strategy["acompcor"])
        if combined:
            names = [n for n in names if not n.startswith("a_comp_cor_")] + combined
        have = [n for n in names if n.startswith("a_comp_cor_") and n in df.columns]
        if len(have) < strategy["acompcor"]:
            raise InputError(
                f"{Path(path).name}: strategy '{strategy_name}' asks for {strategy['acompcor']} aCompCor "
                f"components but the table has {len(have)} a_comp_cor_XX columns; lower "
                f"denoising.strategies.{strategy_name}.acompcor"
            )
    if not names:
        return np.zeros((len(df), 0)), []
    cols = []
    for n in names:
        x = _column(df, n, path, strategy_name)
        finite = np.isfinite(x)
        if not finite.any():
            raise InputError(f"{Path(path).name}: confound column '{n}' has no numeric value; regenerate the confounds")
        x = fill_undefined_first_row(x)
        finite = np.isfinite(x)
        x = np.where(finite, x, x[finite].mean())
        cols.append(x)
    return np.column_stack(cols), names


def fill_undefined_first_row(x: np.ndarray) -> np.ndarray:
    """A copy of a confound column whose NaN first value is replaced by the second (nilearn's rule)."""
    x = np.array(x, dtype=np.float64)
    if len(x) > 1 and np.isnan(x[0]):
        x[0] = x[1]
    return x


def dummy_volume_count(df: pd.DataFrame) -> tuple[int, np.ndarray]:
    """Number of leading non-steady-state volumes and a (T,) bool of all flagged volumes."""
    cols = [c for c in df.columns if c.startswith("non_steady_state_outlier")]
    flagged = np.zeros(len(df), bool)
    for c in cols:
        flagged |= np.nan_to_num(df[c].to_numpy(dtype=np.float64)) > 0
    n_lead = int(np.argmin(flagged)) if not flagged.all() else len(flagged)
    return n_lead, flagged


def censoring_mask(fd_mm: np.ndarray, fd_threshold_mm: float | None, censor_before: int = 0,
                   censor_after: int = 0) -> np.ndarray:
    """Volumes to censor from framewise displacement.

    Parameters
    ----------
    fd_mm : ndarray, shape (T,)
        Framewise displacement in mm (NaN, e.g. the first volume, counts as 0).
    fd_threshold_mm : float or None
        Censor volumes with FD strictly above this; None censors nothing.
    censor_before, censor_after : int
        Also censor this many volumes before / after each high-motion volume.

    Returns
    -------
    ndarray of bool, shape (T,)
        True for censored volumes.
    """
    fd_mm = np.nan_to_num(np.asarray(fd_mm, dtype=np.float64))
    censored = np.zeros(fd_mm.shape, bool)
    if fd_threshold_mm is None:
        return censored
    high = np.flatnonzero(fd_mm > fd_threshold_mm)
    for i in high:
        censored[max(0, i - censor_before): i + censor_after + 1] = True
    return censored


# ----------------------------------------------------------------------------- the temporal operator


def butterworth_sos(t_r: float, high_pass_hz: float | None, low_pass_hz: float | None, where: str = "strategy"):
    """Second-order sections of the order-5 Butterworth filter (None when no filtering)."""
    if high_pass_hz is None and low_pass_hz is None:
        return None
    nyquist_hz = 0.5 / t_r
    for key, f in (("high_pass_hz", high_pass_hz), ("low_pass_hz", low_pass_hz)):
        if f is not None and f >= nyquist_hz:
            raise InputError(
                f"{where}.{key} = {f} Hz is at or above the Nyquist frequency ({nyquist_hz:.4g} Hz) of "
                f"TR {t_r:g} s; set it below {nyquist_hz:.4g} Hz or to null"
            )
    if high_pass_hz is not None and low_pass_hz is not None:
        return sp_signal.butter(BUTTERWORTH_ORDER, [high_pass_hz, low_pass_hz], btype="band", output="sos", fs=1 / t_r)
    if high_pass_hz is not None:
        return sp_signal.butter(BUTTERWORTH_ORDER, high_pass_hz, btype="high", output="sos", fs=1 / t_r)
    return sp_signal.butter(BUTTERWORTH_ORDER, low_pass_hz, btype="low", output="sos", fs=1 / t_r)


def _filter_padlen(sos) -> int:
    """Default padding length of :func:`scipy.signal.sosfiltfilt` (it needs more samples than this)."""
    n_sections = sos.shape[0]
    return 3 * (2 * n_sections + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))


def temporal_operator(n_volumes: int, kept: np.ndarray, t_r: float, strategy: dict,
                      confounds_tk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linear map from a raw run to its cleaned kept volumes.

    Parameters
    ----------
    n_volumes : int
        T, volumes of the run after dropping the leading dummy volumes.
    kept : ndarray of bool, shape (T,)
        False for censored volumes.
    t_r : float
        Repetition time in seconds.
    strategy : dict
        Validated strategy (filter band and ``detrend``).
    confounds_tk : ndarray, shape (T, k)
        Confound regressors (no NaN).

    Returns
    -------
    operator_kt : ndarray float64, shape (T_out, T)
        ``cleaned = operator_kt @ raw_tv`` does interpolation of censored volumes, detrending,
        filtering, censoring and confound regression (before z-scoring).
    out_volumes : ndarray int, shape (T_out,)
        Index (0..T-1) of the volume each output row belongs to.
    """
    kept = np.asarray(kept, bool)
    kept_idx = np.flatnonzero(kept)
    eye = np.eye(n_volumes)
    sos = butterworth_sos(t_r, strategy["high_pass_hz"], strategy["low_pass_hz"])
    if sos is not None and not kept.all():
        # interpolate-then-censor (as nilearn.signal.clean with extrapolate=False): censored
        # volumes before the first / after the last kept volume are dropped, inner ones are
        # replaced by a cubic spline through the kept volumes
        first, last = kept_idx[0], kept_idx[-1]
        seg = np.arange(first, last + 1)
        frame_times_s = np.arange(n_volumes) * t_r
        op = eye[seg].copy()
        inner_censored = seg[~kept[seg]]
        if inner_censored.size:
            spline = CubicSpline(frame_times_s[kept_idx], eye[kept_idx], extrapolate=False)
            op[inner_censored - first] = spline(frame_times_s[inner_censored])
        keep_after = kept[seg]
        seg_volumes = seg
    elif sos is None:
        op = eye[kept_idx]         # no filter: censor directly
        keep_after = None
        seg_volumes = kept_idx
    else:
        op = eye
        keep_after = None
        seg_volumes = np.arange(n_volumes)
    if strategy["detrend"]:
        n = op.shape[0]
        t = np.arange(n, dtype=np.float64)
        t -= t.mean()
        t /= np.sqrt((t ** 2).sum()) if n > 1 else 1.0
        op = op - op.mean(axis=0)
        op = op - np.outer(t, t @ op)
    if sos is not None:
        padlen = _filter_padlen(sos)
        if op.shape[0] <= padlen:
            raise _ShortRun(op.shape[0], padlen)
        op = sp_signal.sosfiltfilt(sos, op, axis=0, padtype="odd")
    if keep_after is not None:
        op = op[keep_after]
        out_volumes = seg_volumes[keep_after]
    else:
        out_volumes = seg_volumes
    if confounds_tk.shape[1]:
        x = op @ confounds_tk
        x = x - x.mean(axis=0)
        sd = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.ones(x.shape[1])
        sd[sd < np.finfo(np.float64).eps] = 1.0
        x /= sd
        q, r, _ = linalg.qr(x, mode="economic", pivoting=True)
        q = q[:, np.abs(np.diag(r)) > np.finfo(np.float64).eps * 100.0]
        op = op - q @ (q.T @ op)
    return op, out_volumes


class ShortRun(Exception):
    """Too few volumes between the first and last kept volume for the band-pass filter."""

    def __init__(self, n, padlen):
        super().__init__(f"{n} volumes; the filter needs more than {padlen}")
        self.n, self.padlen = n, padlen


_ShortRun = ShortRun


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


def zscore_columns(data_tv: np.ndarray) -> np.ndarray:
    """Z-score each column over time in place (ddof=1; constant columns become 0)."""
    for sl in _chunks(data_tv.shape[1], _VOXEL_CHUNK):
        x = data_tv[:, sl].astype(np.float64)
        x -= x.mean(axis=0)
        sd = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.ones(x.shape[1])
        sd[sd < 1e-8 * max(1.0, float(np.abs(x).max(initial=0.0)))] = np.inf
        data_tv[:, sl] = x / sd
    return data_tv


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield slice(a, min(n, a + size))


# ----------------------------------------------------------------------------- runs


@dataclass
class DenoiseResult:
    """Denoised, z-scored and concatenated runs.

    Attributes
    ----------
    data_tv : ndarray float32, shape (T, V)
        Kept volumes of all runs (each run z-scored), voxels of ``mask_img`` in C order.
    mask_img : Nifti1Image
        3D uint8 analysis mask (intersection of the run masks).
    t_r : float
        Seconds.
    run_lengths : ndarray int, shape (n_runs,)
        Volumes kept per run (runs left out contribute 0).
    tsnr_v : ndarray float32, shape (V,)
        Temporal SNR before denoising (mean / std after linear detrending), averaged over runs.
    qc : dict
        The denoising QC record (format of ``*_desc-denoise_qc.json``).
    """

    data_tv: np.ndarray
    mask_img: nib.Nifti1Image
    t_r: float
    run_lengths: np.ndarray
    tsnr_v: np.ndarray
    qc: dict = field(default_factory=dict)
    halves: object = None      # reliability.RawRuns when asked for (halves_mask_3d)

    @property
    def affine(self) -> np.ndarray:
        return self.mask_img.affine

    @property
    def warnings(self) -> list[str]:
        return list(self.qc.get("warnings", []))


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
    except _ShortRun as exc:
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
    for sl in _chunks(raw_tv.shape[1], _VOXEL_CHUNK):
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
        for sl in _chunks(len(rows), 32):
            vols = (raw_tv[rows[sl]][:, sub_cols].astype(np.float64) - mean_v).astype(np.float32)
            out[sl, keep] = smooth_masked(vols, mask_3d & in_box, vox_mm, fwhm_mm)[:, pos]
    return out


def denoise_runs(runs: list[dict], strategy: dict, min_retained_minutes: float = 5.0,
                 warn_retained_minutes: float = 8.0, strategy_name: str = "strategy",
                 halves_mask_3d: np.ndarray | None = None) -> DenoiseResult:
    """Denoise one or more runs of one subject and concatenate them.

    Parameters
    ----------
    runs : list of dict
        Each with ``bold`` (4D template-space BOLD), ``mask`` (its brain mask), ``confounds``
        (fMRIPrep confounds TSV) and optionally ``t_r`` (seconds); other keys are ignored.
    strategy : dict
        Denoising strategy (keys of :data:`STRATEGY_DEFAULTS`).
    min_retained_minutes : float
        Below this many minutes kept in total, :class:`QCFailure`.
    warn_retained_minutes : float
        Below this, a warning is recorded in the QC.
    strategy_name : str
        Name used in messages and in the QC record.
    halves_mask_3d : ndarray bool, optional
        Voxels (e.g. seed and search region, on the grid of the runs) whose raw series are kept in
        ``DenoiseResult.halves`` (:class:`tmstarget.target.reliability.RawRuns`) so that split halves can be
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
        from tmstarget.target.reliability import RawRuns

        kept_runs = [p for p in used if p.operator_kt is not None]
        halves = RawRuns(np.concatenate([p.raw_tc for p in kept_runs]), raw_columns,
                         [p.kept.copy() for p in kept_runs], [p.confounds_tk for p in kept_runs], t_r, strat)
    return DenoiseResult(data_tv, mask_img, t_r, run_lengths, tsnr_v, qc, halves)


# ----------------------------------------------------------------------------- adapter


def save_denoised_npz(result: DenoiseResult, path: str | os.PathLike) -> Path:
    """Write the denoised time series in the ``work/*_denoised.npz`` format (atomic, uncompressed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f, data_tv=np.ascontiguousarray(result.data_tv, dtype=np.float32),
                mask=np.asarray(result.mask_img.dataobj).astype(np.uint8),
                affine=np.asarray(result.mask_img.affine, dtype=np.float64),
                t_r=np.float64(result.t_r), run_lengths=np.asarray(result.run_lengths, dtype=np.int64),
                tsnr_v=np.asarray(result.tsnr_v, dtype=np.float32),
            )
    return Path(path)


def load_denoised_npz(path: str | os.PathLike) -> dict:
    """Read a ``*_denoised.npz``; returns its arrays plus ``mask_img`` (uint8 Nifti1Image)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: denoised time series not found; run the denoise step first")
    try:
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, zlib.error) as exc:
        raise InputError(f"{path.name}: cannot read ({exc}); delete it and run the denoise step again") from None
    missing = {"data_tv", "mask", "affine", "t_r", "tsnr_v"} - set(out)
    if missing:
        raise InputError(f"{path.name}: missing arrays {sorted(missing)}; delete it and run the denoise step again")
    out["mask_img"] = nib.Nifti1Image(out["mask"].astype(np.uint8), out["affine"])
    out["t_r"] = float(out["t_r"])
    return out


def run_denoise(runs: list[dict], strategy: dict, out_npz, out_qc_json, min_retained_minutes: float = 5.0,
                warn_retained_minutes: float = 8.0, strategy_name: str = "fox", out_halves_npz=None,
                halves_mask_paths=()) -> DenoiseResult:
    """Workflow adapter: denoise the runs of one unit, write the npz and the QC JSON.

    With ``out_halves_npz``, also the raw series of the voxels of ``halves_mask_paths`` (seed and
    search masks) for independently denoised split halves (:mod:`tmstarget.target.reliability`).
    Writes nothing when denoising fails (:class:`InputError`, :class:`QCFailure`).
    """
    halves_mask = None
    for mpath in halves_mask_paths if out_halves_npz else ():
        m = np.asarray(load_img_checked(mpath, ndim=3, what="seed/search mask").dataobj) > 0
        halves_mask = m if halves_mask is None else (halves_mask | m)
    result = denoise_runs(runs, strategy, min_retained_minutes, warn_retained_minutes, strategy_name,
                          halves_mask_3d=halves_mask)
    if out_halves_npz:
        from tmstarget.target.reliability import save_raw_runs

        save_raw_runs(result.halves, out_halves_npz)
    save_denoised_npz(result, out_npz)
    qc = dict(result.qc)
    qc["status"] = "warn" if qc["warnings"] else "pass"
    write_json(qc, out_qc_json)
    return result
