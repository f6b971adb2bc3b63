"""Split-half reliability: seed dependence and independent vs joint halves (issue 20, items 1-3).

    python benchmarks/split_half_halves.py [--units RAPIDTIDETEST,demo] [--out results.json]

Needs the preprocessed runs cached by ``python benchmarks/reliability.py prepare [--demo]``
(``TMSTARGET_BENCH`` moves the cache). For each unit it runs the workflow's own steps with the
default config: the masks, the denoise step (main strategy, writing the raw seed/search series) and
the target step, and prints

- the headline (independent halves) and the joint-halves figure with every block split (seed-free),
  for ``random_seed`` 0 and 1;
- the old figure, 20 drawn splits, over seeds 0-9 (its spread is what item 1 removes);
- the denoised output with and without keeping the raw series (max abs diff), and the step times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reliability as bench  # noqa: E402  (benchmarks/reliability.py: cached runs)


def units(names: list[str]) -> dict:
    """{name: fMRIPrep-layout BOLD paths} of the cached runs."""
    out = {}
    for name in names:
        if name == "demo":
            out.update({u: bold for u, (bold, _) in bench.demo_units().items()})
        else:
            out[name] = bench.prepared_paths(name)[1]
    return out


def measure(name: str, bold: dict, work: Path, log=print) -> dict:
    from tmstarget.denoise.arrays import load_denoised
    from tmstarget.denoise.run import denoise_runs, run_denoise
    from tmstarget.target import regions as R
    from tmstarget.target import selection as T
    from tmstarget.config.settings import load_config

    cfg = load_config()
    work.mkdir(parents=True, exist_ok=True)
    seed_p, search_p = work / f"{name}_seed.nii.gz", work / f"{name}_search.nii.gz"
    R.run_masks(bold["mask_mni"], cfg["seed"], cfg["search"], seed_p, search_p, work / f"{name}_masks.json")
    main = cfg["denoising"]["strategy"]
    strategy = cfg["denoising"]["strategies"][main]
    runs = [{"bold": bold["bold_mni"], "mask": bold["mask_mni"], "confounds": bold["confounds"]}]
    npz, halves = work / f"{name}_desc-{main}_denoised.npz", work / f"{name}_desc-{main}_halves.npz"
    t0 = time.perf_counter()
    res = run_denoise(runs, strategy, npz, work / f"{name}_qc.json", 1.0, 1.0, main,
                         out_halves_npz=halves, halves_mask_paths=[seed_p, search_p])
    t_denoise_halves = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = denoise_runs(runs, strategy, 1.0, 1.0, main)
    t_denoise_plain = time.perf_counter() - t0
    out = {"denoised_max_abs_diff": float(np.max(np.abs(plain.data_tv - res.data_tv))),
           "denoise_s_with_halves": round(t_denoise_halves, 1), "denoise_s_without": round(t_denoise_plain, 1),
           "halves_columns": int(len(res.halves.columns)), "voxels": int(res.data_tv.shape[1])}
    del plain
    # seed z map of the main strategy (what the seedmap step writes)
    den = load_denoised(npz)
    seed = np.asanyarray(nib.load(seed_p).dataobj) > 0
    r = T.pearson_r(den.data_tv, den.data_tv[:, T.columns_of(seed, den)].mean(axis=1))
    vol = np.zeros(den.mask.shape, np.float32)
    vol[den.mask] = np.arctanh(np.clip(r, -0.999, 0.999))
    z_p = work / f"{name}_space-MNI152NLin2009aSym_desc-sgacc_stat-z_boldmap.nii.gz"
    nib.save(nib.Nifti1Image(vol, den.affine), z_p)
    tcfg = dict(cfg["targeting"])
    for seed_value in (0, 1):
        t0 = time.perf_counter()
        res_t = T.run_target(npz, seed_p, search_p, z_p, {**tcfg, "random_seed": seed_value},
                             work / f"{name}_seed{seed_value}_target.json", halves_npz=halves)
        rel = res_t["uncertainty"]["reliability"]
        out[f"seed{seed_value}"] = {
            "target_step_s": round(time.perf_counter() - t0, 1), "target_mni_ras_mm": res_t["target_mni_ras_mm"],
            **{k: rel[k] for k in ("median_distance_mm", "p10_distance_mm", "p90_distance_mm",
                                   "first_vs_second_half_mm", "n_splits", "splits_enumerated", "n_blocks",
                                   "minutes", "reproducible")},
            "joint": rel["joint_halves"], "plain_words": rel["plain_words"],
            "candidates": [(c["target_mni_ras_mm"], round(c["support_fraction"], 2))
                           for c in res_t["uncertainty"]["candidates"][:3]]}
        log(f"{name} seed {seed_value}: independent median {rel['median_distance_mm']:.2f} mm "
            f"(P10-P90 {rel['p10_distance_mm']:.1f}-{rel['p90_distance_mm']:.1f}, first/second "
            f"{rel['first_vs_second_half_mm']}), joint {rel['joint_halves']['median_distance_mm']:.2f} mm "
            f"(first/second {rel['joint_halves']['first_vs_second_half_mm']}), {rel['n_splits']} splits "
            f"enumerated={rel['splits_enumerated']}, target step {out[f'seed{seed_value}']['target_step_s']} s")
    # the old figure: 20 drawn splits, seeds 0-9
    params = T.resolve_target_cfg(tcfg)
    search = np.asanyarray(nib.load(search_p).dataobj) > 0
    space = T._space_of(search, den)
    prob = T.build_problem(den, seed, search, params["method"])
    drawn = {"independent": [], "joint": []}
    for s in range(10):
        study = T._split_half_study(params["method"], {**params, "split_half_max_splits": 20, "random_seed": s},
                                    prob, space, den, seed, search, halves)
        rel = study["reliability"]
        if rel["splits_enumerated"]:
            break
        drawn["independent"].append(rel["independent_halves"]["median_distance_mm"])
        drawn["joint"].append(rel["joint_halves"]["median_distance_mm"])
    out["drawn20_medians_mm"] = drawn
    for k, v in drawn.items():
        if v:
            log(f"{name} 20 drawn splits, seeds 0-9, {k}: medians {np.round(v, 1).tolist()} "
                f"(P10-P90 {np.percentile(v, 10):.1f}-{np.percentile(v, 90):.1f} mm)")
    log(f"{name}: denoise {out['denoise_s_with_halves']} s with the raw series, {out['denoise_s_without']} s "
        f"without; denoised max abs diff {out['denoised_max_abs_diff']:.2e}; {out['halves_columns']} of "
        f"{out['voxels']} voxels kept raw")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", default="RAPIDTIDETEST,demo")
    ap.add_argument("--work", type=Path, default=bench.bench_dir() / "work" / "split_half_halves")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = {name: measure(name, bold, args.work) for name, bold in units(args.units.split(",")).items()}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
