"""Confounds of a run: reading fMRIPrep's ``*_desc-confounds_timeseries.tsv``, choosing the
regressors of a strategy, the leading non-steady-state volumes and the censoring mask from
framewise displacement (docs/method.md, denoising).

The selection equals ``nilearn.interfaces.fmriprep.load_confounds`` on fMRIPrep tables (max abs
difference 0, tests/test_denoise_nilearn.py) but is kept: load_confounds raises on tables without the
derived columns or without the JSON sidecar (the built-in preprocessing writes none), which ours reads.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tmstarget.errors import InputError

log = logging.getLogger(__name__)

MOTION_BASE = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


# ----------------------------------------------------------------------------- confounds and censoring


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
