"""Self-contained HTML QC reports for clinicians: one per subject (unit) and one per dataset.

A report is assembled from *reportlets*: small figures or HTML fragments listed in one declarative
spec (:data:`SUBJECT_REPORTLETS`), each with a title and a caption saying what good looks like.
Adding a figure is adding one entry. Every figure is drawn with matplotlib (Agg) or
``nilearn.plotting`` and embedded in the HTML as a base64 ``data:`` PNG or SVG, so the page needs
no network, no JavaScript and no external CSS; a Content-Security-Policy in the page forbids any
other resource. :func:`write_reportlets` writes the same figures as separate files (for Snakemake's
``--report``).

Privacy and safety
------------------
- Text taken from inputs (JSON values, warnings, file names) is HTML-escaped; absolute paths are cut
  to their file name (:func:`scrub_paths`), so the BIDS dataset's location never appears.
- NIfTI header text fields (``descrip``, ``db_name``, ``aux_file``, ``intent_name``) are never read.

Readers are tolerant: a missing or unreadable optional input gives a "not available" note in its
section (and, where it matters for safety, a QC reason) instead of a crash.

The verdict
-----------
The report judges nothing itself: it shows the unit's verdict (``*_desc-verdict_qc.json``, written by
:func:`tmstarget.qc.run_verdict` with the thresholds of the configuration the run used), i.e. the same
PASS / WARN / FAIL, reasons and action as the terminal, ``group_targets.tsv`` and the export gate. On
FAIL the coordinate is folded away and greyed ("not usable"). A missing verdict is shown as FAIL.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io as _io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from .group import GROUP_COLUMNS, _tsv_value, group_row, write_group_tsv  # noqa: E402,F401
from .io import atomic_path  # noqa: E402
from .qc import STATUS_ORDER, _num, _point, mean_fd_mm, read_json_tolerant, scrub_paths  # noqa: E402,F401

log = logging.getLogger(__name__)

STATUS_COLOURS = {"pass": "#1b7f3b", "warn": "#b06f00", "fail": "#b3261e", "info": "#555555"}
MAX_CARPET_VOXELS = 1200

CAVEATS = (
    "This coordinate is a research target, not a clinical verdict. It is the left-DLPFC spot whose "
    "resting-state signal is most anticorrelated with the subgenual cingulate (Fox et al. 2012).",
    "Evidence that individualized sgACC-anticorrelation targets improve outcomes is mixed: a 2025 "
    "prospective study (n = 66) found no benefit, and part of the anticorrelation can be driven by "
    "global-signal fluctuations (Elbau 2023) or created by global signal regression (Murphy 2009).",
    "Single-subject targets move with the data: compare the uncertainty cloud and the GSR/no-GSR shift "
    "with your coil's spatial precision (about 1 cm); with less than 20-30 minutes of data, targets are "
    "rarely reproducible to below 1 cm (Cao 2024).",
    "Neuronavigation must use the T1w-space coordinate with the very T1w file named in the provenance "
    "(check its SHA-256); the MNI coordinate is for comparison only.",
)


# ----------------------------------------------------------------------------- small helpers


def esc(text) -> str:
    """Input text made safe for HTML: absolute paths cut to file names, then ``html.escape``."""
    return html.escape(scrub_paths(text), quote=True)


def _fmt(value, digits: int = 1, unit: str = "") -> str:
    """A number for display (``n/a`` for missing), with an optional unit."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value)
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}{(' ' + unit) if unit else ''}"


def _fmt_mm3(point) -> str:
    """A point (3,) in mm as ``(x, y, z)`` with one decimal, or ``n/a``."""
    p = _point(point)
    return "n/a" if p is None else "(" + ", ".join(f"{v:.1f}" for v in p) + ")"


def _points(values) -> np.ndarray:
    """An (N, 3) array of the finite points in a JSON list (None entries dropped)."""
    pts = [p for p in (_point(v) for v in (values or [])) if p is not None]
    return np.asarray(pts, dtype=float).reshape(-1, 3)


def _first_number(*values):
    """The first value that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


# ----------------------------------------------------------------------------- inputs of one unit


class Unavailable(Exception):
    """A reportlet cannot be drawn because an input is missing; the message says which."""


class SubjectContext:
    """Lazy, tolerant access to the inputs of one subject report (keys as in :func:`build_subject_report`)."""

    def __init__(self, inputs: dict):
        self.inputs = dict(inputs or {})
        self._cache: dict = {}
        self.missing: list[str] = []

    def _note(self, what: str) -> None:
        if what not in self.missing:
            self.missing.append(what)

    def json(self, key: str) -> dict | None:
        if key not in self._cache:
            obj, problem = read_json_tolerant(self.inputs.get(key))
            if problem:
                self._note(f"{key}: {problem}")
            self._cache[key] = obj
        return self._cache[key]

    def path(self, key: str) -> Path | None:
        value = self.inputs.get(key)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is None or str(value) == "":
            return None
        p = Path(value)
        if not p.exists():
            self._note(f"{key}: {p.name} not found")
            return None
        return p

    def paths(self, key: str) -> list[Path]:
        value = self.inputs.get(key) or []
        if isinstance(value, (str, os.PathLike)):
            value = [value]
        out = []
        for v in value:
            p = Path(v)
            if p.exists():
                out.append(p)
            else:
                self._note(f"{key}: {p.name} not found")
        return out

    def img(self, key: str) -> nib.Nifti1Image:
        """A 3D image of ``key`` (first volume of a 4D image); raises Unavailable when missing."""
        cache_key = ("img", key)
        if cache_key not in self._cache:
            p = self.path(key)
            if p is None:
                raise Unavailable(f"{key} not available")
            try:
                img = nib.load(str(p))
                data = np.asanyarray(img.dataobj, dtype=np.float32)
            except Exception as exc:  # unreadable image: say so in the section
                raise Unavailable(f"{p.name} is not readable ({type(exc).__name__})") from None
            if data.ndim == 4:
                data = data[..., 0]
            data = np.nan_to_num(data)
            self._cache[cache_key] = _clean_img(data, img.affine)
        return self._cache[cache_key]

    def npz(self) -> dict:
        if "npz" not in self._cache:
            p = self.path("denoised_npz")
            if p is None:
                raise Unavailable("denoised time series (work/*_denoised.npz) not available")
            try:
                with np.load(p, allow_pickle=False) as d:
                    self._cache["npz"] = {k: d[k] for k in d.files}
            except Exception as exc:
                raise Unavailable(f"{p.name} is not readable ({type(exc).__name__})") from None
        return self._cache["npz"]

    @property
    def target(self) -> dict | None:
        return self.json("target_json")

    @property
    def native(self) -> dict | None:
        return self.json("native_json")

    @property
    def denoise_qc(self) -> dict | None:
        return self.json("denoise_qc_json")

    @property
    def seed(self) -> dict | None:
        return self.json("seed_json")

    def target_mni(self) -> np.ndarray | None:
        return _point((self.target or {}).get("target_mni_ras_mm"))

    def target_t1w(self) -> np.ndarray | None:
        return _point((self.native or {}).get("target_t1w_ras_mm"))


def _clean_img(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A new image with only data and affine: no header text (descrip, db_name, ...) survives."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=float))
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    return img


# ----------------------------------------------------------------------------- reportlet spec


@dataclass(frozen=True)
class Reportlet:
    """One section of the subject report.

    ``render(ctx)`` returns a matplotlib Figure (embedded as ``fmt``: "png" or "svg") or an HTML
    fragment string (already escaped), and raises :class:`Unavailable` when an input is missing.
    """

    name: str
    title: str
    caption: str
    render: Callable[[SubjectContext], object]
    fmt: str = "png"


def _figure(width_in: float = 9.0, height_in: float = 3.0):
    return plt.figure(figsize=(width_in, height_in), dpi=100)


def _kv_table(rows: list[tuple[str, str]], cls: str = "kv") -> str:
    """A two-column HTML table from already-escaped (label, value) pairs."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


BOOTSTRAP_CAVEAT = ("The block bootstrap is optimistic: its resamples share most of their data, so their "
                    "targets agree even when the data carry little signal. The split-half check compares "
                    "targets from two halves that share no data, and is the reliability measure.")


def unit_verdict(ctx: SubjectContext) -> dict:
    """The unit's verdict (``*_desc-verdict_qc.json``, computed by :mod:`tmstarget.qc` with the run's
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


def _findings_html(verdict: dict) -> str:
    findings = [f for f in verdict.get("findings") or [] if isinstance(f, dict)]
    groups = (("Problems", ("fail", "warn")), ("Checks passed", ("pass",)), ("Not checked / details", ("info",)))
    out = []
    for title, levels in groups:
        items = sorted((f for f in findings if f.get("level") in levels),
                       key=lambda f: -STATUS_ORDER.get(f.get("level"), -1))
        if not items:
            continue
        lis = "".join(f"<li class='{esc(f.get('level'))}'>"
                      + (f"<b>{esc(str(f.get('level')).upper())}</b> " if f.get("level") in ("fail", "warn") else "")
                      + f"<span class='topic'>{esc(f.get('topic', ''))}</span> {esc(f.get('text'))}</li>"
                      for f in items)
        out.append(f"<h4>{esc(title)}</h4><ul class='reasons findings'>{lis}</ul>")
    return "".join(out)


def _thresholds_html(verdict: dict) -> str:
    th = verdict.get("thresholds") if isinstance(verdict.get("thresholds"), dict) else {}
    rows = [(f"<code>{esc(v.get('config_key', k))}</code>", _fmt(v.get("value"), 2))
            for k, v in th.items() if isinstance(v, dict)]
    if not rows:
        return ""
    return ("<details><summary>QC thresholds of this run (from its configuration)</summary>"
            + _kv_table(rows) + "</details>")


def reliability_words(ctx: SubjectContext) -> str:
    """The reliability in plain words: the split-half result (``uncertainty.reliability.plain_words``),
    else the verdict's reliability finding, else "not assessed"."""
    unc = (ctx.target or {}).get("uncertainty")
    unc = unc if isinstance(unc, dict) else {}
    rel = unc.get("reliability") if isinstance(unc.get("reliability"), dict) else None
    if rel is not None and rel.get("plain_words"):
        return str(rel["plain_words"])
    if rel is not None and _num(rel, "median_distance_mm") is not None:
        verdict = {True: "reproducible", False: "not reproducible"}.get(rel.get("reproducible"), "not judged")
        return (f"split-half targets lie a median {_num(rel, 'median_distance_mm'):.1f} mm apart "
                f"(limit {_fmt(rel.get('limit_mm'), 0, 'mm')}): {verdict}")
    for f in unit_verdict(ctx).get("findings") or []:
        if isinstance(f, dict) and f.get("topic") == "reliability" and f.get("level") in ("pass", "warn", "fail") \
                and "candidate" not in str(f.get("text")):
            return str(f.get("text"))
    return "not assessed"


def candidates_html(ctx: SubjectContext) -> str:
    """The candidate targets (``uncertainty.candidates``) when the targets fall into two or more separated
    clusters (``multiple_candidates``); empty otherwise."""
    unc = (ctx.target or {}).get("uncertainty")
    if not isinstance(unc, dict) or unc.get("multiple_candidates") is not True:
        return ""
    cands = [c for c in unc.get("candidates") or [] if isinstance(c, dict)]
    native_unc = (ctx.native or {}).get("uncertainty")
    native_cands = native_unc.get("candidates") if isinstance(native_unc, dict) else None
    rows = []
    for i, c in enumerate(cands):
        t1w = None
        if isinstance(native_cands, list) and i < len(native_cands) and isinstance(native_cands[i], dict):
            t1w = native_cands[i].get("target_t1w_ras_mm")
        support = _first_number(_num(c, "support_fraction"), _num(c, "support"))
        rows.append(f"<tr><td>{i + 1}</td><td>{_fmt_mm3(c.get('target_mni_ras_mm'))}</td><td>{_fmt_mm3(t1w)}</td>"
                    f"<td>{_fmt(None if support is None else 100 * support, 0, '%')}</td>"
                    f"<td>{_fmt(c.get('n_targets'), 0)}</td></tr>")
    return ("<div class='candidates' id='candidates'><h4>Two or more candidate targets</h4>"
            "<p>The resampled targets fall into separated clusters: this data does not single out one spot. "
            "The headline target is one of these; the others are about as well supported.</p>"
            "<table class='grid'><tr><th>#</th><th>MNI (RAS mm)</th><th>T1w (RAS mm)</th>"
            "<th>support (share of resampled targets)</th><th>targets</th></tr>" + "".join(rows) + "</table></div>")


def render_summary(ctx: SubjectContext) -> str:
    """The one-screen summary: the unit's verdict (status, reasons, action), then the target in T1w and
    MNI mm with the navigator box (greyed and folded away on FAIL), and every finding of the verdict."""
    t, n = ctx.target, ctx.native
    verdict = unit_verdict(ctx)
    status = verdict["status"]
    word = esc(verdict.get("status_word") or status.upper())
    space = esc((t or {}).get("TemplateSpace") or "MNI")
    unc = (t or {}).get("uncertainty") if isinstance((t or {}).get("uncertainty"), dict) else {}
    gsr = (t or {}).get("gsr_comparison") if isinstance((t or {}).get("gsr_comparison"), dict) else {}
    t1w_name = esc(Path(str(n.get("t1w_path"))).name) if n and n.get("t1w_path") else "n/a"
    rows = [
        ("Target, subject T1w (RAS mm)", f"<b>{_fmt_mm3((n or {}).get('target_t1w_ras_mm'))}</b>"
                                         f" in {t1w_name}"),
        ("Scalp entry, T1w (RAS mm)", _fmt_mm3((n or {}).get("entry_t1w_ras_mm"))),
        ("Scalp-to-cortex distance", _fmt((n or {}).get("scalp_to_cortex_mm"), 1, "mm")),
        (f"Target, {space} (RAS mm)", _fmt_mm3((t or {}).get("target_mni_ras_mm"))),
        ("Method", esc((t or {}).get("method") or "n/a")),
        ("r / z at target", f"{_fmt((t or {}).get('r_at_target'), 2)} / {_fmt((t or {}).get('z_at_target'), 2)}"),
        ("Cluster size", _fmt((t or {}).get("cluster_size_voxels"), 0, "voxels")),
        ("Inside the BA46 region (HCPex label)",
         esc({True: "yes", False: "no"}.get((t or {}).get("in_ba46"), "n/a"))),
        ("Minutes kept", _fmt(_first_number(_num(ctx.denoise_qc, "minutes_kept"),
                                            _num(t, "denoising", "minutes_kept")), 1, "min")),
        ("Mean FD", _fmt(mean_fd_mm(ctx.denoise_qc), 2, "mm")),
        ("Reliability (split halves)", esc(reliability_words(ctx))),
        ("Shift without GSR", _fmt(gsr.get("shift_mm"), 1, "mm")),
    ]
    boot = ("<details class='bootstrap'><summary>Bootstrap spread (a detail)</summary>"
            f"<p>Median / 95th percentile distance of the bootstrap targets: {_fmt(unc.get('median_distance_mm'), 1, 'mm')}"
            f" / {_fmt(unc.get('p95_distance_mm'), 1, 'mm')}. {esc(BOOTSTRAP_CAVEAT)}</p></details>")
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("reasons") or [])
    banner = (f'<div class="status status-{esc(status)}" id="qc-status">QC: {word} '
              f'<span class="verdict">{esc({"pass": "all checks passed", "warn": "usable with care", "fail": "coordinate not usable"}[status])}</span></div>'
              + (f"<ul class='banner-reasons status-border-{esc(status)}'>{reasons}</ul>" if reasons else "")
              + f"<p class='action status-border-{esc(status)}' id='qc-action'><b>What to do:</b> "
                f"{esc(verdict.get('action') or 'n/a')}</p>")
    coordinate = ("<div>" + _kv_table(rows) + boot + candidates_html(ctx)
                  + (render_navigator_box(ctx) if n else "") + "</div>")
    if status == "fail":
        coordinate = ("<details class='not-usable'><summary>Coordinate (not usable: verdict FAIL; shown for "
                      "review only)</summary>" + coordinate + "</details>")
    return (
        banner
        + '<p class="caveat-short">Research coordinate, not a clinical verdict: evidence for this targeting is '
          'mixed (see Caveats).</p>'
        + '<div class="summary-grid">' + coordinate
        + "<div>" + _findings_html(verdict) + _thresholds_html(verdict) + "</div></div>"
    )


def _fd_runs(ctx: SubjectContext) -> list[dict]:
    """Per run: ``fd_mm`` (T,), ``censored`` indices, ``dummy`` count, ``name`` (file name only)."""
    qc = ctx.denoise_qc or {}
    runs = []
    for i, run in enumerate(qc.get("runs") or []):
        fd = run.get("framewise_displacement_mm")
        if not fd:
            continue
        runs.append({"fd_mm": np.asarray([np.nan if v is None else v for v in fd], dtype=float),
                     "censored": [int(c) for c in (run.get("censored_volumes") or [])],
                     "dummy": int(run.get("dummy_volumes") or 0),
                     "name": Path(str(run.get("bold") or f"run {i + 1}")).name,
                     "minutes_kept": run.get("minutes_kept"), "included": run.get("included", True)})
    if runs:
        return runs
    # fallback: the confounds TSVs (no censoring information)
    for p in ctx.paths("confounds"):
        try:
            import pandas as pd

            df = pd.read_csv(p, sep="\t", na_values="n/a")
        except Exception:
            continue
        if "framewise_displacement" in df:
            runs.append({"fd_mm": df["framewise_displacement"].to_numpy(float), "censored": [], "dummy": 0,
                         "name": p.name, "minutes_kept": None, "included": True})
    return runs


def render_motion(ctx: SubjectContext):
    """FD trace of every run (concatenated), threshold line, censored volumes shaded."""
    runs = _fd_runs(ctx)
    if not runs:
        raise Unavailable("no framewise displacement in the denoising QC JSON or the confounds TSVs")
    qc = ctx.denoise_qc or {}
    thr = _num(qc, "fd_threshold_mm")
    fig = _figure(9, 2.6)
    ax = fig.add_subplot(111)
    start = 0
    for i, run in enumerate(runs):
        fd = run["fd_mm"]
        x = np.arange(start, start + len(fd))
        ax.plot(x, fd, lw=0.9, color="#1f4e79")
        for c in run["censored"]:
            ax.axvspan(start + c - 0.5, start + c + 0.5, color="#d62728", alpha=0.35, lw=0)
        if run["dummy"]:
            ax.axvspan(start - 0.5, start + run["dummy"] - 0.5, color="#999999", alpha=0.3, lw=0)
        if i:
            ax.axvline(start - 0.5, color="k", lw=0.8, ls=":")
        ax.text(start + 1, 1.0, run["name"].split("_space-")[0], transform=ax.get_xaxis_transform(),
                fontsize=7, va="top", color="#333333")
        start += len(fd)
    if thr is not None:
        ax.axhline(thr, color="#d62728", lw=0.8, ls="--", label=f"censoring threshold {thr:g} mm")
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_xlim(-0.5, start - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("volume (runs concatenated; red = censored, grey = dummy scans)")
    ax.set_ylabel("FD (mm)")
    fig.tight_layout()
    return fig


def motion_text(ctx: SubjectContext) -> str:
    qc = ctx.denoise_qc or {}
    rows = []
    for run in qc.get("runs") or []:
        rows.append((esc(Path(str(run.get("bold", "run"))).name),
                     f"{_fmt(run.get('volumes_kept'), 0)} of {_fmt(run.get('volumes_total'), 0)} volumes kept, "
                     f"{_fmt(run.get('minutes_kept'), 1, 'min')}, mean FD {_fmt(run.get('mean_fd_mm'), 2, 'mm')}, "
                     f"{len(run.get('censored_volumes') or [])} censored"
                     + ("" if run.get("included", True) else " (run excluded)")))
    rows.append(("Total", f"{_fmt(qc.get('volumes_kept'), 0)} of {_fmt(qc.get('volumes_total'), 0)} volumes, "
                          f"<b>{_fmt(qc.get('minutes_kept'), 1, 'min')}</b> kept; strategy {esc(qc.get('strategy', 'n/a'))}"))
    return _kv_table(rows)


def _carpet_rows(n_voxels: int, max_rows: int = MAX_CARPET_VOXELS) -> np.ndarray:
    """Evenly spaced column indices (at most ``max_rows``) of ``n_voxels`` masked voxels."""
    if n_voxels <= max_rows:
        return np.arange(n_voxels)
    return np.unique(np.linspace(0, n_voxels - 1, max_rows).round().astype(int))


def read_masked_timeseries(bold_path, mask_3d: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(T, len(columns)) float32 of a 4D BOLD file at ``mask_3d`` voxels (C order) picked by ``columns``.

    Reads one volume at a time with the file kept open, so memory stays at one volume.
    """
    img = nib.load(str(bold_path), keep_file_open=True)
    if len(img.shape) != 4 or img.shape[:3] != mask_3d.shape:
        raise Unavailable(f"{Path(bold_path).name} is not a 4D image on the grid of the mask")
    flat = np.flatnonzero(mask_3d.reshape(-1))[columns]
    out = np.empty((img.shape[3], flat.size), dtype=np.float32)
    proxy = img.dataobj
    for t in range(img.shape[3]):
        out[t] = np.asarray(proxy[..., t], dtype=np.float32).reshape(-1)[flat]
    return np.nan_to_num(out)


def _zscore_detrended(ts_tv: np.ndarray) -> np.ndarray:
    """Linear detrend and z-score over time, per column."""
    t = np.arange(len(ts_tv), dtype=float)
    design = np.column_stack([np.ones_like(t), t - t.mean()])
    beta, *_ = np.linalg.lstsq(design, ts_tv.astype(float), rcond=None)
    res = ts_tv - design @ beta
    sd = res.std(axis=0)
    sd[sd == 0] = 1.0
    return (res / sd).astype(np.float32)


def _draw_carpet(fig, carpet_vt: np.ndarray, boundaries: list[int], marks: list[int], title: str) -> None:
    gs = fig.add_gridspec(2, 1, height_ratios=[1, 4], hspace=0.05)
    ax_gs = fig.add_subplot(gs[0])
    ax = fig.add_subplot(gs[1], sharex=ax_gs)
    ax_gs.plot(carpet_vt.mean(axis=0), color="#1f4e79", lw=0.8)
    ax_gs.set_ylabel("mean", fontsize=7)
    ax_gs.tick_params(labelbottom=False, labelsize=7)
    ax_gs.set_title(title, fontsize=9, loc="left")
    ax.imshow(carpet_vt, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest")
    for b in boundaries:
        ax.axvline(b - 0.5, color="#ffd700", lw=1)
    for m in marks:
        ax.plot([m, m], [-0.5, carpet_vt.shape[0] * 0.03], color="#d62728", lw=1.2, clip_on=False)
    ax.set_xlabel("volume")
    ax.set_ylabel(f"{carpet_vt.shape[0]} brain voxels")
    ax.set_yticks([])


def _run_mask(ctx: SubjectContext, masks: list[Path], i: int) -> np.ndarray:
    """Boolean 3D brain mask of run ``i``: its own mask file, else the denoised npz's mask."""
    if masks:
        p = masks[min(i, len(masks) - 1)]
        try:
            return np.asanyarray(nib.load(str(p)).dataobj) > 0
        except Exception as exc:
            raise Unavailable(f"{p.name} is not readable ({type(exc).__name__})") from None
    d = ctx.npz()
    if "mask" not in d:
        raise Unavailable("no BOLD brain mask given")
    return np.asarray(d["mask"]) > 0


def render_carpet_before(ctx: SubjectContext):
    """Carpet plot (voxels x time, detrended z-scores) of the preprocessed BOLD before denoising."""
    bolds = ctx.paths("preproc_bold")
    if not bolds:
        raise Unavailable("preprocessed BOLD runs not available")
    masks = ctx.paths("bold_mask")
    qc_runs = (ctx.denoise_qc or {}).get("runs") or []
    blocks, boundaries, marks, start = [], [], [], 0
    columns = None
    for i, bold in enumerate(bolds):
        mask_3d = _run_mask(ctx, masks, i)
        if columns is None:
            columns = _carpet_rows(int(mask_3d.sum()))
        cols = columns[columns < int(mask_3d.sum())]
        ts = read_masked_timeseries(bold, mask_3d, cols)
        blocks.append(_zscore_detrended(ts).T)
        if i:
            boundaries.append(start)
        run = qc_runs[i] if i < len(qc_runs) else {}
        marks += [start + int(c) for c in (run.get("censored_volumes") or [])]
        start += ts.shape[0]
    n_rows = min(b.shape[0] for b in blocks)
    carpet = np.concatenate([b[:n_rows] for b in blocks], axis=1)
    fig = _figure(9, 3.4)
    _draw_carpet(fig, carpet, boundaries, marks, "before denoising (preprocessed BOLD; red ticks = censored volumes)")
    return fig


def render_carpet_after(ctx: SubjectContext):
    """Carpet plot of the denoised time series (``data_tv`` of the npz, censored volumes removed)."""
    d = ctx.npz()
    if "data_tv" not in d:
        raise Unavailable("the denoised npz has no data_tv")
    data_tv = np.asarray(d["data_tv"], dtype=np.float32)
    cols = _carpet_rows(data_tv.shape[1])
    carpet = np.clip(data_tv[:, cols].T, -4, 4)
    lengths = np.asarray(d.get("run_lengths", [data_tv.shape[0]]), dtype=int).reshape(-1)
    boundaries = [int(b) for b in np.cumsum(lengths)[:-1] if 0 < b < data_tv.shape[0]]
    fig = _figure(9, 3.4)
    _draw_carpet(fig, carpet, boundaries, [], "after denoising (censored volumes removed; yellow = run boundary)")
    return fig


def _unmask(values_v: np.ndarray, mask_3d: np.ndarray, affine) -> nib.Nifti1Image:
    vol = np.zeros(mask_3d.shape, dtype=np.float32)
    vol[mask_3d] = values_v
    return _clean_img(vol, affine)


def _centre_of_mass_ras_mm(img: nib.Nifti1Image) -> np.ndarray | None:
    ijk = np.argwhere(np.asarray(img.dataobj) > 0)
    if not len(ijk):
        return None
    return nib.affines.apply_affine(img.affine, ijk.mean(axis=0))


def render_seed_tsnr(ctx: SubjectContext):
    """tSNR map (before denoising) through the seed, with the seed outline; histogram of seed tSNR."""
    from nilearn import plotting

    d = ctx.npz()
    if "tsnr_v" not in d or "mask" not in d:
        raise Unavailable("the denoised npz has no tsnr_v / mask")
    mask_3d = np.asarray(d["mask"]) > 0
    affine = np.asarray(d.get("affine", np.eye(4)), dtype=float)
    tsnr_v = np.asarray(d["tsnr_v"], dtype=float)
    tsnr_img = _unmask(tsnr_v, mask_3d, affine)
    try:
        seed_img = ctx.img("seed_mask")
    except Unavailable:
        seed_img = None
    cut = _centre_of_mass_ras_mm(seed_img) if seed_img is not None else None
    fig = _figure(9, 3.0)
    gs = fig.add_gridspec(1, 4)
    ax_map = fig.add_subplot(gs[0, :3])
    vmax = float(np.percentile(tsnr_v, 99)) if tsnr_v.size else 1.0
    disp = plotting.plot_img(tsnr_img, display_mode="ortho", cut_coords=None if cut is None else tuple(cut),
                             cmap="viridis", vmin=0, vmax=vmax, colorbar=True, axes=ax_map, figure=fig,
                             draw_cross=False, black_bg=True, annotate=True, title="tSNR")
    seed_vals = None
    if seed_img is not None:
        disp.add_contours(seed_img, levels=[0.5], colors="r", linewidths=1.2)
        from nilearn.image import resample_to_img

        seed_on = np.asarray(resample_to_img(seed_img, tsnr_img, interpolation="nearest",
                                             force_resample=True, copy_header=True).dataobj) > 0
        seed_vals = np.asarray(tsnr_img.dataobj)[seed_on & mask_3d]
    ax_h = fig.add_subplot(gs[0, 3])
    ax_h.hist(tsnr_v, bins=40, color="#999999", density=True, label="brain")
    if seed_vals is not None and seed_vals.size:
        ax_h.hist(seed_vals, bins=20, color="#d62728", alpha=0.7, density=True, label="seed")
    thr = _num(ctx.seed, "min_seed_tsnr")
    if thr is not None:
        ax_h.axvline(thr, color="k", ls="--", lw=0.8)
    ax_h.set_xlabel("tSNR", fontsize=8)
    ax_h.set_yticks([])
    ax_h.tick_params(labelsize=7)
    ax_h.legend(fontsize=7, frameon=False)
    return fig


def seed_tsnr_text(ctx: SubjectContext) -> str:
    s = ctx.seed or {}
    return _kv_table([
        ("Seed voxels in BOLD mask", f"{_fmt(s.get('seed_voxels_in_mask'), 0)} of {_fmt(s.get('seed_voxels_total'), 0)}"),
        ("Seed median tSNR", _fmt(s.get("seed_median_tsnr"), 1)),
        ("Seed voxels with tSNR below threshold",
         f"{_fmt(100 * s['seed_low_tsnr_fraction'] if _num(s, 'seed_low_tsnr_fraction') is not None else None, 0)}% "
         f"(threshold {_fmt(s.get('min_seed_tsnr'), 0)})"),
    ])


def render_bold_to_t1w(ctx: SubjectContext):
    """Subject T1w with the edges of the BOLD reference registered to it."""
    from nilearn import plotting

    refs = ctx.paths("boldref_t1w")
    if not refs:
        raise Unavailable("no BOLD reference in T1w space (boldref_t1w) was given")
    t1w = ctx.img("t1w")
    ref = ctx.img("boldref_t1w")
    fig = _figure(9, 3.0)
    cut = ctx.target_t1w()
    if cut is None:
        cut = nib.affines.apply_affine(t1w.affine, (np.asarray(t1w.shape[:3]) - 1) / 2)
    disp = plotting.plot_anat(t1w, display_mode="ortho", cut_coords=tuple(cut), figure=fig, dim=-0.5,
                              title="T1w + BOLD reference edges (through the target)", draw_cross=False)
    disp.add_edges(ref, color="r")
    return fig


@functools.lru_cache(maxsize=1)
def _bundled_template() -> nib.Nifti1Image:
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=2)
    return _clean_img(np.asanyarray(img.dataobj), img.affine)


def _template_img(template_space: str | None) -> tuple[nib.Nifti1Image, str]:
    """nilearn's bundled MNI152 template (no network) and a note on how it relates to ``template_space``."""
    note = "nilearn's bundled MNI152 (ICBM 2009) template"
    if template_space and not str(template_space).startswith("MNI152NLin2009"):
        note += f", a stand-in for {template_space}"
    return _bundled_template(), note


def render_t1w_to_mni(ctx: SubjectContext):
    """T1w normalised to MNI with the template's edges on top."""
    from nilearn import plotting

    t1w_mni = ctx.img("t1w_mni")
    template, note = _template_img(ctx.inputs.get("template_space"))
    fig = _figure(9, 3.0)
    disp = plotting.plot_anat(t1w_mni, display_mode="ortho", cut_coords=(0, 0, 10), figure=fig, dim=-0.5,
                              title=f"T1w in MNI + edges of {note}", draw_cross=False)
    disp.add_edges(template, color="r")
    return fig


def render_seed_map(ctx: SubjectContext):
    """Seed-correlation z map with the search region (green), seed (yellow) and target (cross)."""
    from nilearn import plotting

    z_img = ctx.img("z_map")
    target = ctx.target_mni()
    fig = _figure(9, 6.0)
    ax1 = fig.add_axes([0, 0.5, 1, 0.5])
    ax2 = fig.add_axes([0, 0, 1, 0.5])
    data = np.asarray(z_img.dataobj)
    vmax = float(np.percentile(np.abs(data[data != 0]), 99)) if np.any(data != 0) else 1.0
    search_img = seed_img = None
    try:
        search_img = ctx.img("search_mask")
    except Unavailable:
        pass
    try:
        seed_img = ctx.img("seed_mask")
    except Unavailable:
        pass
    bg, _ = _template_img(ctx.inputs.get("template_space"))
    cut1 = tuple(target) if target is not None else None
    d1 = plotting.plot_stat_map(z_img, bg_img=bg, cut_coords=cut1, display_mode="ortho", axes=ax1, figure=fig,
                                cmap="RdBu_r", vmax=vmax, colorbar=True, draw_cross=False,
                                title="seed map (Fisher z) at the target")
    if search_img is not None:
        d1.add_contours(search_img, levels=[0.5], colors="lime", linewidths=1.0)
    if target is not None:
        d1.add_markers([target], marker_color="yellow", marker_size=60, marker="X")
    seed_cut = _centre_of_mass_ras_mm(seed_img) if seed_img is not None else None
    d2 = plotting.plot_stat_map(z_img, bg_img=bg, cut_coords=None if seed_cut is None else tuple(seed_cut),
                                display_mode="ortho", axes=ax2, figure=fig, cmap="RdBu_r", vmax=vmax,
                                colorbar=True, draw_cross=False, title="seed map at the sgACC seed")
    if seed_img is not None:
        d2.add_contours(seed_img, levels=[0.5], colors="yellow", linewidths=1.0)
    return fig


#: Radius (mm) of the coil circle drawn at the scalp entry, and length of the handle line.
COIL_GLYPH_RADIUS_MM = 25.0
HANDLE_GLYPH_LENGTH_MM = 60.0
#: (nilearn cut axis, world axes shown as horizontal / vertical) of an ortho display.
_ORTHO_VIEWS = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}


def coil_geometry(native: dict | None) -> dict | None:
    """Entry, target, inward normal and handle direction (T1w RAS) of a native JSON, or None.

    The normal falls back to the entry-to-target direction; the handle to None when not recorded.
    """
    n = native or {}
    entry, target = _point(n.get("entry_t1w_ras_mm")), _point(n.get("target_t1w_ras_mm"))
    if entry is None or target is None:
        return None
    normal = _point(n.get("inward_normal_t1w_ras"))
    if normal is None or np.linalg.norm(normal) == 0:
        normal = target - entry
    if np.linalg.norm(normal) == 0:
        return None
    normal = normal / np.linalg.norm(normal)
    handle = _point(n.get("handle_direction_t1w_ras"))
    if handle is not None and np.linalg.norm(handle) > 0:
        handle = handle / np.linalg.norm(handle)
    else:
        handle = None
    return {"entry": entry, "target": target, "normal": normal, "handle": handle}


def coil_glyph_ras_mm(geom: dict, radius_mm: float = COIL_GLYPH_RADIUS_MM,
                      handle_mm: float = HANDLE_GLYPH_LENGTH_MM) -> dict:
    """3D polylines (T1w RAS mm) of the coil glyph: circle in the scalp tangent plane, handle line, coil axis.

    Returns ``{"circle": (64, 3), "handle": (2, 3) or None, "axis": (2, 3)}``; the handle starts at
    the circle's rim and runs ``handle_mm`` further along the handle direction.
    """
    n = geom["normal"]
    u = np.cross(n, [1.0, 0, 0]) if abs(n[0]) < 0.9 else np.cross(n, [0, 1.0, 0])
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    t = np.linspace(0, 2 * np.pi, 64)
    circle = geom["entry"] + radius_mm * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)
    handle = None
    if geom["handle"] is not None:
        h = geom["handle"] - np.dot(geom["handle"], n) * n
        h = h / np.linalg.norm(h) if np.linalg.norm(h) > 1e-6 else geom["handle"]
        handle = np.vstack([geom["entry"] + radius_mm * h, geom["entry"] + (radius_mm + handle_mm) * h])
    return {"circle": circle, "handle": handle, "axis": np.vstack([geom["entry"], geom["target"]])}


def draw_coil_glyph(display, geom: dict, with_coil: bool = True) -> None:
    """Draw the coil line (entry to target) and, with ``with_coil``, the coil circle and its labelled
    handle, projected on each view of a nilearn ortho display (world mm axes)."""
    glyph = coil_glyph_ras_mm(geom)
    for key, (a, b) in _ORTHO_VIEWS.items():
        cut = display.axes.get(key)
        if cut is None:
            continue
        ax = cut.ax
        ax.plot(glyph["axis"][:, a], glyph["axis"][:, b], color="white", lw=1.2, ls="--", zorder=6)
        if not with_coil:
            continue
        ax.plot(glyph["circle"][:, a], glyph["circle"][:, b], color="cyan", lw=1.5, zorder=7)
        if glyph["handle"] is not None:
            hd = glyph["handle"]
            ax.plot(hd[:, a], hd[:, b], color="#ff4fd8", lw=3.0, solid_capstyle="round", zorder=7)
            ax.text(hd[1, a], hd[1, b], "handle", color="#ff4fd8", fontsize=10, fontweight="bold",
                    ha="center", va="bottom", zorder=8, clip_on=True)


def render_target_t1w(ctx: SubjectContext):
    """The target and scalp entry on the subject's own T1w (what the navigator will show), with the
    coil drawn at the entry: a circle in the scalp plane and its handle (magenta, labelled)."""
    from nilearn import plotting

    target = ctx.target_t1w()
    if target is None:
        raise Unavailable("no T1w-space target (the native-space stage failed or did not run)")
    t1w = ctx.img("t1w")
    geom = coil_geometry(ctx.native)
    entry = None if geom is None else geom["entry"]
    fig = _figure(9, 3.0 if entry is None else 6.0)
    top = (0.0, 0.0, 1.0, 1.0) if entry is None else (0.0, 0.5, 1.0, 0.5)
    disp = plotting.plot_anat(t1w, cut_coords=tuple(target), display_mode="ortho", figure=fig, axes=top,
                              dim=-0.3, draw_cross=False, title="cortical target (yellow X), T1w")
    disp.add_markers([target], marker_color="yellow", marker_size=60, marker="X")
    if geom is not None:
        draw_coil_glyph(disp, geom, with_coil=False)
    if entry is not None:
        # second row cut through the entry: nilearn draws a marker only within 2 mm of a cut
        low = plotting.plot_anat(t1w, cut_coords=tuple(entry), display_mode="ortho", figure=fig,
                                 axes=(0.0, 0.0, 1.0, 0.5), dim=-0.3, draw_cross=False,
                                 title="coil at the scalp entry (cyan), handle (magenta)")
        low.add_markers([entry], marker_color="cyan", marker_size=50, marker="o")
        draw_coil_glyph(low, geom)
    return fig


# ----------------------------------------------------------------------------- navigator box

#: Navigator name and what to do with each ``nav/`` file (keys of :func:`navigation.export_names`).
NAVIGATOR_IMPORTS = {
    "brainsight": ("Brainsight (Rogue Research)", "import as targets (version 14 file)"),
    "localite_instrument": ("Localite TMS Navigator", "copy into the session's InstrumentMarkers/ folder"),
    "localite_entrytarget": ("Localite TMS Navigator", "copy into the session's EntryTarget/ folder"),
    "visor2": ("ANT Neuro visor2", "import as markers"),
    "slicer": ("3D Slicer (checking only, no coil)", "drag onto Slicer after the T1w"),
}

WORLD_CONVENTION_WORDS = ("NIfTI world coordinates of this file: x to the right, y to the front, z up "
                          "(RAS, millimetres)")


def handle_angle_from_posterior_deg(handle, normal, entry) -> tuple[float, str] | None:
    """(angle in degrees from posterior towards lateral in the scalp plane, "left"/"right") of a handle
    direction; the same definition as :func:`tmstarget.scalp.handle_direction_ras`. None if undefined."""
    from .scalp import handle_direction_ras

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
    (points back, left and down)``; "not recorded" when the native JSON has no handle."""
    geom = coil_geometry(native)
    if geom is None or geom["handle"] is None:
        return "not recorded"
    from .navigation import describe_direction

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
    other = "right" if side == "left" else "left"
    towards = side if angle >= 0 else other
    words = describe_direction(geom["handle"]).replace("-", ", ")
    return (f"{name}, {a:.0f} deg from posterior towards {towards} "
            f"(world direction: {words})")


def handle_glyph_svg(native: dict | None, size: int = 130) -> str:
    """A small inline SVG: the head seen from above (nose up, subject's left on the left), the coil
    circle at the entry and its handle line. Empty string when the handle is not recorded."""
    geom = coil_geometry(native)
    if geom is None or geom["handle"] is None:
        return ""
    c = size / 2
    r_head = size * 0.36
    e = geom["entry"][:2]
    norm = np.linalg.norm(e)
    # the entry's position on the head outline (axial direction from the head centre)
    pos = np.array([c, c]) if norm == 0 else np.array([c + r_head * 0.78 * e[0] / norm, c - r_head * 0.78 * e[1] / norm])
    h = geom["handle"][:2]
    h = h / np.linalg.norm(h) if np.linalg.norm(h) > 1e-6 else np.array([0.0, -1.0])
    coil_r = size * 0.09
    start = pos + coil_r * np.array([h[0], -h[1]])
    end = pos + (coil_r + size * 0.2) * np.array([h[0], -h[1]])
    f = lambda v: f"{v:.1f}"  # noqa: E731
    return (
        f'<svg class="handle-glyph" role="img" aria-label="coil handle seen from above" width="{size}" '
        f'height="{size}" viewBox="0 0 {size} {size}" xmlns="http://www.w3.org/2000/svg">'
        f'<ellipse cx="{f(c)}" cy="{f(c)}" rx="{f(r_head * 0.85)}" ry="{f(r_head)}" fill="#f4f4f4" stroke="#555"/>'
        f'<path d="M{f(c - 6)},{f(c - r_head + 1)} L{f(c)},{f(c - r_head - 8)} L{f(c + 6)},{f(c - r_head + 1)}" '
        'fill="#f4f4f4" stroke="#555"/>'
        f'<text x="{f(c)}" y="11" font-size="10" text-anchor="middle">front</text>'
        f'<text x="{f(c)}" y="{size - 2}" font-size="10" text-anchor="middle">back</text>'
        f'<text x="2" y="{f(c + 4)}" font-size="10">L</text>'
        f'<text x="{size - 9}" y="{f(c + 4)}" font-size="10">R</text>'
        f'<circle cx="{f(pos[0])}" cy="{f(pos[1])}" r="{f(coil_r)}" fill="none" stroke="#0a8fa8" stroke-width="2.5"/>'
        f'<line x1="{f(start[0])}" y1="{f(start[1])}" x2="{f(end[0])}" y2="{f(end[1])}" stroke="#c2188f" '
        'stroke-width="4" stroke-linecap="round"/>'
        f'<text x="{f(end[0])}" y="{f(end[1] + (12 if h[1] < 0 else -4))}" font-size="10" fill="#c2188f" '
        'text-anchor="middle" font-weight="bold">handle</text></svg>')


def _verdict_findings(ctx: SubjectContext, topic: str) -> list[dict]:
    v = ctx.json("verdict_json") or {}
    return [f for f in v.get("findings") or [] if isinstance(f, dict) and f.get("topic") == topic]


def _nav_files(ctx: SubjectContext) -> list[tuple[str, str, str]]:
    """(navigator, nav/ file, what to do) for each export format the run was configured with."""
    from .navigation import EXPORT_FORMATS, export_names

    formats = ctx.inputs.get("nav_formats")
    if formats is None:
        formats = list(EXPORT_FORMATS)
    names = export_names(_unit_name(ctx.inputs))
    out = []
    for fmt in formats:
        for key in EXPORT_FORMATS.get(str(fmt), []):
            nav, what = NAVIGATOR_IMPORTS[key]
            out.append((nav, "nav/" + names[key], what))
    return out


def render_navigator_box(ctx: SubjectContext) -> str:
    """The technician's box: which T1w to load, target and entry in its world mm, the handle in words
    and as a glyph, depth, which nav/ file goes into which navigator, and header warnings."""
    n = ctx.native or {}
    sha = str(n.get("t1w_sha256") or "")
    t1w = esc(Path(str(n.get("t1w_path"))).name) if n.get("t1w_path") else "n/a"
    verdict = ctx.json("verdict_json") or {}
    usable = verdict.get("coordinate_usable") is not False and verdict.get("status") != "fail"
    rows = [
        ("Load this T1w", f"<b>{t1w}</b><br>SHA-256 <code>{esc(sha[:12]) if sha else 'n/a'}</code>"
                          + ("&hellip; (check it: <code>sha256sum</code>)" if sha else "")),
        ("Cortical target", f"<b>{_fmt_mm3(n.get('target_t1w_ras_mm'))}</b> mm"),
        ("Scalp entry (coil centre)", f"<b>{_fmt_mm3(n.get('entry_t1w_ras_mm'))}</b> mm"),
        ("Coordinates", esc(WORLD_CONVENTION_WORDS)),
        ("Coil handle", esc(handle_in_words(n))),
        ("Scalp to cortex", _fmt(n.get("scalp_to_cortex_mm"), 1, "mm")),
    ]
    if usable:
        files = _nav_files(ctx)
        nav_html = ("<ul class='navfiles'>" + "".join(
            f"<li><b>{esc(nav)}</b>: <code>{esc(f)}</code> ({esc(what)})</li>" for nav, f, what in files)
            + "</ul><p class='small'>Step-by-step import: docs/navigation.md; nav/README.txt repeats this box."
            "</p>") if files else "<p class='na'>No navigator export configured.</p>"
    else:
        nav_html = ("<p class='fail-text'><b>No navigator file was exported</b> (verdict FAIL): "
                    "nav/NOT_EXPORTED.txt says why.</p>")
    warn_html = "".join(f"<p class='header-warning'><b>Header warning:</b> {esc(f.get('text'))}</p>"
                        for f in _verdict_findings(ctx, "header"))
    return (f'<div class="navbox" id="navigator"><h3>For the navigator</h3>{warn_html}'
            f'<div class="navbox-grid">{_kv_table(rows)}{handle_glyph_svg(n)}</div>'
            f"<h4>Files to import</h4>{nav_html}</div>")


_PROJECTIONS = (("sagittal (y, z)", 1, 2, "y anterior (mm)", "z superior (mm)"),
                ("coronal (x, z)", 0, 2, "x right (mm)", "z superior (mm)"),
                ("axial (x, y)", 0, 1, "x right (mm)", "y anterior (mm)"))


def render_uncertainty(ctx: SubjectContext):
    """Bootstrap and split-half targets around the target, three projections, p95 circle (MNI mm)."""
    target = ctx.target_mni()
    unc = (ctx.target or {}).get("uncertainty")
    if target is None or not isinstance(unc, dict):
        raise Unavailable("no uncertainty estimate in the target JSON")
    boots = _points(unc.get("targets_mni_ras_mm"))
    halves = _points(unc.get("split_half_targets_mni_ras_mm"))
    if not len(boots) and not len(halves):
        raise Unavailable("the target JSON lists no bootstrap or split-half targets")
    p95 = _num(unc, "p95_distance_mm")
    fig = _figure(9, 3.0)
    span = max(10.0, float(np.abs(np.vstack([boots, halves]) - target).max()) + 3 if len(boots) + len(halves) else 10)
    for k, (name, a, b, xl, yl) in enumerate(_PROJECTIONS):
        ax = fig.add_subplot(1, 3, k + 1)
        if len(boots):
            ax.scatter(boots[:, a], boots[:, b], s=12, color="#1f77b4", alpha=0.5, label=f"bootstrap (n={len(boots)})")
        if len(halves):
            ax.scatter(halves[:, a], halves[:, b], s=30, marker="^", color="#ff7f0e", label="split halves")
        ax.scatter([target[a]], [target[b]], s=90, marker="X", color="#d62728", label="target", zorder=5)
        if p95 is not None:
            ax.add_patch(plt.Circle((target[a], target[b]), p95, fill=False, ls="--", color="k", lw=0.8))
        ax.set_xlim(target[a] - span, target[a] + span)
        ax.set_ylim(target[b] - span, target[b] + span)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xl, fontsize=7)
        ax.set_ylabel(yl, fontsize=7)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6, loc="lower left", frameon=False)
    fig.tight_layout()
    return fig


def uncertainty_text(ctx: SubjectContext) -> str:
    unc = (ctx.target or {}).get("uncertainty") or {}
    if not isinstance(unc, dict):
        return ""
    rows = [("Reliability (split halves)", f"<b>{esc(reliability_words(ctx))}</b>"),
            ("Split-half distance (first vs second half / median of repeats)",
             f"{_fmt(unc.get('split_half_distance_mm'), 1, 'mm')} / "
             f"{_fmt(unc.get('split_half_median_distance_mm'), 1, 'mm')}")]
    boot = _kv_table([
        ("Method", f"{esc(unc.get('method', 'n/a'))}, n = {_fmt(unc.get('n'), 0)}, blocks of "
                   f"{_fmt(unc.get('block_length_s'), 0, 's')}"),
        ("Distance of bootstrap targets (median / p95)",
         f"{_fmt(unc.get('median_distance_mm'), 1, 'mm')} / {_fmt(unc.get('p95_distance_mm'), 1, 'mm')}")])
    return (_kv_table(rows) + candidates_html(ctx)
            + f"<details class='bootstrap'><summary>Bootstrap (why it looks better than it is)</summary>"
              f"<p>{esc(BOOTSTRAP_CAVEAT)}</p>{boot}</details>")


def _literature_sites() -> dict[str, np.ndarray]:
    try:
        from .regions import literature_sites_mni_ras_mm

        return {k: np.asarray(v, float) for k, v in literature_sites_mni_ras_mm().items()}
    except Exception:  # regions' atlas data missing: the table still shows the recorded distances
        return {}


def render_gsr(ctx: SubjectContext):
    """Target with GSR (main) and without GSR (comparison strategy), three projections, MNI mm."""
    target = ctx.target_mni()
    gsr = (ctx.target or {}).get("gsr_comparison")
    other = _point(gsr.get("target_mni_ras_mm")) if isinstance(gsr, dict) else None
    if target is None or other is None:
        note = gsr.get("note") if isinstance(gsr, dict) else None
        raise Unavailable("no no-GSR target in the target JSON" + (f" ({note})" if note else ""))
    fig = _figure(9, 3.0)
    span = max(10.0, float(np.abs(other - target).max()) + 5)
    centre = (target + other) / 2
    for k, (name, a, b, xl, yl) in enumerate(_PROJECTIONS):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.scatter([target[a]], [target[b]], s=90, marker="X", color="#d62728", label="with GSR (target)", zorder=5)
        ax.scatter([other[a]], [other[b]], s=70, marker="o", color="#2ca02c",
                   label=f"without GSR ({gsr.get('strategy', '')})")
        ax.annotate("", xy=(other[a], other[b]), xytext=(target[a], target[b]),
                    arrowprops={"arrowstyle": "->", "color": "#555555"})
        ax.set_xlim(centre[a] - span, centre[a] + span)
        ax.set_ylim(centre[b] - span, centre[b] + span)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xl, fontsize=7)
        ax.set_ylabel(yl, fontsize=7)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6, loc="lower left", frameon=False)
    fig.suptitle(f"shift {_fmt(gsr.get('shift_mm'), 1, 'mm')}", fontsize=9)
    fig.tight_layout()
    return fig


def render_literature(ctx: SubjectContext):
    """The target and the published DLPFC sites, sagittal and axial projections on a glass brain."""
    from nilearn import plotting

    target = ctx.target_mni()
    if target is None:
        raise Unavailable("no MNI target")
    sites = _literature_sites()
    fig = _figure(9, 3.2)
    disp = plotting.plot_glass_brain(None, display_mode="lzr", figure=fig, title="target (red) and literature sites")
    if sites:
        disp.add_markers(np.vstack(list(sites.values())), marker_color="#1f77b4", marker_size=40)
    disp.add_markers([target], marker_color="#d62728", marker_size=80, marker="X")
    return fig


def literature_text(ctx: SubjectContext) -> str:
    dists = (ctx.target or {}).get("literature_distances_mm")
    sites = _literature_sites()
    if not isinstance(dists, dict) or not dists:
        return "<p class='na'>Distances to literature sites not recorded in the target JSON.</p>"
    rows = [(esc(k), f"{_fmt(v, 1, 'mm')}" + (f" &nbsp; (site at {_fmt_mm3(sites[k])})" if k in sites else ""))
            for k, v in dists.items()]
    return _kv_table(rows)


def render_caveats(ctx: SubjectContext) -> str:
    warnings = []
    for key in ("target_json", "native_json", "denoise_qc_json", "seed_json"):
        obj = ctx.json(key)
        for w in (obj or {}).get("warnings") or []:
            if str(w) not in warnings:
                warnings.append(str(w))
    items = "".join(f"<li>{esc(c)}</li>" for c in CAVEATS)
    out = f"<ul class='caveats'>{items}</ul>"
    if warnings:
        out += "<h4>Warnings recorded by the pipeline</h4><ul class='reasons'>" + "".join(
            f"<li class='warn'>{esc(w)}</li>" for w in warnings) + "</ul>"
    return out


def _json_pre(obj) -> str:
    return "<pre>" + esc(json.dumps(obj, indent=1, sort_keys=True, default=str)) + "</pre>"


def render_provenance(ctx: SubjectContext) -> str:
    t, n, q = ctx.target or {}, ctx.native or {}, ctx.denoise_qc or {}
    rows = []
    if n:
        rows += [("T1w used for navigation", esc(Path(str(n.get("t1w_path", "n/a"))).name)),
                 ("T1w SHA-256", f"<code>{esc(n.get('t1w_sha256', 'n/a'))}</code>"),
                 ("T1w->MNI transform", esc(Path(str(n.get("transform_path", "n/a"))).name)),
                 ("Transform SHA-256", f"<code>{esc(n.get('transform_sha256', 'n/a'))}</code>"),
                 ("MNI->T1w->MNI round trip", _fmt(n.get("roundtrip_error_mm"), 2, "mm"))]
    rows += [("Template space", esc(t.get("TemplateSpace", "n/a"))),
             ("Denoising strategy", esc(q.get("strategy") or (t.get("denoising") or {}).get("strategy", "n/a"))),
             ("Repetition time", _fmt(q.get("t_r"), 2, "s"))]
    sources = []
    for obj in (t, n, ctx.seed or {}):
        for s in obj.get("Sources") or []:
            s = str(s)
            if s not in sources:
                sources.append(s)
    rows.append(("Sources", "<br>".join(esc(s) for s in sources) or "n/a"))
    sw = t.get("software") or {}
    if isinstance(sw, dict) and sw:
        rows.append(("Software", ", ".join(f"{esc(k)} {esc(v)}" for k, v in sw.items())))
    rows.append(("Report generated", esc(_dt.datetime.now().strftime("%Y-%m-%d %H:%M"))))
    out = _kv_table(rows)
    params = {"method": t.get("method"), "method_parameters": t.get("method_parameters"),
              "seed": t.get("seed"), "search_region": t.get("search_region"),
              "denoising": q.get("strategy_parameters") or t.get("denoising"),
              "targeting_parameters": t.get("targeting_parameters")}
    params = {k: v for k, v in params.items() if v}
    if params:
        out += "<details><summary>All parameters</summary>" + _json_pre(params) + "</details>"
    if ctx.missing:
        out += "<h4>Inputs not available</h4><ul>" + "".join(f"<li>{esc(m)}</li>" for m in ctx.missing) + "</ul>"
    return out


SUBJECT_REPORTLETS: tuple[Reportlet, ...] = (
    Reportlet("summary", "Summary",
              "Good: status PASS, a T1w-space target, at least 10 minutes kept, low motion, a clear "
              "anticorrelation (z well below 0) and a target inside BA46.", render_summary),
    Reportlet("target_t1w", "Target on the subject's T1w",
              "Good: the yellow cross (top row, cut through the target) sits in the grey matter of the left "
              "middle frontal gyrus, and the cyan dot (bottom row, cut through the entry) lies on the scalp "
              "surface. These are the coordinates the navigator uses.",
              render_target_t1w),
    Reportlet("motion", "Head motion",
              "Framewise displacement (FD, mm) of each volume. Good: FD mostly below the dashed threshold, few "
              "censored (red) volumes, and at least 10 minutes kept in total.", render_motion, fmt="svg"),
    Reportlet("carpet_before", "Carpet plot before denoising",
              "Each row is a brain voxel, each column a volume (detrended z-scores). Vertical bands that "
              "coincide with red ticks are motion artefacts; they should disappear after denoising.",
              render_carpet_before),
    Reportlet("carpet_after", "Carpet plot after denoising",
              "Good: a uniform texture with no vertical bands or stripes; censored volumes are removed.",
              render_carpet_after),
    Reportlet("seed_tsnr", "Seed tSNR (sgACC signal dropout)",
              "Temporal SNR before denoising with the sgACC seed outlined in red. Good: the seed lies in bright "
              "(high tSNR) tissue, not in the dark dropout near the sinuses; the red histogram sits right of the "
              "dashed threshold.", render_seed_tsnr),
    Reportlet("bold_to_t1w", "BOLD to T1w registration",
              "Good: the red edges of the BOLD reference follow the brain outline and ventricles of the T1w.",
              render_bold_to_t1w),
    Reportlet("t1w_to_mni", "T1w to MNI normalisation",
              "Good: the red template edges follow the normalised T1w's brain outline, ventricles and sulci.",
              render_t1w_to_mni),
    Reportlet("seed_map", "Seed map, search region and target",
              "sgACC seed correlation (blue = anticorrelated). Good: the target (yellow X) lies in a blue "
              "region inside the green search outline; the seed (yellow outline, bottom) is in the subgenual "
              "cingulate and correlates positively with its surroundings.", render_seed_map),
    Reportlet("uncertainty", "Uncertainty cloud",
              "Targets from block-bootstrap resamples (blue) and split halves (orange) of the time series around "
              "the target (red X); dashed circle = 95% of bootstrap targets. Good: a tight cloud (within ~10 mm).",
              render_uncertainty, fmt="svg"),
    Reportlet("gsr", "Global signal regression: target with and without GSR",
              "GSR can create anticorrelations. Good: the target without GSR is close (< 10 mm) to the target "
              "with GSR.", render_gsr, fmt="svg"),
    Reportlet("literature", "Distance to literature sites",
              "The target (red) against published left-DLPFC sites (blue). Good: near the BA46 site; far from "
              "all of them means an atypical target worth a second look.", render_literature),
    Reportlet("caveats", "Caveats", "Read before using the target.", render_caveats),
    Reportlet("provenance", "Provenance",
              "Which files and software produced this target; check the T1w checksum against the file loaded "
              "into the navigator.", render_provenance),
)

#: Extra HTML (tables) shown under a reportlet's figure.
_EXTRA_TEXT: dict[str, Callable[[SubjectContext], str]] = {
    "motion": motion_text, "seed_tsnr": seed_tsnr_text, "uncertainty": uncertainty_text,
    "literature": literature_text,
}


# ----------------------------------------------------------------------------- rendering


def figure_bytes(fig, fmt: str = "png") -> bytes:
    """Bytes of a matplotlib figure as PNG (100 dpi) or SVG; closes the figure."""
    buf = _io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=100, bbox_inches="tight", metadata=_figure_metadata(fmt))
    finally:
        plt.close(fig)
    return buf.getvalue()


def _figure_metadata(fmt: str) -> dict:
    # no creation dates or paths in the files: reproducible bytes and nothing identifying
    return {"Date": None} if fmt == "svg" else {"Software": None}


def _img_tag(data: bytes, fmt: str, alt: str) -> str:
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img class="fig" alt="{html.escape(alt)}" src="data:{mime};base64,{b64}">'


def render_reportlet(r: Reportlet, ctx: SubjectContext) -> tuple[str, bytes | None]:
    """(HTML body of the section, figure bytes or None) for one reportlet; never raises."""
    try:
        result = r.render(ctx)
    except Unavailable as exc:
        return f"<p class='na'>Not available: {esc(exc)}</p>", None
    except Exception as exc:  # a broken figure must not lose the whole report
        log.warning("reportlet %s failed: %s: %s", r.name, type(exc).__name__, scrub_paths(exc))
        plt.close("all")
        return (f"<p class='na'>This figure could not be drawn ({esc(type(exc).__name__)}: {esc(exc)}).</p>",
                None)
    if isinstance(result, str):
        return result, None
    data = figure_bytes(result, r.fmt)
    return _img_tag(data, r.fmt, r.title), data


def _section(r_name: str, title: str, caption: str, body: str) -> str:
    return (f'<section id="{html.escape(r_name)}"><h2>{esc(title)}</h2>'
            f'<p class="caption">{esc(caption)}</p>{body}</section>')


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#1a1a1a;background:#fff}
header{background:#20334d;color:#fff;padding:10px 24px}header h1{margin:0;font-size:1.4em}
header p{margin:2px 0 0;font-size:.85em;color:#d0d8e4}
nav{padding:6px 24px;background:#eef1f5;font-size:.85em;position:sticky;top:0;z-index:2}
nav a{margin-right:12px;color:#20334d;text-decoration:none}nav a:hover{text-decoration:underline}
main{padding:0 24px 40px;max-width:1100px}section{border-bottom:1px solid #ddd;padding:8px 0 16px}
h2{font-size:1.15em;margin:12px 0 4px}h4{margin:10px 0 4px;font-size:.95em}
.caption{color:#555;font-size:.88em;margin:0 0 8px}img.fig{max-width:100%;height:auto;display:block}
table.kv{border-collapse:collapse;font-size:.9em}table.kv th{text-align:left;font-weight:600;padding:3px 14px 3px 0;
vertical-align:top;color:#333}table.kv td{padding:3px 0;vertical-align:top}
table.grid{border-collapse:collapse;font-size:.85em}table.grid th,table.grid td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}table.grid th{background:#eef1f5}
table.grid td:not(:last-child){white-space:nowrap}
.status{font-size:1.4em;font-weight:700;color:#fff;padding:8px 14px;border-radius:4px;margin:10px 0 6px}
.status .verdict{font-size:.65em;font-weight:400;margin-left:12px}
.status-pass{background:#1b7f3b}.status-warn{background:#b06f00}.status-fail{background:#b3261e}
.badge{color:#fff;padding:1px 6px;border-radius:3px;font-weight:600;font-size:.85em}
.badge.pass{background:#1b7f3b}.badge.warn{background:#b06f00}.badge.fail{background:#b3261e}
.summary-grid{display:grid;grid-template-columns:minmax(320px,1fr) minmax(320px,1fr);gap:18px}
ul.reasons{margin:0;padding-left:18px;font-size:.88em}ul.reasons li.fail{color:#b3261e}
ul.reasons li.warn{color:#8a5600}span.topic{font-size:.8em;color:#555;border:1px solid #ccc;border-radius:3px;
padding:0 3px}ul.banner-reasons{margin:0 0 4px;padding:4px 8px 4px 28px;font-size:.95em}
p.action{margin:0 0 8px;padding:4px 10px;font-size:.95em}.status-border-pass{border-left:6px solid #1b7f3b}
.status-border-warn{border-left:6px solid #b06f00}.status-border-fail{border-left:6px solid #b3261e}
details.not-usable>div{opacity:.55;filter:grayscale(1)}details.not-usable>summary{color:#b3261e;font-weight:600}
.candidates{border:2px solid #b06f00;padding:4px 10px;margin:8px 0}ul.reasons li.pass{color:#1b7f3b}ul.reasons li.info{color:#555}
.caveat-short{font-size:.9em;color:#8a5600;margin:4px 0 10px}.na{color:#777;font-style:italic}
.navbox{border:2px solid #20334d;border-radius:4px;padding:6px 12px;margin:12px 0;background:#f7f9fc}
.navbox h3{margin:2px 0 6px;font-size:1.05em}.navbox-grid{display:flex;gap:12px;align-items:flex-start}
.navbox table.kv{font-size:.88em}ul.navfiles{margin:2px 0;padding-left:18px;font-size:.88em}
.small{font-size:.82em;color:#555}.header-warning{border-left:4px solid #b06f00;padding:2px 8px;
background:#fff4e0;font-size:.88em;margin:4px 0}.fail-text{color:#b3261e}
pre{font-size:.78em;background:#f6f6f6;padding:6px;overflow-x:auto}code{font-size:.85em;word-break:break-all}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _page(title: str, subtitle: str, nav: list[tuple[str, str]], body: str) -> str:
    nav_html = "".join(f'<a href="#{html.escape(a)}">{esc(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav_html}</nav><main>{body}</main></body></html>\n"
    )


def _unit_name(inputs: dict) -> str:
    p = inputs.get("target_json") or inputs.get("denoise_qc_json") or ""
    m = re.match(r"(sub-[A-Za-z0-9]+(?:_ses-[A-Za-z0-9]+)?)", Path(str(p)).name)
    return m.group(1) if m else "subject"


def render_subject_html(inputs: dict, title: str | None = None,
                        reportlets: tuple[Reportlet, ...] = SUBJECT_REPORTLETS) -> str:
    """The subject report as one self-contained HTML string (see :func:`build_subject_report`)."""
    ctx = SubjectContext(inputs)
    title = title or f"tmstarget QC report: {_unit_name(inputs)}"
    sections = []
    # provenance last so that it lists every input found missing by the other sections
    for r in reportlets:
        body, _ = render_reportlet(r, ctx)
        extra = _EXTRA_TEXT.get(r.name)
        if extra is not None:
            try:
                body += extra(ctx)
            except Exception as exc:
                log.warning("table of %s failed: %s", r.name, scrub_paths(exc))
        sections.append(_section(r.name, r.title, r.caption, body))
    return _page(title, "TMS target from resting-state fMRI (sgACC anticorrelation) - research use only",
                 [(r.name, r.title) for r in reportlets], "".join(sections))


def build_subject_report(inputs: dict, out_html, title: str | None = None) -> Path:
    """Write the self-contained QC report of one unit (subject or subject+session).

    Parameters
    ----------
    inputs : dict
        Paths (str or PathLike; missing files are tolerated and reported):
        ``target_json`` (MNI target), ``native_json`` (T1w target, may be missing),
        ``denoise_qc_json``, ``seed_json`` (seed map sidecar), ``z_map``, ``seed_mask``, ``search_mask``
        (template space), ``preproc_bold`` (list of MNI preprocessed BOLD runs), ``bold_mask`` (list),
        ``denoised_npz``, ``boldref_t1w`` (list, may be empty), ``t1w`` (preprocessed T1w, native),
        ``t1w_mni``, ``template_space`` (a name, e.g. "MNI152NLin2009aSym"), ``confounds`` (list of TSVs).
    out_html : path
        The HTML file to write (atomically).
    title : str, optional
        Page title; default "tmstarget QC report: <unit>".

    Returns
    -------
    Path
        ``out_html``.
    """
    page = render_subject_html(inputs, title)
    out_html = Path(out_html)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote subject report %s (%d kB)", out_html.name, len(page) // 1024)
    return out_html


HTML_REPORTLETS = ("summary", "caveats", "provenance")


def reportlet_filenames() -> list[str]:
    """File names :func:`write_reportlets` writes, in report order (fixed, so a rule can declare them)."""
    return [f"{r.name}.html" if r.name in HTML_REPORTLETS else f"{r.name}.{r.fmt}" for r in SUBJECT_REPORTLETS]


def reportlet_titles() -> list[tuple[str, str, str]]:
    """``(file name, title, what good looks like)`` of every subject reportlet, in report order."""
    return [(name, r.title, r.caption) for r, name in zip(SUBJECT_REPORTLETS, reportlet_filenames())]


def _placeholder_figure(message: str):
    """A small figure that says why the real one is missing (keeps file names fixed)."""
    fig = _figure(6, 1.2)
    fig.text(0.02, 0.5, scrub_paths(message)[:150], fontsize=10, va="center", color="#555555")
    return fig


def write_reportlets(inputs: dict, out_dir) -> list[Path]:
    """Write each subject reportlet to its own file in ``out_dir`` (for Snakemake ``--report``).

    Figures become ``<name>.png`` or ``<name>.svg`` (a placeholder figure saying what is missing when
    an input is absent); the summary, caveats and provenance become small self-contained
    ``<name>.html`` pages. The names are always :func:`reportlet_filenames`.

    Parameters
    ----------
    inputs : dict
        As in :func:`build_subject_report`.
    out_dir : path
        Folder to write into (created if needed).

    Returns
    -------
    list of Path
        The files written, in report order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = SubjectContext(inputs)
    written = []
    for r, name in zip(SUBJECT_REPORTLETS, reportlet_filenames()):
        path = out_dir / name
        body, data = render_reportlet(r, ctx)
        if name.endswith(".html"):
            extra = _EXTRA_TEXT.get(r.name)
            if extra is not None:
                body += extra(ctx)
            with atomic_path(path) as tmp:
                tmp.write_text(_page(r.title, r.caption, [], _section(r.name, r.title, r.caption, body)),
                               encoding="utf-8")
        else:
            if data is None:
                text = re.sub(r"<[^>]+>", "", body)
                data = figure_bytes(_placeholder_figure(html.unescape(text)), r.fmt)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        written.append(path)
    return written


def reportlet_captions() -> dict[str, str]:
    """Caption of each subject reportlet by name (for Snakemake report captions)."""
    return {r.name: r.caption for r in SUBJECT_REPORTLETS}


# ----------------------------------------------------------------------------- dataset report

def _relative_href(link, out_html: Path) -> str | None:
    """A relative link to a subject report from the group page, never an absolute path or URL."""
    if not link:
        return None
    s = str(link)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", s):
        return None
    p = Path(s)
    if p.is_absolute():
        try:
            s = os.path.relpath(p, out_html.parent)
        except ValueError:
            s = p.name
    return "/".join(html.escape(part) for part in Path(s).parts)


def render_group_targets(rows: list[dict]):
    """Glass-brain plot of every unit's MNI target coloured by QC status, with the literature sites."""
    from nilearn import plotting

    fig = _figure(10, 3.4)
    disp = plotting.plot_glass_brain(None, display_mode="lzr", figure=fig,
                                     title="targets by QC status (green pass, orange warn, red fail); blue = literature")
    sites = _literature_sites()
    if sites:
        disp.add_markers(np.vstack(list(sites.values())), marker_color="#1f77b4", marker_size=30)
    for status in ("pass", "warn", "fail"):
        pts = [[r[f"target_mni_{a}"] for a in "xyz"] for r in rows if r["status"] == status
               and r["target_mni_x"] is not None]
        if pts:
            disp.add_markers(np.asarray(pts), marker_color=STATUS_COLOURS[status], marker_size=50, marker="X")
    return fig


def build_group_report(subject_entries: list[dict], out_html, out_tsv) -> Path:
    """Write the dataset report (table of all units with QC status and targets, a target plot) and a TSV.

    Parameters
    ----------
    subject_entries : list of dict
        One per unit with keys ``unit``, ``target_json``, ``native_json``, ``denoise_qc_json``,
        ``seed_json`` (paths; missing files tolerated) and ``report_html`` (link to the subject
        report, relative to ``out_html``).
    out_html, out_tsv : path
        Outputs (written atomically). The TSV has the columns of :data:`GROUP_COLUMNS`, ``n/a`` for
        missing values, coordinates in RAS mm.

    Returns
    -------
    Path
        ``out_html``.
    """
    out_html, out_tsv = Path(out_html), Path(out_tsv)
    rows = [group_row(e) for e in subject_entries]
    write_group_tsv(rows, out_tsv)

    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "warn", "fail")}
    head = ("<tr><th>unit</th><th>QC</th><th>target MNI (RAS mm)</th><th>target T1w (RAS mm)</th>"
            "<th>method</th><th>z</th><th>min kept</th><th>mean FD (mm)</th><th>bootstrap p95 (mm)</th>"
            "<th>GSR shift (mm)</th><th>reasons</th></tr>")
    body = []
    for r in rows:
        href = _relative_href(r["report_html"], out_html)
        unit = esc(r["unit"])
        unit_cell = f'<a href="{href}">{unit}</a>' if href else unit
        mni = [r[f"target_mni_{a}"] for a in "xyz"]
        t1w = [r[f"target_t1w_{a}"] for a in "xyz"]
        body.append(
            f"<tr><td>{unit_cell}</td><td><span class='badge {r['status']}'>{r['status']}</span></td>"
            f"<td>{_fmt_mm3(mni if None not in mni else None)}</td><td>{_fmt_mm3(t1w if None not in t1w else None)}</td>"
            f"<td>{esc(r['method'] or 'n/a')}</td><td>{_fmt(r['z_at_target'], 2)}</td>"
            f"<td>{_fmt(r['minutes_kept'], 1)}</td><td>{_fmt(r['mean_fd_mm'], 2)}</td>"
            f"<td>{_fmt(r['bootstrap_p95_mm'], 1)}</td><td>{_fmt(r['gsr_shift_mm'], 1)}</td>"
            f"<td>{esc(r['reasons']) or '-'}</td></tr>")
    table = f"<table class='grid' id='units'>{head}{''.join(body)}</table>"
    summary = (f"<p>{len(rows)} unit(s): {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail. "
               "Targets are research coordinates; see each subject report for caveats. Table also in "
               f"{esc(out_tsv.name)}.</p>")
    fig_r = Reportlet("targets", "Targets", "", lambda ctx: render_group_targets(rows))
    fig_html, _ = render_reportlet(fig_r, SubjectContext({}))
    sections = (_section("table", "All units", "QC status and target of every unit; click a unit for its report.",
                         summary + table)
                + _section("targets", "Targets in MNI space",
                           "Good: targets cluster in the left DLPFC near the BA46 site; outliers deserve a look at "
                           "their reports.", fig_html))
    page = _page("tmstarget dataset QC report", "TMS targets from resting-state fMRI - research use only",
                 [("table", "All units"), ("targets", "Targets")], sections)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote dataset report %s (%d units)", out_html.name, len(rows))
    return out_html
