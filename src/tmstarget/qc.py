"""Quality-control findings and the overall QC status of one unit (subject or session).

Functions here read the JSON outputs of the pipeline (target, T1w-space target, denoise QC, seed
sidecar) and turn them into findings with a level (pass, warn, fail, info). They hold no HTML: the
report (:mod:`tmstarget.report`), the dataset table (:mod:`tmstarget.group`) and the terminal summary
all use them, so every place says the same thing.

QC thresholds (:func:`assess_qc`, all parameters with defaults)
---------------------------------------------------------------
====================================  =======  =====================================================
check                                 level    default
====================================  =======  =====================================================
no T1w-space target (native stage)    fail     (the MNI coordinate alone is not usable at the bedside)
minutes kept after censoring          fail     < 5 min (METHOD.md: minimum retained data)
minutes kept after censoring          warn     < 10 min (reliability drops below ~10 min)
mean framewise displacement (Power)   fail     > 0.5 mm
mean framewise displacement (Power)   warn     > 0.2 mm
seed voxels with low tSNR (dropout)   warn     fraction > 0.5 (tSNR threshold from the seed sidecar)
seed voxels inside the BOLD mask      warn     fraction < 0.8
seed-map value at the target          fail     z >= 0 (not anticorrelated)
seed-map value at the target          warn     abs(z) < 0.1
bootstrap p95 distance to target      warn     > 10 mm
GSR vs no-GSR target shift            warn     > 10 mm
target outside BA46 (HCPex label)     warn     ``in_ba46`` false
target outside the search mask        warn     ``in_search_mask`` false
MNI->T1w->MNI round trip              warn     > 1 mm
====================================  =======  =====================================================
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATUS_ORDER = {"pass": 0, "warn": 1, "fail": 2}


_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][^\s/\\:;,'\"<>()\[\]{}]+){2,}")


def scrub_paths(text) -> str:
    """``text`` with every absolute file path cut to its last component (privacy).

    ``/data/site/bids/sub-01/anat/sub-01_T1w.nii.gz`` becomes ``sub-01_T1w.nii.gz``; URLs and
    relative names are kept.
    """
    s = str(text)
    return _ABS_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0))[-1], s)


def _fmt(value, digits: int = 1, unit: str = "") -> str:
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


def _point(value) -> np.ndarray | None:
    """A finite (3,) float array from a JSON list, else None."""
    try:
        p = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return None
    return p if p.shape == (3,) and np.all(np.isfinite(p)) else None


def _num(d: dict | None, *keys):
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
        m = _num(run, "mean_fd_mm")
        if m is None and fd:
            vals = np.asarray([np.nan if v is None else v for v in fd], dtype=float)
            vals = vals[int(run.get("dummy_volumes") or 0):][1:]
            vals = vals[np.isfinite(vals)]
            m = float(vals.mean()) if vals.size else None
        if m is not None:
            total += m * n
            weight += n
    return total / weight if weight else None


# ----------------------------------------------------------------------------- QC assessment


@dataclass(frozen=True)
class Finding:
    """One QC check result: ``level`` is pass, warn, fail or info; ``text`` says why."""

    level: str
    text: str


def qc_findings(target_json: dict | None, native_json: dict | None, denoise_qc: dict | None,
                seed_json: dict | None, *, fail_minutes: float = 5.0, warn_minutes: float = 10.0,
                fail_mean_fd_mm: float = 0.5, warn_mean_fd_mm: float = 0.2,
                warn_seed_low_tsnr_fraction: float = 0.5, warn_seed_in_mask_fraction: float = 0.8,
                warn_abs_z: float = 0.1, warn_bootstrap_p95_mm: float = 10.0,
                warn_gsr_shift_mm: float = 10.0, warn_roundtrip_mm: float = 1.0) -> list[Finding]:
    """Every QC check with its level (see the module docstring for the thresholds).

    Parameters
    ----------
    target_json, native_json, denoise_qc, seed_json : dict or None
        Contents of ``*_desc-target_markers.json`` (MNI), its T1w-space ``.json``, the
        ``*_desc-denoise_qc.json`` and the seed-map sidecar (docs/architecture.md). ``None`` when a
        file is missing.
    fail_minutes, warn_minutes : float
        Minutes of data kept after censoring below which the unit fails / warns.
    fail_mean_fd_mm, warn_mean_fd_mm : float
        Mean framewise displacement (Power, mm) above which the unit fails / warns.
    warn_seed_low_tsnr_fraction : float
        Fraction of seed voxels below the sidecar's ``min_seed_tsnr`` above which to warn (dropout).
    warn_seed_in_mask_fraction : float
        Fraction of seed voxels inside the BOLD mask below which to warn (seed outside the FOV).
    warn_abs_z : float
        Fisher z at the target whose magnitude is below this gives a warning (weak anticorrelation);
        z >= 0 fails.
    warn_bootstrap_p95_mm, warn_gsr_shift_mm, warn_roundtrip_mm : float
        Distances in mm above which to warn.

    Returns
    -------
    list of Finding
        Level ``info`` marks checks that could not be made (value not recorded).
    """
    out: list[Finding] = []
    t = target_json or {}
    if target_json is None:
        out.append(Finding("fail", "no target file: the targeting stage did not produce a target"))
    if native_json is None:
        out.append(Finding("fail", "no T1w-space target: the native-space stage failed or did not run; the MNI "
                                   "coordinate alone cannot be used for neuronavigation"))

    # data quantity and motion
    minutes = _num(denoise_qc, "minutes_kept")
    if minutes is None:
        minutes = _num(t, "denoising", "minutes_kept")
    if minutes is None:
        out.append(Finding("warn", "minutes of data kept after censoring not recorded: cannot check data quantity"))
    elif minutes < fail_minutes:
        out.append(Finding("fail", f"only {minutes:.1f} min of data kept after censoring "
                                   f"(minimum {fail_minutes:g} min)"))
    elif minutes < warn_minutes:
        out.append(Finding("warn", f"only {minutes:.1f} min of data kept after censoring (below {warn_minutes:g} min "
                                   "targets are less reliable)"))
    else:
        out.append(Finding("pass", f"{minutes:.1f} min of data kept after censoring"))
    fd = mean_fd_mm(denoise_qc)
    if fd is None:
        out.append(Finding("info", "mean framewise displacement not recorded"))
    elif fd > fail_mean_fd_mm:
        out.append(Finding("fail", f"mean framewise displacement {fd:.2f} mm (above {fail_mean_fd_mm:g} mm)"))
    elif fd > warn_mean_fd_mm:
        out.append(Finding("warn", f"mean framewise displacement {fd:.2f} mm (above {warn_mean_fd_mm:g} mm)"))
    else:
        out.append(Finding("pass", f"mean framewise displacement {fd:.2f} mm"))

    # seed
    if seed_json is None:
        out.append(Finding("warn", "seed-map sidecar missing: seed signal dropout cannot be checked"))
    else:
        low = _num(seed_json, "seed_low_tsnr_fraction")
        thr = _num(seed_json, "min_seed_tsnr")
        med = _num(seed_json, "seed_median_tsnr")
        if low is None:
            out.append(Finding("info", "seed tSNR not recorded"))
        elif low > warn_seed_low_tsnr_fraction:
            out.append(Finding("warn", f"{100 * low:.0f}% of seed voxels have tSNR below "
                                       f"{_fmt(thr, 0)} (median {_fmt(med)}): possible sgACC signal dropout"))
        else:
            out.append(Finding("pass", f"seed median tSNR {_fmt(med)}, {100 * low:.0f}% of seed voxels "
                                       f"below {_fmt(thr, 0)}"))
        total, inside = _num(seed_json, "seed_voxels_total"), _num(seed_json, "seed_voxels_in_mask")
        if total and inside is not None and inside / total < warn_seed_in_mask_fraction:
            out.append(Finding("warn", f"only {inside:.0f} of {total:.0f} seed voxels lie inside the BOLD mask "
                                       "(seed partly outside the field of view)"))

    if target_json is not None:
        z = _num(t, "z_at_target")
        if z is None:
            out.append(Finding("info", "seed-map value at the target not recorded"))
        elif z >= 0:
            out.append(Finding("fail", f"the target is not anticorrelated with the seed (z = {z:.2f})"))
        elif abs(z) < warn_abs_z:
            out.append(Finding("warn", f"weak anticorrelation at the target (z = {z:.2f}, |z| below {warn_abs_z:g})"))
        else:
            out.append(Finding("pass", f"anticorrelation at the target z = {z:.2f}"))

        unc = t.get("uncertainty") if isinstance(t.get("uncertainty"), dict) else {}
        p95 = _num(unc, "p95_distance_mm")
        if p95 is None:
            out.append(Finding("info", "bootstrap uncertainty not computed"))
        elif p95 > warn_bootstrap_p95_mm:
            out.append(Finding("warn", f"bootstrap targets spread widely: 95% lie within {p95:.1f} mm of the target "
                                       f"(above {warn_bootstrap_p95_mm:g} mm)"))
        else:
            out.append(Finding("pass", f"95% of bootstrap targets within {p95:.1f} mm"))
        if unc.get("confident") is False:
            out.append(Finding("warn", "the targeting stage flagged the target as uncertain (see Uncertainty)"))

        gsr = t.get("gsr_comparison") if isinstance(t.get("gsr_comparison"), dict) else None
        shift = _num(gsr, "shift_mm")
        if gsr is None:
            out.append(Finding("info", "no GSR / no-GSR comparison computed"))
        elif shift is None:
            out.append(Finding("warn", "the no-GSR comparison gave no target: "
                                       + str(gsr.get("note") or "reason not recorded")))
        elif shift > warn_gsr_shift_mm:
            out.append(Finding("warn", f"the target moves {shift:.1f} mm without global signal regression "
                                       f"(above {warn_gsr_shift_mm:g} mm): it depends on GSR"))
        else:
            out.append(Finding("pass", f"target moves {shift:.1f} mm without global signal regression"))

        if t.get("in_ba46") is False:
            out.append(Finding("warn", "target lies outside BA46 (HCPex label)"))
        elif t.get("in_ba46") is None:
            out.append(Finding("info", "BA46 membership not recorded"))
        if t.get("in_search_mask") is False:
            out.append(Finding("warn", "target lies outside the search mask"))

    if native_json is not None:
        rt = _num(native_json, "roundtrip_error_mm")
        if rt is not None and rt > warn_roundtrip_mm:
            out.append(Finding("warn", f"MNI->T1w->MNI round trip error {rt:.2f} mm (above {warn_roundtrip_mm:g} mm): "
                                       "check the transforms"))
    return out


def assess_qc(target_json: dict | None, native_json: dict | None, denoise_qc: dict | None, seed_json: dict | None,
              **thresholds) -> tuple[str, list[str]]:
    """Overall QC status of one unit and the reasons for it.

    Parameters
    ----------
    target_json, native_json, denoise_qc, seed_json : dict or None
        As in :func:`qc_findings`; ``native_json`` is None when the T1w stage failed.
    **thresholds
        Keyword thresholds of :func:`qc_findings` (``fail_minutes=5``, ``warn_minutes=10``,
        ``fail_mean_fd_mm=0.5``, ``warn_mean_fd_mm=0.2``, ``warn_seed_low_tsnr_fraction=0.5``,
        ``warn_seed_in_mask_fraction=0.8``, ``warn_abs_z=0.1``, ``warn_bootstrap_p95_mm=10``,
        ``warn_gsr_shift_mm=10``, ``warn_roundtrip_mm=1``).

    Returns
    -------
    status : {"pass", "warn", "fail"}
        The worst level among the checks.
    reasons : list of str
        The fail reasons first, then the warnings; empty when the status is pass.
    """
    findings = qc_findings(target_json, native_json, denoise_qc, seed_json, **thresholds)
    fails = [f.text for f in findings if f.level == "fail"]
    warns = [f.text for f in findings if f.level == "warn"]
    status = "fail" if fails else "warn" if warns else "pass"
    return status, fails + warns
