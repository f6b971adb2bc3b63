"""Wall time and peak memory of the built-in preprocessing, per step.

Runs ``preprocess_anat`` (real T1w) and ``preprocess_bold`` on a 64x64x36x300 run built from the real
sub-RAPIDTIDETEST scan (64x64x29x260, padded to 36 slices and 300 volumes) in fresh child processes,
so each step's peak resident memory (ru_maxrss, includes ANTs' C++ memory) is its own. Sub-steps
(motion, coregistration, confounds, resampling) are the timings the functions return.

    python benchmarks/bench_preprocessing.py [--registration fast|default] [--workdir DIR]

Fetches the real data with scripts/fetch_real_data.sh if needed (TMSTARGET_REALDATA to reuse).
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
from tmstarget.preproc import bold as pb
args = json.loads(sys.argv[1])
t0 = time.time()
if args["step"] == "anat":
    qc = pa.preprocess_anat(args["t1w"], args["out"], args["params"])
else:
    qc = pb.preprocess_bold(args["bold"], {"RepetitionTime": args["t_r"]}, args["anat"], args["out"], args["params"])
print(json.dumps({"wall_s": time.time() - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime, "qc": qc}))
"""


def make_bold_64x64x36x300(src: Path, dst: Path) -> Path:
    import nibabel as nib
    import numpy as np

    img = nib.load(src)
    data = np.asarray(img.dataobj)
    padded = np.zeros((64, 64, 36, 300), dtype=data.dtype)
    padded[:, :, 3:32, :260] = data
    padded[:, :, 3:32, 260:] = data[..., 20:60]
    affine = img.affine.copy()
    affine[:3, 3] -= affine[:3, 2] * 3
    out = nib.Nifti1Image(padded, affine)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    nib.save(out, dst)
    return dst


def run_child(args: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{args['step']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registration", default="fast", choices=["fast", "default"])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--reuse-anat", action="store_true",
                        help="skip preprocess_anat when its outputs already exist in --workdir")
    opts = parser.parse_args(argv)
    from tmstarget.bids.inputs import preproc_anat_paths, preproc_bold_paths

    realdata = Path(subprocess.run([str(REPO / "scripts" / "fetch_real_data.sh")], capture_output=True, text=True,
                                   check=True).stdout.strip().splitlines()[-1])
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="tmstarget-bench-preproc-"))
    work.mkdir(parents=True, exist_ok=True)
    bold = make_bold_64x64x36x300(realdata / "sub-RAPIDTIDETEST.nii.gz", work / "sub-bench_task-rest_bold.nii.gz")
    params = {"registration": opts.registration}
    anat_out = preproc_anat_paths(work / "preproc", "sub-bench")
    bold_out = preproc_bold_paths(work / "preproc", "sub-bench_task-rest")
    print(f"machine: {os.cpu_count()} cores; registration={opts.registration}; workdir {work}")
    if opts.reuse_anat and all(Path(p).exists() for p in anat_out.values()):
        anat = None
        print("preprocess_anat: reusing existing outputs")
    else:
        anat = run_child({"step": "anat", "t1w": str(realdata / "sub-01_T1w.nii.gz"), "out": anat_out,
                          "params": params})
        report_anat(anat)
    res = run_child({"step": "bold", "bold": str(bold), "t_r": 1.5, "anat": anat_out, "out": bold_out, "params": params})
    print(f"preprocess_bold  (BOLD 64x64x36x300): wall {res['wall_s']:.0f} s, cpu {res['cpu_s']:.0f} s, "
          f"peak RSS {res['peak_rss_mb']:.0f} MB")
    for step, s in res["qc"]["seconds"].items():
        print(f"    {step:<16s} {s:6.1f} s")
    print(f"    motion per volume {res['qc']['seconds']['motion'] / res['qc']['volumes']:.3f} s wall (tmstarget.preproc.realign "
          "plus the native-grid resampling for confounds; benchmarks/scaling.py compares it with the old antspyx loop)")
    print(f"BOLD-T1w correlation {res['qc']['coreg_correlation']:.3f}; dummy volumes {res['qc']['dummy_volumes']}")
    return 0


def report_anat(anat: dict) -> None:
    print(f"preprocess_anat  (T1w 192x256x160): wall {anat['wall_s']:.0f} s, cpu {anat['cpu_s']:.0f} s, "
          f"peak RSS {anat['peak_rss_mb']:.0f} MB")
    for step, s in anat["qc"]["seconds"].items():
        print(f"    {step:<16s} {s:6.1f} s")
    print(f"T1w-template correlation {anat['qc']['template_correlation']:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
