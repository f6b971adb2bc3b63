"""BOLD preprocessing with antspyx: one raw run in, fMRIPrep-named MNI 2 mm outputs and confounds out.

:func:`preprocess_bold`: non-steady-state volumes dropped (``dummy_scans``), optional slice-timing
correction, rigid motion correction of every volume to a median reference
(:mod:`tmstarget.preproc.realign`: least squares on intensity differences in world coordinates),
rigid BOLD reference -> T1w registration (mutual information inside the T1w brain), confounds in
the native BOLD grid, and ONE resampling of every raw volume to the MNI 2 mm grid: the
MNI -> T1w -> BOLD-reference mapping is composed once into a displacement field, each volume's
rigid motion is applied to those points analytically, and the raw volume is sampled there, so no
volume is interpolated twice (:mod:`tmstarget.preproc.resample`). The 4D output is streamed to disk
in chunks of ``chunk_volumes``; all outputs carry qform = sform (code 1).

Susceptibility distortion correction (issue 25) when the plan found field maps
(:mod:`tmstarget.bids.fieldmaps`): the voxel shift along the phase-encoding axis
(:mod:`tmstarget.preproc.fieldmap`) unwarps the BOLD reference before coregistration (so BOLD->T1w
is fitted on the corrected reference) and is added to the sampling indices of every volume (MNI
output, tissue series of the confounds): still one interpolation per volume. Without field maps the
code path and images are those of the uncorrected pipeline; the sidecar says "not corrected".
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import ants
import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path, save_img, write_json
from tmstarget.io.nifti import load_img_checked
from tmstarget.preproc import confounds as pc
from tmstarget.preproc import fieldmap as pfm
from tmstarget.preproc import realign
from tmstarget.preproc.headers import RAS_TO_LPS, ants_affine_ras, nifti_to_ants
from tmstarget.io.nifti import choose_affine, is_oblique, nifti_img
from tmstarget.preproc.params import resolve_params
from tmstarget.preproc.registration import make_ants_repeatable
from tmstarget.preproc.resample import (mni_to_boldref_points_lps, sample_volume, sidecar_path, world_to_voxel_indices,
                                        write_nifti_streamed)
from tmstarget.preproc.similarity import image_correlation
from tmstarget.preproc.stream import (BoldVolumes, DiskTimeVoxels, scratch_dir, scratch_file, slice_timing_to_file,
                                      uncompressed_copy, voxels_per_block)
from tmstarget.preproc.templates import TEMPLATE_SPACE, load_template, to_ants

log = logging.getLogger(__name__)


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


def preprocess_bold(bold_path, metadata: dict, anat: dict, out_paths: dict, params: dict,
                    fieldmap: dict | None = None) -> dict:
    """Preprocess one resting-state run into MNI152NLin2009aSym 2 mm with fMRIPrep naming.

    Parameters
    ----------
    bold_path : path-like
        Raw 4D BOLD NIfTI.
    metadata : dict
        BIDS sidecar (``RepetitionTime`` required; ``SliceTiming``, ``SliceEncodingDirection`` used
        when ``slice_timing`` is on).
    anat : dict
        Outputs of :func:`tmstarget.preproc.anat.preprocess_anat` (keys as its ``out_paths``).
    out_paths : dict
        ``bold_mni`` (+ .json sidecar beside it), ``mask_mni``, ``boldref_mni``, ``boldref_t1w``,
        ``confounds`` (.tsv, + .json beside it), ``xfm_bold_to_t1w`` (ITK text).
    params : dict
        See the ``preprocessing`` section of config/config.yaml.
    fieldmap : dict or None
        The run's planned field map (:func:`tmstarget.bids.fieldmaps.find_fieldmap`), None: not corrected.

    Returns
    -------
    dict
        QC numbers: ``dummy_volumes``, ``volumes``, ``t_r``, ``mean_fd_mm``, ``max_fd_mm``,
        ``coreg_correlation``, ``header_warnings``, ``distortion_correction`` (as in the sidecar's
        ``SusceptibilityDistortionCorrection``), ``seconds`` per step.
    """
    params = resolve_params(params)
    make_ants_repeatable()
    with scratch_dir(out_paths["bold_mni"]) as scratch:
        return _preprocess_bold(bold_path, metadata, anat, out_paths, params, scratch, fieldmap)


def _preprocess_bold(bold_path, metadata, anat, out_paths, params, scratch: Path, fieldmap=None) -> dict:
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
    # --- susceptibility distortion: the shift along PE, the reference unwarped before coregistration
    t0 = time.time()
    sdc, sdc_info = _distortion_shift(fieldmap, boldref_native, affine, bold_path, params)
    boldref_distorted = boldref_native
    if sdc is not None:
        boldref_native = pfm.unwarp_volume(boldref_native, sdc["shift_vox"], sdc["pe_axis"])
        seconds["distortion"] = time.time() - t0
    # --- coregistration
    t0 = time.time()
    boldref = nifti_to_ants(boldref_native, affine)
    t1w = to_ants(nib.load(anat["preproc_t1w"]))
    t1w_mask = to_ants(nib.load(anat["brain_mask"]))
    coreg = coregister_bold_to_t1w(boldref, t1w * t1w_mask, t1w_mask, out_paths["xfm_bold_to_t1w"],
                                   init=params["registration_init"])
    boldref_t1w = ants.apply_transforms(fixed=t1w, moving=boldref, transformlist=[coreg["transform"]])
    save_img(nifti_img(boldref_t1w.numpy(), ants_affine_ras(t1w)), out_paths["boldref_t1w"])
    if sdc is not None:  # the report's before/after figure: the distorted reference through the same transform
        before = ants.apply_transforms(fixed=t1w, moving=nifti_to_ants(boldref_distorted, affine),
                                       transformlist=[coreg["transform"]])
        save_img(nifti_img(before.numpy(), ants_affine_ras(t1w)),
                 uncorrected_boldref_t1w_path(out_paths["boldref_t1w"]))
        sdc_info["WhiteMatterBoundaryFraction"] = boundary_fractions_before_after(
            uncorrected_boldref_t1w_path(out_paths["boldref_t1w"]), out_paths["boldref_t1w"], anat)
    seconds["coregistration"] = time.time() - t0
    # --- confounds in the native grid (motion-corrected brain, WM and CSF voxels only, via a scratch file)
    t0 = time.time()
    brain_native = _to_bold_grid(t1w_mask, boldref, coreg["transform_mat"]) > 0.5
    wm_native = _tissue_mask(_to_bold_grid(to_ants(nib.load(anat["wm_probseg"])), boldref, coreg["transform_mat"]))
    csf_native = _tissue_mask(_to_bold_grid(to_ants(nib.load(anat["csf_probseg"])), boldref, coreg["transform_mat"]))
    fd = pc.framewise_displacement(motion, params["fd_head_radius_mm"])
    series = native_tissue_series(data, affine, transforms_ras, brain_native, wm_native, csf_native,
                                  scratch_file(scratch, "tissue_series"), sdc)
    dvars_t, std_dvars_t = pc.dvars(series["brain_tv"], chunk_voxels=voxels_per_block(n_t))
    table = pc.confounds_table(motion, fd, dvars_t, std_dvars_t, series["global_signal"],
                               series["white_matter"], series["csf"],
                               pc.acompcor(series["noise_tv"], int(params["n_acompcor"]), t_r,
                                           chunk_voxels=voxels_per_block(n_t)))
    Path(series["path"]).unlink(missing_ok=True)
    with atomic_path(out_paths["confounds"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    write_json(_confounds_sidecar(params, n_dummy, int(wm_native.sum()), int(csf_native.sum())),
               sidecar_path(out_paths["confounds"]))
    seconds["confounds"] = time.time() - t0
    # --- one resampling to MNI
    t0 = time.time()
    mni = load_template(2)
    mni_ref = to_ants(mni["t1"])
    points_lps = mni_to_boldref_points_lps(mni_ref, boldref, anat["xfm_t1w_to_mni"], coreg["transform"])
    shape_mni = mni_ref.shape
    flat_points = points_lps.reshape(-1, 3)
    del points_lps
    ijk_ref = world_to_voxel_indices(flat_points, np.eye(4), affine)
    in_fov = np.all((ijk_ref > -0.5) & (ijk_ref < np.asarray(data.shape[:3])[:, None] - 0.5), axis=0)
    idx = np.flatnonzero(in_fov)
    # the shift of each MNI point, read once at its reference position (the field moves with the head)
    shift_pts = None if sdc is None else sample_volume(sdc["shift_vox"].astype(np.float32), ijk_ref[:, idx])
    pe_axis = None if sdc is None else sdc["pe_axis"]
    boldref_mni = np.zeros(flat_points.shape[0], np.float32)
    boldref_mni[idx] = sample_volume(boldref_distorted,
                                     pfm.sampling_indices_with_shift(ijk_ref[:, idx], shift_pts, pe_axis))
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
                ijk = world_to_voxel_indices(pts, transform_lps, affine)
                vol[idx] = sample_volume(data[..., t], pfm.sampling_indices_with_shift(ijk, shift_pts, pe_axis))
                block.append(vol.reshape(shape_mni, order="C"))
            yield from block

    write_nifti_streamed(out_paths["bold_mni"], shape_mni, mni["t1"].affine, t_r, volumes(), n_t)
    seconds["resample_mni"] = time.time() - t0
    qc = {"bold": Path(bold_path).name, "volumes_total": n_total, "dummy_volumes": n_dummy, "volumes": int(n_t),
          "t_r": t_r, "mean_fd_mm": float(np.nanmean(fd)), "max_fd_mm": float(np.nanmax(fd)) if len(fd) > 1 else 0.0,
          "coreg_correlation": coreg["correlation"], "slice_timing_corrected": stc_applied,
          "header_warnings": warnings, "distortion_correction": sdc_info, "seconds": seconds}
    write_json({"RepetitionTime": t_r, "SkullStripped": False, "SliceTimingCorrected": stc_applied,
                "NumberOfVolumesDiscardedByTmstarget": n_dummy, "VolumesInRawRun": n_total,
                "TemplateSpace": TEMPLATE_SPACE, "Resolution": "2 mm (nilearn MNI152 2 mm grid)",
                "Sources": [_raw_bids_uri(bold_path)] + list(sdc_info.get("Sources", [])),
                "HeaderWarnings": warnings, "SusceptibilityDistortionCorrection": sdc_info},
               sidecar_path(out_paths["bold_mni"]))
    log.info("BOLD done in %.0f s: mean FD %.3f mm", time.time() - t_start, qc["mean_fd_mm"])
    return qc


def native_grid_points_lps(shape, affine_ras: np.ndarray) -> np.ndarray:
    """LPS mm of every voxel centre of a grid (N, 3), C order."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return ((RAS_TO_LPS @ affine_ras)[:3, :3] @ ijk + (RAS_TO_LPS @ affine_ras)[:3, 3:4]).T


def motion_corrected_mean(data_xyzt, affine_ras: np.ndarray, transforms_ras: np.ndarray) -> np.ndarray:
    """Mean (float32, X Y Z) of the volumes resampled onto the reference grid, one volume at a time.

    ``data_xyzt``: any run whose ``[..., t]`` is a volume (array, :class:`BoldVolumes`)."""
    shape = data_xyzt.shape[:3]
    points_lps = native_grid_points_lps(shape, affine_ras)
    total = np.zeros(int(np.prod(shape)), np.float64)
    for t in range(data_xyzt.shape[3]):
        transform_lps = RAS_TO_LPS @ transforms_ras[t] @ RAS_TO_LPS
        total += sample_volume(np.asarray(data_xyzt[..., t], np.float32),
                               world_to_voxel_indices(points_lps, transform_lps, affine_ras))
    return (total / data_xyzt.shape[3]).astype(np.float32).reshape(shape)


def native_tissue_series(data_xyzt, affine_ras: np.ndarray, transforms_ras: np.ndarray, brain: np.ndarray,
                         wm: np.ndarray, csf: np.ndarray, path: Path, sdc: dict | None = None) -> dict:
    """Motion-corrected time series of the brain, WM and CSF voxels of the reference grid, written to
    ``path`` one volume at a time (only those voxels are resampled).

    ``sdc`` (``shift_vox`` on the reference grid, ``pe_axis``): the distortion shift added to each
    voxel's sampling index (None: uncorrected).

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
    points_lps = native_grid_points_lps(brain.shape, affine_ras)[flat]
    shift = None if sdc is None else np.asarray(sdc["shift_vox"], np.float64).ravel()[flat]
    pe_axis = None if sdc is None else sdc["pe_axis"]
    n_t = data_xyzt.shape[3]
    store = DiskTimeVoxels.create(path, n_t, flat.size)
    means = {k: np.zeros(n_t) for k in ("global_signal", "white_matter", "csf")}
    for t in range(n_t):
        transform_lps = RAS_TO_LPS @ transforms_ras[t] @ RAS_TO_LPS
        ijk = pfm.sampling_indices_with_shift(world_to_voxel_indices(points_lps, transform_lps, affine_ras),
                                              shift, pe_axis)
        values = sample_volume(np.asarray(data_xyzt[..., t], np.float32), ijk)
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


def boundary_fractions_before_after(uncorrected_boldref_t1w, boldref_t1w, anat: dict) -> dict:
    """The registration check of :mod:`tmstarget.preproc.registration_qc` (BOLD-T1w white-matter boundary
    fraction: near 1 aligned, near 0.5 unrelated) on the uncorrected and the corrected BOLD reference, both
    through the one BOLD->T1w transform fitted on the corrected reference: ``{"Uncorrected", "Corrected"}``
    (None where the check cannot be made)."""
    from tmstarget.preproc.registration_qc import wm_boundary_fraction

    return {name: wm_boundary_fraction(path, anat["wm_probseg"], anat["brain_mask"])
            for name, path in (("Uncorrected", uncorrected_boldref_t1w), ("Corrected", boldref_t1w))}


def uncorrected_boldref_t1w_path(boldref_t1w) -> Path:
    """``*_space-T1w_desc-uncorrected_boldref.nii.gz`` beside ``*_space-T1w_boldref.nii.gz``: written only
    for a corrected run (not a declared output; the report shows it when present)."""
    path = Path(boldref_t1w)
    return path.with_name(path.name.replace("_space-T1w_boldref", "_space-T1w_desc-uncorrected_boldref"))


def _distortion_shift(fieldmap: dict | None, boldref_native: np.ndarray, affine: np.ndarray, bold_path,
                      params: dict) -> tuple[dict | None, dict]:
    """The run's distortion shift (``shift_vox``, ``pe_axis``) or None, and the sidecar/QC description.

    Field maps that cannot be used (an unsupported kind, a field map that misses the BOLD's field of
    view, a shift beyond a third of the PE axis) leave the run uncorrected with a ``Finding``."""
    name = Path(bold_path).name
    if fieldmap is None:
        reason = ("preprocessing.distortion_correction is none" if params["distortion_correction"] == "none"
                  else "no field maps for this run in fmap/")
        return None, {"Applied": False, "Description": f"not corrected ({reason})"}
    info = {"Applied": False, "FieldMapKind": fieldmap["kind"], "MatchedBy": fieldmap.get("matched_by"),
            "Sources": list(fieldmap.get("sources", []))}
    if fieldmap["kind"] == "unsupported":
        log.warning(fieldmap["finding"])
        return None, {**info, "Description": "not corrected", "Finding": fieldmap["finding"]}
    est = pfm.estimate_shift_vox(fieldmap, boldref_native, affine)
    shift_mm = pfm.shift_mm_from_vox(est["shift_vox"], affine, est["pe_axis"])
    head = boldref_native > np.percentile(boldref_native, 98) / 8
    n_pe = boldref_native.shape[est["pe_axis"]]
    if not np.isfinite(est["shift_vox"]).all() or np.abs(est["shift_vox"][head]).max() > n_pe / 3:
        finding = (f"{name}: field maps found but not used: the estimated shift ({np.nanmax(np.abs(shift_mm)):.0f} mm) "
                   "is implausible (check the field map's units, echo times and that it covers the BOLD)")
        log.warning(finding)
        return None, {**info, "Description": "not corrected", "Finding": finding}
    info.update(Applied=True, Description=f"susceptibility distortion corrected: {est['method']}",
                PhaseEncodingDirection=fieldmap["pe_direction"], TotalReadoutTime=fieldmap["total_readout_time_s"],
                MedianAbsShiftInHead_mm=float(np.median(np.abs(shift_mm[head]))),
                MaxAbsShiftInHead_mm=float(np.abs(shift_mm[head]).max()))
    log.info("%s: %s; shift in the head median %.2f mm, max %.2f mm", name, info["Description"],
             info["MedianAbsShiftInHead_mm"], info["MaxAbsShiftInHead_mm"])
    return est, info


def _raw_bids_uri(path) -> str:
    """``bids:raw:sub-XX/.../file`` (relative to the BIDS root), never an absolute path."""
    parts = Path(path).parts
    starts = [i for i, p in enumerate(parts) if p.startswith("sub-")]
    return "bids:raw:" + ("/".join(parts[starts[0]:]) if starts else Path(path).name)


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

