"""The temporal part of denoising as one linear operator per run, and the per-run z-scoring.

Interpolation of censored volumes, linear detrending, the Butterworth band-pass and the confound
regression are linear and identical for every voxel, so they are one matrix ``L`` of shape
(T kept, T) built once per run (:func:`temporal_operator`); the run is then cleaned by one BLAS
matrix product per voxel chunk (docs/method.md, denoising).

The result equals ``nilearn.signal.clean(..., sample_mask=, filter="butterworth", runs=)`` (max abs
difference < 2e-5, tests/test_denoise_nilearn.py) but is kept: it cleans voxel chunks with one
operator (bounded memory) and avoids nilearn 0.13.1's ``_interpolate_volumes`` sample_mask bug.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy import signal as sp_signal
from scipy.interpolate import CubicSpline

from tmstarget.errors import InputError

BUTTERWORTH_ORDER = 5
VOXEL_CHUNK = 32768         # voxels per matrix product


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
            raise ShortRun(op.shape[0], padlen)
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


def zscore_columns(data_tv: np.ndarray) -> np.ndarray:
    """Z-score each column over time in place (ddof=1; constant columns become 0)."""
    for sl in chunks(data_tv.shape[1], VOXEL_CHUNK):
        x = data_tv[:, sl].astype(np.float64)
        x -= x.mean(axis=0)
        sd = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.ones(x.shape[1])
        sd[sd < 1e-8 * max(1.0, float(np.abs(x).max(initial=0.0)))] = np.inf
        data_tv[:, sl] = x / sd
    return data_tv


def chunks(n: int, size: int):
    """Slices of ``range(n)`` of at most ``size`` items (voxel or volume chunks)."""
    for a in range(0, n, size):
        yield slice(a, min(n, a + size))
