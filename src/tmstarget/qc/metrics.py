"""Values read from the pipeline's JSON outputs: a tolerant JSON reader and the mean framewise displacement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tmstarget.qc.text import num


def read_json_tolerant(path) -> tuple[dict | None, str | None]:
    """(content, None) or (None, reason) for a JSON file that may be missing or broken."""
    if path is None or str(path) == "":
        return None, "not given"
    p = Path(path)
    if not p.exists():
        return None, f"{p.name} not found"
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        return None, f"{p.name} is not readable JSON ({type(exc).__name__})"
    if not isinstance(obj, dict):
        return None, f"{p.name} does not hold a JSON object"
    return obj, None


def mean_fd_mm(denoise_qc: dict | None) -> float | None:
    """Mean framewise displacement (mm) over the included runs, weighted by run length.

    Uses each run's ``mean_fd_mm``; falls back to the mean of ``framewise_displacement_mm`` (after
    the dummy volumes, first value dropped).
    """
    runs = (denoise_qc or {}).get("runs") or []
    total, weight = 0.0, 0
    for run in runs:
        if run.get("included") is False:
            continue
        fd = run.get("framewise_displacement_mm")
        n = int(run.get("volumes_total") or (len(fd) if fd else 0) or 1)
        m = num(run, "mean_fd_mm")
        if m is None and fd:
            vals = np.asarray([np.nan if v is None else v for v in fd], dtype=float)
            vals = vals[int(run.get("dummy_volumes") or 0):][1:]
            vals = vals[np.isfinite(vals)]
            m = float(vals.mean()) if vals.size else None
        if m is not None:
            total += m * n
            weight += n
    return total / weight if weight else None
