"""Issue 25's acceptance: the demo subject's BOLD distorted by a known B0 field (tmstarget.demo.distortion),
with each kind of BIDS field map, corrected by the built-in preprocessing (tmstarget.bids.fieldmaps,
tmstarget.preproc.fieldmap, tmstarget.preproc.bold).

- Each field map kind recovers the synthetic displacement: median |estimated - true| < 0.5 mm inside the
  true brain (the MNI brain mask carried through the known T1w->MNI map onto the BOLD grid); p95 is
  printed and bounded by 2 mm. Without correction the same measure is printed as the baseline.
- The whole workflow on each distorted dataset says in the BOLD sidecar, verdict and report that it
  corrected, and its target lands within one 2 mm voxel of the undistorted run's (the session's shared
  demo run, tests/conftest.py); the BOLD-T1w white-matter boundary fraction is printed.

Markers ``acceptance`` and ``slow``: ``make test`` leaves it out (``make test-acceptance`` runs it). Cost
beyond the shared demo run: three single-subject workflows (the README measures 2 min 36 s for one demo
subject on an idle 2-core machine), three dataset copies and three estimates. Measured on a 2-core machine
shared with five other sessions (load ~15): a dataset copy 50-70 s, the phase-difference and Hz estimates
24 s and 12 s, the PEPOLAR estimate (restricted SyN) 12 min, one single-subject workflow 20-36 min; on an idle
machine allow 20-30 minutes. Measured once by hand (merge of sdcdemo and sdc 796475e, `tmstarget DIST OUT
participant --config config/demo.yaml`, not through this file): phase difference, Hz field map and PEPOLAR
pair each gave the undistorted run's target to 0.0 mm (MNI -42, 32, 38), WM boundary fraction 0.988 with
the phase difference (undistorted run 0.989); the Hz run took 4 min 51 s, the PEPOLAR run 7 min 45 s on
the then nearly idle machine. The sdc modules are imported inside the tests, so the file is collected on a
branch without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from builders.workflow import run_tmstarget_cli

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]

KINDS = ("phasediff", "fieldmap", "pepolar")
#: how each kind's field maps name the run: two by B0FieldIdentifier/B0FieldSource, one by IntendedFor
MATCH = {"phasediff": "b0field", "fieldmap": "b0field", "pepolar": "intendedfor"}
RUN = "sub-01/func/sub-01_task-rest"
MEDIAN_LIMIT_MM, P95_LIMIT_MM, TARGET_LIMIT_MM = 0.5, 2.0, 2.0


@pytest.fixture(scope="module")
def distorted(demo_workflow, tmp_path_factory):
    """sub-01 of the shared demo dataset, distorted, once per field map kind: {kind: BIDS folder}."""
    from tmstarget.demo.distortion import make_distorted_dataset

    root = tmp_path_factory.mktemp("sdc")
    return {kind: make_distorted_dataset(demo_workflow["bids"], root / kind, kind=kind, subjects=["01"],
                                         match=MATCH[kind]) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_each_field_map_kind_recovers_the_synthetic_displacement(distorted, kind, tmp_path):
    from tmstarget.bids.inputs import plan_raw
    from tmstarget.demo.distortion import brain_mask_on_bold_grid, displacement_error_mm, load_distortion_truth
    from tmstarget.preproc.fieldmap import estimate_shift_vox

    bids = distorted[kind]
    fieldmap = plan_raw(bids, tmp_path / "out", distortion_correction="auto").bold_jobs[RUN]["fieldmap"]
    assert fieldmap["kind"] == kind
    truth = load_distortion_truth(bids, "01")
    bold = nib.load(str(bids / f"{RUN}_bold.nii.gz"))
    n0 = 3  # the demo's non-steady-state volumes
    boldref = np.asarray(bold.dataobj[..., n0:n0 + 10], dtype=np.float32).mean(axis=3)
    est = estimate_shift_vox(fieldmap, boldref, bold.affine)
    assert est["pe_axis"] == truth["pe_voxel_axis"]
    true_mm = nib.load(str(truth["b0displacement_mm"])).get_fdata()
    brain = brain_mask_on_bold_grid(bids, "01")
    err = displacement_error_mm(est["shift_vox"] * truth["pe_voxel_mm"], true_mm, brain)
    none = displacement_error_mm(np.zeros_like(true_mm), true_mm, brain)
    print(f"{kind}: residual |estimated - true| displacement in the brain ({err['voxels']} voxels): median "
          f"{err['median_mm']:.3f} mm, p95 {err['p95_mm']:.3f} mm, max {err['max_mm']:.2f} mm; uncorrected: median "
          f"{none['median_mm']:.3f} mm, p95 {none['p95_mm']:.3f} mm, max {none['max_mm']:.2f} mm")
    assert none["median_mm"] > 2 * MEDIAN_LIMIT_MM  # the field displaces the whole brain, not only the front
    assert err["median_mm"] < MEDIAN_LIMIT_MM
    assert err["p95_mm"] < P95_LIMIT_MM


def _target_mni(out: Path) -> np.ndarray:
    path = out / "tmstarget" / "sub-01" / "func" / "sub-01_task-rest_space-MNI152NLin2009aSym_desc-target_markers.json"
    return np.asarray(json.loads(path.read_text())["target_mni_ras_mm"], dtype=float)


def _boundary_fraction(out: Path) -> float | None:
    from tmstarget.bids.inputs import preproc_anat_paths, preproc_bold_paths
    from tmstarget.preproc.registration_qc import wm_boundary_fraction

    anat = preproc_anat_paths(out / "preproc", "sub-01/anat/sub-01")
    return wm_boundary_fraction(preproc_bold_paths(out / "preproc", RUN)["boldref_t1w"], anat["wm_probseg"],
                                anat["brain_mask"])


@pytest.mark.parametrize("kind", KINDS)
def test_workflow_corrects_each_kind_and_keeps_the_undistorted_target(demo_workflow, distorted, kind, tmp_path):
    from tmstarget.bids.inputs import preproc_bold_paths
    from tmstarget.config.settings import REPO_ROOT

    out = tmp_path / "out"
    run_tmstarget_cli(distorted[kind], out, "participant", "--config", REPO_ROOT / "config" / "demo.yaml",
                      "--cores", 2)
    sidecar = json.loads(Path(preproc_bold_paths(out / "preproc", RUN)["bold_mni"].replace(".nii.gz", ".json"))
                         .read_text())
    sdc = sidecar["SusceptibilityDistortionCorrection"]
    assert sdc["Applied"] is True and sdc["FieldMapKind"] == kind
    fractions = sdc["WhiteMatterBoundaryFraction"]
    print(f"{kind}: BOLD-T1w WM boundary fraction uncorrected {fractions['Uncorrected']:.3f}, corrected "
          f"{fractions['Corrected']:.3f}")
    assert fractions["Corrected"] > 0.9  # the undistorted demo run: 0.989
    verdict = json.loads((out / "tmstarget" / "sub-01" / "sub-01_desc-verdict_qc.json").read_text())
    assert any(f["kind"] == "distortion" for f in verdict["findings"])
    assert not any(f["kind"] == "fieldmap_unused" for f in verdict["findings"])
    report = (out / "tmstarget" / "sub-01.html").read_text()
    section = report.split('<section id="distortion">')[1].split("</section>")[0]
    assert "corrected with a" in section and "white-matter boundary fraction" in section
    shift = float(np.linalg.norm(_target_mni(out) - _target_mni(demo_workflow["out"])))
    print(f"{kind}: target {shift:.2f} mm from the undistorted run's; BOLD-T1w WM boundary fraction "
          f"{_boundary_fraction(out):.3f} (undistorted run {_boundary_fraction(demo_workflow['out']):.3f})")
    assert shift <= TARGET_LIMIT_MM
