"""The dataset table ``group_targets.tsv``: one row per unit with its QC verdict and target.

Values are read with the tolerant readers of :mod:`tmstarget.qc.metrics`; coordinates are RAS mm, ``n/a``
marks missing values. Columns: :data:`GROUP_COLUMNS`. ``status`` and ``reasons`` are the unit's
verdict (``*_desc-verdict_qc.json``); a FAIL row has ``coordinate_usable`` false and ``n/a``
coordinates, so a failed target can never be read off the table as usable.
``split_half_median_mm`` is the split-half reliability (median distance between targets of
disjoint halves of the data). ``between_session_median_mm`` is the test-retest figure when units are
sessions (``group_runs_by: session``): the median of the pairwise distances (MNI RAS mm) between the
usable (non-FAIL) targets of all sessions of the row's subject (with two sessions: their distance), the
same value on each of the subject's usable rows; ``sessions_usable`` counts those sessions. Both are
``n/a`` on a FAIL row, and the distance is ``n/a`` when the subject has fewer than two usable sessions.
The table keeps the plan's unit order; the HTML report lists units worst first (:func:`worst_first`).
"""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import numpy as np

from tmstarget.bids.derivatives import OUTPUT_PATTERNS, output_path
from tmstarget.io.files import atomic_path
from tmstarget.qc.metrics import mean_fd_mm, read_json_tolerant
from tmstarget.qc.text import num, point, scrub_paths
from tmstarget.qc.verdict import assess_qc


GROUP_COLUMNS = ("unit", "status", "reasons", "coordinate_usable", "method", "target_mni_x", "target_mni_y",
                 "target_mni_z", "target_t1w_x", "target_t1w_y", "target_t1w_z", "r_at_target", "z_at_target",
                 "in_ba46", "minutes_kept", "mean_fd_mm", "split_half_median_mm", "between_session_median_mm",
                 "sessions_usable", "bootstrap_p95_mm", "gsr_shift_mm", "scalp_to_cortex_mm", "report_html")

#: Verdicts from worst to best: the order of the dataset report.
STATUS_ORDER = ("fail", "warn", "pass")


def _split_half_median_mm(t: dict | None) -> float | None:
    """The split-half reliability of a target JSON (mm): ``uncertainty.reliability.median_distance_mm``,
    else the repeated split-half median, else the first-vs-second-half distance."""
    return next((v for v in (num(t, "uncertainty", "reliability", "median_distance_mm"),
                             num(t, "uncertainty", "split_half_median_distance_mm"),
                             num(t, "uncertainty", "split_half_distance_mm")) if v is not None), None)


def unit_group_entries(deriv_root, units, task: str, space: str, strategy: str) -> list[dict]:
    """One entry per unit for :func:`group_row` / ``build_group_report``: the paths of the unit's JSON
    outputs under ``deriv_root`` (``OUT/tmstarget``) and its report link (relative to ``deriv_root``).

    ``units`` are ``Plan.units`` values (with ``subdir``, ``unit``, ``subject``, ``session``); ``strategy``
    is the main denoising strategy in lower case (e.g. ``fox``). The Snakefile's group rule and the CLI's
    group table after a failed unit both use this, so they read the same files.
    """
    cap = strategy[:1].upper() + strategy[1:]
    entries = []
    for u in units:
        f = dict(subdir=u.subdir, unit=u.unit, task=task, space=space)
        entries.append({
            "unit": u.unit, "subject": getattr(u, "subject", None), "session": getattr(u, "session", None),
            "target_json": output_path("target_json", deriv_root, **f),
            "native_json": output_path("native_json", deriv_root, **f),
            "denoise_qc_json": output_path("denoise_qc", deriv_root, strategy=strategy, **f),
            "seed_json": output_path("seed_json", deriv_root, strategy=cap, **f),
            "verdict_json": output_path("verdict", deriv_root, **f),
            "report_html": OUTPUT_PATTERNS["report"].format(unit=u.unit),
        })
    return entries


def group_row(entry: dict) -> dict:
    """One dataset-table row (values as Python numbers/strings, None when missing) for one unit entry.

    The status and reasons come from ``entry["verdict"]`` (a verdict given in memory, e.g. the FAIL
    the CLI made from a job's error), else from the unit's verdict JSON (``entry["verdict_json"]``)
    when it exists, else they are assessed here with the default thresholds. A FAIL row carries no
    coordinates (``coordinate_usable`` false): a failed target is never listed as if it could be used.
    """
    t, _ = read_json_tolerant(entry.get("target_json"))
    n, _ = read_json_tolerant(entry.get("native_json"))
    q, _ = read_json_tolerant(entry.get("denoise_qc_json"))
    s, _ = read_json_tolerant(entry.get("seed_json"))
    v, _ = read_json_tolerant(entry.get("verdict_json")) if entry.get("verdict_json") else (None, None)
    if isinstance(entry.get("verdict"), dict):
        v = entry["verdict"]
    if v is not None and v.get("status") in ("pass", "warn", "fail"):
        status, reasons = v["status"], [str(r) for r in v.get("reasons") or []]
    else:
        status, reasons = assess_qc(t, n, q, s)
    usable = status != "fail"
    mni = point((t or {}).get("target_mni_ras_mm")) if usable else None
    t1w = point((n or {}).get("target_t1w_ras_mm")) if usable else None
    minutes = num(q, "minutes_kept")
    subject, session = unit_subject_session(entry)
    return {
        "unit": str(entry.get("unit", "")), "subject": subject, "session": session, "status": status, "reasons": "; ".join(reasons),
        "coordinate_usable": usable,
        "method": (t or {}).get("method"),
        **{f"target_mni_{a}": (None if mni is None else float(mni[i])) for i, a in enumerate("xyz")},
        **{f"target_t1w_{a}": (None if t1w is None else float(t1w[i])) for i, a in enumerate("xyz")},
        "r_at_target": num(t, "r_at_target"), "z_at_target": num(t, "z_at_target"),
        "in_ba46": (t or {}).get("in_ba46"),
        "minutes_kept": minutes if minutes is not None else num(t, "denoising", "minutes_kept"),
        "mean_fd_mm": mean_fd_mm(q), "split_half_median_mm": _split_half_median_mm(t),
        "between_session_median_mm": None, "sessions_usable": None,   # set by add_between_session_mm
        "bootstrap_p95_mm": num(t, "uncertainty", "p95_distance_mm"),
        "gsr_shift_mm": num(t, "gsr_comparison", "shift_mm"), "scalp_to_cortex_mm": num(n, "scalp_to_cortex_mm"),
        "report_html": entry.get("report_html"),
    }


_UNIT_RE = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?$")


def unit_subject_session(entry: dict) -> tuple[str, str | None]:
    """``(subject, session)`` of a unit entry, e.g. ``("01", "1")`` for ``sub-01_ses-1``: the entry's
    ``subject``/``session`` keys (from :func:`unit_group_entries`), else parsed from the unit name; a
    name that is not ``sub-X[_ses-Y]`` is its own subject without a session."""
    unit = str(entry.get("unit", ""))
    if entry.get("subject"):
        return str(entry["subject"]), (str(entry["session"]) if entry.get("session") else None)
    m = _UNIT_RE.match(unit)
    if m is None:
        return unit, None
    return m.group(1)[4:], (m.group(2)[4:] if m.group(2) else None)


def _target_mni_ras_mm(row: dict) -> np.ndarray | None:
    p = [row.get(f"target_mni_{a}") for a in "xyz"]
    return None if row.get("status") == "fail" or None in p else np.asarray(p, float)


def between_session_median_mm(targets_mni_ras_mm) -> float | None:
    """Median of the pairwise Euclidean distances (mm) between one subject's session targets (MNI RAS
    mm, one per usable session); None for fewer than two."""
    pts = [np.asarray(p, float) for p in targets_mni_ras_mm]
    if len(pts) < 2:
        return None
    return float(np.median([np.linalg.norm(a - b) for a, b in itertools.combinations(pts, 2)]))


def add_between_session_mm(rows: list[dict]) -> list[dict]:
    """Fill ``between_session_median_mm`` and ``sessions_usable`` of the session rows of ``rows`` (from
    :func:`group_row`) in place: per subject, from its usable (non-FAIL) session targets only. Rows
    without a session (units are subjects) and FAIL rows keep ``None``. Returns ``rows``."""
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("session") is not None and _target_mni_ras_mm(r) is not None:
            by_subject.setdefault(r["subject"], []).append(r)
    for subject_rows in by_subject.values():
        d = between_session_median_mm([_target_mni_ras_mm(r) for r in subject_rows])
        for r in subject_rows:
            r["between_session_median_mm"], r["sessions_usable"] = d, len(subject_rows)
    return rows


def distance_summary_mm(values) -> dict:
    """``{"n", "median", "q1", "q3"}`` (mm; numpy's linear percentiles) of the finite ``values``;
    median and quartiles None when there are none."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not v.size:
        return {"n": 0, "median": None, "q1": None, "q3": None}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "median": float(med), "q1": float(q1), "q3": float(q3)}


def reliability_summary(rows: list[dict]) -> dict:
    """The dataset's two reliability figures: ``split_half`` over the usable units (one value each) and
    ``between_session`` over the subjects with two or more usable sessions (one value per subject, after
    :func:`add_between_session_mm`); each a :func:`distance_summary_mm`. ``sessions`` says whether the
    units are sessions."""
    usable = [r for r in rows if r["status"] != "fail"]
    per_subject = {r["subject"]: r["between_session_median_mm"] for r in usable
                   if r.get("between_session_median_mm") is not None}
    return {"split_half": distance_summary_mm(r["split_half_median_mm"] for r in usable),
            "between_session": distance_summary_mm(per_subject.values()),
            "sessions": any(r.get("session") is not None for r in rows)}


def worst_first(rows: list[dict]) -> list[dict]:
    """``rows`` ordered FAIL, WARN, PASS; within a verdict by split-half median descending (least
    reproducible first), rows without a split-half value after those with one; then by unit name."""
    def key(r):
        sh = r.get("split_half_median_mm")
        rank = STATUS_ORDER.index(r["status"]) if r["status"] in STATUS_ORDER else 0
        return rank, sh is None, -(sh or 0.0), r["unit"]
    return sorted(rows, key=key)


def _tsv_value(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}".rstrip("0").rstrip(".")
    return scrub_paths(v).replace("\t", " ").replace("\n", " ")


def write_group_tsv(rows: list[dict], out_tsv) -> Path:
    """Write ``rows`` (from :func:`group_row`) as a tab-separated table with the :data:`GROUP_COLUMNS`.

    Parameters
    ----------
    rows : list of dict
        One per unit.
    out_tsv : path
        Output (written atomically); ``n/a`` for missing values, coordinates in RAS mm.

    Returns
    -------
    Path
        ``out_tsv``.
    """
    out_tsv = Path(out_tsv)
    with atomic_path(out_tsv) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(GROUP_COLUMNS)
            for r in rows:
                w.writerow([_tsv_value(r[c]) for c in GROUP_COLUMNS])
    return out_tsv
