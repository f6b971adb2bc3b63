"""Command line: a BIDS App (``tmstarget BIDS_DIR OUTPUT_DIR participant``) and the demo data maker.

The CLI checks the configuration and the inputs itself (clear messages, exit status 2, nothing
written) and then runs the Snakemake workflow in ``workflow/Snakefile`` with the resolved
configuration, so a run can also be resumed or inspected with plain ``snakemake``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import __version__
from .errors import TmsTargetError

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
  tmstarget /data/bids /data/out group              # dataset report of all subjects
  tmstarget /data/bids /data/out participant --profile slurm   # run jobs on a SLURM cluster
  tmstarget /data/bids /data/out participant -- --forceall      # options after -- go to snakemake
  tmstarget demo-data /tmp/demo && tmstarget /tmp/demo /tmp/demo_out participant

exit status: 0 done, 2 bad input or configuration (the message names the file and the fix),
3 data failed a quality threshold, other: a job failed (see OUTPUT_DIR/logs).
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
    p.add_argument("--dry-run", "-n", action="store_true", help="show the jobs without running them")
    p.add_argument("--version", action="version", version=f"tmstarget {__version__}")
    p.add_argument("--group-runs-by", choices=["subject", "session"],
                   help="one target per subject (default, all runs pooled) or per session")
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
    from .config import REPO_ROOT

    if not profile:
        return None
    candidate = REPO_ROOT / "workflow" / "profiles" / profile
    return str(candidate) if candidate.is_dir() else profile


def build_config(args) -> dict:
    from .config import load_config

    overrides: dict = {"bids_dir": str(Path(args.bids_dir).resolve()),
                       "output_dir": str(Path(args.output_dir).resolve())}
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
    return load_config(args.config, overrides)


def _print_summary(plan) -> None:
    from .derivatives import output_path
    from .io import read_json

    deriv = Path(plan.output_dir) / "tmstarget"
    for unit in plan.units.values():
        native = Path(output_path("native_json", deriv, subdir=unit.subdir, unit=unit.unit))
        report = Path(output_path("report", deriv, unit=unit.unit))
        if not native.exists():
            continue
        info = read_json(native)
        mni = info.get("target_mni_ras_mm")
        t1w = info.get("target_t1w_ras_mm")
        fmt = lambda p: "(" + ", ".join(f"{v:.1f}" for v in p) + ")" if p else "n/a"  # noqa: E731
        print(f"{unit.unit}: target MNI RAS mm {fmt(mni)}; T1w world RAS mm {fmt(t1w)}")
        print(f"{unit.unit}: report {report}")
    group = deriv / "group.html"
    if group.exists():
        print(f"dataset report {group}")


def _failed_job_errors(log_dir: Path, since: float) -> list[str]:
    lines = []
    for path in sorted(log_dir.rglob("*.log")):
        if path.stat().st_mtime < since:
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR: " in line:
                lines.append(line.split(" ERROR: ", 1)[1] + f"  [log: {path}]")
    return lines


def _hold_output_lock(out: Path):
    """Take an exclusive lock on ``OUT/logs/.tmstarget.lock`` for the life of this process.

    The kernel drops it when the process dies, even on SIGKILL, so holding it proves that no other
    tmstarget run uses ``OUT``: Snakemake's own lock files left by a killed run are then stale and
    are removed, so the same command resumes. Returns the open file (keep it referenced).
    """
    import fcntl

    from .errors import InputError

    handle = open(out / "logs" / ".tmstarget.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(f"{out}: another tmstarget run is using this output folder; wait for it to end "
                         "or choose another output folder") from None
    locks = out / ".snakemake" / "locks"
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    for path in stale:
        path.unlink()
    if stale:
        print(f"tmstarget: removed the Snakemake lock of an interrupted run in {out}", flush=True)
    return handle


def run_bids_app(argv: list[str]) -> int:
    from .bids_inputs import make_plan
    from .config import SNAKEFILE

    # Everything after a bare '--' goes to snakemake unchanged.
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = _bids_app_parser().parse_args(argv)
    config = build_config(args)
    plan = make_plan(config)  # checks the inputs before anything is written
    out = Path(config["output_dir"])
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    lock = _hold_output_lock(out)  # noqa: F841 (held until this process exits)
    config_path = log_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    n_runs = sum(len(u.runs) for u in plan.units.values())
    print(f"tmstarget {__version__}: {len(plan.units)} unit(s), {n_runs} run(s), input route "
          f"'{plan.route}', space {plan.space}; logs in {log_dir}", flush=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--configfile", str(config_path),
           "--directory", str(out), "--cores", str(args.cores), "--rerun-incomplete"]
    profile = _resolve_profile(args.profile)
    if profile:
        cmd += ["--profile", profile]
    if args.dry_run:
        cmd += ["--dry-run"]
    if args.analysis_level == "participant":
        cmd += ["participant"]
    cmd += extra
    start = time.time()
    result = subprocess.run(cmd)
    if result.returncode != 0:
        errors = _failed_job_errors(log_dir, start)
        print("\ntmstarget: the workflow stopped.", file=sys.stderr)
        for line in errors:
            print(f"  {line}", file=sys.stderr)
        print("Fix the cause and run the same command again: finished steps are kept.", file=sys.stderr)
        return result.returncode
    if not args.dry_run:
        _print_summary(plan)
    return 0


def run_demo(argv: list[str]) -> int:
    from .demo import make_demo_dataset

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


if __name__ == "__main__":
    sys.exit(main())
