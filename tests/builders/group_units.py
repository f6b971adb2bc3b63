"""Per-unit outputs the dataset report reads (target, T1w target, denoising QC, seed sidecar and verdict
JSON, as in docs/architecture.md), with chosen targets, split-half values and verdicts; and a fake cohort
of N such units for the size of the dataset report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from builders.report_unit import denoise_qc, native_markers, seed_sidecar, target_markers

REASON = {"pass": [], "warn": ["target not reproducible: the split halves lie far apart"],
          "fail": ["only 2.0 min of data kept after censoring"]}


def write_unit(root: Path, unit: str, status: str, target_mni, split_half_mm: float = 4.2, target_t1w=None,
               shared: dict | None = None) -> dict:
    """Write one unit's JSON outputs under ``root`` and return its entry for ``build_group_report``.

    ``status`` is written as the unit's verdict (the report takes it from there); ``target_mni`` (MNI RAS
    mm) and ``split_half_mm`` go into the target JSON; ``target_t1w`` (T1w RAS mm) into the T1w target
    JSON. ``shared`` maps entry keys to files reused for every unit (a cohort's identical QC files)."""
    root.mkdir(parents=True, exist_ok=True)
    t = target_markers(target_mni_ras_mm=[float(v) for v in target_mni])
    t["uncertainty"] = dict(t["uncertainty"], split_half_distance_mm=float(split_half_mm))
    objs = {"target_json": t, "verdict_json": {"status": status, "reasons": REASON[status]}}
    if target_t1w is not None or not shared:
        n = native_markers(t, root)
        if target_t1w is not None:
            n["target_t1w_ras_mm"] = [float(v) for v in target_t1w]
        objs["native_json"] = n
    if not shared:
        objs.update(denoise_qc_json=denoise_qc(root), seed_json=seed_sidecar())
    entry = {"unit": unit, "report_html": f"{unit}.html", **(shared or {})}
    for key, obj in objs.items():
        path = root / f"{unit}_{key}.json"
        path.write_text(json.dumps(obj))
        entry[key] = str(path)
    return entry


def fake_cohort(root: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` units ``sub-0000``... with targets scattered (sd 5 mm) around the left DLPFC, every 10th a
    FAIL and every 4th a WARN, split-half medians between 1 and 11 mm; the T1w target, denoising QC and
    seed files are shared (only the target and verdict JSON are per unit)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    t = target_markers()
    shared = {}
    for key, obj in (("native_json", native_markers(t, root)), ("denoise_qc_json", denoise_qc(root)),
                     ("seed_json", seed_sidecar())):
        shared[key] = str(root / f"shared_{key}.json")
        Path(shared[key]).write_text(json.dumps(obj))
    entries = []
    for i in range(n):
        status = "fail" if i % 10 == 3 else "warn" if i % 4 == 1 else "pass"
        target = (np.array([-42.0, 42.0, 30.0]) + rng.normal(0, 5, 3)).round(1)
        entries.append(write_unit(root, f"sub-{i:04d}", status, target, round(float(rng.uniform(1, 11)), 1),
                                  shared=shared))
    return entries
