"""Command line: a BIDS App (``tmstarget BIDS_DIR OUTPUT_DIR participant``) and the demo data maker.

The CLI checks the configuration and the inputs itself (clear messages, exit status 2, nothing
written) and then runs the Snakemake workflow in ``workflow/Snakefile`` with the resolved
configuration, so a run can also be resumed or inspected with plain ``snakemake``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from tmstarget import __version__
from tmstarget.errors import TmsTargetError

log = logging.getLogger("tmstarget")

DESCRIPTION = """\
Individualized TMS targets for depression from resting-state fMRI (Fox et al. 2012, Biol
Psychiatry 72:595): the left-DLPFC (BA46) location most anticorrelated with the subgenual
cingulate (sgACC). Input: a BIDS dataset with a T1w and resting-state BOLD, raw (tmstarget
preprocesses it with antspyx) or with fMRIPrep derivatives (BIDS_DIR/derivatives/fmriprep or
--derivatives). Output, in OUTPUT_DIR/tmstarget: seed maps, the target in MNI and in the
subject's T1w world space (RAS mm), scalp entry and coil pose, neuronavigation files (Brainsight,
Localite, ANT visor2, 3D Slicer) and a self-contained HTML report per subject.

The coordinate is a research result, not a clinical verdict: read the report's QC and caveats.

Other command:
  tmstarget demo-data OUT   write the synthetic demo BIDS dataset (planted target, ground truth)
"""

EPILOG = """\
examples:
  tmstarget /data/bids /data/out participant --participant-label 01 02 --cores 4
  tmstarget /data/bids /data/out participant --derivatives /data/bids/derivatives/fmriprep
  tmstarget /data/bids /data/out group              # also the dataset report of all subjects
  tmstarget /data/bids /data/out participant --profile slurm   # run jobs on a SLURM cluster
  tmstarget /data/bids /data/out participant -- --forceall      # options after -- go to snakemake
  tmstarget /data/bids /data/out participant --verbose  # Snakemake's full job listing on the terminal
  tmstarget demo-data /tmp/demo && tmstarget /tmp/demo /tmp/demo_out participant

At the end of a run every subject gets one verdict line, the same as in its report, its
*_desc-verdict_qc.json and group_targets.tsv:
  sub-01: PASS|WARN|FAIL \u2014 target MNI RAS mm (x, y, z) / T1w RAS mm (x, y, z)
followed by the reasons and the action. On FAIL no coordinate is shown and no navigator file is
written (only nav/NOT_EXPORTED.txt saying why). Subjects are independent: one failing subject does
not stop the others.

participant vs group: `participant` makes each subject's target, verdict, report and navigator
files; `group` does the same (reusing what is finished) and then writes OUTPUT_DIR/tmstarget/group.html
and group_targets.tsv with one row per subject (a FAILed one with its reason). `group` without --config
uses the settings the participant run saved in OUTPUT_DIR/logs/config.yaml. A command whose settings
differ from those that made OUTPUT_DIR stops before any job (exit 2) listing them; add
--rerun-with-new-settings to recompute with the new ones. Command lines are logged in
OUTPUT_DIR/logs/commands.jsonl.

exit status: 0 every subject PASS or WARN; 2 bad input or configuration (the message names the
file and the fix; found before any job runs, or by a job); 3 at least one subject FAILed a quality
threshold (its report and verdict are written when the data got that far; the finished steps of
all subjects are kept); 1 a job failed unexpectedly, e.g. a full disk (the last line names the cause and
the log); 130 interrupted (Ctrl-C; the same command resumes).
"""


def _bids_app_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tmstarget", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", help="BIDS dataset (raw; may contain derivatives/fmriprep)")
    p.add_argument("output_dir", help="where preproc/, tmstarget/, work/ and logs/ are written")
    p.add_argument("analysis_level", choices=["participant", "group"],
                   help="participant: targets and reports per subject; group: also the dataset report")
    p.add_argument("--participant-label", "--participant_label", nargs="+", default=None, metavar="LABEL",
                   help="subjects to process (with or without 'sub-'); default: all")
    p.add_argument("--config", metavar="YAML", help="YAML with the settings to change (see config/README.md)")
    p.add_argument("--derivatives", metavar="PATH",
                   help="fMRIPrep derivatives to use instead of the built-in preprocessing")
    p.add_argument("--input", choices=["auto", "raw", "fmriprep"], default=None,
                   help="auto (default): fMRIPrep derivatives if found, else preprocess the raw data")
    p.add_argument("--task", help="task label of the resting-state runs (default: rest)")
    p.add_argument("--method", choices=["peak", "cluster", "seedmap", "hierarchical"],
                   help="target rule (default: cluster)")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores to use (default: all)")
    p.add_argument("--profile", metavar="NAME_OR_DIR",
                   help="Snakemake profile: 'local', 'slurm' (workflow/profiles/) or a folder")
    p.add_argument("--dry-run", "-n", action="store_true",
                   help="show what would run (jobs per rule and per subject) without running it")
    p.add_argument("--verbose", action="store_true",
                   help="show Snakemake's full job listing (every job's input and output files) and the jobs' own "
                   "output on the terminal; by default it shows one line per finished step, the failures and "
                   "the verdicts, while Snakemake's full listing goes to OUTPUT_DIR/.snakemake/log/ and the "
                   "jobs' output to OUTPUT_DIR/logs/job_output.txt")
    p.add_argument("--version", action="version", version=f"tmstarget {__version__}")
    p.add_argument("--group-runs-by", choices=["subject", "session"],
                   help="one target per subject (default, all runs pooled) or per session")
    p.add_argument("--rerun-with-new-settings", action="store_true",
                   help="OUTPUT_DIR holds results made with other settings: recompute them with this command's "
                   "settings (without it such a command stops, exit 2, naming the settings that differ)")
    return p


def _demo_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tmstarget demo-data",
        description="Write the synthetic demo BIDS dataset: T1w with scalp and a resting BOLD per "
        "subject, each with a planted sgACC-anticorrelated left-BA46 target; ground truth in "
        "OUT/sourcedata/groundtruth.",
    )
    p.add_argument("out_dir", help="folder to create (must be empty or absent)")
    p.add_argument("--subjects", type=int, default=2, help="number of subjects (default 2)")
    p.add_argument("--volumes", type=int, default=200, help="volumes per run after dummy scans (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-target", action="store_true", help="plant no anticorrelated target (null data)")
    return p


def _resolve_profile(profile: str | None) -> str | None:
    from tmstarget.config.settings import REPO_ROOT

    if not profile:
        return None
    candidate = REPO_ROOT / "workflow" / "profiles" / profile
    return str(candidate) if candidate.is_dir() else profile


def build_config(args) -> dict:
    """The resolved settings of a command: defaults, ``--config`` (for ``group`` without ``--config``: the
    settings saved in OUT by the participant run), then the options given on the command line."""
    from tmstarget.config.settings import load_config
    from tmstarget.config.record import settings_path

    overrides: dict = {"bids_dir": str(Path(args.bids_dir).resolve()),
                       "output_dir": str(Path(args.output_dir).resolve())}
    user_config = args.config
    saved = settings_path(overrides["output_dir"])
    if args.analysis_level == "group" and not user_config and saved.exists():
        user_config = saved
        overrides["participant_label"] = []  # the dataset report covers every subject unless labels are given
        print(f"tmstarget: group uses the settings of the participant run saved in {saved}", flush=True)
    if args.participant_label:
        overrides["participant_label"] = [p[4:] if p.startswith("sub-") else p for p in args.participant_label]
    if args.derivatives:
        overrides["fmriprep_dir"] = str(Path(args.derivatives).resolve())
        overrides["input"] = "fmriprep"
    if args.input:
        overrides["input"] = args.input
    if args.task:
        overrides["task"] = args.task
    if args.method:
        overrides["targeting"] = {"method": args.method}
    if args.group_runs_by:
        overrides["group_runs_by"] = args.group_runs_by
    return load_config(user_config, overrides)


@dataclass
class JobError:
    """One failed job, read from its log: the message, the exit class of the step and the log file."""

    message: str
    exit_code: int
    log: Path


_EXIT_SUFFIX = re.compile(r"\s*\[exit (\d+)\]\s*$")


def job_errors(failed_jobs: list[dict], log_dir: Path) -> list[JobError]:
    """The errors of the jobs Snakemake reported failed (``failed_jobs``: its JOB_ERROR events, see run.engine),
    read from their logs in ``log_dir``: ``... ERROR: <message> [exit N]`` (see steps.run_from_snakemake).

    Snakemake knows only that a job failed; its message and exit class are the step's own line in its log.
    """
    paths = set()
    for job in failed_jobs:
        for name in job.get("log") or []:
            path = Path(name) if Path(name).is_absolute() else log_dir.parent / name
            if path.suffix == ".log" and path.is_relative_to(log_dir) and path.is_file():
                paths.add(path)
    errors = []
    for path in sorted(paths):
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR: " in line:
                text = line.split(" ERROR: ", 1)[1]
                m = _EXIT_SUFFIX.search(text)
                errors.append(JobError(_EXIT_SUFFIX.sub("", text), int(m.group(1)) if m else 1, path))
    return errors


def _belongs_to(error: JobError, unit, log_dir: Path) -> bool:
    """Whether a job log is one of ``unit``'s jobs (its name is a folder or a file-name prefix of the log;
    a subject-level log without a session folder belongs to every session of that subject)."""
    try:
        parts = error.log.relative_to(log_dir).parts
    except ValueError:
        return False
    name = parts[-1][: -len(".log")] if parts[-1].endswith(".log") else parts[-1]
    if unit.unit in parts[:-1] or name == unit.unit or name.startswith(unit.unit + "_"):
        return True
    subject = f"sub-{unit.subject}"
    return subject in parts[:-1] and not any(p.startswith("ses-") for p in parts)


def _fmt_point(p) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in p) + ")" if p else "n/a"


def unit_verdicts(plan, errors: list[JobError], log_dir: Path) -> list[tuple[str, dict, dict | None]]:
    """``(unit, verdict, native_json)`` for every unit of the plan.

    A unit with a job error gets a FAIL verdict naming the error (an older verdict file is ignored);
    a unit without a verdict file and without an error of its own is reported as not finished
    (status ``None``).
    """
    from tmstarget.bids.derivatives import output_path
    from tmstarget.qc.metrics import read_json_tolerant
    from tmstarget.qc.verdict import failed_verdict

    deriv = Path(plan.output_dir) / "tmstarget"
    out = []
    for unit in plan.units.values():
        own = [e for e in errors if _belongs_to(e, unit, log_dir)]
        native, _ = read_json_tolerant(output_path("native_json", deriv, subdir=unit.subdir, unit=unit.unit))
        if own:
            verdict = failed_verdict(unit.unit, [e.message for e in own])
            if all(e.exit_code == 3 for e in own):
                verdict["action"] = ("do not use this coordinate: the data failed a quality threshold; re-scan "
                                     "(longer resting-state run, less head motion) or change the settings named above")
            elif all(e.exit_code == 2 for e in own):
                verdict["action"] = "do not use; fix the input named above and run the same command again"
            out.append((unit.unit, verdict, None))
            continue
        verdict, _ = read_json_tolerant(output_path("verdict", deriv, subdir=unit.subdir, unit=unit.unit))
        if verdict is None or verdict.get("status") not in ("pass", "warn", "fail"):
            verdict = {"status": None, "status_word": "NOT FINISHED", "reasons": [],
                       "action": "the workflow stopped before this unit's verdict; run the same command again"}
        out.append((unit.unit, verdict, native))
    return out


def print_summary(plan, verdicts: list[tuple[str, dict, dict | None]]) -> None:
    """One verdict line per unit (coordinates only when usable), its reasons and action, then the reports."""
    deriv = Path(plan.output_dir) / "tmstarget"
    from tmstarget.bids.derivatives import output_path
    from tmstarget.qc.text import scrub_paths

    print()
    for unit, verdict, native in verdicts:
        word = verdict.get("status_word") or "FAIL"
        report = Path(output_path("report", deriv, unit=unit))
        if verdict.get("status") in ("pass", "warn") and not report.exists():
            # a unit is PASS/WARN only with its report: the workflow stopped between verdict and report
            verdict = {"status": None, "reasons": [f"the verdict was {word} but the report {report.name} was not "
                                                  "written"],
                       "action": "the workflow stopped before this unit's report; run the same command again"}
            word = "NOT FINISHED"
        if verdict.get("status") in ("pass", "warn") and native:
            head = (f"target MNI RAS mm {_fmt_point(native.get('target_mni_ras_mm'))} / "
                    f"T1w RAS mm {_fmt_point(native.get('target_t1w_ras_mm'))}")
        elif verdict.get("status") == "fail":
            head = "no usable target (coordinate withheld)"
        else:
            head = "no target"
        print(f"{unit}: {word} \u2014 {head}")
        for reason in verdict.get("reasons") or []:
            print(f"  - {scrub_paths(reason)}")
        if verdict.get("action"):
            print(f"  action: {verdict['action']}")
        if report.exists():
            print(f"  report: {report}")
    group = deriv / "group.html"
    if group.exists():
        print(f"dataset report {group}")


def exit_status(verdicts: list[tuple[str, dict, dict | None]], errors: list[JobError], returncode: int) -> int:
    """The run's exit status: 2 bad input, 1 an unexpected job failure, 3 a unit FAILed QC, else 0."""
    codes = {e.exit_code for e in errors}
    if 2 in codes:
        return 2
    if returncode != 0 and (not codes or codes - {2, 3}):
        return 1
    if 3 in codes or any(v.get("status") == "fail" for _, v, _ in verdicts):
        return 3
    return 0


def _make_output_dir(out: Path) -> Path:
    """Create ``OUT/logs`` and prove that OUT is writable; a one-line InputError otherwise."""
    from tmstarget.errors import InputError

    log_dir = out / "logs"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        probe = log_dir / f".write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{out}: cannot write to the output folder ({exc.strerror or exc}); choose a folder "
                         "you can write to, or fix its permissions") from None
    return log_dir


def _hold_output_lock(out: Path):
    """Take an exclusive lock on ``OUT/logs/.tmstarget.lock`` for the life of this process.

    The kernel drops it when the process dies, even on SIGKILL, so holding it proves that no other
    tmstarget run uses ``OUT``: Snakemake's own locks left by a killed run are then stale, and Snakemake's
    unlock removes them before the run (run.engine), so the same command resumes. Returns the open file
    (keep it referenced) and whether such locks are there.
    """
    import fcntl

    from tmstarget.errors import InputError

    handle = open(out / "logs" / ".tmstarget.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(f"{out}: another tmstarget run is using this output folder; wait for it to end "
                         "or choose another output folder") from None
    # Snakemake's API tells whether OUT is locked only after building the whole DAG (Persistence.locked); its
    # default (file) persistence keeps one file per lock here, so a look at the folder is enough to decide
    locks = out / ".snakemake" / "locks"
    stale = locks.is_dir() and any(locks.glob("*.lock"))
    return handle, stale


def _os_error_cause(log_dir: Path, out: Path, since: float) -> tuple[str, Path | None] | None:
    """``(cause, log)`` of a job or of Snakemake itself that died on an operating-system error (e.g.
    ``[Errno 28] No space left on device``) without a tmstarget message: the last such line of the job
    logs written since ``since`` or of Snakemake's own newest log.

    Kept as a text search: such a job or Snakemake itself ended with a Python traceback, not a Snakemake event
    the CLI receives (run.engine's pipe carries job failures only), and its log files are what is left of it.
    """
    errno_line = re.compile(r"(?:OSError|IOError|\[Errno \d+\])[^\n]*")
    logs = [p for p in sorted(log_dir.rglob("*.log")) if p.stat().st_mtime >= since]
    smk_logs = sorted((out / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    for path in logs + smk_logs[-1:]:
        try:
            found = errno_line.findall(path.read_text(errors="replace"))
        except OSError:
            continue
        if found:
            return found[-1].strip(), path
    return None


def _stopped_line(errors: list[JobError], os_cause, out: Path) -> str:
    """The run's last line after a stop: the cause and the log to read, and what to do."""
    if errors:
        e = errors[-1]
        cause, log_path = e.message, e.log
    elif os_cause:
        cause, log_path = os_cause
    else:
        cause, log_path = "a job failed without a tmstarget message", out / ".snakemake" / "log"
    more = f" (and {len(errors) - 1} more error(s) above)" if len(errors) > 1 else ""
    return (f"tmstarget: the workflow stopped: {cause}{more}; log: {log_path}. Fix the cause and run the same "
            "command again: finished steps are kept.")


def write_group_after_failure(plan, config: dict, verdicts) -> Path:
    """The dataset report and table when the workflow stopped before its group step (a unit FAILed a job):
    every unit gets its row, a failed one with the reason its job gave (never a coordinate)."""
    from tmstarget.qc.group import unit_group_entries
    from tmstarget.report import build_group_report

    deriv = Path(plan.output_dir) / "tmstarget"
    verdict_of = {unit: verdict for unit, verdict, _ in verdicts}
    entries = unit_group_entries(deriv, plan.units.values(), config["task"], plan.space,
                                 config["denoising"]["strategy"])
    for entry in entries:
        verdict = verdict_of.get(entry["unit"])
        if verdict is not None and verdict.get("status") is None:
            verdict = dict(verdict, status="fail", reasons=["not finished: " + verdict["action"]])
        entry["verdict"] = verdict
        if not (deriv / entry["report_html"]).exists():
            entry["report_html"] = None
    deriv.mkdir(parents=True, exist_ok=True)
    return build_group_report(entries, deriv / "group.html", deriv / "group_targets.tsv")


def run_workflow(snakemake_args: list[str], unlock: bool = False,
                 job_output: Path | None = None) -> tuple[int, list[dict]]:
    """Run Snakemake with ``snakemake_args`` in a child process (run.engine, through Snakemake's API; with
    ``unlock`` its unlock first; with ``job_output`` the jobs' own stdout and stderr go to that file): its exit
    status and the jobs it reported failed (rule, job id, log files)."""
    import json
    import threading

    read_fd, write_fd = os.pipe()
    failed: list[dict] = []

    def collect() -> None:
        with os.fdopen(read_fd) as stream:
            failed.extend(json.loads(line) for line in stream if line.strip())

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    cmd = [sys.executable, "-m", "tmstarget.run.engine", str(write_fd), *(["--unlock"] if unlock else []),
           *(["--job-output", str(job_output)] if job_output else []), "--", *snakemake_args]
    try:
        result = subprocess.run(cmd, pass_fds=(write_fd,))
    finally:
        os.close(write_fd)  # the child's copy closed when it ended: the reader sees the end of the pipe
    reader.join(timeout=30)
    return result.returncode, failed


def run_bids_app(argv: list[str]) -> int:
    from tmstarget.bids.inputs import make_plan
    from tmstarget.bids.plan_store import plan_key as make_plan_key, save_plan
    from tmstarget.config.settings import SNAKEFILE
    from tmstarget.config.record import check_same_settings, record_command, write_settings

    command_argv = list(argv)
    # Everything after a bare '--' goes to snakemake unchanged.
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = _bids_app_parser().parse_args(argv)
    config = build_config(args)
    changed = check_same_settings(config, args.rerun_with_new_settings)  # before anything runs or is written
    plan_key = make_plan_key(config)  # settings and input-file stats, taken before planning (bids.plan_store)
    plan = make_plan(config)  # checks names, headers and sidecars before anything is written
    if not args.dry_run:
        from tmstarget.bids.preflight import check_input_data

        check_input_data(plan)  # reads every input image once: truncated files, NaNs (nothing written yet)
    out = Path(config["output_dir"])
    log_dir = _make_output_dir(out)
    lock, stale_locks = _hold_output_lock(out)  # noqa: F841 (lock held until this process exits)
    save_plan(plan, config, plan_key)  # OUT/logs/plan.json: the Snakefile reads it instead of planning again
    if changed:
        print("tmstarget: --rerun-with-new-settings: recomputing the results in "
              f"{out} with changed settings: " + "; ".join(changed), flush=True)
    # a dry run changes nothing: OUT's saved settings stay those of its results
    config_path = write_settings(config, log_dir / ("config.dry-run.yaml" if args.dry_run else "config.yaml"))
    record_command(log_dir, command_argv)
    n_runs = sum(len(u.runs) for u in plan.units.values())
    print(f"tmstarget {__version__}: {len(plan.units)} unit(s), {n_runs} run(s), input route "
          f"'{plan.route}', space {plan.space}; logs in {log_dir}", flush=True)
    cmd = ["--snakefile", str(SNAKEFILE), "--configfile", str(config_path),
           "--directory", str(out), "--cores", str(args.cores), "--rerun-incomplete", "--keep-going"]
    concise = not args.verbose and "--logger" not in extra
    if concise:  # run.progress: one line per finished step; Snakemake's full listing only in its log file
        cmd = ["--logger", "tmstarget", *cmd]  # first: --logger takes every name up to the next option
    job_output = log_dir / "job_output.txt" if concise and not args.dry_run else None
    if job_output:
        print(f"tmstarget: Snakemake's full log goes to {out / '.snakemake' / 'log'}, the jobs' own output to "
              f"{job_output} (--verbose shows them here)", flush=True)
    profile = _resolve_profile(args.profile)
    if profile:
        cmd += ["--profile", profile]
    if args.dry_run:
        cmd += ["--dry-run"]
    if args.analysis_level == "participant":
        cmd += ["participant"]
    cmd += extra
    if stale_locks:
        print(f"tmstarget: removed the Snakemake lock of an interrupted run in {out}", flush=True)  # by run.engine
    start = time.time()
    returncode, failed_jobs = run_workflow(cmd, unlock=stale_locks, job_output=job_output)
    errors = job_errors(failed_jobs, log_dir) if returncode != 0 else []
    if returncode != 0:
        print("\ntmstarget: the workflow stopped.", file=sys.stderr)
        for e in errors:
            print(f"  {e.message}  [log: {e.log}]", file=sys.stderr)
    if args.dry_run:
        return returncode
    verdicts = unit_verdicts(plan, errors, log_dir)
    if errors and args.analysis_level == "group" and "--dry-run" not in extra:
        # a unit's job failed: --keep-going ran every unit that could run, but the group step waits for
        # all of them, so it is written here from every unit's verdict, a failed unit with its job's reason
        try:
            write_group_after_failure(plan, config, verdicts)
        except OSError as exc:
            print(f"tmstarget: could not write the dataset report: {_os_error_text(exc)}", file=sys.stderr)
    print_summary(plan, verdicts)
    if returncode != 0:
        os_cause = None if errors else _os_error_cause(log_dir, out, start)
        sys.stdout.flush()
        print(_stopped_line(errors, os_cause, out), file=sys.stderr)
    return exit_status(verdicts, errors, returncode)


def _os_error_text(exc: OSError) -> str:
    """``No space left on device writing OUT/x`` from an OSError (the file when the error names one)."""
    what = exc.strerror or str(exc)
    return f"{what} ({exc.filename})" if exc.filename else what


def run_demo(argv: list[str]) -> int:
    from tmstarget.demo.core import make_demo_dataset

    args = _demo_parser().parse_args(argv)
    out = make_demo_dataset(args.out_dir, n_subjects=args.subjects, n_volumes=args.volumes,
                            seed=args.seed, plant_target=not args.no_target)
    print(f"demo BIDS dataset written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)
    try:
        if argv and argv[0] == "demo-data":
            return run_demo(argv[1:])
        return run_bids_app(argv)
    except TmsTargetError as exc:
        print(f"tmstarget: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tmstarget: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # e.g. the disk filled while the CLI itself wrote OUT/logs
        print(f"tmstarget: error: {_os_error_text(exc)}; free space or fix the permissions of that folder, then "
              "run the same command again: finished steps are kept", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
