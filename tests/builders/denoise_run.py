"""One run in fMRIPrep layout with fMRIPrep's full confounds table (denoising and reliability tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tmstarget.denoise.confounds import MOTION_BASE

from builders.nifti import write_nifti

MOTION = list(MOTION_BASE)


def make_run(root: Path, name="sub-01_task-rest", n_vols=160, t_r=2.0, shape=(7, 6, 5), seed=0,
             fd_spikes=(), n_dummy=2, voxel_mm=(3.0, 3.0, 3.0), mask_fn=None, sidecar=True,
             n_acompcor=6, mean=1000.0, noise_sd=10.0):
    """A run in fMRIPrep layout: 4D float32 BOLD, brain mask, confounds TSV (+ BOLD JSON sidecar).

    The data are white noise plus a linear drift plus a mix of the confound time series, so the
    regression and filtering have something to remove.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    n_vox = int(np.prod(shape))
    motion = np.cumsum(rng.normal(0, 0.02, (n_vols, 6)), axis=0)
    fd = np.r_[np.nan, np.abs(np.diff(motion, axis=0)).sum(axis=1) * 5]
    fd = np.minimum(fd, 0.45)
    for i in fd_spikes:
        fd[i] = 0.9
    gs = rng.normal(0, 1, n_vols)
    wm = rng.normal(0, 1, n_vols)
    csf = rng.normal(0, 1, n_vols)
    comps = rng.normal(0, 1, (n_vols, n_acompcor))
    cols = {}
    for j, m in enumerate(MOTION):
        x = motion[:, j]
        d = np.r_[np.nan, np.diff(x)]
        cols[m] = x
        cols[f"{m}_derivative1"] = d
        cols[f"{m}_power2"] = x ** 2
        cols[f"{m}_derivative1_power2"] = d ** 2
    for key, x in (("global_signal", gs), ("white_matter", wm), ("csf", csf)):
        cols[key] = x
        cols[f"{key}_derivative1"] = np.r_[np.nan, np.diff(x)]
    for j in range(n_acompcor):
        cols[f"a_comp_cor_{j:02d}"] = comps[:, j]
    cols["framewise_displacement"] = fd
    for j in range(n_dummy):
        col = np.zeros(n_vols)
        col[j] = 1
        cols[f"non_steady_state_outlier{j:02d}"] = col
    df = pd.DataFrame(cols)
    conf_path = root / f"{name}_desc-confounds_timeseries.tsv"
    df.to_csv(conf_path, sep="\t", index=False, na_rep="n/a")

    mix = rng.normal(0, 3, (4, n_vox))
    drift = np.linspace(-1, 1, n_vols)[:, None] * rng.normal(0, 20, n_vox)
    data_tv = (mean + rng.normal(0, noise_sd, (n_vols, n_vox)) + drift
               + np.column_stack([gs, wm, motion[:, 0] * 50, comps[:, 0]]) @ mix)
    data_tv[:n_dummy] += 300.0   # bright non-steady-state volumes
    bold = data_tv.T.reshape(shape + (n_vols,)).astype(np.float32)
    affine = np.diag(list(voxel_mm) + [1.0])
    affine[:3, 3] = -np.asarray(shape) * np.asarray(voxel_mm) / 2
    bold_path = write_nifti(root / f"{name}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz", bold, affine,
                            tr=t_r, codes=None)
    if sidecar:
        (root / f"{name}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": t_r}))
    mask = np.ones(shape, np.uint8) if mask_fn is None else mask_fn(shape).astype(np.uint8)
    mask_path = write_nifti(root / f"{name}_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz", mask, affine,
                            dtype=None, codes=None)
    return {"bold": str(bold_path), "mask": str(mask_path), "confounds": str(conf_path)}
