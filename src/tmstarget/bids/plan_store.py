"""The input plan made once per invocation and saved as ``OUTPUT_DIR/logs/plan.json``.

:func:`tmstarget.bids.inputs.make_plan` indexes the dataset with pybids and reads image headers: ~0.05 CPU-s
per subject. The Snakefile is parsed again inside every cluster job, so it reads the saved plan instead of
planning again. The file holds the plan and the *key* it was made from:

- ``settings``: the configuration keys that shape a plan (paths, task, route, space, participants,
  run grouping, the header thresholds the planner checks, whether field maps are used) and the tmstarget version;
- ``inputs``: per subject folder of the dataset the planner reads, a SHA-256 of the sorted
  ``(path, size, mtime_ns)`` of its files, plus one entry for the dataset's top-level files (its
  description and inherited sidecars). A subject added or removed, a file added, removed, rewritten or
  touched changes it.

:func:`load_or_make_plan` gives the saved plan when its key matches today's settings and files and makes
(and saves) a new one otherwise: never a stale plan. With ``trust_saved`` (inside a scheduler job, whose
main process checked the key moments before) only the settings are compared, no file is looked at, so a
job's parse costs the same for 10 or 10,000 subjects. Each call appends one line to
``OUTPUT_DIR/logs/plan.log`` (made or loaded, by which process, how long it took).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tmstarget import __version__
from tmstarget.bids.inputs import Plan, RunInputs, UnitInputs, find_fmriprep_dir, make_plan
from tmstarget.config.settings import with_defaults
from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path

PLAN_FORMAT = 1
PLAN_FILE = "plan.json"
PLAN_LOG = "plan.log"
TOP_LEVEL = "(top level)"   # the inputs entry of the dataset's top-level files
# fMRIPrep route: the planner indexes only these folders of a subject (tmstarget.bids.inputs.FMRIPREP_NOT_INDEXED)
FMRIPREP_FOLDERS = ("anat", "func")


def plan_path_of(output_dir) -> Path:
    """Where the plan of an output folder is saved: ``OUTPUT_DIR/logs/plan.json``."""
    return Path(output_dir).resolve() / "logs" / PLAN_FILE


def _resolved(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def plan_settings(config: dict) -> dict:
    """The settings that shape a plan (as :func:`make_plan` reads them, with its defaults), the folder
    the planner reads (``auto`` route: whether ``BIDS_DIR/derivatives/fmriprep`` exists) and the version."""
    labels = sorted(p[4:] if str(p).startswith("sub-") else str(p) for p in config.get("participant_label") or [])
    fmriprep_dir = None
    if config.get("input", "auto") in ("auto", "fmriprep") and (config.get("bids_dir") or config.get("fmriprep_dir")):
        try:
            fmriprep_dir = _resolved(find_fmriprep_dir(config.get("bids_dir"), config.get("fmriprep_dir")))
        except InputError:
            fmriprep_dir = "(missing) " + str(config.get("fmriprep_dir"))
    return {
        "tmstarget": __version__,
        "plan_format": PLAN_FORMAT,
        "bids_dir": _resolved(config.get("bids_dir")),
        "output_dir": _resolved(config.get("output_dir")),
        "fmriprep_dir": fmriprep_dir,
        "input": config.get("input", "auto"),
        "task": config.get("task", "rest"),
        "participant_label": labels,
        "group_runs_by": config.get("group_runs_by", "subject"),
        "space": config.get("space", "auto"),
        "min_retained_minutes": float((config.get("denoising") or {}).get("min_retained_minutes", 0.0)),
        "qform_sform_tol_mm": float((config.get("native") or {}).get("qform_sform_tol_mm", 0.1)),
        # the raw route's field-map matching (tmstarget.bids.fieldmaps) depends on it
        "distortion_correction": with_defaults("preprocessing", config.get("preprocessing"))["distortion_correction"],
    }


def _files_digest(files: list[Path], root: Path) -> str:
    """SHA-256 of the sorted ``(path below root, size, mtime_ns)`` of ``files``."""
    h = hashlib.sha256()
    for path in sorted(files):
        st = path.stat()
        h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _walk_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (symbolic links followed to files, as pybids reads them)."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(folder, followlinks=True):
        found += [Path(dirpath) / name for name in filenames if (Path(dirpath) / name).is_file()]
    return found


def input_stats(settings: dict) -> dict[str, str]:
    """``{sub-XX: digest, "(top level)": digest}`` of the dataset the planner reads (see the module doc)."""
    fmriprep = settings["fmriprep_dir"]
    if fmriprep and not fmriprep.startswith("(missing)"):
        root, folders = Path(fmriprep), FMRIPREP_FOLDERS
    elif settings["bids_dir"]:
        root, folders = Path(settings["bids_dir"]), None
    else:
        return {}
    if not root.is_dir():
        return {}
    stats = {TOP_LEVEL: _files_digest([p for p in root.iterdir() if p.is_file()], root)}
    for subject in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        if folders is None:
            files = _walk_files(subject)
        else:   # sub-X/{anat,func} and sub-X/ses-Y/{anat,func}
            tops = [subject] + sorted(p for p in subject.glob("ses-*") if p.is_dir())
            files = [f for top in tops for name in folders if (top / name).is_dir() for f in _walk_files(top / name)]
        stats[subject.name] = _files_digest(files, root)
    return stats


def plan_key(config: dict) -> dict:
    """What a saved plan must match to be used: the settings and the input files' stats."""
    settings = plan_settings(config)
    return {"settings": settings, "inputs": input_stats(settings)}


def key_differences(saved: dict, current: dict) -> list[str]:
    """Short words for what changed between two keys (for the log): settings named, subjects added,
    removed or changed."""
    changes = [f"setting {k}" for k in sorted(set(saved.get("settings", {})) | set(current.get("settings", {})))
               if saved.get("settings", {}).get(k) != current.get("settings", {}).get(k)]
    old, new = saved.get("inputs", {}), current.get("inputs", {})
    changes += [f"{s} added" for s in sorted(set(new) - set(old))]
    changes += [f"{s} removed" for s in sorted(set(old) - set(new))]
    changes += [f"{s} files changed" for s in sorted(set(old) & set(new)) if old[s] != new[s]]
    return changes


def plan_from_dict(data: dict) -> Plan:
    """The :class:`Plan` of :meth:`Plan.to_dict` (as read back from JSON)."""
    units = {name: UnitInputs(**{**u, "runs": [RunInputs(**r) for r in u["runs"]]})
             for name, u in data["units"].items()}
    return Plan(**{**data, "units": units})


def save_plan(plan: Plan, config: dict, key: dict | None = None) -> Path:
    """Write ``plan`` with its key (made now from ``config`` unless given) to ``OUTPUT_DIR/logs/plan.json``,
    atomically (a reader sees the old file or the new one, never half of one)."""
    path = plan_path_of(plan.output_dir)
    body = {"key": key if key is not None else plan_key(config), "plan": plan.to_dict()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, separators=(",", ":"), allow_nan=False) + "\n")
    return path


def read_saved(path) -> dict | None:
    """``{"key", "plan"}`` of a saved plan, or None when there is none or it is unreadable (then it is remade)."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) and {"key", "plan"} <= set(body) else None


def load_plan(path) -> Plan:
    """The plan saved in ``path`` (no check of its key)."""
    body = read_saved(path)
    if body is None:
        raise InputError(f"{path}: no readable saved plan; run the workflow again to make it")
    return plan_from_dict(body["plan"])


@dataclass
class PlanOutcome:
    plan: Plan
    action: str          # "made", "loaded" (key checked) or "loaded-trusted" (settings checked only)
    reason: str          # why it was made: "" / "no saved plan" / "stale: ..."
    seconds: float


def _log(output_dir, outcome: PlanOutcome, trust_saved: bool) -> None:
    """One line in ``OUTPUT_DIR/logs/plan.log`` (appended: every process's line survives)."""
    scheduler_job = os.environ.get("SLURM_JOB_ID")   # which cluster job parsed (SLURM; absent elsewhere)
    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} host={socket.gethostname()} pid={os.getpid()} "
            f"mode={'job' if trust_saved else 'main'} {outcome.action} units={len(outcome.plan.units)} "
            f"{outcome.seconds:.3f}s" + (f" slurm_job={scheduler_job}" if scheduler_job else "")
            + (f" ({outcome.reason})" if outcome.reason else "") + "\n")
    try:
        with open(Path(output_dir).resolve() / "logs" / PLAN_LOG, "a", encoding="utf-8") as stream:
            stream.write(line)
    except OSError:
        pass  # the log is a record, never a reason to fail a parse


def load_or_make_plan(config: dict, trust_saved: bool = False) -> PlanOutcome:
    """The plan of ``config``: the saved one when its key matches (with ``trust_saved``: when its settings
    match, files not checked), else a new one from :func:`make_plan`, saved for the next parse."""
    t0 = time.perf_counter()
    if not config.get("output_dir"):
        make_plan(config)  # raises its own clear error
    path = plan_path_of(config["output_dir"])
    saved = read_saved(path)
    settings = plan_settings(config)
    if saved is None:
        reason = "no saved plan"
    elif trust_saved and saved["key"].get("settings") == settings:
        outcome = PlanOutcome(plan_from_dict(saved["plan"]), "loaded-trusted", "", time.perf_counter() - t0)
        _log(config["output_dir"], outcome, trust_saved)
        return outcome
    else:
        key = {"settings": settings, "inputs": input_stats(settings)}
        changes = key_differences(saved["key"], key)
        if not changes:
            outcome = PlanOutcome(plan_from_dict(saved["plan"]), "loaded", "", time.perf_counter() - t0)
            _log(config["output_dir"], outcome, trust_saved)
            return outcome
        reason = "stale: " + ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
    key = plan_key(config)   # before planning: a file changed while planning makes the next parse plan again
    plan = make_plan(config)
    save_plan(plan, config, key)
    outcome = PlanOutcome(plan, "made", reason, time.perf_counter() - t0)
    _log(config["output_dir"], outcome, trust_saved)
    return outcome
