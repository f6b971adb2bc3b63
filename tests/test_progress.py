"""The concise terminal of a run (issue 23 item 3): lines from Snakemake's log records (run.progress), the
logger plugin in a real Snakemake run, and the line count of the shared demo run."""

from __future__ import annotations

import logging
import re

import pytest

from tmstarget.run.progress import (JOBS_PER_UNIT_KEY, ConciseTerminal, dry_run_summary, fmt_duration_s,
                                    jobs_per_unit, step_name, unit_of)
from snakemake_interface_logger_plugins.common import LogEvent


def record(event, created=0.0, level=logging.INFO, msg="", **fields):
    rec = logging.makeLogRecord({"msg": msg, "levelno": level, "levelname": logging.getLevelName(level),
                                 "event": event, **fields})
    rec.created = created
    return rec


def job_info(jobid, rule, wildcards, created, output=("x.nii.gz",), **fields):
    return record(LogEvent.JOB_INFO, created, jobid=jobid, rule_name=rule, wildcards=wildcards, output=list(output),
                  **fields)


def test_unit_of_a_job_comes_from_its_wildcards():
    assert unit_of({"subdir": "sub-01", "unit": "sub-01", "strategy": "fox"}) == "sub-01"
    assert unit_of({"anat": "sub-02/anat/sub-02"}) == "sub-02"
    assert unit_of({"run": "sub-03/ses-1/func/sub-03_ses-1_task-rest_bold"}) == "sub-03"  # units are subjects
    assert unit_of({"run": "sub-03/ses-1/func/sub-03_ses-1_task-rest_bold"}, {"sub-03_ses-1"}) == "sub-03_ses-1"
    assert unit_of({"anat": "sub-03/anat/sub-03"}, {"sub-03_ses-1"}) == "sub-03"  # a subject-level job
    assert unit_of({"subdir": "sub-04/ses-2"}, {"sub-04_ses-2"}) == "sub-04_ses-2"
    assert unit_of({}) == "dataset"
    jobs = [("denoise", {"unit": "sub-01_ses-1"}), ("exports", {"subdir": "sub-01/ses-1"}),
            ("preprocess_anat", {"anat": "sub-01/anat/sub-01"}), ("group_report", {})]
    assert jobs_per_unit(jobs) == {"sub-01_ses-1": 2, "sub-01": 1, "dataset": 1}


def test_step_names_and_durations():
    assert step_name("denoise", {"unit": "sub-01", "strategy": "fox"}) == "denoise fox"
    assert step_name("seedmap", {"unit": "sub-01", "Strategy": "Compcor"}) == "seedmap compcor"
    assert step_name("target", {"unit": "sub-01"}) == "target"
    assert [fmt_duration_s(s) for s in (0.2, 28.4, 59.4, 59.6, 192, 5400)] == [
        "0 s", "28 s", "59 s", "1.0 min", "3.2 min", "1.5 h"]


def test_one_line_per_finished_step_counted_per_unit():
    term = ConciseTerminal()
    planned = {"sub-01": 2, "sub-02": 1, "dataset": 1}
    lines = term.handle(record(LogEvent.RUN_INFO, stats={"denoise": 2, "total": 5, JOBS_PER_UNIT_KEY: planned}))
    for rec in (job_info(1, "denoise", {"subdir": "sub-01", "unit": "sub-01", "strategy": "fox"}, 100.0),
                job_info(2, "preprocess_anat", {"anat": "sub-02/anat/sub-02"}, 101.0),
                job_info(3, "target", {"subdir": "sub-01", "unit": "sub-01"}, 130.0),
                job_info(4, "group_report", {}, 200.0),
                job_info(5, "all", {}, 210.0, output=())):
        lines += term.handle(rec)
    for jobid, created in ((1, 128.4), (2, 293.0), (3, 133.0), (4, 201.0), (5, 211.0)):
        lines += term.handle(record(LogEvent.JOB_FINISHED, created, job_id=jobid))
    lines += term.handle(record(LogEvent.PROGRESS, 212.0, done=5, total=5))
    assert lines == [(False, "[sub-01] 1/2 denoise fox done (28 s)"),
                     (False, "[sub-02] 1/1 preprocess_anat done (3.2 min)"),
                     (False, "[sub-01] 2/2 target done (3 s)"),
                     (False, "[dataset] 1/1 group_report done (1 s)")]  # the target rule `all` is no step
    assert term.close() == []


def test_failures_name_rule_unit_and_log_and_snakemake_errors_pass_through():
    term = ConciseTerminal()
    term.handle(record(LogEvent.RUN_INFO, stats={"total": 3}))  # no per-unit plan: N/?
    term.handle(job_info(7, "target", {"subdir": "sub-01", "unit": "sub-01"}, 10.0))
    term.handle(job_info(8, "masks", {"subdir": "sub-02", "unit": "sub-02"}, 10.0, indent=True))  # in a group job
    assert term.handle(record(LogEvent.JOB_ERROR, 13.2, level=logging.ERROR, jobid=7, rule_name="target",
                              log=["/o/logs/target/sub-01/sub-01.log"])) == [
        (True, "[sub-01] target FAILED after 3 s; log: /o/logs/target/sub-01/sub-01.log")]
    assert term.handle(record(LogEvent.JOB_FINISHED, 50.0, job_id=8)) == [(False, "[sub-02] 1/? masks done")]
    assert term.handle(record(LogEvent.JOB_ERROR, 60.0, level=logging.ERROR, jobid=99, rule_name="group_report",
                              log=[])) == [(True, "[dataset] group_report FAILED; the job has no log file")]
    assert term.handle(record(LogEvent.ERROR, level=logging.ERROR, msg="MissingRuleException:\nNo rule to produce x")
                       ) == [(True, "MissingRuleException:\nNo rule to produce x")]
    warning = record(None, level=logging.WARNING, msg="a Snakemake warning")
    assert term.handle(warning) == [(False, "a Snakemake warning")]
    assert term.handle(record(None, msg="Nothing to be done (all requested files are present and up to date).")) == [
        (False, "Nothing to be done (all requested files are present and up to date).")]
    assert term.handle(record(None, msg="Building DAG of jobs...")) == []
    for echo in ("RuleException:\nCalledProcessError in file /w/Snakefile, line 16:\nCommand 'x' returned non-zero",
                 "Exiting because a job execution failed. Look above for error messages",
                 "WorkflowError:\nAt least one job did not complete successfully."):
        assert term.handle(record(LogEvent.ERROR, level=logging.ERROR, msg=echo)) == []
    assert term.handle(record(LogEvent.WORKFLOW_STARTED, msg="Workflow has started!")) == []


def test_dry_run_summary_lists_jobs_per_rule_and_unit():
    term = ConciseTerminal(dryrun=True)
    units = [f"sub-{i:02d}" for i in range(1, 6)]
    for i, unit in enumerate(units):
        term.handle(job_info(2 * i, "preprocess_anat", {"anat": f"{unit}/anat/{unit}"}, 0.0))
        if unit != "sub-05":
            term.handle(job_info(2 * i + 1, "denoise", {"unit": unit, "strategy": "fox"}, 0.0))
    term.handle(job_info(20, "group_report", {}, 0.0))
    term.handle(job_info(21, "all", {}, 0.0, output=()))
    expected = [(False, "dry run: 10 job(s) would run (tmstarget --verbose lists them with their files)"),
                (False, "  jobs per rule: denoise 4, group_report 1, preprocess_anat 5"),
                (False, "  jobs per unit: 4 units (sub-01, sub-02, sub-03, ...) with 2 job(s) each; sub-05 with "
                        "1 job(s); the dataset with 1 job(s)")]
    assert term.close() == expected
    assert term.close() == []  # Snakemake and the interpreter's exit may both close the handler
    assert dry_run_summary([]) == []


TOY_SNAKEFILE = """\
rule all:
    input: expand("out/{unit}_fox.txt", unit=["sub-01", "sub-02"]), "group.txt"
rule anat:
    output: "anat/{anat}.txt"
    log: "logs/anat/{anat}.log"
    shell: "echo job stdout line; echo job stderr line >&2; touch {output}"
rule denoise:
    input: "anat/{unit}/anat/{unit}.txt"
    output: "out/{unit}_{strategy}.txt"
    log: "logs/denoise/{unit}_{strategy}.log"
    shell: "touch {output}"
rule group:
    input: expand("out/{unit}_fox.txt", unit=["sub-01", "sub-02"])
    output: "group.txt"
    log: "logs/group.log"
    shell: "exit 1"
"""


def test_the_logger_plugin_in_a_real_snakemake_run(tmp_path, capfd):
    """run.engine registers run.progress as Snakemake's logger ``tmstarget``: the terminal gets one line per
    finished job and the failure, Snakemake's log file the full listing, job_output.txt what the jobs print."""
    from tmstarget.run.cli import run_workflow

    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    out = tmp_path / "out"
    args = ["--snakefile", str(tmp_path / "Snakefile"), "--directory", str(out), "--cores", "1", "--keep-going",
            "--logger", "tmstarget"]
    code, failed = run_workflow(args, job_output=tmp_path / "job_output.txt")
    captured = capfd.readouterr()
    assert code == 1 and [job["rule"] for job in failed] == ["group"]
    lines = re.sub(r"\d+ s\b", "N s", captured.out).splitlines()  # how long a job took varies
    assert sorted(lines) == ["[sub-01] 1/2 anat done (N s)", "[sub-01] 2/2 denoise fox done (N s)",
                             "[sub-02] 1/2 anat done (N s)", "[sub-02] 2/2 denoise fox done (N s)"]
    # Snakemake's own words around a failed job (RuleException: CalledProcessError, "Exiting because...") stay
    # in its log file: the FAILED line names the job's log
    assert re.sub(r"\d+ s\b", "N s", captured.err).splitlines() == [
        "[dataset] group FAILED after N s; log: logs/group.log"]
    assert (tmp_path / "job_output.txt").read_text().splitlines() == ["job stdout line", "job stderr line"] * 2
    (smk_log,) = (out / ".snakemake" / "log").glob("*.snakemake.log")
    full = smk_log.read_text()
    assert "rule anat:" in full and "wildcards: anat=sub-01/anat/sub-01" in full and "Error in rule group" in full
    # a dry run: the summary instead of the listing
    code, _ = run_workflow([*args, "--dry-run", "--forceall"])
    assert code == 0
    assert capfd.readouterr().out.splitlines() == [
        "dry run: 5 job(s) would run (tmstarget --verbose lists them with their files)",
        "  jobs per rule: anat 2, denoise 2, group 1",
        "  jobs per unit: 2 units (sub-01, sub-02) with 2 job(s) each; the dataset with 1 job(s)"]


@pytest.mark.slow
def test_demo_run_terminal_is_under_60_lines(demo_workflow):
    """Issue 23's acceptance: the workflow's terminal for the two demo subjects, without --verbose, is under
    60 lines: one per finished step (each subject's steps counted 1..N of the N planned), the verdicts."""
    result = demo_workflow["result"]
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) < 60, "\n".join(lines)
    for sub in ("sub-01", "sub-02"):
        counts = [re.match(rf"\[{sub}\] (\d+)/(\d+) \S+", line) for line in lines]
        counts = [(int(m.group(1)), int(m.group(2))) for m in counts if m]
        assert [done for done, _ in counts] == list(range(1, len(counts) + 1)) and len(counts) >= 10
        assert {total for _, total in counts} == {len(counts)}
    assert not any(line.lstrip().startswith(("input:", "output:", "rule ", "localrule ")) for line in lines)
    assert "INFO: step" not in result.stdout + result.stderr  # the jobs' own log lines are in job_output.txt
    assert (demo_workflow["out"] / "logs" / "job_output.txt").stat().st_size > 0
