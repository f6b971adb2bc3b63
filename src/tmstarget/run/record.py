"""What made an output folder: its settings (``OUT/logs/config.yaml``) and the command lines run in it.

A run never replaces results made with other settings without being asked: the CLI compares the
resolved settings of a new command with those saved in OUT by the first run
(:func:`check_same_settings`) before any job starts, and stops (exit 2) naming the keys that differ
and the two ways forward. Every command also appends its real command line and working directory to
``OUT/logs/commands.jsonl`` (:func:`record_command`); the report's Methods shows the last one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
from pathlib import Path

import yaml

from tmstarget import __version__
from tmstarget.errors import InputError

SETTINGS_FILE = "config.yaml"
COMMANDS_FILE = "commands.jsonl"
# keys that say where or for whom a run works, not how it computes: they may change between runs
NOT_SETTINGS = ("participant_label", "output_dir")
_VERSION_LINE = re.compile(r"^# written by tmstarget ([^\s:]+)")


def settings_path(output_dir) -> Path:
    return Path(output_dir) / "logs" / SETTINGS_FILE


def write_settings(config: dict, path) -> Path:
    """Save the resolved configuration (the file Snakemake reads), headed by the tmstarget version."""
    path = Path(path)
    header = f"# written by tmstarget {__version__}: the settings of the results in this folder\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def read_settings(path) -> tuple[dict, str | None] | None:
    """``(config, tmstarget version)`` saved in ``path``, or None when there is none or it is unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    m = _VERSION_LINE.match(text)
    return config, (m.group(1) if m else None)


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for key, value in (d or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def settings_differences(saved: dict, new: dict) -> list[tuple[str, object, object]]:
    """``(dotted key, saved value, new value)`` for every setting that differs (keys of
    :data:`NOT_SETTINGS` ignored; a key missing on one side shows as ``<absent>``)."""
    a = {k: v for k, v in _flat(saved).items() if k.split(".")[0] not in NOT_SETTINGS}
    b = {k: v for k, v in _flat(new).items() if k.split(".")[0] not in NOT_SETTINGS}
    absent = "<absent>"
    return [(k, a.get(k, absent), b.get(k, absent)) for k in sorted(set(a) | set(b)) if a.get(k, absent) != b.get(k, absent)]


def check_same_settings(config: dict, rerun_with_new_settings: bool = False) -> list[str]:
    """Refuse a command whose resolved settings differ from those that made ``config["output_dir"]``.

    Returns the differences as lines (empty when the settings agree or OUT has none saved yet).

    Raises
    ------
    InputError
        When they differ and ``rerun_with_new_settings`` is false: lists the keys (saved value ->
        this command's value) and the two ways forward (keep OUT's settings with
        ``--config OUT/logs/config.yaml``, or recompute with ``--rerun-with-new-settings``).
    """
    path = settings_path(config["output_dir"])
    saved = read_settings(path) if path.exists() else None
    if saved is None:
        return []
    saved_config, saved_version = saved
    lines = [f"{k}: {_show(old)} -> {_show(new)}" for k, old, new in settings_differences(saved_config, config)]
    if saved_version and saved_version != __version__:
        lines.insert(0, f"tmstarget version: {saved_version} -> {__version__}")
    if lines and not rerun_with_new_settings:
        shown = lines[:12] + ([f"... and {len(lines) - 12} more"] if len(lines) > 12 else [])
        raise InputError(
            f"{config['output_dir']} holds results made with other settings ({path}); this command would "
            "change:\n    " + "\n    ".join(shown) + "\n  Nothing was run. To continue with the settings of "
            f"that folder, add `--config {path}` (`group` does this by default when --config is not given); "
            "to recompute its results with the new settings (replacing them), add --rerun-with-new-settings")
    return lines


def _show(value) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def command_line(argv: list[str]) -> str:
    """The command as typed: ``tmstarget`` followed by its arguments, shell-quoted."""
    return shlex.join(["tmstarget", *map(str, argv)])


def record_command(log_dir, argv: list[str]) -> dict:
    """Append this command (real command line, working directory, start time) to ``OUT/logs/commands.jsonl``."""
    record = {"command_line": command_line(argv), "working_directory": os.getcwd(),
              "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "tmstarget_version": __version__}
    with open(Path(log_dir) / COMMANDS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


def last_command(output_dir) -> dict | None:
    """The last command recorded in ``OUT/logs/commands.jsonl`` (see :func:`record_command`), or None."""
    try:
        lines = (Path(output_dir) / "logs" / COMMANDS_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("command_line"):
            return record
    return None
