"""Minimal raw BIDS and fMRIPrep trees: exact BIDS/fMRIPrep names, small random images (for input
discovery and preflight, not science)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from builders.nifti import write_json, write_nifti

FMRIPREP_SPACE = "MNI152NLin2009cAsym"


def make_raw_bids(root: Path, subjects=("01",), sessions=(None,), runs=(None,), n_vols=20, tr=2.0) -> Path:
    """A minimal raw BIDS dataset with small random images (for input discovery, not science)."""
    rng = np.random.default_rng(0)
    write_json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.9.0"})
    for sub in subjects:
        for ses in sessions:
            base = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "")
            prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            write_nifti(base / "anat" / f"{prefix}_T1w.nii.gz", rng.random((8, 8, 8)), np.eye(4))
            for run in runs:
                name = f"{prefix}_task-rest" + (f"_run-{run}" if run else "") + "_bold"
                write_nifti(base / "func" / f"{name}.nii.gz", rng.random((6, 6, 6, n_vols)), tr=tr)
                write_json(base / "func" / f"{name}.json", {"RepetitionTime": tr, "TaskName": "rest"})
    return root


def make_fmriprep_tree(root: Path, subjects=("01",), runs=(None,), n_vols=20, space=FMRIPREP_SPACE,
                       with_xfm=True) -> Path:
    """A miniature fMRIPrep output tree with fMRIPrep's exact naming (contents are small stand-ins)."""
    rng = np.random.default_rng(1)
    write_json(root / "dataset_description.json", {
        "Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]})
    mni_affine = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
    for sub in subjects:
        anat = root / f"sub-{sub}" / "anat"
        write_nifti(anat / f"sub-{sub}_desc-preproc_T1w.nii.gz", rng.random((8, 8, 8)), np.eye(4))
        write_nifti(anat / f"sub-{sub}_desc-brain_mask.nii.gz", np.ones((8, 8, 8)), np.eye(4))
        for lab in ("GM", "WM", "CSF"):
            write_nifti(anat / f"sub-{sub}_label-{lab}_probseg.nii.gz", rng.random((8, 8, 8)), np.eye(4))
        if with_xfm:
            for name in (f"from-T1w_to-{space}", f"from-{space}_to-T1w"):
                (anat / f"sub-{sub}_{name}_mode-image_xfm.h5").write_bytes(b"\x89HDF\r\n\x1a\nstand-in")  # HDF5 signature: passes the preflight header check
        func = root / f"sub-{sub}" / "func"
        for run in runs:
            stem = f"sub-{sub}_task-rest" + (f"_run-{run}" if run else "")
            write_nifti(func / f"{stem}_space-{space}_res-2_desc-preproc_bold.nii.gz",
                        rng.random((6, 6, 6, n_vols)), mni_affine, tr=2.0)
            write_json(func / f"{stem}_space-{space}_res-2_desc-preproc_bold.json", {"RepetitionTime": 2.0})
            write_nifti(func / f"{stem}_space-{space}_res-2_desc-brain_mask.nii.gz", np.ones((6, 6, 6)), mni_affine)
            write_nifti(func / f"{stem}_space-{space}_res-2_boldref.nii.gz", rng.random((6, 6, 6)), mni_affine)
            cols = ["global_signal", "csf", "white_matter", "trans_x", "framewise_displacement"]
            lines = ["\t".join(cols)] + ["\t".join("n/a" if (i == 0 and c == "framewise_displacement") else "0.1"
                                                   for c in cols) for i in range(n_vols)]
            (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("\n".join(lines) + "\n")
    return root
