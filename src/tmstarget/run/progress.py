"""The concise terminal of a workflow run: one line per finished step, the failures, a dry run's summary.

Snakemake's own terminal lists every job with all its input and output paths (hundreds of thousands of
lines for a large cohort). Without ``tmstarget --verbose`` the CLI runs Snakemake with this module as its
logger plugin (``--logger tmstarget``, registered by run.engine): Snakemake then does not attach its own
terminal handler but still writes its full listing to ``OUT/.snakemake/log/*.snakemake.log``. This plugin
turns the events Snakemake logs (``JOB_INFO``, ``JOB_FINISHED``, ``JOB_ERROR``, ``RUN_INFO``) into lines::

    [sub-02] 7/13 denoise fox done (28 s)
    [sub-01] target FAILED after 3 s; log: OUT/logs/target/sub-01/sub-01.log

The unit of a job is its ``unit`` wildcard, else the subject (and session) its path-like wildcards name
(``anat=sub-01/anat/sub-01``), else the dataset. ``7/13`` counts the unit's jobs that Snakemake planned for
this run: run.engine adds them to the ``RUN_INFO`` record's job stats under :data:`JOBS_PER_UNIT_KEY`.
Jobs without outputs (the target rules ``all``/``participant``) are not steps and are not shown.

Why not the rich logger plugin (snakemake-logger-plugin-rich 0.5.1, MIT, its README says "in development"; read
from its source): its progress is one bar per rule, not per subject, drawn in a transient live display
(rich ``Live(transient=True)``) that leaves nothing in a file or a cluster job log (``> run.log``, tests); without
``--verbose`` it prints no line per finished job, and on a failure it prints the job's whole log file. These
lines are plain text, the same on a terminal and in a file, and need no new dependency.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

#: key of the RUN_INFO job stats under which run.engine passes the jobs planned per unit
JOBS_PER_UNIT_KEY = "tmstarget_jobs_per_unit"
DATASET = "dataset"
_SUBJECT = re.compile(r"(?:^|/)(sub-[a-zA-Z0-9]+)(?:/(ses-[a-zA-Z0-9]+))?")
_STRATEGY_WILDCARDS = ("strategy", "Strategy")


def unit_of(wildcards: dict, units=frozenset()) -> str:
    """The unit a job belongs to: its ``unit`` wildcard; else ``sub-X_ses-Y`` when a path-like wildcard names
    a session that is one of ``units``, else ``sub-X``; else :data:`DATASET` (dataset-level jobs)."""
    if wildcards.get("unit"):
        return str(wildcards["unit"])
    for value in wildcards.values():
        m = _SUBJECT.search(str(value))
        if m:
            subject, session = m.groups()
            return f"{subject}_{session}" if session and f"{subject}_{session}" in units else subject
    return DATASET


def jobs_per_unit(jobs) -> dict[str, int]:
    """``{unit: number of jobs}`` of ``jobs``, an iterable of ``(rule_name, wildcards)``."""
    jobs = list(jobs)
    units = {str(w["unit"]) for _, w in jobs if w.get("unit")}
    return dict(Counter(unit_of(w, units) for _, w in jobs))


def step_name(rule: str, wildcards: dict) -> str:
    """The rule name, with the denoising strategy when the rule runs once per strategy (``denoise fox``)."""
    strategy = next((str(wildcards[k]) for k in _STRATEGY_WILDCARDS if wildcards.get(k)), None)
    return f"{rule} {strategy.lower()}" if strategy else rule


def fmt_duration_s(seconds: float) -> str:
    """``28 s``, ``3.2 min``, ``1.5 h``."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def done_line(unit: str, done: int, total: int | None, step: str, seconds: float | None) -> str:
    """``[sub-02] 7/13 denoise fox done (28 s)`` (``7/?`` when the plan is unknown, no time in a group job)."""
    count = f"{done}/{total}" if total else f"{done}/?"
    took = f" ({fmt_duration_s(seconds)})" if seconds is not None else ""
    return f"[{unit}] {count} {step} done{took}"


def failed_line(unit: str, step: str, seconds: float | None, logs) -> str:
    """``[sub-01] target FAILED after 3 s; log: PATH`` (every log file of the job)."""
    took = f" after {fmt_duration_s(seconds)}" if seconds is not None else ""
    where = "; log: " + ", ".join(str(p) for p in logs) if logs else "; the job has no log file"
    return f"[{unit}] {step} FAILED{took}{where}"


def _names(units: list[str], shown: int = 3) -> str:
    return ", ".join(units[:shown]) + (", ..." if len(units) > shown else "")


def dry_run_summary(jobs) -> list[str]:
    """What a dry run would do, in three lines: jobs in all, jobs per rule, units by their number of jobs.
    ``jobs``: ``(rule_name, wildcards)`` of every job that would run."""
    jobs = list(jobs)
    if not jobs:
        return []
    per_rule = Counter(rule for rule, _ in jobs)
    per_unit = jobs_per_unit(jobs)
    dataset_jobs = per_unit.pop(DATASET, 0)
    by_count: dict[int, list[str]] = {}
    for unit in sorted(per_unit):
        by_count.setdefault(per_unit[unit], []).append(unit)
    groups = [f"{names[0]} with {count} job(s)" if len(names) == 1
              else f"{len(names)} units ({_names(names)}) with {count} job(s) each"
              for count, names in sorted(by_count.items(), reverse=True)]
    if dataset_jobs:
        groups.append(f"the dataset with {dataset_jobs} job(s)")
    return [f"dry run: {len(jobs)} job(s) would run (tmstarget --verbose lists them with their files)",
            "  jobs per rule: " + ", ".join(f"{rule} {per_rule[rule]}" for rule in sorted(per_rule)),
            "  jobs per unit: " + "; ".join(groups)]


# What Snakemake says around a failed job besides its JOB_ERROR: the job's command failed (the step's own
# message is in its log, which the FAILED line names) and, at the end, that a job failed (the CLI says so)
_JOB_FAILURE_ECHOES = (re.compile(r"RuleException:\s+CalledProcessError in "),
                       re.compile(r"Exiting because a job execution failed"),
                       re.compile(r"WorkflowError:\s+At least one job did not complete successfully"))


def _repeats_a_job_failure(message: str) -> bool:
    return any(p.match(message) for p in _JOB_FAILURE_ECHOES)


class ConciseTerminal:
    """Turns Snakemake's log records into terminal lines ``(is_error, text)``; no I/O, so it is tested on
    synthetic records. A record's time is its ``created`` attribute."""

    def __init__(self, dryrun: bool = False):
        self.dryrun = dryrun
        self.planned: dict[str, int] = {}
        self.jobs: dict[int, dict] = {}
        self.done: Counter = Counter()
        self.dry_jobs: list[tuple[str, dict]] = []
        self.closed = False

    def handle(self, record: logging.LogRecord) -> list[tuple[bool, str]]:
        event = getattr(record, "event", None)
        if event == LogEvent.RUN_INFO:
            self.planned = dict((getattr(record, "stats", None) or {}).get(JOBS_PER_UNIT_KEY) or self.planned)
        elif event == LogEvent.JOB_INFO:
            self._job_info(record)
        elif event == LogEvent.JOB_FINISHED:
            return self._job_finished(record)
        elif event == LogEvent.JOB_ERROR:
            return self._job_error(record)
        elif event in (None, LogEvent.ERROR) and record.levelno >= logging.WARNING:
            message = record.getMessage()
            return [] if _repeats_a_job_failure(message) else [(record.levelno >= logging.ERROR, message)]
        elif event is None and str(record.msg).startswith("Nothing to be done"):
            return [(False, record.getMessage())]
        return []

    def close(self) -> list[tuple[bool, str]]:
        """The dry run's summary, once (Snakemake and the interpreter's exit may both close the handler)."""
        if self.closed:
            return []
        self.closed = True
        return [(False, line) for line in dry_run_summary(self.dry_jobs)] if self.dryrun else []

    def _job_info(self, record) -> None:
        if not getattr(record, "output", None):  # a target rule (all, participant): not a step
            return
        rule, wildcards = record.rule_name, dict(getattr(record, "wildcards", None) or {})
        if self.dryrun:
            self.dry_jobs.append((rule, wildcards))
            return
        self.jobs[record.jobid] = {"unit": unit_of(wildcards, self.planned), "step": step_name(rule, wildcards),
                                   "start": record.created, "grouped": bool(getattr(record, "indent", False))}

    def _job_finished(self, record) -> list[tuple[bool, str]]:
        job = self.jobs.pop(getattr(record, "job_id", None), None)
        if job is None:
            return []
        self.done[job["unit"]] += 1
        seconds = None if job["grouped"] else record.created - job["start"]
        return [(False, done_line(job["unit"], self.done[job["unit"]], self.planned.get(job["unit"]), job["step"],
                                  seconds))]

    def _job_error(self, record) -> list[tuple[bool, str]]:
        job = self.jobs.pop(getattr(record, "jobid", None), None)
        if job is None:
            job = {"unit": DATASET, "step": str(getattr(record, "rule_name", "a job")), "start": None}
        seconds = record.created - job["start"] if job.get("start") is not None and not job.get("grouped") else None
        return [(True, failed_line(job["unit"], job["step"], seconds, getattr(record, "log", None) or []))]


class LogHandler(LogHandlerBase):
    """Snakemake logger plugin ``tmstarget`` (registered by run.engine): the lines of :class:`ConciseTerminal`
    on stdout, errors on stderr, instead of Snakemake's terminal listing."""

    def __post_init__(self) -> None:
        self.terminal = ConciseTerminal(dryrun=bool(self.common_settings.dryrun))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write(self.terminal.handle(record))
        except Exception:  # a display problem must not stop the workflow
            self.handleError(record)

    def close(self) -> None:
        try:
            self._write(self.terminal.close())
        finally:
            super().close()

    @staticmethod
    def _write(lines) -> None:
        for is_error, text in lines:
            stream = sys.stderr if is_error else sys.stdout
            stream.write(text + "\n")
            stream.flush()

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
