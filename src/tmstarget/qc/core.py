"""Quality-control findings and the overall QC status of one unit (subject or session).

Functions here read the JSON outputs of the pipeline (target, T1w-space target, denoise QC, seed
sidecar) and turn them into findings with a level (pass, warn, fail, info). They hold no HTML: the
report (:mod:`tmstarget.report`), the dataset table (:mod:`tmstarget.qc.group`) and the terminal summary
all use them, so every place says the same thing.

QC thresholds (:func:`assess`; each is a config key, see :data:`THRESHOLDS`)
------------------------------------------------------------------------------
====================================  =======  ===============================================================
check                                 level    threshold (config key, default)
====================================  =======  ===============================================================
no T1w-space target (native stage)    fail     (the MNI coordinate alone is not usable at the bedside)
minutes kept after censoring          fail     < ``denoising.min_retained_minutes`` (5)
minutes kept after censoring          warn     < ``denoising.warn_retained_minutes`` (8)
all-zero / constant volumes           warn     any (censored by denoising)
mean framewise displacement (Power)   fail     > ``qc.fail_mean_fd_mm`` (0.5 mm)
mean framewise displacement (Power)   warn     > ``qc.warn_mean_fd_mm`` (0.2 mm)
seed voxels with low tSNR (dropout)   warn     fraction > ``seed.max_low_tsnr_fraction`` (0.5)
seed voxels inside the BOLD mask      warn     fraction < ``qc.warn_seed_in_mask_fraction`` (0.8)
seed-map value at the target          fail     z >= 0 (not anticorrelated)
seed-map value at the target          warn     abs(z) < ``qc.warn_abs_z`` (0.1)
split-half reliability                warn     ``uncertainty.reliability.reproducible`` false, else split-half
                                               median > ``targeting.confident_split_half_median_mm`` (8 mm)
two or more candidate targets         warn     ``uncertainty.multiple_candidates`` true
bootstrap p95 distance to target      info     (a detail: the bootstrap can look stable on noise)
GSR vs no-GSR target shift            warn     > ``qc.warn_gsr_shift_mm`` (10 mm)
target outside BA46 (HCPex label)     warn     ``in_ba46`` false
target outside the search mask        warn     ``in_search_mask`` false
MNI->T1w->MNI round trip              warn     > ``qc.warn_roundtrip_mm`` (1 mm)
navigation T1w qform vs sform         fail     > ``native.qform_sform_tol_mm`` (0.1 mm)
input header warnings                 warn     qform/sform codes 0 or disagreement, header TR != sidecar TR
registration checks (T1w alignment)   as given by the registration QC JSON
====================================  =======  ===============================================================
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


# ----------------------------------------------------------------------------- thresholds

#: Every QC threshold the verdict applies: name -> (config key, default). The workflow passes the
#: values of the configuration it ran with (:func:`thresholds_from_config`), so the verdict, the
#: report and the terminal judge a unit by the same numbers that shaped it.
THRESHOLDS = {
    "fail_minutes": ("denoising.min_retained_minutes", 5.0),
    "warn_minutes": ("denoising.warn_retained_minutes", 8.0),
    "fail_mean_fd_mm": ("qc.fail_mean_fd_mm", 0.5),
    "warn_mean_fd_mm": ("qc.warn_mean_fd_mm", 0.2),
    "warn_seed_low_tsnr_fraction": ("seed.max_low_tsnr_fraction", 0.5),
    "warn_seed_in_mask_fraction": ("qc.warn_seed_in_mask_fraction", 0.8),
    "warn_abs_z": ("qc.warn_abs_z", 0.1),
    "warn_gsr_shift_mm": ("qc.warn_gsr_shift_mm", 10.0),
    "warn_roundtrip_mm": ("qc.warn_roundtrip_mm", 1.0),
    "reliability_limit_mm": ("targeting.confident_split_half_median_mm", 8.0),
    "qform_sform_tol_mm": ("native.qform_sform_tol_mm", 0.1),
}

TOPICS = ("data", "motion", "seed", "target", "reliability", "gsr", "registration", "header", "navigation")

from tmstarget.qc.actions import ACTIONS, FINDING_ACTIONS, action_for, finding_action, minutes_action  # noqa: E402,F401

def thresholds_from_config(config: dict | None) -> dict:
    """The QC thresholds of a configuration: ``{name: value}`` for every key of :data:`THRESHOLDS`.

    Parameters
    ----------
    config : dict or None
        The resolved tmstarget configuration (as saved in ``OUT/logs/config.yaml``); missing keys
        take the defaults of :data:`THRESHOLDS`.
    """
    out = {}
    for name, (key, default) in THRESHOLDS.items():
        cur = config or {}
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        out[name] = float(default if cur is None else cur)
    return out


def _resolved_thresholds(thresholds: dict | None) -> dict:
    values = {name: default for name, (_, default) in THRESHOLDS.items()}
    unknown = sorted(set(thresholds or {}) - set(values) - {"warn_bootstrap_p95_mm"})
    if unknown:
        raise TypeError(f"unknown QC threshold(s) {unknown}; known: {sorted(values)}")
    values.update({k: float(v) for k, v in (thresholds or {}).items() if k in values})
    return values


# ----------------------------------------------------------------------------- QC assessment


@dataclass(frozen=True)
class Finding:
    """One QC check result: ``level`` is pass, warn, fail or info; ``text`` says why; ``topic`` is
    one of :data:`TOPICS` (where the report shows it); ``kind`` is a key of :data:`FINDING_ACTIONS`
    (which check it is, so that its action never depends on the wording of ``text``)."""

    level: str
    text: str
    topic: str = "data"
    kind: str = "other"

    def as_dict(self) -> dict:
        return {"level": self.level, "topic": self.topic, "kind": self.kind, "text": scrub_paths(self.text)}


CODES_ZERO_RISK = ("a left-right flip cannot be excluded; check the fiducial or a vitamin-E marker before use")


def header_finding(message: str) -> Finding:
    """A header warning (from a ``HeaderWarnings`` sidecar list or :func:`bold_header_warnings`) as a finding.

    Codes 0 (orientation not recorded) gets the plain-words risk :data:`CODES_ZERO_RISK`; every
    header warning is a WARN (the run went on with a documented choice that a person must check).
    """
    text = scrub_paths(str(message)).strip()
    kind = "header_other"
    if "are both 0" in text or "both codes 0" in text:
        name = text.split(":", 1)[0]
        text = (f"{name}: the image header records no orientation (qform and sform codes 0): "
                f"{CODES_ZERO_RISK}")
        kind = "header_orientation"
    elif "header TR" in text:
        kind = "header_tr"
    elif "qform and sform disagree" in text:
        kind = "header_qform_sform"
    return Finding("warn", text, "header", kind=kind)


def bold_header_warnings(path, t_r: float | None, tol_mm: float = 0.1) -> list[str]:
    """Header problems of a BOLD NIfTI (header only, no voxel data): qform/sform codes 0 or disagreement,
    and a header TR that differs from the sidecar's ``RepetitionTime``.

    Parameters
    ----------
    path : path-like
        The BOLD file.
    t_r : float or None
        ``RepetitionTime`` of the sidecar (s).
    tol_mm : float
        Largest accepted qform/sform disagreement (mm, at the grid corners).

    Returns
    -------
    list of str
        Messages naming the file (empty when the header is consistent or unreadable).
    """
    import nibabel as nib

    name = Path(path).name
    try:
        img = nib.load(str(path))
    except Exception:
        return []
    header = img.header
    out = []
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not qcode and not scode:
        out.append(f"{name}: qform_code and sform_code are both 0, so the orientation is not recorded")
    elif qcode and scode:
        shape = img.shape[:3]
        corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                            for k in (0, shape[2] - 1)])
        diff = float(np.max(np.linalg.norm((corners @ (qform - sform).T)[:, :3], axis=1)))
        if diff > tol_mm:
            out.append(f"{name}: the qform and sform disagree (a corner of the image moves {diff:.2f} mm "
                       "between them); viewers and navigators differ on which one they read")
    zooms = header.get_zooms()
    if t_r and len(zooms) > 3 and zooms[3] > 0:
        header_tr = float(zooms[3]) / (1000.0 if header.get_xyzt_units()[1] == "msec" else 1.0)
        if abs(header_tr - float(t_r)) > 0.01:
            out.append(f"{name}: header TR {header_tr:g} s differs from the sidecar's RepetitionTime "
                       f"{float(t_r):g} s; using the sidecar (BIDS rule)")
    return out


def _reliability_findings(unc: dict, limit_mm: float) -> list[Finding]:
    """THE reliability finding (split-half), plus the bootstrap spread as an info detail."""
    out = []
    rel = unc.get("reliability") if isinstance(unc.get("reliability"), dict) else None
    if rel is not None:
        words = str(rel.get("plain_words") or "").strip()
        med = _num(rel, "median_distance_mm")
        limit = _num(rel, "limit_mm")
        limit = limit_mm if limit is None else limit
        detail = words or (f"split-half targets lie a median {med:.1f} mm apart (limit {limit:g} mm)"
                           if med is not None else "split-half reliability not computed")
        if rel.get("reproducible") is False:
            out.append(Finding("warn", f"target not reproducible: {detail}", "reliability", kind="reliability"))
        elif rel.get("reproducible") is True:
            out.append(Finding("pass", detail, "reliability", kind="reliability"))
        else:
            out.append(Finding("info", detail, "reliability", kind="reliability"))
    else:
        # older target JSONs: the repeated split-half median, else the targeting stage's flag, else
        # the single first-vs-second-half distance
        med = _num(unc, "split_half_median_distance_mm")
        what = "repeated split halves lie a median"
        if med is None and unc.get("confident") is not False:
            med, what = _num(unc, "split_half_distance_mm"), "the first and second half lie"
        if med is not None and med > limit_mm:
            out.append(Finding("warn", f"target not reproducible: the targets of {what} {med:.1f} mm apart "
                                       f"(limit {limit_mm:g} mm)", "reliability", kind="reliability"))
        elif med is not None:
            out.append(Finding("pass", f"the targets of {what} {med:.1f} mm apart (limit {limit_mm:g} mm)",
                               "reliability", kind="reliability"))
        elif unc.get("confident") is False:
            out.append(Finding("warn", "the targeting stage flagged the target as uncertain (see Uncertainty)",
                               "reliability", kind="reliability"))
    p95 = _num(unc, "p95_distance_mm")
    if p95 is None:
        out.append(Finding("info", "bootstrap uncertainty not computed", "reliability", kind="bootstrap"))
    else:
        out.append(Finding("info", f"95% of bootstrap targets within {p95:.1f} mm (the bootstrap shares data "
                                   "between resamples and can look stable on noise; the split-half check "
                                   "above is the reliability measure)", "reliability", kind="bootstrap"))
    if unc.get("multiple_candidates") is True:
        cands = unc.get("candidates") if isinstance(unc.get("candidates"), list) else []
        where = "; ".join(
            f"MNI {_fmt3(c.get('target_mni_ras_mm'))}"
            + (f" with {_fmt(100 * float(c.get('support_fraction', c.get('support'))), 0)} % of the split-half targets"
               if c.get("support_fraction", c.get("support")) is not None else "")
            for c in cands[:3] if isinstance(c, dict))
        out.append(Finding("warn", CANDIDATES_TEXT + (f": {where}" if where else ""), "reliability", kind="candidates"))
    return out


CANDIDATES_TEXT = "two or more separated candidate targets"


def withhold_coordinates_on_fail(findings: list[Finding]) -> list[Finding]:
    """The findings as shown for a unit: when any finding FAILs, the candidate-target finding loses its
    coordinates (a coordinate that failed QC is never presented, not even as a candidate)."""
    if not any(f.level == "fail" for f in findings):
        return findings
    return [Finding(f.level, CANDIDATES_TEXT + " (coordinates withheld: verdict FAIL)", f.topic, f.kind)
            if f.kind == "candidates" else f for f in findings]


def _fmt3(value) -> str:
    p = _point(value)
    return "n/a" if p is None else "(" + ", ".join(f"{v:.1f}" for v in p) + ")"


def _registration_findings(registration_qc: dict) -> list[Finding]:
    out = []
    checks = registration_qc.get("checks") if isinstance(registration_qc.get("checks"), list) else []
    for c in checks:
        if not isinstance(c, dict):
            continue
        level = str(c.get("level", "info")).lower()
        level = level if level in ("pass", "warn", "fail", "info") else "info"
        text = str(c.get("text") or c.get("name") or "registration check")
        if level == "fail" and "not usable" not in text:  # tmstarget.preproc.registration_qc texts say it themselves
            text = f"the T1w could not be aligned reliably: {text}"
        kind = "registration_bold" if str(c.get("name", "")).startswith("bold_") else "registration_t1w"
        out.append(Finding(level, text, "registration", kind=kind))
    status = str(registration_qc.get("status", "")).lower()
    if status == "fail" and not any(f.level == "fail" for f in out):
        out.append(Finding("fail", "the T1w could not be aligned to the template (registration QC failed)",
                           "registration", kind="registration_t1w"))
    return out


def qc_findings(target_json: dict | None, native_json: dict | None, denoise_qc: dict | None,
                seed_json: dict | None, *, fail_minutes: float = 5.0, warn_minutes: float = 8.0,
                fail_mean_fd_mm: float = 0.5, warn_mean_fd_mm: float = 0.2,
                warn_seed_low_tsnr_fraction: float = 0.5, warn_seed_in_mask_fraction: float = 0.8,
                warn_abs_z: float = 0.1, warn_bootstrap_p95_mm: float | None = None,
                warn_gsr_shift_mm: float = 10.0, warn_roundtrip_mm: float = 1.0,
                reliability_limit_mm: float = 8.0, qform_sform_tol_mm: float = 0.1,
                header_warnings: list[str] | None = None,
                registration_qc: dict | None = None) -> list[Finding]:
    """Every QC check with its level and topic (thresholds: :data:`THRESHOLDS` and the module docstring).

    Parameters
    ----------
    target_json, native_json, denoise_qc, seed_json : dict or None
        Contents of ``*_desc-target_markers.json`` (MNI), its T1w-space ``.json``, the
        ``*_desc-denoise_qc.json`` and the seed-map sidecar (docs/architecture.md). ``None`` when a
        file is missing.
    fail_minutes, warn_minutes : float
        Minutes of data kept after censoring below which the unit fails / warns
        (``denoising.min_retained_minutes`` / ``warn_retained_minutes``).
    fail_mean_fd_mm, warn_mean_fd_mm : float
        Mean framewise displacement (Power, mm) above which the unit fails / warns.
    warn_seed_low_tsnr_fraction : float
        Fraction of seed voxels below the sidecar's ``min_seed_tsnr`` above which to warn (dropout).
    warn_seed_in_mask_fraction : float
        Fraction of seed voxels inside the BOLD mask below which to warn (seed outside the FOV).
    warn_abs_z : float
        Fisher z at the target whose magnitude is below this gives a warning (weak anticorrelation);
        z >= 0 fails.
    warn_bootstrap_p95_mm : ignored
        Kept for old callers: the bootstrap spread is an info detail now (the split-half distance,
        ``reliability_limit_mm``, is the reliability check).
    warn_gsr_shift_mm, warn_roundtrip_mm : float
        Distances in mm above which to warn.
    reliability_limit_mm : float
        Split-half median distance (mm) above which the target is not reproducible (used when the
        target JSON records no ``uncertainty.reliability.limit_mm``).
    qform_sform_tol_mm : float
        Largest accepted qform/sform disagreement of the navigation T1w (mm).
    header_warnings : list of str, optional
        Header warnings of the inputs (``HeaderWarnings`` of the preprocessing sidecars, or
        :func:`bold_header_warnings`); each becomes a WARN with topic ``header``.
    registration_qc : dict, optional
        ``{"checks": [{"name", "value", "threshold", "level", "text"}], "status"}``; each check
        becomes a finding with topic ``registration``.

    Returns
    -------
    list of Finding
        Level ``info`` marks checks that could not be made (value not recorded) or details. When any
        finding FAILs, no finding carries a target coordinate (:func:`withhold_coordinates_on_fail`).
    """
    out: list[Finding] = []
    t = target_json or {}
    if target_json is None:
        out.append(Finding("fail", "no target file: the targeting stage did not produce a target", "target", kind="no_target"))
    if native_json is None:
        out.append(Finding("fail", "no T1w-space target: the native-space stage failed or did not run; the MNI "
                                   "coordinate alone cannot be used for neuronavigation", "navigation", kind="no_native"))

    # data quantity and motion
    minutes = _num(denoise_qc, "minutes_kept")
    if minutes is None:
        minutes = _num(t, "denoising", "minutes_kept")
    if minutes is None:
        out.append(Finding("warn", "minutes of data kept after censoring not recorded: cannot check data quantity",
                           kind="minutes_unknown"))
    elif minutes < fail_minutes:
        out.append(Finding("fail", f"only {minutes:.1f} min of data kept after censoring "
                                   f"(minimum {fail_minutes:g} min, denoising.min_retained_minutes)", kind="minutes"))
    elif minutes < warn_minutes:
        out.append(Finding("warn", f"only {minutes:.1f} min of data kept after censoring (below {warn_minutes:g} min "
                                   "targets are less reliable)", kind="minutes"))
    else:
        out.append(Finding("pass", f"{minutes:.1f} min of data kept after censoring", kind="minutes"))
    bad_volumes = sum(len(run.get("constant_volumes") or []) for run in (denoise_qc or {}).get("runs") or []
                      if isinstance(run, dict))
    if bad_volumes:
        out.append(Finding("warn", f"{bad_volumes} all-zero or constant volume(s) in the BOLD data were censored "
                                   "(a scanner or conversion fault, not brain signal)", kind="constant_volumes"))
    fd = mean_fd_mm(denoise_qc)
    if fd is None:
        out.append(Finding("info", "mean framewise displacement not recorded", "motion", kind="motion"))
    elif fd > fail_mean_fd_mm:
        out.append(Finding("fail", f"mean framewise displacement {fd:.2f} mm (above {fail_mean_fd_mm:g} mm)", "motion", kind="motion"))
    elif fd > warn_mean_fd_mm:
        out.append(Finding("warn", f"mean framewise displacement {fd:.2f} mm (above {warn_mean_fd_mm:g} mm)", "motion", kind="motion"))
    else:
        out.append(Finding("pass", f"mean framewise displacement {fd:.2f} mm", "motion", kind="motion"))

    # seed
    if seed_json is None:
        out.append(Finding("warn", "seed-map sidecar missing: seed signal dropout cannot be checked", "seed", kind="seed_missing"))
    else:
        low = _num(seed_json, "seed_low_tsnr_fraction")
        thr = _num(seed_json, "min_seed_tsnr")
        med = _num(seed_json, "seed_median_tsnr")
        if low is None:
            out.append(Finding("info", "seed tSNR not recorded", "seed", kind="seed_tsnr"))
        elif low > warn_seed_low_tsnr_fraction:
            out.append(Finding("warn", f"{100 * low:.0f}% of seed voxels have tSNR below "
                                       f"{_fmt(thr, 0)} (median {_fmt(med)}): possible sgACC signal dropout", "seed", kind="seed_tsnr"))
        else:
            out.append(Finding("pass", f"seed median tSNR {_fmt(med)}, {100 * low:.0f}% of seed voxels "
                                       f"below {_fmt(thr, 0)}", "seed", kind="seed_tsnr"))
        total, inside = _num(seed_json, "seed_voxels_total"), _num(seed_json, "seed_voxels_in_mask")
        if total and inside is not None and inside / total < warn_seed_in_mask_fraction:
            out.append(Finding("warn", f"only {inside:.0f} of {total:.0f} seed voxels lie inside the BOLD mask "
                                       "(seed partly outside the field of view)", "seed", kind="seed_fov"))

    if target_json is not None:
        z = _num(t, "z_at_target")
        if z is None:
            out.append(Finding("info", "seed-map value at the target not recorded", "target", kind="anticorrelation"))
        elif z >= 0:
            out.append(Finding("fail", f"the target is not anticorrelated with the seed (Fisher z = {z:.2f})",
                               "target", kind="anticorrelation"))
        elif abs(z) < warn_abs_z:
            out.append(Finding("warn", f"weak anticorrelation at the target (Fisher z = {z:.2f}, "
                                       f"|z| below {warn_abs_z:g})", "target", kind="anticorrelation"))
        else:
            out.append(Finding("pass", f"anticorrelation at the target: Fisher z = {z:.2f}", "target",
                               kind="anticorrelation"))

        unc = t.get("uncertainty") if isinstance(t.get("uncertainty"), dict) else None
        if unc is None:
            out.append(Finding("info", "bootstrap uncertainty not computed", "reliability", kind="bootstrap"))
        else:
            out.extend(_reliability_findings(unc, reliability_limit_mm))

        gsr = t.get("gsr_comparison") if isinstance(t.get("gsr_comparison"), dict) else None
        shift = _num(gsr, "shift_mm")
        if gsr is None:
            out.append(Finding("info", "no GSR / no-GSR comparison computed", "gsr", kind="gsr"))
        elif shift is None:
            out.append(Finding("warn", "the no-GSR comparison gave no target: "
                                       + str(gsr.get("note") or "reason not recorded"), "gsr", kind="gsr"))
        elif shift > warn_gsr_shift_mm:
            out.append(Finding("warn", f"the target moves {shift:.1f} mm without global signal regression "
                                       f"(above {warn_gsr_shift_mm:g} mm): it depends on GSR", "gsr", kind="gsr"))
        else:
            # 0.0 means the same voxel: say so instead of a precision below the grid (issue 12)
            out.append(Finding("pass", "the target is the same voxel with and without global signal regression"
                               if shift < 0.5 else f"target moves {shift:.1f} mm without global signal regression",
                               "gsr", kind="gsr"))

        if t.get("in_ba46") is False:
            out.append(Finding("warn", "target lies outside BA46 (HCPex label)", "target", kind="ba46"))
        elif t.get("in_ba46") is None:
            out.append(Finding("info", "BA46 membership not recorded", "target", kind="ba46"))
        if t.get("in_search_mask") is False:
            out.append(Finding("warn", "target lies outside the search mask", "target", kind="search_mask"))

    if native_json is not None:
        rt = _num(native_json, "roundtrip_error_mm")
        if rt is not None and rt > warn_roundtrip_mm:
            out.append(Finding("warn", f"MNI->T1w->MNI round trip error {rt:.2f} mm (above {warn_roundtrip_mm:g} mm): "
                                       "check the transforms", "navigation", kind="roundtrip"))
        qs = native_json.get("t1w_qform_sform") if isinstance(native_json.get("t1w_qform_sform"), dict) else None
        diff = _num(qs, "max_difference_mm")
        if diff is not None and diff > qform_sform_tol_mm:
            out.append(Finding("fail", f"the navigation T1w's qform and sform disagree by {diff:.2f} mm (above "
                                       f"{qform_sform_tol_mm:g} mm): navigators would place the target differently",
                               "header", kind="t1w_qform_sform"))
        elif qs is not None:
            out.append(Finding("pass", f"navigation T1w header consistent ({qs.get('affine_used', 'sform')} used, "
                                       f"qform/sform difference {_fmt(diff, 2)} mm)", "header", kind="t1w_qform_sform"))

    seen = set()
    for message in header_warnings or []:
        f = header_finding(message)
        if f.text not in seen:
            seen.add(f.text)
            out.append(f)
    if registration_qc:
        out.extend(_registration_findings(registration_qc))
    return withhold_coordinates_on_fail(out)


def assess_qc(target_json: dict | None, native_json: dict | None, denoise_qc: dict | None, seed_json: dict | None,
              **thresholds) -> tuple[str, list[str]]:
    """Overall QC status of one unit and the reasons for it.

    Parameters
    ----------
    target_json, native_json, denoise_qc, seed_json : dict or None
        As in :func:`qc_findings`; ``native_json`` is None when the T1w stage failed.
    **thresholds
        Keyword arguments of :func:`qc_findings` (thresholds as in :data:`THRESHOLDS`,
        ``header_warnings``, ``registration_qc``).

    Returns
    -------
    status : {"pass", "warn", "fail"}
        The worst level among the checks.
    reasons : list of str
        The fail reasons first, then the warnings; empty when the status is pass.
    """
    findings = qc_findings(target_json, native_json, denoise_qc, seed_json, **thresholds)
    return _status_and_reasons(findings)


def _status_and_reasons(findings: list[Finding]) -> tuple[str, list[str]]:
    fails = [scrub_paths(f.text) for f in findings if f.level == "fail"]
    warns = [scrub_paths(f.text) for f in findings if f.level == "warn"]
    status = "fail" if fails else "warn" if warns else "pass"
    return status, fails + warns


def assess(target_json: dict | None, native_json: dict | None, denoise_qc: dict | None,
           seed_json: dict | None, *, unit: str = "", thresholds: dict | None = None,
           header_warnings: list[str] | None = None, registration_qc: dict | None = None,
           sources: list[str] | None = None) -> dict:
    """The verdict of one unit: PASS, WARN or FAIL with its reasons, findings and action (JSON contract).

    Parameters
    ----------
    target_json, native_json, denoise_qc, seed_json : dict or None
        As in :func:`qc_findings`.
    unit : str
        ``sub-01`` or ``sub-01_ses-1``.
    thresholds : dict, optional
        ``{name: value}`` for names of :data:`THRESHOLDS` (from :func:`thresholds_from_config`);
        missing names take the defaults.
    header_warnings : list of str, optional
        Header warnings of the inputs (each a WARN, topic ``header``).
    registration_qc : dict or None
        ``{"checks": [{"name", "value", "threshold", "level", "text"}], "status"}`` (T1w alignment).
    sources : list of str, optional
        Input file names (recorded as ``Sources``; absolute paths are cut to file names).

    Returns
    -------
    dict
        ``status`` (pass|warn|fail), ``status_word`` (PASS|WARN|FAIL), ``action``, ``reasons`` (fail
        texts first, then warn texts), ``findings`` ([{level, topic, text}]), ``coordinate_usable``
        (False on fail), ``thresholds`` ({name: {value, config_key}}), ``unit``, ``Sources``.
    """
    values = _resolved_thresholds(thresholds)
    findings = qc_findings(target_json, native_json, denoise_qc, seed_json,
                           **{k: v for k, v in values.items()},
                           header_warnings=header_warnings, registration_qc=registration_qc)
    status, reasons = _status_and_reasons(findings)
    minutes = _num(denoise_qc, "minutes_kept")
    if minutes is None:
        minutes = _num(target_json, "denoising", "minutes_kept")
    return {
        "status": status,
        "status_word": status.upper(),
        "action": action_for(status, findings, values, minutes),
        "reasons": reasons,
        "findings": [f.as_dict() for f in findings],
        "coordinate_usable": status != "fail",
        "thresholds": {name: {"value": values[name], "config_key": THRESHOLDS[name][0]} for name in THRESHOLDS},
        "unit": unit,
        "Sources": sorted({Path(str(s)).name for s in (sources or []) if s}),
    }


def failed_verdict(unit: str, reasons: list[str], thresholds: dict | None = None) -> dict:
    """A FAIL verdict for a unit whose workflow stopped before a verdict could be computed.

    ``reasons`` are the job errors (paths cut to file names).
    """
    values = _resolved_thresholds(thresholds)
    texts = [scrub_paths(r) for r in reasons] or ["the workflow stopped before this unit's target was computed"]
    return {
        "status": "fail", "status_word": "FAIL",
        "action": ACTIONS["fail"] + ": " + FINDING_ACTIONS["workflow_error"]["fail"],
        "reasons": texts,
        "findings": [{"level": "fail", "topic": "data", "kind": "workflow_error", "text": t} for t in texts],
        "coordinate_usable": False,
        "thresholds": {name: {"value": values[name], "config_key": THRESHOLDS[name][0]} for name in THRESHOLDS},
        "unit": unit, "Sources": [],
    }


# ----------------------------------------------------------------------------- workflow step


def run_verdict(inputs: dict, out_json, unit: str, thresholds: dict | None = None,
                bold_headers: list | None = None) -> dict:
    """Compute and write the verdict JSON of one unit (rule ``verdict``).

    Parameters
    ----------
    inputs : dict
        Paths: ``target_json``, ``native_json``, ``denoise_qc_json``, ``seed_json``; optional
        ``bold_sidecars`` (preprocessing sidecars whose ``HeaderWarnings`` are read, raw route) and
        ``registration_qc`` (JSON as in :func:`assess`). Missing files are tolerated (they become
        findings).
    out_json : path
        ``*_desc-verdict_qc.json`` (written atomically).
    unit : str
        ``sub-01`` or ``sub-01_ses-1``.
    thresholds : dict, optional
        From :func:`thresholds_from_config` of the configuration the workflow ran with.
    bold_headers : list of (path, t_r), optional
        BOLD inputs whose headers are checked here (fMRIPrep route: :func:`bold_header_warnings`).

    Returns
    -------
    dict
        The verdict (see :func:`assess`).
    """
    from tmstarget.io.files import write_json

    def load(key):
        value = inputs.get(key)
        return read_json_tolerant(value)[0] if value else None

    values = _resolved_thresholds(thresholds)
    warnings: list[str] = []
    sidecars = inputs.get("bold_sidecars") or []
    for path in ([sidecars] if isinstance(sidecars, (str, Path)) else sidecars):
        side, _ = read_json_tolerant(path)
        warnings += [str(w) for w in (side or {}).get("HeaderWarnings") or []]
    for path, t_r in bold_headers or []:
        warnings += bold_header_warnings(path, t_r, values["qform_sform_tol_mm"])
    sources = [inputs.get(k) for k in ("target_json", "native_json", "denoise_qc_json", "seed_json",
                                       "registration_qc")]
    verdict = assess(load("target_json"), load("native_json"), load("denoise_qc_json"), load("seed_json"),
                     unit=unit, thresholds=values, header_warnings=warnings,
                     registration_qc=load("registration_qc"), sources=[s for s in sources if s])
    write_json(verdict, out_json)
    return verdict


NOT_EXPORTED = "NOT_EXPORTED.txt"


def export_gate(verdict_json, nav_dir) -> bool:
    """Whether navigator files may be written for a unit; on FAIL write ``nav_dir/NOT_EXPORTED.txt`` saying why.

    Parameters
    ----------
    verdict_json : path
        ``*_desc-verdict_qc.json`` of the unit. Missing or unreadable counts as not usable.
    nav_dir : path
        The unit's ``nav/`` folder (created).

    Returns
    -------
    bool
        True when ``coordinate_usable`` is true (PASS or WARN); False otherwise, after writing the note.
    """
    from tmstarget.io.files import atomic_path

    nav_dir = Path(nav_dir)
    nav_dir.mkdir(parents=True, exist_ok=True)
    verdict, problem = read_json_tolerant(verdict_json)
    note = nav_dir / NOT_EXPORTED
    if verdict and verdict.get("coordinate_usable") is True and verdict.get("status") in ("pass", "warn"):
        if note.exists():
            note.unlink()
        return True
    lines = [f"No neuronavigation file was written for {(verdict or {}).get('unit') or 'this unit'}: "
             f"the QC verdict is {(verdict or {}).get('status_word') or 'not available'} "
             "and the coordinate must not be used."]
    if problem:
        lines.append(f"The verdict could not be read: {problem}.")
    reasons = (verdict or {}).get("reasons") or []
    if reasons:
        lines.append("Reasons:")
        lines += [f"  - {scrub_paths(r)}" for r in reasons]
    if (verdict or {}).get("action"):
        lines.append(f"Action: {scrub_paths(verdict['action'])}")
    with atomic_path(note) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return False
