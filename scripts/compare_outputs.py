"""Compare two tmstarget output folders of the same input (e.g. the demo before and after a change).

    python scripts/compare_outputs.py OUT_BEFORE OUT_AFTER

Prints, per unit: the target in MNI and T1w (RAS mm) in both, the largest absolute difference of every
seed map (NIfTI ``*_boldmap.nii.gz``, MNI and T1w), the verdict status and reasons, and which navigator
files differ in bytes (after removing lines that carry a time or a version). Exit 1 when a coordinate,
verdict or navigator file differs or a map differs by 1e-6 or more.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

VOLATILE = re.compile(rb"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d|tmstarget[ _-]?v?\d+\.\d+|InstrumentMarker\d+|EntryTarget\d+)")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _strip(data: bytes) -> bytes:
    return b"\n".join(line for line in data.splitlines() if not VOLATILE.search(line))


def compare(before: Path, after: Path) -> int:
    bad = 0
    a_root, b_root = before / "tmstarget", after / "tmstarget"
    for a_sub in sorted(a_root.glob("sub-*/")):
        b_sub = b_root / a_sub.name
        print(f"== {a_sub.name}")
        for name in ("*desc-target_markers.json",):
            for a in sorted(a_sub.rglob(name)):
                b = b_sub / a.relative_to(a_sub)
                ja, jb = _json(a), _json(b)
                for key in ("target_mni_ras_mm", "target_t1w_ras_mm", "entry_t1w_ras_mm"):
                    if key in ja or key in jb:
                        same = ja.get(key) == jb.get(key)
                        bad += not same
                        print(f"  {a.name} {key}: {ja.get(key)} -> {jb.get(key)} {'same' if same else 'DIFFERENT'}")
        for a in sorted(a_sub.rglob("*_boldmap.nii.gz")):
            b = b_sub / a.relative_to(a_sub)
            if not b.exists():
                print(f"  {a.name}: missing after (renamed?)"); bad += 1; continue
            d = float(np.max(np.abs(np.asanyarray(nib.load(a).dataobj, np.float64)
                                    - np.asanyarray(nib.load(b).dataobj, np.float64))))
            bad += d >= 1e-6
            print(f"  {a.name}: max abs diff {d:.3g}")
        va, vb = _json(next(a_sub.glob("*desc-verdict_qc.json"))), _json(next(b_sub.glob("*desc-verdict_qc.json")))
        same = (va["status"], va.get("reasons")) == (vb["status"], vb.get("reasons"))
        bad += not same
        print(f"  verdict: {va['status']} -> {vb['status']}; reasons {'same' if same else 'DIFFERENT'}")
        a_nav, b_nav = a_sub / "nav", b_sub / "nav"
        if a_nav.exists():
            fa = sorted(p.relative_to(a_nav) for p in a_nav.rglob("*") if p.is_file())
            fb = sorted(p.relative_to(b_nav) for p in b_nav.rglob("*") if p.is_file())
            names = lambda fs: [re.sub(r"\d{10,}", "<stamp>", str(f)) for f in fs]  # noqa: E731
            diff = [str(x) for x, y in zip(fa, fb) if _strip((a_nav / x).read_bytes()) != _strip((b_nav / y).read_bytes())]
            bad += bool(diff) or names(fa) != names(fb)
            print(f"  nav: {len(fa)} files before, {len(fb)} after; names {'same' if names(fa) == names(fb) else 'DIFFERENT'}; "
                  f"differing in content (time and version lines left out): {diff or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
