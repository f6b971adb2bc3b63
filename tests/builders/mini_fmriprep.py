"""A small but complete fMRIPrep output tree on which the whole downstream workflow runs in seconds.

Unlike ``builders.bids.make_fmriprep_tree`` (names only, for input discovery), the images here are
real enough for every step: a head-shaped T1w with scalp (the demo's synthetic MNI head, 2 mm)
placed in a "native" world shifted by a known translation, real antspyx ``.h5`` transforms for
that translation, and a 4 mm MNI BOLD with an sgACC signal planted anticorrelated with a left-BA46
site, plus a confounds table with fMRIPrep's column names.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from builders.nifti import save_nifti

SPACE = "MNI152NLin2009cAsym"
#: T1w world = MNI world + this (RAS mm): the known T1w<->MNI map of the tree.
NATIVE_SHIFT_RAS_MM = np.array([4.0, -6.0, 3.0])
PLANTED_TARGET_MNI_RAS_MM = np.array([-42.0, 40.0, 28.0])
SEED_MNI_RAS_MM = np.array([6.0, 16.0, -10.0])
BOLD_VOXEL_MM = 4.0
T_R = 2.0


def write_translation_h5(path: Path, shift_ras_mm: np.ndarray) -> None:
    """ITK transform (LPS) for resampling: maps fixed-space points p to p + shift (given in RAS)."""
    import ants

    shift_lps = np.asarray(shift_ras_mm, float) * [-1, -1, 1]
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    translation=tuple(float(v) for v in shift_lps))
    path.parent.mkdir(parents=True, exist_ok=True)
    ants.write_transform(tx, str(path))


def make_mini_fmriprep(root: Path, sub: str = "01", n_volumes: int = 160, seed: int = 0) -> Path:
    """Write ``root/sub-XX`` in fMRIPrep's layout; returns ``root``."""
    from tmstarget.demo.phantom import build_mni_head_model

    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]}))
    head = build_mni_head_model()
    anat, func = root / f"sub-{sub}" / "anat", root / f"sub-{sub}" / "func"
    # --- T1w (2 mm) in the shifted native world; identical voxels, affine moved by the shift
    t1w_affine = head.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    t1w_affine[:3, 3] += NATIVE_SHIFT_RAS_MM
    t1w = np.clip(head.t1w[::2, ::2, ::2] * 1000, 0, None).astype(np.float32)
    save_nifti(nib.Nifti1Image(t1w, t1w_affine), anat / f"sub-{sub}_desc-preproc_T1w.nii.gz")
    save_nifti(nib.Nifti1Image(head.brain[::2, ::2, ::2].astype(np.uint8), t1w_affine),
          anat / f"sub-{sub}_desc-brain_mask.nii.gz")
    for label, prob in (("GM", head.gm), ("WM", head.wm), ("CSF", head.csf)):
        save_nifti(nib.Nifti1Image(prob[::2, ::2, ::2].astype(np.float32), t1w_affine),
              anat / f"sub-{sub}_label-{label}_probseg.nii.gz")
    # image-mode transforms: from-T1w_to-MNI resamples T1w into MNI, so it maps MNI points to T1w points
    write_translation_h5(anat / f"sub-{sub}_from-T1w_to-{SPACE}_mode-image_xfm.h5", NATIVE_SHIFT_RAS_MM)
    write_translation_h5(anat / f"sub-{sub}_from-{SPACE}_to-T1w_mode-image_xfm.h5", -NATIVE_SHIFT_RAS_MM)
    # --- BOLD on a 4 mm MNI grid around the brain
    shape = (40, 50, 40)
    affine = np.diag([BOLD_VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = [-78.0, -114.0, -70.0]
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    xyz = nib.affines.apply_affine(affine, ijk)
    brain = head.sample("brain", xyz, order=0).reshape(shape) > 0.5
    gm = head.sample("gm", xyz).reshape(shape)
    n = int(n_volumes)
    t = np.arange(n) * T_R
    noise = rng.normal(size=(n,) + shape).astype(np.float32)
    noise = ndi.gaussian_filter(noise, sigma=(0, 0.8, 0.8, 0.8))
    noise /= noise.std()
    planted = rng.normal(size=n)
    planted = ndi.gaussian_filter1d(planted, 2.0)
    planted /= planted.std()
    d_seed = np.linalg.norm(xyz - SEED_MNI_RAS_MM, axis=1).reshape(shape)
    d_target = np.linalg.norm(xyz - PLANTED_TARGET_MNI_RAS_MM, axis=1).reshape(shape)
    w_seed = np.exp(-0.5 * (d_seed / 6.0) ** 2) * brain
    w_target = np.exp(-0.5 * (d_target / 6.0) ** 2) * brain
    drift = (t / t[-1])[:, None, None, None]
    data = (noise + 1.5 * planted[:, None, None, None] * (w_seed - w_target)[None]
            + 0.5 * drift)  # (T, X, Y, Z)
    baseline = (600.0 + 400.0 * gm) * brain + 20.0 * ~brain
    bold = (baseline[None] * (1.0 + 0.01 * data)).astype(np.float32)
    bold = np.moveaxis(bold, 0, -1)
    stem = f"sub-{sub}_task-rest"
    spaced = f"{stem}_space-{SPACE}_res-2"
    img = nib.Nifti1Image(bold, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((BOLD_VOXEL_MM,) * 3 + (T_R,))
    save_nifti(img, func / f"{spaced}_desc-preproc_bold.nii.gz")
    (func / f"{spaced}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": T_R, "SkullStripped": False}))
    save_nifti(nib.Nifti1Image(brain.astype(np.uint8), affine), func / f"{spaced}_desc-brain_mask.nii.gz")
    save_nifti(nib.Nifti1Image(bold.mean(axis=3), affine), func / f"{spaced}_boldref.nii.gz")
    write_confounds(func / f"{stem}_desc-confounds_timeseries.tsv", bold, brain, head, xyz, rng)
    return root


def write_confounds(path: Path, bold: np.ndarray, brain: np.ndarray, head, xyz: np.ndarray,
                    rng: np.random.Generator, fd_mm: float | None = None) -> Path:
    """fMRIPrep-named confounds: motion (+ derivatives, squares), FD, global/WM/CSF, 5 aCompCor."""
    import pandas as pd

    n = bold.shape[3]
    shape = bold.shape[:3]
    wm = head.sample("wm", xyz).reshape(shape) > 0.8
    csf = head.sample("csf", xyz).reshape(shape) > 0.5
    cols = {}
    motion = np.cumsum(rng.normal(0, 0.02, size=(n, 6)), axis=0)
    for k, name in enumerate(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")):
        cols[name] = motion[:, k] * (0.01 if name.startswith("rot") else 1.0)
    fd = np.abs(np.diff(motion, axis=0)).sum(axis=1) if fd_mm is None else np.full(n - 1, fd_mm)
    cols["framewise_displacement"] = np.concatenate([[np.nan], fd])
    cols["global_signal"] = bold[brain].mean(axis=0)
    cols["white_matter"] = bold[wm | brain & (bold.mean(axis=3) > np.percentile(bold[brain].mean(axis=1), 90))].mean(axis=0)
    cols["csf"] = bold[csf & brain].mean(axis=0) if (csf & brain).any() else bold[brain].mean(axis=0)
    noise = bold[wm & brain] if (wm & brain).sum() > 10 else bold[brain]
    noise = noise - noise.mean(axis=1, keepdims=True)
    u, _, _ = np.linalg.svd(noise.T, full_matrices=False)
    for k in range(5):
        cols[f"a_comp_cor_{k:02d}"] = u[:, k]
    pd.DataFrame(cols).to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return path
