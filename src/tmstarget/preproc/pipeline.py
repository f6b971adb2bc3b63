"""Built-in preprocessing with antspyx (no FSL, AFNI or FreeSurfer): raw BIDS in, fMRIPrep-layout out.

Anatomy (:func:`preprocess_anat`): N4 bias correction, affine registration of the whole head to
the brain-only MNI152NLin2009aSym template shipped with nilearn (template brain mask as the metric
mask), skull stripping with the template brain mask pulled back to the T1w, SyN registration of the
skull-stripped T1w to the template, and a three-class Atropos segmentation (CSF, GM, WM) with the
template tissue maps as priors.

BOLD (:func:`preprocess_bold`): non-steady-state volumes dropped (``dummy_scans``), optional
slice-timing correction, rigid motion correction of every volume to a median reference
(:mod:`tmstarget.preproc.realign`: least squares on intensity differences in world coordinates),
rigid BOLD reference -> T1w registration (mutual information inside the T1w brain), confounds in
the native BOLD grid, and ONE resampling of every raw volume to the MNI 2 mm grid: the
MNI -> T1w -> BOLD-reference mapping is composed once into a displacement field, each volume's
rigid motion is applied to those points analytically, and the raw volume is sampled there, so no
volume is interpolated twice. The 4D output is streamed to disk in chunks of ``chunk_volumes``.

Spaces: every image is read with nibabel and handed to ANTs through
:func:`tmstarget.preproc.headers.nifti_to_ants` (ANTs physical space is LPS); all outputs carry
qform = sform (code 1).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ants
import nibabel as nib
import numpy as np
from scipy import ndimage

from tmstarget.preproc import confounds as pc
from tmstarget.preproc import realign
from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path, load_img_checked, save_img, write_json
from tmstarget.preproc.stream import (BoldVolumes, DiskTimeVoxels, scratch_dir, scratch_file, slice_timing_to_file,
                             uncompressed_copy, voxels_per_block)
from tmstarget.preproc.headers import (RAS_TO_LPS, ants_affine_ras, choose_affine, is_oblique, nifti_img,
                              nifti_to_ants)

log = logging.getLogger(__name__)

TEMPLATE_SPACE = "MNI152NLin2009aSym"

#: every preprocessing parameter with its default (config key ``preprocessing``)
DEFAULT_PARAMS = {
    "dummy_scans": "auto",          # "auto" (detect from the global signal) or a number of volumes
    "slice_timing": False,          # slice-timing correction from the sidecar's SliceTiming
    "registration": "default",      # "default" or "fast" (coarser template and fewer SyN iterations)
    "output_resolution_mm": 2,      # MNI grid of the BOLD outputs (nilearn's template grid)
    "fd_head_radius_mm": 50,        # Power FD: radius turning rotations (rad) into mm
    "n_acompcor": 5,                # aCompCor components (WM + CSF mask)
    "chunk_volumes": 50,            # volumes resampled and written per chunk (memory)
    "anat_working_resolution_mm": 1.0,  # N4, registration, Atropos on a copy this coarse (outputs stay native)
    "registration_init": "search",  # "search" (centre of mass + rotation search) or "header" (trust the headers)
}

#: registration settings per mode: template resolution (mm), SyN iterations per level
#: (coarsest first, each level halves the shrink factor), affine iterations (shrink 8, 4, 2, 1),
#: Atropos iterations. "default" is antsRegistrationSyNQuick's schedule: no iterations at shrink 1
#: (the 1 mm template's full grid), i.e. the affine and SyN stop at 2 mm; the SyN field is still
#: written on the 1 mm grid. The 1 mm SyN level cost 3/4 of the step's CPU on a 0.7 mm T1w (see
#: docs/architecture.md, "Working resolution").
REGISTRATION_MODES = {
    "default": {"template_resolution_mm": 1, "syn_iterations": (100, 70, 50, 0),
                "affine_iterations": (1000, 500, 250, 0), "atropos_iterations": 5},
    "fast": {"template_resolution_mm": 2, "syn_iterations": (60, 30, 10),
             "affine_iterations": (500, 250, 100, 0), "atropos_iterations": 3},
}


def resolve_params(params: dict | None) -> dict:
    """Defaults completed with ``params``; unknown keys or bad values raise :class:`InputError`."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise InputError(f"preprocessing: unknown setting(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    out = {**DEFAULT_PARAMS, **params}
    if out["registration"] not in REGISTRATION_MODES:
        raise InputError(f"preprocessing.registration must be one of {sorted(REGISTRATION_MODES)}, "
                         f"not {out['registration']!r}")
    if out["dummy_scans"] != "auto" and not (isinstance(out["dummy_scans"], (int, np.integer))
                                             and out["dummy_scans"] >= 0):
        raise InputError(f"preprocessing.dummy_scans must be 'auto' or a number >= 0, not {out['dummy_scans']!r}")
    if float(out["output_resolution_mm"]) != 2:
        raise InputError("preprocessing.output_resolution_mm: only 2 (the MNI152 2 mm grid downstream "
                         "steps expect) is supported")
    if int(out["chunk_volumes"]) < 1:
        raise InputError("preprocessing.chunk_volumes must be >= 1")
    if not 0.5 <= float(out["anat_working_resolution_mm"]) <= 3.0:
        raise InputError("preprocessing.anat_working_resolution_mm must be between 0.5 and 3 mm, not "
                         f"{out['anat_working_resolution_mm']!r}")
    if out["registration_init"] not in ("search", "header"):
        raise InputError("preprocessing.registration_init must be 'search' or 'header', not "
                         f"{out['registration_init']!r}")
    return out


# ----------------------------------------------------------------------------- template


def load_template(resolution_mm: int = 2) -> dict:
    """nilearn's MNI152NLin2009aSym template (brain-only T1), brain mask and GM/WM maps.

    Returns
    -------
    dict of nibabel images
        ``t1``, ``mask``, ``gm``, ``wm`` on nilearn's template grid (99x117x95 at 2 mm,
        197x233x189 at 1 mm); no network access (the files ship with nilearn).
    """
    from nilearn import datasets

    return {
        "t1": datasets.load_mni152_template(resolution=resolution_mm),
        "mask": datasets.load_mni152_brain_mask(resolution=resolution_mm),
        "gm": datasets.load_mni152_gm_template(resolution=resolution_mm),
        "wm": datasets.load_mni152_wm_template(resolution=resolution_mm),
    }


def _to_ants(img: nib.Nifti1Image) -> "ants.ANTsImage":
    return nifti_to_ants(np.asarray(img.get_fdata(dtype=np.float32)), img.affine)


#: Seed of the random metric sampling in every antspyx registration. Unseeded, ANTs draws new
#: samples each run and the same input gives different motion estimates (up to 0.3 mm seen) and
#: transforms, so an interrupted and resumed run would not reproduce an uninterrupted one.
ANTS_RANDOM_SEED = 20120901


def make_ants_repeatable(seed: int = ANTS_RANDOM_SEED) -> None:
    """Fix the random seed antspyx passes to antsRegistration (``--random-seed``).

    The seed alone does not make a multi-threaded ANTs registration repeatable (the metric's
    per-thread sums are added in scheduling order), so every ITK filter of the process is also
    pinned to one thread (:func:`tmstarget.preproc.registration.pin_itk_threads`; this must happen before
    the process's first ITK filter, which is why both preprocessing steps call this first).
    """
    import ants.config

    from tmstarget.preproc.registration import pin_itk_threads

    pin_itk_threads(1)
    ants.config._random_seed = int(seed)


def image_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two images inside a boolean mask (same shape)."""
    x, y = np.asarray(a, float)[mask], np.asarray(b, float)[mask]
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def edge_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma_vox: float = 1.0) -> float:
    """Correlation of the gradient magnitudes of two Gaussian-smoothed images inside ``mask``.

    A registration check across contrasts (T2* EPI vs T1 template): intensities correlate weakly
    and barely change with misregistration, edges do. On the real HAPPYTEST run: 0.42 registered,
    0.15 after a 10 mm shift (plain intensity correlation: 0.20 and 0.16).
    """

    def edges(v):
        return np.linalg.norm(np.gradient(ndimage.gaussian_filter(np.asarray(v, float), sigma_vox)), axis=0)

    return image_correlation(edges(a), edges(b), mask)


# ----------------------------------------------------------------------------- anatomy


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
        From :func:`load_template` (nibabel images).
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
    template_t1 = _to_ants(template["t1"])
    template_mask = _to_ants(template["mask"])
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
        priors[name] = ants.apply_transforms(fixed=t1w, moving=_to_ants(template[name]), transformlist=inv_h5,
                                             interpolator="linear")
    gm, wm = priors["gm"].numpy(), priors["wm"].numpy()
    mask = brain_mask.numpy() > 0
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    prior_imgs = [t1w.new_image_like(np.clip(p, 0, 1) * mask) for p in (csf, gm, wm)]
    seg = ants.atropos(a=t1w, x=brain_mask, i=prior_imgs, m="[0.1,1x1x1]", c=f"[{iterations},0]",
                       priorweight=0.25)
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
        Preprocessing settings (see :data:`DEFAULT_PARAMS`).

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
            brain_mask = pull_template_mask(_to_ants(template["mask"]), t1w, reg["inv_h5"])
            tissues = {k: to_grid(v, t1w) * brain_mask for k, v in tissues.items()}
            t1w_brain = t1w * brain_mask
        else:
            brain_mask, t1w_brain = reg["brain_mask"], reg["t1w_brain"]
        seconds["segmentation"], cpu_seconds["segmentation"] = time.time() - t0, time.process_time() - c0
        mni2 = load_template(2)
        mni2_t1 = _to_ants(mni2["t1"])
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


# ----------------------------------------------------------------------------- BOLD


def load_bold(bold_path: str | os.PathLike, metadata: dict) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
    """Raw BOLD voxels (X, Y, Z, T) float32 (the whole run in memory), checked RAS affine, repetition
    time (s), warnings; see :func:`read_bold_header` (which :func:`preprocess_bold` uses instead)."""
    img, affine, t_r, warnings = read_bold_header(bold_path, metadata)
    load_img_checked(bold_path, ndim=4, what="BOLD run", min_volumes=10)
    return np.asarray(img.get_fdata(dtype=np.float32)), affine, t_r, warnings


def read_bold_header(bold_path: str | os.PathLike, metadata: dict) -> tuple[nib.Nifti1Image, np.ndarray, float, list[str]]:
    """The BOLD image (data not read), checked RAS affine, repetition time (s), warnings.

    Reads only the header: the voxels are checked (NaN, truncation) as they are read.

    Raises
    ------
    InputError
        Missing or non-positive ``RepetitionTime`` in the sidecar (names the JSON to fix), 3D
        image, unreadable file.
    """
    bold_path = Path(bold_path)
    sidecar = bold_path.name.replace(".nii.gz", ".json").replace(".nii", ".json")
    t_r = (metadata or {}).get("RepetitionTime")
    if t_r is None:
        raise InputError(f"{sidecar}: RepetitionTime is missing for {bold_path.name}; add "
                         "\"RepetitionTime\": <seconds> to the BIDS sidecar JSON")
    try:
        t_r = float(t_r)
    except (TypeError, ValueError):
        t_r = -1.0
    if not t_r > 0:
        raise InputError(f"{sidecar}: RepetitionTime must be a positive number of seconds, "
                         f"not {metadata.get('RepetitionTime')!r}")
    img = load_img_checked(bold_path, ndim=4, what="BOLD run", min_volumes=10, read_data=False)
    affine, warnings = choose_affine(img, bold_path, what="BOLD run", disagreement="warn")
    header_tr = float(img.header.get_zooms()[3]) if len(img.header.get_zooms()) > 3 else 0.0
    units = img.header.get_xyzt_units()[1]
    header_tr_s = header_tr / 1000.0 if units == "msec" else header_tr
    if header_tr_s > 0 and abs(header_tr_s - t_r) > 0.01:
        msg = (f"{bold_path.name}: header TR {header_tr_s:g} s differs from the sidecar's RepetitionTime "
               f"{t_r:g} s; using the sidecar (BIDS rule)")
        log.warning(msg)
        warnings.append(msg)
    if is_oblique(affine):
        log.info("%s is oblique; handled through its affine (no reslicing before registration)", bold_path.name)
    return img, affine, t_r, warnings


def head_global_signal_streamed(data_xyzt) -> np.ndarray:
    """:func:`head_global_signal` reading one volume at a time (two passes: the mean, then each
    volume's mean inside the head); ``data_xyzt`` is any run whose ``[..., t]`` is a volume."""
    n_t = data_xyzt.shape[3]
    total = np.zeros(data_xyzt.shape[:3], np.float64)
    for t in range(n_t):
        total += data_xyzt[..., t]
    mean = (total / n_t).astype(np.float32)
    mask = mean > np.percentile(mean, 98) / 8
    return np.array([np.asarray(data_xyzt[..., t], np.float32)[mask].mean(dtype=np.float32) for t in range(n_t)])


def head_global_signal(data_xyzt: np.ndarray) -> np.ndarray:
    """Mean of each volume inside a rough head mask (voxels above 1/8 of the robust max of the mean)."""
    mean = data_xyzt.mean(axis=3)
    mask = mean > np.percentile(mean, 98) / 8
    return data_xyzt[mask].mean(axis=0)


def coregister_bold_to_t1w(boldref: "ants.ANTsImage", t1w_brain: "ants.ANTsImage",
                           t1w_mask: "ants.ANTsImage", out_txt: str | os.PathLike, init: str = "search") -> dict:
    """Rigid BOLD reference -> T1w registration (Mattes MI, metric inside the dilated T1w brain).

    Writes the ITK text transform (maps T1w points to BOLD-reference points, i.e. resamples the
    BOLD reference into the T1w) to ``out_txt`` atomically.

    Returns
    -------
    dict
        ``transform`` (path written) and ``correlation`` (absolute correlation of the resampled
        BOLD reference with the T1w inside the brain; T2* vs T1 contrast, so a rough check).

    ``init="search"`` starts from the centres of mass of the two brains and the best of a search over
    rotations (mutual information; :func:`tmstarget.preproc.registration.search_initial_transform`), so the
    result does not depend on how far the two headers disagree; ``"header"`` trusts the headers
    (centres of mass of the intensities aligned, ANTs' default).
    """
    from tmstarget.preproc.registration import search_initial_transform

    mask = ants.iMath(t1w_mask, "MD", 2)
    with tempfile.TemporaryDirectory(prefix="tmstarget_coreg_") as tmp:
        initial = None
        if init == "search":
            search = search_initial_transform(t1w_brain, boldref, Path(tmp) / "init.mat", fixed_mask=mask,
                                              moving_mask=ants.get_mask(boldref, cleanup=2), metric="mi")
            initial = [search["transform"]]
        reg = ants.registration(fixed=t1w_brain, moving=boldref, type_of_transform="Rigid", mask=mask,
                                initial_transform=initial,
                                aff_metric="mattes", aff_iterations=(1000, 500, 250, 100),
                                aff_shrink_factors=(8, 4, 2, 1), aff_smoothing_sigmas=(3, 2, 1, 0))
    tx = ants.read_transform(reg["fwdtransforms"][0])
    out_mat = Path(reg["fwdtransforms"][0])  # antspyx inverts only files named .mat
    with atomic_path(out_txt) as tmp:
        txt = str(tmp) + ".txt" if not str(tmp).endswith(".txt") else str(tmp)
        ants.write_transform(tx, txt)
        if txt != str(tmp):
            os.replace(txt, tmp)
    warped = reg["warpedmovout"].numpy()
    brain = t1w_mask.numpy() > 0
    corr = abs(image_correlation(warped, t1w_brain.numpy(), brain & (warped > 0)))
    return {"transform": str(out_txt), "transform_mat": str(out_mat), "correlation": corr}


def grid_points_through_transforms_lps(fixed: "ants.ANTsImage", transformlist: list[str]) -> np.ndarray:
    """LPS mm position, after ``transformlist`` (ANTs order, composed once), of every voxel centre of
    ``fixed``: where resampling onto ``fixed`` would read the moving image.

    Returns
    -------
    array (X, Y, Z, 3)
        On the grid of ``fixed``.
    """
    with tempfile.TemporaryDirectory(prefix="tmstarget_compose_") as tmp:
        field_path = ants.apply_transforms(fixed=fixed, moving=fixed, transformlist=[str(t) for t in transformlist],
                                           whichtoinvert=[False] * len(transformlist), compose=f"{tmp}/comp_")
        disp_lps = np.asarray(nib.load(field_path).dataobj, dtype=np.float64).reshape(fixed.shape + (3,))
    ijk = np.indices(fixed.shape, dtype=np.float64).reshape(3, -1)
    affine_lps = RAS_TO_LPS @ ants_affine_ras(fixed)
    points_lps = (affine_lps[:3, :3] @ ijk + affine_lps[:3, 3:4]).T.reshape(fixed.shape + (3,))
    return points_lps + disp_lps


def mni_to_boldref_points_lps(mni_ref: "ants.ANTsImage", boldref: "ants.ANTsImage", xfm_t1w_to_mni: str,
                              xfm_bold_to_t1w: str) -> np.ndarray:
    """BOLD-reference LPS mm position of every MNI voxel centre (T1w->MNI then BOLD->T1w, composed once).

    Returns
    -------
    array (X, Y, Z, 3)
        On the MNI grid of ``mni_ref``.
    """
    return grid_points_through_transforms_lps(mni_ref, [xfm_t1w_to_mni, xfm_bold_to_t1w])


def sample_volume(volume: np.ndarray, ijk_3n: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of a 3D volume at fractional voxel indices (3, N); 0 outside the volume."""
    return ndimage.map_coordinates(volume, ijk_3n, order=order, mode="constant", cval=0.0, prefilter=False)


def world_to_voxel_indices(points_lps: np.ndarray, transform_lps: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """Voxel indices (3, N) in a volume of the points (N, 3) moved by a 4x4 LPS transform."""
    to_ijk = np.linalg.inv(RAS_TO_LPS @ affine_ras) @ transform_lps
    return to_ijk[:3, :3] @ points_lps.T + to_ijk[:3, 3:4]


def write_nifti_streamed(path: str | os.PathLike, shape_xyz: tuple, affine_ras: np.ndarray, t_r: float,
                         volumes, n_volumes: int, compresslevel: int = 4) -> Path:
    """Write a float32 4D NIfTI (.nii.gz) volume by volume, atomically, without holding it in memory.

    NIfTI stores x fastest and time slowest, so each volume is one contiguous block after the
    352-byte header; ``volumes`` yields arrays (X, Y, Z) in order.
    """
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(shape_xyz) + (n_volumes,))
    header.set_data_dtype(np.float32)
    header.set_qform(affine_ras, 1)
    header.set_sform(affine_ras, 1)
    header.set_xyzt_units("mm", "sec")
    zooms = np.linalg.norm(np.asarray(affine_ras)[:3, :3], axis=0)
    header.set_zooms(tuple(zooms) + (t_r,))
    header["vox_offset"] = 352
    written = 0
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wb", compresslevel=compresslevel) as f:
            header.write_to(f)  # 348 bytes + the 4-byte extension flag
            f.write(b"\x00" * (352 - f.tell()))
            for vol in volumes:
                f.write(np.asarray(vol, dtype="<f4").tobytes(order="F"))
                written += 1
        if written != n_volumes:
            raise RuntimeError(f"wrote {written} volumes, expected {n_volumes}")
    return Path(path)


def _to_bold_grid(image: "ants.ANTsImage", boldref: "ants.ANTsImage", xfm_bold_to_t1w: str) -> np.ndarray:
    """A T1w-grid image pulled into the BOLD reference grid (inverse of the coregistration).

    ``xfm_bold_to_t1w`` must be named ``.mat`` (antspyx only inverts such files)."""
    return ants.apply_transforms(fixed=boldref, moving=image, transformlist=[str(xfm_bold_to_t1w)],
                                 whichtoinvert=[True], interpolator="linear").numpy()


def _tissue_mask(prob: np.ndarray, thresholds=(0.95, 0.9, 0.75, 0.5), min_voxels: int = 10) -> np.ndarray:
    for thr in thresholds:
        mask = prob > thr
        if mask.sum() >= min_voxels:
            return mask
    return prob > thresholds[-1]


def preprocess_bold(bold_path, metadata: dict, anat: dict, out_paths: dict, params: dict) -> dict:
    """Preprocess one resting-state run into MNI152NLin2009aSym 2 mm with fMRIPrep naming.

    Parameters
    ----------
    bold_path : path-like
        Raw 4D BOLD NIfTI.
    metadata : dict
        BIDS sidecar (``RepetitionTime`` required; ``SliceTiming``, ``SliceEncodingDirection`` used
        when ``slice_timing`` is on).
    anat : dict
        Outputs of :func:`preprocess_anat` (keys as its ``out_paths``).
    out_paths : dict
        ``bold_mni`` (+ .json sidecar beside it), ``mask_mni``, ``boldref_mni``, ``boldref_t1w``,
        ``confounds`` (.tsv, + .json beside it), ``xfm_bold_to_t1w`` (ITK text).
    params : dict
        See :data:`DEFAULT_PARAMS`.

    Returns
    -------
    dict
        QC numbers: ``dummy_volumes``, ``volumes``, ``t_r``, ``mean_fd_mm``, ``max_fd_mm``,
        ``coreg_correlation``, ``header_warnings``, ``seconds`` per step.
    """
    params = resolve_params(params)
    make_ants_repeatable()
    with scratch_dir(out_paths["bold_mni"]) as scratch:
        return _preprocess_bold(bold_path, metadata, anat, out_paths, params, scratch)


def _preprocess_bold(bold_path, metadata, anat, out_paths, params, scratch: Path) -> dict:
    """:func:`preprocess_bold` with its temporary folder: the run is read one volume at a time from an
    uncompressed copy (:mod:`tmstarget.preproc.stream`) and never held whole in memory."""
    seconds = {}
    t_start = time.time()
    img, affine, t_r, warnings = read_bold_header(bold_path, metadata)
    del img
    run = BoldVolumes(uncompressed_copy(bold_path, scratch), name=Path(bold_path).name, affine=affine)
    n_total = run.shape[3]
    # --- non-steady-state volumes
    if params["dummy_scans"] == "auto":
        n_dummy = pc.detect_nonsteady_volumes(head_global_signal_streamed(run))
    else:
        n_dummy = int(params["dummy_scans"])
    if n_total - n_dummy < 10:
        raise InputError(f"{Path(bold_path).name}: only {n_total - n_dummy} volumes left after dropping "
                         f"{n_dummy} non-steady-state volumes; set preprocessing.dummy_scans lower")
    data = run.drop(n_dummy)
    n_t = data.shape[3]
    log.info("%s: %d volumes, %d non-steady-state dropped, TR %.3f s", Path(bold_path).name, n_total,
             n_dummy, t_r)
    # --- slice timing
    stc_applied = False
    if params["slice_timing"]:
        data, stc_applied = _maybe_slice_timing(data, metadata, t_r, bold_path, warnings, scratch)
    seconds["load"] = time.time() - t_start
    # --- motion
    t0 = time.time()
    n_ref = min(10, n_t)
    reference = np.median(np.stack([data[..., t] for t in range(n_ref)], axis=3), axis=3)
    transforms_ras = realign.estimate_motion(data, affine, reference)
    centre_ras = (affine @ np.append((np.asarray(data.shape[:3]) - 1) / 2.0, 1.0))[:3]
    motion = np.array([pc.rigid_to_motion_params(m, centre_ras) for m in transforms_ras])
    # a sharper reference: the mean of the motion-corrected volumes
    boldref_native = motion_corrected_mean(data, affine, transforms_ras)
    seconds["motion"] = time.time() - t0
    # --- coregistration
    t0 = time.time()
    boldref = nifti_to_ants(boldref_native, affine)
    t1w = _to_ants(nib.load(anat["preproc_t1w"]))
    t1w_mask = _to_ants(nib.load(anat["brain_mask"]))
    coreg = coregister_bold_to_t1w(boldref, t1w * t1w_mask, t1w_mask, out_paths["xfm_bold_to_t1w"],
                                   init=params["registration_init"])
    boldref_t1w = ants.apply_transforms(fixed=t1w, moving=boldref, transformlist=[coreg["transform"]])
    save_img(nifti_img(boldref_t1w.numpy(), ants_affine_ras(t1w)), out_paths["boldref_t1w"])
    seconds["coregistration"] = time.time() - t0
    # --- confounds in the native grid (motion-corrected brain, WM and CSF voxels only, via a scratch file)
    t0 = time.time()
    brain_native = _to_bold_grid(t1w_mask, boldref, coreg["transform_mat"]) > 0.5
    wm_native = _tissue_mask(_to_bold_grid(_to_ants(nib.load(anat["wm_probseg"])), boldref, coreg["transform_mat"]))
    csf_native = _tissue_mask(_to_bold_grid(_to_ants(nib.load(anat["csf_probseg"])), boldref, coreg["transform_mat"]))
    fd = pc.framewise_displacement(motion, params["fd_head_radius_mm"])
    series = native_tissue_series(data, affine, transforms_ras, brain_native, wm_native, csf_native,
                                  scratch_file(scratch, "tissue_series"))
    dvars_t, std_dvars_t = pc.dvars(series["brain_tv"], chunk_voxels=voxels_per_block(n_t))
    table = pc.confounds_table(motion, fd, dvars_t, std_dvars_t, series["global_signal"],
                               series["white_matter"], series["csf"],
                               pc.acompcor(series["noise_tv"], int(params["n_acompcor"]), t_r,
                                           chunk_voxels=voxels_per_block(n_t)))
    Path(series["path"]).unlink(missing_ok=True)
    with atomic_path(out_paths["confounds"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    write_json(_confounds_sidecar(params, n_dummy, int(wm_native.sum()), int(csf_native.sum())),
               _sidecar_path(out_paths["confounds"]))
    seconds["confounds"] = time.time() - t0
    # --- one resampling to MNI
    t0 = time.time()
    mni = load_template(2)
    mni_ref = _to_ants(mni["t1"])
    points_lps = mni_to_boldref_points_lps(mni_ref, boldref, anat["xfm_t1w_to_mni"], coreg["transform"])
    shape_mni = mni_ref.shape
    flat_points = points_lps.reshape(-1, 3)
    del points_lps
    ijk_ref = world_to_voxel_indices(flat_points, np.eye(4), affine)
    in_fov = np.all((ijk_ref > -0.5) & (ijk_ref < np.asarray(data.shape[:3])[:, None] - 0.5), axis=0)
    idx = np.flatnonzero(in_fov)
    boldref_mni = np.zeros(flat_points.shape[0], np.float32)
    boldref_mni[idx] = sample_volume(boldref_native, ijk_ref[:, idx])
    del ijk_ref
    save_img(nifti_img(boldref_mni.reshape(shape_mni), mni["t1"].affine), out_paths["boldref_mni"])
    anat_mask_mni = ants.apply_transforms(fixed=mni_ref, moving=t1w_mask, transformlist=anat["xfm_t1w_to_mni"],
                                          interpolator="linear").numpy() > 0.5
    mask_mni = anat_mask_mni & in_fov.reshape(shape_mni)
    save_img(nifti_img(mask_mni, mni["t1"].affine, dtype=np.uint8), out_paths["mask_mni"])
    pts = flat_points[idx]

    def volumes():
        chunk = int(params["chunk_volumes"])
        for start in range(0, n_t, chunk):
            block = []
            for t in range(start, min(start + chunk, n_t)):
                vol = np.zeros(flat_points.shape[0], np.float32)
                transform_lps = RAS_TO_LPS @ transforms_ras[t] @ RAS_TO_LPS
                vol[idx] = sample_volume(data[..., t], world_to_voxel_indices(pts, transform_lps, affine))
                block.append(vol.reshape(shape_mni, order="C"))
            yield from block

    write_nifti_streamed(out_paths["bold_mni"], shape_mni, mni["t1"].affine, t_r, volumes(), n_t)
    seconds["resample_mni"] = time.time() - t0
    qc = {"bold": Path(bold_path).name, "volumes_total": n_total, "dummy_volumes": n_dummy, "volumes": int(n_t),
          "t_r": t_r, "mean_fd_mm": float(np.nanmean(fd)), "max_fd_mm": float(np.nanmax(fd)) if len(fd) > 1 else 0.0,
          "coreg_correlation": coreg["correlation"], "slice_timing_corrected": stc_applied,
          "header_warnings": warnings, "seconds": seconds}
    write_json({"RepetitionTime": t_r, "SkullStripped": False, "SliceTimingCorrected": stc_applied,
                "NumberOfVolumesDiscardedByTmstarget": n_dummy, "VolumesInRawRun": n_total,
                "TemplateSpace": TEMPLATE_SPACE, "Resolution": "2 mm (nilearn MNI152 2 mm grid)",
                "Sources": [_raw_bids_uri(bold_path)], "HeaderWarnings": warnings},
               _sidecar_path(out_paths["bold_mni"]))
    log.info("BOLD done in %.0f s: mean FD %.3f mm", time.time() - t_start, qc["mean_fd_mm"])
    return qc


def _native_grid_points_lps(shape, affine_ras: np.ndarray) -> np.ndarray:
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return ((RAS_TO_LPS @ affine_ras)[:3, :3] @ ijk + (RAS_TO_LPS @ affine_ras)[:3, 3:4]).T


def motion_corrected_mean(data_xyzt, affine_ras: np.ndarray, transforms_ras: np.ndarray) -> np.ndarray:
    """Mean (float32, X Y Z) of the volumes resampled onto the reference grid, one volume at a time.

    ``data_xyzt``: any run whose ``[..., t]`` is a volume (array, :class:`BoldVolumes`)."""
    shape = data_xyzt.shape[:3]
    points_lps = _native_grid_points_lps(shape, affine_ras)
    total = np.zeros(int(np.prod(shape)), np.float64)
    for t in range(data_xyzt.shape[3]):
        transform_lps = RAS_TO_LPS @ transforms_ras[t] @ RAS_TO_LPS
        total += sample_volume(np.asarray(data_xyzt[..., t], np.float32),
                               world_to_voxel_indices(points_lps, transform_lps, affine_ras))
    return (total / data_xyzt.shape[3]).astype(np.float32).reshape(shape)


def native_tissue_series(data_xyzt, affine_ras: np.ndarray, transforms_ras: np.ndarray, brain: np.ndarray,
                         wm: np.ndarray, csf: np.ndarray, path: Path) -> dict:
    """Motion-corrected time series of the brain, WM and CSF voxels of the reference grid, written to
    ``path`` one volume at a time (only those voxels are resampled).

    The columns are ordered noise-only (WM or CSF outside ``brain``), noise in brain, brain only, so
    the brain voxels and the WM+CSF (noise) voxels are each one contiguous block of columns.

    Returns
    -------
    dict
        ``brain_tv`` and ``noise_tv`` (:class:`DiskTimeVoxels`, (T, V), column blocks read on demand;
        voxels in C order within each group), ``global_signal``, ``white_matter``, ``csf`` (T,)
        means per volume, ``path``.
    """
    noise = wm | csf
    groups = [np.flatnonzero((noise & ~brain).ravel()), np.flatnonzero((noise & brain).ravel()),
              np.flatnonzero((brain & ~noise).ravel())]
    flat = np.concatenate(groups)
    n_noise_only, n_noise = len(groups[0]), len(groups[0]) + len(groups[1])
    in_brain = np.zeros(flat.size, bool)
    in_brain[n_noise_only:] = True
    in_wm, in_csf = wm.ravel()[flat], csf.ravel()[flat]
    points_lps = _native_grid_points_lps(brain.shape, affine_ras)[flat]
    n_t = data_xyzt.shape[3]
    store = DiskTimeVoxels.create(path, n_t, flat.size)
    means = {k: np.zeros(n_t) for k in ("global_signal", "white_matter", "csf")}
    for t in range(n_t):
        transform_lps = RAS_TO_LPS @ transforms_ras[t] @ RAS_TO_LPS
        values = sample_volume(np.asarray(data_xyzt[..., t], np.float32),
                               world_to_voxel_indices(points_lps, transform_lps, affine_ras))
        store.write_row(t, values)
        means["global_signal"][t] = values[in_brain].mean(dtype=np.float32) if in_brain.any() else np.nan
        means["white_matter"][t] = values[in_wm].mean(dtype=np.float32) if in_wm.any() else np.nan
        means["csf"][t] = values[in_csf].mean(dtype=np.float32) if in_csf.any() else np.nan
    return {"brain_tv": store.columns(n_noise_only, flat.size), "noise_tv": store.columns(0, n_noise), **means,
            "path": path}


def _maybe_slice_timing(data, metadata, t_r, bold_path, warnings, scratch: Path | None = None):
    """Slice-timing correction of ``data``: an array (returned corrected in memory) or a
    :class:`BoldVolumes` (corrected slab by slab into a float32 run in ``scratch``)."""
    slice_times = (metadata or {}).get("SliceTiming")
    name = Path(bold_path).name
    if not slice_times:
        msg = f"{name}: slice_timing is on but the sidecar has no SliceTiming; skipped slice-timing correction"
        log.warning(msg)
        warnings.append(msg)
        return data, False
    direction = str((metadata or {}).get("SliceEncodingDirection", "k"))
    axes = {"i": 0, "j": 1, "k": 2, "x": 0, "y": 1, "z": 2}  # x/y/z: seen in older converters' sidecars
    if direction[:1] not in axes:
        raise InputError(f"{name}: SliceEncodingDirection {direction!r} is not one of i, j, k (optionally "
                         "followed by -); fix the sidecar")
    axis = axes[direction[0]]
    slice_times = list(slice_times)
    if direction.endswith("-"):
        slice_times = slice_times[::-1]
    if len(slice_times) != data.shape[axis]:
        raise InputError(f"{name}: SliceTiming has {len(slice_times)} entries but the image has "
                         f"{data.shape[axis]} slices along {direction}; fix the sidecar")
    if max(slice_times) >= t_r:
        raise InputError(f"{name}: SliceTiming values must be below RepetitionTime ({t_r} s); fix the sidecar")
    if isinstance(data, BoldVolumes):
        return slice_timing_to_file(data, slice_times, t_r, axis, scratch), True
    return pc.slice_timing_correct(data, slice_times, t_r, slice_axis=axis), True


def _raw_bids_uri(path) -> str:
    """``bids:raw:sub-XX/.../file`` (relative to the BIDS root), never an absolute path."""
    parts = Path(path).parts
    starts = [i for i, p in enumerate(parts) if p.startswith("sub-")]
    return "bids:raw:" + ("/".join(parts[starts[0]:]) if starts else Path(path).name)


def _sidecar_path(path) -> Path:
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def _confounds_sidecar(params: dict, n_dummy: int, n_wm: int, n_csf: int) -> dict:
    return {
        "Description": "Confounds of the built-in antspyx preprocessing (fMRIPrep column names).",
        "NumberOfVolumesDiscardedByTmstarget": n_dummy,
        "trans_x": {"Units": "mm", "Description": "rigid head motion relative to the BOLD reference, world RAS, "
                    "about the BOLD grid centre: x' = R (x - c) + c + t maps a reference head point to its "
                    "position in the volume (tmstarget.preproc.realign; not mcflirt's FSL-frame convention)"},
        "rot_x": {"Units": "rad", "Description": "rotations about x, y, z (R = Rz Ry Rx)"},
        "framewise_displacement": {"Units": "mm", "Method": "Power 2012",
                                   "HeadRadius_mm": params["fd_head_radius_mm"]},
        "dvars": {"Description": "RMS of the temporal difference over brain voxels (native grid)"},
        "a_comp_cor": {"Method": "aCompCor on the combined WM+CSF mask, cosine high-pass 1/128 Hz",
                       "WMVoxels": n_wm, "CSFVoxels": n_csf, "NComponents": params["n_acompcor"]},
    }


# ----------------------------------------------------------------------------- fMRIPrep T1w-space BOLD


def template_grid(voxel_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of a grid over nilearn's MNI 2 mm box with voxels of ``voxel_mm``
    (the 2 mm template grid itself when ``voxel_mm`` <= 2.5)."""
    tpl = load_template(2)["t1"]
    if voxel_mm <= 2.5:
        return tuple(tpl.shape[:3]), tpl.affine.copy()
    v = float(voxel_mm)
    shape = tuple(int(np.ceil(n * 2.0 / v)) for n in tpl.shape[:3])
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = tpl.affine[:3, 3]
    return shape, affine


def resample_t1w_bold_to_template(t1w_bold, t1w_mask, xfm_t1w_to_mni, out_bold, out_mask, space: str,
                                  t_r: float | None = None) -> dict:
    """fMRIPrep's ``space-T1w`` BOLD resampled (trilinear) into the template space of the transform.

    ``xfm_t1w_to_mni`` is fMRIPrep's ``from-T1w_to-<template>_mode-image_xfm.h5``: it resamples T1w
    images into the template, i.e. ANTs maps each template point to its T1w point. The map is composed
    once on the output grid (2 mm, or the BOLD's voxel size if coarser) and every volume is sampled
    with it and streamed to disk. This is a second interpolation after fMRIPrep's own, noted in the
    sidecar; asking fMRIPrep for ``--output-spaces MNI152NLin2009cAsym:res-2`` avoids it.
    """
    from tmstarget.io.nifti import load_masked_bold, open_bold_4d, read_t_r

    img = open_bold_4d(t1w_bold)
    t_r = read_t_r(t1w_bold, t_r)
    mask_img = nib.load(str(t1w_mask))
    if tuple(mask_img.shape[:3]) != tuple(img.shape[:3]):
        raise InputError(f"{Path(t1w_mask).name}: its grid {mask_img.shape[:3]} differs from the BOLD's "
                         f"{img.shape[:3]}; use the brain mask fMRIPrep wrote beside this run")
    mask = np.asarray(mask_img.dataobj) > 0
    read_mask = ndimage.binary_dilation(mask, iterations=2)  # so trilinear edges see real values
    data_tv = load_masked_bold(img, read_mask)
    voxel_mm = float(np.mean(np.linalg.norm(img.affine[:3, :3], axis=0)))
    shape, affine = template_grid(voxel_mm)
    grid = nifti_to_ants(np.zeros(shape, np.float32), affine)
    points_lps = grid_points_through_transforms_lps(grid, [xfm_t1w_to_mni]).reshape(-1, 3)
    ijk_bold = world_to_voxel_indices(points_lps, np.eye(4), img.affine)
    inside = sample_volume(mask.astype(np.float32), ijk_bold) > 0.5
    idx = np.flatnonzero(inside)
    ijk_in = ijk_bold[:, idx]
    save_img(nifti_img(inside.reshape(shape), affine, dtype=np.uint8), out_mask)
    volume = np.zeros(img.shape[:3], np.float32)

    def volumes():
        for t in range(data_tv.shape[0]):
            volume[read_mask] = data_tv[t]
            out = np.zeros(inside.size, np.float32)
            out[idx] = sample_volume(volume, ijk_in)
            yield out.reshape(shape)

    write_nifti_streamed(out_bold, shape, affine, t_r, volumes(), data_tv.shape[0])
    write_json({"RepetitionTime": t_r, "SkullStripped": False, "TemplateSpace": space,
                "Resolution": f"{np.linalg.norm(affine[:3, 0]):g} mm",
                "Sources": [Path(t1w_bold).name, Path(xfm_t1w_to_mni).name],
                "Description": "fMRIPrep space-T1w BOLD resampled (trilinear) into the template by tmstarget: "
                               "a second interpolation after fMRIPrep's"}, _sidecar_path(out_bold))
    log.info("%s -> %s: %d volumes, %d brain voxels", Path(t1w_bold).name, space, data_tv.shape[0], idx.size)
    return {"volumes": int(data_tv.shape[0]), "brain_voxels": int(idx.size), "shape": list(shape)}
