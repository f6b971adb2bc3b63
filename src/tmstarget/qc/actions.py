"""What to do with a unit's coordinate: the action sentence of its verdict, from the kinds of its findings.

Each finding of :func:`tmstarget.qc.findings.qc_findings` carries a ``kind`` (which check it is); each kind has
its own action (:data:`FINDING_ACTIONS`), so a header TR mismatch never gets the orientation remedy
and constant volumes never ask for more minutes. The minutes to acquire are computed from the run's
thresholds (:func:`minutes_action`). Findings are read by their ``level`` and ``kind`` only.
"""

from __future__ import annotations

import numpy as np

#: What to do with the coordinate, by status: the start of the action sentence (WARN and FAIL go on with
#: the action of each finding, :data:`FINDING_ACTIONS`). The words stay within "research coordinate,
#: not a clinical verdict" (the report's caveat): no status promises or mentions clinical use.
ACTIONS = {
    "pass": "usable for research targeting: load the named T1w in the navigator and check the target on the "
            "anatomy before stimulating",
    "warn": "usable for research with care",
    "fail": "do not use this coordinate",
}

#: The action of each kind of finding (``Finding.kind``), by level. ``minutes`` is computed
#: (:func:`minutes_action`): how many more minutes follow from the run's thresholds.
FINDING_ACTIONS = {
    "minutes_unknown": {"warn": "check the denoising QC file (minutes kept not recorded) and rerun the denoising "
                                "step"},
    "constant_volumes": {"warn": "check the BOLD conversion (all-zero or constant volumes are a scanner or "
                                 "conversion fault, censored, so no re-scan is needed for them)"},
    "motion": {"warn": "look at the motion and carpet plots (more head motion than usual)",
               "fail": "re-scan with less head motion (padding, instructions)"},
    "seed_missing": {"warn": "rerun the seed-map step (its sidecar is missing) to check sgACC signal dropout"},
    "seed_tsnr": {"warn": "look at the seed tSNR figure (with sgACC signal dropout the target is less reliable)"},
    "seed_fov": {"warn": "check that the BOLD field of view covers the subgenual cingulate (seed tSNR figure)"},
    "anticorrelation": {"warn": "compare with the anatomical BA46 site (the anticorrelation at the target is weak)",
                        "fail": "re-scan (the seed map shows no anticorrelated target, check the seed tSNR figure "
                                "first)"},
    "reliability": {"warn": "acquire more data or prefer the anatomical site (the target is not stable in this "
                            "data)"},
    "candidates": {"warn": "choose between the candidate targets with a specialist (Reliability section), or "
                           "acquire more data"},
    "gsr": {"warn": "compare the targets with and without global signal regression (GSR section): the target "
                    "depends on it"},
    "ba46": {"warn": "check on the T1w figure that the target lies in the left middle frontal gyrus"},
    "search_mask": {"warn": "check on the seed map that the target lies in the left-DLPFC search region"},
    "roundtrip": {"warn": "check the T1w-MNI transforms (round trip above the limit) and rerun the native step"},
    "t1w_qform_sform": {"fail": "fix the T1w header named above (qform and sform must agree) and rerun"},
    "header_orientation": {"warn": "confirm the left-right orientation (fiducial or vitamin-E marker) before "
                                   "stimulating"},
    "header_tr": {"warn": "confirm the TR with the scan protocol (the sidecar's RepetitionTime was used, not the "
                          "header's) and correct the file that is wrong"},
    "header_qform_sform": {"warn": "check which of qform and sform your navigator reads (they disagree in the "
                                   "file named above)"},
    "header_other": {"warn": "check the image header named above"},
    "registration_bold": {"warn": "look at the BOLD-to-T1w figure (the red edges must follow the brain)",
                          "fail": "the BOLD run could not be aligned to the T1w: check that both scans are of "
                                  "this person and the BOLD header's orientation, and rerun"},
    "registration_t1w": {"warn": "look at the T1w-to-MNI figure (the template edges must follow the brain)",
                         "fail": "the T1w could not be aligned: check the T1w (field of view, artefacts, "
                                 "orientation) and rerun"},
    "fieldmap_unused": {"warn": "the BOLD was not corrected for susceptibility distortion although field maps "
                                "exist: fix the field map or metadata named above and rerun, or check on the "
                                "Distortion correction and BOLD-to-T1w figures that the frontal lobe is aligned"},
    "distortion": {},
    "no_target": {"fail": "rerun the workflow (the targeting stage did not finish, its log says why)"},
    "no_native": {"fail": "rerun the workflow (the T1w-space stage did not finish, its log says why)"},
    "workflow_error": {"fail": "fix the cause named above and run the same command again"},
    "other": {"warn": "read the warning above", "fail": "review the data with a specialist"},
}

def minutes_action(level: str, minutes_kept: float | None, thresholds: dict) -> str | None:
    """The action of a ``minutes`` finding: how many more minutes to acquire, from the run's thresholds.

    WARN (kept below ``warn_minutes``): acquire ``ceil(warn_minutes - kept)`` more minutes. FAIL (below
    ``fail_minutes``): re-scan with a run long enough to keep at least ``warn_minutes``. None when nothing
    is to be done (kept at or above ``warn_minutes``, or not recorded).
    """
    warn, fail = float(thresholds["warn_minutes"]), float(thresholds["fail_minutes"])
    if minutes_kept is None or level not in ("warn", "fail") or minutes_kept >= warn:
        return None
    more = int(np.ceil(round(warn - minutes_kept, 6)))
    plural = "s" if more != 1 else ""
    if level == "fail" and minutes_kept < fail:
        return (f"re-scan with a longer resting-state run (this run kept {minutes_kept:.1f} min, the minimum is "
                f"{fail:g} min, {warn:g} min give a more reliable target)")
    return (f"acquire {more} more minute{plural} of resting-state data (this run kept {minutes_kept:.1f} min, "
            f"{warn:g} min give a more reliable target)")


def finding_action(finding, thresholds: dict, minutes_kept: float | None = None) -> str | None:
    """The action sentence of one WARN or FAIL finding (by its ``kind``, :data:`FINDING_ACTIONS`)."""
    if finding.kind == "minutes":
        return minutes_action(finding.level, minutes_kept, thresholds)
    table = FINDING_ACTIONS.get(finding.kind, FINDING_ACTIONS["other"])
    return table.get(finding.level) or FINDING_ACTIONS["other"].get(finding.level)


def action_for(status: str, findings, thresholds: dict, minutes_kept: float | None = None) -> str:
    """Plain-words action for a status: what to do with this coordinate.

    The status's start (:data:`ACTIONS`) followed by the action of each finding at that level, in
    the order of the findings, each said once (:func:`finding_action`).

    Parameters
    ----------
    status : {"pass", "warn", "fail"}
    findings : list of Finding
        The unit's findings (their kinds choose the actions).
    thresholds : dict
        Resolved thresholds (``warn_minutes``, ``fail_minutes``: how much more data to acquire).
    minutes_kept : float, optional
        Minutes of data kept after censoring.
    """
    if status == "pass":
        return ACTIONS["pass"]
    parts: list[str] = []
    for f in findings:
        if f.level == status:
            action = finding_action(f, thresholds, minutes_kept)
            if action and action not in parts:
                parts.append(action)
    return ACTIONS[status] + (": " + "; ".join(parts) if parts else "")
