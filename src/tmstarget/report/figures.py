"""The report's figures: each a function ``render_x(ctx) -> matplotlib Figure`` drawn once per unit.

The subject page embeds their bytes, the same bytes are written as reportlet files for
``snakemake --report`` (:func:`tmstarget.report.page.build_subject_report` with ``reportlet_dir``), so no
figure is rendered twice. Every function raises :class:`~tmstarget.report.common.Unavailable` when an
input is missing. Coordinates in names follow the project's rule: ``_ras_mm`` world RAS millimetres.
"""

from __future__ import annotations

import functools
import io as _io
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from tmstarget.qc.text import num, point, scrub_paths  # noqa: E402
from tmstarget.report.common import (MAX_CARPET_VOXELS, MIN_FONT_PT, SubjectContext, Unavailable, clean_img,  # noqa: E402,F401
                     make_figure, label_anterior_posterior, read_masked_timeseries)
from tmstarget.report.figures_points import (literature_sites, render_group_targets, render_gsr, render_literature,  # noqa: E402,F401
                             render_uncertainty)

log = logging.getLogger(__name__)


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
    thr = num(qc, "fd_threshold_mm")
    fig = make_figure(9, 2.6)
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
                fontsize=MIN_FONT_PT, va="top", color="#333333")
        start += len(fd)
    if thr is not None:
        ax.axhline(thr, color="#d62728", lw=0.8, ls="--", label=f"censoring threshold {thr:g} mm")
        ax.legend(loc="upper right", fontsize=MIN_FONT_PT, frameon=False)
    ax.set_xlim(-0.5, start - 0.5)
    ax.set_ylim(0, 1.25 * ax.get_ylim()[1])  # headroom: the run names and the legend stay off the trace
    ax.set_xlabel("volume (runs concatenated; red = censored, grey = dummy scans)")
    ax.set_ylabel("FD (mm)")
    fig.tight_layout()
    return fig


def carpet_rows(n_voxels: int, max_rows: int = MAX_CARPET_VOXELS) -> np.ndarray:
    """Evenly spaced column indices (at most ``max_rows``) of ``n_voxels`` masked voxels."""
    if n_voxels <= max_rows:
        return np.arange(n_voxels)
    return np.unique(np.linspace(0, n_voxels - 1, max_rows).round().astype(int))


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
    ax_gs.set_ylabel("mean", fontsize=MIN_FONT_PT)
    ax_gs.tick_params(labelbottom=False, labelsize=MIN_FONT_PT)
    ax_gs.set_title(title, fontsize=MIN_FONT_PT, loc="left")
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
            columns = carpet_rows(int(mask_3d.sum()))
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
    fig = make_figure(9, 3.4)
    _draw_carpet(fig, carpet, boundaries, marks, "before denoising (preprocessed BOLD; red ticks = censored volumes)")
    return fig


def render_carpet_after(ctx: SubjectContext):
    """Carpet plot of the denoised time series (``data_tv`` of the npz, censored volumes removed)."""
    d = ctx.npz()
    if "data_tv" not in d:
        raise Unavailable("the denoised npz has no data_tv")
    data_tv = np.asarray(d["data_tv"], dtype=np.float32)
    cols = carpet_rows(data_tv.shape[1])
    carpet = np.clip(data_tv[:, cols].T, -4, 4)
    lengths = np.asarray(d.get("run_lengths", [data_tv.shape[0]]), dtype=int).reshape(-1)
    boundaries = [int(b) for b in np.cumsum(lengths)[:-1] if 0 < b < data_tv.shape[0]]
    fig = make_figure(9, 3.4)
    _draw_carpet(fig, carpet, boundaries, [], "after denoising (censored volumes removed; yellow = run boundary)")
    return fig


def _unmask(values_v: np.ndarray, mask_3d: np.ndarray, affine) -> nib.Nifti1Image:
    vol = np.zeros(mask_3d.shape, dtype=np.float32)
    vol[mask_3d] = values_v
    return clean_img(vol, affine)


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
    fig = make_figure(9, 3.0)
    gs = fig.add_gridspec(1, 4)
    ax_map = fig.add_subplot(gs[0, :3])
    vmax = float(np.percentile(tsnr_v, 99)) if tsnr_v.size else 1.0
    disp = plotting.plot_img(tsnr_img, display_mode="ortho", cut_coords=None if cut is None else tuple(cut),
                             cmap="viridis", vmin=0, vmax=vmax, colorbar=True, threshold=1e-6, axes=ax_map, figure=fig,
                             draw_cross=False, black_bg=True, annotate=False, title="tSNR",
                             cbar_tick_format="%.0f")
    label_anterior_posterior(disp, cuts=cut is not None)
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
    thr = num(ctx.seed, "min_seed_tsnr")
    if thr is not None:
        ax_h.axvline(thr, color="k", ls="--", lw=0.8)
    ax_h.set_xlabel("tSNR", fontsize=MIN_FONT_PT)
    ax_h.set_yticks([])
    ax_h.tick_params(labelsize=MIN_FONT_PT)
    ax_h.legend(fontsize=MIN_FONT_PT, frameon=False)
    return fig


#: Size (inches at 100 dpi) of the registration figures: large enough that a misalignment of a few mm shows.
REGISTRATION_FIGSIZE_IN = (10.5, 3.8)  # 1050 px: the page's column, so it is never scaled down


def _bold_to_t1w_images(ctx: SubjectContext):
    """T1w and BOLD reference on the report's T1w grid (resampled once, shared with the other T1w figures and
    the viewer) and the cut: the target, else the T1w's centre."""
    refs = ctx.paths("boldref_t1w")
    if not refs:
        raise Unavailable("no BOLD reference in T1w space (boldref_t1w) was given")
    t1w = ctx.on_t1w_grid("t1w")
    ref = ctx.on_t1w_grid("boldref_t1w")
    cut = ctx.target_t1w()
    if cut is None:
        full = ctx.img("t1w")
        cut = nib.affines.apply_affine(full.affine, (np.asarray(full.shape[:3]) - 1) / 2)
    return t1w, ref, tuple(cut)


def render_bold_to_t1w(ctx: SubjectContext):
    """Subject T1w with the edges of the BOLD reference registered to it."""
    from nilearn import plotting

    t1w, ref, cut = _bold_to_t1w_images(ctx)
    fig = make_figure(*REGISTRATION_FIGSIZE_IN)
    disp = plotting.plot_anat(colorbar=False, anat_img=t1w, display_mode="ortho", cut_coords=cut, figure=fig,
                              title="T1w + BOLD reference edges (through the target)", draw_cross=False,
                              annotate=False, **_anat_range(t1w, ctx))
    disp.add_edges(ref, color="r")
    label_anterior_posterior(disp, cuts=False)  # cut through the target: its coordinates are not written here
    return fig


def _same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine)


def _flicker_pair(fixed, moving, cut, titles, cut_labels: bool = True, ctx: SubjectContext | None = None):
    """Two figures of the same views and extent: the fixed image, then the moving image resampled onto
    its grid (so that switching between them shows any misalignment as movement)."""
    from nilearn import plotting
    from nilearn.image import resample_to_img

    if not _same_grid(moving, fixed):
        moving = resample_to_img(moving, fixed, interpolation="continuous", force_resample=True, copy_header=True)
    figs = []
    for img, title in zip((fixed, clean_img(np.asarray(moving.dataobj), fixed.affine)), titles):
        fig = make_figure(*REGISTRATION_FIGSIZE_IN)
        disp = plotting.plot_anat(colorbar=False, anat_img=img, display_mode="ortho", cut_coords=cut, figure=fig,
                                  title=title, draw_cross=False, annotate=False,
                                  **_anat_range(fixed if img is fixed else img, ctx if img is fixed else None))
        label_anterior_posterior(disp, cuts=cut_labels)
        figs.append(fig)
    return figs


def render_bold_to_t1w_flicker(ctx: SubjectContext):
    """(T1w, BOLD reference on the T1w grid) with identical views, for the before/after toggle."""
    t1w, ref, cut = _bold_to_t1w_images(ctx)   # one grid: nothing to resample
    return _flicker_pair(t1w, ref, cut, ("subject T1w", "BOLD reference (registered to the T1w)"), cut_labels=False,
                         ctx=ctx)


def render_t1w_to_mni_flicker(ctx: SubjectContext):
    """(T1w normalised to MNI, template on the same grid) with identical views, for the toggle."""
    t1w_mni = ctx.img("t1w_mni")
    template, note = _template_img(ctx.inputs.get("template_space"))
    return _flicker_pair(t1w_mni, template, (0, 0, 10), ("subject T1w normalised to MNI", note))


@functools.lru_cache(maxsize=1)
def _bundled_template() -> nib.Nifti1Image:
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=2)
    return clean_img(np.asanyarray(img.dataobj), img.affine)


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
    fig = make_figure(*REGISTRATION_FIGSIZE_IN)
    disp = plotting.plot_anat(colorbar=False, anat_img=t1w_mni, display_mode="ortho", cut_coords=(0, 0, 10), figure=fig,
                              title=f"T1w in MNI + edges of {note}", draw_cross=False, annotate=False,
                              **_anat_range(t1w_mni))
    disp.add_edges(template, color="r")
    label_anterior_posterior(disp)
    return fig


def _anat_range(img: nib.Nifti1Image, ctx: SubjectContext | None = None) -> dict:
    """Grey-scale limits of an anatomical image: 0 to the 99.5th percentile of its non-zero voxels, so
    that neither a few bright voxels nor an intensity rescaling clips the brain to white. With ``ctx``, the
    limits of the T1w on the report's grid, computed once for all the T1w figures."""
    if ctx is not None:
        if "t1w_anat_range" not in ctx._cache:
            ctx._cache["t1w_anat_range"] = _anat_range(ctx.on_t1w_grid("t1w"))
        return ctx._cache["t1w_anat_range"]
    data = np.asarray(img.dataobj, dtype=np.float32)
    nz = data[np.isfinite(data) & (data > 0)]
    if not nz.size:
        return {}
    return {"vmin": 0.0, "vmax": float(np.percentile(nz, 99.5)), "dim": 0}


def seed_map_vmax(data: np.ndarray, z_at_target: float | None) -> float:
    """Colour-scale limit of the seed map: the 99th percentile of |z|, widened to include the target's
    own |z| so the target never sits in a saturated colour."""
    nz = np.abs(data[np.isfinite(data) & (data != 0)])
    vmax = float(np.percentile(nz, 99)) if nz.size else 1.0
    if z_at_target is not None and np.isfinite(z_at_target):
        vmax = max(vmax, abs(float(z_at_target)) * 1.05)
    return vmax


#: Seed-map values with |z| below this fraction of the colour scale are not coloured (the anatomy shows).
SEED_MAP_THRESHOLD_FRACTION = 0.25


def render_seed_map(ctx: SubjectContext):
    """Seed-correlation Fisher z map (arctanh r) with the search region (green), seed (yellow) and target (cross)."""
    from nilearn import plotting

    z_img = ctx.img("fisherz_map")
    target = ctx.target_mni()
    fig = make_figure(9, 6.0)
    ax1 = fig.add_axes([0, 0.5, 1, 0.5])
    ax2 = fig.add_axes([0, 0, 1, 0.5])
    data = np.asarray(z_img.dataobj)
    vmax = seed_map_vmax(data, num(ctx.target, "z_at_target"))
    search_img = seed_img = None
    try:
        search_img = ctx.img("search_mask")
    except Unavailable:
        pass
    try:
        seed_img = ctx.img("seed_mask")
    except Unavailable:
        pass
    try:  # the subject's own anatomy (normalised T1w), else the template
        bg, bg_name = ctx.img("t1w_mni"), "subject's T1w in MNI"
    except Unavailable:
        bg, bg_name = _template_img(ctx.inputs.get("template_space"))[0], "template"
    cut1 = tuple(target) if target is not None else None
    # weak values transparent and the rest see-through, so the anatomy shows under the colours
    overlay = {"threshold": SEED_MAP_THRESHOLD_FRACTION * vmax, "transparency": 0.75, "annotate": False,
               "cbar_tick_format": "%.2f", "dim": 0}
    d1 = plotting.plot_stat_map(z_img, bg_img=bg, cut_coords=cut1, display_mode="ortho", axes=ax1, figure=fig,
                                cmap="RdBu_r", vmax=vmax, colorbar=True, draw_cross=False, **overlay,
                                title=f"seed map (Fisher z) at the target, on the {bg_name}")
    if search_img is not None:
        d1.add_contours(search_img, levels=[0.5], colors="lime", linewidths=1.0)
    if target is not None:
        d1.add_markers([target], marker_color="yellow", marker_size=60, marker="X")
    seed_cut = _centre_of_mass_ras_mm(seed_img) if seed_img is not None else None
    d2 = plotting.plot_stat_map(z_img, bg_img=bg, cut_coords=None if seed_cut is None else tuple(seed_cut),
                                display_mode="ortho", axes=ax2, figure=fig, cmap="RdBu_r", vmax=vmax,
                                colorbar=True, draw_cross=False, title="seed map at the sgACC seed", **overlay)
    if seed_img is not None:
        d2.add_contours(seed_img, levels=[0.5], colors="yellow", linewidths=1.0)
    label_anterior_posterior(d1)
    label_anterior_posterior(d2)
    return fig


#: Radius (mm) of the coil circle drawn at the scalp entry, and length of the handle line.
COIL_GLYPH_RADIUS_MM = 25.0


HANDLE_GLYPH_LENGTH_MM = 40.0


#: (nilearn cut axis, world axes shown as horizontal / vertical) of an ortho display.
_ORTHO_VIEWS = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}


def coil_geometry(native: dict | None) -> dict | None:
    """Entry, target, inward normal and handle direction (T1w RAS) of a native JSON, or None.

    The normal falls back to the entry-to-target direction; the handle to None when not recorded.
    """
    n = native or {}
    entry, target = point(n.get("entry_t1w_ras_mm")), point(n.get("target_t1w_ras_mm"))
    if entry is None or target is None:
        return None
    normal = point(n.get("inward_normal_t1w_ras"))
    if normal is None or np.linalg.norm(normal) == 0:
        normal = target - entry
    if np.linalg.norm(normal) == 0:
        return None
    normal = normal / np.linalg.norm(normal)
    handle = point(n.get("handle_direction_t1w_ras"))
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


def _include_in_view(ax, pts_2d: np.ndarray, margin_mm: float = 12.0) -> None:
    """Widen a view's limits (keeping their direction) so that the points, plus a margin, are inside it."""
    for get, set_, k in ((ax.get_xlim, ax.set_xlim, 0), (ax.get_ylim, ax.set_ylim, 1)):
        lo, hi = get()
        flip = lo > hi
        lo, hi = min(lo, hi), max(lo, hi)
        lo, hi = min(lo, pts_2d[:, k].min() - margin_mm), max(hi, pts_2d[:, k].max() + margin_mm)
        set_((hi, lo) if flip else (lo, hi))


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
        ax.plot([geom["target"][a]], [geom["target"][b]], marker="X", ms=7, color="yellow", mec="k", zorder=8)
        ax.plot([geom["entry"][a]], [geom["entry"][b]], marker="o", ms=6, color="cyan", mec="k", zorder=8)
        if not with_coil:
            continue
        ax.plot(glyph["circle"][:, a], glyph["circle"][:, b], color="cyan", lw=1.5, zorder=7)
        _include_in_view(ax, np.vstack([glyph["circle"]] + ([glyph["handle"]] if glyph["handle"] is not None else []))[
            :, [a, b]])
        if glyph["handle"] is not None:
            hd = glyph["handle"]
            ax.plot(hd[:, a], hd[:, b], color="#ff4fd8", lw=3.0, solid_capstyle="round", zorder=7)
            mid = hd.mean(axis=0)  # label at the middle of the handle: inside the view even near its edge
            ax.text(mid[a], mid[b], "handle", color="#ff4fd8", fontsize=10, fontweight="bold", ha="center",
                    va="bottom", zorder=8, clip_on=True,
                    bbox={"boxstyle": "round,pad=0.1", "facecolor": "black", "alpha": 0.6, "lw": 0})


def render_target_t1w(ctx: SubjectContext):
    """The target and scalp entry on the subject's own T1w (what the navigator will show), with the
    coil drawn at the entry: a circle in the scalp plane and its handle (magenta, labelled)."""
    from nilearn import plotting

    target = ctx.target_t1w()
    if target is None:
        raise Unavailable("no T1w-space target (the native-space stage failed or did not run)")
    t1w = ctx.on_t1w_grid("t1w")   # resampled once for every T1w figure and the viewer
    geom = coil_geometry(ctx.native)
    entry = None if geom is None else geom["entry"]
    fig = make_figure(9, 3.0 if entry is None else 6.0)
    top = (0.0, 0.0, 1.0, 1.0) if entry is None else (0.0, 0.5, 1.0, 0.5)
    disp = plotting.plot_anat(colorbar=False, anat_img=t1w, cut_coords=tuple(target), display_mode="ortho", figure=fig,
                              axes=top, draw_cross=False, title="cortical target (yellow X), T1w", annotate=False,
                              **_anat_range(t1w, ctx))
    disp.add_markers([target], marker_color="yellow", marker_size=60, marker="X")
    if geom is not None:
        draw_coil_glyph(disp, geom, with_coil=False)
    if entry is not None:
        # second row cut through the entry: nilearn draws a marker only within 2 mm of a cut
        low = plotting.plot_anat(colorbar=False, anat_img=t1w, cut_coords=tuple(entry), display_mode="ortho", figure=fig,
                                 axes=(0.0, 0.0, 1.0, 0.5), draw_cross=False, annotate=False,
                                 title="coil at the scalp entry (cyan), handle (magenta)", **_anat_range(t1w, ctx))
        low.add_markers([entry], marker_color="cyan", marker_size=50, marker="o")
        draw_coil_glyph(low, geom)
        label_anterior_posterior(low)
    label_anterior_posterior(disp)
    return fig


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


def placeholder_figure(message: str):
    """A small figure that says why the real one is missing (keeps file names fixed)."""
    fig = make_figure(6, 1.2)
    fig.text(0.02, 0.5, scrub_paths(message)[:150], fontsize=10, va="center", color="#555555")
    return fig
