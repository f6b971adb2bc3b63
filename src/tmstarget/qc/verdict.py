"""The verdict of one unit: PASS, WARN or FAIL with its reasons, findings and action (the JSON contract),
the thresholds it is judged by, and the workflow step that writes it (rule ``verdict``)."""

from __future__ import annotations

from pathlib import Path

from tmstarget.config.settings import default_config
from tmstarget.qc.actions import ACTIONS, FINDING_ACTIONS, action_for
from tmstarget.qc.findings import Finding, qc_findings
from tmstarget.qc.headers import bold_header_warnings
from tmstarget.qc.metrics import read_json_tolerant
from tmstarget.qc.text import num, scrub_paths

STATUS_ORDER = {"pass": 0, "warn": 1, "fail": 2}


# ----------------------------------------------------------------------------- thresholds

#: Every QC threshold the verdict applies: name -> its config key (defaults in config/config.yaml). The
#: workflow passes the values of the configuration it ran with (:func:`thresholds_from_config`), so the
#: verdict, the report and the terminal judge a unit by the same numbers that shaped it.
THRESHOLDS = {
    "fail_minutes": "denoising.min_retained_minutes",
    "warn_minutes": "denoising.warn_retained_minutes",
    "fail_mean_fd_mm": "qc.fail_mean_fd_mm",
    "warn_mean_fd_mm": "qc.warn_mean_fd_mm",
    "warn_seed_low_tsnr_fraction": "seed.max_low_tsnr_fraction",
    "warn_seed_in_mask_fraction": "qc.warn_seed_in_mask_fraction",
    "warn_abs_z": "qc.warn_abs_z",
    "warn_gsr_shift_mm": "qc.warn_gsr_shift_mm",
    "warn_roundtrip_mm": "qc.warn_roundtrip_mm",
    "reliability_limit_mm": "targeting.confident_split_half_median_mm",
    "qform_sform_tol_mm": "native.qform_sform_tol_mm",
}


def _value_at(config: dict | None, key: str):
    cur = config or {}
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def default_thresholds() -> dict:
    """``{name: value}`` of :data:`THRESHOLDS` in config/config.yaml."""
    defaults = default_config()
    return {name: float(_value_at(defaults, key)) for name, key in THRESHOLDS.items()}


def thresholds_from_config(config: dict | None) -> dict:
    """The QC thresholds of a configuration: ``{name: value}`` for every key of :data:`THRESHOLDS`.

    Parameters
    ----------
    config : dict or None
        The resolved tmstarget configuration (as saved in ``OUT/logs/config.yaml``); missing keys
        take the defaults of config/config.yaml.
    """
    defaults = default_thresholds()
    return {name: float(defaults[name] if _value_at(config, key) is None else _value_at(config, key))
            for name, key in THRESHOLDS.items()}


def resolved_thresholds(thresholds: dict | None) -> dict:
    """``{name: value}`` for every name of :data:`THRESHOLDS`: the given values over the defaults (an
    unknown name is a TypeError)."""
    values = default_thresholds()
    unknown = sorted(set(thresholds or {}) - set(values) - {"warn_bootstrap_p95_mm"})
    if unknown:
        raise TypeError(f"unknown QC threshold(s) {unknown}; known: {sorted(values)}")
    values.update({k: float(v) for k, v in (thresholds or {}).items() if k in values})
    return values


# ----------------------------------------------------------------------------- QC assessment


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
           sources: list[str] | None = None, distortion_corrections: list[dict] | None = None) -> dict:
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
    distortion_corrections : list of dict, optional
        ``SusceptibilityDistortionCorrection`` of the preprocessed BOLD sidecars (raw route).

    Returns
    -------
    dict
        ``status`` (pass|warn|fail), ``status_word`` (PASS|WARN|FAIL), ``action``, ``reasons`` (fail
        texts first, then warn texts), ``findings`` ([{level, topic, text}]), ``coordinate_usable``
        (False on fail), ``thresholds`` ({name: {value, config_key}}), ``unit``, ``Sources``.
    """
    values = resolved_thresholds(thresholds)
    findings = qc_findings(target_json, native_json, denoise_qc, seed_json,
                           **{k: v for k, v in values.items()},
                           header_warnings=header_warnings, registration_qc=registration_qc,
                           distortion_corrections=distortion_corrections)
    status, reasons = _status_and_reasons(findings)
    minutes = num(denoise_qc, "minutes_kept")
    if minutes is None:
        minutes = num(target_json, "denoising", "minutes_kept")
    return {
        "status": status,
        "status_word": status.upper(),
        "action": action_for(status, findings, values, minutes),
        "reasons": reasons,
        "findings": [f.as_dict() for f in findings],
        "coordinate_usable": status != "fail",
        "thresholds": {name: {"value": values[name], "config_key": THRESHOLDS[name]} for name in THRESHOLDS},
        "unit": unit,
        "Sources": sorted({Path(str(s)).name for s in (sources or []) if s}),
    }


def failed_verdict(unit: str, reasons: list[str], thresholds: dict | None = None) -> dict:
    """A FAIL verdict for a unit whose workflow stopped before a verdict could be computed.

    ``reasons`` are the job errors (paths cut to file names).
    """
    values = resolved_thresholds(thresholds)
    texts = [scrub_paths(r) for r in reasons] or ["the workflow stopped before this unit's target was computed"]
    return {
        "status": "fail", "status_word": "FAIL",
        "action": ACTIONS["fail"] + ": " + FINDING_ACTIONS["workflow_error"]["fail"],
        "reasons": texts,
        "findings": [{"level": "fail", "topic": "data", "kind": "workflow_error", "text": t} for t in texts],
        "coordinate_usable": False,
        "thresholds": {name: {"value": values[name], "config_key": THRESHOLDS[name]} for name in THRESHOLDS},
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

    values = resolved_thresholds(thresholds)
    warnings: list[str] = []
    corrections: list[dict] = []
    sidecars = inputs.get("bold_sidecars") or []
    for path in ([sidecars] if isinstance(sidecars, (str, Path)) else sidecars):
        side, _ = read_json_tolerant(path)
        warnings += [str(w) for w in (side or {}).get("HeaderWarnings") or []]
        if isinstance((side or {}).get("SusceptibilityDistortionCorrection"), dict):
            corrections.append(side["SusceptibilityDistortionCorrection"])
    for path, t_r in bold_headers or []:
        warnings += bold_header_warnings(path, t_r, values["qform_sform_tol_mm"])
    sources = [inputs.get(k) for k in ("target_json", "native_json", "denoise_qc_json", "seed_json",
                                       "registration_qc")]
    verdict = assess(load("target_json"), load("native_json"), load("denoise_qc_json"), load("seed_json"),
                     unit=unit, thresholds=values, header_warnings=warnings,
                     registration_qc=load("registration_qc"), sources=[s for s in sources if s],
                     distortion_corrections=corrections)
    write_json(verdict, out_json)
    return verdict
