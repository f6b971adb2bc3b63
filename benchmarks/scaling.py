#!/usr/bin/env python
"""Scaling benchmark (issue 14 item 3): cost per stage as runs grow to modern multiband sizes.

Synthesises native-space BOLD runs of growing size (the MNI152 template as a head, moved by a smooth
random rigid motion with jerks, thermal noise, int16 on disk):

    3mm-200     64 x 64 x 48 voxels, 3 mm, 200 volumes, TR 2.0 s
    2mm-600    100 x 100 x 72 voxels, 2 mm, 600 volumes, TR 0.8 s (multiband-like)
    2mm-1200   100 x 100 x 72 voxels, 2 mm, 1200 volumes, TR 0.8 s

and runs each stage in its own child process (so each peak resident memory, ``ru_maxrss`` from
``os.wait4``, is that stage's own; wall time includes Python start-up):

    realign           tmstarget.preproc.realign.estimate_motion on the run read volume by volume (memory map)
    preprocess_bold   the whole built-in BOLD preprocessing (needs preprocess_anat once: the real T1w
                      from scripts/fetch_real_data.sh); it reads the run one volume at a time
    denoise, seedmap  tmstarget.denoise.run + connectivity on a synthetic MNI 2 mm run of the same length
                      (benchmarks/bench_denoise_seedmap.py's generator and stages)

and, in the same run, the per-volume CPU cost of the old realignment (one antsRegistration per volume,
kept below as ``old_ants_estimate_motion``) against the new one on the first few volumes of each size.

Goals (issue 14): cost linear in volumes; peak memory < 4 GB at 2 mm x 1200; new realignment >= 10x
cheaper per volume than the old one.

    python benchmarks/scaling.py [--sizes 3mm-200,2mm-600,2mm-1200] [--workdir DIR] [--no-preprocess]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

SIZES = {"3mm-200": ((64, 64, 48), 3.0, 200, 2.0),
         "2mm-600": ((100, 100, 72), 2.0, 600, 0.8),
         "2mm-1200": ((100, 100, 72), 2.0, 1200, 0.8),
         "smoke": ((48, 48, 36), 3.0, 80, 2.0)}  # a quick check of the script itself
RATIO_VOLUMES = 6


# ----------------------------------------------------------------------------- synthetic native runs


def write_native_run(path: Path, shape, voxel_mm: float, n_vols: int, t_r: float, seed: int = 0) -> dict:
    """An int16 .nii run (uncompressed, so it can be memory-mapped) and its planted motion (T, 6)."""
    import nibabel as nib
    from scipy import ndimage

    from tmstarget.preproc import confounds as pc
    from tmstarget.preproc.templates import load_template

    rng = np.random.default_rng(seed)
    tpl = load_template(2)["t1"]
    head = np.asarray(tpl.get_fdata(), np.float32)
    head = ndimage.gaussian_filter(head, 0.5) * (1000.0 / np.percentile(head[head > 0], 90))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * voxel_mm + [0.0, -18.0, 10.0]
    centre = (affine @ np.append((np.asarray(shape) - 1) / 2.0, 1.0))[:3]
    steps = rng.normal(0, 1, (n_vols, 6)) * [0.02, 0.03, 0.03, 3e-4, 3e-4, 3e-4]
    motion = np.cumsum(steps, axis=0)
    for v in rng.choice(np.arange(5, n_vols), size=max(1, n_vols // 100), replace=False):
        motion[v] += rng.normal(0, 1, 6) * [0.5, 0.5, 0.5, 0.005, 0.005, 0.005]
    motion -= motion[0]
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    tpl_inv = np.linalg.inv(tpl.affine)
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(shape) + (n_vols,))
    header.set_data_dtype(np.int16)
    header.set_qform(affine, 1)
    header.set_sform(affine, 1)
    header.set_xyzt_units("mm", "sec")
    header.set_zooms((voxel_mm,) * 3 + (t_r,))
    header["vox_offset"] = 352
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\x00" * (352 - f.tell()))
        for t in range(n_vols):
            # scanner voxel x shows the reference head at M_t^-1 x
            m = tpl_inv @ np.linalg.inv(pc.motion_params_to_rigid(motion[t], centre))
            src = m[:3, :3] @ world + m[:3, 3:4]
            vol = ndimage.map_coordinates(head, src, order=1, mode="constant", cval=0.0).reshape(shape)
            vol = np.hypot(vol + rng.normal(0, 15, shape), rng.normal(0, 15, shape)) + 20
            f.write(np.clip(np.rint(vol), 0, 32767).astype("<i2").tobytes(order="F"))
    return {"bold": str(path), "motion": motion, "centre": centre}


# ----------------------------------------------------------------------------- the old realignment


def old_ants_estimate_motion(data_xyzt, affine_ras, reference) -> np.ndarray:
    """The realignment tmstarget used before tmstarget.preproc.realign (kept here for the cost ratio only):
    one antsRegistration (rigid, mean squares, 2 levels) per volume."""
    import ants

    from tmstarget.preproc.headers import RAS_TO_LPS, nifti_to_ants
    from tmstarget.preproc.registration import affine_parameters_lps

    def lps_matrix(transform_file):
        return affine_parameters_lps(transform_file)[0]

    ref = nifti_to_ants(np.asarray(reference, np.float32), affine_ras)
    n_t = data_xyzt.shape[3]
    out = np.empty((n_t, 4, 4))
    with tempfile.TemporaryDirectory(prefix="tmstarget_hmc_") as tmp:
        for t in range(n_t):
            moving = nifti_to_ants(np.asarray(data_xyzt[..., t], np.float32), affine_ras)
            reg = ants.registration(fixed=ref, moving=moving, type_of_transform="Rigid",
                                    initial_transform="Identity", aff_metric="meansquares",
                                    aff_iterations=(40, 20), aff_shrink_factors=(2, 1),
                                    aff_smoothing_sigmas=(1, 0), outprefix=f"{tmp}/v{t}_")
            out[t] = RAS_TO_LPS @ lps_matrix(reg["fwdtransforms"][0]) @ RAS_TO_LPS
            for f in reg["fwdtransforms"]:
                os.remove(f)
    return out


# ----------------------------------------------------------------------------- stages (children)


def _reference(dataobj):
    return np.median(np.asarray(dataobj[..., :10], np.float32), axis=3)


def stage_realign(a):
    import nibabel as nib

    from tmstarget.preproc import confounds as pc
    from tmstarget.preproc import realign

    img = nib.load(a["bold"], mmap=True)
    c0 = time.process_time()
    transforms = realign.estimate_motion(img.dataobj, img.affine, _reference(img.dataobj))
    cpu = time.process_time() - c0
    planted = np.load(a["motion"])
    centre = realign.grid_centre_ras_mm(img.shape, img.affine)
    rel = np.array([pc.rigid_to_motion_params(m, centre) for m in transforms @ np.linalg.inv(transforms[0])])
    corr = [float(np.corrcoef(rel[:, k], planted[:, k])[0, 1]) for k in range(6)]
    return {"cpu_per_volume_s": cpu / img.shape[3], "worst_corr_with_planted": min(corr),
            "max_err_mm": float(np.abs(rel[:, :3] - planted[:, :3]).max()),
            "max_err_deg": float(np.degrees(np.abs(rel[:, 3:] - planted[:, 3:])).max())}


def stage_ratio(a):
    """CPU per volume, old (antspyx loop) and new, on the same first volumes."""
    import nibabel as nib

    from tmstarget.preproc import realign

    img = nib.load(a["bold"], mmap=True)
    ref = _reference(img.dataobj)
    data = np.asarray(img.dataobj[..., :a["n"]], np.float32)
    c0 = time.process_time()
    old = old_ants_estimate_motion(data, img.affine, ref)
    old_s = (time.process_time() - c0) / a["n"]
    c0 = time.process_time()
    new = realign.estimate_motion(data, img.affine, ref)
    new_s = (time.process_time() - c0) / a["n"]
    return {"old_cpu_per_volume_s": old_s, "new_cpu_per_volume_s": new_s,
            "max_translation_difference_mm": float(np.abs(old[:, :3, 3] - new[:, :3, 3]).max())}


def stage_anat(a):
    from tmstarget.preproc import anat as pa

    return {"qc_seconds": pa.preprocess_anat(a["t1w"], a["out"], {"registration": "fast"})["seconds"]}


def stage_preprocess_bold(a):
    from tmstarget.preproc import bold as pb

    qc = pb.preprocess_bold(a["bold"], {"RepetitionTime": a["t_r"]}, a["anat"], a["out"],
                            {"registration": "fast", "dummy_scans": 0})
    return {"seconds": qc["seconds"]}


STAGES = {"realign": stage_realign, "ratio": stage_ratio, "anat": stage_anat, "preprocess_bold": stage_preprocess_bold}


def run_child(stage: str, args: dict) -> dict:
    """One stage in a fresh process: wall (s), CPU (user + system, s), peak RSS (MB) of that process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--child", stage, json.dumps(args)], stdout=out_f,
                                stderr=err_f, text=True, env=env)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{stage} failed:\n{err[-3000:]}")
    info = json.loads(out.strip().splitlines()[-1])
    info.update(stage=stage, wall_s=wall_s, cpu_s=rusage.ru_utime + rusage.ru_stime,
                peak_rss_mb=rusage.ru_maxrss / 1024)
    return info


def row(label, stage, r, extra=""):
    print(f"{label:<10}{stage:<17}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['peak_rss_mb']:>10.0f}  {extra}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3mm-200,2mm-600,2mm-1200")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-preprocess", action="store_true", help="skip preprocess_anat / preprocess_bold")
    parser.add_argument("--bold-max-gb", type=float, default=float("inf"),
                        help="run preprocess_bold only where 2 float32 copies of the run (what it held before "
                             "it streamed the run) are below this (default: always)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        print(json.dumps(STAGES[opts.child[0]](json.loads(opts.child[1]))))
        return 0
    import bench_denoise_seedmap as bds

    from tmstarget.bids.inputs import preproc_anat_paths, preproc_bold_paths

    work = Path(opts.workdir or tempfile.mkdtemp(prefix="tmstarget-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in opts.sizes.split(",") if s]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (wall times include waiting "
          f"for other processes; CPU times do not); workdir {work}")
    anat_out = None
    if not opts.no_preprocess:
        realdata = Path(subprocess.run([str(REPO / "scripts" / "fetch_real_data.sh")], capture_output=True, text=True,
                                       check=True).stdout.strip().splitlines()[-1])
        anat_out = preproc_anat_paths(work / "anat", "sub-bench")
        if not all(Path(p).exists() for p in anat_out.values()):
            r = run_child("anat", {"t1w": str(realdata / "sub-01_T1w.nii.gz"), "out": anat_out})
            print(f"preprocess_anat (real T1w, fast, once): wall {r['wall_s']:.0f} s, CPU {r['cpu_s']:.0f} s, "
                  f"peak {r['peak_rss_mb']:.0f} MB")
    print(f"\n{'size':<10}{'stage':<17}{'wall s':>9}{'CPU s':>9}{'peak MB':>10}")
    summary = {}
    for label in sizes:
        shape, voxel_mm, n_vols, t_r = SIZES[label]
        run = write_native_run(work / f"{label}_bold.nii", shape, voxel_mm, n_vols, t_r)
        np.save(work / f"{label}_motion.npy", run["motion"])
        r = run_child("realign", {"bold": run["bold"], "motion": str(work / f"{label}_motion.npy")})
        row(label, "realign", r, f"{r['cpu_per_volume_s']:.3f} CPU-s/volume; vs planted: worst corr "
            f"{r['worst_corr_with_planted']:.4f}, max err {r['max_err_mm']:.3f} mm / {r['max_err_deg']:.3f} deg")
        summary[label] = {"realign": r}
        bold_gb = 2 * 4 * np.prod(shape) * n_vols / 2 ** 30
        summary[label]["bold_copies_gb"] = bold_gb
        if anat_out is not None and bold_gb < opts.bold_max_gb:
            out = preproc_bold_paths(work / "preproc", f"sub-bench_task-rest_acq-{label}")
            r = run_child("preprocess_bold", {"bold": run["bold"], "t_r": t_r, "anat": anat_out, "out": out})
            row(label, "preprocess_bold", r, " ".join(f"{k} {v:.0f}s" for k, v in r["seconds"].items()))
            summary[label]["preprocess_bold"] = r
        elif anat_out is not None:
            print(f"{label:<10}{'preprocess_bold':<17}  not run: 2 float32 copies of the run would be "
                  f"{bold_gb:.1f} GB > --bold-max-gb {opts.bold_max_gb:g}", flush=True)
        mni = bds.write_synthetic_run(work / f"{label}_mni", n_vols)
        seed = bds.write_seed_mask(mni["mask"], work / f"{label}_seed.nii.gz")
        npz = work / f"{label}.npz"
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                den = bds.run_child("tmstarget-denoise", out=npz, t_r=t_r, **mni)
                sm = bds.run_child("tmstarget-seedmap", npz=npz, seed=seed, out=work / f"{label}_seedmap", t_r=t_r,
                                   **mni)
            finally:
                sys.stdout = stdout
        row(label, "denoise", den, "(MNI 2 mm, 99x117x95)")
        row(label, "seedmap", sm)
        summary[label].update(denoise=den, seedmap=sm)
        for p in (run["bold"], mni["bold"], npz):
            Path(p).unlink(missing_ok=True)
        r = run_child("ratio", {"bold": str(write_native_run(work / f"{label}_ratio.nii", shape, voxel_mm,
                                                                RATIO_VOLUMES + 10, t_r)["bold"]), "n": RATIO_VOLUMES})
        ratio = r["old_cpu_per_volume_s"] / r["new_cpu_per_volume_s"]
        row(label, "old/new ratio", r, f"old {r['old_cpu_per_volume_s']:.3f}, new {r['new_cpu_per_volume_s']:.3f} "
            f"CPU-s/volume on {RATIO_VOLUMES} volumes: x{ratio:.1f} (translations agree within "
            f"{r['max_translation_difference_mm']:.3f} mm)")
        summary[label]["ratio"] = ratio
    print()
    if "2mm-600" in summary and "2mm-1200" in summary:
        for stage in ("realign", "preprocess_bold", "denoise", "seedmap"):
            if stage in summary["2mm-600"] and stage in summary["2mm-1200"]:
                k = summary["2mm-1200"][stage]["cpu_s"] / summary["2mm-600"][stage]["cpu_s"]
                print(f"linearity {stage}: CPU 2mm-1200 / 2mm-600 = {k:.2f} (2.0 is linear)")
    if "2mm-1200" in summary:
        peak = max(v["peak_rss_mb"] for k, v in summary["2mm-1200"].items() if isinstance(v, dict))
        print(f"peak memory at 2 mm x 1200: {peak:.0f} MB over the stages run ({'OK' if peak < 4096 else 'FAIL'}: "
              "goal < 4 GB)")
        if "preprocess_bold" not in summary["2mm-1200"]:
            print("  not counted: preprocess_bold (not run, --bold-max-gb)")
    ratios = [v["ratio"] for v in summary.values()]
    listed = ", ".join(f"{k} x{v['ratio']:.1f}" for k, v in summary.items())
    print(f"old/new realignment CPU per volume: {listed} ({'OK' if min(ratios) >= 10 else 'FAIL'}: goal >= 10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
