"""Input discovery for both routes, and the errors a user sees for bad datasets."""

from __future__ import annotations

import pytest

from builders.bids import FMRIPREP_SPACE, make_fmriprep_tree, make_raw_bids
from builders.nifti import write_json
from tmstarget.bids.inputs import BUILTIN_SPACE, make_plan, plan_fmriprep, plan_raw
from tmstarget.errors import InputError


def cfg(bids, out, **kw):
    base = {"bids_dir": str(bids), "output_dir": str(out), "task": "rest", "input": "auto",
            "participant_label": [], "group_runs_by": "subject", "space": "auto", "fmriprep_dir": None}
    base.update(kw)
    return base


def test_raw_plan_lists_runs_and_preproc_paths(tmp_path):
    bids = make_raw_bids(tmp_path / "bids", subjects=("01", "02"), runs=("1", "2"))
    plan = plan_raw(bids, tmp_path / "out")
    assert plan.route == "raw" and plan.space == BUILTIN_SPACE
    assert sorted(plan.units) == ["sub-01", "sub-02"]
    unit = plan.units["sub-01"]
    assert [r.name for r in unit.runs] == ["sub-01_task-rest_run-1", "sub-01_task-rest_run-2"]
    assert unit.runs[0].bold.endswith(
        "preproc/sub-01/func/sub-01_task-rest_run-1_space-MNI152NLin2009aSym_res-2_desc-preproc_bold.nii.gz")
    assert unit.runs[0].t_r == pytest.approx(2.0)
    assert unit.anat["xfm_t1w_to_mni"].endswith("sub-01/anat/sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5")
    assert unit.t1w_navigation.endswith("sub-01/anat/sub-01_T1w.nii.gz")
    assert len(plan.bold_jobs) == 4 and len(plan.anat_jobs) == 2


def test_sessions_grouped_by_subject_or_session(tmp_path):
    bids = make_raw_bids(tmp_path / "bids", sessions=("a", "b"))
    by_subject = plan_raw(bids, tmp_path / "out")
    assert list(by_subject.units) == ["sub-01"] and len(by_subject.units["sub-01"].runs) == 2
    by_session = plan_raw(bids, tmp_path / "out", group_runs_by="session")
    assert sorted(by_session.units) == ["sub-01_ses-a", "sub-01_ses-b"]
    assert by_session.units["sub-01_ses-b"].subdir == "sub-01/ses-b"
    # each session's runs are registered to that session's T1w
    assert by_session.units["sub-01_ses-b"].t1w_navigation.endswith("sub-01_ses-b_T1w.nii.gz")


def test_participant_filter_and_unknown_label(tmp_path):
    bids = make_raw_bids(tmp_path / "bids", subjects=("01", "02"))
    assert list(plan_raw(bids, tmp_path / "o", participant_label=["sub-02"]).units) == ["sub-02"]
    with pytest.raises(InputError, match=r"participant label\(s\) 03 not found.*available: 01, 02"):
        plan_raw(bids, tmp_path / "o", participant_label=["03"])


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no dataset_description.json"):
        plan_raw(tmp_path / "empty", tmp_path / "o")
    with pytest.raises(InputError, match="BIDS folder not found"):
        plan_raw(tmp_path / "nope", tmp_path / "o")
    write_json(tmp_path / "empty" / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.9.0"})
    with pytest.raises(InputError, match="no subjects found"):
        plan_raw(tmp_path / "empty", tmp_path / "o")


def test_non_bids_names_are_named(tmp_path):
    bids = make_raw_bids(tmp_path / "bids")
    bad = bids / "sub-01" / "func" / "sub-01_rest_bold.nii.gz"
    bad.write_bytes((bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz").read_bytes())
    with pytest.raises(InputError, match=r"not named as BIDS requires.*sub-01/func/sub-01_rest_bold.nii.gz"):
        plan_raw(bids, tmp_path / "o")


def test_missing_repetition_time(tmp_path):
    bids = make_raw_bids(tmp_path / "bids")
    write_json(bids / "sub-01" / "func" / "sub-01_task-rest_bold.json", {"TaskName": "rest"})
    with pytest.raises(InputError, match="sub-01_task-rest_bold.nii.gz: no RepetitionTime"):
        plan_raw(bids, tmp_path / "o")


def test_wrong_task_label(tmp_path):
    bids = make_raw_bids(tmp_path / "bids")
    with pytest.raises(InputError, match="no resting-state BOLD with task-rest2"):
        plan_raw(bids, tmp_path / "o", task="rest2")


def test_fmriprep_route_autodetected(tiny_fmriprep, tmp_path):
    plan = make_plan(cfg(tiny_fmriprep, tmp_path / "out"))
    assert plan.route == "fmriprep" and plan.space == FMRIPREP_SPACE
    unit = plan.units["sub-01"]
    assert unit.runs[0].confounds.endswith("sub-01_task-rest_desc-confounds_timeseries.tsv")
    assert unit.runs[0].mask.endswith(f"sub-01_task-rest_space-{FMRIPREP_SPACE}_res-2_desc-brain_mask.nii.gz")
    assert unit.runs[0].t_r == pytest.approx(2.0)
    assert unit.anat["xfm_mni_to_t1w"].endswith(f"sub-01_from-{FMRIPREP_SPACE}_to-T1w_mode-image_xfm.h5")
    assert unit.t1w_navigation.endswith("sub-01_desc-preproc_T1w.nii.gz")


def test_fmriprep_multiple_runs_and_resolutions(tmp_path):
    deriv = make_fmriprep_tree(tmp_path / "fmriprep", runs=("1", "2"))
    # a second resolution of run 1 must not become a third run; res-2 is preferred
    src = deriv / "sub-01" / "func" / f"sub-01_task-rest_run-1_space-{FMRIPREP_SPACE}_res-2_desc-preproc_bold.nii.gz"
    (src.parent / src.name.replace("res-2", "res-1")).write_bytes(src.read_bytes())
    plan = plan_fmriprep(None, deriv, tmp_path / "out")
    runs = plan.units["sub-01"].runs
    assert [r.name for r in runs] == ["sub-01_task-rest_run-1", "sub-01_task-rest_run-2"]
    assert all("_res-2_" in r.bold for r in runs)


def test_fmriprep_other_space_where_present(tmp_path):
    deriv = make_fmriprep_tree(tmp_path / "fmriprep", space="MNI152NLin6Asym")
    plan = plan_fmriprep(None, deriv, tmp_path / "out")
    assert plan.space == "MNI152NLin6Asym"


def test_fmriprep_missing_pieces(tmp_path):
    deriv = make_fmriprep_tree(tmp_path / "fmriprep")
    (deriv / "sub-01" / "func" / "sub-01_task-rest_desc-confounds_timeseries.tsv").unlink()
    with pytest.raises(InputError, match="sub-01_task-rest_desc-confounds_timeseries.tsv: confounds file"):
        plan_fmriprep(None, deriv, tmp_path / "out")
    deriv2 = make_fmriprep_tree(tmp_path / "fmriprep2", with_xfm=False)
    with pytest.raises(InputError, match=f"from-T1w_to-{FMRIPREP_SPACE}_mode-image_xfm.h5: T1w->MNI transform"):
        plan_fmriprep(None, deriv2, tmp_path / "out")
    deriv3 = make_fmriprep_tree(tmp_path / "fmriprep3", space="T1w")
    with pytest.raises(InputError, match="only in T1w space and there is no .*_from-T1w_to-<MNI>_mode-image_xfm.h5"):
        plan_fmriprep(None, deriv3, tmp_path / "out")


def test_fmriprep_t1w_space_bold_is_planned_for_resampling(tmp_path):
    """BOLD only in T1w space: planned through the T1w->MNI transform into the work folder."""
    deriv = make_fmriprep_tree(tmp_path / "fmriprep", space="T1w", with_xfm=False)
    anat = deriv / "sub-01" / "anat"
    for name in (f"from-T1w_to-{FMRIPREP_SPACE}", f"from-{FMRIPREP_SPACE}_to-T1w"):
        (anat / f"sub-01_{name}_mode-image_xfm.h5").write_bytes(b"stand-in")
    plan = plan_fmriprep(None, deriv, tmp_path / "out")
    assert plan.space == FMRIPREP_SPACE and plan.derivatives_dir == str(deriv.resolve())
    run = plan.units["sub-01"].runs[0]
    assert run.t1w_bold.endswith("sub-01_task-rest_space-T1w_res-2_desc-preproc_bold.nii.gz")
    prefix = f"sub-01/sub-01_task-rest_space-{FMRIPREP_SPACE}"
    assert run.bold == str((tmp_path / "out").resolve() / "work" / f"{prefix}_desc-preproc_bold.nii.gz")
    assert plan.t1w_bold_jobs[prefix]["xfm_t1w_to_mni"].endswith(f"from-T1w_to-{FMRIPREP_SPACE}_mode-image_xfm.h5")


def test_explicit_fmriprep_without_derivatives(tiny_bids, tmp_path):
    with pytest.raises(InputError, match="no fMRIPrep derivatives"):
        make_plan(cfg(tiny_bids, tmp_path / "out", input="fmriprep"))


def test_fmriprep_siblings_by_entities_and_only_requested_subjects_indexed(tmp_path):
    """pybids finds every sibling by its entities: the old confounds name, the T1w-space boldref, the
    template T1w; a run without a run entity never takes run-1's files; other subjects are not indexed."""
    deriv = make_fmriprep_tree(tmp_path / "fmriprep", subjects=("01", "02"), runs=("1",))
    func, anat = deriv / "sub-01" / "func", deriv / "sub-01" / "anat"
    (func / "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv").rename(
        func / "sub-01_task-rest_run-1_desc-confounds_regressors.tsv")
    ref = func / f"sub-01_task-rest_run-1_space-{FMRIPREP_SPACE}_res-2_boldref.nii.gz"
    (func / "sub-01_task-rest_run-1_space-T1w_boldref.nii.gz").write_bytes(ref.read_bytes())
    (anat / f"sub-01_space-{FMRIPREP_SPACE}_res-2_desc-preproc_T1w.nii.gz").write_bytes(
        (anat / "sub-01_desc-preproc_T1w.nii.gz").read_bytes())
    (deriv / "sub-01" / "figures").mkdir()
    (deriv / "sub-01" / "figures" / "sub-01_desc-about_T1w.html").write_text("<html/>")
    # a second run without a run entity, whose confounds are missing: run-1's file must not stand in
    (func / f"sub-01_task-rest_space-{FMRIPREP_SPACE}_res-2_desc-preproc_bold.nii.gz").write_bytes(
        (func / f"sub-01_task-rest_run-1_space-{FMRIPREP_SPACE}_res-2_desc-preproc_bold.nii.gz").read_bytes())
    with pytest.raises(InputError, match=r"^sub-01_task-rest_desc-confounds_timeseries.tsv: confounds file"):
        plan_fmriprep(None, deriv, tmp_path / "out", participant_label=["01"])
    (func / f"sub-01_task-rest_space-{FMRIPREP_SPACE}_res-2_desc-preproc_bold.nii.gz").unlink()
    plan = plan_fmriprep(None, deriv, tmp_path / "out", participant_label=["01"])
    assert list(plan.units) == ["sub-01"]
    run = plan.units["sub-01"].runs[0]
    assert run.confounds.endswith("sub-01_task-rest_run-1_desc-confounds_regressors.tsv")
    assert run.boldref_t1w.endswith("sub-01_task-rest_run-1_space-T1w_boldref.nii.gz")
    assert run.boldref_mni == str(ref.resolve())
    unit_anat = plan.units["sub-01"].anat
    assert unit_anat["t1w_mni"].endswith(f"sub-01_space-{FMRIPREP_SPACE}_res-2_desc-preproc_T1w.nii.gz")
    assert unit_anat["gm_probseg"].endswith("sub-01_label-GM_probseg.nii.gz")
    with pytest.raises(InputError, match=r"participant label\(s\) 03 not found.*available: 01, 02"):
        plan_fmriprep(None, deriv, tmp_path / "out", participant_label=["03"])


def test_fmriprep_layout_indexes_only_what_the_route_reads(tmp_path):
    from tmstarget.bids.inputs import _layout

    deriv = make_fmriprep_tree(tmp_path / "fmriprep", subjects=("01", "02"))
    for extra in ("sub-01/figures/sub-01_desc-reconall_T1w.svg", "sub-01/log/crash.txt", "logs/CITATION.md",
                  "sourcedata/freesurfer/sub-01/surf/lh.white", "sub-01.html"):
        (deriv / extra).parent.mkdir(parents=True, exist_ok=True)
        (deriv / extra).write_text("x")
    every = {p.relative_to(deriv).as_posix() for p in deriv.rglob("*") if p.is_file()}
    indexed = {p[len(str(deriv)) + 1:] for p in _layout(deriv, derivative=True, subjects=["02"]).get(return_type="file")}
    indexed -= {"dataset_description.json"}
    assert indexed and all(p.startswith("sub-02/") and ("/anat/" in p or "/func/" in p) for p in indexed)
    assert indexed == {p for p in every if p.startswith("sub-02/")}
