"""Registration quality of one unit (T1w -> template, BOLD -> T1w), measured and gated.

Five checks (template correlation, brain volume, BOLD mask Dice, BOLD-T1w edge correlation, BOLD
white-matter boundary fraction), each with WARN and FAIL thresholds (config ``qc.registration``); any
FAIL fails the unit. What each measures and the measurements behind the thresholds: docs/registration_qc.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.config.settings import default_config

log = logging.getLogger(__name__)


LEVEL_ORDER = {"pass": 0, "warn": 1, "fail": 2}


def resolve_thresholds(thresholds: dict | None) -> dict:
    """``thresholds`` over the defaults of config/config.yaml (``qc.registration``)."""
    out = dict(default_config()["qc"]["registration"])
    unknown = sorted(set(thresholds or {}) - set(out))
    if unknown:
        raise TypeError(f"qc.registration: unknown setting(s) {unknown}; known: {sorted(out)}")
    out.update({k: v for k, v in (thresholds or {}).items() if v is not None})
    return out


def _check_low(name: str, value: float, warn: float, fail: float, what: str, fail_text: str) -> dict:
    level = "fail" if value < fail else "warn" if value < warn else "pass"
    if level == "pass":
        text = f"{what} {value:.2f} (warn below {warn:g}, fail below {fail:g})"
    elif level == "warn":
        text = f"{what} {value:.2f} is low (below {warn:g}); check the registration figures"
    else:
        text = f"{what} {value:.2f} is below {fail:g}: {fail_text}"
    return {"name": name, "value": round(float(value), 4), "threshold": {"warn": warn, "fail": fail},
            "level": level, "text": text}


def anat_checks(template_correlation: float, brain_volume_ml: float, thresholds: dict | None = None) -> list[dict]:
    """Checks of the T1w -> template registration (see docs/registration_qc.md)."""
    t = resolve_thresholds(thresholds)
    checks = [_check_low("template_correlation", template_correlation, t["warn_template_correlation"],
                         t["fail_template_correlation"], "T1w-template correlation in MNI",
                         "the T1w could not be aligned to the template; the target is not usable")]
    lo_w, hi_w = t["warn_brain_volume_ml"]
    lo_f, hi_f = t["fail_brain_volume_ml"]
    v = float(brain_volume_ml)
    if v < lo_f or v > hi_f:
        level, text = "fail", (f"brain volume {v:.0f} ml is outside {lo_f:.0f}-{hi_f:.0f} ml: the brain mask is "
                               "wrong, so the T1w could not be aligned to the template; the target is not usable")
    elif v < lo_w or v > hi_w:
        level, text = "warn", (f"brain volume {v:.0f} ml is outside the usual {lo_w:.0f}-{hi_w:.0f} ml; check the "
                               "brain mask and the registration figures")
    else:
        level, text = "pass", f"brain volume {v:.0f} ml (usual {lo_w:.0f}-{hi_w:.0f} ml)"
    checks.append({"name": "brain_volume_ml", "value": round(v, 1),
                   "threshold": {"warn": [lo_w, hi_w], "fail": [lo_f, hi_f]}, "level": level, "text": text})
    return checks


def bold_checks(run_name: str, mask_dice: float | None, edge_corr: float | None,
                thresholds: dict | None = None, boundary_fraction: float | None = None,
                coverage: float | None = None, dice_in_fov: bool = False) -> list[dict]:
    """Checks of one run's BOLD -> T1w -> template alignment. ``coverage`` (fraction of the template
    brain the run covers) is reported with the mask Dice, not judged: a slab that covers the seed and
    the search region is a legitimate acquisition (the seed's coverage is a verdict finding).
    ``dice_in_fov``: the Dice was measured within the run's field of view (said in the text)."""
    t = resolve_thresholds(thresholds)
    out = []
    if mask_dice is not None:
        c = _check_low("bold_mask_dice", mask_dice, t["warn_bold_mask_dice"], t["fail_bold_mask_dice"],
                       f"{run_name}: overlap (Dice) of the BOLD brain mask with the template brain"
                       + (" within the run's field of view" if dice_in_fov else ""),
                       "the BOLD run does not line up with the template; the target is not usable")
        if coverage is not None:
            c["coverage"] = round(float(coverage), 4)
            c["text"] += f" (the run covers {100 * coverage:.0f}% of the template brain)"
        out.append({**c, "run": run_name})
    if edge_corr is not None:
        c = _check_low("bold_t1w_edge_correlation", edge_corr, t["warn_bold_t1w_edge_correlation"],
                       t["fail_bold_t1w_edge_correlation"],
                       f"{run_name}: BOLD-T1w edge correlation",
                       "the BOLD run could not be aligned to the T1w; the target is not usable")
        out.append({**c, "run": run_name})
    if boundary_fraction is not None:
        c = _check_low("bold_wm_boundary_fraction", boundary_fraction, t["warn_bold_wm_boundary_fraction"],
                       t["fail_bold_wm_boundary_fraction"],
                       f"{run_name}: BOLD grey/white contrast along the T1w white-matter boundary "
                       "(fraction of boundary points where the BOLD is brighter in grey than in white matter)",
                       "the BOLD run could not be aligned to the T1w; the target is not usable")
        out.append({**c, "run": run_name})
    return out


def status_of(checks: list[dict]) -> str:
    return max((c["level"] for c in checks), key=LEVEL_ORDER.get, default="pass")


# ----------------------------------------------------------------------------- measurements from files


def _load(path) -> nib.Nifti1Image | None:
    return nib.load(str(path)) if path and Path(path).exists() else None


def _template_on_grid(img: nib.Nifti1Image, which: str) -> np.ndarray:
    """nilearn's 2 mm template (``t1`` or ``mask``) resampled onto the grid of ``img``."""
    from nilearn.image import resample_to_img

    from tmstarget.preproc.templates import load_template

    tpl = load_template(2)[which]
    if tpl.shape[:3] == img.shape[:3] and np.allclose(tpl.affine, img.affine, atol=1e-3):
        return tpl.get_fdata()
    interp = "nearest" if which == "mask" else "linear"
    return resample_to_img(tpl, img, interpolation=interp, force_resample=True, copy_header=True).get_fdata()


def template_correlation(t1w_mni_path) -> float | None:
    """Correlation of an MNI-space T1w with nilearn's template inside the template brain."""
    from tmstarget.preproc.similarity import image_correlation

    img = _load(t1w_mni_path)
    if img is None:
        return None
    data = np.asarray(img.get_fdata(dtype=np.float32))
    mask = _template_on_grid(img, "mask") > 0.5
    return image_correlation(data, _template_on_grid(img, "t1"), mask)


def brain_volume_ml(brain_mask_path) -> float | None:
    img = _load(brain_mask_path)
    if img is None:
        return None
    return float((np.asarray(img.dataobj) > 0).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000.0)


def field_of_view(boldref_mni_path, shape) -> np.ndarray | None:
    """Where the run has data in MNI: the voxels where its MNI BOLD reference is non-zero (the one
    resampling writes 0 outside the BOLD's field of view); None without the file or on another grid."""
    img = _load(boldref_mni_path)
    if img is None or img.shape[:3] != tuple(shape[:3]):
        return None
    return np.asarray(img.dataobj) != 0


def mask_overlap(mask_mni_path, boldref_mni_path=None) -> dict | None:
    """The run's MNI brain mask against the template brain mask, each file read once: ``dice`` (within
    the run's field of view, :func:`field_of_view`, when ``boldref_mni_path`` gives one on the mask's
    grid, so that a run covering part of the brain, a slab, is judged on the part it covers, not failed
    for the part it never imaged), ``in_fov`` (whether it was) and ``coverage`` (fraction of the
    template brain inside the mask). None without the mask."""
    img = _load(mask_mni_path)
    if img is None:
        return None
    mask = np.asarray(img.dataobj) > 0
    template = _template_on_grid(img, "mask") > 0.5
    coverage = float((mask & template).sum() / max(template.sum(), 1))
    fov = field_of_view(boldref_mni_path, mask.shape)
    if fov is not None:
        mask, template = mask & fov, template & fov
    return {"dice": float(2 * (mask & template).sum() / max(mask.sum() + template.sum(), 1)),
            "in_fov": fov is not None, "coverage": coverage}


def mask_dice_with_template(mask_mni_path, boldref_mni_path=None) -> float | None:
    """Dice of :func:`mask_overlap`."""
    overlap = mask_overlap(mask_mni_path, boldref_mni_path)
    return None if overlap is None else overlap["dice"]


def template_brain_coverage(mask_mni_path) -> float | None:
    """Fraction of the template brain inside the run's MNI brain mask (1 for whole-brain coverage)."""
    overlap = mask_overlap(mask_mni_path)
    return None if overlap is None else overlap["coverage"]


def _arrays_on_one_grid(paths, mismatch_warning: str):
    """The images at ``paths`` as float32 arrays and the mean voxel size (mm) of the second one, or None
    when one is missing or their grids differ (then ``mismatch_warning`` is logged)."""
    imgs = [_load(p) for p in paths]
    if any(i is None for i in imgs):
        return None
    arrays = [np.asarray(i.dataobj, dtype=np.float32) for i in imgs]
    if len({a.shape for a in arrays}) != 1:
        log.warning(mismatch_warning)
        return None
    return arrays, float(np.mean(np.linalg.norm(imgs[1].affine[:3, :3], axis=0)))


def bold_t1w_edge_correlation(boldref_t1w_path, t1w_path, brain_mask_path) -> float | None:
    """:func:`tmstarget.preproc.similarity.edge_correlation` of the BOLD reference in the T1w grid and the T1w,
    inside the T1w brain mask where the BOLD has signal. Both are brought to ~2 mm first (the BOLD
    carries no finer edges, and a 0.7 mm T1w would make this slow)."""
    from scipy import ndimage

    from tmstarget.preproc.similarity import edge_correlation

    loaded = _arrays_on_one_grid((boldref_t1w_path, t1w_path, brain_mask_path),
                                 "BOLD reference, T1w and brain mask grids differ; edge correlation skipped")
    if loaded is None:
        return None
    (bold, t1w, mask), voxel_mm = loaded
    step = max(1, int(round(2.0 / voxel_mm)))
    if step > 1:
        bold = ndimage.uniform_filter(bold, step)[::step, ::step, ::step]
        t1w = ndimage.uniform_filter(t1w, step)[::step, ::step, ::step]
        mask = mask[::step, ::step, ::step]
    inside = (mask > 0) & (bold > 0)
    if inside.sum() < 100:
        return 0.0
    return edge_correlation(bold, t1w, inside)


def wm_boundary_fraction(boldref_t1w_path, wm_probseg_path, brain_mask_path, distance_mm: float = 2.0) -> float | None:
    """Fraction of white-matter boundary points where the BOLD reference is brighter ``distance_mm``
    outside the white matter than ``distance_mm`` inside it (all images on the T1w grid).

    The boundary is the 0.5 level of the (1-voxel smoothed) WM probability inside the brain mask
    (every second point), its normal the probability's gradient. T2*-weighted EPI is darker in white
    than in grey matter, so an aligned run gives a fraction near 1 (demo 0.99), a misaligned one
    near 0.5 (the principle of boundary-based registration, Greve & Fischl 2009).
    """
    from scipy import ndimage

    loaded = _arrays_on_one_grid((boldref_t1w_path, wm_probseg_path, brain_mask_path),
                                 "BOLD reference, WM map and brain mask grids differ; boundary check skipped")
    if loaded is None:
        return None
    (bold, wm, mask), voxel_mm = loaded
    smooth = ndimage.gaussian_filter(wm, 1.0)
    grad = np.stack(np.gradient(smooth))
    norm = np.linalg.norm(grad, axis=0)
    band = (np.abs(smooth - 0.5) < 0.15) & (mask > 0) & (norm > 1e-3)
    points = np.argwhere(band)[::2].T.astype(np.float64)
    if points.shape[1] < 100:
        return None
    normal = -grad[:, band][:, ::2] / norm[band][::2]   # out of the white matter
    step = distance_mm / voxel_mm
    outside = ndimage.map_coordinates(bold, points + step * normal, order=1)
    inside = ndimage.map_coordinates(bold, points - step * normal, order=1)
    ok = (outside > 0) & (inside > 0)
    if ok.sum() < 100:
        return 0.5
    return float(np.mean(outside[ok] > inside[ok]))


def assess_registration(anat: dict, runs: list[dict], thresholds: dict | None = None) -> dict:
    """Registration checks of one unit from its files.

    Parameters
    ----------
    anat : dict
        ``t1w_mni`` (MNI-space T1w, optional), ``brain_mask``, ``preproc_t1w``, ``wm_probseg``.
    runs : list of dict
        Per run: ``name``, ``mask_mni``, optional ``boldref_mni`` (its field of view bounds the mask
        Dice), optional ``boldref_t1w``.
    thresholds : dict, optional
        Overrides of the ``qc.registration`` defaults in config/config.yaml.

    Returns
    -------
    dict
        ``checks``, ``status``, ``Sources`` (file names).
    """
    t = resolve_thresholds(thresholds)
    checks = []
    corr = template_correlation(anat.get("t1w_mni"))
    volume = brain_volume_ml(anat.get("brain_mask"))
    if corr is not None and volume is not None:
        checks += anat_checks(corr, volume, t)
    elif volume is not None:
        checks += [c for c in anat_checks(1.0, volume, t) if c["name"] == "brain_volume_ml"]
    for run in runs:
        overlap = mask_overlap(run.get("mask_mni"), run.get("boldref_mni")) or {}
        edge = bold_t1w_edge_correlation(run.get("boldref_t1w"), anat.get("preproc_t1w"), anat.get("brain_mask"))
        boundary = wm_boundary_fraction(run.get("boldref_t1w"), anat.get("wm_probseg"), anat.get("brain_mask"))
        checks += bold_checks(run["name"], overlap.get("dice"), edge, t, boundary_fraction=boundary,
                              coverage=overlap.get("coverage"), dice_in_fov=overlap.get("in_fov", False))
    sources = [Path(p).name for p in [anat.get(k) for k in ("t1w_mni", "brain_mask", "preproc_t1w", "wm_probseg")]
               + [r.get(k) for r in runs for k in ("mask_mni", "boldref_mni", "boldref_t1w")] if p and Path(p).exists()]
    out = {"checks": checks, "status": status_of(checks), "Sources": sources}
    log.info("registration QC: %s (%s)", out["status"].upper(),
             "; ".join(f"{c['name']}={c['value']:g} {c['level']}" for c in checks))
    return out


def run_registration_qc(anat: dict, runs: list[dict], out_json, thresholds: dict | None = None) -> dict:
    """Workflow step: :func:`assess_registration` written to ``out_json`` (atomically)."""
    from tmstarget.io.files import write_json

    result = assess_registration(anat, runs, thresholds)
    write_json(result, out_json)
    return result
