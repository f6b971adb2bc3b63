"""The Snakemake run of the CLI, through Snakemake's own API: ``python -m tmstarget.run.engine FD [--unlock] -- ARGS``.

ARGS are Snakemake's command-line options; ``snakemake.cli.parse_args`` reads them (with ``--profile``)
and ``snakemake.cli.args_to_api`` runs them through ``snakemake.api.SnakemakeApi``, as ``snakemake`` does.
With ``--unlock`` the stale locks of a killed run are first removed by Snakemake's own unlock
(``DAGApi.unlock``, i.e. ``snakemake --unlock`` with the same options). Every job failure Snakemake logs
(its ``JOB_ERROR`` event: rule, job id, log files) goes to the CLI as one JSON line on the pipe FD.

This runs in a child process of the CLI, not in the CLI's own: Ctrl-C or a kill then stops Snakemake and its
jobs while the CLI still prints the summary and its exit status, and Snakemake's logging set-up (which takes
over its logger) stays out of the CLI's.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from snakemake_interface_logger_plugins.common import LogEvent


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


def run_snakemake(snakemake_args: list[str], failed_fd: int, unlock: bool = False) -> int:
    """Run Snakemake with ``snakemake_args`` (first its unlock when ``unlock``); 0 when it succeeded, else 1."""
    from snakemake.cli import args_to_api, parse_args
    from snakemake.exceptions import print_exception

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
    return run_snakemake(snakemake_args, int(options[0]), unlock="--unlock" in options[1:])


if __name__ == "__main__":
    sys.exit(main())
