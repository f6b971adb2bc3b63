"""The report's "Distortion correction" section: which susceptibility distortion correction each BOLD run
got, field maps found but not used, and a before/after figure of the BOLD reference over the T1w
white-matter boundary.

What a run got is read from its preprocessed BOLD sidecar (``SusceptibilityDistortionCorrection``,
written by :mod:`tmstarget.preproc.bold`): ``Applied``, ``Description``, ``FieldMapKind``, ``Sources``,
``PhaseEncodingDirection``, ``TotalReadoutTime``, ``MedianAbsShiftInHead_mm``, ``MaxAbsShiftInHead_mm`` and,
for field maps found but not used, ``Finding``. A sidecar without the entry (fMRIPrep route, or outputs of
an older tmstarget) is "not recorded"; a run without field maps is "not corrected" and nothing else is
shown. The before image is the uncorrected BOLD reference in T1w space
(``*_space-T1w_desc-uncorrected_boldref.nii.gz`` beside ``*_space-T1w_boldref.nii.gz``, same
coregistration); without it the section says the file is missing and shows the corrected one only.

The figures are drawn in the section's view (a table section): a run without correction draws nothing.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from markupsafe import Markup

from tmstarget.qc.metrics import read_json_tolerant
from tmstarget.qc.text import fmt
from tmstarget.report.common import SubjectContext, clean_img, label_anterior_posterior, make_figure
from tmstarget.report.figures import figure_bytes

log = logging.getLogger(__name__)

SIDECAR_KEY = "SusceptibilityDistortionCorrection"
UNCORRECTED_SUFFIX = "_space-T1w_desc-uncorrected_boldref.nii.gz"
KIND_WORDS = {"phasediff": "phase-difference field map", "fieldmap": "field map in Hz",
              "pepolar": "reversed phase-encoding EPI pair (PEPOLAR)"}
#: offset (mm, RAS) from the centre of the T1w white matter to the cut: near the ventromedial prefrontal
#: cortex above the sinuses, where susceptibility distortion is largest (MNI: WM centre ~(0, -18, 18))
FRONTAL_CUT_OFFSET_MM = (0.0, 36.0, -24.0)
FIGSIZE_IN = (10.5, 3.6)


def _sidecar(bold_path) -> dict | None:
    name = Path(str(bold_path)).name
    side = Path(str(bold_path)).with_name(name.replace(".nii.gz", ".json").replace(".nii", ".json"))
    obj, _ = read_json_tolerant(side)
    return obj if isinstance(obj, dict) else None


def run_corrections(ctx: SubjectContext) -> list[dict]:
    """One record per BOLD run: ``run`` (file name), ``entry`` (the sidecar's correction dict or None) and
    ``status`` ("corrected", "not corrected", "field maps not used" or "not recorded")."""
    out = []
    for bold in ctx.inputs.get("preproc_bold") or []:
        side = _sidecar(bold)
        entry = (side or {}).get(SIDECAR_KEY)
        entry = entry if isinstance(entry, dict) else None
        if entry is None:
            status = "not recorded"
        elif entry.get("Applied") is True:
            status = "corrected"
        elif entry.get("Finding"):
            status = "field maps not used"
        else:
            status = "not corrected"
        out.append({"run": Path(str(bold)).name, "entry": entry, "status": status})
    return out


def correction_words(record: dict, route: str | None = None) -> str:
    """One line saying what a run got, e.g. "corrected with a phase-difference field map (...)"."""
    entry, status = record.get("entry") or {}, record["status"]
    if status == "corrected":
        kind = KIND_WORDS.get(str(entry.get("FieldMapKind")), str(entry.get("FieldMapKind") or "field map"))
        parts = [f"corrected with a {kind}"]
        if entry.get("PhaseEncodingDirection"):
            parts.append(f"phase encoding {entry['PhaseEncodingDirection']}, total readout time "
                         f"{fmt(entry.get('TotalReadoutTime'), 4, 's')}")
        if entry.get("MedianAbsShiftInHead_mm") is not None:
            parts.append(f"shift in the head median {fmt(entry.get('MedianAbsShiftInHead_mm'), 1, 'mm')}, "
                         f"largest {fmt(entry.get('MaxAbsShiftInHead_mm'), 1, 'mm')}")
        wm = entry.get("WhiteMatterBoundaryFraction")
        if isinstance(wm, dict) and wm.get("Corrected") is not None:
            parts.append(f"BOLD-T1w white-matter boundary fraction {fmt(wm.get('Uncorrected'), 3)} before, "
                         f"{fmt(wm.get('Corrected'), 3)} after correction (near 1: aligned; near 0.5: unrelated)")
        return "; ".join(parts)
    if status == "field maps not used":
        return "not corrected: field maps were found but not used (see the finding below)"
    if status == "not corrected":
        return "not corrected"
    if route == "fmriprep":
        return "not recorded by tmstarget: the BOLD came preprocessed by fMRIPrep (its report says whether it " \
               "corrected susceptibility distortion)"
    return "not recorded (the preprocessing sidecar has no SusceptibilityDistortionCorrection entry)"


def distortion_view(ctx: SubjectContext) -> dict:
    """Rows ``(run, what it got)``, the texts of field maps found but not used, the field maps used, and,
    for the first corrected run, the before/after figures (data URIs) or a note saying what is missing."""
    records = run_corrections(ctx)
    route = ctx.inputs.get("input_route")
    rows = [(r["run"], correction_words(r, route)) for r in records] or [("BOLD runs", "not recorded")]
    findings = [str(r["entry"]["Finding"]) for r in records if r["status"] == "field maps not used"]
    sources = sorted({str(s) for r in records if r["status"] == "corrected"
                      for s in (r["entry"].get("Sources") or [])})
    view = {"rows": rows, "findings": findings, "sources": sources, "before": None, "after": None, "note": None}
    corrected = [i for i, r in enumerate(records) if r["status"] == "corrected"]
    if corrected:
        try:
            view.update(before_after_images(ctx, corrected[0]))
        except Exception as exc:  # a figure that cannot be drawn must not lose the section
            log.warning("distortion figure failed: %s: %s", type(exc).__name__, exc)
            view["note"] = f"The before/after figure could not be drawn ({type(exc).__name__})."
    return view


def _wm_probseg_path(t1w_path) -> Path | None:
    """The built-in preprocessing's WM probability map beside the preprocessed T1w (fMRIPrep naming)."""
    if not t1w_path:
        return None
    p = Path(str(t1w_path))
    wm = p.with_name(p.name.replace("_desc-preproc_T1w.nii.gz", "_label-WM_probseg.nii.gz"))
    return wm if wm != p and wm.exists() else None


def uncorrected_reference_path(boldref_t1w) -> Path:
    """Where the uncorrected BOLD reference in T1w space lies, beside the corrected one."""
    p = Path(str(boldref_t1w))
    return p.with_name(p.name.replace("_space-T1w_boldref.nii.gz", UNCORRECTED_SUFFIX))


def frontal_cut_ras_mm(wm: nib.Nifti1Image) -> tuple[float, float, float]:
    """The cut of the figure: :data:`FRONTAL_CUT_OFFSET_MM` from the centre of mass of the white matter."""
    data = np.asarray(wm.dataobj, dtype=np.float32)
    inside = np.nonzero(data > 0.5)
    centre_ijk = np.array(inside).mean(axis=1) if inside[0].size else (np.asarray(data.shape) - 1) / 2.0
    centre = nib.affines.apply_affine(wm.affine, centre_ijk)
    return tuple(float(v) for v in centre + np.asarray(FRONTAL_CUT_OFFSET_MM))


def draw_reference_over_wm(ref: nib.Nifti1Image, wm: nib.Nifti1Image, cut, title: str):
    """The BOLD reference (grey) with the T1w white-matter boundary (red, WM probability 0.5)."""
    from nilearn import plotting

    data = np.asarray(ref.dataobj, dtype=float)
    nz = data[np.isfinite(data) & (data > 0)]
    vmax = float(np.percentile(nz, 99.5)) if nz.size else 1.0
    fig = make_figure(*FIGSIZE_IN)
    disp = plotting.plot_anat(anat_img=ref, display_mode="ortho", cut_coords=cut, figure=fig, title=title,
                              draw_cross=False, annotate=False, colorbar=False, vmin=0, vmax=vmax, dim=0)
    disp.add_contours(wm, levels=[0.5], colors="r", linewidths=1.0)
    label_anterior_posterior(disp)
    return fig


def _data_uri(png: bytes) -> Markup:
    return Markup("data:image/png;base64," + base64.b64encode(png).decode("ascii"))


def before_after_images(ctx: SubjectContext, run_index: int) -> dict:
    """``before`` and ``after`` (PNG data URIs, or None) of one corrected run, ``note`` saying what is missing."""
    refs = ctx.inputs.get("boldref_t1w") or []
    if run_index >= len(refs) or not Path(str(refs[run_index])).exists():
        return {"note": "The BOLD reference in T1w space (*_space-T1w_boldref.nii.gz) is missing: no figure."}
    wm_path = _wm_probseg_path(ctx.inputs.get("t1w"))
    if wm_path is None:
        return {"note": "The T1w white-matter map (*_label-WM_probseg.nii.gz) is missing: no figure."}
    wm_img = nib.load(str(wm_path))
    wm = clean_img(np.asanyarray(wm_img.dataobj), wm_img.affine)
    cut = frontal_cut_ras_mm(wm)

    def load(path):
        img = nib.load(str(path))
        return clean_img(np.nan_to_num(np.asanyarray(img.dataobj, dtype=np.float32)), img.affine)

    after = _data_uri(figure_bytes(draw_reference_over_wm(load(refs[run_index]), wm, cut,
                                                          "after correction: BOLD reference + T1w WM boundary"), "png"))
    before_path = uncorrected_reference_path(refs[run_index])
    if not before_path.exists():
        return {"after": after, "note": f"The uncorrected BOLD reference ({before_path.name}) was not written by "
                                        "the preprocessing, so only the corrected reference is shown."}
    before = _data_uri(figure_bytes(draw_reference_over_wm(load(before_path), wm, cut,
                                                           "before correction: BOLD reference + T1w WM boundary"), "png"))
    return {"before": before, "after": after}
