"""The input plan made once and saved in OUT/logs/plan.json (tmstarget.bids.plan_store): round trip, every
kind of change that makes it stale, the trusted load of scheduler jobs, and the Snakefile reading it; and the
Snakemake job groups that make one scheduler job per unit (dry runs with the SLURM profiles; the real SLURM
run is tests/test_slurm.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builders.bids import make_fmriprep_tree, make_raw_bids
from tmstarget.bids import plan_store
from tmstarget.bids.inputs import make_plan
from tmstarget.config.settings import REPO_ROOT, SNAKEFILE, load_config


def _config(bids: Path, out: Path, **overrides) -> dict:
    return load_config(None, {"bids_dir": str(bids), "output_dir": str(out), **overrides})


@pytest.fixture
def raw_two(tmp_path):
    bids = make_raw_bids(tmp_path / "bids", subjects=("01", "02"), n_vols=160)  # 5.3 min: above min_retained_minutes
    return bids, tmp_path / "out"


def _count_make_plan(monkeypatch) -> list:
    """Replace plan_store's make_plan by a counting wrapper; the list grows by one per call."""
    calls = []

    def counting(config):
        calls.append(1)
        return make_plan(config)

    monkeypatch.setattr(plan_store, "make_plan", counting)
    return calls


def test_round_trip_raw_route(raw_two):
    bids, out = raw_two
    config = _config(bids, out)
    plan = make_plan(config)
    path = plan_store.save_plan(plan, config)
    assert path == out.resolve() / "logs" / "plan.json"
    loaded = plan_store.load_plan(path)
    assert loaded == plan
    assert list(loaded.units) == ["sub-01", "sub-02"]
    assert loaded.bold_jobs == plan.bold_jobs and loaded.units["sub-02"].runs[0].t_r == 2.0
    # no temporary file of the atomic write is left beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["plan.json"]


def test_round_trip_fmriprep_route(tmp_path):
    bids = make_raw_bids(tmp_path / "bids")
    make_fmriprep_tree(bids / "derivatives" / "fmriprep", n_vols=160)
    config = _config(bids, tmp_path / "out")
    plan = make_plan(config)
    assert plan.route == "fmriprep"
    loaded = plan_store.load_plan(plan_store.save_plan(plan, config))
    assert loaded == plan


def test_second_parse_loads_the_saved_plan_without_planning(raw_two, monkeypatch):
    bids, out = raw_two
    calls = _count_make_plan(monkeypatch)
    first = plan_store.load_or_make_plan(_config(bids, out))
    assert (first.action, first.reason, len(calls)) == ("made", "no saved plan", 1)
    second = plan_store.load_or_make_plan(_config(bids, out))
    assert (second.action, len(calls)) == ("loaded", 1)
    assert second.plan == first.plan
    log = (out / "logs" / "plan.log").read_text().splitlines()
    assert [line.split()[4] for line in log] == ["made", "loaded"]
    assert all("mode=main" in line and "units=2" in line for line in log)


def test_added_subject_makes_it_stale(raw_two, monkeypatch):
    bids, out = raw_two
    calls = _count_make_plan(monkeypatch)
    plan_store.load_or_make_plan(_config(bids, out))
    shutil.copytree(bids / "sub-02", bids / "sub-03")
    for path in sorted((bids / "sub-03").rglob("*sub-02*")):
        path.rename(path.with_name(path.name.replace("sub-02", "sub-03")))
    again = plan_store.load_or_make_plan(_config(bids, out))
    assert again.action == "made" and len(calls) == 2
    assert again.reason == "stale: sub-03 added"
    assert list(again.plan.units) == ["sub-01", "sub-02", "sub-03"]
    # the new plan was saved: the next parse loads it
    assert plan_store.load_or_make_plan(_config(bids, out)).action == "loaded" and len(calls) == 2


def test_removed_subject_makes_it_stale(raw_two):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    shutil.rmtree(bids / "sub-02")
    again = plan_store.load_or_make_plan(_config(bids, out))
    assert (again.action, again.reason, list(again.plan.units)) == ("made", "stale: sub-02 removed", ["sub-01"])


def test_changed_file_size_makes_it_stale(raw_two):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    sidecar = bids / "sub-01" / "func" / "sub-01_task-rest_bold.json"
    stat = sidecar.stat()
    sidecar.write_text(json.dumps({"RepetitionTime": 2.25, "TaskName": "rest"}))  # one byte longer
    os.utime(sidecar, ns=(stat.st_atime_ns, stat.st_mtime_ns))                    # same mtime
    again = plan_store.load_or_make_plan(_config(bids, out))
    assert (again.action, again.reason) == ("made", "stale: sub-01 files changed")
    assert again.plan.units["sub-01"].runs[0].t_r == 2.25   # the new sidecar, not the saved plan's 2.0


def test_changed_mtime_only_makes_it_stale(raw_two):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    image = bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))   # 1 ms later, same bytes
    again = plan_store.load_or_make_plan(_config(bids, out))
    assert (again.action, again.reason) == ("made", "stale: sub-02 files changed")


def test_changed_top_level_sidecar_makes_it_stale(raw_two):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    (bids / "task-rest_bold.json").write_text(json.dumps({"TaskName": "rest"}))   # inherited by every run
    again = plan_store.load_or_make_plan(_config(bids, out))
    assert (again.action, again.reason) == ("made", "stale: (top level) files changed")


def test_config_change_makes_it_stale(raw_two):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    again = plan_store.load_or_make_plan(_config(bids, out, participant_label=["02"]))
    assert (again.action, again.reason) == ("made", "stale: setting participant_label")
    assert list(again.plan.units) == ["sub-02"]
    # a setting that does not shape the plan (the targeting method) leaves it valid
    same = plan_store.load_or_make_plan(_config(bids, out, participant_label=["02"], targeting={"method": "cluster"}))
    assert same.action == "loaded"
    # whether field maps are used changes which files a raw run's preprocessing reads
    sdc = plan_store.load_or_make_plan(_config(bids, out, participant_label=["02"],
                                               preprocessing={"distortion_correction": "none"}))
    assert (sdc.action, sdc.reason) == ("made", "stale: setting distortion_correction")


def test_job_trusts_the_saved_plan_without_looking_at_inputs(raw_two, monkeypatch):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    calls = _count_make_plan(monkeypatch)
    looked = []
    monkeypatch.setattr(plan_store, "input_stats", lambda settings: looked.append(1) or {})
    job = plan_store.load_or_make_plan(_config(bids, out), trust_saved=True)
    assert (job.action, len(calls), len(looked)) == ("loaded-trusted", 0, 0)
    assert "mode=job loaded-trusted units=2" in (out / "logs" / "plan.log").read_text()
    # other settings than the saved plan's: even a job plans again
    other = plan_store.load_or_make_plan(_config(bids, out, task="rest", group_runs_by="session"), trust_saved=True)
    assert other.action == "made" and len(calls) == 1


def test_unreadable_saved_plan_is_made_again(raw_two):
    bids, out = raw_two
    plan_store.load_or_make_plan(_config(bids, out))
    plan_store.plan_path_of(out).write_text('{"key": ')   # e.g. a disk that filled while writing elsewhere
    again = plan_store.load_or_make_plan(_config(bids, out), trust_saved=True)
    assert (again.action, again.reason) == ("made", "no saved plan")
    with pytest.raises(Exception, match="no readable saved plan"):
        plan_store.load_plan(out / "logs" / "missing.json")


def _snakemake_dry_run(bids: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--config", f"bids_dir={bids}",
           f"output_dir={out}", "--cores", "1", "--dry-run", "all", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=out.parent)


def test_snakefile_run_directly_makes_then_loads_the_plan(raw_two):
    """`snakemake -s workflow/Snakefile --config bids_dir=... output_dir=...` without the CLI: the first parse
    plans and saves, the next one loads; a parse in job mode (what a cluster job runs) trusts the saved plan."""
    bids, out = raw_two
    for extra in ((), (), ("--mode", "subprocess")):
        proc = _snakemake_dry_run(bids, out, *extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "logs" / "plan.log").read_text().splitlines()
    assert [(line.split()[3], line.split()[4]) for line in log] == [
        ("mode=main", "made"), ("mode=main", "loaded"), ("mode=job", "loaded-trusted")]
    assert plan_store.load_plan(out / "logs" / "plan.json") == make_plan(_config(bids, out))


PROFILES = REPO_ROOT / "workflow" / "profiles"


def _group_jobs(log: str) -> dict[str, int]:
    """``{group name: number of group jobs}`` from Snakemake's dry-run listing ("Group job NAME (jobs ...")."""
    counts: dict[str, int] = {}
    for name in re.findall(r"Group job (\S+) \(jobs in lexicogr", log):
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("profile, method, expected", [
    ("slurm", "cluster", {"unit": 2}),                                   # one scheduler job per subject
    ("slurm", "seedmap", {"unit": 2, "unit_target": 2}),                 # leave-one-out group map: two per subject
    ("slurm-per-rule", "cluster", {"preprocess_anat": 2, "preprocess_bold": 2, "registration_qc": 2, "masks": 2,
                                   "denoise": 4, "seedmap": 2, "maps_to_t1w": 2, "target": 2, "native": 2,
                                   "verdict": 2, "exports": 2, "report": 2}),   # one per job: 14 per subject
])
def test_job_groups_of_the_slurm_profiles(raw_two, profile, method, expected):
    bids, out = raw_two
    out.mkdir()
    (out.parent / "method.yaml").write_text(f"targeting:\n  method: {method}\n")
    proc = _snakemake_dry_run(bids, out, "--profile", str(PROFILES / profile),
                              "--configfile", str(out.parent / "method.yaml"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert _group_jobs(log) == expected


def test_per_rule_profile_lists_every_grouped_rule():
    """slurm-per-rule gives every rule with a `group:` its own group: a rule missing there would still be
    grouped per unit."""
    grouped = set()
    for smk in (REPO_ROOT / "workflow" / "rules").glob("*.smk"):
        rule = None
        for line in smk.read_text().splitlines():
            m = re.match(r"\s*rule (\w+):", line)
            rule = m.group(1) if m else rule
            if re.match(r"\s+group:", line):
                grouped.add(rule)
    config = (PROFILES / "slurm-per-rule" / "config.yaml").read_text()
    listed = re.findall(r"^  - (\w+)=(\w+)$", config, re.M)
    assert all(rule == group for rule, group in listed)
    assert {rule for rule, _ in listed} == grouped
    assert len(grouped) == 13


def test_cli_saves_its_plan_and_snakemake_loads_it(raw_two):
    """`tmstarget BIDS OUT participant`: the CLI plans (its checks) and saves; Snakemake's parse loads."""
    from builders.workflow import run_tmstarget_cli

    bids, out = raw_two
    run_tmstarget_cli(bids, out, "participant", "--dry-run", "--cores", "1")
    log = (out / "logs" / "plan.log").read_text().splitlines()
    assert [(line.split()[3], line.split()[4]) for line in log] == [("mode=main", "loaded")]
    assert plan_store.load_plan(out / "logs" / "plan.json") == make_plan(_config(bids, out))
