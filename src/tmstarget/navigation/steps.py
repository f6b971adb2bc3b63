"""What the operator does with the ``nav/`` files: the import steps of each navigator and ``nav/README.txt``.

The operator has the ``nav/`` folder and the report, not tmstarget's docs: the few steps of each
navigator are written here once and shown in both (the report's navigator box and ``README.txt``).
The longer background (conventions, what was checked) stays in the project's docs/navigation.md.
"""

from __future__ import annotations

import numpy as np

#: For each ``nav/`` file key (:func:`tmstarget.navigation.exports.export_names`): the navigator, what the file
#: is for, and the import steps. ``{file}`` is the file's name under ``nav/``; the T1w is always the one
#: named at the top of README.txt and in the report (file name and SHA-256).
IMPORT_STEPS = {
    "brainsight": ("Brainsight (Rogue Research)", "import as targets (version 14 file)", (
        "New project: open the T1w NIfTI named above as the anatomical data (not the DICOM series).",
        "Targets: import {file}; choose the coordinate system the file names (e.g. NIfTI:Q:Scanner).",
        "Navigate to the '-cortex' target (the cortical target); the '-coil' target is the coil centre on the "
        "scalp, on the same trajectory.")),
    "localite_instrument": ("Localite TMS Navigator", "copy into the session's InstrumentMarkers/ folder", (
        "Create the patient from the T1w NIfTI named above (a NIfTI session uses RAS, as the files say; not the "
        "DICOM series).",
        "Create a session and close the TMS Navigator before it saves markers of its own.",
        "Copy {file} into Sessions/Session_<date>/InstrumentMarkers/ (Localite loads the file with the latest "
        "time stamp in its name).",
        "Reopen the session: the instrument marker 'sgACC-anticorrelation' shows the coil pose.")),
    "localite_entrytarget": ("Localite TMS Navigator", "copy into the session's EntryTarget/ folder", (
        "In the same closed session, copy {file} into Sessions/Session_<date>/EntryTarget/.",
        "Reopen the session: the entry (skin) and target (cortex) points are joined by the coil axis.")),
    "visor2": ("ANT Neuro visor2", "import as markers", (
        "Load the T1w NIfTI named above as the subject's anatomy.",
        "Import {file} as markers. If visor2 reports that the image information does not match, the anatomy "
        "loaded is not the T1w named above: stop.")),
    "slicer": ("3D Slicer (checking only, no coil)", "drag onto Slicer after the T1w", (
        "Drag in the T1w NIfTI named above, then {file}.",
        "Check the control points 'sgACC-anticorrelation' (cortex) and '... scalp entry' (skin).")),
}


def import_steps(key: str, file_name: str) -> list[str]:
    """The numbered import steps of one ``nav/`` file (``key`` of :data:`IMPORT_STEPS`)."""
    return [step.format(file=file_name) for step in IMPORT_STEPS[key][2]]


def describe_direction(vector_ras) -> str:
    """Words for a world RAS direction, e.g. ``posterior-lateral-inferior (left)``: each axis named when its
    component exceeds 0.3 of the unit vector; x is given as left/right."""
    v = np.asarray(vector_ras, float)
    if not np.all(np.isfinite(v)) or np.linalg.norm(v) == 0:
        return "undefined"
    v = v / np.linalg.norm(v)
    words = []
    if abs(v[1]) > 0.3:
        words.append("anterior" if v[1] > 0 else "posterior")
    if abs(v[0]) > 0.3:
        words.append("right" if v[0] > 0 else "left")
    if abs(v[2]) > 0.3:
        words.append("superior" if v[2] > 0 else "inferior")
    return "-".join(words) or "undefined"


def readme_text(prefix: str, native: dict, names: dict[str, str], version: str) -> str:
    """``nav/README.txt``: which T1w to load (name and full SHA-256), target, entry, handle, and for each
    written file its navigator and import steps (``names``: file key -> name under ``nav/``)."""
    handle = np.asarray(native.get("handle_direction_t1w_ras") or [np.nan] * 3, float)
    lines = [
        f"tmstarget {version}: neuronavigation files for {prefix}",
        "",
        f"Load this T1w as the anatomy: {native.get('t1w_path')} (sha256 {native.get('t1w_sha256')}).",
        "Check it before importing: `sha256sum FILE` must print the checksum above.",
        "All positions are world RAS millimetres of that file (qform and sform agree where both are set).",
        f"Target (cortex) T1w RAS mm: {np.round(native.get('target_t1w_ras_mm', [np.nan] * 3), 2).tolist()}",
        f"Scalp entry T1w RAS mm:     {np.round(native.get('entry_t1w_ras_mm', [np.nan] * 3), 2).tolist()}",
        f"Handle direction (T1w RAS): {np.round(handle, 3).tolist()} = {describe_direction(handle)}, "
        f"{native.get('handle_angle_deg')} deg from posterior towards lateral.",
        "",
        "Files and import steps:",
    ]
    for key, name in names.items():
        if key not in IMPORT_STEPS:
            continue
        navigator, what, _ = IMPORT_STEPS[key]
        lines += ["", f"{name}", f"  {navigator}: {what}"]
        lines += [f"  {i}. {step}" for i, step in enumerate(import_steps(key, name), 1)]
    return "\n".join(lines) + "\n"
