"""Finding a BOLD run's BIDS field maps at planning time (tmstarget.bids.fieldmaps via plan_raw)."""

import json

import numpy as np
import pytest

from builders.bids import make_raw_bids
from builders.nifti import write_nifti
from tmstarget.bids.fieldmaps import intended_for_matches, total_readout_time_s
from tmstarget.bids.inputs import plan_raw
from tmstarget.errors import InputError

BOLD_REL = "sub-01/func/sub-01_task-rest_bold.nii.gz"
RUN = "sub-01/func/sub-01_task-rest"


def _bids(tmp_path, bold_extra=None):
    root = make_raw_bids(tmp_path / "bids")
    side = root / "sub-01" / "func" / "sub-01_task-rest_bold.json"
    meta = json.loads(side.read_text())
    meta.update({"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.03})
    meta.update(bold_extra or {})
    meta = {k: v for k, v in meta.items() if v is not None}
    side.write_text(json.dumps(meta))
    return root


def _fmap(root, name, meta, shape=(6, 6, 6)):
    fmap = root / "sub-01" / "fmap"
    write_nifti(fmap / f"{name}.nii.gz", np.zeros(shape), np.eye(4))
    (fmap / f"{name}.json").write_text(json.dumps(meta))


def _phasediff_set(root, meta):
    _fmap(root, "sub-01_phasediff", {"EchoTime1": 0.00492, "EchoTime2": 0.00738, **meta})
    _fmap(root, "sub-01_magnitude1", {})
    _fmap(root, "sub-01_magnitude2", {})


def _plan_fieldmap(root, tmp_path, **kw):
    return plan_raw(root, tmp_path / "out", **kw).bold_jobs[RUN]["fieldmap"]


def test_no_fmap_folder_plans_none(tmp_path):
    assert _plan_fieldmap(_bids(tmp_path), tmp_path) is None


@pytest.mark.parametrize("intended", [f"bids::{BOLD_REL}", "func/sub-01_task-rest_bold.nii.gz",
                                      [f"bids::{BOLD_REL}", "func/other_bold.nii.gz"]])
def test_phasediff_matched_by_intended_for(tmp_path, intended):
    root = _bids(tmp_path)
    _phasediff_set(root, {"IntendedFor": intended})
    fm = _plan_fieldmap(root, tmp_path)
    assert fm["kind"] == "phasediff" and fm["matched_by"] == "IntendedFor"
    assert set(fm["files"]) == {"phasediff", "magnitude1", "magnitude2"}  # magnitudes found by their stem
    assert fm["echo_time1_s"] == pytest.approx(0.00492) and fm["echo_time2_s"] == pytest.approx(0.00738)
    assert (fm["pe_axis"], fm["pe_sign"], fm["total_readout_time_s"]) == (1, -1, pytest.approx(0.03))
    json.dumps(fm)  # travels in the plan and in Snakemake params


def test_intended_for_of_another_run_or_dataset_does_not_match():
    assert not intended_for_matches("func/sub-01_task-rest_run-2_bold.nii.gz", BOLD_REL, "01")
    assert not intended_for_matches(f"bids:other:{BOLD_REL}", BOLD_REL, "01")
    assert intended_for_matches(f"bids::{BOLD_REL}", BOLD_REL, "01")


def test_b0fieldsource_wins_over_intended_for(tmp_path):
    root = _bids(tmp_path, {"B0FieldSource": "pepolar0"})
    _phasediff_set(root, {"IntendedFor": f"bids::{BOLD_REL}"})  # matched only if B0FieldSource were ignored
    _fmap(root, "sub-01_dir-PA_epi", {"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.03,
                                      "B0FieldIdentifier": "pepolar0"})
    _fmap(root, "sub-01_dir-AP_epi", {"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.03,
                                      "B0FieldIdentifier": ["pepolar0"]})
    fm = _plan_fieldmap(root, tmp_path)
    assert fm["kind"] == "pepolar" and fm["matched_by"] == "B0FieldSource"
    assert fm["files"]["epi_opposite"].endswith("dir-PA_epi.nii.gz")
    assert fm["files"]["epi_same"].endswith("dir-AP_epi.nii.gz")


def test_hz_fieldmap_and_units(tmp_path):
    root = _bids(tmp_path)
    _fmap(root, "sub-01_fieldmap", {"Units": "rad/s", "IntendedFor": f"bids::{BOLD_REL}"})
    _fmap(root, "sub-01_magnitude", {})
    fm = _plan_fieldmap(root, tmp_path)
    assert fm["kind"] == "fieldmap" and fm["units"] == "rad/s" and "magnitude" in fm["files"]


def test_distortion_correction_none_ignores_fmap(tmp_path):
    root = _bids(tmp_path)
    _phasediff_set(root, {"IntendedFor": f"bids::{BOLD_REL}"})
    assert _plan_fieldmap(root, tmp_path, distortion_correction="none") is None


def test_two_phase_images_are_a_finding_not_an_error(tmp_path):
    root = _bids(tmp_path)
    _fmap(root, "sub-01_phase1", {"EchoTime": 0.004, "IntendedFor": f"bids::{BOLD_REL}"})
    _fmap(root, "sub-01_phase2", {"EchoTime": 0.006, "IntendedFor": f"bids::{BOLD_REL}"})
    fm = _plan_fieldmap(root, tmp_path)
    assert fm["kind"] == "unsupported" and "_phase1/_phase2" in fm["finding"]


@pytest.mark.parametrize("bold_extra, fmap_meta, file, key", [
    ({"PhaseEncodingDirection": None}, {}, "sub-01_task-rest_bold.json", "PhaseEncodingDirection"),
    ({"PhaseEncodingDirection": "y"}, {}, "sub-01_task-rest_bold.json", "PhaseEncodingDirection"),
    ({"TotalReadoutTime": None}, {}, "sub-01_task-rest_bold.json", "TotalReadoutTime"),
    ({"EffectiveEchoSpacing": 0.001}, {}, "sub-01_task-rest_bold.json", "contradicts EffectiveEchoSpacing"),
    ({}, {"EchoTime2": None}, "sub-01_phasediff.json", "EchoTime2"),
    ({}, {"EchoTime2": 0.00492}, "sub-01_phasediff.json", "EchoTime1 equals EchoTime2"),
    ({}, {"EchoTime1": 4.92, "EchoTime2": 7.38}, "sub-01_phasediff.json", "seconds"),
    ({"B0FieldSource": "nothere"}, {}, "sub-01_task-rest_bold.json", "B0FieldSource"),
])
def test_metadata_errors_name_file_and_key(tmp_path, bold_extra, fmap_meta, file, key):
    root = _bids(tmp_path, bold_extra)
    _phasediff_set(root, {"IntendedFor": f"bids::{BOLD_REL}", **fmap_meta})
    meta_path = root / "sub-01" / "fmap" / "sub-01_phasediff.json"
    meta = {k: v for k, v in json.loads(meta_path.read_text()).items() if v is not None}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError) as err:
        plan_raw(root, tmp_path / "out")
    assert file in str(err.value) and key in str(err.value)
    assert err.value.exit_code == 2


def test_fieldmap_without_units_and_pepolar_without_opposite(tmp_path):
    root = _bids(tmp_path)
    _fmap(root, "sub-01_fieldmap", {"IntendedFor": f"bids::{BOLD_REL}"})
    with pytest.raises(InputError, match=r"sub-01_fieldmap\.json: Units is missing"):
        plan_raw(root, tmp_path / "out")
    root2 = _bids(tmp_path / "b")
    _fmap(root2, "sub-01_dir-AP_epi", {"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.03,
                                       "IntendedFor": f"bids::{BOLD_REL}"})
    with pytest.raises(InputError, match=r"sub-01_dir-AP_epi\.json: .*opposite"):
        plan_raw(root2, tmp_path / "out2")


def test_readout_time_from_echo_spacing():
    """BIDS: TotalReadoutTime = EffectiveEchoSpacing x (N_PE - 1); 0.5 ms x 63 = 31.5 ms."""
    assert total_readout_time_s({"EffectiveEchoSpacing": 0.0005}, "x_bold.nii.gz", 64) == pytest.approx(0.0315)
    assert total_readout_time_s({"EffectiveEchoSpacing": 0.0005, "TotalReadoutTime": 0.0315}, "x", 64) == 0.0315
