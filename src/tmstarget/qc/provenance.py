"""What made an output folder, as the report's Methods shows it: the command lines recorded in
``OUT/logs/commands.jsonl`` (written by ``record_command``). The reader lives below the report so that the
report never imports the command-line layer. Merge note (issue 22): main moved the run record to
``tmstarget.config.record``, which holds this same reader; at merge the report imports it from there and
this module goes."""

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
