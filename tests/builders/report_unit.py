"""One unit's report inputs on a coarse 6 mm MNI grid, following the file contracts of
docs/architecture.md exactly (target JSON, T1w target JSON, denoising QC JSON, seed sidecar, denoised
npz, verdict), with secrets in paths and headers that must never reach a report."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from tmstarget.qc.verdict import assess, run_verdict

from builders.nifti import centres_ras_mm

SECRET_DIR = "SECRETSITE_Hospital"          # part of the absolute dataset path: must never reach a report
SECRET_DESCRIP = "PATIENT^DOE^JOHN"         # NIfTI header text: must never reach a report
HOSTILE = "<script>alert('x')</script>"     # input text that must be escaped

MNI_AFFINE = np.array([[6.0, 0, 0, -78], [0, 6, 0, -114], [0, 0, 6, -66], [0, 0, 0, 1]])
MNI_SHAPE = (27, 32, 27)
T1W_AFFINE = np.array([[4.0, 0, 0, -70], [0, 4, 0, -90], [0, 0, 4, -60], [0, 0, 0, 1]])
T1W_SHAPE = (36, 50, 40)
TARGET_MNI = [-42.0, 42.0, 30.0]
TARGET_T1W = [-40.5, 47.25, 35.0]
SEED_MNI = [6.0, 16.0, -10.0]
T_R = 2.0


def save_private_nifti(path: Path, data, affine, descrip: str = SECRET_DESCRIP) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.header["descrip"] = descrip.encode()
    img.header["db_name"] = b"SECRETDB"
    img.header["aux_file"] = b"SECRETAUX"
    img.header.set_intent("none", name="SECRETINTENT")
    img.set_qform(affine, 1)
    img.set_sform(affine, 1)
    nib.save(img, path)
    return path


def ball(shape, affine, centre, radius_mm) -> np.ndarray:
    return np.linalg.norm(centres_ras_mm(shape, affine) - np.asarray(centre), axis=-1) <= radius_mm


def ellipsoid_brain(shape, affine) -> np.ndarray:
    xyz = centres_ras_mm(shape, affine)
    return ((xyz[..., 0] / 70) ** 2 + ((xyz[..., 1] + 18) / 95) ** 2 + ((xyz[..., 2] - 10) / 75) ** 2) <= 1


def head_t1(shape, affine) -> np.ndarray:
    """Bright brain with dark ventricles inside a dimmer scalp shell (a crude T1w)."""
    xyz = centres_ras_mm(shape, affine)
    r = ((xyz[..., 0] / 70) ** 2 + ((xyz[..., 1] + 18) / 95) ** 2 + ((xyz[..., 2] - 10) / 75) ** 2)
    img = np.where(r <= 1, 100.0, 0.0) + np.where((r > 1.1) & (r <= 1.35), 60.0, 0.0)
    vent = (np.abs(xyz[..., 0]) > 3) & (np.abs(xyz[..., 0]) < 15) & (np.abs(xyz[..., 1] + 10) < 20) & (np.abs(xyz[..., 2] - 12) < 8)
    return np.where(vent, 25.0, img).astype(np.float32)


def target_markers(**overrides) -> dict:
    """A ``*_desc-target_markers.json`` as in docs/architecture.md."""
    rng = np.random.default_rng(3)
    boots = (np.asarray(TARGET_MNI) + rng.normal(0, 2.5, (50, 3))).round(1).tolist()
    boots[7] = None                                   # a failed resample, allowed by the contract
    t = {
        "TemplateSpace": "MNI152NLin2009aSym",
        "target_mni_ras_mm": TARGET_MNI,
        "target_ijk": [6, 26, 16],
        "method": "cluster", "method_parameters": {"rule": "cluster", "percentile": 10.0},
        "r_at_target": -0.41, "z_at_target": -0.44,
        "cluster_size_voxels": 57,
        "in_ba46": True, "in_search_mask": True,
        "seed": {"type": "sphere", "center_mni_ras_mm": SEED_MNI, "radius_mm": 10, "label": HOSTILE},
        "search_region": {"type": "ba46"},
        "uncertainty": {"method": "block-bootstrap", "n": 50, "block_length_s": 60,
                        "targets_mni_ras_mm": boots, "median_distance_mm": 3.1, "p95_distance_mm": 7.9,
                        "split_half_targets_mni_ras_mm": [[-44.0, 40.0, 28.0], [-40.0, 45.0, 31.0]],
                        "split_half_distance_mm": 4.2, "confident": True},
        "gsr_comparison": {"strategy": "acompcor", "target_mni_ras_mm": [-38.0, 46.0, 27.0], "shift_mm": 6.4},
        "literature_distances_mm": {"BA46 site": 2.4, "BA9 site": 14.2, "5-cm rule site": 41.9,
                                    "Beam F3 site": 26.0, "Fox 2012 optimized target (unverified)": 5.7},
        "denoising": {"strategy": "fox", "volumes_total": 80, "volumes_kept": 76, "minutes_kept": 12.5},
        "warnings": [f"note from {HOSTILE} at /data/{SECRET_DIR}/bids/sub-01/func/x.nii.gz"],
        "Sources": ["bids:preproc:sub-01/func/sub-01_task-rest_bold.nii.gz"],
        "software": {"tmstarget": "0.1.0", "nilearn": "0.14.1"},
    }
    t.update(overrides)
    return t


ENTRY_T1W = [-58.0, 52.0, 52.0]


def inward_normal() -> np.ndarray:
    v = np.asarray(TARGET_T1W) - np.asarray(ENTRY_T1W)
    return v / np.linalg.norm(v)


def native_markers(target: dict, root: Path) -> dict:
    from tmstarget.native.scalp import coil_pose_simnibs, handle_direction_ras

    n = dict(target)
    normal = inward_normal()
    n.update({"target_t1w_ras_mm": TARGET_T1W, "target_t1w_ijk": [7, 34, 24],
              "entry_t1w_ras_mm": ENTRY_T1W, "inward_normal_t1w_ras": normal.tolist(),
              "handle_direction_t1w_ras": handle_direction_ras(ENTRY_T1W, normal, 45.0).tolist(),
              "handle_angle_deg": 45.0,
              "coil_pose_t1w_ras": coil_pose_simnibs(ENTRY_T1W, normal, 45.0).tolist(),
              "scalp_to_cortex_mm": 18.3, "roundtrip_error_mm": 0.3,
              "t1w_path": str(root / SECRET_DIR / "sub-01_desc-preproc_T1w.nii.gz"), "t1w_sha256": "ab" * 32,
              "transform_path": str(root / SECRET_DIR / "sub-01_from-T1w_to-MNI_xfm.h5"),
              "transform_sha256": "cd" * 32})
    return n


def denoise_qc(root: Path, minutes_kept=12.5, fd_scale=1.0) -> dict:
    runs = []
    rng = np.random.default_rng(5)
    for k in range(2):
        fd = (np.abs(rng.normal(0.08, 0.04, 40)) * fd_scale)
        fd[0] = 0.0
        fd[[12, 13]] = [0.9, 0.7]
        runs.append({"bold": str(root / SECRET_DIR / f"sub-01_task-rest_run-{k + 1}_space-MNI_desc-preproc_bold.nii.gz"),
                     "volumes_total": 40, "dummy_volumes": 0, "censored_volumes": [12, 13], "volumes_kept": 38,
                     "minutes_kept": 1.27, "framewise_displacement_mm": fd.round(4).tolist(),
                     "mean_fd_mm": float(fd[1:].mean())})
    return {"strategy": "fox", "strategy_parameters": {"global_signal": True}, "t_r": T_R, "runs": runs,
            "volumes_total": 80, "volumes_kept": 76, "minutes_kept": minutes_kept, "fd_threshold_mm": 0.5,
            "warnings": []}


def seed_sidecar(**overrides) -> dict:
    s = {"seed": {"type": "sphere"}, "seed_voxels_total": 19, "seed_voxels_in_mask": 19,
         "seed_median_tsnr": 42.0, "seed_low_tsnr_fraction": 0.1, "min_seed_tsnr": 20.0, "volumes": 76,
         "Sources": ["sub-01_desc-fox_denoised.npz"]}
    s.update(overrides)
    return s


def make_subject_inputs(root: Path, unit: str = "sub-01") -> dict:
    """All files of one unit's report, following docs/architecture.md; returns the ``inputs`` dict."""
    d = root / SECRET_DIR / unit
    rng = np.random.default_rng(11)
    brain = ellipsoid_brain(MNI_SHAPE, MNI_AFFINE)
    seed = ball(MNI_SHAPE, MNI_AFFINE, SEED_MNI, 10) & brain
    search = ball(MNI_SHAPE, MNI_AFFINE, [-44, 40, 29], 20) & brain
    bolds, masks, confounds = [], [], []
    for k in range(2):
        ts = 100 + rng.normal(0, 2, brain.shape + (40,))
        ts[..., 12:14] += 15                          # a motion burst at the censored volumes
        ts *= brain[..., None]
        bolds.append(save_private_nifti(d / f"{unit}_task-rest_run-{k + 1}_space-MNI_desc-preproc_bold.nii.gz",
                           ts.astype(np.float32), MNI_AFFINE))
        masks.append(save_private_nifti(d / f"{unit}_task-rest_run-{k + 1}_space-MNI_desc-brain_mask.nii.gz",
                           brain.astype(np.uint8), MNI_AFFINE))
        c = d / f"{unit}_task-rest_run-{k + 1}_desc-confounds_timeseries.tsv"
        fd = np.abs(rng.normal(0.1, 0.05, 40)).round(4).astype(str)
        fd[0] = "n/a"
        pd.DataFrame({"framewise_displacement": fd, "global_signal": 100.0}).to_csv(c, sep="\t", index=False)
        confounds.append(c)
    n_vox = int(brain.sum())
    data_tv = rng.normal(0, 1, (76, n_vox)).astype(np.float32)
    tsnr_v = rng.uniform(40, 80, n_vox).astype(np.float32)
    tsnr_v[seed[brain]] = 15                          # dropout in half of the seed...
    tsnr_v[np.flatnonzero(seed[brain])[::2]] = 45     # ...the other half fine
    npz = d / f"{unit}_desc-fox_denoised.npz"
    np.savez(npz, data_tv=data_tv, mask=brain.astype(np.uint8), affine=MNI_AFFINE, t_r=T_R,
             run_lengths=np.array([38, 38]), tsnr_v=tsnr_v)
    z = np.where(brain, rng.normal(0, 0.05, MNI_SHAPE), 0.0)
    z += 0.8 * np.exp(-np.sum((centres_ras_mm(MNI_SHAPE, MNI_AFFINE) - SEED_MNI) ** 2, -1) / (2 * 12 ** 2))
    z -= 0.5 * np.exp(-np.sum((centres_ras_mm(MNI_SHAPE, MNI_AFFINE) - TARGET_MNI) ** 2, -1) / (2 * 10 ** 2))
    z *= brain
    target = target_markers()
    files = {
        "target_json": d / f"{unit}_task-rest_space-MNI152NLin2009aSym_desc-target_markers.json",
        "native_json": d / f"{unit}_space-T1w_desc-target_markers.json",
        "denoise_qc_json": d / f"{unit}_task-rest_desc-denoise_qc.json",
        "seed_json": d / f"{unit}_task-rest_space-MNI152NLin2009aSym_desc-sgacc_stat-r_boldmap.json",
    }
    objs = {"target_json": target, "native_json": native_markers(target, root),
            "denoise_qc_json": denoise_qc(root), "seed_json": seed_sidecar()}
    for key, obj in objs.items():
        files[key].write_text(json.dumps(obj))
    files["verdict_json"] = d / f"{unit}_desc-verdict_qc.json"
    files["verdict_json"].write_text(json.dumps(assess(*objs.values(), unit=unit)))
    t1w_data = head_t1(T1W_SHAPE, T1W_AFFINE)
    bref = head_t1((18, 25, 20), T1W_AFFINE @ np.diag([2, 2, 2, 1.0]))
    return {
        **{k: str(v) for k, v in files.items()},
        "fisherz_map": str(save_private_nifti(d / f"{unit}_space-MNI_desc-sgacc_stat-fisherz_boldmap.nii.gz", z.astype(np.float32), MNI_AFFINE)),
        "seed_mask": str(save_private_nifti(d / f"{unit}_space-MNI_desc-sgacc_mask.nii.gz", seed.astype(np.uint8), MNI_AFFINE)),
        "search_mask": str(save_private_nifti(d / f"{unit}_space-MNI_desc-search_mask.nii.gz", search.astype(np.uint8), MNI_AFFINE)),
        "preproc_bold": [str(p) for p in bolds], "bold_mask": [str(p) for p in masks],
        "denoised_npz": str(npz),
        "boldref_t1w": [str(save_private_nifti(d / f"{unit}_space-T1w_boldref.nii.gz", bref, T1W_AFFINE @ np.diag([2, 2, 2, 1.0])))],
        "t1w": str(save_private_nifti(d / f"{unit}_desc-preproc_T1w.nii.gz", t1w_data, T1W_AFFINE)),
        "t1w_mni": str(save_private_nifti(d / f"{unit}_space-MNI_desc-preproc_T1w.nii.gz", head_t1(MNI_SHAPE, MNI_AFFINE), MNI_AFFINE)),
        "template_space": "MNI152NLin2009aSym",
        "confounds": [str(p) for p in confounds],
    }


def write_verdict(inputs: dict, **kw) -> dict:
    return run_verdict(inputs, inputs["verdict_json"], "sub-01", **kw)


def fail_inputs_with_candidates(tmp_path) -> dict:
    """Report inputs of a unit that FAILs (too much motion) and whose split-half targets form two candidates,
    MNI (-42, 42, 30) with 55 % and (-36, 22, 44) with 40 % support."""
    inputs = make_subject_inputs(tmp_path)
    Path(inputs["denoise_qc_json"]).write_text(json.dumps(denoise_qc(tmp_path, fd_scale=8.0)))
    t = json.loads(Path(inputs["target_json"]).read_text())
    t["uncertainty"]["multiple_candidates"] = True
    t["uncertainty"]["candidates"] = [
        {"target_mni_ras_mm": [-42.0, 42.0, 30.0], "support_fraction": 0.55, "n_targets": 28},
        {"target_mni_ras_mm": [-36.0, 22.0, 44.0], "support_fraction": 0.4, "n_targets": 20}]
    Path(inputs["target_json"]).write_text(json.dumps(t))
    return inputs


Z_NEG_T1W, Z_POS_T1W = [-30.0, 30.0, 20.0], [30.0, 30.0, 20.0]     # blobs of the seed map (Fisher z)


def z_map_t1w(path: Path) -> Path:
    """A seed map in T1w space (2 mm): z = -0.6 in a 12 mm ball on the left, +0.6 on the right, 0 elsewhere."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-70, -90, -60]
    shape = (72, 100, 80)
    xyz = centres_ras_mm(shape, affine)
    z = np.zeros(shape, np.float32)
    z[np.linalg.norm(xyz - Z_NEG_T1W, axis=-1) <= 12] = -0.6
    z[np.linalg.norm(xyz - Z_POS_T1W, axis=-1) <= 12] = 0.6
    return save_private_nifti(path, z, affine)
