"""The dataset table ``group_targets.tsv``: one row per unit with its QC verdict and target.

Values are read with the tolerant readers of :mod:`tmstarget.qc.metrics`; coordinates are RAS mm, ``n/a``
marks missing values. Columns: :data:`GROUP_COLUMNS`. ``status`` and ``reasons`` are the unit's
verdict (``*_desc-verdict_qc.json``); a FAIL row has ``coordinate_usable`` false and ``n/a``
coordinates, so a failed target can never be read off the table as usable.
``split_half_median_mm`` is the split-half reliability (median distance between targets of
disjoint halves of the data).
"""

from __future__ import annotations

import csv
from pathlib import Path

from tmstarget.bids.derivatives import OUTPUT_PATTERNS, output_path
from tmstarget.io.files import atomic_path
from tmstarget.qc.metrics import mean_fd_mm, read_json_tolerant
from tmstarget.qc.text import num, point, scrub_paths
from tmstarget.qc.verdict import assess_qc


GROUP_COLUMNS = ("unit", "status", "reasons", "coordinate_usable", "method", "target_mni_x", "target_mni_y",
                 "target_mni_z", "target_t1w_x", "target_t1w_y", "target_t1w_z", "r_at_target", "z_at_target",
                 "in_ba46", "minutes_kept", "mean_fd_mm", "split_half_median_mm", "bootstrap_p95_mm", "gsr_shift_mm",
                 "scalp_to_cortex_mm", "report_html")


def _split_half_median_mm(t: dict | None) -> float | None:
    """The split-half reliability of a target JSON (mm): ``uncertainty.reliability.median_distance_mm``,
    else the repeated split-half median, else the first-vs-second-half distance."""
    return next((v for v in (num(t, "uncertainty", "reliability", "median_distance_mm"),
                             num(t, "uncertainty", "split_half_median_distance_mm"),
                             num(t, "uncertainty", "split_half_distance_mm")) if v is not None), None)


def unit_group_entries(deriv_root, units, task: str, space: str, strategy: str) -> list[dict]:
    """One entry per unit for :func:`group_row` / ``build_group_report``: the paths of the unit's JSON
    outputs under ``deriv_root`` (``OUT/tmstarget``) and its report link (relative to ``deriv_root``).

    ``units`` are ``Plan.units`` values (with ``subdir`` and ``unit``); ``strategy`` is the main
    denoising strategy in lower case (e.g. ``fox``). The Snakefile's group rule and the CLI's group
    table after a failed unit both use this, so they read the same files.
    """
    cap = strategy[:1].upper() + strategy[1:]
    entries = []
    for u in units:
        f = dict(subdir=u.subdir, unit=u.unit, task=task, space=space)
        entries.append({
            "unit": u.unit,
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
    return {
        "unit": str(entry.get("unit", "")), "status": status, "reasons": "; ".join(reasons),
        "coordinate_usable": usable,
        "method": (t or {}).get("method"),
        **{f"target_mni_{a}": (None if mni is None else float(mni[i])) for i, a in enumerate("xyz")},
        **{f"target_t1w_{a}": (None if t1w is None else float(t1w[i])) for i, a in enumerate("xyz")},
        "r_at_target": num(t, "r_at_target"), "z_at_target": num(t, "z_at_target"),
        "in_ba46": (t or {}).get("in_ba46"),
        "minutes_kept": minutes if minutes is not None else num(t, "denoising", "minutes_kept"),
        "mean_fd_mm": mean_fd_mm(q), "split_half_median_mm": _split_half_median_mm(t),
        "bootstrap_p95_mm": num(t, "uncertainty", "p95_distance_mm"),
        "gsr_shift_mm": num(t, "gsr_comparison", "shift_mm"), "scalp_to_cortex_mm": num(n, "scalp_to_cortex_mm"),
        "report_html": entry.get("report_html"),
    }


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
