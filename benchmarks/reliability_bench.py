"""Reliability benchmark under an honest protocol (issue 20, items 4, 5, 7): prepare, run, render.

    python benchmarks/reliability_bench.py prepare        # real runs by gate-accepted routes + the demo workflow
    python benchmarks/reliability_bench.py run [--quick]  # writes <bench>/reliability.json
    python benchmarks/reliability_bench.py docs           # writes docs/reliability.md from that JSON
    make reliability-docs                                  # all three from a clean cache

``<bench>`` is ``$TMSTARGET_BENCH`` (default ``~/.cache/tmstarget/bench-protocol``). The preparation is in
``reliability_prepare.py``, the candidate settings, the split-half adapter and the folds in
``reliability_protocol.py``, the synthetic runs in ``reliability.py`` (the issue-13 benchmark, unchanged),
the renderer in ``reliability_docs.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests")]

import functools  # noqa: E402

import reliability as old  # noqa: E402  (synthetic runs, masks, smoothing)
import reliability_prepare as prep  # noqa: E402
import reliability_protocol as proto  # noqa: E402

#: synthetic runs: planted-blob amplitude in noise SDs, lengths (minutes, TR 2 s), datasets per cell
SYNTH_SNRS = (0.2, 0.5, 1.0)
SYNTH_MINUTES = (6.0, 12.0)
SYNTH_REPLICATES = 2
#: minutes curve of the default: SNR, lengths (minutes), datasets
CURVE_SNR, CURVE_MINUTES, CURVE_REPLICATES = 0.2, (4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0), 3
DEMO_CONFIG = REPO / "config" / "demo.yaml"
#: issue 20, item 7: planted-target recovery of the demo within this, or the reason in the page
DEMO_GOAL_MM = 1.5
DEMO_REASON = ""
synth_grid = functools.lru_cache(maxsize=1)(old.synth_grid)   # nilearn's MNI mask, loaded once


def bench_dir() -> Path:
    return Path(os.environ.get("TMSTARGET_BENCH", Path.home() / ".cache" / "tmstarget" / "bench-protocol"))


def realdata_dir() -> Path:
    return old.realdata_dir()


# ----------------------------------------------------------------------------- prepare
def prepare(log=print) -> None:
    bench = bench_dir()
    for name in prep.ROUTES:
        prep.prepare_run(bench, realdata_dir(), name, log)
    demo = bench / "demo"
    if not demo_done(bench):
        from tmstarget.demo.core import make_demo_dataset

        if not (demo / "bids").exists():
            make_demo_dataset(demo / "bids", n_subjects=2, seed=0)
        subprocess.run([sys.executable, "-m", "tmstarget.run.cli", str(demo / "bids"), str(demo / "out"), "participant",
                        "--config", str(DEMO_CONFIG), "--cores", "1"], check=True)


# ----------------------------------------------------------------------------- real runs
#: margin (2 mm voxels) kept around the seed and the search region when a real run is cropped: 16 mm, more
#: than 4.5 sigma of the widest smoothing compared (8 mm FWHM), so the cropped smoothing is the whole-brain one
CROP_MARGIN_VOXELS = 8


def cropped_run(bench: Path, name: str, bold: dict) -> dict:
    """The run's MNI BOLD and mask cut to the box around the seed and the search region (+ margin), written
    once uncompressed: the denoising reads a few percent of the whole-brain file for every strategy and
    smoothing. The confounds come from the table, so the regressors are those of the whole run."""
    import nibabel as nib

    out = {"bold_mni": str(bench / "work" / f"{name}_crop_bold.nii"), "mask_mni": str(bench / "work" / f"{name}_crop_mask.nii"),
           "confounds": bold["confounds"]}
    if Path(out["mask_mni"]).exists():
        return out
    Path(out["bold_mni"]).parent.mkdir(parents=True, exist_ok=True)
    mask_img = nib.load(bold["mask_mni"])
    seed, search = old.masks_for(mask_img, {"seed": "sphere", "search": "ba46"})
    ijk = np.argwhere(seed | search)
    lo = np.maximum(ijk.min(axis=0) - CROP_MARGIN_VOXELS, 0)
    hi = np.minimum(ijk.max(axis=0) + CROP_MARGIN_VOXELS + 1, mask_img.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine = mask_img.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(mask_img.affine, lo)
    img = nib.load(bold["bold_mni"])
    data = np.asarray(img.dataobj[box + (slice(None),)], dtype=np.float32)
    crop = nib.Nifti1Image(data, affine, img.header)
    crop.set_sform(affine, 1)
    crop.set_qform(affine, 1)
    nib.save(crop, out["bold_mni"])
    sidecar = Path(bold["bold_mni"].replace(".nii.gz", ".json"))
    if sidecar.exists():
        Path(out["bold_mni"].replace(".nii", ".json")).write_text(sidecar.read_text())
    nib.save(nib.Nifti1Image(np.asarray(mask_img.dataobj)[box].astype(np.uint8), affine), out["mask_mni"])
    return out


def denoised(bench: Path, name: str, bold: dict, strategy: str, fwhm: float):
    """Denoised data of one prepared run (cropped, :func:`cropped_run`) with the workflow's own strategy table
    and this smoothing, and the path of its raw seed/search series (the denoise step's halves npz, so that
    split halves are denoised on their own) (both cached)."""
    import nibabel as nib

    from tmstarget.denoise.arrays import save_denoised_npz
    from tmstarget.denoise.run import denoise_runs
    from tmstarget.denoise.strategy import default_strategies
    from tmstarget.denoise.arrays import save_raw_runs
    from tmstarget.denoise.arrays import load_denoised

    path = bench / "work" / f"{name}_desc-{strategy}{int(fwhm)}mm_denoised.npz"
    halves = bench / "work" / f"{name}_desc-{strategy}{int(fwhm)}mm_halves.npz"
    if not (path.exists() and halves.exists()):
        crop = cropped_run(bench, name, bold)
        strat = {**default_strategies()[strategy], "smoothing_fwhm_mm": fwhm or None}
        seed, search = old.masks_for(nib.load(crop["mask_mni"]), {"seed": "sphere", "search": "ba46"})
        res = denoise_runs([{"bold": crop["bold_mni"], "mask": crop["mask_mni"], "confounds": crop["confounds"]}],
                              strat, min_retained_minutes=1.0, warn_retained_minutes=1.0, strategy_name=strategy,
                              halves_mask_3d=np.asarray(seed, bool) | np.asarray(search, bool))
        save_denoised_npz(res, path)
        save_raw_runs(res.halves, halves)
    return load_denoised(path), halves


_MASKS: dict = {}


def masks(den):
    """Seed (10 mm sgACC sphere) and search (HCPex area 46) masks on a run's grid, computed once per mask."""
    import nibabel as nib

    key = (den.mask.tobytes(), den.affine.tobytes())
    if key not in _MASKS:
        _MASKS[key] = old.masks_for(nib.Nifti1Image(den.mask.astype(np.uint8), den.affine),
                                    {"seed": "sphere", "search": "ba46"})
    return _MASKS[key]


def run_real(bench: Path, sets, runs: dict, log) -> dict:
    """{run: {label: {"split_half": adapter output, "target_mni_ras_mm"}}} for every prepared run."""
    out = {}
    for name, rec in runs.items():
        out[name] = {}
        for strategy, fwhm in sorted({(s["strategy"], s["fwhm"]) for s in sets}):
            t0 = time.time()
            den, halves = denoised(bench, name, rec["bold"], strategy, fwhm)
            seed, search = masks(den)
            retained_minutes = len(den.data_tv) * den.t_r / 60       # after censoring, as the halves see it
            for s in (x for x in sets if (x["strategy"], x["fwhm"]) == (strategy, fwhm)):
                out[name][proto.setting_label(s)] = {"retained_minutes": retained_minutes,
                    "split_half": proto.split_half_distance_mm(den, seed, search, s, halves_npz=halves),
                    "target_mni_ras_mm": proto.full_target_mni_ras_mm(den, seed, search, s).tolist()}
            log(f"  {name} {strategy} {fwhm:g} mm ({time.time() - t0:.0f} s)")
    return out


# ----------------------------------------------------------------------------- synthetic runs
def run_synthetic(sets, snrs, minutes, replicates, log) -> list[dict]:
    """One row per synthetic run: its SNR, length, replicate and per-label recovery and split-half figures.
    The strategies are not told apart (no confounds): only the GSR settings are run and an aCompCor setting
    gets the figures of its GSR twin."""
    mask_img = synth_grid()
    region = {"seed": "sphere", "search": "ba46"}
    seed, search = old.masks_for(mask_img, region)
    planted = old.nearest_search_voxel(mask_img, region)
    gsr = [s for s in sets if s["strategy"] == "fox"]
    rows = {}
    for snr in snrs:
        for r in range(replicates):
            t0 = time.time()
            full = old.synth_run(mask_img, np.random.default_rng(7000 + 101 * r + int(100 * snr)), max(minutes), snr)
            for fwhm in sorted({s["fwhm"] for s in gsr}):
                smooth = old.smoothed(full, fwhm)          # spatial smoothing commutes with the cut in time
                for m in minutes:
                    row = rows.setdefault((snr, m, r), {"snr": snr, "minutes": m, "replicate": r, "settings": {}})
                    den = old.truncated(smooth, m)
                    for s in (x for x in gsr if x["fwhm"] == fwhm):
                        target = proto.full_target_mni_ras_mm(den, seed, search, s)
                        res = {"recovery_mm": float(np.linalg.norm(target - planted)),
                               "split_half": proto.split_half_distance_mm(den, seed, search, s)}
                        for twin in (x for x in sets if {**x, "strategy": "fox"} == s):
                            row["settings"][proto.setting_label(twin)] = res
                del smooth
            del full
            log(f"  synthetic SNR {snr:g}, replicate {r} ({time.time() - t0:.0f} s)")
    return [rows[k] for k in sorted(rows)]


def minutes_curve(snr: float, minutes, replicates: int, log) -> dict:
    """Split-half distance of the default by data length: synthetic runs of ``max(minutes)`` cut to their first
    minutes (smoothing commutes with the cut)."""
    mask_img = synth_grid()
    seed, search = old.masks_for(mask_img, {"seed": "sphere", "search": "ba46"})
    per_length = {m: [] for m in minutes}
    for r in range(replicates):
        t0 = time.time()
        full = old.smoothed(old.synth_run(mask_img, np.random.default_rng(9000 + 31 * r + int(100 * snr)),
                                          max(minutes), snr), proto.DEFAULT["fwhm"])
        for m in minutes:
            per_length[m].append(proto.split_half_distance_mm(old.truncated(full, m), seed, search, proto.DEFAULT)["median_mm"])
        del full
        log(f"  minutes curve, replicate {r} ({time.time() - t0:.0f} s)")
    points = [{"minutes": m, "median_mm": float(np.nanmedian(v)), "max_mm": float(np.nanmax(v)), "n": len(v)}
              for m, v in per_length.items()]
    return {"snr": snr, "points": points}


# ----------------------------------------------------------------------------- the demo (item 7)
#: the default before issue 13 (GSR, 6 mm, cluster percentile 10), for the demo's noise-free comparison
PREVIOUS_DEFAULT = {"strategy": "fox", "fwhm": 6.0, "method": "cluster", "percentile": 10.0}


def noise_free_target(planted_mni_ras_mm, search_mask_path, s: dict = proto.DEFAULT) -> dict:
    """The default rule on the demo's planted pattern alone (no noise, no registration): the generator's
    weight (Gaussian, sigma ``TARGET_SIGMA_MM``, times grey matter relative to the target, at most 1) on the
    MNI 2 mm grid, smoothed as the default, r = minus the weight, in the workflow's own search region."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    from tmstarget.demo import bold as D
    from tmstarget.demo.phantom import TARGET_SIGMA_MM, build_mni_head_model
    from tmstarget.denoise.smooth import smooth_masked
    from tmstarget.target import rules as TR

    m = load_mni152_brain_mask(resolution=2)
    mask = m.get_fdata() > 0
    xyz = nib.affines.apply_affine(m.affine, np.argwhere(mask))
    planted = np.asarray(planted_mni_ras_mm, float)
    head = build_mni_head_model()
    gm_at_target = max(float(head.sample("gm", planted[None])[0]), 0.3)
    w = D.gaussian_weight(xyz, planted, TARGET_SIGMA_MM) * np.minimum(head.sample("gm", xyz) / gm_at_target, 1.0)
    data = w[None, :].astype(np.float32)
    smooth_masked(data, mask, (2.0, 2.0, 2.0), s["fwhm"] or None)
    vol = np.zeros(mask.shape, np.float32)
    vol[mask] = data[0]
    search = np.asarray(nib.load(search_mask_path).dataobj) > 0
    ijk = np.argwhere(search & mask)
    space = TR.SearchSpace(ijk, nib.affines.apply_affine(m.affine, ijk))
    sel = TR.select_cluster(-vol[tuple(ijk.T)], space, s["percentile"])
    return {"setting": proto.setting_label(s),"target_mni_ras_mm": space.xyz_mm[sel.index].tolist(),
            "error_mm": float(np.linalg.norm(space.xyz_mm[sel.index] - planted)),
            "centre_of_mass_mni_ras_mm": sel.point_mni_ras_mm.tolist(),
            "centre_of_mass_error_mm": float(np.linalg.norm(sel.point_mni_ras_mm - planted))}


def demo_done(bench: Path) -> bool:
    """Both demo subjects have their target files (the demo workflow finished)."""
    deriv = bench / "demo" / "out" / "tmstarget"
    return all(any((deriv / f"sub-{sub}").rglob("*_space-MNI152NLin2009aSym_desc-target_markers.json"))
               for sub in ("01", "02"))


def demo_recovery(bench: Path) -> dict:
    """Planted-target recovery of the demo workflow's own outputs (MNI and T1w), and the floor the 2 mm
    MNI grid puts under it: the distance from the planted point to the nearest search-region voxel centre."""
    import nibabel as nib

    from tmstarget.demo.truth import load_ground_truth

    root = bench / "demo"
    out = {}
    for sub in ("01", "02"):
        truth = load_ground_truth(root / "bids", sub)
        deriv = root / "out" / "tmstarget" / f"sub-{sub}"
        mni = json.loads(next(deriv.rglob("*_space-MNI152NLin2009aSym_desc-target_markers.json")).read_text())
        t1w = json.loads((deriv / "anat" / f"sub-{sub}_space-T1w_desc-target_markers.json").read_text())
        search = next((root / "out" / "tmstarget").rglob(f"sub-{sub}*desc-search_mask.nii.gz"), None)
        floor = to_nearest = float("nan")
        if search is not None:
            img = nib.load(search)
            xyz = nib.affines.apply_affine(img.affine, np.argwhere(np.asarray(img.dataobj) > 0))
            dist = np.linalg.norm(xyz - truth["target_mni_ras_mm"], axis=1)
            floor = float(dist.min())
            to_nearest = float(np.linalg.norm(xyz[np.argmin(dist)] - mni["target_mni_ras_mm"]))
        out[f"sub-{sub}"] = {
            "planted_mni_ras_mm": np.asarray(truth["target_mni_ras_mm"]).tolist(),
            "target_mni_ras_mm": mni["target_mni_ras_mm"],
            "error_mni_mm": float(np.linalg.norm(np.subtract(mni["target_mni_ras_mm"], truth["target_mni_ras_mm"]))),
            "error_t1w_mm": float(np.linalg.norm(np.subtract(t1w["target_t1w_ras_mm"], truth["target_t1w_ras_mm"]))),
            "grid_floor_mm": floor, "target_to_nearest_voxel_mm": to_nearest,
            "noise_free": noise_free_target(truth["target_mni_ras_mm"], search) if search is not None else {},
            "noise_free_previous_default": (noise_free_target(truth["target_mni_ras_mm"], search, PREVIOUS_DEFAULT)
                                            if search is not None else {})}
    return out


# ----------------------------------------------------------------------------- run and CLI
def git_commit() -> str:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return sha + (" (dirty)" if dirty else "")


def _clean(x):
    """JSON-safe, rounded to 2 decimals (the figures are distances on a 2 mm grid), NaN as null."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else round(float(x), 2)
    if isinstance(x, np.integer):
        return int(x)
    return x


def cached(bench: Path, name: str, key: dict, compute):
    """``compute()`` stored as ``<bench>/work/<name>.json`` with ``key`` (the design); recomputed when the key
    differs. ``make reliability-docs`` starts from an empty folder, so it always computes."""
    path = bench / "work" / f"{name}.json"
    key = json.loads(json.dumps(key))
    if path.exists():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["value"]
    value = _clean(compute())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "value": value}) + "\n")
    return value


def run(quick: bool, log) -> dict:
    bench = bench_dir()
    t0 = time.time()
    runs = prep.prepared_runs(bench)
    if not runs:
        raise SystemExit(f"no prepared run under {bench}; run: python benchmarks/reliability_bench.py prepare")
    accepted = {n: r for n, r in runs.items() if r["gate"]["status"] != "fail"}
    sets = proto.candidate_settings(quick)
    timing = {}
    real = run_real(bench, sets, accepted, log)
    timing["real_s"] = round(time.time() - t0)
    reps = 1 if quick else SYNTH_REPLICATES
    synth = cached(bench, "synthetic", {"labels": [proto.setting_label(s) for s in sets], "snrs": SYNTH_SNRS,
                                        "minutes": SYNTH_MINUTES, "replicates": reps, "max_splits": proto.MAX_SPLITS},
                   lambda: run_synthetic(sets, SYNTH_SNRS, SYNTH_MINUTES, reps, log))
    timing["synthetic_s"] = round(time.time() - t0) - timing["real_s"]
    folds = proto.cross_validate(sets, real, synth)
    creps = 1 if quick else CURVE_REPLICATES
    curve = cached(bench, "minutes_curve", {"snr": CURVE_SNR, "minutes": CURVE_MINUTES, "replicates": creps,
                                            "default": proto.setting_label(proto.DEFAULT), "max_splits": proto.MAX_SPLITS},
                   lambda: minutes_curve(CURVE_SNR, CURVE_MINUTES, creps, log))
    timing["minutes_curve_s"] = round(time.time() - t0) - timing["real_s"] - timing["synthetic_s"]
    result = {
        "commit": git_commit(), "command": "python benchmarks/reliability_bench.py run" + (" --quick" if quick else ""),
        "default": proto.setting_label(proto.DEFAULT), "settings": [proto.setting_label(s) for s in sets],
        "max_splits": proto.MAX_SPLITS, "block_length_s": proto.BLOCK_LENGTH_S,
        "synthetic_design": {"snrs": list(SYNTH_SNRS), "minutes": list(SYNTH_MINUTES),
                             "replicates": 1 if quick else SYNTH_REPLICATES, "t_r": old.SYNTH_T_R,
                             "planted_mni_ras_mm": old.PLANTED_MNI_RAS_MM.tolist()},
        "runs": {n: {k: r[k] for k in ("route", "minutes", "volumes", "t_r", "mean_fd_mm", "gate")} for n, r in runs.items()},
        "used_runs": sorted(accepted), "real": real, "synthetic": synth, "folds": folds, "minutes_curve": curve,
        "demo": demo_recovery(bench) if demo_done(bench) else {},
        "demo_goal_mm": DEMO_GOAL_MM, "demo_reason": DEMO_REASON}
    result = _clean(result)
    timing["total_s"] = round(time.time() - t0)
    (bench / "reliability.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (bench / "reliability_timing.json").write_text(json.dumps(timing) + "\n")
    log(f"wrote {bench / 'reliability.json'} ({timing})")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["prepare", "run", "docs"])
    ap.add_argument("--quick", action="store_true", help="run: fewer settings and one synthetic run per cell")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md", help="docs: the page written")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "prepare":
        prepare(log)
    elif args.command == "run":
        res = run(args.quick, log)
        for f in res["folds"]:
            log(f"{f['fold']}: chosen {f['chosen']} -> held out {f['chosen_test']} mm; default {f['default_test']} mm")
    else:
        import reliability_docs

        reliability_docs.write(json.loads((bench_dir() / "reliability.json").read_text()), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
