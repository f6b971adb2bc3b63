"""Whole workflow on the demo dataset: both input routes, planted target recovered, outputs valid.

These tests run the real pipeline (antspyx registration included) through the CLI and Snakemake,
so they take minutes; the demo run is shared by the tests of this module.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from tmstarget.config.settings import REPO_ROOT
from builders.workflow import DEMO_SUBJECTS, run_tmstarget_cli
from tmstarget.demo.truth import load_ground_truth

pytestmark = pytest.mark.slow

SUBJECTS = DEMO_SUBJECTS
DEMO_CONFIG = REPO_ROOT / "config" / "demo.yaml"


def tmstarget(*args, check=True):
    return run_tmstarget_cli(*args, check=check)


@pytest.fixture(scope="module")
def demo_run(demo_workflow):
    """The session's shared demo run (tests/conftest.py): both subjects, raw route, group level."""
    return demo_workflow["bids"], demo_workflow["out"], demo_workflow["result"]


def native_json(out, sub):
    return json.loads((out / "tmstarget" / f"sub-{sub}" / "anat" /
                       f"sub-{sub}_space-T1w_desc-target_markers.json").read_text())


def mni_json(out, sub):
    return json.loads((out / "tmstarget" / f"sub-{sub}" / "func" /
                       f"sub-{sub}_task-rest_space-MNI152NLin2009aSym_desc-target_markers.json").read_text())


@pytest.mark.parametrize("sub", SUBJECTS)
def test_planted_target_recovered_within_6mm(demo_run, sub):
    """Issue 5's acceptance (issue 2 asked for 8 mm). Measured on a clean clone: sub-01 0.0 mm,
    sub-02 1.4 mm in MNI; 0.1 and 1.4 mm in T1w."""
    bids, out, _ = demo_run
    truth = load_ground_truth(bids, sub)
    target = mni_json(out, sub)
    err_mni = np.linalg.norm(np.subtract(target["target_mni_ras_mm"], truth["target_mni_ras_mm"]))
    native = native_json(out, sub)
    err_t1w = np.linalg.norm(np.subtract(native["target_t1w_ras_mm"], truth["target_t1w_ras_mm"]))
    assert err_mni < 6.0, f"MNI error {err_mni:.1f} mm"
    assert err_t1w < 6.0, f"T1w error {err_t1w:.1f} mm"


def test_cli_prints_targets_and_report(demo_run):
    _, out, result = demo_run
    for sub in SUBJECTS:
        verdict = json.loads((out / "tmstarget" / f"sub-{sub}" / f"sub-{sub}_desc-verdict_qc.json").read_text())
        assert verdict["status"] in ("pass", "warn"), verdict["reasons"]
        assert f"sub-{sub}: {verdict['status_word']} \u2014 target MNI RAS mm (" in result.stdout
        assert f"  report: {out / 'tmstarget' / f'sub-{sub}.html'}" in result.stdout
    assert "dataset report" in result.stdout


def test_derivatives_layout_and_provenance(demo_run):
    bids, out, _ = demo_run
    deriv = out / "tmstarget"
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "tmstarget"
    assert (deriv / ".bidsignore").exists()
    preproc_desc = json.loads((out / "preproc" / "dataset_description.json").read_text())
    assert preproc_desc["DatasetType"] == "derivative"
    z = nib.load(deriv / "sub-01" / "func" /
                 "sub-01_task-rest_space-MNI152NLin2009aSym_desc-sgaccFox_stat-fisherz_boldmap.nii.gz")
    assert z.ndim == 3 and np.nanmin(z.get_fdata()) < -0.1
    nav = deriv / "sub-01" / "nav"
    from tmstarget.navigation.localite import localite_timestamp
    stamp = localite_timestamp(deriv / "sub-01" / "anat" / "sub-01_space-T1w_desc-target_markers.json")
    for name in ("sub-01_desc-target_brainsight.txt", "sub-01_desc-target_visor2.mrk",
                 "sub-01_desc-target_slicer.mrk.json", f"localite/InstrumentMarkers/InstrumentMarker{stamp}.xml",
                 f"localite/EntryTarget/EntryTarget{stamp}.xml", "README.txt"):
        assert (nav / name).stat().st_size > 200, name
    coordsystem = json.loads((deriv / "sub-01" / "anat" / "sub-01_space-T1w_coordsystem.json").read_text())
    assert coordsystem["IntendedFor"] == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    # no absolute input paths leak into sidecars or reports
    for path in list(deriv.rglob("*.json")) + list(deriv.glob("*.html")):
        assert str(bids) not in path.read_text(errors="replace"), path


def test_fmriprep_route_gives_the_same_target(demo_run, tmp_path):
    """The built-in preprocessing writes fMRIPrep's layout, with real antspyx .h5 transforms:
    presented as fMRIPrep derivatives, it must give the same target through the other route."""
    bids, out, _ = demo_run
    deriv = tmp_path / "fmriprep"
    shutil.copytree(out / "preproc", deriv)
    (deriv / "dataset_description.json").write_text(json.dumps({
        "Name": "fMRIPrep", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]}))
    out2 = tmp_path / "out"
    result = tmstarget(bids, out2, "participant", "--derivatives", deriv, "--participant-label", "01",
                       "--config", DEMO_CONFIG, "--cores", 2)
    assert "input route 'fmriprep'" in result.stdout
    assert not (out2 / "preproc").exists()
    a = mni_json(out, "01")["target_mni_ras_mm"]
    b = mni_json(out2, "01")["target_mni_ras_mm"]
    # seedmap-free default rule: same inputs, same numbers (only the other subject is absent)
    assert np.linalg.norm(np.subtract(a, b)) < 0.01
