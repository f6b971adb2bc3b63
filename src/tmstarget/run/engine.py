"""The Snakemake run of the CLI, through Snakemake's own API:
``python -m tmstarget.run.engine FD [--unlock] [--job-output PATH] -- ARGS``.

ARGS are Snakemake's command-line options; ``snakemake.cli.parse_args`` reads them (with ``--profile``)
and ``snakemake.cli.args_to_api`` runs them through ``snakemake.api.SnakemakeApi``, as ``snakemake`` does.
With ``--unlock`` the stale locks of a killed run are first removed by Snakemake's own unlock
(``DAGApi.unlock``, i.e. ``snakemake --unlock`` with the same options). Every job failure Snakemake logs
(its ``JOB_ERROR`` event: rule, job id, log files) goes to the CLI as one JSON line on the pipe FD.

The concise terminal (run.progress) is registered here as Snakemake's logger plugin ``tmstarget``, so ARGS may
say ``--logger tmstarget``; its ``N/M`` counts come from the jobs Snakemake planned per unit, which this module
adds to the job stats Snakemake logs (:func:`jobs_per_unit_in_run_info`). With ``--job-output PATH`` the
jobs' own terminal output (they inherit this process's stdout and stderr) goes to PATH, while Snakemake's and
the plugin's lines still reach the terminal.

This runs in a child process of the CLI, not in the CLI's own: Ctrl-C or a kill then stops Snakemake and its
jobs while the CLI still prints the summary and its exit status, and Snakemake's logging set-up (which takes
over its logger) stays out of the CLI's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager

from snakemake_interface_logger_plugins.common import LogEvent

from tmstarget.run import progress


class FailedJobReporter(logging.Handler):
    """Writes each ``JOB_ERROR`` record of Snakemake's logger as ``{"rule", "jobid", "log"}`` to a pipe
    (a pipe, not a file in OUT: it still works when OUT's disk is full)."""

    def __init__(self, stream):
        super().__init__(level=logging.ERROR)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) != LogEvent.JOB_ERROR:
            return
        entry = {"rule": getattr(record, "rule_name", None), "jobid": getattr(record, "jobid", None),
                 "log": [str(p) for p in getattr(record, "log", None) or []]}
        try:
            self.stream.write(json.dumps(entry) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the CLI went away: Snakemake goes on and ends the run itself
            pass


def register_concise_logger() -> None:
    """Make run.progress Snakemake's logger plugin ``tmstarget`` in this process (``--logger tmstarget``);
    the registry's own loader, as for an installed ``snakemake-logger-plugin-*`` package."""
    from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

    LoggerPluginRegistry().register_plugin("snakemake_logger_plugin_tmstarget", progress)


@contextmanager
def jobs_per_unit_in_run_info():
    """While active, the job stats that Snakemake's DAG computes for its ``RUN_INFO`` record (``DAG.stats``:
    jobs per rule) also hold the jobs planned per unit (key ``progress.JOBS_PER_UNIT_KEY``), from the same
    jobs: those that need to run and those finished in this run, without the target rules (no output)."""
    from itertools import chain

    from snakemake.dag import DAG

    original = DAG.stats

    def stats(dag):
        message, counts = original(dag)
        try:
            jobs = [(job.rule.name, job.wildcards_dict) for job in chain(dag.needrun_jobs(), dag.finished_jobs)
                    if job.output]
            counts[progress.JOBS_PER_UNIT_KEY] = progress.jobs_per_unit(jobs)
        except Exception:  # another Snakemake's DAG: the lines show N/? instead of stopping the run
            pass
        return message, counts

    DAG.stats = stats
    try:
        yield
    finally:
        DAG.stats = original


def divert_job_output(path: str) -> None:
    """Send what the jobs write to their stdout and stderr (file descriptors 1 and 2, which they inherit) to
    ``path``, appended; this process's ``sys.stdout`` and ``sys.stderr`` keep writing to the terminal.
    When ``path`` cannot be opened (e.g. a full disk) the jobs keep writing to the terminal."""
    try:
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return
    # Snakemake's shell() (which also starts `script:` jobs) gives its jobs the sys.stdout it found at import
    # (snakemake.shell.STDOUT): bind it to descriptor 1 before sys.stdout moves to the terminal's copy
    import snakemake.shell  # noqa: F401

    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stderr = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)


def run_snakemake(snakemake_args: list[str], failed_fd: int, unlock: bool = False) -> int:
    """Run Snakemake with ``snakemake_args`` (first its unlock when ``unlock``); 0 when it succeeded, else 1."""
    from snakemake.cli import args_to_api, parse_args
    from snakemake.exceptions import print_exception

    register_concise_logger()
    with os.fdopen(failed_fd, "w") as stream:
        reporter = FailedJobReporter(stream)
        # Snakemake's logger ("snakemake") replaces its own handlers at each run; records reach the root logger
        logging.getLogger().addHandler(reporter)
        try:
            if unlock:
                parser, args = parse_args([*snakemake_args, "--unlock"])
                if not args_to_api(args, parser):
                    return 1
            parser, args = parse_args(snakemake_args)
            with jobs_per_unit_in_run_info():
                return 0 if args_to_api(args, parser) else 1
        except Exception as exc:  # the same report and status as the snakemake command (snakemake.cli.main)
            print_exception(exc)
            return 1
        finally:
            logging.getLogger().removeHandler(reporter)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--")
    options, snakemake_args = argv[:split], argv[split + 1:]
    if "--job-output" in options:
        divert_job_output(options[options.index("--job-output") + 1])
    return run_snakemake(snakemake_args, int(options[0]), unlock="--unlock" in options[1:])


if __name__ == "__main__":
    sys.exit(main())
