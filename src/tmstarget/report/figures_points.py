"""The report's point figures: targets as points in MNI millimetres (reliability, GSR comparison,
literature sites, the dataset's targets). Split from :mod:`.figures` (the image figures); the same
rules hold: each ``render_x`` returns a matplotlib Figure or raises
:class:`~tmstarget.report.common.Unavailable`.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tmstarget.qc.text import fmt, num, point  # noqa: E402
from tmstarget.report.common import (MIN_FONT_PT, STATUS_COLOURS, SubjectContext, Unavailable, make_figure, finite_points,  # noqa: E402
                     grid_mm, label_anterior_posterior)


_PROJECTIONS = (("sagittal (y, z)", 1, 2, "y anterior (mm)", "z superior (mm)"),
                ("coronal (x, z)", 0, 2, "x right (mm)", "z superior (mm)"),
                ("axial (x, y)", 0, 1, "x right (mm)", "y anterior (mm)"))


def _finish_point_axes(ax, centre_2d, span: float, title: str, xlabel: str, ylabel: str, legend: bool) -> None:
    """Square window of +-``span`` mm around ``centre_2d`` with readable labels (uncertainty and GSR plots)."""
    ax.set_xlim(centre_2d[0] - span, centre_2d[0] + span)
    ax.set_ylim(centre_2d[1] - span, centre_2d[1] + span)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=MIN_FONT_PT)
    ax.set_xlabel(xlabel, fontsize=MIN_FONT_PT)
    ax.set_ylabel(ylabel, fontsize=MIN_FONT_PT)
    ax.tick_params(labelsize=MIN_FONT_PT)
    if legend:
        ax.legend(fontsize=MIN_FONT_PT, loc="lower left", frameon=False)


def render_uncertainty(ctx: SubjectContext):
    """Split-half and block-bootstrap targets around the target, three projections (MNI mm). The legend
    lists only what is drawn, below the plots; the dashed circle (radius: the bootstrap p95 distance) is
    named in it. Tolerant of target JSONs without split-half target lists."""
    from matplotlib.lines import Line2D

    target = ctx.target_mni()
    unc = (ctx.target or {}).get("uncertainty")
    if target is None or not isinstance(unc, dict):
        raise Unavailable("no uncertainty estimate in the target JSON")
    boots = finite_points(unc.get("targets_mni_ras_mm"))
    halves = finite_points(unc.get("split_half_targets_mni_ras_mm"))
    if not len(boots) and not len(halves):
        raise Unavailable("the target JSON lists no bootstrap or split-half targets")
    p95 = num(unc, "p95_distance_mm")
    fig = make_figure(9, 3.6)
    span = max(10.0, float(np.abs(np.vstack([boots, halves]) - target).max()) + 3)
    if p95 is not None:
        span = max(span, p95 + 2)
    for k, (name, a, b, xl, yl) in enumerate(_PROJECTIONS):
        ax = fig.add_subplot(1, 3, k + 1)
        if len(boots):
            ax.scatter(boots[:, a], boots[:, b], s=12, color="#1f77b4", alpha=0.5)
        if len(halves):
            ax.scatter(halves[:, a], halves[:, b], s=36, marker="^", facecolors="none", edgecolors="#ff7f0e",
                       linewidths=1.5, zorder=6)
        ax.scatter([target[a]], [target[b]], s=90, marker="X", color="#d62728", zorder=5)
        if p95 is not None:
            ax.add_patch(plt.Circle((target[a], target[b]), p95, fill=False, ls="--", color="k", lw=0.8))
        _finish_point_axes(ax, target[[a, b]], span, name, xl, yl, legend=False)
    handles = [Line2D([], [], ls="", marker="X", color="#d62728", markersize=9, label="target")]
    if len(halves):
        handles.append(Line2D([], [], ls="", marker="^", markerfacecolor="none", markeredgecolor="#ff7f0e",
                              markersize=7, label=f"split-half targets (n={len(halves)})"))
    if len(boots):
        handles.append(Line2D([], [], ls="", marker="o", color="#1f77b4", alpha=0.5, markersize=5,
                              label=f"bootstrap targets (n={len(boots)})"))
    if p95 is not None:
        handles.append(Line2D([], [], ls="--", color="k", lw=0.8,
                              label=f"95 % of bootstrap targets lie within {p95:.1f} mm"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=MIN_FONT_PT)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def literature_sites() -> dict[str, np.ndarray]:
    try:
        from tmstarget.target.regions import literature_sites_mni_ras_mm

        return {k: np.asarray(v, float) for k, v in literature_sites_mni_ras_mm().items()}
    except Exception:  # regions' atlas data missing: the table still shows the recorded distances
        return {}


def render_gsr(ctx: SubjectContext):
    """Target with GSR (main) and without GSR (comparison strategy), three projections, MNI mm."""
    target = ctx.target_mni()
    gsr = (ctx.target or {}).get("gsr_comparison")
    other = point(gsr.get("target_mni_ras_mm")) if isinstance(gsr, dict) else None
    if target is None or other is None:
        note = gsr.get("note") if isinstance(gsr, dict) else None
        raise Unavailable("no no-GSR target in the target JSON" + (f" ({note})" if note else ""))
    fig = make_figure(9, 3.0)
    span = max(10.0, float(np.abs(other - target).max()) + 5)
    centre = (target + other) / 2
    for k, (name, a, b, xl, yl) in enumerate(_PROJECTIONS):
        ax = fig.add_subplot(1, 3, k + 1)
        # the no-GSR target as a large open ring under the target's X: both stay visible when they coincide
        ax.scatter([other[a]], [other[b]], s=260, marker="o", facecolors="none", edgecolors="#2ca02c",
                   linewidths=2.5, label=f"without GSR ({gsr.get('strategy', '')})", zorder=4)
        ax.scatter([target[a]], [target[b]], s=90, marker="X", color="#d62728", label="with GSR (target)", zorder=5)
        ax.annotate("", xy=(other[a], other[b]), xytext=(target[a], target[b]),
                    arrowprops={"arrowstyle": "->", "color": "#555555"})
        _finish_point_axes(ax, centre[[a, b]], span, name, xl, yl, legend=k == 0)
    shift = num(gsr, "shift_mm")
    same = shift is not None and shift < grid_mm(ctx)
    fig.suptitle("same position (shift below the grid spacing)" if same else f"shift {fmt(shift, 1, 'mm')}",
                 fontsize=10)
    fig.tight_layout()
    return fig


SITE_COLOURS = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")


def _add_sites_with_legend(display, fig, sites: dict, size: int = 40) -> list:
    """Each literature site in its own colour, named in a legend under the brains."""
    from matplotlib.lines import Line2D

    handles = []
    for (name, pos), colour in zip(sites.items(), SITE_COLOURS * 3):
        display.add_markers([pos], marker_color=colour, marker_size=size)
        handles.append(Line2D([], [], ls="", marker="o", color=colour, label=name))
    return handles


def render_literature(ctx: SubjectContext):
    """The target and the published DLPFC sites (each named), on a glass brain (left, top, right views)."""
    from matplotlib.lines import Line2D
    from nilearn import plotting

    target = ctx.target_mni()
    if target is None:
        raise Unavailable("no MNI target")
    sites = literature_sites()
    fig = make_figure(10, 4.2)
    ax = fig.add_axes([0, 0.2, 1, 0.72])
    disp = plotting.plot_glass_brain(None, display_mode="lzr", figure=fig, axes=ax, annotate=False)
    fig.text(0.01, 0.97, "target (red X) and published sites", fontsize=11, va="top")
    handles = _add_sites_with_legend(disp, fig, sites)
    disp.add_markers([target], marker_color="#d62728", marker_size=80, marker="X")
    handles.append(Line2D([], [], ls="", marker="X", color="#d62728", label="this target"))
    label_anterior_posterior(disp, cuts=False)
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=10)
    return fig


def _label_column(rows: list[dict], gap_mm: float = 9.0, offset_mm: float = 22.0) -> tuple[list, list]:
    """Rows sorted from front to back and their label positions (world mm on the axial view): one column
    ``offset_mm`` right of the right-most target, labels at least ``gap_mm`` apart."""
    order = sorted(rows, key=lambda r: -float(r["target_mni_y"]))
    x_text = max(float(r["target_mni_x"]) for r in rows) + offset_mm
    positions, last = [], None
    for r in order:
        y = float(r["target_mni_y"]) if last is None else min(float(r["target_mni_y"]), last - gap_mm)
        positions.append((x_text, y))
        last = y
    return order, positions


#: Up to this many usable targets the dataset figure names each unit; above, names are left to the table
#: (a thousand labels are unreadable and took ~40 s to lay out).
MAX_LABELLED_TARGETS = 20


def render_group_targets(rows: list[dict], template_name: str = "MNI152NLin2009aSym"):
    """Glass-brain plot of every usable (non-FAIL) unit's MNI target coloured by QC status, with the
    literature sites named in a legend. FAIL targets are never drawn or named. Up to
    :data:`MAX_LABELLED_TARGETS` targets each carry their unit's name; above that the markers are smaller
    and translucent and the names are left to the table (the figure then costs the same at 1000 units)."""
    from matplotlib.lines import Line2D
    from nilearn import plotting

    shown = [r for r in rows if r["status"] in ("pass", "warn") and None not in
             (r["target_mni_x"], r["target_mni_y"], r["target_mni_z"])]
    many = len(shown) > MAX_LABELLED_TARGETS
    fig = make_figure(10.5, 4.6)
    ax = fig.add_axes([0, 0.2, 1, 0.72])
    disp = plotting.plot_glass_brain(None, display_mode="lzr", figure=fig, axes=ax, annotate=False)
    fig.text(0.01, 0.97, f"usable targets in {template_name} (n={len(shown)}) by QC status (FAIL targets are "
             "not shown)" + ("; unit names in the table" if many else ""), fontsize=11, va="top")
    handles = []
    for status in ("pass", "warn"):
        pts = [[r[f"target_mni_{a}"] for a in "xyz"] for r in shown if r["status"] == status]
        if pts:
            disp.add_markers(np.asarray(pts, float), marker_color=STATUS_COLOURS[status],
                             marker_size=10 if many else 50, marker="X", alpha=0.4 if many else 1.0)
            handles.append(Line2D([], [], ls="", marker="X", color=STATUS_COLOURS[status],
                                  label=f"target, {status} (n={len(pts)})"))
    # the published sites on top of the targets, so that a dense cloud never hides them
    handles = _add_sites_with_legend(disp, fig, literature_sites(), size=30) + handles
    # unit labels on the top view (axes in world mm: x horizontal, y vertical), in a column beside the
    # targets with a thin leader line each, spaced so that close targets never overprint their names
    top = disp.axes.get("z")
    if top is not None and shown and not many:
        for r, (x_text, y_text) in zip(*_label_column(shown)):
            top.ax.annotate(str(r["unit"]), xy=(r["target_mni_x"], r["target_mni_y"]), xytext=(x_text, y_text),
                            fontsize=MIN_FONT_PT, color="#222222", va="center", zorder=9,
                            arrowprops={"arrowstyle": "-", "color": "#777777", "lw": 0.6})
    label_anterior_posterior(disp, cuts=False)
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=MIN_FONT_PT)
    return fig
