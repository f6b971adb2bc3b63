"""The BIDS-App command line: help, and bad input caught before anything is written."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from builders.bids import make_raw_bids
from builders.nifti import write_json, write_nifti
from tmstarget.run.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_help_explains_the_app(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("participant", "--derivatives", "--participant-label", "--profile", "demo-data",
                 "research result", "exit status", "--verbose", ".snakemake/log"):
        assert text in out


def bad_dataset(tmp_path, kind):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    func = bids / "sub-01" / "func"
    bold = func / "sub-01_task-rest_bold.nii.gz"
    if kind == "3d":
        write_nifti(bold, np.ones((6, 6, 6)))
    elif kind == "no_tr":
        write_json(func / "sub-01_task-rest_bold.json", {"TaskName": "rest"})
    elif kind == "few_volumes":
        write_nifti(bold, np.ones((6, 6, 6, 40)), tr=2.0)
    elif kind == "bad_name":
        (func / "sub-01_rest.nii.gz").write_bytes(bold.read_bytes())
    elif kind == "empty":
        bids = tmp_path / "empty"
        bids.mkdir()
    elif kind == "bad_header":
        bold.write_bytes(gzip.compress(b"not a nifti at all" * 10))
    return bids


@pytest.mark.parametrize("kind, args, message", [
    ("3d", [], r"sub-01_task-rest_bold.nii.gz is 3D with shape \(6, 6, 6\); a resting-state run must be 4D"),
    ("no_tr", [], r"sub-01_task-rest_bold.nii.gz: no RepetitionTime in its JSON sidecar; add it"),
    ("few_volumes", [], r"sub-01_task-rest_bold.nii.gz has 40 volumes \(1.3 min at TR 2 s\); at least 5 min"),
    ("bad_name", [], r"not named as BIDS requires.*sub-01/func/sub-01_rest.nii.gz"),
    ("empty", [], r"has no dataset_description.json, so it is not a BIDS dataset"),
    ("bad_header", [], r"sub-01_task-rest_bold.nii.gz: cannot read the NIfTI header"),
    ("ok", ["--participant-label", "07"], r"participant label\(s\) 07 not found.*available: 01"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, kind, args, message):
    bids = bad_dataset(tmp_path, kind)
    out = tmp_path / "out"
    code, text = run_cli(capsys, bids, out, "participant", *args)
    assert code == 2
    assert "tmstarget: error:" in text
    import re
    assert re.search(message, text), text
    assert "Traceback" not in text
    assert not out.exists()


def test_bad_config_key_exits_2(tmp_path, capsys):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    cfg = tmp_path / "my.yaml"
    cfg.write_text("targeting:\n  methd: peak\n")
    code, text = run_cli(capsys, bids, tmp_path / "out", "participant", "--config", cfg)
    assert code == 2
    assert "my.yaml: invalid setting at `targeting`" in text and "'methd' was unexpected" in text
    assert not (tmp_path / "out").exists()


def test_second_run_on_the_same_output_is_refused(tmp_path, capsys):
    """A live run holds OUT/logs/.tmstarget.lock; a second run must not touch its outputs."""
    import subprocess
    import sys

    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(out / "logs" / ".tmstarget.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, text = run_cli(capsys, bids, out, "participant", "--dry-run")
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert "another tmstarget run is using this output folder" in text
    assert not (out / "logs" / "config.yaml").exists()


def test_stale_snakemake_lock_of_a_killed_run_is_removed(tmp_path, capsys):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    locks = out / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("stale")
    code, text = run_cli(capsys, bids, out, "participant", "--dry-run")
    assert code == 0, text
    assert "removed the Snakemake lock of an interrupted run" in text
    assert not list(locks.glob("*.lock"))  # Snakemake's own unlock (run.engine) removed it


# ----------------------------------------------------------------------------- input checks before any job


def _set_tr(bids, value):
    write_json(bids / "sub-01" / "func" / "sub-01_task-rest_bold.json", {"RepetitionTime": value, "TaskName": "rest"})


def _truncate(path, keep=0.6):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def preflight_dataset(tmp_path, kind):
    from builders.bids import make_fmriprep_tree

    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    anat, func = bids / "sub-01" / "anat", bids / "sub-01" / "func"
    if kind == "tr_ms":
        _set_tr(bids, 2000)
    elif kind == "tr_text":
        _set_tr(bids, "2.0s")
    elif kind == "t1w_4d":
        write_nifti(anat / "sub-01_T1w.nii.gz", np.ones((8, 8, 8, 3)), np.eye(4))
    elif kind == "t1w_truncated":
        write_nifti(anat / "sub-01_T1w.nii.gz", np.random.default_rng(0).random((40, 40, 40)), np.eye(4))
        _truncate(anat / "sub-01_T1w.nii.gz")
    elif kind == "bold_truncated":
        _truncate(func / "sub-01_task-rest_bold.nii.gz")
    elif kind == "t1w_qform_sform":
        img = nib.load(anat / "sub-01_T1w.nii.gz")
        shifted = np.eye(4)
        shifted[0, 3] = 3.0
        img.set_sform(shifted, 1)
        nib.save(img, anat / "sub-01_T1w.nii.gz")
    elif kind == "non_ascii":
        (bids / "sub-01").rename(bids / "sub-ü02")
    elif kind == "fmriprep_nans":
        deriv = make_fmriprep_tree(bids / "derivatives" / "fmriprep", n_vols=200)
        bold = deriv / "sub-01" / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
        img = nib.load(bold)
        data = img.get_fdata(dtype=np.float32)
        data[2, 3, 3, 40:43] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine, img.header), bold)
    elif kind == "json_bom":
        sidecar = func / "sub-01_task-rest_bold.json"
        sidecar.write_bytes(b"\xef\xbb\xbf" + sidecar.read_bytes())
    elif kind == "json_broken":
        (bids / "dataset_description.json").write_text('{\n  "Name": "x",\n  "BIDSVersion": "1.9.0",\n}\n')
    elif kind == "fmriprep_json_broken":
        deriv = make_fmriprep_tree(bids / "derivatives" / "fmriprep", n_vols=200)
        (deriv / "sub-01" / "func" / "sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.json"
         ).write_text('{"RepetitionTime": 2.0 "SkullStripped": false}')
    elif kind.startswith("fmriprep_"):
        deriv = make_fmriprep_tree(bids / "derivatives" / "fmriprep", n_vols=200)
        dfunc, danat = deriv / "sub-01" / "func", deriv / "sub-01" / "anat"
        if kind == "fmriprep_confounds_rows":
            tsv = dfunc / "sub-01_task-rest_desc-confounds_timeseries.tsv"
            tsv.write_text("".join(tsv.read_text().splitlines(keepends=True)[:-20]))
        elif kind == "fmriprep_mask_grid":
            write_nifti(dfunc / "sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz",
                        np.ones((3, 3, 3)), np.diag([4.0, 4.0, 4.0, 1.0]))
        elif kind == "fmriprep_xfm_empty":
            (danat / "sub-01_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5").write_bytes(b"")
        elif kind == "fmriprep_xfm_damaged":
            (danat / "sub-01_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5").write_bytes(b"<html>not found")
    return bids


@pytest.mark.parametrize("kind, message", [
    ("fmriprep_confounds_rows", r"sub-01_task-rest_desc-confounds_timeseries.tsv has 180 rows but "
                                r"sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz has 200 "
                                r"volumes; use the confounds file of this run"),
    ("fmriprep_mask_grid", r"sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz is on another "
                           r"grid \(\(3, 3, 3\), 4, 4, 4 mm voxels\) than its BOLD "
                           r"sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz \(\(6, 6, 6\), "
                           r"2, 2, 2 mm\); use the brain mask fMRIPrep wrote with this BOLD"),
    ("fmriprep_xfm_empty", r"anat/sub-01_from-T1w_to-MNI152NLin2009cAsym_mode-image_xfm.h5: the transform file is "
                           r"empty; copy it again"),
    ("fmriprep_xfm_damaged", r"anat/sub-01_from-MNI152NLin2009cAsym_to-T1w_mode-image_xfm.h5: not an HDF5 file"),
    ("json_bom", r"bids/sub-01/func/sub-01_task-rest_bold.json: starts with a byte-order mark \(BOM\); save it as "
                 r"UTF-8 without BOM"),
    ("json_broken", r"bids/dataset_description.json: not valid JSON at line 4, column 1 \(Expecting property name "
                    r"enclosed in double quotes\); correct the file there"),
    ("fmriprep_json_broken", r"fmriprep/sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_"
                             r"bold.json: not valid JSON at line 1, column 24 \(Expecting ',' delimiter\)"),
    ("tr_ms", r"sub-01_task-rest_bold.json: RepetitionTime is 2000, more than 30 s: it looks like milliseconds; "
              r"BIDS wants seconds: write \"RepetitionTime\": 2"),
    ("tr_text", r"sub-01_task-rest_bold.json: RepetitionTime is '2.0s', not a number"),
    ("t1w_4d", r"sub-01_T1w.nii.gz is 4D with shape \(8, 8, 8, 3\); a T1w must be one 3D volume"),
    ("t1w_truncated", r"sub-01_T1w.nii.gz: cannot read this T1w \(EOFError: file ends in volume 0 of 1\); "
                      r"the file is truncated"),
    ("bold_truncated", r"sub-01_task-rest_bold.nii.gz: cannot read this BOLD run \(EOFError: file ends in volume "
                       r"\d+ of 200\); the file is truncated"),
    ("t1w_qform_sform", r"sub-01_T1w.nii.gz: qform and sform disagree by up to 3.00 mm"),
    ("non_ascii", r"sub-ü02: the subject folder name 'sub-ü02' is not a BIDS label .* e.g. to sub-u02"),
    ("fmriprep_nans", r"sub-01_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz contains NaN or "
                      r"infinite values inside the brain mask \(volumes 40-42, 3 values\); replace them"),
])
def test_input_checks_before_any_job_exit_2_and_write_nothing(tmp_path, capsys, kind, message):
    import re

    bids = preflight_dataset(tmp_path, kind)
    out = tmp_path / "out"
    code, text = run_cli(capsys, bids, out, "participant")
    assert code == 2, text
    assert re.search("tmstarget: error: .*" + message, text), text
    assert "Traceback" not in text
    assert not out.exists()


@pytest.mark.parametrize("where", [".", "derivatives", "derivatives/tmstarget", "sub-01"])
def test_output_inside_the_bids_dataset_is_refused(tmp_path, capsys, where):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = (bids / where).resolve()
    existed = out.exists()
    before = sorted(p.relative_to(bids) for p in bids.rglob("*"))
    code, text = run_cli(capsys, bids, out, "participant", "--dry-run")
    assert code == 2
    assert f"{out}: the output folder is inside the input dataset {bids.resolve()}" in text
    assert f"Choose a folder outside it, e.g. {tmp_path.resolve() / 'bids_tmstarget'}" in text
    assert sorted(p.relative_to(bids) for p in bids.rglob("*")) == before and out.exists() == existed


def test_read_only_output_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import errno
    from pathlib import Path

    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    real_mkdir = Path.mkdir

    def read_only(self, *a, **kw):  # root ignores permission bits: simulate a read-only mount instead
        if str(self).startswith(str(tmp_path / "out")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, text = run_cli(capsys, bids, tmp_path / "out", "participant", "--dry-run")
    assert code == 2
    assert text.strip() == (f"tmstarget: error: {tmp_path / 'out'}: cannot write to the output folder "
                            "(Read-only file system); choose a folder you can write to, or fix its permissions")


def test_header_tr_mismatch_is_a_warning(tmp_path, capsys, caplog):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    write_nifti(bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz",
                np.random.default_rng(0).random((6, 6, 6, 200)), tr=2.5)
    code, text = run_cli(capsys, bids, tmp_path / "out", "participant", "--dry-run")
    assert code == 0, text
    assert ("sub-01_task-rest_bold.nii.gz: header TR 2.5 s differs from the sidecar's RepetitionTime 2 s; "
            "using the sidecar (BIDS rule)") in caplog.text


# ----------------------------------------------------------------------------- verdict summary and exit status


def test_job_errors_carry_their_exit_class_and_unit(tmp_path):
    from tmstarget.bids.inputs import UnitInputs
    from tmstarget.run.cli import JobError, _belongs_to, exit_status, job_errors

    logs = tmp_path / "logs"
    for rel, line in (("denoise/sub-01/sub-01_fox.log", "ERROR: x.nii.gz: only 0.0 min of data kept [exit 3]"),
                      ("seedmap/sub-010/sub-010_Fox.log", "ERROR: mask.nii.gz: only 0 of 19 seed voxels [exit 2]"),
                      ("native/sub-02/sub-02.log", "ERROR: something odd"),
                      ("target/sub-03/sub-03.log", "INFO: fine")):
        (logs / rel).parent.mkdir(parents=True, exist_ok=True)
        (logs / rel).write_text(f"2026-01-01 10:00:00 tmstarget.run.steps {line}\n")
    old = logs / "target" / "sub-04" / "sub-04.log"  # a job that did not fail in this run: its log is not read
    old.parent.mkdir(parents=True)
    old.write_text("2025 tmstarget.run.steps ERROR: from an earlier run [exit 2]\n")
    # the jobs Snakemake reported failed (JOB_ERROR events, see run.engine): absolute and OUT-relative logs
    failed = [{"rule": "denoise", "jobid": 4, "log": [str(logs / "denoise/sub-01/sub-01_fox.log")]},
              {"rule": "seedmap", "jobid": 7, "log": ["logs/seedmap/sub-010/sub-010_Fox.log"]},
              {"rule": "native", "jobid": 9, "log": [str(logs / "native/sub-02/sub-02.log"), "/elsewhere/slurm.log"]},
              {"rule": "target", "jobid": 11, "log": [str(logs / "target/sub-03/sub-03.log")]}]
    errors = sorted(job_errors(failed, logs), key=lambda e: e.message)
    assert [(e.message, e.exit_code) for e in errors] == [
        ("mask.nii.gz: only 0 of 19 seed voxels", 2), ("something odd", 1), ("x.nii.gz: only 0.0 min of data kept", 3)]

    def unit(name, subject, session=None):
        return UnitInputs(unit=name, subdir=name.replace("_", "/"), subject=subject, session=session, runs=[],
                          anat={}, t1w_navigation="")

    qc_error = [e for e in errors if e.exit_code == 3][0]
    assert _belongs_to(qc_error, unit("sub-01", "01"), logs)
    assert not _belongs_to(qc_error, unit("sub-010", "010"), logs)
    assert not _belongs_to([e for e in errors if e.exit_code == 2][0], unit("sub-01", "01"), logs)
    shared_anat = JobError("T1w unreadable", 2, logs / "preprocess_anat" / "sub-05" / "anat" / "sub-05.log")
    assert _belongs_to(shared_anat, unit("sub-05_ses-1", "05", "1"), logs)

    ok = [("sub-01", {"status": "warn"}, None)]
    failed = ok + [("sub-02", {"status": "fail"}, None)]
    assert exit_status(ok, [], 0) == 0
    assert exit_status(failed, [], 0) == 3
    assert exit_status(failed, [qc_error], 1) == 3
    assert exit_status(failed, errors, 1) == 2          # a bad input wins: the user must fix it first
    assert exit_status(ok, [e for e in errors if e.exit_code != 2], 1) == 1   # an unexpected failure
    assert exit_status(ok, [], 1) == 1


# ----------------------------------------------------------------------------- settings of an output folder


def _saved_run(tmp_path, method="cluster"):
    """A dataset and an OUT whose first run saved its settings (as the CLI does) with ``method``."""
    from tmstarget.run.cli import _bids_app_parser, build_config
    from tmstarget.config.record import write_settings

    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    config = build_config(_bids_app_parser().parse_args([str(bids), str(out), "participant", "--method", method]))
    write_settings(config, out / "logs" / "config.yaml")
    return bids, out


@pytest.mark.parametrize("level", ["participant", "group"])
def test_changed_settings_stop_before_any_job(tmp_path, capsys, level):
    """Issue 21 item 5: a command whose settings differ from those that made OUT exits 2 at once, names
    the setting (saved -> new) and both ways forward, and writes nothing (no job, no log, no new config)."""

    bids, out = _saved_run(tmp_path, method="peak")
    saved = (out / "logs" / "config.yaml").read_text()
    other = tmp_path / "other.yaml"
    other.write_text("targeting:\n  method: cluster\n")
    code, text = run_cli(capsys, bids, out, level, "--config", other)
    assert code == 2
    assert f"tmstarget: error: {out} holds results made with other settings ({out / 'logs' / 'config.yaml'})" in text
    assert "    targeting.method: peak -> cluster\n" in text
    assert f"add `--config {out / 'logs' / 'config.yaml'}`" in text and "add --rerun-with-new-settings" in text
    assert sorted(p.name for p in out.rglob("*")) == ["config.yaml", "logs"]
    assert (out / "logs" / "config.yaml").read_text() == saved


def test_group_without_config_uses_the_participant_settings(tmp_path, capsys):
    from tmstarget.run.cli import _bids_app_parser, build_config
    from tmstarget.config.record import check_same_settings

    bids, out = _saved_run(tmp_path, method="peak")
    config = build_config(_bids_app_parser().parse_args([str(bids), str(out), "group"]))
    assert "group uses the settings of the participant run saved in" in capsys.readouterr().out
    assert config["targeting"]["method"] == "peak" and config["participant_label"] == []
    assert check_same_settings(config) == []
    # participant without --config is the default settings: refused, unless asked to rerun
    fresh = build_config(_bids_app_parser().parse_args([str(bids), str(out), "participant"]))
    with pytest.raises(Exception, match="targeting.method: peak -> cluster"):
        check_same_settings(fresh)
    assert check_same_settings(fresh, rerun_with_new_settings=True) == ["targeting.method: peak -> cluster"]
    # which subjects a run covers is not a setting
    subset = build_config(_bids_app_parser().parse_args([str(bids), str(out), "participant", "--method", "peak",
                                                         "--participant-label", "01"]))
    assert check_same_settings(subset) == []


def test_settings_of_another_version_are_named(tmp_path):
    from tmstarget import __version__
    from tmstarget.errors import InputError
    from tmstarget.config.record import check_same_settings, read_settings

    bids, out = _saved_run(tmp_path)
    path = out / "logs" / "config.yaml"
    config, version = read_settings(path)
    assert version == __version__
    path.write_text(path.read_text().replace(f"tmstarget {__version__}", "tmstarget 0.0.1", 1))
    with pytest.raises(InputError, match=rf"tmstarget version: 0.0.1 -> {__version__}"):
        check_same_settings(config)


def test_fmriprep_consistency_checks_take_well_under_a_second(tmp_path):
    """The confounds/mask-grid/transform checks read headers and tables only (issue 21 item 7: cheap
    checks before any job, not after 50-100 s of jobs)."""
    import time

    from tmstarget.bids.inputs import make_plan
    from tmstarget.config.settings import load_config
    from tmstarget.bids.preflight import check_fmriprep_inputs
    import tmstarget.denoise.confounds  # noqa: F401 (its import, shared with the image scan that follows, is not timed)

    bids = preflight_dataset(tmp_path, "fmriprep_ok")
    plan = make_plan(load_config(None, {"bids_dir": str(bids), "output_dir": str(tmp_path / "out")}))
    t0 = time.perf_counter()
    assert check_fmriprep_inputs(plan) == 1
    assert time.perf_counter() - t0 < 1.0


# ----------------------------------------------------------------------------- a stop names its cause (issue 21 item 4)


def test_a_jobs_disk_full_error_names_the_file_and_the_free_space(tmp_path):
    import errno

    from tmstarget.run.steps import os_error_message

    out_html = tmp_path / "out" / "tmstarget" / "sub-01.html"  # its folder does not exist yet: the nearest one is used
    text = os_error_message(OSError(errno.ENOSPC, "No space left on device"), [str(out_html), ["a", "b"]])
    assert text.startswith(f"No space left on device writing {out_html} (")
    assert text.endswith(f" MB free in {tmp_path}); free space there or choose another OUTPUT_DIR")
    named = os_error_message(PermissionError(errno.EACCES, "Permission denied", "/x/y.nii.gz"), [str(out_html)])
    assert named == "Permission denied writing /x/y.nii.gz"


def test_stopped_line_names_the_cause_and_the_log(tmp_path):
    import time

    from tmstarget.run.cli import JobError, _os_error_cause, _stopped_line

    log = tmp_path / "logs" / "report" / "sub-01.log"
    err = JobError("No space left on device writing /o/tmstarget/sub-01.html (0 MB free in /o/tmstarget)", 1, log)
    assert _stopped_line([err], None, tmp_path) == (
        f"tmstarget: the workflow stopped: {err.message}; log: {log}. Fix the cause and run the same command "
        "again: finished steps are kept.")
    # Snakemake itself died on the full disk: no tmstarget message, the errno line of its own log is the cause
    start = time.time() - 1
    smk_log = tmp_path / ".snakemake" / "log" / "2026-12-07T180000.snakemake.log"
    smk_log.parent.mkdir(parents=True)
    smk_log.write_text("Building DAG of jobs...\nOSError: [Errno 28] No space left on device: '/o/.snakemake/x'\n")
    (tmp_path / "logs").mkdir()
    cause = _os_error_cause(tmp_path / "logs", tmp_path, start)
    assert cause == ("OSError: [Errno 28] No space left on device: '/o/.snakemake/x'", smk_log)
    assert _stopped_line([], cause, tmp_path).startswith(
        "tmstarget: the workflow stopped: OSError: [Errno 28] No space left on device: '/o/.snakemake/x'; "
        f"log: {smk_log}.")


def test_a_unit_without_its_report_is_not_pass(tmp_path, capsys):
    from types import SimpleNamespace

    from tmstarget.run.cli import print_summary

    deriv = tmp_path / "tmstarget"
    deriv.mkdir()
    plan = SimpleNamespace(output_dir=str(tmp_path))
    native = {"target_mni_ras_mm": [-42.0, 42.0, 30.0], "target_t1w_ras_mm": [-38.0, 36.0, 33.0]}
    verdict = {"status": "pass", "status_word": "PASS", "reasons": [], "action": "use"}
    (deriv / "sub-02.html").write_text("<html></html>")
    print_summary(plan, [("sub-01", verdict, native), ("sub-02", verdict, native)])
    text = capsys.readouterr().out
    assert "sub-01: NOT FINISHED \u2014 no target\n  - the verdict was PASS but the report sub-01.html was not written\n" \
        in text
    assert "sub-02: PASS \u2014 target MNI RAS mm (-42.0, 42.0, 30.0)" in text and "sub-01: PASS" not in text


def test_rerun_with_new_settings_goes_ahead_and_a_dry_run_keeps_the_saved_settings(tmp_path, capsys):
    bids, out = _saved_run(tmp_path, method="peak")
    saved = (out / "logs" / "config.yaml").read_text()
    code, text = run_cli(capsys, bids, out, "participant", "--method", "cluster", "--rerun-with-new-settings",
                         "--dry-run", "--cores", "1")
    assert code == 0, text
    assert f"tmstarget: --rerun-with-new-settings: recomputing the results in {out} with changed settings: " \
           "targeting.method: peak -> cluster" in text
    # a dry run computes nothing, so OUT's settings stay those of its results; Snakemake read the dry run's copy
    assert (out / "logs" / "config.yaml").read_text() == saved
    assert "method: cluster" in (out / "logs" / "config.dry-run.yaml").read_text()
    record = (out / "logs" / "commands.jsonl").read_text().splitlines()
    assert len(record) == 1 and '"command_line": "tmstarget ' in record[0] and "--rerun-with-new-settings" in record[0]


# ----------------------------------------------------------------------------- Snakemake through its API (run.engine)


def test_failed_jobs_come_from_snakemakes_job_error_events(tmp_path):
    """A two-rule workflow where one job fails: run_workflow reports that job (rule, log) and no other, and
    job_errors reads its message and exit class from that log."""
    from tmstarget.run.cli import job_errors, run_workflow

    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        "rule all:\n    input: 'ok.txt', 'bad.txt'\n"
        "rule ok:\n    output: 'ok.txt'\n    log: 'logs/ok.log'\n    shell: 'echo fine > {log}; touch {output}'\n"
        "rule bad:\n    output: 'bad.txt'\n    log: 'logs/bad/sub-01.log'\n"
        "    shell: 'echo \"2026 tmstarget.run.steps ERROR: seed mask empty [exit 2]\" > {log}; exit 2'\n")
    out = tmp_path / "out"
    code, failed = run_workflow(["--snakefile", str(snakefile), "--directory", str(out), "--cores", "1",
                                 "--keep-going"])
    assert code == 1
    assert [(job["rule"], job["log"]) for job in failed] == [("bad", ["logs/bad/sub-01.log"])]
    errors = job_errors(failed, out / "logs")
    assert [(e.message, e.exit_code, e.log) for e in errors] == [
        ("seed mask empty", 2, out / "logs" / "bad" / "sub-01.log")]
    assert (out / "ok.txt").exists()
    # a stale lock (as a killed run leaves it) blocks a plain run; Snakemake's unlock first lets it go ahead
    (out / ".snakemake" / "locks").mkdir(parents=True, exist_ok=True)
    (out / ".snakemake" / "locks" / "0.output.lock").write_text("ok.txt\n")  # Snakemake keys: paths in OUT
    args = ["--snakefile", str(snakefile), "--directory", str(out), "--cores", "1", "ok.txt", "--forcerun", "ok"]
    assert run_workflow(args)[0] == 1
    assert run_workflow(args, unlock=True) == (0, [])
    assert not list((out / ".snakemake" / "locks").glob("*.lock"))


def test_dry_run_prints_a_short_summary_and_verbose_the_listing(tmp_path, capfd):
    """Issue 23 item 3: without --verbose a dry run prints the jobs per rule and per unit, not Snakemake's
    listing of every job's files; with --verbose that listing, as Snakemake prints it."""
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--dry-run", "--cores", "1"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[1:] == [
        "dry run: 15 job(s) would run (tmstarget --verbose lists them with their files)",
        "  jobs per rule: dataset_description 1, denoise 2, exports 1, maps_to_t1w 1, masks 1, native 1, "
        "preproc_description 1, preprocess_anat 1, preprocess_bold 1, registration_qc 1, report 1, seedmap 1, "
        "target 1, verdict 1",
        "  jobs per unit: sub-01 with 13 job(s); the dataset with 2 job(s)"]
    assert main([str(bids), str(out), "participant", "--dry-run", "--cores", "1", "--verbose"]) == 0
    verbose = capfd.readouterr()
    assert "rule preprocess_anat:" in verbose.out and "wildcards: anat=sub-01/anat/sub-01" in verbose.out
    assert "dry run:" not in verbose.out


def test_snakemake_gets_the_concise_logger_and_the_targets(tmp_path, monkeypatch, capsys):
    """The Snakemake options of a participant run: ``--logger tmstarget`` (the concise terminal, run.progress)
    without taking the target ``participant`` as a second logger name; the jobs' output file; none with --verbose."""
    from snakemake.cli import parse_args

    from tmstarget.run import cli, engine

    calls = []
    monkeypatch.setattr(cli, "run_workflow", lambda args, unlock=False, job_output=None: (
        calls.append((args, job_output)) or (0, [])))
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    engine.register_concise_logger()
    for verbose in ([], ["--verbose"]):
        main([str(bids), str(out), "participant", "--cores", "1", *verbose])
        args, job_output = calls[-1]
        _, parsed = parse_args(args)
        assert parsed.targets == ["participant"]
        assert parsed.logger == ([] if verbose else ["tmstarget"])
        assert job_output == (None if verbose else out / "logs" / "job_output.txt")
    text = capsys.readouterr().out
    assert text.count(f"tmstarget: Snakemake's full log goes to {out / '.snakemake' / 'log'}, the jobs' own output to "
                      f"{out / 'logs' / 'job_output.txt'} (--verbose shows them here)") == 1
