"""The navigator box of the report: which T1w to load, target and entry in its world mm, the coil handle in
words and as a glyph, and which ``nav/`` file goes into which navigator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmstarget.navigation.exports import EXPORT_FORMATS, export_names
from tmstarget.navigation.localite import localite_timestamp
from tmstarget.navigation.steps import IMPORT_STEPS, describe_direction, import_steps
from tmstarget.qc.text import fmt, fmt3
from tmstarget.report.common import SubjectContext, unit_name
from tmstarget.report.figures import coil_geometry
from tmstarget.report.verdict import unit_verdict

#: Navigator name and what to do with each ``nav/`` file (keys of :func:`tmstarget.navigation.exports.export_names`).
NAVIGATOR_IMPORTS = {key: (nav, what) for key, (nav, what, _) in IMPORT_STEPS.items()}

WORLD_CONVENTION_WORDS = ("NIfTI world coordinates of this file: x to the right, y to the front, z up "
                          "(RAS, millimetres)")

def handle_angle_from_posterior_deg(handle, normal, entry) -> tuple[float, str] | None:
    """(angle in degrees from posterior towards lateral in the scalp plane, "left"/"right") of a handle
    direction; the same definition as :func:`tmstarget.native.scalp.handle_direction_ras`. None if undefined."""
    from tmstarget.native.scalp import handle_direction_ras

    if handle is None or normal is None or entry is None:
        return None
    side = "left" if entry[0] < 0 else "right"
    posterior_t = handle_direction_ras(entry, normal, 0.0)
    lateral_t = handle_direction_ras(entry, normal, 90.0)
    h = np.asarray(handle, float)
    angle = float(np.degrees(np.arctan2(np.dot(h, lateral_t), np.dot(h, posterior_t))))
    return angle, side


def handle_in_words(native: dict | None) -> str:
    """The handle direction in words, e.g. ``posterior-lateral, 45 deg from posterior towards left
    (world direction: posterior, left)``; "not recorded" when the native JSON has no handle."""
    geom = coil_geometry(native)
    if geom is None or geom["handle"] is None:
        return "not recorded"
    res = handle_angle_from_posterior_deg(geom["handle"], geom["normal"], geom["entry"])
    if res is None:
        return "not recorded"
    angle, side = res
    a = abs(angle)
    if a < 15:
        name = "posterior"
    elif a <= 75:
        name = "posterior-lateral" if angle > 0 else "posterior-medial"
    elif a <= 105:
        name = "lateral" if angle > 0 else "medial"
    else:
        name = "anterior-lateral" if angle > 0 else "anterior-medial"
    towards = side if angle >= 0 else ("right" if side == "left" else "left")
    words = describe_direction(geom["handle"]).replace("-", ", ")
    return f"{name}, {a:.0f} deg from posterior towards {towards} (world direction: {words})"


def handle_glyph(native: dict | None, size: int = 170) -> dict | None:
    """Coordinates (SVG pixels) of a small top view: the head seen from above (nose up, the subject's
    left on the left), the coil circle at the entry and its handle line. None without a handle."""
    geom = coil_geometry(native)
    if geom is None or geom["handle"] is None:
        return None
    c = size / 2
    r_head = size * 0.3
    e = geom["entry"][:2]
    norm = float(np.linalg.norm(e))
    pos = (np.array([c, c]) if norm == 0
           else np.array([c + r_head * 0.78 * e[0] / norm, c - r_head * 0.78 * e[1] / norm]))
    h = geom["handle"][:2]
    h = h / np.linalg.norm(h) if np.linalg.norm(h) > 1e-6 else np.array([0.0, -1.0])
    coil_r = size * 0.08
    start = pos + coil_r * np.array([h[0], -h[1]])
    end = pos + (coil_r + size * 0.16) * np.array([h[0], -h[1]])
    r = lambda v: round(float(v), 1)  # noqa: E731
    return {"size": size, "c": r(c), "rx": r(r_head * 0.85), "ry": r(r_head), "nose_top": r(c - r_head - 8),
            "nose_base": r(c - r_head + 1), "nose_l": r(c - 6), "nose_r": r(c + 6),
            "coil_x": r(pos[0]), "coil_y": r(pos[1]), "coil_r": r(coil_r),
            "x1": r(start[0]), "y1": r(start[1]), "x2": r(end[0]), "y2": r(end[1]),
            "label_x": r(min(max(end[0], 24), size - 24)), "anchor": "middle",
            "label_y": r(min(max(end[1] + (15 if h[1] < 0 else -6), 14), size - 2))}


def nav_files(ctx: SubjectContext) -> list[dict]:
    """``[{navigator, file, what, steps}]`` for each export format the run was configured with
    (``nav_formats``); the Localite names carry the run's stamp, read from the native JSON as the export
    step reads it (:func:`tmstarget.navigation.localite.localite_timestamp`)."""
    formats = ctx.inputs.get("nav_formats")
    if formats is None:
        formats = list(EXPORT_FORMATS)
    native_path = ctx.path("native_json")
    if native_path is None:
        return []
    names = export_names(unit_name(ctx.inputs), localite_timestamp(native_path))
    out = []
    for fmt_name in formats:
        for key in EXPORT_FORMATS.get(str(fmt_name), []):
            nav, what = NAVIGATOR_IMPORTS[key]
            out.append({"navigator": nav, "file": "nav/" + names[key], "what": what,
                        "steps": import_steps(key, names[key])})
    return out


def navigator_view(ctx: SubjectContext) -> dict | None:
    """The technician's box: which T1w to load, target and entry in its world mm, the handle in words
    and as a glyph, depth, which nav/ file goes into which navigator, and header warnings."""
    n = ctx.native
    if not n:
        return None
    sha = str(n.get("t1w_sha256") or "")
    verdict = unit_verdict(ctx)
    return {
        "t1w": Path(str(n.get("t1w_path"))).name if n.get("t1w_path") else "n/a",
        "sha256": sha or "n/a", "has_sha": bool(sha),
        "target": fmt3(n.get("target_t1w_ras_mm")), "entry": fmt3(n.get("entry_t1w_ras_mm")),
        "convention": WORLD_CONVENTION_WORDS,
        "handle": handle_in_words(n), "glyph": handle_glyph(n),
        "depth": fmt(n.get("scalp_to_cortex_mm"), 1, "mm"),
        "usable": verdict.get("coordinate_usable") is not False and verdict.get("status") != "fail",
        "files": nav_files(ctx),
        "header_warnings": [str(f.get("text")) for f in verdict.get("findings") or []
                            if isinstance(f, dict) and f.get("topic") == "header" and f.get("level") in ("warn", "fail")],
    }
