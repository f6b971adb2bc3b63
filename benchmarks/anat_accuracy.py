"""T1w->MNI accuracy and cost of ``preprocess_anat`` on the demo T1w, where the true map is known.

Writes a one-subject demo dataset (``tmstarget.demo.core``; 1.5 mm synthetic T1w with a planted
T1w->MNI map), runs ``preprocess_anat`` in a fresh child process per registration mode (as
``benchmarks/anat_resolution.py`` does: ITK pinned to one thread) and prints, per mode: wall s,
CPU s (user+sys of the child), seconds per sub-step, template correlation, brain volume and the
median / 95th percentile distance (mm) between our and the true MNI position of every brain voxel
(:func:`tmstarget.demo.truth.t1w_to_mni_error_mm`, the measure of
``tests/test_preprocessing.py::test_demo_t1w_to_mni_error_below_2mm``, whose threshold is a median
below 2 mm).

    python benchmarks/anat_accuracy.py [--modes fast default] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["fast", "default"], choices=["fast", "default"])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    from anat_resolution import run_case

    from tmstarget.demo.core import make_demo_dataset
    from tmstarget.demo.truth import load_ground_truth, t1w_to_mni_error_mm

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tmstarget_anatacc_"))
    bids = work / "demo"
    if not (bids / "sub-01").exists():
        make_demo_dataset(bids, n_subjects=1, n_volumes=10)
    truth = load_ground_truth(bids, "01")
    t1w = bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    print(f"{'mode':8s} {'wall s':>7s} {'CPU s':>7s}  steps (wall/CPU s)  template corr  brain ml  "
          "error median / p95 (mm)")
    for mode in args.modes:
        r = run_case(t1w, work / mode, {"registration": mode}, {})
        err = t1w_to_mni_error_mm(r["out"]["preproc_t1w"], r["out"]["xfm_mni_to_t1w"], truth["t1w_to_mni_map"],
                                  r["out"]["brain_mask"])
        steps = ", ".join(f"{k} {v:.0f}/{r['qc']['cpu_seconds'][k]:.0f}" for k, v in r["qc"]["seconds"].items())
        print(f"{mode:8s} {r['wall_s']:7.0f} {r['cpu_s']:7.0f}  {steps}  {r['qc']['template_correlation']:.3f}  "
              f"{r['qc']['brain_volume_ml']:.0f}  {np.median(err):.2f} / {np.percentile(err, 95):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
