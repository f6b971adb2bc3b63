"""The tables and words under the report's figures: summary, motion, seed tSNR, uncertainty, literature,
caveats, provenance and the registration checks. Values are plain strings or numbers (never HTML): the
templates escape them; every judgement shown comes from the unit's verdict (:mod:`.verdict`)."""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from tmstarget.qc.metrics import mean_fd_mm
from tmstarget.qc.text import fmt, fmt3, num
from tmstarget.report.common import SubjectContext, first_number
from tmstarget.report.common import grid_mm
from tmstarget.report.figures import literature_sites
from tmstarget.report.navigator import navigator_view
from tmstarget.report.verdict import (STATUS_HEADLINE, candidate_rows, dist_mm, findings_groups, reliability_words,
                                      target_uncertainty, threshold_rows, unit_verdict)

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
        ("Minutes kept", fmt(first_number(num(ctx.denoise_qc, "minutes_kept"),
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
    unc = target_uncertainty(ctx)
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
    sites = literature_sites()
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
    minutes = first_number(num(ctx.denoise_qc, "minutes_kept"), num(ctx.target, "denoising", "minutes_kept"))
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

def bold_to_t1w_view(ctx: SubjectContext) -> dict:
    return registration_view(ctx, "registration_bold")


def t1w_to_mni_view(ctx: SubjectContext) -> dict:
    return registration_view(ctx, "registration_t1w")
