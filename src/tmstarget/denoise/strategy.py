"""Denoising strategies: the keys of a strategy, their checks and their defaults.

A strategy (``denoising.strategies.<name>`` in ``config/config.yaml``) chooses the confound
regressors, the censoring threshold, the band-pass filter and the spatial smoothing
(docs/method.md, denoising).
"""

from __future__ import annotations

import math

import numpy as np

from tmstarget.errors import InputError

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
