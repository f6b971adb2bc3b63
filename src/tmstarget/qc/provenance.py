"""What made an output folder, as the report's Methods shows it: the command lines recorded in
``OUT/logs/commands.jsonl``. :mod:`tmstarget.run.record` writes them (``record_command``); the reader lives
here, below the report, so that the report never imports the command-line layer."""

from __future__ import annotations

import json
from pathlib import Path

COMMANDS_FILE = "commands.jsonl"


def last_command(output_dir) -> dict | None:
    """The last command recorded in ``OUT/logs/commands.jsonl`` (see :func:`tmstarget.run.record.record_command`),
    or None."""
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
