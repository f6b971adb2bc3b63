#!/usr/bin/env python
"""Speed and memory benchmark: tmstarget denoise + seed map versus plain nilearn (issue 8).

For each input (a small demo-sized run and a large 2 mm MNI run with 600 volumes, both synthetic, or
a real run given with --bold/--mask/--confounds) four stages run, each in its own subprocess:

    tmstarget-denoise   tmstarget.denoise.run.denoise_runs + npz           (Fox strategy)
    tmstarget-seedmap   tmstarget.target.connectivity.run_seedmap            (r and z NIfTI + JSON)
    nilearn-denoise     NiftiMasker(...).fit_transform (signal.clean inside) + npz, same settings
    nilearn-seedmap     seed mean, plain correlation (dot product of z-scored series), Fisher z,
                        masker.inverse_transform + to_filename

Wall time is measured around each subprocess (it includes Python start-up and imports) and the peak
resident memory of that process comes from ``os.wait4`` (``ru_maxrss``). Input generation is not
timed. At the end the two r maps are compared (they differ at the mask border only, where nilearn
smooths zeros from outside the brain into it).

Usage:
    .venv/bin/python benchmarks/bench_denoise_seedmap.py                 # small and large
    .venv/bin/python benchmarks/bench_denoise_seedmap.py --sizes small
    .venv/bin/python benchmarks/bench_denoise_seedmap.py --bold B --mask M --confounds C [--t-r 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STRATEGY = {"motion": 24, "wm_csf": True, "global_signal": True, "acompcor": 0, "high_pass_hz": 0.01,
            "low_pass_hz": 0.1, "fd_threshold_mm": 0.5, "smoothing_fwhm_mm": 6.0, "detrend": True}
SEED_CENTER_MNI_RAS_MM = (6.0, 16.0, -10.0)
SEED_RADIUS_MM = 10.0
SIZES = {"small": 150, "large": 600}    # volumes on the 2 mm MNI grid
T_R_S = 2.0


# ----------------------------------------------------------------------------- synthetic inputs


def write_synthetic_run(out_dir: Path, n_vols: int, seed: int = 0) -> dict:
    """A synthetic fMRIPrep-layout run on nilearn's MNI152 2 mm grid (99 x 117 x 95), streamed to disk."""
    import nibabel as nib
    import pandas as pd
    from nilearn.datasets import load_mni152_brain_mask
    from scipy import ndimage

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) > 0
    head = ndimage.binary_dilation(mask, iterations=3)
    affine = mask_img.affine
    shape = mask.shape
    name = "sub-bench_task-rest_space-MNI152NLin2009cAsym_res-2"
    mask_path = out_dir / f"{name}_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), mask_path)

    # time courses: global signal, two anticorrelated networks, motion
    n_dummy = 2
    gs = np.convolve(rng.standard_normal(n_vols + 20), np.ones(5) / 5, "same")[10:-10]
    net = np.convolve(rng.standard_normal(n_vols + 20), np.hanning(9) / 4, "same")[10:-10]
    motion = np.cumsum(rng.normal(0, 1, (n_vols, 6)) * [0.03, 0.03, 0.03, 4e-4, 4e-4, 4e-4], axis=0)
    fd = np.r_[np.nan, np.abs(np.diff(motion[:, :3], axis=0)).sum(1) + 50 * np.abs(np.diff(motion[:, 3:], axis=0)).sum(1)]
    spikes = rng.choice(np.arange(n_dummy + 1, n_vols), size=max(1, n_vols // 30), replace=False)
    fd[spikes] = 0.8
    ijk = np.indices(shape).reshape(3, -1).T
    xyz_mm = ijk @ affine[:3, :3].T + affine[:3, 3]
    weight_v = np.exp(-np.sum((xyz_mm - SEED_CENTER_MNI_RAS_MM) ** 2, 1) / (2 * 15 ** 2)) \
        - np.exp(-np.sum((xyz_mm - (-40, 40, 28)) ** 2, 1) / (2 * 15 ** 2))
    weight_vol = weight_v.reshape(shape).astype(np.float32) * 15
    base_vol = np.where(head, 900 + 200 * mask, 0).astype(np.float32)

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape + (n_vols,))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(affine, 1)
    hdr.set_sform(affine, 1)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_zooms((2.0, 2.0, 2.0, T_R_S))
    hdr["vox_offset"] = 352
    bold_path = out_dir / f"{name}_desc-preproc_bold.nii.gz"
    with gzip.open(bold_path, "wb", compresslevel=1) as f:
        hdr.write_to(f)
        for t in range(n_vols):
            vol = base_vol + (weight_vol * net[t] + 8 * gs[t]) * head
            vol += rng.standard_normal(shape, dtype=np.float32) * 12 * head
            if t < n_dummy:
                vol *= 1.3
            f.write(np.asfortranarray(vol, dtype=np.float32).tobytes(order="F"))
    (out_dir / f"{name}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": T_R_S}))

    cols = {}
    for j, m in enumerate(("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")):
        x = motion[:, j]
        d = np.r_[np.nan, np.diff(x)]
        cols.update({m: x, f"{m}_derivative1": d, f"{m}_power2": x ** 2, f"{m}_derivative1_power2": d ** 2})
    for key, x in (("global_signal", gs), ("white_matter", rng.standard_normal(n_vols)),
                   ("csf", rng.standard_normal(n_vols))):
        cols[key] = x
        cols[f"{key}_derivative1"] = np.r_[np.nan, np.diff(x)]
    for j in range(6):
        cols[f"a_comp_cor_{j:02d}"] = rng.standard_normal(n_vols)
    cols["framewise_displacement"] = fd
    for j in range(n_dummy):
        cols[f"non_steady_state_outlier{j:02d}"] = (np.arange(n_vols) == j).astype(int)
    conf_path = out_dir / "sub-bench_task-rest_desc-confounds_timeseries.tsv"
    pd.DataFrame(cols).to_csv(conf_path, sep="\t", index=False, na_rep="n/a")
    return {"bold": str(bold_path), "mask": str(mask_path), "confounds": str(conf_path)}


def write_seed_mask(mask_path: str, out_path: Path) -> Path:
    """A 10 mm sphere at the sgACC seed on the grid of the brain mask."""
    import nibabel as nib

    img = nib.load(mask_path)
    ijk = np.indices(img.shape[:3]).reshape(3, -1).T
    xyz_mm = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    inside = np.sum((xyz_mm - SEED_CENTER_MNI_RAS_MM) ** 2, 1) <= SEED_RADIUS_MM ** 2
    nib.save(nib.Nifti1Image(inside.reshape(img.shape[:3]).astype(np.uint8), img.affine), out_path)
    return out_path


# ----------------------------------------------------------------------------- stages (children)


def stage_tmstarget_denoise(a):
    from tmstarget.denoise.arrays import save_denoised_npz
    from tmstarget.denoise.run import denoise_runs

    run = {"bold": a.bold, "mask": a.mask, "confounds": a.confounds, "t_r": a.t_r}
    res = denoise_runs([run], STRATEGY, min_retained_minutes=0, warn_retained_minutes=0, strategy_name="fox")
    save_denoised_npz(res, a.out)
    return {"shape": list(res.data_tv.shape)}


def stage_tmstarget_seedmap(a):
    from tmstarget.target.connectivity import run_seedmap

    side = run_seedmap(a.npz, a.seed, a.out + "_r.nii.gz", a.out + "_fisherz.nii.gz", a.out + "_r.json",
                       seed_definition={"type": "sphere"})
    return {"seed_voxels": side["seed_voxels_in_mask"]}


def _nilearn_confounds(conf_path: str):
    """The Fox strategy's confounds and sample mask, read with pandas only (same selection)."""
    import pandas as pd

    df = pd.read_csv(conf_path, sep="\t", na_values=["n/a"])
    motion = [c for c in df.columns if c.startswith(("trans_", "rot_"))]
    names = motion + ["white_matter", "csf", "global_signal"]
    names = [n for n in names if not n.startswith(("white_matter_", "csf_", "global_signal_"))]
    x = df[names].to_numpy(float)
    x = np.where(np.isfinite(x), x, np.nanmean(x, axis=0))
    dummy_cols = [c for c in df.columns if c.startswith("non_steady_state_outlier")]
    flagged = df[dummy_cols].to_numpy().any(axis=1) if dummy_cols else np.zeros(len(df), bool)
    censor = flagged | (df["framewise_displacement"].fillna(0).to_numpy() > STRATEGY["fd_threshold_mm"])
    return x, np.flatnonzero(~censor)


def stage_nilearn_denoise(a):
    from nilearn.maskers import NiftiMasker

    confounds, sample_mask = _nilearn_confounds(a.confounds)
    masker = NiftiMasker(mask_img=a.mask, smoothing_fwhm=STRATEGY["smoothing_fwhm_mm"], standardize="zscore_sample",
                         detrend=True, low_pass=STRATEGY["low_pass_hz"], high_pass=STRATEGY["high_pass_hz"],
                         t_r=a.t_r, standardize_confounds=True)
    data_tv = masker.fit_transform(a.bold, confounds=confounds, sample_mask=sample_mask)
    with open(a.out, "wb") as f:
        np.savez(f, data_tv=data_tv.astype(np.float32, copy=False))
    return {"shape": list(data_tv.shape)}


def stage_nilearn_seedmap(a):
    from nilearn.maskers import NiftiMasker

    masker = NiftiMasker(mask_img=a.mask).fit()
    with np.load(a.npz) as z:
        data_tv = z["data_tv"]
    seed_cols = np.ravel(masker.transform(a.seed)) > 0
    s = data_tv[:, seed_cols].mean(axis=1)
    s = (s - s.mean()) / s.std(ddof=1)
    r = (s @ data_tv) / (data_tv.shape[0] - 1)          # plain correlation of z-scored series
    z = np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7))
    masker.inverse_transform(r).to_filename(a.out + "_r.nii.gz")
    masker.inverse_transform(z).to_filename(a.out + "_fisherz.nii.gz")
    return {"seed_voxels": int(seed_cols.sum())}


STAGES = {"tmstarget-denoise": stage_tmstarget_denoise, "tmstarget-seedmap": stage_tmstarget_seedmap,
          "nilearn-denoise": stage_nilearn_denoise, "nilearn-seedmap": stage_nilearn_seedmap}


def _limit_memory(gb):
    import resource

    def set_limit():
        resource.setrlimit(resource.RLIMIT_AS, (int(gb * 2 ** 30), int(gb * 2 ** 30)))
    return set_limit


def run_child(stage: str, mem_limit_gb: float | None = None, **kw) -> dict:
    """Run one stage in a fresh Python process; wall time (s) and its own peak RSS (MB, ``os.wait4``).

    With ``mem_limit_gb`` the child's address space is capped (so a reference implementation that
    needs more memory than the machine can spare fails alone instead of starving other processes);
    a failure is then reported in the table instead of stopping the benchmark.
    """
    cmd = [sys.executable, __file__, "--child", stage] + [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True,
                                preexec_fn=_limit_memory(mem_limit_gb) if mem_limit_gb else None)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode and mem_limit_gb and "MemoryError" in err:
        print(f"  {stage}: failed after {wall_s:.1f} s, needs more than {mem_limit_gb:g} GB", flush=True)
        return {"stage": stage, "wall_s": float("nan"), "cpu_s": rusage.ru_utime + rusage.ru_stime,
                "peak_rss_mb": rusage.ru_maxrss / 1024, "failed": f"MemoryError above {mem_limit_gb:g} GB"}
    if proc.returncode:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}):\n{err[-3000:]}")
    info = json.loads(out.strip().splitlines()[-1])
    info.update(stage=stage, wall_s=wall_s, cpu_s=rusage.ru_utime + rusage.ru_stime,
                peak_rss_mb=rusage.ru_maxrss / 1024)
    print(f"  {stage}: {wall_s:.1f} s wall, {info['cpu_s']:.1f} s CPU, {info['peak_rss_mb']:.0f} MB", flush=True)
    return info


def compare_r_maps(mask_path, ours, theirs) -> dict:
    import nibabel as nib
    from scipy import ndimage

    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    interior = ndimage.binary_erosion(mask, iterations=6)   # kernel reach: 4 sigma = 5.1 voxels
    a = np.asarray(nib.load(ours).dataobj)
    b = np.asarray(nib.load(theirs).dataobj)
    return {"r_corr_in_mask": float(np.corrcoef(a[mask], b[mask])[0, 1]),
            "r_max_abs_diff_interior": float(np.abs(a[interior] - b[interior]).max())}


def bench_run(label: str, run: dict, t_r: float, work: Path, nilearn_mem_gb: float | None = None) -> list[dict]:
    seed = write_seed_mask(run["mask"], work / f"{label}_seed.nii.gz")
    common = dict(bold=run["bold"], mask=run["mask"], confounds=run["confounds"], t_r=t_r)
    rows = []
    for who in ("tmstarget", "nilearn"):
        npz = work / f"{label}_{who}.npz"
        limit = nilearn_mem_gb if who == "nilearn" else None
        rows.append(run_child(f"{who}-denoise", mem_limit_gb=limit, out=npz, **common))
        if rows[-1].get("failed"):
            break
        rows.append(run_child(f"{who}-seedmap", npz=npz, seed=seed, out=work / f"{label}_{who}", **common))
        npz.unlink()
    theirs = work / f"{label}_nilearn_r.nii.gz"
    cmp = compare_r_maps(run["mask"], work / f"{label}_tmstarget_r.nii.gz", theirs) if theirs.exists() else None
    print(f"\n== {label}: {run['bold']}  (data {rows[0]['shape'][0]} volumes x {rows[0]['shape'][1]} voxels)")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: wall times include waiting for "
          "other processes; CPU seconds do not)")
    print(f"{'stage':<20}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>14}")
    for r in rows:
        print(f"{r['stage']:<20}{r['wall_s']:>10.1f}{r['cpu_s']:>10.1f}{r['peak_rss_mb']:>14.0f}")
    tot = {w: sum(r["wall_s"] for r in rows if r["stage"].startswith(w)) for w in ("tmstarget", "nilearn")}
    cpu = {w: sum(r["cpu_s"] for r in rows if r["stage"].startswith(w)) for w in ("tmstarget", "nilearn")}
    peak = {w: max(r["peak_rss_mb"] for r in rows if r["stage"].startswith(w)) for w in ("tmstarget", "nilearn")}
    for w in ("tmstarget", "nilearn"):
        print(f"{'total ' + w:<20}{tot[w]:>10.1f}{cpu[w]:>10.1f}{peak[w]:>14.0f}")
    failed = [r for r in rows if r.get("failed")]
    if failed:
        print(f"nilearn did not finish: {failed[0]['stage']} {failed[0]['failed']} after {failed[0]['cpu_s']:.0f} s CPU "
              f"(peak RSS {failed[0]['peak_rss_mb']:.0f} MB); tmstarget finished both stages in {cpu['tmstarget']:.0f} s CPU")
    else:
        print(f"speed-up x{tot['nilearn'] / tot['tmstarget']:.1f} wall, x{cpu['nilearn'] / cpu['tmstarget']:.1f} CPU")
    if cmp:
        print(f"r maps: correlation {cmp['r_corr_in_mask']:.4f} in the mask, max |diff| {cmp['r_max_abs_diff_interior']:.5f} "
              "farther than the smoothing kernel from the mask border")
    faster = bool(failed) or (tot["tmstarget"] < tot["nilearn"] and cpu["tmstarget"] < cpu["nilearn"])
    print(f"target: faster than nilearn {'OK' if faster else 'FAIL'}, "
          f"peak < 3 GB {'OK' if peak['tmstarget'] < 3072 else 'FAIL'}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", choices=sorted(STAGES))
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "large"])
    p.add_argument("--bold")
    p.add_argument("--mask")
    p.add_argument("--confounds")
    p.add_argument("--t-r", type=float, default=None)
    p.add_argument("--npz")
    p.add_argument("--seed")
    p.add_argument("--out")
    p.add_argument("--nilearn-mem-gb", type=float, default=16.0,
                   help="address-space cap of the nilearn processes (default 16 GB)")
    p.add_argument("--workdir", help="where inputs and outputs go (default: a temporary folder)")
    a = p.parse_args(argv)
    if a.child:
        if a.t_r is None:
            from tmstarget.io.nifti import read_t_r
            a.t_r = read_t_r(a.bold)
        print(json.dumps(STAGES[a.child](a)))
        return
    with tempfile.TemporaryDirectory(prefix="tmstarget-bench-", dir=a.workdir) as tmp:
        work = Path(tmp)
        if a.bold:
            from tmstarget.io.nifti import read_t_r
            run = {"bold": a.bold, "mask": a.mask, "confounds": a.confounds}
            bench_run("given", run, a.t_r or read_t_r(a.bold), work, a.nilearn_mem_gb)
            return
        for size in a.sizes:
            t0 = time.perf_counter()
            run = write_synthetic_run(work / size, SIZES[size])
            print(f"(generated {size} run, {SIZES[size]} volumes, in {time.perf_counter() - t0:.0f} s; not timed)")
            bench_run(size, run, T_R_S, work, a.nilearn_mem_gb)
            for f in (work / size).iterdir():
                f.unlink()


if __name__ == "__main__":
    main()
