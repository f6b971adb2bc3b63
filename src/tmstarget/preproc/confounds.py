"""Time-series pieces of the built-in preprocessing: non-steady-state volumes, slice timing, motion
parameters, framewise displacement (Power 2012), DVARS, tissue signals and aCompCor.

Everything here works on numpy arrays; the ANTs calls live in :mod:`tmstarget.preproc.anat` and
:mod:`tmstarget.preproc.bold`.
Motion parameters follow fMRIPrep's columns: ``trans_x, trans_y, trans_z`` (mm) and
``rot_x, rot_y, rot_z`` (radians), the rigid head motion of each volume relative to the BOLD
reference, in world RAS, about the centre of the BOLD grid.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

log = logging.getLogger(__name__)

MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


# ----------------------------------------------------------------------------- dummy scans


def detect_nonsteady_volumes(global_signal_t: np.ndarray, max_fraction: float = 0.25,
                             z_threshold: float = 4.0, min_relative_excess: float = 0.01) -> int:
    """Count leading non-steady-state volumes from the global signal (T1 saturation makes them bright).

    A leading volume is non-steady if its global signal exceeds the median of the run by more than
    ``z_threshold`` robust standard deviations (1.4826 x MAD of the run) and by more than
    ``min_relative_excess`` of the median. Counting stops at the first steady volume.

    Parameters
    ----------
    global_signal_t : array (T,)
        Mean intensity of each volume (inside the head).
    max_fraction : float
        At most this fraction of the run is ever called non-steady.

    Returns
    -------
    int
        Number of leading volumes to drop.
    """
    gs = np.asarray(global_signal_t, dtype=float)
    median = np.median(gs)
    robust_sd = 1.4826 * np.median(np.abs(gs - median))
    threshold = median + max(z_threshold * robust_sd, min_relative_excess * abs(median))
    n = 0
    limit = int(max_fraction * len(gs))
    while n < limit and gs[n] > threshold:
        n += 1
    return n


# ----------------------------------------------------------------------------- slice timing


def slice_timing_correct(data_xyzt: np.ndarray, slice_times_s, t_r: float, slice_axis: int = 2,
                         reference_time_s: float | None = None) -> np.ndarray:
    """Shift every slice's time series to a common reference time (cubic-spline interpolation).

    Parameters
    ----------
    data_xyzt : array (X, Y, Z, T)
    slice_times_s : sequence of float, length = number of slices
        Acquisition time of each slice within the TR (BIDS ``SliceTiming``), seconds.
    t_r : float
        Repetition time, seconds.
    slice_axis : int
        Voxel axis along which slices are stacked (0, 1 or 2; BIDS ``SliceEncodingDirection``).
    reference_time_s : float, optional
        Time every slice is shifted to; default the middle of the slice times (fMRIPrep's choice).

    Returns
    -------
    array (X, Y, Z, T), float32
        Values are held constant beyond the first and last sample (no extrapolation).
    """
    from scipy.interpolate import CubicSpline

    slice_times_s = np.asarray(slice_times_s, dtype=float)
    n_t = data_xyzt.shape[3]
    if reference_time_s is None:
        reference_time_s = float((slice_times_s.min() + slice_times_s.max()) / 2)
    out = np.empty(data_xyzt.shape, dtype=np.float32)
    frame_s = np.arange(n_t) * t_r
    for s, t_slice in enumerate(slice_times_s):
        index = [slice(None)] * 3
        index[slice_axis] = s
        block = np.asarray(data_xyzt[tuple(index)], dtype=float)  # (.., .., T)
        spline = CubicSpline(frame_s + t_slice, block, axis=-1)
        wanted = np.clip(frame_s + reference_time_s, frame_s[0] + t_slice, frame_s[-1] + t_slice)
        out[tuple(index)] = spline(wanted)
    return out


# ----------------------------------------------------------------------------- motion


def rigid_to_motion_params(transform_ras: np.ndarray, centre_ras_mm: np.ndarray) -> np.ndarray:
    """Six motion parameters from a 4x4 rigid transform (RAS mm), about a centre point.

    The transform maps a head point in the reference volume to its position in the moved volume:
    ``x' = R (x - c) + c + t``. Returns ``[t_x, t_y, t_z (mm), rot_x, rot_y, rot_z (rad)]`` with
    ``R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x)`` (rotations about the fixed x, then y, then z axes).
    """
    rotation = np.asarray(transform_ras)[:3, :3]
    centre = np.asarray(centre_ras_mm, dtype=float)
    translation_mm = np.asarray(transform_ras)[:3, :3] @ centre + np.asarray(transform_ras)[:3, 3] - centre
    angles_rad = Rotation.from_matrix(rotation).as_euler("xyz")
    return np.concatenate([translation_mm, angles_rad])


def motion_params_to_rigid(params: np.ndarray, centre_ras_mm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rigid_to_motion_params`: 4x4 RAS transform from six parameters."""
    params = np.asarray(params, dtype=float)
    rotation = Rotation.from_euler("xyz", params[3:]).as_matrix()
    centre = np.asarray(centre_ras_mm, dtype=float)
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = centre + params[:3] - rotation @ centre
    return out


def framewise_displacement(motion_t6: np.ndarray, head_radius_mm: float = 50.0) -> np.ndarray:
    """Power et al. 2012 framewise displacement (mm): sum of absolute backward differences of the
    three translations and of the three rotations (radians) times the head radius.

    Parameters
    ----------
    motion_t6 : array (T, 6)
        ``trans_x, trans_y, trans_z`` (mm), ``rot_x, rot_y, rot_z`` (rad).

    Returns
    -------
    array (T,)
        First value is NaN (no previous volume), as fMRIPrep writes it (``n/a`` in the TSV).
        The one FD of tmstarget: the confounds TSV and the demo's ground truth both use it.
    """
    motion_t6 = np.asarray(motion_t6, dtype=float)
    diff = np.abs(np.diff(motion_t6, axis=0))
    fd = diff[:, :3].sum(axis=1) + head_radius_mm * diff[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def dvars(data_tv: np.ndarray, chunk_voxels: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """DVARS (RMS over voxels of the backward temporal difference) and its standardised form.

    The standardised DVARS divides by the value expected for temporally independent noise of each
    voxel's robust standard deviation and lag-1 autocorrelation (Nichols 2013, as in nipype/fMRIPrep).

    Parameters
    ----------
    data_tv : array (T, V)
        Motion-corrected intensities of brain voxels (any float dtype; read ``chunk_voxels``
        columns at a time in float64, so memory stays about the size of ``data_tv``).
    chunk_voxels : int

    Returns
    -------
    dvars_t, std_dvars_t : arrays (T,)
        Intensity units and unitless; first value NaN.
    """
    n_t, n_v = data_tv.shape
    sq_sum_t = np.zeros(max(n_t - 1, 0))
    expected_sum = 0.0
    for start in range(0, n_v, chunk_voxels):
        data = np.asarray(data_tv[:, start:start + chunk_voxels], dtype=np.float64)
        sq_sum_t += np.sum(np.diff(data, axis=0) ** 2, axis=1)
        # robust per-voxel sd (IQR / 1.349) and lag-1 autocorrelation
        q75, q25 = np.percentile(data, [75, 25], axis=0)
        sd_v = (q75 - q25) / 1.349
        centred = data - data.mean(axis=0)
        denom = np.sum(centred ** 2, axis=0)
        ar1_v = np.where(denom > 0, np.sum(centred[1:] * centred[:-1], axis=0) / np.where(denom > 0, denom, 1), 0)
        expected_sum += float(np.sum(2 * (1 - ar1_v) * sd_v ** 2))
    if n_v == 0:
        raw = np.full(max(n_t - 1, 0), np.nan)
        expected = 0.0
    else:
        raw = np.sqrt(sq_sum_t / n_v)
        expected = np.sqrt(expected_sum / n_v)
    std = raw / expected if expected > 0 else np.full_like(raw, np.nan)
    return np.concatenate([[np.nan], raw]), np.concatenate([[np.nan], std])


def acompcor(data_tv: np.ndarray, n_components: int, t_r: float, high_pass_hz: float = 1 / 128,
             chunk_voxels: int = 20000) -> np.ndarray:
    """Anatomical CompCor (Behzadi 2007): principal components of noise-region time series.

    Each voxel is high-pass filtered (discrete cosine basis up to ``high_pass_hz``, as fMRIPrep),
    variance-normalised, and the top left singular vectors of the (T, V) matrix are returned. They
    are computed as the top eigenvectors of its (T, T) Gram matrix, accumulated ``chunk_voxels``
    columns at a time, so memory stays about the size of ``data_tv`` at any run length. Signs
    follow scikit-learn's ``svd_flip``: each component's largest-magnitude value is positive.

    Parameters
    ----------
    data_tv : array (T, V)
        Time series of the WM+CSF voxels (any float dtype).
    n_components : int
    t_r : float
        Seconds.

    Returns
    -------
    array (T, n)
        Unit-norm component time series (fewer columns if V or T is too small).
    """
    n_t, n_v = data_tv.shape
    basis = cosine_drift_basis(n_t, t_r, high_pass_hz)
    gram = np.zeros((n_t, n_t))
    n_kept = 0
    for start in range(0, n_v, chunk_voxels):
        data = np.asarray(data_tv[:, start:start + chunk_voxels], dtype=np.float64)
        beta, *_ = np.linalg.lstsq(basis, data, rcond=None)
        resid = data - basis @ beta
        sd = resid.std(axis=0)
        keep = sd > 1e-8
        resid = resid[:, keep] / sd[keep]
        gram += resid @ resid.T
        n_kept += int(keep.sum())
    n_out = min(n_components, n_t, n_kept)
    if n_out <= 0:
        return np.zeros((n_t, 0))
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    u = eigenvectors[:, np.argsort(eigenvalues)[::-1][:n_out]]
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(n_out)])
    return u * np.where(signs == 0, 1.0, signs)


def cosine_drift_basis(n_t: int, t_r: float, high_pass_hz: float) -> np.ndarray:
    """Constant + discrete cosine regressors with frequencies below ``high_pass_hz``; shape (T, K)."""
    time_s = np.arange(n_t) * t_r
    n_cos = int(np.floor(2 * n_t * t_r * high_pass_hz))
    cols = [np.ones(n_t)]
    for k in range(1, n_cos + 1):
        cols.append(np.sqrt(2.0 / n_t) * np.cos(np.pi * (time_s / t_r + 0.5) * k / n_t))
    return np.column_stack(cols)


def confounds_table(motion_t6: np.ndarray, fd_t: np.ndarray, dvars_t: np.ndarray, std_dvars_t: np.ndarray,
                    global_signal_t: np.ndarray, white_matter_t: np.ndarray, csf_t: np.ndarray,
                    acompcor_tk: np.ndarray) -> pd.DataFrame:
    """fMRIPrep-style confounds table (one row per kept volume).

    Columns: ``global_signal, csf, white_matter`` (+ ``_derivative1``, ``_power2``,
    ``_derivative1_power2``), the six motion parameters with the same expansions,
    ``framewise_displacement, dvars, std_dvars, a_comp_cor_00..``. Derivatives are backward
    differences with NaN in the first row (written as ``n/a``).
    """
    table = {"global_signal": global_signal_t, "csf": csf_t, "white_matter": white_matter_t}
    table.update({name: np.asarray(motion_t6)[:, i] for i, name in enumerate(MOTION_COLUMNS)})
    frame = pd.DataFrame(table, dtype=float)
    for name in list(frame.columns):
        deriv = np.concatenate([[np.nan], np.diff(frame[name].to_numpy())])
        frame[f"{name}_derivative1"] = deriv
        frame[f"{name}_power2"] = frame[name] ** 2
        frame[f"{name}_derivative1_power2"] = deriv ** 2
    frame["framewise_displacement"] = fd_t
    frame["dvars"] = dvars_t
    frame["std_dvars"] = std_dvars_t
    for k in range(acompcor_tk.shape[1]):
        frame[f"a_comp_cor_{k:02d}"] = acompcor_tk[:, k]
    return frame
