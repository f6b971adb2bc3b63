"""Cluster execution on a real single-node SLURM (Debian slurm-wlm + munge, no accounting database).

Starts SLURM with scripts/slurm/start_local_slurm.sh (root only; installs the Debian packages when
missing), runs tests/data/slurm_smoke/Snakefile through snakemake-executor-plugin-slurm with the
repository's SLURM profile, and checks the outputs, that job status came from squeue (never sacct),
and that each rule's threads / mem_mb / runtime reached SLURM. Then the real workflow for two subjects
(fMRIPrep-route mini trees) through the `slurm` profile: one sbatch per subject plus the group step, the
saved plan loaded (never re-made) in every job, and the same targets, verdicts and navigator files as a
local run.
"""

from __future__ import annotations

import os
import re
import shutil
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
START = REPO / "scripts" / "slurm" / "start_local_slurm.sh"
STOP = REPO / "scripts" / "slurm" / "stop_local_slurm.sh"
SMOKE_SNAKEFILE = REPO / "tests" / "data" / "slurm_smoke" / "Snakefile"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
STATE_DIR = Path(os.environ.get("TMSTARGET_SLURM_STATE_DIR", "/var/spool/tmstarget-slurm"))
SLURM_DEBIAN_PACKAGES = ["slurm-wlm", "munge"]

# What the smoke Snakefile declares (rule -> threads, mem_mb, runtime in minutes) and its items.
SMOKE_RESOURCES = {"square": (1, 300, 3), "total": (2, 700, 4)}
SMOKE_ITEMS = [1, 2]


def _install_debian_packages() -> None:
    """apt-get install slurm-wlm munge (CI machines are fresh Debian, run as root)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *SLURM_DEBIAN_PACKAGES], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def _run_script(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def local_slurm():
    """A running single-node SLURM; stopped afterwards only if this fixture started it."""
    if os.geteuid() != 0:
        pytest.skip("starting munged/slurmctld/slurmd needs root (CI runs as root)")
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None, (
        "snakemake-executor-plugin-slurm is not installed: pip install -e '.[slurm]'")
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        _install_debian_packages()
    first = _run_script(START)
    assert first.returncode == 0, f"start_local_slurm.sh failed:\n{first.stdout}\n{first.stderr}"
    started_here = "already running" not in first.stderr
    yield {"first_call": first}
    if not started_here:
        return                                   # a cluster someone else started stays up
    stop = _run_script(STOP)
    assert stop.returncode == 0, stop.stderr


def _shim(bin_dir: Path, name: str, calls_log: Path) -> None:
    """A `name` on PATH that appends its arguments to calls_log, then runs the real command."""
    real = shutil.which(name)
    assert real is not None, f"{name} not installed"
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "$*" >> "{calls_log}"\nexec "{real}" "$@"\n')
    script.chmod(0o755)


def _scontrol_job(job_id: int) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True,
                         text=True, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def _read_grant(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().split())


def test_start_script_is_idempotent_and_node_idle(local_slurm):
    t0 = time.monotonic()
    again = _run_script(START)
    elapsed_s = time.monotonic() - t0
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert elapsed_s < 5.0
    node = subprocess.run(["sinfo", "--noheader", "--format=%P %t %c %m"], capture_output=True,
                          text=True, check=True).stdout.split()
    partition, state, cpus, memory_mb = node[:4]
    assert partition == "debug*"  # the default partition
    assert state in {"idle", "mix", "alloc"}  # usable (mix/alloc only if other jobs are running)
    assert int(cpus) == os.cpu_count()
    # RealMemory comes from `free -m`: within 1% of the kernel's total.
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert abs(int(memory_mb) - total_mb) <= 0.01 * total_mb
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            check=True).stdout
    assert re.search(r"AccountingStorageType\s*=\s*accounting_storage/none", config)
    # squeue status needs finished jobs kept long enough (plugin threshold: 3 x 40 s).
    assert int(re.search(r"MinJobAge\s*=\s*(\d+)", config).group(1)) >= 120


def test_smoke_workflow_runs_through_slurm_with_squeue_status(local_slurm, tmp_path):
    shim_dir = tmp_path / "shims"
    shim_dir.mkdir()
    squeue_calls, sacct_calls = tmp_path / "squeue_calls.txt", tmp_path / "sacct_calls.txt"
    _shim(shim_dir, "squeue", squeue_calls)
    _shim(shim_dir, "sacct", sacct_calls)
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = dict(os.environ, PATH=f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SMOKE_SNAKEFILE), "-d", str(workdir),
           "--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "5"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    elapsed_s = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    print(f"smoke workflow through SLURM: {elapsed_s:.1f} s")

    # Outputs: sum of squares of the items, computed by jobs on the cluster.
    assert int((workdir / "result" / "total.txt").read_text()) == sum(i * i for i in SMOKE_ITEMS)

    # Each job ran inside a SLURM allocation with its own job id.
    grants = {f"square_{i}": _read_grant(workdir / "grants" / f"square_{i}.txt") for i in SMOKE_ITEMS}
    grants["total"] = _read_grant(workdir / "grants" / "total.txt")
    job_ids = {name: int(g["slurm_job_id"]) for name, g in grants.items()}
    assert len(set(job_ids.values())) == len(grants)
    submitted = {int(j) for j in re.findall(r"submitted with SLURM jobid (\d+)", log)}
    assert submitted == set(job_ids.values())
    run_uuid = re.search(r"SLURM run ID: (\S+)", log).group(1)

    # Requests reached SLURM: threads -> CPUs, mem_mb -> memory, runtime (min) -> time limit.
    for name, job_id in job_ids.items():
        threads, mem_mb, runtime_min = SMOKE_RESOURCES[name.split("_")[0]]
        assert int(grants[name]["slurm_cpus_per_task"]) == threads
        assert int(grants[name]["snakemake_threads"]) == threads
        job = _scontrol_job(job_id)
        assert job["JobName"] == run_uuid
        assert job["JobState"] == "COMPLETED"
        assert job["Partition"] == "debug"
        assert int(job["NumCPUs"]) == threads
        assert job["MinMemoryNode"] == f"{mem_mb}M"
        assert job["TimeLimit"] == f"00:{runtime_min:02d}:00"

    # Status came from squeue (the plugin's query for this run), never from sacct; the only sacct
    # call allowed is the plugin's account guess, which fails without accounting.
    squeue_lines = squeue_calls.read_text().splitlines()
    status_queries = [c for c in squeue_lines if f"--name {run_uuid}" in c and "--states=all" in c]
    assert len(status_queries) >= 2  # at least one poll per wave of jobs
    sacct_lines = sacct_calls.read_text().splitlines() if sacct_calls.exists() else []
    assert not [c for c in sacct_lines if "JobIdRaw,State" in c], sacct_lines

    # The controller's own log shows each job allocated on the node and completed (started by the main
    # scheduler, or by the backfill scheduler when it was submitted while another job held the CPUs).
    ctld_log = (STATE_DIR / "log" / "slurmctld.log").read_text()
    for job_id in job_ids.values():
        assert re.search(rf"(sched: Allocate JobId={job_id} NodeList=\S+ #CPUs=\d+ Partition=debug|"
                         rf"sched/backfill: _start_job: Started JobId={job_id} in debug on \S+)", ctld_log)
        assert re.search(rf"_job_complete: JobId={job_id} done", ctld_log)


# ----------------------------------------------------------------------------- the real workflow (issue 23)

FAST = "targeting:\n  bootstrap_samples: 10\n  split_half_max_splits: 4\n"


def _mini_dataset(root: Path) -> tuple[Path, Path]:
    """Two subjects as fMRIPrep-route mini trees (no preprocessing: the cheapest honest run) and a fast config."""
    from builders.bids import make_raw_bids
    from builders.mini_fmriprep import make_mini_fmriprep

    bids = make_raw_bids(root / "bids", subjects=("01", "02"), n_vols=160)
    for seed, sub in enumerate(("01", "02")):
        make_mini_fmriprep(bids / "derivatives" / "fmriprep", sub=sub, seed=seed)
    config = root / "fast.yaml"
    config.write_text(FAST)
    return bids, config


def _cli(bids: Path, out: Path, config: Path, *extra: str, env=None) -> subprocess.Popen:
    """The CLI started in the background (its output in OUT.txt beside OUT)."""
    cmd = [sys.executable, "-m", "tmstarget.run.cli", str(bids), str(out), "group", "--config", str(config),
           "--cores", "2", *extra]
    return subprocess.Popen(cmd, stdout=open(f"{out}.txt", "w"), stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.acceptance  # two whole workflow runs (local, then through SLURM): several minutes
def test_real_workflow_one_sbatch_per_subject_same_outputs_as_local(local_slurm, tmp_path):
    bids, config = _mini_dataset(tmp_path)
    shim_dir = tmp_path / "shims"
    shim_dir.mkdir()
    sbatch_calls = tmp_path / "sbatch_calls.txt"
    _shim(shim_dir, "sbatch", sbatch_calls)
    env = dict(os.environ, PATH=f"{shim_dir}{os.pathsep}{os.environ['PATH']}")

    # both runs at once (the SLURM jobs run beside the local one): half the wall time of one after the other
    t0 = time.monotonic()
    # --verbose: Snakemake's own listing (its "submitted with SLURM jobid" lines) on the terminal
    slurm = _cli(bids, tmp_path / "out_slurm", config, "--profile", "slurm", "--verbose", "--",
                 "--slurm-init-seconds-before-status-checks", "5", env=env)
    local = _cli(bids, tmp_path / "out_local", config)
    local_code = local.wait(timeout=3600)
    slurm_code = slurm.wait(timeout=3600)
    elapsed_s = time.monotonic() - t0
    log = Path(f"{tmp_path / 'out_slurm'}.txt").read_text()
    assert local_code == 0, Path(f"{tmp_path / 'out_local'}.txt").read_text()[-4000:]
    assert slurm_code == 0, log[-4000:]
    print(f"real workflow, 2 subjects, local and through SLURM side by side: {elapsed_s:.0f} s")

    # One sbatch per subject (its group job: every step from the BOLD to the report) + the group report;
    # dataset_description.json is a local rule. Per-rule jobs would be 2 x 11 + 1 (fMRIPrep route).
    submissions = sbatch_calls.read_text().splitlines()
    job_ids = sorted({int(j) for j in re.findall(r"submitted with SLURM jobid (\d+)", log)})
    assert len(submissions) == 3, submissions
    assert len(job_ids) == 3
    jobs = {jid: _scontrol_job(jid) for jid in job_ids}
    assert all(job["JobState"] == "COMPLETED" and job["JobName"] == jobs[job_ids[0]]["JobName"] for job in jobs.values())
    # the plugin names a group job's log folder group_<group>_<rules>, a rule job's rule_<rule>
    kinds = sorted(job["StdOut"].split("/slurm_logs/")[1].split("_")[0] + "_" + job["StdOut"].split("/slurm_logs/")[1]
                   .split("_")[1] for job in jobs.values())
    assert kinds == ["group_unit", "group_unit", "rule_group"], kinds
    print("SLURM jobs (log folder, CPUs, memory, time limit):",
          [(job["StdOut"].split("/slurm_logs/")[1][:40], job["NumCPUs"], job["MinMemoryNode"], job["TimeLimit"])
           for job in jobs.values()])
    for job in jobs.values():
        if "/slurm_logs/group_unit" not in job["StdOut"]:
            continue
        # the group's request, derived by Snakemake from its steps (workflow/rules/*.smk): CPUs capped by
        # --cores 2; memory of two 4000 MB denoising steps side by side; time limit between the longest
        # step (30 min) and the sum of all the unit's steps (180 min)
        assert int(job["NumCPUs"]) == 2
        assert job["MinMemoryNode"] == "8000M"
        hours, minutes, _ = map(int, job["TimeLimit"].split(":"))
        assert 30 <= 60 * hours + minutes <= 180

    # The plan: saved by the CLI, loaded by Snakemake's main process, trusted in every parse inside a job;
    # never computed again (before issue 23 every one of those parses ran make_plan).
    plan_log = (tmp_path / "out_slurm" / "logs" / "plan.log").read_text().splitlines()
    main_lines = [line for line in plan_log if " mode=main " in line]
    job_lines = [line for line in plan_log if " mode=job " in line]
    assert main_lines and all(" loaded " in line for line in main_lines), main_lines
    assert job_lines and all(" loaded-trusted " in line for line in job_lines), job_lines
    parses = {jid: sum(f"slurm_job={jid}" in line for line in job_lines) for jid in job_ids}
    print(f"plan: {len(main_lines)} main-process load(s), job parses per SLURM job {parses}, 0 plans made")
    assert all(n >= 1 for n in parses.values()), parses

    # The same results as the local run: targets, seed maps, verdicts, navigator files.
    compared = subprocess.run([sys.executable, str(REPO / "scripts" / "compare_outputs.py"),
                               str(tmp_path / "out_local"), str(tmp_path / "out_slurm")],
                              capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout
    assert compared.stdout.count("verdict:") == 2
