"""The export gate: navigator files are written only for a unit whose verdict says the coordinate is usable."""

from __future__ import annotations

from pathlib import Path

from tmstarget.qc.metrics import read_json_tolerant
from tmstarget.qc.text import scrub_paths

NOT_EXPORTED = "NOT_EXPORTED.txt"


def export_gate(verdict_json, nav_dir) -> bool:
    """Whether navigator files may be written for a unit; on FAIL write ``nav_dir/NOT_EXPORTED.txt`` saying why.

    Parameters
    ----------
    verdict_json : path
        ``*_desc-verdict_qc.json`` of the unit. Missing or unreadable counts as not usable.
    nav_dir : path
        The unit's ``nav/`` folder (created).

    Returns
    -------
    bool
        True when ``coordinate_usable`` is true (PASS or WARN); False otherwise, after writing the note.
    """
    from tmstarget.io.files import atomic_path

    nav_dir = Path(nav_dir)
    nav_dir.mkdir(parents=True, exist_ok=True)
    verdict, problem = read_json_tolerant(verdict_json)
    note = nav_dir / NOT_EXPORTED
    if verdict and verdict.get("coordinate_usable") is True and verdict.get("status") in ("pass", "warn"):
        if note.exists():
            note.unlink()
        return True
    lines = [f"No neuronavigation file was written for {(verdict or {}).get('unit') or 'this unit'}: "
             f"the QC verdict is {(verdict or {}).get('status_word') or 'not available'} "
             "and the coordinate must not be used."]
    if problem:
        lines.append(f"The verdict could not be read: {problem}.")
    reasons = (verdict or {}).get("reasons") or []
    if reasons:
        lines.append("Reasons:")
        lines += [f"  - {scrub_paths(r)}" for r in reasons]
    if (verdict or {}).get("action"):
        lines.append(f"Action: {scrub_paths(verdict['action'])}")
    with atomic_path(note) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return False
