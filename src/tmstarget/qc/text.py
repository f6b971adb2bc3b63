"""Plain-text helpers shared by the verdict, the report, the group table and the terminal: numbers for
text (:func:`fmt`), tolerant JSON values (:func:`num`, :func:`point`) and privacy (:func:`scrub_paths`)."""

from __future__ import annotations

import re

import numpy as np

_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][^\s/\\:;,'\"<>()\[\]{}]+){2,}")


def scrub_paths(text) -> str:
    """``text`` with every absolute file path cut to its last component (privacy).

    ``/data/site/bids/sub-01/anat/sub-01_T1w.nii.gz`` becomes ``sub-01_T1w.nii.gz``; URLs and
    relative names are kept.
    """
    s = str(text)
    return _ABS_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0))[-1], s)


def fmt(value, digits: int = 1, unit: str = "") -> str:
    """A number for plain text (``n/a`` for missing or not finite), with an optional unit."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return scrub_paths(value)
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}{(' ' + unit) if unit else ''}"


def point(value) -> np.ndarray | None:
    """A finite (3,) float array from a JSON list, else None."""
    try:
        p = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return None
    return p if p.shape == (3,) and np.all(np.isfinite(p)) else None


def num(d: dict | None, *keys):
    """``d[k1][k2]...`` as float, or None when missing or not a finite number."""
    cur = d
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    try:
        v = float(cur)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def fmt3(value) -> str:
    """A point as ``(x, y, z)`` with one decimal, or ``n/a`` when it is not a finite (3,) value."""
    p = point(value)
    return "n/a" if p is None else "(" + ", ".join(f"{v:.1f}" for v in p) + ")"
