"""Quality-control findings of one unit (subject or session): every check with its level and topic.

Functions here read the JSON outputs of the pipeline (target, T1w-space target, denoise QC, seed
sidecar) and turn them into findings with a level (pass, warn, fail, info). They hold no HTML: the
report (:mod:`tmstarget.report`), the dataset table (:mod:`tmstarget.qc.group`) and the terminal summary
all use them, so every place says the same thing.

QC thresholds (:func:`tmstarget.qc.verdict.assess`; each is a config key, see
:data:`tmstarget.qc.verdict.THRESHOLDS`)
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
field maps found but not used         warn     the BOLD sidecar's ``SusceptibilityDistortionCorrection.Finding``
distortion correction applied         info     (which field map, the shift it applied)
====================================  =======  ===============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from tmstarget.qc.metrics import mean_fd_mm
from tmstarget.qc.text import fmt, fmt3, num, scrub_paths

TOPICS = ("data", "motion", "seed", "target", "reliability", "gsr", "registration", "distortion", "header",
          "navigation")


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

def _reliability_findings(unc: dict, limit_mm: float) -> list[Finding]:
    """THE reliability finding (split-half), plus the bootstrap spread as an info detail."""
    out = []
    rel = unc.get("reliability") if isinstance(unc.get("reliability"), dict) else None
    if rel is not None:
        words = str(rel.get("plain_words") or "").strip()
        med = num(rel, "median_distance_mm")
        limit = num(rel, "limit_mm")
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
        med = num(unc, "split_half_median_distance_mm")
        what = "repeated split halves lie a median"
        if med is None and unc.get("confident") is not False:
            med, what = num(unc, "split_half_distance_mm"), "the first and second half lie"
        if med is not None and med > limit_mm:
            out.append(Finding("warn", f"target not reproducible: the targets of {what} {med:.1f} mm apart "
                                       f"(limit {limit_mm:g} mm)", "reliability", kind="reliability"))
        elif med is not None:
            out.append(Finding("pass", f"the targets of {what} {med:.1f} mm apart (limit {limit_mm:g} mm)",
                               "reliability", kind="reliability"))
        elif unc.get("confident") is False:
            out.append(Finding("warn", "the targeting stage flagged the target as uncertain (see Uncertainty)",
                               "reliability", kind="reliability"))
    p95 = num(unc, "p95_distance_mm")
    if p95 is None:
        out.append(Finding("info", "bootstrap uncertainty not computed", "reliability", kind="bootstrap"))
    else:
        out.append(Finding("info", f"95% of bootstrap targets within {p95:.1f} mm (the bootstrap shares data "
                                   "between resamples and can look stable on noise; the split-half check "
                                   "above is the reliability measure)", "reliability", kind="bootstrap"))
    if unc.get("multiple_candidates") is True:
        cands = unc.get("candidates") if isinstance(unc.get("candidates"), list) else []
        where = "; ".join(
            f"MNI {fmt3(c.get('target_mni_ras_mm'))}"
            + (f" with {fmt(100 * float(c.get('support_fraction', c.get('support'))), 0)} % of the split-half targets"
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


def distortion_findings(corrections: list[dict] | None) -> list[Finding]:
    """Findings of the runs' susceptibility distortion correction (the ``SusceptibilityDistortionCorrection``
    entry of each preprocessed BOLD sidecar, :mod:`tmstarget.preproc.bold`).

    Field maps found but not used (the entry's ``Finding``): WARN, kind ``fieldmap_unused``. A correction
    applied: INFO (kind ``distortion``). Runs without field maps give no finding (the report says "not
    corrected"), so their verdict is unchanged.
    """
    out = []
    for entry in corrections or []:
        if not isinstance(entry, dict):
            continue
        if entry.get("Finding"):
            out.append(Finding("warn", str(entry["Finding"]), "distortion", kind="fieldmap_unused"))
        elif entry.get("Applied") is True:
            shift = num(entry, "MedianAbsShiftInHead_mm")
            detail = f" (median shift in the head {shift:.1f} mm)" if shift is not None else ""
            out.append(Finding("info", f"{entry.get('Description') or 'susceptibility distortion corrected'}{detail}",
                               "distortion", kind="distortion"))
    return out


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
                registration_qc: dict | None = None,
                distortion_corrections: list[dict] | None = None) -> list[Finding]:
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
    distortion_corrections : list of dict, optional
        ``SusceptibilityDistortionCorrection`` of each preprocessed BOLD sidecar
        (:func:`distortion_findings`).

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
    minutes = num(denoise_qc, "minutes_kept")
    if minutes is None:
        minutes = num(t, "denoising", "minutes_kept")
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
        low = num(seed_json, "seed_low_tsnr_fraction")
        thr = num(seed_json, "min_seed_tsnr")
        med = num(seed_json, "seed_median_tsnr")
        if low is None:
            out.append(Finding("info", "seed tSNR not recorded", "seed", kind="seed_tsnr"))
        elif low > warn_seed_low_tsnr_fraction:
            out.append(Finding("warn", f"{100 * low:.0f}% of seed voxels have tSNR below "
                                       f"{fmt(thr, 0)} (median {fmt(med)}): possible sgACC signal dropout", "seed", kind="seed_tsnr"))
        else:
            out.append(Finding("pass", f"seed median tSNR {fmt(med)}, {100 * low:.0f}% of seed voxels "
                                       f"below {fmt(thr, 0)}", "seed", kind="seed_tsnr"))
        total, inside = num(seed_json, "seed_voxels_total"), num(seed_json, "seed_voxels_in_mask")
        if total and inside is not None and inside / total < warn_seed_in_mask_fraction:
            out.append(Finding("warn", f"only {inside:.0f} of {total:.0f} seed voxels lie inside the BOLD mask "
                                       "(seed partly outside the field of view)", "seed", kind="seed_fov"))

    if target_json is not None:
        z = num(t, "z_at_target")
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
        shift = num(gsr, "shift_mm")
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
        rt = num(native_json, "roundtrip_error_mm")
        if rt is not None and rt > warn_roundtrip_mm:
            out.append(Finding("warn", f"MNI->T1w->MNI round trip error {rt:.2f} mm (above {warn_roundtrip_mm:g} mm): "
                                       "check the transforms", "navigation", kind="roundtrip"))
        qs = native_json.get("t1w_qform_sform") if isinstance(native_json.get("t1w_qform_sform"), dict) else None
        diff = num(qs, "max_difference_mm")
        if diff is not None and diff > qform_sform_tol_mm:
            out.append(Finding("fail", f"the navigation T1w's qform and sform disagree by {diff:.2f} mm (above "
                                       f"{qform_sform_tol_mm:g} mm): navigators would place the target differently",
                               "header", kind="t1w_qform_sform"))
        elif qs is not None:
            out.append(Finding("pass", f"navigation T1w header consistent ({qs.get('affine_used', 'sform')} used, "
                                       f"qform/sform difference {fmt(diff, 2)} mm)", "header", kind="t1w_qform_sform"))

    seen = set()
    for message in header_warnings or []:
        f = header_finding(message)
        if f.text not in seen:
            seen.add(f.text)
            out.append(f)
    if registration_qc:
        out.extend(_registration_findings(registration_qc))
    out.extend(distortion_findings(distortion_corrections))
    return withhold_coordinates_on_fail(out)
