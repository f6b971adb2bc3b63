"""Reading a demo dataset's ground truth, and the error of an estimated T1w -> MNI map against it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget.io.files import read_json


def load_ground_truth(bids_dir: str | os.PathLike, subject: str) -> dict:
    """Read ``sourcedata/groundtruth/sub-XX/sub-XX_groundtruth.json`` of a demo dataset.

    Parameters
    ----------
    bids_dir : path
    subject : str
        Label with or without ``sub-`` (``"01"`` or ``"sub-01"``).

    Returns
    -------
    dict
        The JSON; ``*_ras_mm`` entries as float arrays of shape (3,) (None if no target was
        planted); ``motion_tsv``, ``t1w_to_mni_map`` and ``mni_to_t1w_map`` as absolute paths;
        ``motion`` added: float array (T, 6) in the TSV's column order.
    """
    label = subject[4:] if subject.startswith("sub-") else subject
    folder = Path(bids_dir) / "sourcedata" / "groundtruth" / f"sub-{label}"
    path = folder / f"sub-{label}_groundtruth.json"
    if not path.exists():
        raise InputError(f"{path}: no ground truth for sub-{label}; is {bids_dir} a dataset made by "
                         "`tmstarget demo-data`?")
    truth = read_json(path)
    for key, value in list(truth.items()):
        if key.endswith("_ras_mm") and value is not None:
            truth[key] = np.asarray(value, dtype=np.float64)
    for key in ("motion_tsv", "t1w_to_mni_map", "mni_to_t1w_map"):
        truth[key] = folder / truth[key]
    truth["motion"] = np.loadtxt(truth["motion_tsv"], delimiter="\t", skiprows=1, ndmin=2)
    return truth


def t1w_to_mni_error_mm(t1w_path, xfm_mni_to_t1w, truth_map_path, brain_mask_path) -> np.ndarray:
    """Distance (mm) between an estimated and the true MNI position of every brain voxel of a demo T1w.

    ``xfm_mni_to_t1w`` (ITK .h5, e.g. tmstarget's ``from-MNI..._to-T1w`` transform) pulls MNI images
    into the T1w grid, i.e. maps T1w points to MNI points; ANTs composes it into a displacement field
    on the T1w grid (LPS). ``truth_map_path`` is the demo's ``t1w_to_mni_map`` (MNI RAS mm per T1w
    voxel), ``brain_mask_path`` selects the voxels. Returns a float array, one distance per voxel.
    """
    import ants

    from tmstarget.preproc.headers import RAS_TO_LPS, nifti_to_ants
    from tmstarget.preproc.templates import load_template

    t1w_img = nib.load(str(t1w_path))
    t1w = nifti_to_ants(t1w_img.get_fdata(dtype=np.float32), t1w_img.affine)
    mni_img = load_template(2)["t1"]
    mni = nifti_to_ants(np.asarray(mni_img.get_fdata(dtype=np.float32)), mni_img.affine)
    with tempfile.TemporaryDirectory() as tmp:
        field = ants.apply_transforms(fixed=t1w, moving=mni, transformlist=[str(xfm_mni_to_t1w)],
                                      compose=f"{tmp}/c_")
        disp_lps = np.asarray(nib.load(field).dataobj, dtype=np.float64).reshape(t1w.shape + (3,))
    ijk = np.indices(t1w.shape, dtype=np.float64).reshape(3, -1)
    world_lps = RAS_TO_LPS @ t1w_img.affine
    points_lps = (world_lps[:3, :3] @ ijk + world_lps[:3, 3:4]).T
    ours_mni_ras = (points_lps + disp_lps.reshape(-1, 3)) * [-1, -1, 1]
    truth_mni_ras = np.asarray(nib.load(str(truth_map_path)).dataobj, dtype=np.float64).reshape(-1, 3)
    brain = np.asarray(nib.load(str(brain_mask_path)).dataobj).reshape(-1) > 0
    return np.linalg.norm(ours_mni_ras[brain] - truth_mni_ras[brain], axis=1)
