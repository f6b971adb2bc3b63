"""The demo subjects and the command line run in a subprocess, shared by the workflow tests."""

from __future__ import annotations

import subprocess
import sys

DEMO_SUBJECTS = ("01", "02")


def run_tmstarget_cli(*args, check=True):
    """``python -m tmstarget.run.cli ARGS`` in a subprocess; with ``check``, a failure shows its output."""
    cmd = [sys.executable, "-m", "tmstarget.run.cli", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
