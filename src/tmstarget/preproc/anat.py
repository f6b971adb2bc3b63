"""Anatomical preprocessing with antspyx: raw T1w in, fMRIPrep-named T1w outputs and transforms out.

:func:`preprocess_anat`: N4 bias correction, affine registration of the whole head to the brain-only
MNI152NLin2009aSym template shipped with nilearn (template brain mask as the metric mask), skull
stripping with the template brain mask pulled back to the T1w, SyN registration of the skull-stripped
T1w to the template, and a three-class Atropos segmentation (CSF, GM, WM) with the template tissue
maps as priors. Every image is read with nibabel and handed to ANTs through
:func:`tmstarget.preproc.headers.nifti_to_ants` (ANTs physical space is LPS); all outputs carry
qform = sform (code 1).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ants
import numpy as np

from tmstarget.io.files import atomic_path, save_img
from tmstarget.io.nifti import load_img_checked
from tmstarget.preproc.headers import nifti_to_ants
from tmstarget.io.nifti import choose_affine, nifti_img
from tmstarget.preproc.params import REGISTRATION_MODES, resolve_params
from tmstarget.preproc.registration import make_ants_repeatable
from tmstarget.preproc.similarity import image_correlation
from tmstarget.preproc.templates import TEMPLATE_SPACE, load_template, to_ants

log = logging.getLogger(__name__)


def load_t1w(t1w_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """T1w voxels (X, Y, Z) float32 and the checked RAS affine; qform/sform disagreement raises."""
    img = load_img_checked(t1w_path, ndim=3, what="T1w")
    affine, warnings = choose_affine(img, t1w_path, what="T1w", disagreement="error")
    return np.asarray(img.get_fdata(dtype=np.float32)), affine, warnings


def register_t1w_to_template(t1w: "ants.ANTsImage", template: dict, mode: str, workdir: Path,
                             init: str = "search") -> dict:
    """Skull-strip the T1w and register it to the template with SyN.

    Parameters
    ----------
    t1w : ANTsImage
        Bias-corrected whole-head T1w (the working-resolution copy).
    template : dict
        From :func:`tmstarget.preproc.templates.load_template` (nibabel images).
    mode : {"default", "fast"}
    workdir : Path
        Scratch folder for ANTs transform files.
    init : {"search", "header"}
        ``"search"``: start from :func:`tmstarget.preproc.registration.search_initial_transform` (centre of
        mass + rotation search; independent of head position and storage); ``"header"``: from the
        headers with centres of mass aligned (ANTs' default).

    Returns
    -------
    dict
        ``fwd_h5`` (composite: maps template points to T1w points, i.e. warps the T1w into MNI),
        ``inv_h5`` (the inverse), ``brain_mask`` (ANTsImage on the grid of ``t1w``, 0/1),
        ``t1w_brain`` (skull-stripped T1w), ``init`` (the search's result or None).
    """
    from tmstarget.preproc.registration import search_initial_transform

    settings = REGISTRATION_MODES[mode]
    template_t1 = to_ants(template["t1"])
    template_mask = to_ants(template["mask"])
    dilated_mask = ants.iMath(template_mask, "MD", 4 if settings["template_resolution_mm"] == 1 else 2)
    t0 = time.time()
    search = None
    initial = None
    if init == "search":
        search = search_initial_transform(template_t1, t1w, workdir / "init.mat", fixed_mask=dilated_mask,
                                          metric="correlation")
        initial = [search["transform"]]
    # stage 1: whole head -> brain-only template, affine, metric restricted to the (dilated) template brain
    affine_reg = ants.registration(
        fixed=template_t1, moving=t1w, type_of_transform="Affine", mask=dilated_mask,
        initial_transform=initial,
        aff_iterations=settings["affine_iterations"], aff_shrink_factors=(8, 4, 2, 1),
        aff_smoothing_sigmas=(3, 2, 1, 0), outprefix=str(workdir / "affine_"))
    mask0 = ants.apply_transforms(fixed=t1w, moving=template_mask, transformlist=affine_reg["invtransforms"],
                                  whichtoinvert=[True], interpolator="linear")
    mask0 = ants.iMath(ants.threshold_image(mask0, 0.5, 2.0), "MD", 3)
    log.info("T1w -> template affine done in %.0f s", time.time() - t0)
    # stage 2: SyN of the roughly stripped T1w, started from the affine. "SyNOnly": antspyx's "SyN"
    # would first run its own affine stage again (2100x1200x1200 iterations, unmasked, aff_iterations
    # ignored) before the deformable one; the composite still includes the initial affine.
    t0 = time.time()
    syn = ants.registration(
        fixed=template_t1, moving=t1w * mask0, type_of_transform="SyNOnly",
        initial_transform=affine_reg["fwdtransforms"][0], mask=dilated_mask,
        reg_iterations=settings["syn_iterations"], write_composite_transform=True,
        outprefix=str(workdir / "syn_"))
    log.info("T1w -> template SyN done in %.0f s", time.time() - t0)
    brain_mask = pull_template_mask(template_mask, t1w, syn["invtransforms"])
    return {"fwd_h5": syn["fwdtransforms"], "inv_h5": syn["invtransforms"], "brain_mask": brain_mask,
            "t1w_brain": t1w * brain_mask, "init": search}


def pull_template_mask(template_mask: "ants.ANTsImage", grid: "ants.ANTsImage", inv_h5) -> "ants.ANTsImage":
    """The template brain mask pulled onto ``grid`` (T1w world) through ``inv_h5``, 0/1, holes filled."""
    brain = ants.apply_transforms(fixed=grid, moving=template_mask, transformlist=inv_h5, interpolator="linear")
    return ants.iMath(ants.threshold_image(brain, 0.5, 2.0), "FillHoles")


def segment_tissues(t1w: "ants.ANTsImage", brain_mask: "ants.ANTsImage", template: dict, inv_h5: str,
                    iterations: int = 5) -> dict:
    """CSF/GM/WM probability maps in the T1w grid (Atropos with template priors).

    Returns
    -------
    dict of ANTsImage
        ``csf``, ``gm``, ``wm``: probabilities in [0, 1], zero outside ``brain_mask``.
    """
    priors = {}
    for name in ("gm", "wm"):
        priors[name] = ants.apply_transforms(fixed=t1w, moving=to_ants(template[name]), transformlist=inv_h5,
                                             interpolator="linear")
    gm, wm = priors["gm"].numpy(), priors["wm"].numpy()
    mask = brain_mask.numpy() > 0
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    prior_imgs = [t1w.new_image_like(np.clip(p, 0, 1) * mask) for p in (csf, gm, wm)]
    # r=0: Atropos's constant seed. Its default (--use-random-seed 1) seeds from the clock, so the same T1w
    # gave tissue maps up to 0.14 apart between runs, and through the WM/CSF confounds other targets.
    seg = ants.atropos(a=t1w, x=brain_mask, i=prior_imgs, m="[0.1,1x1x1]", c=f"[{iterations},0]",
                       priorweight=0.25, r=0)
    probs = seg["probabilityimages"]
    return {"csf": probs[0] * brain_mask, "gm": probs[1] * brain_mask, "wm": probs[2] * brain_mask}


def preprocess_anat(t1w_path, out_paths: dict, params: dict) -> dict:
    """Anatomical preprocessing of one T1w; writes fMRIPrep-named files.

    N4, skull stripping, registration and segmentation run on a copy at
    ``anat_working_resolution_mm`` when the T1w is finer (:func:`tmstarget.preproc.registration.working_image`);
    every file written is on the T1w's own grid and world (the bias field, the brain mask and the
    tissue maps are resampled back; the transforms are in world coordinates).

    Parameters
    ----------
    t1w_path : path-like
        Raw T1w NIfTI.
    out_paths : dict
        Keys ``preproc_t1w`` (bias-corrected, same grid and affine as the input), ``brain_mask``,
        ``gm_probseg``, ``wm_probseg``, ``csf_probseg`` (T1w grid), ``t1w_mni`` (MNI 2 mm grid),
        ``xfm_t1w_to_mni`` and ``xfm_mni_to_t1w`` (ITK composite .h5; the first warps the T1w
        image into MNI, i.e. maps MNI points to T1w points).
    params : dict
        Preprocessing settings (see the ``preprocessing`` section of config/config.yaml).

    Returns
    -------
    dict
        QC numbers: ``template_correlation`` (T1w in MNI vs template inside the template brain),
        ``brain_volume_ml``, ``registration_checks`` (levels as in
        :mod:`tmstarget.preproc.registration_qc`), ``header_warnings``, ``seconds`` (wall) and ``cpu_seconds``
        (user+sys of this process; ITK runs one thread) per step,
        ``working_resolution_mm`` (None: the T1w's own grid was used).
    """
    from tmstarget.preproc.registration import pad_edges, to_grid, working_image
    from tmstarget.preproc.registration_qc import anat_checks

    params = resolve_params(params)
    make_ants_repeatable()
    settings = REGISTRATION_MODES[params["registration"]]
    seconds, cpu_seconds = {}, {}
    t0, c0 = time.time(), time.process_time()
    data, affine, warnings = load_t1w(t1w_path)
    t1w_raw = nifti_to_ants(data, affine)
    del data
    work_raw = working_image(t1w_raw, params["anat_working_resolution_mm"])
    resampled = work_raw is not t1w_raw
    head = ants.get_mask(work_raw, cleanup=2)
    if resampled:
        bias = ants.n4_bias_field_correction(work_raw, mask=head, shrink_factor=4, return_bias_field=True)
        t1w_work = work_raw / bias
        t1w = t1w_raw / to_grid(pad_edges(bias), t1w_raw)
        log.info("T1w voxels %s mm: N4, registration and segmentation at %g mm", 
                 "x".join(f"{v:.2f}" for v in t1w_raw.spacing), params["anat_working_resolution_mm"])
    else:
        t1w = t1w_work = ants.n4_bias_field_correction(t1w_raw, mask=head, shrink_factor=4)
    seconds["n4"], cpu_seconds["n4"] = time.time() - t0, time.process_time() - c0
    template = load_template(settings["template_resolution_mm"])
    with tempfile.TemporaryDirectory(prefix="tmstarget_anat_") as tmp:
        t0, c0 = time.time(), time.process_time()
        reg = register_t1w_to_template(t1w_work, template, params["registration"], Path(tmp),
                                       init=params["registration_init"])
        seconds["registration"], cpu_seconds["registration"] = time.time() - t0, time.process_time() - c0
        t0, c0 = time.time(), time.process_time()
        tissues = segment_tissues(t1w_work, reg["brain_mask"], template, reg["inv_h5"], settings["atropos_iterations"])
        if resampled:
            brain_mask = pull_template_mask(to_ants(template["mask"]), t1w, reg["inv_h5"])
            tissues = {k: to_grid(v, t1w) * brain_mask for k, v in tissues.items()}
            t1w_brain = t1w * brain_mask
        else:
            brain_mask, t1w_brain = reg["brain_mask"], reg["t1w_brain"]
        seconds["segmentation"], cpu_seconds["segmentation"] = time.time() - t0, time.process_time() - c0
        mni2 = load_template(2)
        mni2_t1 = to_ants(mni2["t1"])
        t1w_mni = ants.apply_transforms(fixed=mni2_t1, moving=t1w_brain, transformlist=reg["fwd_h5"],
                                        interpolator="linear")
        for key in ("xfm_t1w_to_mni", "xfm_mni_to_t1w"):
            src = reg["fwd_h5"] if key == "xfm_t1w_to_mni" else reg["inv_h5"]
            with atomic_path(out_paths[key]) as dst:
                shutil.copyfile(src, dst)
    save_img(nifti_img(t1w.numpy(), affine), out_paths["preproc_t1w"])
    mask_array = brain_mask.numpy()
    save_img(nifti_img(mask_array, affine, dtype=np.uint8), out_paths["brain_mask"])
    for name in ("gm", "wm", "csf"):
        save_img(nifti_img(tissues[name].numpy(), affine), out_paths[f"{name}_probseg"])
    save_img(nifti_img(t1w_mni.numpy(), mni2["t1"].affine), out_paths["t1w_mni"])
    template_mask = mni2["mask"].get_fdata() > 0
    corr = image_correlation(t1w_mni.numpy(), mni2["t1"].get_fdata(), template_mask)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    volume_ml = float((mask_array > 0).sum() * voxel_ml)
    checks = anat_checks(corr, volume_ml)
    qc = {"template_correlation": corr, "brain_volume_ml": volume_ml, "registration_checks": checks,
          "header_warnings": warnings, "seconds": seconds, "cpu_seconds": cpu_seconds, "template": TEMPLATE_SPACE,
          "registration": params["registration"], "registration_init": params["registration_init"],
          "initial_search": reg["init"],
          "working_resolution_mm": float(params["anat_working_resolution_mm"]) if resampled else None}
    log.info("anat done: T1w-template correlation %.3f, brain %.0f ml; registration QC: %s", corr, volume_ml,
             "; ".join(f"{c['name']} {c['level'].upper()}" for c in checks))
    return qc
