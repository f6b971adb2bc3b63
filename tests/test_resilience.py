"""The whole downstream workflow on a small complete fMRIPrep tree (real antspyx .h5 transforms):
fMRIPrep route end to end, kill-and-resume with identical outputs, and job-level bad input
(each with its exact error, a non-zero exit, and no output of the failed step).

The tree (``tests/builders/mini_fmriprep.py``) is small enough that a full run takes well under a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from builders.bids import make_raw_bids
from builders.mini_fmriprep import NATIVE_SHIFT_RAS_MM, PLANTED_TARGET_MNI_RAS_MM, SPACE, make_mini_fmriprep

from tmstarget.navigation.localite import localite_timestamp

pytestmark = pytest.mark.slow

FUNC = Path("derivatives/fmriprep/sub-01/func")
BOLD = f"sub-01_task-rest_space-{SPACE}_res-2_desc-preproc_bold.nii.gz"
MASK = f"sub-01_task-rest_space-{SPACE}_res-2_desc-brain_mask.nii.gz"
CONFOUNDS = "sub-01_task-rest_desc-confounds_timeseries.tsv"
FAST = "targeting:\n  bootstrap_samples: 10\n  split_half_max_splits: 4\n"


def cli(bids, out, config, *extra, **popen):
    cmd = [sys.executable, "-m", "tmstarget.run.cli", str(bids), str(out), "participant", "--config", str(config),
           "--cores", "2", *extra]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    bids = make_raw_bids(root / "bids", n_vols=160)
    make_mini_fmriprep(bids / "derivatives" / "fmriprep")
    config = root / "fast.yaml"
    config.write_text(FAST)
    return root, bids, config


@pytest.fixture(scope="module")
def clean_run(mini):
    root, bids, config = mini
    out = root / "out_clean"
    result = cli(bids, out, config)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def copy_variant(mini, name) -> Path:
    root, bids, _ = mini
    dst = root / name
    shutil.copytree(bids, dst)
    return dst


LOCALITE_STAMP = re.compile(r"(?<=Marker|Target)\d{17}(?=\.xml)")  # InstrumentMarker<stamp>, EntryTarget<stamp>


def output_files(out: Path) -> dict[str, Path]:
    """Output files by path under ``out``; the Localite files' run-time stamp (the time of each run's
    T1w-space target, which two runs cannot share) is written as ``<stamp>``."""
    return {LOCALITE_STAMP.sub("<stamp>", p.relative_to(out).as_posix()): p
            for p in sorted((out / "tmstarget").rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the fMRIPrep route


def test_fmriprep_route_recovers_target_and_maps_it_with_the_h5_transforms(clean_run):
    out, result = clean_run
    target = json.loads((out / "tmstarget" / "sub-01" / "func" /
                         f"sub-01_task-rest_space-{SPACE}_desc-target_markers.json").read_text())
    native = json.loads((out / "tmstarget" / "sub-01" / "anat" /
                         "sub-01_space-T1w_desc-target_markers.json").read_text())
    mni = np.asarray(target["target_mni_ras_mm"])
    # planted 6 mm-wide effect on a 4 mm grid: within one voxel diagonal
    assert np.linalg.norm(mni - PLANTED_TARGET_MNI_RAS_MM) < 7.0, mni
    # the tree's T1w world is MNI + a known shift; the .h5 transforms must reproduce it exactly
    t1w = np.asarray(native["target_t1w_ras_mm"])
    assert np.allclose(t1w, mni + NATIVE_SHIFT_RAS_MM, atol=0.05), (t1w, mni)
    assert native["roundtrip_error_mm"] < 0.1
    coordsystem = json.loads((out / "tmstarget" / "sub-01" / "anat" / "sub-01_space-T1w_coordsystem.json").read_text())
    assert coordsystem["IntendedFor"] == "bids:fmriprep:sub-01/anat/sub-01_desc-preproc_T1w.nii.gz"
    # the Fisher z map in T1w space is the MNI map moved by the same shift: equal values at matching points
    func, anat = out / "tmstarget" / "sub-01" / "func", out / "tmstarget" / "sub-01" / "anat"
    z_mni = nib.load(func / f"sub-01_task-rest_space-{SPACE}_desc-sgaccFox_stat-fisherz_boldmap.nii.gz")
    z_t1w = nib.load(anat / "sub-01_task-rest_space-T1w_desc-sgaccFox_stat-fisherz_boldmap.nii.gz")
    t1w = nib.load(Path(out).parent / "bids" / "derivatives" / "fmriprep" / "sub-01" / "anat" /
                   "sub-01_desc-preproc_T1w.nii.gz")
    assert z_t1w.shape == t1w.shape and np.allclose(z_t1w.affine, t1w.affine)
    ijk_mni = np.round(nib.affines.apply_affine(np.linalg.inv(z_mni.affine), mni)).astype(int)
    voxel_centre_mni = nib.affines.apply_affine(z_mni.affine, ijk_mni)
    ijk_t1w = nib.affines.apply_affine(np.linalg.inv(z_t1w.affine), voxel_centre_mni + NATIVE_SHIFT_RAS_MM)
    assert np.allclose(ijk_t1w, np.round(ijk_t1w), atol=1e-3)  # the 4 mm centre falls on a 2 mm T1w voxel
    expected = z_mni.get_fdata()[tuple(ijk_mni)]
    got = z_t1w.get_fdata()[tuple(np.round(ijk_t1w).astype(int))]
    assert expected < -0.3 and got == pytest.approx(expected, abs=1e-4)
    # 5.3 min kept: WARN, with the coordinate, the reason and the action (exit 0)
    t1w_mm = native["target_t1w_ras_mm"]
    assert (f"sub-01: WARN \u2014 target MNI RAS mm ({mni[0]:.1f}, {mni[1]:.1f}, {mni[2]:.1f}) / T1w RAS mm "
            f"({t1w_mm[0]:.1f}, {t1w_mm[1]:.1f}, {t1w_mm[2]:.1f})") in result.stdout
    assert "  - only 5.3 min of data kept after censoring (below 8 min targets are less reliable)" in result.stdout
    assert ("  action: usable for research with care: acquire 3 more minutes of resting-state data (this run kept "
            "5.3 min, 8 min give a more reliable target)") in result.stdout  # ceil(8 min warn limit - 5.3)
    verdict = json.loads((out / "tmstarget" / "sub-01" / "sub-01_desc-verdict_qc.json").read_text())
    assert verdict["status"] == "warn" and verdict["coordinate_usable"] is True
    nav = out / "tmstarget" / "sub-01" / "nav"
    stamp = localite_timestamp(out / "tmstarget" / "sub-01" / "anat" / "sub-01_space-T1w_desc-target_markers.json")
    assert sorted(str(p.relative_to(nav)) for p in nav.rglob("*") if p.is_file() and not p.name.startswith(".")) == [
        "README.txt",
        f"localite/EntryTarget/EntryTarget{stamp}.xml",
        f"localite/InstrumentMarkers/InstrumentMarker{stamp}.xml",
        "sub-01_desc-target_brainsight.txt", "sub-01_desc-target_slicer.mrk.json",
        "sub-01_desc-target_visor2.mrk"]


def test_snakemake_report_holds_every_reportlet(mini, clean_run, tmp_path):
    from tmstarget.report import reportlet_titles

    root, bids, config = mini
    out, _ = clean_run
    report = tmp_path / "snakemake_report.html"
    result = cli(bids, out, config, "--", "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 500_000
    for name, title, _ in reportlet_titles():
        assert name in html and title.split(",")[0] in html, name


def test_fmriprep_bold_only_in_t1w_space(mini, clean_run):
    """fMRIPrep run with --output-spaces T1w only: the BOLD is resampled into the template through
    the T1w->MNI .h5 transform and gives the target of the MNI-space route."""
    root, _, config = mini
    bids = copy_variant(mini, "bids_t1w_space")
    func = bids / FUNC
    shifted = {}
    for name in (BOLD, MASK):
        img = nib.load(func / name)
        affine = img.affine.copy()
        affine[:3, 3] += NATIVE_SHIFT_RAS_MM  # the same voxels, placed in the tree's T1w world
        out = nib.Nifti1Image(np.asanyarray(img.dataobj), affine, img.header)
        out.set_qform(affine, 1)
        out.set_sform(affine, 1)
        shifted[name.replace(f"space-{SPACE}", "space-T1w")] = out
    for path in func.glob(f"*space-{SPACE}*"):
        path.unlink()
    for name, img in shifted.items():
        nib.save(img, func / name)
    (func / BOLD.replace(f"space-{SPACE}", "space-T1w").replace(".nii.gz", ".json")).write_text(
        json.dumps({"RepetitionTime": 2.0}))
    out = root / "out_t1w_space"
    result = cli(bids, out, config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resampled = out / "work" / "sub-01" / f"sub-01_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"
    assert nib.load(resampled).shape[3] == 160
    def target(o):
        return np.asarray(json.loads((o / "tmstarget" / "sub-01" / "func" /
                                      f"sub-01_task-rest_space-{SPACE}_desc-target_markers.json").read_text())
                          ["target_mni_ras_mm"])
    mni = target(out)
    print("T1w-space route target", mni, "MNI route", target(clean_run[0]))
    assert np.linalg.norm(mni - PLANTED_TARGET_MNI_RAS_MM) < 7.0
    assert np.linalg.norm(mni - target(clean_run[0])) <= 4.5  # one 4 mm voxel: resampled once more
    native = json.loads((out / "tmstarget" / "sub-01" / "anat" / "sub-01_space-T1w_desc-target_markers.json").read_text())
    assert np.allclose(native["target_t1w_ras_mm"], mni + NATIVE_SHIFT_RAS_MM, atol=0.05)


# ----------------------------------------------------------------------------- kill and resume


def _same_json(a: Path, b: Path) -> bool:
    return json.loads(a.read_text()) == json.loads(b.read_text())


def test_killed_run_resumes_to_identical_outputs(mini, clean_run):
    root, bids, config = mini
    clean_out, _ = clean_run
    out = root / "out_killed"
    proc = cli(bids, out, config, start_new_session=True)
    # kill the whole process group (CLI, snakemake, running jobs) once the first denoised data exist
    marker = out / "work" / "sub-01" / "sub-01_desc-fox_denoised.npz"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_state = output_files(out)
    # what the killed run left under final names is complete: every image and JSON reads
    for rel, path in killed_state.items():
        if path.name.endswith(".nii.gz"):
            np.asarray(nib.load(path).dataobj)
        elif path.suffix == ".json":
            json.loads(path.read_text())
    assert not (out / "tmstarget" / "sub-01.html").exists()

    result = cli(bids, out, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not list(out.rglob(".*.tmp*")), "temporary files of the killed run were left behind"
    clean, resumed = output_files(clean_out), output_files(out)
    assert sorted(clean) == sorted(resumed)
    differ = []
    for rel in clean:
        a, b = clean[rel], resumed[rel]
        if rel.endswith(".nii.gz"):
            same = np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj),
                                  equal_nan=True) and np.allclose(nib.load(a).affine, nib.load(b).affine)
        elif rel.endswith(".json"):
            same = _same_json(a, b)
        elif rel.endswith(".html"):
            continue  # embeds the report's creation time; its numbers come from the JSON compared here
        elif rel.endswith("nav/README.txt"):  # names the Localite files, with each run's own stamp
            same = LOCALITE_STAMP.sub("<stamp>", a.read_text()) == LOCALITE_STAMP.sub("<stamp>", b.read_text())
        else:
            same = a.read_bytes() == b.read_bytes()
        if not same:
            differ.append(rel)
    assert not differ, f"outputs differ between the clean and the resumed run: {differ}"


# ----------------------------------------------------------------------------- job-level bad input


def _censor_everything(bids: Path) -> None:
    path = bids / FUNC / CONFOUNDS
    table = pd.read_csv(path, sep="\t", na_values="n/a")
    table.loc[1:, "framewise_displacement"] = 2.0
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")


def _put_nans(bids: Path) -> None:
    img = nib.load(bids / FUNC / BOLD)
    data = img.get_fdata(dtype=np.float32)
    data[20, 30, 20:25, :] = np.nan  # inside the brain
    nib.save(nib.Nifti1Image(data, img.affine, img.header), bids / FUNC / BOLD)


def _truncate(bids: Path) -> None:
    raw = (bids / FUNC / BOLD).read_bytes()
    (bids / FUNC / BOLD).write_bytes(raw[: len(raw) // 2])


def _cut_seed_from_fov(bids: Path) -> None:
    img = nib.load(bids / FUNC / MASK)
    mask = np.asarray(img.dataobj).copy()
    mask[:, :, :18] = 0  # below z = 2 mm: the field of view misses the sgACC at z = -10
    nib.save(nib.Nifti1Image(mask, img.affine, img.header), bids / FUNC / MASK)


@pytest.mark.parametrize("kind, damage, code, message, failed_output", [
    ("censored", _censor_everything, 3,
     rf"{BOLD}: only 0.0 min of data kept after censoring \(FD > 0.5 mm, 0 of 160 volumes\); at least 5 min",
     "work/sub-01/sub-01_desc-fox_denoised.npz"),
    ("seed_outside_fov", _cut_seed_from_fov, 2,
     rf"{MASK}: only 0 of \d+ seed voxels are inside the BOLD brain mask \(field of view or sgACC signal dropout\)",
     f"tmstarget/sub-01/func/sub-01_space-{SPACE}_desc-sgacc_mask.nii.gz"),
])
def test_job_level_bad_input_stops_with_its_error(mini, kind, damage, code, message, failed_output):
    """A job's own exit class reaches the CLI: QCFailure (all censored) exits 3, an InputError found
    inside a job exits 2; the subject is reported FAIL with that reason and no coordinate."""
    import re

    root, _, config = mini
    bids = copy_variant(mini, f"bids_{kind}")
    damage(bids)
    out = root / f"out_{kind}"
    result = cli(bids, out, config)
    assert result.returncode == code, result.stdout[-2000:] + result.stderr[-3000:]
    assert "tmstarget: the workflow stopped." in result.stderr
    assert re.search(message, result.stderr), result.stderr[-3000:]
    assert "Traceback" not in result.stderr.split("tmstarget: the workflow stopped.")[1]
    assert "sub-01: FAIL \u2014 no usable target (coordinate withheld)" in result.stdout
    assert re.search("  - " + message, result.stdout), result.stdout[-3000:]
    action = {3: "  action: do not use this coordinate: the data failed a quality threshold; re-scan",
              2: "  action: do not use; fix the input named above and run the same command again"}[code]
    assert action in result.stdout
    # nothing of the failed step, and nothing downstream, exists under a final name
    assert not (out / failed_output).exists()
    assert not list((out / "tmstarget").rglob("*_desc-target_markers.json"))
    assert not list((out / "tmstarget").rglob("*.html"))
    assert not list((out / "tmstarget").rglob("nav/*"))
    assert not list(out.rglob(".*.tmp*"))


@pytest.mark.parametrize("kind, damage, message", [
    ("nans", _put_nans,
     rf"{BOLD} contains NaN or infinite values inside the brain mask \(volumes 0-159, \d+ values\); replace them"),
    ("truncated", _truncate,
     rf"{BOLD}: cannot read this BOLD run \(EOFError: file ends in volume \d+ of 160\); the file is truncated"),
])
def test_damaged_input_is_refused_before_any_job(mini, kind, damage, message):
    """NaNs and truncated files are found by reading the inputs once before any job: exit 2, nothing written."""
    import re

    root, _, config = mini
    bids = copy_variant(mini, f"bids_{kind}")
    damage(bids)
    out = root / f"out_{kind}"
    result = cli(bids, out, config)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search("tmstarget: error: " + message, result.stderr), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_failing_subject_exits_3_with_its_report_and_no_navigator_file(mini, tmp_path):
    """A unit that FAILs a configured threshold (here qc.fail_mean_fd_mm below the data's 0.10 mm): the
    verdict, the report and the group table say FAIL, the terminal shows no coordinate, nav/ holds only
    NOT_EXPORTED.txt, and the run exits 3 after writing the report."""
    root, bids, _ = mini
    config = tmp_path / "strict.yaml"
    config.write_text(FAST + "qc:\n  fail_mean_fd_mm: 0.05\n  warn_mean_fd_mm: 0.04\n")
    out = root / "out_fail"
    cmd = [sys.executable, "-m", "tmstarget.run.cli", str(bids), str(out), "group", "--config", str(config),
           "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    deriv = out / "tmstarget"
    verdict = json.loads((deriv / "sub-01" / "sub-01_desc-verdict_qc.json").read_text())
    assert verdict["status"] == "fail" and verdict["coordinate_usable"] is False
    assert verdict["reasons"][0] == "mean framewise displacement 0.10 mm (above 0.05 mm)"
    assert verdict["thresholds"]["fail_mean_fd_mm"] == {"value": 0.05, "config_key": "qc.fail_mean_fd_mm"}
    lines = result.stdout.splitlines()
    i = lines.index("sub-01: FAIL \u2014 no usable target (coordinate withheld)")
    assert lines[i + 1] == "  - mean framewise displacement 0.10 mm (above 0.05 mm)"
    assert lines[i + 3] == "  action: do not use this coordinate: re-scan with less head motion (padding, instructions)"
    assert "target MNI RAS mm" not in result.stdout
    assert (deriv / "sub-01.html").exists()
    assert sorted(p.name for p in (deriv / "sub-01" / "nav").iterdir() if not p.name.startswith(".")) == ["NOT_EXPORTED.txt"]
    assert "verdict is FAIL" in (deriv / "sub-01" / "nav" / "NOT_EXPORTED.txt").read_text()
    tsv = pd.read_csv(deriv / "group_targets.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    assert tsv["status"].tolist() == ["fail"] and tsv["coordinate_usable"].tolist() == [False]
    assert np.isnan(tsv["target_mni_x"].iloc[0]) and np.isnan(tsv["target_t1w_x"].iloc[0])
    assert tsv["reasons"].iloc[0].startswith("mean framewise displacement 0.10 mm (above 0.05 mm)")


# ----------------------------------------------------------------------------- issue 21: group run, disk full


def test_group_run_with_one_subject_all_censored_lists_both_and_exits_3(tmp_path):
    """Issue 21 item 3: sub-02 has every volume censored (its denoise step stops with a QCFailure); the
    group run still writes group_targets.tsv and group.html with both subjects, sub-02 FAIL with the
    step's reason and no coordinate, sub-01 with its target; exit 3."""
    bids = make_raw_bids(tmp_path / "bids", subjects=("01", "02"), n_vols=160)
    for sub in ("01", "02"):
        make_mini_fmriprep(bids / "derivatives" / "fmriprep", sub=sub)
    confounds = bids / "derivatives/fmriprep/sub-02/func/sub-02_task-rest_desc-confounds_timeseries.tsv"
    table = pd.read_csv(confounds, sep="\t", na_values="n/a")
    table.loc[1:, "framewise_displacement"] = 2.0
    table.to_csv(confounds, sep="\t", index=False, na_rep="n/a")
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tmstarget.run.cli", str(bids), str(out), "group", "--config", str(config), "--cores", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-3000:]
    deriv = out / "tmstarget"
    tsv = pd.read_csv(deriv / "group_targets.tsv", sep="\t", na_values="n/a", keep_default_na=False)
    assert tsv["unit"].tolist() == ["sub-01", "sub-02"]
    assert tsv["status"].tolist() == ["warn", "fail"] and tsv["coordinate_usable"].tolist() == [True, False]
    assert tsv["reasons"].iloc[1].startswith(
        "sub-02_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz: only 0.0 min of data kept after "
        "censoring (FD > 0.5 mm, 0 of 160 volumes)")
    assert np.isnan(tsv["target_mni_x"].iloc[1]) and pd.isna(tsv["report_html"].iloc[1])  # n/a: no report
    sub01 = json.loads((deriv / "sub-01" / "func" / f"sub-01_task-rest_space-{SPACE}_desc-target_markers.json"
                        ).read_text())["target_mni_ras_mm"]
    assert [tsv[f"target_mni_{a}"].iloc[0] for a in "xyz"] == pytest.approx(sub01, abs=0.01)
    page = (deriv / "group.html").read_text()
    assert "2 unit(s): 0 pass, 1 warn, 1 fail." in page
    assert '<a href="sub-01.html">sub-01</a>' in page and "<td>sub-02</td><td><span class='badge fail'>fail" in page
    assert "only 0.0 min of data kept after censoring" in page
    assert "sub-02: FAIL \u2014 no usable target (coordinate withheld)" in result.stdout
    assert f"dataset report {deriv / 'group.html'}" in result.stdout


def test_disk_full_at_the_report_step_names_the_cause_and_the_log(mini, clean_run, tmp_path):
    """Issue 21 item 4: OUT on a 60 MB tmpfs that is full when the report is written. The last line names
    the cause (no space left, which file) and the job's log; the unit is not shown as PASS/WARN; exit 1."""
    root, bids, config = mini
    clean_out, _ = clean_run
    out = tmp_path / "out"
    out.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(out)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        subprocess.run(["cp", "-a", f"{clean_out}/.", str(out)], check=True)
        (out / "tmstarget" / "sub-01.html").unlink()
        for path in (out / "work" / "reportlets" / "sub-01").iterdir():
            path.unlink()
        free = shutil.disk_usage(out).free
        with open(out / "filler", "wb") as f:  # leave 300 kB: the jobs' logs fit, the 1 MB report does not
            f.write(b"\0" * (free - 300_000))
        result = cli(bids, out, config)
        last = result.stderr.strip().splitlines()[-1]
    finally:
        subprocess.run(["umount", str(out)], check=False)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert last.startswith(f"tmstarget: the workflow stopped: No space left on device writing "
                           f"{out / 'tmstarget' / 'sub-01.html'} ("), last
    assert last.endswith(f"; log: {out / 'logs' / 'report' / 'sub-01.log'}. Fix the cause and run the same command "
                         "again: finished steps are kept."), last
    assert "sub-01: WARN" not in result.stdout and "sub-01: PASS" not in result.stdout
    assert "sub-01: FAIL \u2014 no usable target (coordinate withheld)" in result.stdout
    assert "report: " not in result.stdout
