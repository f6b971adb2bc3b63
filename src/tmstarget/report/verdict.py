"""The unit's verdict as the report shows it: the verdict JSON (never re-judged), its findings grouped, the
thresholds it applied, the reliability in words and the candidate targets.

Nothing here judges quality: the verdict (``*_desc-verdict_qc.json``) is computed once by
:mod:`tmstarget.qc.verdict` with the thresholds of the configuration the run used, and every view shows it
as it is. Values are plain strings or numbers (never HTML): the templates escape them.
"""

from __future__ import annotations

import numpy as np

from tmstarget.qc.text import fmt, fmt3, num, point
from tmstarget.qc.verdict import STATUS_ORDER
from tmstarget.report.common import SubjectContext, first_number


def unit_verdict(ctx: SubjectContext) -> dict:
    """The unit's verdict (``*_desc-verdict_qc.json``, computed by :mod:`tmstarget.qc.verdict` with the run's
    thresholds). The report shows this verdict only and never judges on its own; a missing or unreadable
    verdict is shown as FAIL (the coordinate must not be used, as the export gate decides)."""
    v = ctx.json("verdict_json")
    if isinstance(v, dict) and v.get("status") in STATUS_ORDER:
        return v
    return {"status": "fail", "status_word": "FAIL", "coordinate_usable": False,
            "reasons": ["the QC verdict (*_desc-verdict_qc.json) is missing or unreadable, so this coordinate "
                        "was not checked"],
            "action": "do not use this coordinate; run the workflow again so that the verdict is computed",
            "findings": [], "thresholds": {}}


def dist_mm(value, grid: float) -> str:
    """A distance between targets for display: below the grid spacing it is "< grid" (targets lie on the
    seed map's voxel grid, so 0.0 would claim a precision the grid does not have)."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not np.isfinite(v):
        return "n/a"
    if v < grid:
        return f"< {grid:g} mm (same or neighbouring voxel of the {grid:g} mm grid)"
    return f"{v:.1f} mm"


STATUS_HEADLINE = {"pass": "all checks passed", "warn": "usable with care", "fail": "coordinate not usable"}


def findings_groups(verdict: dict) -> list[dict]:
    """The verdict's findings in three groups: ``[{title, items: [{level, topic, text}]}]`` (empty groups dropped)."""
    findings = [f for f in verdict.get("findings") or [] if isinstance(f, dict)]
    groups = (("Problems", ("fail", "warn")), ("Checks passed", ("pass",)), ("Not checked / details", ("info",)))
    out = []
    for title, levels in groups:
        items = sorted((f for f in findings if f.get("level") in levels),
                       key=lambda f: -STATUS_ORDER.get(f.get("level"), -1))
        if items:
            out.append({"title": title, "items": [{"level": str(f.get("level")), "topic": str(f.get("topic", "")),
                                                   "text": str(f.get("text", ""))} for f in items]})
    return out


def threshold_rows(verdict: dict) -> list[tuple[str, str]]:
    """``(config key, value)`` of every threshold the verdict applied."""
    th = verdict.get("thresholds") if isinstance(verdict.get("thresholds"), dict) else {}
    return [(str(v.get("config_key", k)), fmt(v.get("value"), 2)) for k, v in th.items() if isinstance(v, dict)]


def target_uncertainty(ctx: SubjectContext) -> dict:
    """The target JSON's ``uncertainty`` block (empty when missing)."""
    unc = (ctx.target or {}).get("uncertainty")
    return unc if isinstance(unc, dict) else {}


def reliability_words(ctx: SubjectContext) -> str:
    """The reliability in plain words: the split-half result (``uncertainty.reliability.plain_words``),
    else the verdict's reliability finding, else "not assessed"."""
    unc = target_uncertainty(ctx)
    rel = unc.get("reliability") if isinstance(unc.get("reliability"), dict) else None
    if rel is not None and rel.get("plain_words"):
        return str(rel["plain_words"])
    if rel is not None and num(rel, "median_distance_mm") is not None:
        verdict = {True: "reproducible", False: "not reproducible"}.get(rel.get("reproducible"), "not judged")
        return (f"split-half targets lie a median {num(rel, 'median_distance_mm'):.1f} mm apart "
                f"(limit {fmt(rel.get('limit_mm'), 0, 'mm')}): {verdict}")
    for f in unit_verdict(ctx).get("findings") or []:
        if isinstance(f, dict) and f.get("topic") == "reliability" and f.get("level") in ("pass", "warn", "fail") \
                and f.get("kind", "reliability") == "reliability" and "candidate" not in str(f.get("text")):
            return str(f.get("text"))
    return "not assessed"


def candidate_rows(ctx: SubjectContext) -> list[dict]:
    """The candidate targets when the resampled targets fall into two or more separated clusters
    (``uncertainty.multiple_candidates``): ``[{mni, t1w, support, n}]`` as strings; empty otherwise."""
    unc = target_uncertainty(ctx)
    if unc.get("multiple_candidates") is not True:
        return []
    native_unc = (ctx.native or {}).get("uncertainty")
    native_cands = native_unc.get("candidates") if isinstance(native_unc, dict) else None
    rows = []
    for i, c in enumerate(c for c in unc.get("candidates") or [] if isinstance(c, dict)):
        t1w = None
        if isinstance(native_cands, list) and i < len(native_cands) and isinstance(native_cands[i], dict):
            t1w = native_cands[i].get("target_t1w_ras_mm")
        support = first_number(num(c, "support_fraction"), num(c, "support"))
        cand, headline = point(c.get("target_mni_ras_mm")), ctx.target_mni()
        away = None if cand is None or headline is None else float(np.linalg.norm(cand - headline))
        rows.append({"mni": fmt3(c.get("target_mni_ras_mm")), "t1w": fmt3(t1w),
                     "support": fmt(None if support is None else 100 * support, 0, "%"),
                     "n": fmt(c.get("n_targets"), 0),
                     "from_target": "-" if away is None else ("same voxel" if away < 0.5 else fmt(away, 1, "mm"))})
    return rows
