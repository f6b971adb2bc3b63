"""Denoising strategies: the keys of a strategy, their checks and their defaults.

A strategy (``denoising.strategies.<name>`` in ``config/config.yaml``) chooses the confound
regressors, the censoring threshold, the band-pass filter and the spatial smoothing
(docs/method.md, denoising). The default values live in ``config/config.yaml`` only (its default
strategy names every key; the schema checks the types); this module holds no table of its own.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tmstarget.config.settings import DEFAULT_CONFIG, SCHEMA, read_yaml
from tmstarget.errors import InputError

STRATEGY_SECTION = "denoising.strategies"


@functools.lru_cache(maxsize=1)
def _default_denoising() -> dict:
    """The ``denoising`` section of the repository's ``config/config.yaml`` (read once)."""
    return read_yaml(DEFAULT_CONFIG)["denoising"]


def denoising_default(key: str):
    """A default of the ``denoising`` section of ``config/config.yaml`` (e.g. ``min_retained_minutes``)."""
    return _default_denoising()[key]


def default_strategy() -> dict:
    """The default strategy of ``config/config.yaml`` (``denoising.strategies.<denoising.strategy>``).

    It is the one place where the value of every strategy key is set: a strategy that leaves a key
    out takes it from here, and it must name every key of the schema's strategy
    (``workflow/schemas/config.schema.yaml``, ``$defs/strategy``).
    """
    return dict(_checked_default_strategy())


@functools.lru_cache(maxsize=1)
def _checked_default_strategy() -> dict:
    section = _default_denoising()
    name = section["strategy"]
    strategy = dict(section["strategies"][name])
    missing = sorted(set(read_yaml(SCHEMA)["$defs"]["strategy"]["properties"]) - set(strategy))
    if missing:
        raise InputError(f"{DEFAULT_CONFIG}: {STRATEGY_SECTION}.{name} lacks the key(s) {missing}; the default "
                         "strategy must set every strategy key (config/README.md)")
    return strategy


def default_strategies() -> dict[str, dict]:
    """Every strategy of ``config/config.yaml``, validated (complete), by name."""
    return {name: validate_strategy(s, name) for name, s in _default_denoising()["strategies"].items()}


# ----------------------------------------------------------------------------- strategy


def validate_strategy(strategy: dict, name: str = "strategy", defaults: dict | None = None) -> dict:
    """Check a strategy dict and return it completed with ``defaults``.

    Parameters
    ----------
    strategy : dict
        Strategy keys (``config/README.md``); keys left out take their value from ``defaults``.
    name : str
        Strategy name, used in error messages (``denoising.strategies.<name>``).
    defaults : dict, optional
        A complete strategy; by default :func:`default_strategy` (``config/config.yaml``).

    Returns
    -------
    dict
        Every strategy key, with validated values.

    Raises
    ------
    InputError
        Unknown key, wrong type or inconsistent filter band.
    """
    where = f"denoising.strategies.{name}"
    if not isinstance(strategy, dict):
        raise InputError(f"{where} must be a mapping of settings, got {type(strategy).__name__}")
    defaults = default_strategy() if defaults is None else defaults
    unknown = sorted(set(strategy) - set(defaults))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(defaults)}")
    s = {**defaults, **strategy}

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
