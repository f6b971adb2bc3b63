"""The import contract (pyproject.toml [tool.importlinter]) holds on the code and catches a new circle.

Each test runs ``lint-imports`` on a copy of ``src/`` in a temporary folder (``PYTHONPATH`` puts the copy
first), so a planted import never touches the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_of_src(tmp_path: Path) -> Path:
    """``src/`` and ``pyproject.toml`` (which holds the contract) copied to ``tmp_path``."""
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root / "src"))  # the copy comes before the installed package
    # run in root: lint-imports reads the contract from root/pyproject.toml
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_layer_contract_is_kept(tmp_path):
    result = _lint_imports(_copy_of_src(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_a_planted_circle_breaks_the_contract(tmp_path):
    """io (bottom layer) importing the CLI (top layer) closes a circle: lint-imports must fail and name it."""
    root = _copy_of_src(tmp_path)
    files = root / "src" / "tmstarget" / "io" / "files.py"
    files.write_text(files.read_text() + "\nimport tmstarget.run.cli  # noqa: E402,F401 (planted circle)\n")
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert "tmstarget.io is not allowed to import tmstarget.run" in result.stdout
    assert "tmstarget.io.files -> tmstarget.run.cli" in result.stdout
