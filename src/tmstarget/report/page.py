"""Page assembly: the reportlet spec, Jinja2 templates (autoescape on) and the writers.

A report is assembled from *reportlets* listed in one declarative spec (:data:`SUBJECT_REPORTLETS`):
each has a title, a caption saying what good looks like, an optional figure (drawn once by
:mod:`.figures`) and an optional view (plain data from :mod:`.verdict`, shown by the macro of the same
name in ``templates/sections.html.j2``). Templates escape every value (autoescape on) and cut absolute
paths to file names (the environment's ``finalize``), so input text can never become markup and the
dataset's location never appears. Figures are embedded as base64 ``data:`` URIs; a
Content-Security-Policy forbids any other resource.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import jinja2
import matplotlib.pyplot as plt
from markupsafe import Markup

from tmstarget import __version__
from tmstarget.qc.group import GROUP_COLUMNS, group_row, write_group_tsv  # noqa: F401
from tmstarget.io.files import atomic_path
from tmstarget.qc.text import fmt, fmt3, scrub_paths
from tmstarget.report import distortion as DC
from tmstarget.report import figures as F
from tmstarget.report import methods as M
from tmstarget.report import sections as S
from tmstarget.report import verdict as V
from tmstarget.report import viewer as VW
from tmstarget.report.common import SubjectContext, Unavailable, frozen_heap, unit_name

log = logging.getLogger(__name__)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SUBTITLE = "TMS target from resting-state fMRI (sgACC anticorrelation) - research use only"


def _finalize(value):
    # every {{ value }}: absolute paths cut to file names (Markup, e.g. data: URIs, is left alone)
    if isinstance(value, str) and not isinstance(value, Markup):
        return scrub_paths(value)
    return value


ENV = jinja2.Environment(loader=jinja2.PackageLoader("tmstarget.report", "templates"), autoescape=True,
                         trim_blocks=True, lstrip_blocks=True, finalize=_finalize,
                         undefined=jinja2.StrictUndefined)


def _css() -> Markup:
    return Markup(resources.files("tmstarget.report").joinpath("templates/report.css").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Reportlet:
    """One section of the subject report.

    ``figure(ctx)`` returns a matplotlib Figure (embedded as ``fmt``: "png" or "svg"); ``view(ctx)``
    returns the data of the section's table (macro ``name`` in ``sections.html.j2``). Either raises
    :class:`Unavailable` when an input is missing.
    """

    name: str
    title: str
    caption: str
    figure: Callable[[SubjectContext], object] | None = None
    fmt: str = "png"
    view: Callable[[SubjectContext], dict] | None = None
    #: two figures with identical views (fixed image, moving image) for the CSS-only before/after switch
    flicker: Callable[[SubjectContext], list] | None = None
    flicker_titles: tuple[str, str] = ("", "")
    #: the figure shows where this person's target is (position, slice labels, axes in mm): on a FAIL
    #: verdict it is shown only inside a "not usable" fold
    personal: bool = False
    #: part of the decision block (shown open); every other section is a closed fold
    open: bool = False


@dataclass
class Rendered:
    """A reportlet drawn once: figure bytes (or a note saying why not) and its view data."""

    name: str
    title: str
    caption: str
    fmt: str
    data: bytes | None = None
    note: str | None = None
    view: dict | None = None
    flicker: list = field(default_factory=list)
    flicker_titles: tuple[str, str] = ("", "")
    open: bool = False
    #: a figure of the person's target under a FAIL verdict: drawn only inside a "not usable" fold
    withheld: bool = False

    @property
    def img(self) -> Markup | None:
        return None if self.data is None else _data_uri(self.data, self.fmt)


def _data_uri(data: bytes, fmt: str) -> Markup:
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return Markup(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}")


def render_reportlet(r: Reportlet, ctx: SubjectContext) -> Rendered:
    """Draw one reportlet (figure and view); never raises: a failure becomes a note in its section."""
    out = Rendered(r.name, r.title, r.caption, r.fmt, open=r.open)
    out.withheld = r.personal and r.figure is not None and V.unit_verdict(ctx)["status"] == "fail"
    if r.figure is not None:
        try:
            out.data = F.figure_bytes(r.figure(ctx), r.fmt)
        except Unavailable as exc:
            out.note = f"Not available: {exc}"
        except Exception as exc:  # a broken figure must not lose the whole report
            log.warning("reportlet %s failed: %s: %s", r.name, type(exc).__name__, scrub_paths(exc))
            plt.close("all")
            out.note = f"This figure could not be drawn ({type(exc).__name__}: {scrub_paths(exc)})."
    if r.flicker is not None and out.data is not None:
        try:
            out.flicker = [_data_uri(F.figure_bytes(f, "png"), "png") for f in r.flicker(ctx)]
            out.flicker_titles = r.flicker_titles
        except Exception as exc:  # the switch is an extra: the overlay figure above stays
            log.warning("before/after images of %s failed: %s", r.name, scrub_paths(exc))
            plt.close("all")
            out.flicker = []
    if r.view is not None:
        try:
            out.view = r.view(ctx)
        except Exception as exc:
            log.warning("table of %s failed: %s", r.name, scrub_paths(exc))
    return out


SUBJECT_REPORTLETS: tuple[Reportlet, ...] = (
    Reportlet("summary", "Summary",
              "The verdict of this run (the same PASS / WARN / FAIL as the terminal and group_targets.tsv), "
              "what to do, the coordinate and the box for the navigator.", view=S.summary_view, open=True),
    Reportlet("target_t1w", "Target on the subject's T1w",
              "Good: the yellow cross (top row, cut through the target) sits in the grey matter of the left "
              "middle frontal gyrus; the bottom row, cut through the scalp entry, shows the coil (cyan circle) "
              "on the scalp with its handle (magenta) pointing back and outwards; the dashed line is the coil "
              "axis from the entry to the target. These are the coordinates the navigator uses.",
              figure=F.render_target_t1w, personal=True, open=True),
    Reportlet("viewer", "Explore the target on the T1w (interactive)",
              "Click or drag in any slice to move the cursor; the viewer prints its T1w coordinates (RAS mm, the "
              "navigator's). Good: the yellow ball (target) sits in the grey matter of the left middle frontal "
              "gyrus and the cyan ball (scalp entry) on the scalp above it; blue is anticorrelated with the sgACC "
              "seed, red correlated. Needs JavaScript; not printed; left out on a FAILed unit.",
              view=VW.viewer_view, open=True),
    Reportlet("motion", "Head motion",
              "Framewise displacement (FD, mm) of each volume. Good: FD mostly below the dashed threshold, few "
              "censored (red) volumes, and the minutes kept at or above this run's threshold (Summary, QC "
              "thresholds).", figure=F.render_motion, fmt="svg",
              view=S.motion_view),
    Reportlet("carpet_before", "Carpet plot before denoising",
              "Each row is a brain voxel, each column a volume (detrended z-scores). Vertical bands that "
              "coincide with red ticks are motion artefacts; they should disappear after denoising.",
              figure=F.render_carpet_before),
    Reportlet("carpet_after", "Carpet plot after denoising",
              "Good: a uniform texture with no vertical bands or stripes; censored volumes are removed.",
              figure=F.render_carpet_after),
    Reportlet("seed_tsnr", "Seed tSNR (sgACC signal dropout)",
              "Temporal SNR before denoising with the sgACC seed outlined in red. Good: the seed lies in bright "
              "(high tSNR) tissue, not in the dark dropout near the sinuses; the red histogram sits right of the "
              "dashed threshold.", figure=F.render_seed_tsnr, view=S.seed_tsnr_view),
    Reportlet("bold_to_t1w", "BOLD to T1w registration",
              "Good: the red edges of the BOLD reference follow the brain outline and ventricles of the T1w.",
              figure=F.render_bold_to_t1w, view=S.bold_to_t1w_view, flicker=F.render_bold_to_t1w_flicker,
              flicker_titles=("the subject's T1w", "the BOLD reference")),
    Reportlet("distortion", "Distortion correction",
              "Which susceptibility distortion correction each BOLD run got (field maps from fmap/), or \"not "
              "corrected\". When a correction was applied: the BOLD reference before and after it, cut near the "
              "ventromedial prefrontal cortex, with the T1w white-matter boundary in red. Good: after correction "
              "the frontal edge and the ventricles of the BOLD reference follow the red boundary better than "
              "before.", view=DC.distortion_view),
    Reportlet("t1w_to_mni", "T1w to MNI normalisation",
              "Good: the red template edges follow the normalised T1w's brain outline, ventricles and sulci.",
              figure=F.render_t1w_to_mni, view=S.t1w_to_mni_view, flicker=F.render_t1w_to_mni_flicker,
              flicker_titles=("the subject's normalised T1w", "the template")),
    Reportlet("seed_map", "Seed map, search region and target",
              "sgACC seed correlation on the subject's anatomy (blue = anticorrelated; the colour scale includes "
              "the target's own value; values weaker than a quarter of the scale are not coloured, so the "
              "anatomy shows). Good: the target (yellow X) lies in a blue region inside the green search "
              "outline; the seed (yellow outline, bottom) is in the subgenual cingulate and correlates positively "
              "with its surroundings. Blue areas outside the green outline, even larger ones, are expected: the "
              "sgACC is anticorrelated with much of the lateral frontal and parietal cortex, and the target is "
              "searched for only inside the left-DLPFC outline.", figure=F.render_seed_map, personal=True),
    Reportlet("uncertainty", "Reliability and uncertainty",
              "Targets from split halves (orange) and block-bootstrap resamples (blue) around the target (red X). "
              "Good: split-half targets close to the target (the reliability measure); the bootstrap cloud is a "
              "detail and looks tighter than the truth.", figure=F.render_uncertainty, fmt="svg",
              view=S.uncertainty_view, personal=True),
    Reportlet("gsr", "Global signal regression: target with and without GSR",
              "GSR can create anticorrelations. Good: the target without GSR is close (< 10 mm) to the target "
              "with GSR.", figure=F.render_gsr, fmt="svg", personal=True),
    Reportlet("literature", "Distance to literature sites",
              "The target (red) against published left-DLPFC sites (blue). Good: near the BA46 site; far from "
              "all of them means an atypical target worth a second look.", figure=F.render_literature,
              view=S.literature_view, personal=True),
    Reportlet("caveats", "Caveats", "Read before using the target.", view=S.caveats_view),
    Reportlet("glossary", "Glossary", "The terms of this report in plain words.", view=M.glossary_view),
    Reportlet("methods", "Methods",
              "A paragraph to cite this analysis, with references, the command line, the configuration, the "
              "version and the date.", view=M.methods_view),
    Reportlet("provenance", "Provenance",
              "Which files and software produced this target; check the T1w checksum against the file loaded "
              "into the navigator.", view=S.provenance_view),
)

#: Short labels of the sticky navigation bar (one line at 1280 px, so anchors are not hidden under it).
NAV_LABELS = {"summary": "Summary", "target_t1w": "Target & coil", "motion": "Motion", "carpet_before": "Carpet before",
              "carpet_after": "Carpet after", "seed_tsnr": "Seed tSNR", "bold_to_t1w": "BOLD to T1w",
              "t1w_to_mni": "T1w to MNI", "distortion": "Distortion", "seed_map": "Seed map", "uncertainty": "Reliability", "gsr": "GSR",
              "literature": "Literature", "caveats": "Caveats", "glossary": "Glossary", "methods": "Methods",
              "provenance": "Provenance", "viewer": "Viewer"}

HTML_REPORTLETS = tuple(r.name for r in SUBJECT_REPORTLETS if r.figure is None)


def render_sections(ctx: SubjectContext, reportlets=SUBJECT_REPORTLETS) -> list[Rendered]:
    """Every reportlet drawn once, in order (provenance last, so it lists every input found missing)."""
    with frozen_heap():  # nilearn's gc.collect() per image read then scans only what the report makes
        return [render_reportlet(r, ctx) for r in reportlets]


def _page(sections: list[Rendered], title: str, subtitle: str = SUBTITLE, nav: bool = True,
          footer: str = "") -> str:
    scripts = [h for s in sections for h in ((s.view or {}).get("script_hashes") or [])]  # the viewer's, by hash
    csp = f"{CSP}; script-src {' '.join(scripts)}" if scripts else CSP
    return ENV.get_template("subject.html.j2").render(
        title=title, subtitle=subtitle, csp=csp, css=_css(), sections=sections,
        nav=[(s.name, NAV_LABELS.get(s.name, s.title)) for s in sections] if nav else [], footer=footer) + "\n"


def render_subject_html(inputs: dict, title: str | None = None,
                        reportlets: tuple[Reportlet, ...] = SUBJECT_REPORTLETS,
                        sections: list[Rendered] | None = None) -> str:
    """The subject report as one self-contained HTML string (see :func:`build_subject_report`)."""
    ctx = SubjectContext(inputs)
    unit = unit_name(inputs)
    title = title or f"tmstarget QC report: {unit}"
    sections = render_sections(ctx, reportlets) if sections is None else sections
    date = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return _page(sections, title, footer=f"{unit} - tmstarget {__version__} QC report - {date} - research use only")


def reportlet_filenames() -> list[str]:
    """File names :func:`write_reportlets` writes, in report order (fixed, so a rule can declare them)."""
    return [f"{r.name}.html" if r.name in HTML_REPORTLETS else f"{r.name}.{r.fmt}" for r in SUBJECT_REPORTLETS]


def reportlet_titles() -> list[tuple[str, str, str]]:
    """``(file name, title, what good looks like)`` of every subject reportlet, in report order."""
    return [(name, r.title, r.caption) for r, name in zip(SUBJECT_REPORTLETS, reportlet_filenames())]


def reportlet_captions() -> dict[str, str]:
    """Caption of each subject reportlet by name (for Snakemake report captions)."""
    return {r.name: r.caption for r in SUBJECT_REPORTLETS}


def _write_reportlet_files(sections: list[Rendered], out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for s, name in zip(sections, reportlet_filenames()):
        path = out_dir / name
        if name.endswith(".html"):
            with atomic_path(path) as tmp:
                tmp.write_text(_page([s], s.title, s.caption, nav=False), encoding="utf-8")
        else:
            data = s.data
            if data is None:
                data = F.figure_bytes(F.placeholder_figure(s.note or "not available"), s.fmt)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        written.append(path)
    return written


def build_subject_report(inputs: dict, out_html, title: str | None = None, reportlet_dir=None) -> Path:
    """Write the self-contained QC report of one unit (subject or subject+session).

    Parameters
    ----------
    inputs : dict
        Paths (str or PathLike; missing files are tolerated and reported):
        ``verdict_json`` (the unit's verdict: the report shows it and judges nothing itself),
        ``target_json`` (MNI target), ``native_json`` (T1w target, may be missing),
        ``denoise_qc_json``, ``seed_json`` (seed map sidecar), ``fisherz_map``, ``seed_mask``, ``search_mask``
        (template space), ``preproc_bold`` (list of MNI preprocessed BOLD runs), ``bold_mask`` (list),
        ``denoised_npz``, ``boldref_t1w`` (list, may be empty), ``t1w`` (preprocessed T1w, native),
        ``fisherz_map_t1w`` (seed map in T1w space, for the viewer),
        ``t1w_mni``, ``confounds`` (list of TSVs). Not files: ``template_space`` (a name, e.g.
        "MNI152NLin2009aSym"), ``nav_formats`` (export formats of the run, for the navigator box).
    out_html : path
        The HTML file to write (atomically).
    title : str, optional
        Page title; default "tmstarget QC report: <unit>".
    reportlet_dir : path, optional
        Also write every section as its own file there (:func:`reportlet_filenames`, for
        ``snakemake --report``), from the same drawn figures.

    Returns
    -------
    Path
        ``out_html``.
    """
    ctx = SubjectContext(inputs)
    sections = render_sections(ctx)
    page = render_subject_html(inputs, title, sections=sections)
    out_html = Path(out_html)
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    if reportlet_dir is not None:
        _write_reportlet_files(sections, reportlet_dir)
    log.info("wrote subject report %s (%d kB)", out_html.name, len(page) // 1024)
    return out_html


def write_reportlets(inputs: dict, out_dir) -> list[Path]:
    """Write each subject reportlet to its own file in ``out_dir`` (for Snakemake ``--report``).

    Figures become ``<name>.png`` or ``<name>.svg`` (a placeholder figure saying what is missing when
    an input is absent); the sections without a figure become small self-contained ``<name>.html``
    pages. The names are always :func:`reportlet_filenames`. The workflow gets the same files from
    :func:`build_subject_report` (``reportlet_dir``) without drawing the figures a second time.
    """
    return _write_reportlet_files(render_sections(SubjectContext(inputs)), out_dir)


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
    return "/".join(Path(s).parts)


GROUP_HEAD = ("unit", "QC", "split-half (mm)", "between sessions (mm)", "target MNI (RAS mm)",
              "target T1w (RAS mm, own space)", "method", "Fisher z", "min kept", "mean FD (mm)", "GSR shift (mm)",
              "scalp to cortex (mm)", "reasons")


def _group_dist(value) -> str:
    """A target shift in the dataset table: "same voxel" for 0 (not a precision of 0.0 mm)."""
    return "same voxel" if value is not None and float(value) < 0.5 else fmt(value, 1)


def _read(path) -> dict | None:
    from tmstarget.qc.metrics import read_json_tolerant

    return read_json_tolerant(path)[0] if path else None


def _group_script() -> tuple[Markup, str]:
    """The table's sort/filter script (inline, no network) and its CSP source (``'sha256-...'``)."""
    text = resources.files("tmstarget.report").joinpath("templates/group_table.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return Markup(text), f"'sha256-{digest}'"


def _summary_words(s: dict, of: str) -> str:
    """A reliability summary (:func:`tmstarget.qc.group.distance_summary_mm`) in words."""
    if not s["n"]:
        return f"n/a (no {of})"
    return f"median {fmt(s['median'], 1)} mm (IQR {fmt(s['q1'], 1)} to {fmt(s['q3'], 1)} mm), n = {s['n']} {of}"


def _group_table_row(r: dict, out_html: Path, sessions: bool) -> dict:
    """One row of the HTML table (cells as text; a FAIL row's coordinates are already None)."""
    mni = [r[f"target_mni_{a}"] for a in "xyz"]
    t1w = [r[f"target_t1w_{a}"] for a in "xyz"]
    between = (fmt(r["between_session_median_mm"], 1) if r["between_session_median_mm"] is not None else
               f"n/a ({r['sessions_usable']} usable session)" if r["sessions_usable"] == 1 else "n/a")
    cells = [fmt(r["split_half_median_mm"], 1), *([between] if sessions else []),
             fmt3(mni if None not in mni else None), fmt3(t1w if None not in t1w else None),
             r["method"] or "n/a", fmt(r["z_at_target"], 2), fmt(r["minutes_kept"], 1), fmt(r["mean_fd_mm"], 2),
             _group_dist(r["gsr_shift_mm"]), fmt(r["scalp_to_cortex_mm"], 1), r["reasons"] or "-"]
    return {"unit": r["unit"], "href": _relative_href(r["report_html"], out_html), "status": r["status"],
            "cells": cells}


def build_group_report(subject_entries: list[dict], out_html, out_tsv) -> Path:
    """Write the dataset report (verdict counts, reliability summary, a sortable and filterable table of
    all units worst first, one figure of all usable targets) and the dataset table (TSV).

    Parameters
    ----------
    subject_entries : list of dict
        One per unit with keys ``unit``, ``target_json``, ``native_json``, ``denoise_qc_json``,
        ``seed_json``, ``verdict_json`` (paths; missing files tolerated), ``report_html`` (link to
        the subject report, relative to ``out_html``) and optionally ``subject``/``session`` (else read
        from the unit name, e.g. ``sub-01_ses-1``) and ``verdict`` (a verdict given in memory).
    out_html, out_tsv : path
        Outputs (written atomically). The TSV has the columns of :data:`GROUP_COLUMNS` in the entries'
        order, ``n/a`` for missing values, coordinates in RAS mm.

    Returns
    -------
    Path
        ``out_html``.

    Notes
    -----
    The page is self-contained (inline CSS, figure and script; its Content-Security-Policy allows only
    the script's hash) and works without JavaScript as a plain table. A FAIL unit's coordinates appear
    nowhere: not in the table, the figure or the between-session distances. The cost is one JSON read per
    file and one figure, whatever the number of units (unit names are drawn only on small datasets).
    """
    from tmstarget.qc.group import STATUS_ORDER, add_between_session_mm, reliability_summary, worst_first

    out_html, out_tsv = Path(out_html), Path(out_tsv)
    rows = add_between_session_mm([group_row(e) for e in subject_entries])
    write_group_tsv(rows, out_tsv)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    rel = reliability_summary(rows)
    sessions = rel["sessions"]
    head = [h for h in GROUP_HEAD if sessions or h != "between sessions (mm)"]
    table = [_group_table_row(r, out_html, sessions) for r in worst_first(rows)]
    between = (_summary_words(rel["between_session"], "subjects with two or more usable sessions") if sessions else
               "n/a: units are subjects (run with --group-runs-by session for one target per session)")
    template = next((str(t["TemplateSpace"]) for t in (_read(e.get("target_json")) for e in subject_entries)
                     if t and t.get("TemplateSpace")), "MNI152NLin2009aSym")
    fig = render_reportlet(Reportlet("targets", "Targets", "",
                                     figure=lambda ctx: F.render_group_targets(rows, template)), SubjectContext({}))
    script, script_hash = _group_script()
    page = ENV.get_template("group.html.j2").render(
        title="tmstarget dataset QC report", subtitle="TMS targets from resting-state fMRI - research use only",
        csp=f"{CSP}; script-src {script_hash}", css=_css(),
        nav=[("overview", "Overview"), ("targets", "Targets"), ("table", "All units")],
        footer=f"tmstarget {__version__} dataset QC report - research use only",
        n_units=len(rows), counts=counts, statuses=STATUS_ORDER, tsv_name=out_tsv.name, head=head, rows=table,
        figure=fig, split_half=_summary_words(rel["split_half"], "usable units"), between_session=between,
        script=script, template=template, version=__version__,
        date=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")) + "\n"
    with atomic_path(out_html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote dataset report %s (%d units, %d kB)", out_html.name, len(rows), len(page) // 1024)
    return out_html


def esc(text) -> str:
    """Input text made safe for HTML outside the templates: absolute paths cut, then escaped."""
    return html.escape(scrub_paths(text), quote=True)
