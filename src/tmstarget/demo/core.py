"""Synthetic demo BIDS dataset with a planted sgACC-anticorrelated left-BA46 target and its ground truth.

Every subject gets a T1w and one resting-state BOLD run in its own "native" (scanner) world, made
from nilearn's MNI152 2009a (symmetric) template so that the real pipeline stages (registration,
coregistration, motion correction, denoising, seed maps, targeting, scalp projection) have something
realistic to work on, while the truth is known exactly. The pieces: the native world and its map to
MNI (:mod:`tmstarget.demo.native_map`), the synthetic head, planted target and T1w
(:mod:`tmstarget.demo.phantom`), the BOLD run (:mod:`tmstarget.demo.bold`); this module writes the
dataset and :mod:`tmstarget.demo.truth` reads its ground truth back.

With ``plant_target=False`` neither the target nor the decoy is planted (only the seed signal and the
noise structure), to test that the pipeline reports large uncertainty.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path

import numpy as np

from tmstarget import __version__
from tmstarget.demo.bold import (AMPLITUDES_PCT, BOLD_SHAPE, N_DUMMY_SCANS, THERMAL_NOISE_PCT_OF_GM, slice_timing_s,
                                 synthesize_bold)
from tmstarget.demo.native_map import random_native_to_mni_map
from tmstarget.demo.phantom import (DECOY_MNI_RAS_MM, SEED_MNI_RAS_MM, SEED_SIGNAL_RADIUS_MM, T1W_VOXEL_MM,
                                    TARGET_ATLAS_LABEL, TARGET_SIGMA_MM, choose_target_mni_ras_mm,
                                    mni_to_t1w_map_img, synthesize_t1w)
from tmstarget.errors import InputError
from tmstarget.io.files import atomic_folder, save_img, write_json
from tmstarget.preproc.confounds import framewise_displacement

log = logging.getLogger(__name__)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _write_dataset_files(root: Path, subjects: list[str], seed: int, plant_target: bool) -> None:
    write_json({
        "Name": "tmstarget synthetic demo dataset",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["tmstarget developers"],
        "GeneratedBy": [{"Name": "tmstarget.demo.core", "Version": __version__,
                         "Description": f"make_demo_dataset(seed={seed}, plant_target={plant_target})"}],
    }, root / "dataset_description.json")
    rows = "".join(f"sub-{s}\tn/a\tn/a\n" for s in subjects)
    _write_text(root / "participants.tsv", "participant_id\tage\tsex\n" + rows)
    write_json({"age": {"Description": "not applicable (synthetic)"},
                "sex": {"Description": "not applicable (synthetic)"}}, root / "participants.json")
    _write_text(root / "README", (
        "tmstarget synthetic demo dataset\n\n"
        "Synthetic T1w and resting-state BOLD made from the MNI152 2009a template by tmstarget.demo.core.\n"
        "Each subject lives in its own native space (known affine + smooth warp to MNI). The BOLD\n"
        "carries a band-limited sgACC signal and, unless made with plant_target=False, its negative at\n"
        "a planted left-BA46 target plus a parietal decoy, with realistic noise, drift, head motion and\n"
        f"{N_DUMMY_SCANS} non-steady-state volumes at the start of each run. Ground truth (target in MNI and\n"
        "T1w space, motion, native<->MNI maps) is in sourcedata/groundtruth/. Not real data.\n"))


def _write_subject(root: Path, sub: str, rng: np.random.Generator, n_volumes: int, t_r: float,
                   plant_target: bool, seed: int) -> None:
    t0 = time.perf_counter()
    mapping = random_native_to_mni_map(rng)
    target_mni = choose_target_mni_ras_mm(rng) if plant_target else None
    t1w_img, t1w_map_img = synthesize_t1w(mapping, rng)
    bold_img, info = synthesize_bold(mapping, rng, n_volumes, t_r, target_mni, plant_decoy=plant_target)

    anat, func = root / f"sub-{sub}" / "anat", root / f"sub-{sub}" / "func"
    save_img(t1w_img, anat / f"sub-{sub}_T1w.nii.gz")
    write_json({"Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "synthetic (tmstarget.demo.core)",
                "MRAcquisitionType": "3D", "RepetitionTime": 2.3, "EchoTime": 0.00298,
                "InversionTime": 0.9, "FlipAngle": 9}, anat / f"sub-{sub}_T1w.json")
    save_img(bold_img, func / f"sub-{sub}_task-rest_bold.nii.gz")
    write_json({"TaskName": "rest", "RepetitionTime": float(t_r), "EchoTime": 0.03, "FlipAngle": 77,
                "MagneticFieldStrength": 3, "Manufacturer": "synthetic (tmstarget.demo.core)",
                "PhaseEncodingDirection": "j-", "SliceEncodingDirection": "k",
                "SliceTiming": slice_timing_s(BOLD_SHAPE[2], t_r)},
               func / f"sub-{sub}_task-rest_bold.json")

    gt = root / "sourcedata" / "groundtruth" / f"sub-{sub}"
    motion_name = f"sub-{sub}_motion.tsv"
    t1w_map_name = f"sub-{sub}_t1w_to_mni_map.nii.gz"
    mni_map_name = f"sub-{sub}_mni_to_t1w_map.nii.gz"
    gt.mkdir(parents=True, exist_ok=True)
    with open(gt / motion_name, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
        writer.writerows([[f"{v:.6f}" for v in row] for row in info["motion"]])
    save_img(t1w_map_img, gt / t1w_map_name)
    save_img(mni_to_t1w_map_img(mapping), gt / mni_map_name)
    target_t1w = mapping.mni_to_native(target_mni[None])[0] if target_mni is not None else None
    fd = framewise_displacement(info["motion"][N_DUMMY_SCANS:])  # fd[0] is NaN, as fMRIPrep writes
    write_json({
        "planted_target": bool(plant_target),
        "target_mni_ras_mm": None if target_mni is None else target_mni.tolist(),
        "target_t1w_ras_mm": None if target_t1w is None else target_t1w.tolist(),
        "target_atlas_label": TARGET_ATLAS_LABEL if plant_target else None,
        "target_sigma_mm": TARGET_SIGMA_MM if plant_target else None,
        "decoy_mni_ras_mm": list(DECOY_MNI_RAS_MM) if plant_target else None,
        "seed_mni_ras_mm": list(SEED_MNI_RAS_MM),
        "seed_signal_radius_mm": SEED_SIGNAL_RADIUS_MM,
        "amplitudes_percent": AMPLITUDES_PCT,
        "thermal_noise_percent_of_gm": THERMAL_NOISE_PCT_OF_GM,
        "n_dummy_scans": N_DUMMY_SCANS,
        "t_r": float(t_r),
        "n_volumes_total": int(bold_img.shape[3]),
        "motion_tsv": motion_name,
        "motion_rows": "one per volume of the BOLD file, dummy scans included; relative to volume n_dummy_scans",
        "motion_convention": "x_moved = R (x - c) + c + t, R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x), "
                             "c = bold_grid_center_ras_mm, world RAS mm",
        "bold_grid_center_ras_mm": info["bold_center_ras_mm"].tolist(),
        "spike_volumes": info["spike_volumes"],
        "max_fd_mm_steady_state": float(np.nanmax(fd)),
        "mean_fd_mm_steady_state": float(fd[1:].mean()) if len(fd) > 1 else 0.0,
        "bold_to_t1w": "identity in world coordinates (same native world); motion relative to the first steady-state volume",
        "t1w_to_mni_map": t1w_map_name,
        "mni_to_t1w_map": mni_map_name,
        "native_to_mni_linear_affine": mapping.linear_affine().tolist(),
        "t1w_voxel_mm": T1W_VOXEL_MM,
        "random_seed": seed,
        "generator": f"tmstarget.demo.core {__version__}",
    }, gt / f"sub-{sub}_groundtruth.json")
    log.info("sub-%s written in %.1f s", sub, time.perf_counter() - t0)


def make_demo_dataset(out_dir: str | os.PathLike, n_subjects: int = 2, n_volumes: int = 200,
                      t_r: float = 2.0, seed: int = 0, plant_target: bool = True) -> Path:
    """Write the synthetic demo BIDS dataset with ground truth; deterministic given ``seed``.

    Parameters
    ----------
    out_dir : path
        Folder to create; must be absent or empty. The dataset is built in a temporary sibling
        folder and moved into place at the end, so a partial dataset never appears.
    n_subjects : int
        Subjects ``sub-01``, ``sub-02``, ...
    n_volumes : int
        Steady-state volumes per run (the file has ``N_DUMMY_SCANS`` more at the start).
    t_r : float
        Repetition time in seconds.
    seed : int
        Random seed; subject ``i`` uses ``numpy.random.default_rng([seed, i])``.
    plant_target : bool
        False: no anticorrelated target or decoy (null data).

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out = Path(out_dir)
    if n_subjects < 1 or n_volumes < 10 or t_r <= 0:
        raise InputError(f"demo dataset {out}: need n_subjects >= 1, n_volumes >= 10 and t_r > 0 "
                         f"(got {n_subjects}, {n_volumes}, {t_r})")
    with atomic_folder(out) as tmp:
        subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
        _write_dataset_files(tmp, subjects, seed, plant_target)
        for i, sub in enumerate(subjects):
            _write_subject(tmp, sub, np.random.default_rng([seed, i]), n_volumes, t_r, plant_target, seed)
    log.info("demo BIDS dataset written to %s", out)
    return out
