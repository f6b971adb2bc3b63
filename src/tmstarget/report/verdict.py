"""What the report says, as plain data for the templates: the unit's verdict and findings, the
navigator box, the reliability words, and the tables under the figures.

Nothing here judges quality: the verdict (``*_desc-verdict_qc.json``) is computed once by
:mod:`tmstarget.qc.verdict` with the thresholds of the configuration the run used, and every view shows it
as it is. Values are plain strings or numbers (never HTML): the templates escape them.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

import numpy as np

from tmstarget.navigation.steps import IMPORT_STEPS, import_steps
from tmstarget.qc.metrics import mean_fd_mm
from tmstarget.qc.text import fmt, fmt3, num, point, scrub_paths
from tmstarget.qc.verdict import STATUS_ORDER
from tmstarget.report.common import SubjectContext, _first_number, _unit_name
from tmstarget.report.figures import _literature_sites, coil_geometry, grid_mm

CAVEATS = (
    "This coordinate is a research target, not a clinical verdict. It is the left-DLPFC spot whose "
    "resting-state signal is most anticorrelated with the subgenual cingulate (Fox et al. 2012).",
    "Evidence that individualized sgACC-anticorrelation targets improve outcomes is mixed: a 2025 "
    "prospective study (n = 66) found no benefit, and part of the anticorrelation can be driven by "
    "global-signal fluctuations (Elbau 2023) or created by global signal regression (Murphy 2009).",
    "Single-subject targets move with the data: compare the split-half distance and the GSR/no-GSR shift "
    "with your coil's spatial precision (about 1 cm). Published test-retest work finds that with less than "
    "20-30 minutes of data targets are rarely reproducible to below 1 cm (Cao 2024), so a short run that "
    "passes its own split-half check is still a weaker basis than a long one.",
    "Neuronavigation must use the T1w-space coordinate with the very T1w file named in the provenance "
    "(check its SHA-256); the MNI coordinate is for comparison only.",
)


BOOTSTRAP_CAVEAT = ("The block bootstrap is optimistic: its resamples share most of their data, so their "
                    "targets agree even when the data carry little signal. The split-half check compares "
                    "targets from two halves that share no data, and is the reliability measure.")


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


#: Navigator name and what to do with each ``nav/`` file (keys of :func:`navigation.export_names`).
NAVIGATOR_IMPORTS = {key: (nav, what) for key, (nav, what, _) in IMPORT_STEPS.items()}

WORLD_CONVENTION_WORDS = ("NIfTI world coordinates of this file: x to the right, y to the front, z up "
                          "(RAS, millimetres)")

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


def _uncertainty(ctx: SubjectContext) -> dict:
    unc = (ctx.target or {}).get("uncertainty")
    return unc if isinstance(unc, dict) else {}


def reliability_words(ctx: SubjectContext) -> str:
    """The reliability in plain words: the split-half result (``uncertainty.reliability.plain_words``),
    else the verdict's reliability finding, else "not assessed"."""
    unc = _uncertainty(ctx)
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
    unc = _uncertainty(ctx)
    if unc.get("multiple_candidates") is not True:
        return []
    native_unc = (ctx.native or {}).get("uncertainty")
    native_cands = native_unc.get("candidates") if isinstance(native_unc, dict) else None
    rows = []
    for i, c in enumerate(c for c in unc.get("candidates") or [] if isinstance(c, dict)):
        t1w = None
        if isinstance(native_cands, list) and i < len(native_cands) and isinstance(native_cands[i], dict):
            t1w = native_cands[i].get("target_t1w_ras_mm")
        support = _first_number(num(c, "support_fraction"), num(c, "support"))
        cand, headline = point(c.get("target_mni_ras_mm")), ctx.target_mni()
        away = None if cand is None or headline is None else float(np.linalg.norm(cand - headline))
        rows.append({"mni": fmt3(c.get("target_mni_ras_mm")), "t1w": fmt3(t1w),
                     "support": fmt(None if support is None else 100 * support, 0, "%"),
                     "n": fmt(c.get("n_targets"), 0),
                     "from_target": "-" if away is None else ("same voxel" if away < 0.5 else fmt(away, 1, "mm"))})
    return rows


# ----------------------------------------------------------------------------- navigator box


def handle_angle_from_posterior_deg(handle, normal, entry) -> tuple[float, str] | None:
    """(angle in degrees from posterior towards lateral in the scalp plane, "left"/"right") of a handle
    direction; the same definition as :func:`tmstarget.native.scalp.handle_direction_ras`. None if undefined."""
    from tmstarget.native.scalp import handle_direction_ras

    if handle is None or normal is None or entry is None:
        return None
    side = "left" if entry[0] < 0 else "right"
    posterior_t = handle_direction_ras(entry, normal, 0.0)
    lateral_t = handle_direction_ras(entry, normal, 90.0)
    h = np.asarray(handle, float)
    angle = float(np.degrees(np.arctan2(np.dot(h, lateral_t), np.dot(h, posterior_t))))
    return angle, side


def handle_in_words(native: dict | None) -> str:
    """The handle direction in words, e.g. ``posterior-lateral, 45 deg from posterior towards left
    (world direction: posterior, left)``; "not recorded" when the native JSON has no handle."""
    from tmstarget.navigation.exports import describe_direction

    geom = coil_geometry(native)
    if geom is None or geom["handle"] is None:
        return "not recorded"
    res = handle_angle_from_posterior_deg(geom["handle"], geom["normal"], geom["entry"])
    if res is None:
        return "not recorded"
    angle, side = res
    a = abs(angle)
    if a < 15:
        name = "posterior"
    elif a <= 75:
        name = "posterior-lateral" if angle > 0 else "posterior-medial"
    elif a <= 105:
        name = "lateral" if angle > 0 else "medial"
    else:
        name = "anterior-lateral" if angle > 0 else "anterior-medial"
    towards = side if angle >= 0 else ("right" if side == "left" else "left")
    words = describe_direction(geom["handle"]).replace("-", ", ")
    return f"{name}, {a:.0f} deg from posterior towards {towards} (world direction: {words})"


def handle_glyph(native: dict | None, size: int = 170) -> dict | None:
    """Coordinates (SVG pixels) of a small top view: the head seen from above (nose up, the subject's
    left on the left), the coil circle at the entry and its handle line. None without a handle."""
    geom = coil_geometry(native)
    if geom is None or geom["handle"] is None:
        return None
    c = size / 2
    r_head = size * 0.3
    e = geom["entry"][:2]
    norm = float(np.linalg.norm(e))
    pos = (np.array([c, c]) if norm == 0
           else np.array([c + r_head * 0.78 * e[0] / norm, c - r_head * 0.78 * e[1] / norm]))
    h = geom["handle"][:2]
    h = h / np.linalg.norm(h) if np.linalg.norm(h) > 1e-6 else np.array([0.0, -1.0])
    coil_r = size * 0.08
    start = pos + coil_r * np.array([h[0], -h[1]])
    end = pos + (coil_r + size * 0.16) * np.array([h[0], -h[1]])
    r = lambda v: round(float(v), 1)  # noqa: E731
    return {"size": size, "c": r(c), "rx": r(r_head * 0.85), "ry": r(r_head), "nose_top": r(c - r_head - 8),
            "nose_base": r(c - r_head + 1), "nose_l": r(c - 6), "nose_r": r(c + 6),
            "coil_x": r(pos[0]), "coil_y": r(pos[1]), "coil_r": r(coil_r),
            "x1": r(start[0]), "y1": r(start[1]), "x2": r(end[0]), "y2": r(end[1]),
            "label_x": r(min(max(end[0], 24), size - 24)), "anchor": "middle",
            "label_y": r(min(max(end[1] + (15 if h[1] < 0 else -6), 14), size - 2))}


def nav_files(ctx: SubjectContext) -> list[dict]:
    """``[{navigator, file, what, steps}]`` for each export format the run was configured with
    (``nav_formats``); the Localite names carry the run's stamp, read from the native JSON as the export
    step reads it (:func:`navigation.localite_timestamp`)."""
    from tmstarget.navigation.exports import EXPORT_FORMATS, export_names, localite_timestamp

    formats = ctx.inputs.get("nav_formats")
    if formats is None:
        formats = list(EXPORT_FORMATS)
    native_path = ctx.path("native_json")
    if native_path is None:
        return []
    names = export_names(_unit_name(ctx.inputs), localite_timestamp(native_path))
    out = []
    for fmt_name in formats:
        for key in EXPORT_FORMATS.get(str(fmt_name), []):
            nav, what = NAVIGATOR_IMPORTS[key]
            out.append({"navigator": nav, "file": "nav/" + names[key], "what": what,
                        "steps": import_steps(key, names[key])})
    return out


def navigator_view(ctx: SubjectContext) -> dict | None:
    """The technician's box: which T1w to load, target and entry in its world mm, the handle in words
    and as a glyph, depth, which nav/ file goes into which navigator, and header warnings."""
    n = ctx.native
    if not n:
        return None
    sha = str(n.get("t1w_sha256") or "")
    verdict = unit_verdict(ctx)
    return {
        "t1w": Path(str(n.get("t1w_path"))).name if n.get("t1w_path") else "n/a",
        "sha256": sha or "n/a", "has_sha": bool(sha),
        "target": fmt3(n.get("target_t1w_ras_mm")), "entry": fmt3(n.get("entry_t1w_ras_mm")),
        "convention": WORLD_CONVENTION_WORDS,
        "handle": handle_in_words(n), "glyph": handle_glyph(n),
        "depth": fmt(n.get("scalp_to_cortex_mm"), 1, "mm"),
        "usable": verdict.get("coordinate_usable") is not False and verdict.get("status") != "fail",
        "files": nav_files(ctx),
        "header_warnings": [str(f.get("text")) for f in verdict.get("findings") or []
                            if isinstance(f, dict) and f.get("topic") == "header" and f.get("level") in ("warn", "fail")],
    }


# ----------------------------------------------------------------------------- sections


def summary_view(ctx: SubjectContext) -> dict:
    """The one-screen summary: verdict (status, reasons, action), coordinate table, navigator box,
    reliability, candidates, findings and thresholds."""
    t, n = ctx.target or {}, ctx.native or {}
    verdict = unit_verdict(ctx)
    status = verdict["status"]
    space = t.get("TemplateSpace") or "MNI"
    gsr = t.get("gsr_comparison") if isinstance(t.get("gsr_comparison"), dict) else {}
    grid = grid_mm(ctx)
    rows = [
        (f"Target, {space} (RAS mm; for comparison, not for navigation)", fmt3(t.get("target_mni_ras_mm")), ""),
        ("Method", str(t.get("method") or "n/a"), ""),
        ("r / Fisher z at target", f"{fmt(t.get('r_at_target'), 2)} / {fmt(t.get('z_at_target'), 2)}", ""),
        ("Cluster size", fmt(t.get("cluster_size_voxels"), 0, "voxels"), ""),
        ("Inside the BA46 region (HCPex label)", {True: "yes", False: "no"}.get(t.get("in_ba46"), "n/a"), ""),
        ("Minutes kept", fmt(_first_number(num(ctx.denoise_qc, "minutes_kept"),
                                            num(t, "denoising", "minutes_kept")), 1, "min"), ""),
        ("Mean FD", fmt(mean_fd_mm(ctx.denoise_qc), 2, "mm"), ""),
        ("Shift without GSR", dist_mm(gsr.get("shift_mm"), grid), ""),
    ]
    if not ctx.native:  # no navigator box: the T1w target is missing, say so where the box would be
        rows.insert(0, ("Target, subject T1w (RAS mm)", "n/a", "(no T1w-space target)"))
    # problems are the banner's reasons; registration checks are listed in their own sections
    shown = [f for f in verdict.get("findings") or [] if isinstance(f, dict) and f.get("level") in ("pass", "info")
             and not (f.get("topic") == "registration" and f.get("kind"))]
    return {
        "status": status, "status_word": str(verdict.get("status_word") or status.upper()),
        "headline": STATUS_HEADLINE[status], "reasons": [str(r) for r in verdict.get("reasons") or []],
        "action": str(verdict.get("action") or "n/a"), "rows": rows, "reliability": reliability_words(ctx),
        "candidates": candidate_rows(ctx), "navigator": navigator_view(ctx),
        "findings": findings_groups({"findings": shown}), "n_checks": len(shown),
        "thresholds": threshold_rows(verdict),
    }


def motion_view(ctx: SubjectContext) -> dict:
    qc = ctx.denoise_qc or {}
    rows = []
    for run in qc.get("runs") or []:
        rows.append((Path(str(run.get("bold", "run"))).name,
                     f"{fmt(run.get('volumes_kept'), 0)} of {fmt(run.get('volumes_total'), 0)} volumes kept, "
                     f"{fmt(run.get('minutes_kept'), 1, 'min')}, mean FD {fmt(run.get('mean_fd_mm'), 2, 'mm')}, "
                     f"{len(run.get('censored_volumes') or [])} censored"
                     + ("" if run.get("included", True) else " (run excluded)")))
    rows.append(("Total", f"{fmt(qc.get('volumes_kept'), 0)} of {fmt(qc.get('volumes_total'), 0)} volumes, "
                          f"{fmt(qc.get('minutes_kept'), 1, 'min')} kept; strategy {qc.get('strategy', 'n/a')}"))
    return {"rows": rows}


def seed_tsnr_view(ctx: SubjectContext) -> dict:
    s = ctx.seed or {}
    low = num(s, "seed_low_tsnr_fraction")
    return {"rows": [
        ("Seed voxels in BOLD mask", f"{fmt(s.get('seed_voxels_in_mask'), 0)} of {fmt(s.get('seed_voxels_total'), 0)}"),
        ("Seed median tSNR", fmt(s.get("seed_median_tsnr"), 1)),
        ("Seed voxels with tSNR below threshold",
         f"{fmt(None if low is None else 100 * low, 0)}% (threshold {fmt(s.get('min_seed_tsnr'), 0)})"),
    ]}


def uncertainty_view(ctx: SubjectContext) -> dict:
    unc = _uncertainty(ctx)
    grid = grid_mm(ctx)
    return {
        "status": unit_verdict(ctx)["status"],
        "rows": [("Reliability (split halves)", reliability_words(ctx)),
                 ("Split-half distance (first vs second half / median of the block splits)",
                  f"{dist_mm(unc.get('split_half_distance_mm'), grid)} / "
                  f"{dist_mm(unc.get('split_half_median_distance_mm'), grid)}")],
        "candidates": candidate_rows(ctx), "caveat": BOOTSTRAP_CAVEAT,
        "bootstrap_rows": [
            ("Method", f"{unc.get('method', 'n/a')}, n = {fmt(unc.get('n'), 0)}, blocks of "
                       f"{fmt(unc.get('block_length_s'), 0, 's')}"),
            ("Distance of bootstrap targets (median / p95)",
             f"{dist_mm(unc.get('median_distance_mm'), grid)} / {dist_mm(unc.get('p95_distance_mm'), grid)}")],
    }


LITERATURE_NOTES = (
    "Each site is one published point (the centre of a 20 mm sphere). \"Inside the BA46 region\" in the summary "
    "refers to the whole BA46 label of the HCPex atlas, a region several centimetres long: a target can lie "
    "inside the region and still 10-20 mm from the BA46 site point.",
    "(unverified): this coordinate is widely quoted but was not checked against the original paper; "
    "treat its distance as approximate.",
)


def literature_view(ctx: SubjectContext) -> dict:
    dists = (ctx.target or {}).get("literature_distances_mm")
    sites = _literature_sites()
    if not isinstance(dists, dict) or not dists:
        return {"rows": [], "notes": []}
    grid = grid_mm(ctx)
    rows = [(str(k), dist_mm(v, grid) + (f"   (site at {fmt3(sites[k])})" if k in sites else ""))
            for k, v in dists.items()]
    notes = [LITERATURE_NOTES[0]] + ([LITERATURE_NOTES[1]] if any("unverified" in str(k) for k in dists) else [])
    return {"rows": rows, "notes": notes}


def _words(text) -> set[str]:
    return set(re.findall(r"[a-z0-9.]+", str(text).lower()))


def _said_already(words: set[str], stated: list[set[str]], share: float = 0.6) -> bool:
    """Whether a warning repeats a finding: most (``share``) of its words are in one finding's text."""
    return bool(words) and any(len(words & s) >= share * len(words) for s in stated)


def caveats_view(ctx: SubjectContext) -> dict:
    minutes = _first_number(num(ctx.denoise_qc, "minutes_kept"), num(ctx.target, "denoising", "minutes_kept"))
    own = (f"This run kept {minutes:.1f} min; its own split-half check says: {reliability_words(ctx)}."
           if minutes is not None else f"This run's own split-half check says: {reliability_words(ctx)}.")
    # the pipeline's own warnings, except those the verdict already states (Problems): no fact twice
    stated = [_words(f.get("text")) for f in unit_verdict(ctx).get("findings") or [] if isinstance(f, dict)]
    warnings: list[str] = []
    for key in ("target_json", "native_json", "denoise_qc_json", "seed_json"):
        for w in (ctx.json(key) or {}).get("warnings") or []:
            if str(w) not in warnings and not _said_already(_words(w), stated):
                warnings.append(str(w))
    caveats = list(CAVEATS)
    caveats[2] = caveats[2] + " " + own
    return {"caveats": caveats, "warnings": warnings}


def provenance_view(ctx: SubjectContext) -> dict:
    t, n, q = ctx.target or {}, ctx.native or {}, ctx.denoise_qc or {}
    rows = []
    if n:
        rows += [("T1w used for navigation", Path(str(n.get("t1w_path", "n/a"))).name),
                 ("T1w SHA-256", str(n.get("t1w_sha256", "n/a"))),
                 ("T1w->MNI transform", Path(str(n.get("transform_path", "n/a"))).name),
                 ("Transform SHA-256", str(n.get("transform_sha256", "n/a"))),
                 ("MNI->T1w->MNI round trip", fmt(n.get("roundtrip_error_mm"), 2, "mm"))]
    rows += [("Template space", str(t.get("TemplateSpace", "n/a"))),
             ("Denoising strategy", str(q.get("strategy") or (t.get("denoising") or {}).get("strategy", "n/a"))),
             ("Repetition time", fmt(q.get("t_r"), 2, "s"))]
    sources: list[str] = []
    for obj in (t, n, ctx.seed or {}):
        for s in obj.get("Sources") or []:
            if str(s) not in sources:
                sources.append(str(s))
    sw = t.get("software") if isinstance(t.get("software"), dict) else {}
    params = {"method": t.get("method"), "method_parameters": t.get("method_parameters"),
              "seed": t.get("seed"), "search_region": t.get("search_region"),
              "denoising": q.get("strategy_parameters") or t.get("denoising"),
              "targeting_parameters": t.get("targeting_parameters")}
    params = {k: v for k, v in params.items() if v}
    return {"rows": rows, "sources": sources, "software": [f"{k} {v}" for k, v in sw.items()],
            "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z (UTC%z)"),
            "params_json": json.dumps(params, indent=1, sort_keys=True, default=str) if params else "",
            "missing": list(ctx.missing)}




# ----------------------------------------------------------------------------- registration, glossary, methods

REGISTRATION_FAILURE_WORDS = (
    "What failure looks like: the red edges cut through the brain or run outside it, the ventricles of the "
    "two images do not overlap, the brain is tilted, shifted or mirrored relative to the other image, or part "
    "of the brain (often the front or the top) is missing. Use the switch to flip between the two images: a "
    "good registration shows almost no movement. If it fails, the target is not usable.")


def registration_view(ctx: SubjectContext, kind: str | None = None) -> dict:
    """The verdict's registration findings of one registration (``kind``: "registration_bold" or
    "registration_t1w"; verdicts without kinds show all) and the failure sentence."""
    findings = [f for f in unit_verdict(ctx).get("findings") or []
                if isinstance(f, dict) and f.get("topic") == "registration"
                and (kind is None or f.get("kind", kind) == kind)]
    return {"failure": REGISTRATION_FAILURE_WORDS,
            "checks": [{"level": str(f.get("level")), "text": str(f.get("text"))} for f in findings]}


#: (term, plain-words meaning) shown in the Glossary section.
GLOSSARY = (
    ("RAS", "The axis convention of the coordinates: x increases to the subject's Right, y to the Anterior "
            "(front), z to the Superior (up); values in millimetres."),
    ("MNI152NLin2009aSym", "The standard brain (template) the group coordinates refer to: the MNI ICBM 2009a "
                           "nonlinear symmetric average of 152 adults (Fonov et al. 2011)."),
    ("r / Fisher z", "r is the correlation of a voxel's signal with the seed's (-1 to 1; negative = "
                     "anticorrelated); Fisher z = atanh(r) makes values comparable across voxels and runs."),
    ("FD", "Framewise displacement: how far the head moved between two volumes, in mm (Power et al. 2012)."),
    ("Censoring", "Leaving out volumes with too much motion (FD above the threshold) from the analysis."),
    ("tSNR", "Temporal signal-to-noise ratio: mean over time divided by standard deviation. Low tSNR near the "
             "sinuses (signal dropout) makes the sgACC seed unreliable."),
    ("GSR", "Global signal regression: removing the whole-brain average signal. It cleans motion and "
            "breathing effects but can create anticorrelations (Murphy et al. 2009), hence the no-GSR check."),
    ("aCompCor", "Anatomical CompCor: noise signals taken from white matter and CSF by principal components "
                 "(Behzadi et al. 2007), used as the denoising without GSR."),
    ("Split-half", "The target computed separately from the first and second half of the data; their "
                   "distance shows how reproducible the target is with this amount of data."),
    ("Carpet plot", "Every brain voxel's signal over time as one row of an image; vertical bands are "
                    "artefacts that affect the whole brain at once (usually motion)."),
    ("Cluster rule", "How the target is chosen: the most anticorrelated voxels of the search region are "
                     "grouped into connected clusters and the centre of the largest is the target (Cash et al. "
                     "2021)."),
    ("HCPex", "An extended Human Connectome Project atlas of the cortex (Huang et al. 2022); its BA46 label "
              "is used to check that the target lies in Brodmann area 46."),
    ("5-cm rule", "The traditional scalp-based placement 5 cm anterior to the motor hotspot; its average "
                  "MNI position is one of the literature sites."),
    ("Beam F3", "The F3 EEG electrode position found with the Beam method from head measurements (Beam et al. "
                "2009); its average MNI position is one of the literature sites."),
)

#: Citation of each target rule, as written after its name in the Methods paragraph.
RULE_CITATIONS = {"cluster": " (Cash et al. 2021)", "peak": " (Fox et al. 2012)", "seedmap": " (Fox et al. 2013)",
                  "hierarchical": " (a reimplementation of the SAINT-like clustering)"}

def cluster_rule_words(method_parameters) -> str:
    """The cluster rule's settings in words (", here: ..."), or "" for another rule or no record.

    Says whether the run used the default (percentile of all search voxels, |r|-weighted centre) or the
    published Cash/contarg rule (percentile of the negative r only, unweighted centroid).
    """
    mp = method_parameters if isinstance(method_parameters, dict) else {}
    cl = mp.get("cluster") if isinstance(mp.get("cluster"), dict) else mp
    if mp.get("rule") not in ("cluster", "seedmap") or "percentile" not in cl:
        return ""
    pool = "the negative r values" if cl.get("percentile_of") == "negative" else "all search voxels"
    centre = "|r|-weighted centre" if cl.get("weight_by_abs_r", True) else "unweighted centroid"
    return (f", here: voxels at or below the {fmt(cl.get('percentile'), 0)}th percentile of {pool}, the largest "
            f"{cl.get('connectivity', 26)}-connected cluster and its {centre}, snapped to the nearest grey-matter "
            "search voxel")


CITATIONS = (
    "Fox MD, Buckner RL, White MP, Greicius MD, Pascual-Leone A. Efficacy of transcranial magnetic stimulation "
    "targets for depression is related to intrinsic functional connectivity with the subgenual cingulate. "
    "Biol Psychiatry. 2012;72(7):595-603.",
    "Fox MD, Liu H, Pascual-Leone A. Identification of reproducible individualized targets for treatment of "
    "depression with TMS based on intrinsic connectivity. NeuroImage. 2013;66:151-160.",
    "Cash RFH, Cocchi L, Lv J, Wu Y, Fitzgerald PB, Zalesky A. Personalized connectivity-guided DLPFC-TMS for "
    "depression: advancing computational feasibility, precision and reproducibility. Hum Brain Mapp. "
    "2021;42(13):4155-4172.",
    "Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but systematic correlations in "
    "functional connectivity MRI networks arise from subject motion. NeuroImage. 2012;59(3):2142-2154.",
    "Behzadi Y, Restom K, Liau J, Liu TT. A component based noise correction method (CompCor) for BOLD and "
    "perfusion based fMRI. NeuroImage. 2007;37(1):90-101.",
    "Murphy K, Birn RM, Handwerker DA, Jones TB, Bandettini PA. The impact of global signal regression on "
    "resting state correlations: are anti-correlated networks introduced? NeuroImage. 2009;44(3):893-905.",
    "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration with "
    "cross-correlation: evaluating automated labeling of elderly and neurodegenerative brain. Med Image Anal. "
    "2008;12(1):26-41.",
    "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate "
    "atlases for pediatric studies. NeuroImage. 2011;54(1):313-327.",
    "Huang CC, Rolls ET, Feng J, Lin CP. An extended Human Connectome Project multimodal parcellation atlas of "
    "the human cortex and subcortical areas. Brain Struct Funct. 2022;227(3):763-778.",
    "Beam W, Borckardt JJ, Reeves ST, George MS. An efficient and accurate new method for locating the F3 "
    "position for prefrontal TMS applications. Brain Stimul. 2009;2(1):50-54.",
    "Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging with scikit-learn. "
    "Front Neuroinform. 2014;8:14. (nilearn)",
    "Mölder F, Jablonski KP, Letcher B, et al. Sustainable data analysis with Snakemake. F1000Research. "
    "2021;10:33.",
)


def glossary_view(ctx: SubjectContext) -> dict:
    return {"terms": [{"term": t, "meaning": m} for t, m in GLOSSARY]}


def _command_line(cfg: dict) -> tuple[str, str | None]:
    """The command that made this report and its working directory, as recorded by the CLI in
    ``OUT/logs/commands.jsonl`` (absolute paths cut to names); without a record (a report made by plain
    ``snakemake``), an equivalent command rebuilt from the saved configuration, marked as such."""
    from tmstarget.run.record import last_command

    record = last_command(cfg["output_dir"]) if cfg.get("output_dir") else None
    if record:
        return scrub_paths(record["command_line"]), scrub_paths(record.get("working_directory") or "") or None
    parts = ["tmstarget", scrub_paths(cfg.get("bids_dir", "BIDS_DIR")), scrub_paths(cfg.get("output_dir", "OUT")),
             "participant"]
    labels = cfg.get("participant_label") or []
    if labels:
        parts += ["--participant-label", *[str(x) for x in labels]]
    if cfg.get("task"):
        parts += ["--task", str(cfg["task"])]
    if cfg.get("fmriprep_dir"):
        parts += ["--derivatives", scrub_paths(cfg["fmriprep_dir"])]
    parts += ["--config", "logs/config.yaml"]
    return "not recorded; equivalent: " + " ".join(parts), None


def methods_view(ctx: SubjectContext) -> dict:
    """A Methods paragraph to copy into a paper or a clinical note (like fMRIPrep's boilerplate), with the
    command line, the configuration, the version and a time-zone-stamped date."""
    import yaml

    from tmstarget import __version__

    t, q = ctx.target or {}, ctx.denoise_qc or {}
    cfg = ctx.inputs.get("run_config") if isinstance(ctx.inputs.get("run_config"), dict) else {}
    den = cfg.get("denoising") or {}
    strategy = q.get("strategy") or den.get("strategy") or (t.get("denoising") or {}).get("strategy") or "n/a"
    seed = t.get("seed") if isinstance(t.get("seed"), dict) else {}
    method = t.get("method") or "n/a"
    unc = _uncertainty(ctx)
    space = t.get("TemplateSpace") or "MNI152NLin2009aSym"
    gsr_block = t.get("gsr_comparison") if isinstance(t.get("gsr_comparison"), dict) else {}
    compare = gsr_block.get("strategy") or den.get("compare_strategy")
    params = q.get("strategy_parameters") if isinstance(q.get("strategy_parameters"), dict) else {}
    gsr_on = bool(params.get("global_signal", (den.get("strategies") or {}).get(strategy, {}).get("global_signal", True)))
    parts = [
        f"Individual TMS targets were computed with tmstarget {__version__}, following Fox et al. (2012): the "
        "left dorsolateral prefrontal location whose resting-state signal is most anticorrelated with the "
        "subgenual anterior cingulate cortex (sgACC).",
        (f"Resting-state BOLD data were preprocessed with fMRIPrep (its derivatives were the input): motion "
         f"correction and registration to the subject's T1w image and to {space} (template: Fonov et al. 2011). "
         if ctx.inputs.get("input_route") == "fmriprep" else
         f"Resting-state BOLD data were motion-corrected and registered to the subject's T1w image and to "
         f"{space} with ANTs (Avants et al. 2008; template: Fonov et al. 2011). ")
        + f"Volumes with framewise "
        f"displacement (Power et al. 2012) above {fmt(q.get('fd_threshold_mm'), 2, 'mm')} were censored; "
        f"{fmt(q.get('minutes_kept'), 1, 'min')} of data were kept.",
        f"Nuisance signals were removed with the '{strategy}' strategy"
        + (" (including global signal regression)." if gsr_on else " (without global signal regression).")
        + (f" Because global signal regression can create anticorrelations (Murphy et al. 2009), the target was "
           f"also computed with the '{compare}' strategy"
           + (" (aCompCor, Behzadi et al. 2007)" if "compcor" in str(compare).lower() else "")
           + " and the distance between the two is reported." if compare else ""),
        f"The seed ({seed.get('type', 'sphere')}"
        + (f", centre MNI {fmt3(seed.get('center_mni_ras_mm'))} mm, radius {fmt(seed.get('radius_mm'), 0, 'mm')}"
           if seed.get("center_mni_ras_mm") is not None else "")
        + f") time series was correlated with every voxel (Fisher z), and the target was chosen with the "
        f"'{method}' rule{RULE_CITATIONS.get(str(method), '')}{cluster_rule_words(t.get('method_parameters'))} "
        "inside the left-DLPFC search region; BA46 "
        "membership was checked with the HCPex atlas (Huang et al. 2022).",
        "Reliability was measured by computing the target separately in two halves of the data (split-half)"
        + (f"; {unc['reliability']['n_splits']} splits into halves of whole "
           f"{fmt(unc['reliability'].get('block_length_s'), 0)}-s blocks, each half denoised "
           f"{unc['reliability'].get('halves_cleaned', 'jointly')}" if isinstance(unc.get("reliability"), dict)
           and unc["reliability"].get("n_splits") else "")
        + "; a block bootstrap is reported as a detail. The MNI target was mapped to the subject's T1w world "
          "space (RAS mm) for neuronavigation. Analyses used nilearn (Abraham et al. 2014) and Snakemake "
          "(Mölder et al. 2021).",
    ]
    now = _dt.datetime.now().astimezone()
    config_text = yaml.safe_dump(cfg, sort_keys=False) if cfg else ""
    command, cwd = _command_line(cfg) if cfg else ("not recorded (the report was made outside a workflow run)", None)
    return {"paragraph": " ".join(parts), "citations": list(CITATIONS), "command": command, "cwd": cwd,
            "config": scrub_paths(config_text) if config_text else "",
            "version": __version__,
            "date": now.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")}


def bold_to_t1w_view(ctx: SubjectContext) -> dict:
    return registration_view(ctx, "registration_bold")


def t1w_to_mni_view(ctx: SubjectContext) -> dict:
    return registration_view(ctx, "registration_t1w")
