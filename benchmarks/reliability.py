"""Split-half reliability of the target rules and settings, on real and synthetic runs (issue 13).

    python benchmarks/reliability.py prepare [--demo]   # preprocess the real runs (and the demo) once
    python benchmarks/reliability.py run [--data real,demo,synthetic,minutes] [--quick] [--out table.md]

``prepare`` runs the built-in preprocessing (registration ``fast``) on the public real scans
(RAPIDTIDETEST, HAPPYTEST; ``scripts/fetch_real_data.sh``) and caches the fMRIPrep-layout outputs
under ``~/.cache/tmstarget/bench/`` (``TMSTARGET_BENCH`` to move it). ``run`` denoises the cached
outputs with each strategy, builds the seed and search masks, and for every rule and setting
computes the split-half distance (median over repeated random disjoint block halves, and first vs
second half) on the real runs and on synthetic runs of controlled SNR and length, plus planted-target
recovery on synthetic runs with a planted anticorrelated patch and on the demo dataset (its
preprocessed outputs from the whole workflow, cached by ``prepare --demo``). It prints one markdown
table of settings and one of the split-half distance by data length.
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

REPO = Path(__file__).resolve().parents[1]
SPACE = "MNI152NLin2009aSym"
REAL_RUNS = {  # name: (file stem in the real-data folder, metadata)
    "RAPIDTIDETEST": {"RepetitionTime": 1.5},
    "HAPPYTEST": None,  # metadata from its own sidecar (TR 1.16 s, multiband slice timing)
}


def bench_dir() -> Path:
    return Path(os.environ.get("TMSTARGET_BENCH", Path.home() / ".cache" / "tmstarget" / "bench"))


def realdata_dir() -> Path:
    dest = Path(os.environ.get("TMSTARGET_REALDATA", Path.home() / ".cache" / "tmstarget" / "realdata"))
    if not (dest / ".complete").exists():
        subprocess.run([str(REPO / "scripts" / "fetch_real_data.sh"), str(dest)], check=True)
    return dest


def prepared_paths(name: str) -> tuple[dict, dict]:
    """fMRIPrep-layout anat and BOLD output paths of one cached real run."""
    from tmstarget.bids.inputs import preproc_anat_paths, preproc_bold_paths

    root = bench_dir() / "preproc"
    return (preproc_anat_paths(root / "sub-01" / "anat", "sub-01"),
            preproc_bold_paths(root / "sub-01" / "func", f"sub-01_task-rest_acq-{name}"))


def prepare(names=tuple(REAL_RUNS)) -> None:
    """Preprocess the real T1w and runs once; skip what is cached (a ``.done`` marker per output)."""
    from tmstarget.preproc import anat as pa
    from tmstarget.preproc import bold as pb
    from tmstarget.io.files import read_json

    src = realdata_dir()
    params = {"registration": "fast"}
    anat, _ = prepared_paths(names[0])
    done = bench_dir() / "preproc" / "anat.done"
    if not done.exists():
        Path(anat["preproc_t1w"]).parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        pa.preprocess_anat(src / "sub-01_T1w.nii.gz", anat, params)
        done.write_text(f"{time.time() - t0:.0f} s\n")
    for name in names:
        _, bold = prepared_paths(name)
        done = bench_dir() / "preproc" / f"{name}.done"
        if done.exists():
            continue
        Path(bold["bold_mni"]).parent.mkdir(parents=True, exist_ok=True)
        meta = REAL_RUNS[name]
        extra = {}
        if meta is None:
            sidecar = read_json(src / f"sub-{name}.json")
            meta = {k: sidecar[k] for k in ("RepetitionTime", "SliceTiming", "SliceEncodingDirection")}
            extra = {"slice_timing": True}
        t0 = time.time()
        qc = pb.preprocess_bold(src / f"sub-{name}.nii.gz", meta, anat, bold, {**params, **extra})
        done.write_text(json.dumps({"seconds": time.time() - t0, "qc": qc}, default=str) + "\n")
        print(f"{name}: preprocessed in {time.time() - t0:.0f} s", flush=True)


# ----------------------------------------------------------------------------- settings
#: today's default (before issue 13): GSR strategy, 6 mm smoothing, 10 mm sgACC sphere, HCPex area 46,
#: cluster rule at the 10th percentile
BASE = {"strategy": "fox", "fwhm": 6.0, "seed": "sphere", "search": "ba46", "method": "cluster", "percentile": 10.0}


def settings(quick: bool = False) -> list[dict]:
    """The settings compared: one factor at a time around :data:`BASE`, plus a smoothing x
    percentile grid of the cluster rule (the factors that matter most in the first pass)."""
    out = [dict(BASE)]

    def add(**kw):
        s = {**BASE, **kw}
        if s not in out:
            out.append(s)

    for m in ("peak", "seedmap", "hierarchical"):
        add(method=m)
    add(method="hierarchical", fwhm=0.0)
    for pct in (5.0, 20.0):
        add(percentile=pct)
    for fwhm in (0.0, 4.0, 8.0, 12.0):
        add(fwhm=fwhm)
    add(strategy="acompcor")
    add(search="dlpfc_spheres")
    add(seed="area25")
    if not quick:
        for fwhm in (4.0, 8.0, 12.0):
            for pct in (5.0, 20.0):
                add(fwhm=fwhm, percentile=pct)
        add(fwhm=12.0, percentile=20.0, seed="area25")
        add(fwhm=8.0, percentile=20.0, seed="area25")
        add(method="seedmap", fwhm=12.0, percentile=20.0)
        add(method="peak", fwhm=12.0)
    return out


def label(s: dict) -> str:
    diff = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if BASE[k] != v]
    return "default (" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in BASE.items()) + ")" \
        if not diff else ", ".join(diff)


def target_params(s: dict, max_splits: int = 500) -> dict:
    from tmstarget.target import params as TP

    cfg = {"method": s["method"], "split_half_max_splits": max_splits, "cluster": {"percentile": s["percentile"]}}
    return TP.resolve_target_cfg(cfg)


# ----------------------------------------------------------------------------- one evaluation
def evaluate(den, seed, search, s: dict, weights=None, planted=None, max_splits: int = 500) -> dict:
    """Target, first-vs-second-half distance and median split-half distance (every block split up to
    ``max_splits``) of one setting, halves cut from the jointly denoised series."""
    from tmstarget.target import reliability as rl
    from tmstarget.target import rules as TR, selection as T, uncertainty as TU
    from tmstarget.errors import QCFailure

    params = target_params(s, max_splits)
    space = T.space_of(search, den)
    prob = T.build_problem(den, seed, search, s["method"], weights)
    out = {"target": None, "first_vs_second_mm": np.nan, "split_half_median_mm": np.nan, "recovery_mm": np.nan}
    try:
        sel = TR.select(s["method"], params, prob.ts_search, prob.ref_t, space, prob.ts_seed)
        out["target"] = space.xyz_mm[sel.index]
    except QCFailure:
        return out
    a, b = TU.split_half_targets(s["method"], params, prob.ts_search, prob.ref_t, space, prob.ts_seed)
    out["first_vs_second_mm"] = float(np.linalg.norm(a - b))

    def joint(rows):
        sel = TR.safe_select(s["method"], params, prob.ts_search[rows], prob.ref_t[rows], space,
                             None if prob.ts_seed is None else prob.ts_seed[rows])
        return space.xyz_mm[sel.index] if sel is not None else np.full(3, np.nan)

    pairs = rl.split_half_study(joint, None, den.run_lengths, den.t_r, params["block_length_s"], max_splits,
                                params["random_seed"], params["confident_split_half_median_mm"])["pairs"]
    d = np.linalg.norm(pairs[:, 0] - pairs[:, 1], axis=1)
    out["split_half_median_mm"] = float(np.nanmedian(d)) if np.isfinite(d).any() else np.nan
    cands = TU.target_candidates(np.concatenate([[a, b], pairs.reshape(-1, 3)]), space)
    out["top_candidate_support"] = cands[0]["support_fraction"] if cands else np.nan
    if planted is not None:
        out["recovery_mm"] = float(np.linalg.norm(out["target"] - planted))
    return out


def smoothed(den, fwhm: float):
    """A copy of unsmoothed denoised data smoothed (FWHM mm, inside the mask) and z-scored, as the
    denoise step does after the temporal cleaning."""
    from tmstarget.denoise.smooth import smooth_masked
    from tmstarget.denoise.temporal import zscore_columns
    from tmstarget.io.nifti import voxel_size_mm
    from tmstarget.denoise.arrays import Denoised

    data = den.data_tv.copy()
    if fwhm:
        smooth_masked(data, den.mask, voxel_size_mm(den.affine), fwhm)
        zscore_columns(data)
    return Denoised(data, den.mask, den.affine, den.t_r, den.run_lengths, den.name)


def masks_for(mask_img, s: dict) -> tuple[np.ndarray, np.ndarray]:
    from tmstarget.target import regions as R

    seed, _ = R.seed_mask(mask_img, {"type": s["seed"]})
    search, _ = R.search_mask(mask_img, {"region": s["search"]})
    return seed, search


def r_map(den, seed) -> np.ndarray:
    """Seed r of every voxel of the mask (V,)."""
    from tmstarget.target import rules as TR, selection as T

    return TR.pearson_r(den.data_tv, den.data_tv[:, T.columns_of(seed, den)].mean(axis=1))


def loo_weights(other_r_v: np.ndarray, other_mask: np.ndarray, den, search) -> np.ndarray:
    """Seedmap weights from another run's r map (leave-one-out group map of one subject): Fisher z,
    zero in the search region and where the other run has no data (same MNI 2 mm grid)."""
    vol = np.zeros(other_mask.shape)
    vol[other_mask] = np.arctanh(np.clip(other_r_v, -0.999, 0.999))
    w = vol[den.mask]
    w[search[den.mask]] = 0.0
    return w


# ----------------------------------------------------------------------------- real runs
def denoised_cached(name: str, bold: dict, strategy: str, fwhm: float):
    """Denoised data of one preprocessed run (fMRIPrep layout ``bold``: ``bold_mni``, ``mask_mni``,
    ``confounds``), computed once per strategy and smoothing and cached under the bench folder."""
    from tmstarget.denoise.arrays import save_denoised_npz
    from tmstarget.denoise.run import denoise_runs
    from tmstarget.denoise.strategy import default_strategies
    from tmstarget.denoise.arrays import load_denoised

    path = bench_dir() / "work" / f"{name}_desc-{strategy}{int(fwhm)}mm_denoised.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        strat = {**default_strategies()[strategy], "smoothing_fwhm_mm": fwhm or None}
        res = denoise_runs([{"bold": bold["bold_mni"], "mask": bold["mask_mni"], "confounds": bold["confounds"]}],
                              strat, min_retained_minutes=1.0, warn_retained_minutes=1.0, strategy_name=strategy)
        save_denoised_npz(res, path)
    return load_denoised(path)


def denoised_real(name: str, strategy: str, fwhm: float):
    """Denoised data of a cached real run."""
    if not (bench_dir() / "preproc" / f"{name}.done").exists():
        raise SystemExit(f"{name} is not preprocessed yet; run: python benchmarks/reliability.py prepare")
    return denoised_cached(name, prepared_paths(name)[1], strategy, fwhm)


# ----------------------------------------------------------------------------- the demo dataset
def demo_units() -> dict:
    """{name: (fMRIPrep-layout BOLD paths, planted target MNI RAS mm)} of the cached demo run
    (``prepare --demo``: the demo dataset through the whole workflow with config/demo.yaml)."""
    from tmstarget.bids.inputs import preproc_bold_paths
    from tmstarget.demo.truth import load_ground_truth

    root = bench_dir() / "demo"
    out = {}
    for func in sorted((root / "out" / "preproc").glob("sub-*/func")):
        sub = func.parent.name
        bold = preproc_bold_paths(func, f"{sub}_task-rest")
        if Path(bold["bold_mni"]).exists():
            truth = load_ground_truth(root / "bids", sub.removeprefix("sub-"))
            out[f"demo-{sub}"] = (bold, np.asarray(truth["target_mni_ras_mm"], float))
    return out


def prepare_demo() -> None:
    """The demo dataset (2 subjects, seed 0) through the whole workflow once (config/demo.yaml)."""
    from tmstarget.demo.core import make_demo_dataset

    root = bench_dir() / "demo"
    if not (root / "bids").exists():
        make_demo_dataset(root / "bids", n_subjects=2, seed=0)
    if not demo_units():
        subprocess.run([sys.executable, "-m", "tmstarget.run.cli", str(root / "bids"), str(root / "out"), "participant",
                        "--config", str(REPO_ROOT_CFG), "--cores", "1"], check=True)


REPO_ROOT_CFG = REPO / "config" / "demo.yaml"


def run_demo(sets, log=print) -> dict:
    """{unit: {setting label: evaluate(...) with recovery_mm against the planted target}}."""
    import nibabel as nib

    out = {}
    units = demo_units()
    if not units:
        raise SystemExit("the demo run is not cached; run: python benchmarks/reliability.py prepare --demo")
    for name, (bold, planted) in units.items():
        out[name] = {}
        for s in sets:
            den = denoised_cached(name, bold, s["strategy"], s["fwhm"])
            mask_img = nib.Nifti1Image(den.mask.astype(np.uint8), den.affine)
            try:
                seed, search = masks_for(mask_img, s)
            except Exception as exc:  # noqa: BLE001 - a setting may not fit the demo field of view
                log(f"  {name} {label(s)}: {exc}")
                continue
            weights = None
            if s["method"] == "seedmap":
                oname, (obold, _) = next((n, u) for n, u in units.items() if n != name)
                other = denoised_cached(oname, obold, s["strategy"], s["fwhm"])
                oseed, _ = masks_for(nib.Nifti1Image(other.mask.astype(np.uint8), other.affine), s)
                weights = loo_weights(r_map(other, oseed), other.mask, den, search)
            res = evaluate(den, seed, search, s, weights, planted=planted)
            res["minutes"] = len(den.data_tv) * den.t_r / 60
            out[name][label(s)] = res
            log(f"  {name} {label(s)}: recovery {res['recovery_mm']:.1f} mm, halves median "
                f"{res['split_half_median_mm']:.1f} mm")
    return out


def run_real(names, sets, log=print) -> dict:
    """{run name: {setting label: evaluate(...)}} on the cached real runs (seedmap: the other run's
    map as a leave-one-out group map)."""
    import nibabel as nib

    out = {}
    dens = {}
    for name in names:
        for s in sets:
            dens.setdefault((name, s["strategy"], s["fwhm"]), None)
    for key in list(dens):
        t0 = time.time()
        dens[key] = denoised_real(*key)
        log(f"  denoised {key} ({time.time() - t0:.0f} s)")
    for name in names:
        out[name] = {}
        for s in sets:
            t0 = time.time()
            den = dens[(name, s["strategy"], s["fwhm"])]
            mask_img = nib.Nifti1Image(den.mask.astype(np.uint8), den.affine)
            seed, search = masks_for(mask_img, s)
            weights = None
            if s["method"] == "seedmap":
                others = [n for n in names if n != name] or [n for n in REAL_RUNS if n != name]
                if not (bench_dir() / "preproc" / f"{others[0]}.done").exists():
                    log(f"  {name} {label(s)}: skipped, the leave-one-out map needs {others[0]} preprocessed")
                    continue
                other = denoised_real(others[0], s["strategy"], s["fwhm"])
                oseed, _ = masks_for(nib.Nifti1Image(other.mask.astype(np.uint8), other.affine), s)
                weights = loo_weights(r_map(other, oseed), other.mask, den, search)
            res = evaluate(den, seed, search, s, weights)
            res["minutes"] = len(den.data_tv) * den.t_r / 60
            out[name][label(s)] = res
            log(f"  {name} {label(s)}: first/second {res['first_vs_second_mm']:.1f} mm, "
                f"halves median {res['split_half_median_mm']:.1f} mm ({time.time() - t0:.1f} s)")
    return out


# ----------------------------------------------------------------------------- synthetic runs
SYNTH_T_R = 2.0
PLANTED_MNI_RAS_MM = np.array([-44.0, 40.0, 29.0])   # the BA46 site (Cash et al.), inside both search regions
NETWORK_MNI_RAS_MM = np.array([0.0, 50.0, 0.0])      # a positive sgACC-network node (mPFC)


def synth_grid():
    """MNI 2 mm brain mask cropped to x -70..30, y -10..70, z -30..60 (seed, both search regions)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    m = load_mni152_brain_mask(resolution=2)
    data = (m.get_fdata() > 0).astype(np.uint8)[14:65, 62:103, 21:67]
    affine = m.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(m.affine, [14, 62, 21])
    return nib.Nifti1Image(data, affine)


def synth_run(mask_img, rng, minutes: float, snr: float, planted=PLANTED_MNI_RAS_MM, seed_gain: float = 0.5,
              name: str = "synthetic"):
    """Unsmoothed "denoised" data of controlled SNR: band-limited (0.01-0.1 Hz), spatially correlated
    noise (Gaussian sigma 2 mm) plus the sgACC signal in the seed (both seed definitions, gain
    ``seed_gain``), a positive network node and an anticorrelated blob (sigma 5 mm) of amplitude
    ``snr`` (in noise SD) at ``planted``. Returns a targeting.Denoised."""
    from scipy import ndimage

    from tmstarget.target import regions as R
    from tmstarget.demo.bold import band_limited_signal
    from tmstarget.denoise.arrays import Denoised

    mask = np.asanyarray(mask_img.dataobj) > 0
    n = int(round(minutes * 60 / SYNTH_T_R))
    xyz = R.voxel_centres_ras_mm(mask.shape, mask_img.affine)[mask]
    latent = band_limited_signal(rng, n, SYNTH_T_R)
    noise = np.empty((n, int(mask.sum())), np.float32)
    for t0 in range(0, n, 100):
        white = rng.standard_normal((min(100, n - t0), *mask.shape), dtype=np.float32)
        noise[t0: t0 + len(white)] = ndimage.gaussian_filter(white, sigma=(0, 1, 1, 1))[:, mask]
    spec = np.fft.rfft(noise, axis=0)
    f = np.fft.rfftfreq(n, d=SYNTH_T_R)
    spec[(f < 0.01) | (f > 0.1)] = 0
    noise = np.fft.irfft(spec, n=n, axis=0).astype(np.float32)
    del spec
    noise /= noise.std(axis=0)
    seeds = R.seed_mask(mask_img, {"type": "sphere"})[0] | R.seed_mask(mask_img, {"type": "area25"})[0]
    gain = seed_gain * seeds[mask].astype(float)
    gain += 0.5 * np.exp(-np.sum((xyz - NETWORK_MNI_RAS_MM) ** 2, axis=1) / (2 * 6.0 ** 2))
    gain -= snr * np.exp(-np.sum((xyz - planted) ** 2, axis=1) / (2 * 5.0 ** 2))
    noise += (latent[:, None] * gain[None, :]).astype(np.float32)
    data = noise
    data -= data.mean(axis=0)
    data /= data.std(axis=0)
    return Denoised(data, mask, mask_img.affine, SYNTH_T_R, np.array([n]), name)


def truncated(den, minutes: float):
    """The first ``minutes`` of a synthetic run, z-scored again."""
    from tmstarget.denoise.arrays import Denoised

    n = int(round(minutes * 60 / den.t_r))
    data = den.data_tv[:n].copy()
    data -= data.mean(axis=0)
    data /= data.std(axis=0)
    return Denoised(data, den.mask, den.affine, den.t_r, np.array([n]), den.name)


def run_synthetic(sets, snrs=(0.3, 0.5), minutes=10.0, replicates=3, log=print) -> dict:
    """{(snr, setting label): [evaluate(...) per replicate]}; seedmap uses the next replicate's map."""

    mask_img = synth_grid()
    out = {}
    for snr in snrs:
        reps = [synth_run(mask_img, np.random.default_rng(1000 + 17 * r + int(100 * snr)), minutes, snr,
                          name=f"snr{snr}_rep{r}") for r in range(replicates)]
        cache = {}
        for s in sets:
            if s["strategy"] != "fox":
                continue   # no confounds in the synthetic data
            t0 = time.time()
            res = []
            for r, raw in enumerate(reps):
                key = (r, s["fwhm"])
                if key not in cache:
                    cache[key] = smoothed(raw, s["fwhm"])
                den = cache[key]
                seed, search = masks_for(mask_img, s)
                weights = None
                if s["method"] == "seedmap":
                    other = cache.setdefault(((r + 1) % replicates, s["fwhm"]),
                                             smoothed(reps[(r + 1) % replicates], s["fwhm"]))
                    weights = loo_weights(r_map(other, seed), other.mask, den, search)
                res.append(evaluate(den, seed, search, s, weights, planted=nearest_search_voxel(mask_img, s)))
            out[(snr, label(s))] = res
            log(f"  SNR {snr} {label(s)}: halves median {np.median([x['split_half_median_mm'] for x in res]):.1f} mm, "
                f"recovery {np.median([x['recovery_mm'] for x in res]):.1f} mm ({time.time() - t0:.1f} s)")
    return out


def nearest_search_voxel(mask_img, s: dict) -> np.ndarray:
    """The planted point as the rules can find it: the nearest voxel of the search region."""
    import nibabel as nib

    _, search = masks_for(mask_img, s)
    xyz = nib.affines.apply_affine(mask_img.affine, np.argwhere(search))
    return xyz[np.argmin(np.linalg.norm(xyz - PLANTED_MNI_RAS_MM, axis=1))]


def minutes_curve(sets, snrs=(0.2, 0.3, 0.5), minutes=(4, 6, 8, 10, 15, 20, 30), replicates=3, log=print) -> dict:
    """{(snr, setting label, minutes): [median random split-half mm per replicate]}."""
    mask_img = synth_grid()
    out = {}
    for snr in snrs:
        for r in range(replicates):
            t0 = time.time()
            full = synth_run(mask_img, np.random.default_rng(5000 + 31 * r + int(100 * snr)), max(minutes), snr)
            for s in sets:
                seed, search = masks_for(mask_img, s)
                full_s = smoothed(full, s["fwhm"])     # spatial smoothing commutes with truncation
                for m in minutes:
                    res = evaluate(truncated(full_s, m), seed, search, s)
                    out.setdefault((snr, label(s), m), []).append(res["split_half_median_mm"])
                del full_s
            log(f"  minutes curve SNR {snr} replicate {r} ({time.time() - t0:.0f} s)")
    return out


# ----------------------------------------------------------------------------- table and CLI
def _f(x, nd=1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def settings_table(sets, real: dict, synth: dict, snrs, demo: dict | None = None) -> str:
    names = list(real)
    demo = demo or {}
    head = ["setting"]
    for n in names:
        mins = next(iter(real[n].values()))["minutes"]
        head += [f"{n} ({mins:.1f} min) first/second half mm", f"{n} random halves median mm"]
    if demo:
        head += [f"demo planted recovery mm ({' / '.join(demo)})", "demo random halves median mm"]
    if synth:
        for snr in snrs:
            head += [f"synthetic SNR {snr} halves median mm", f"planted recovery mm, SNR {snr} (median / max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in sets:
        lab = label(s)
        row = [lab]
        for n in names:
            r = real[n].get(lab)
            row += [_f(r["first_vs_second_mm"]), _f(r["split_half_median_mm"])] if r else ["-", "-"]
        if demo:
            rec = [demo[u][lab]["recovery_mm"] for u in demo if lab in demo[u]]
            shm = [demo[u][lab]["split_half_median_mm"] for u in demo if lab in demo[u]]
            row += [" / ".join(_f(x) for x in rec) if rec else "-", " / ".join(_f(x) for x in shm) if shm else "-"]
        for snr in (snrs if synth else ()):
            res = synth.get((snr, lab))
            row += [_f(np.median([x["split_half_median_mm"] for x in res])) if res else "-",
                    (f"{_f(np.median([x['recovery_mm'] for x in res]))} / {_f(np.max([x['recovery_mm'] for x in res]))}"
                     if res else "-")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def minutes_table(curve: dict, snrs, minutes, curve_sets) -> str:
    head = ["minutes"] + [f"SNR {snr}, {label(s)}" for s in curve_sets for snr in snrs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in minutes:
        row = [f"{m:g}"] + [f"{_f(np.median(curve[(snr, label(s), m)]))} ({_f(np.max(curve[(snr, label(s), m)]))})"
                            for s in curve_sets for snr in snrs]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


#: the default chosen from this benchmark (docs/reliability.md); the minutes curve runs it and BASE
CHOSEN = {**BASE, "fwhm": 4.0, "percentile": 20.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["prepare", "run"])
    ap.add_argument("--data", default="real,demo,synthetic,minutes",
                    help="comma-separated subset of real, demo, synthetic, minutes (default: all)")
    ap.add_argument("--demo", action="store_true", help="prepare: also run the demo dataset through the workflow")
    ap.add_argument("--demo-all", action="store_true",
                    help="demo recovery for every setting (default: those at the old and new smoothing)")
    ap.add_argument("--runs", default=",".join(REAL_RUNS), help="real runs (default: all cached)")
    ap.add_argument("--quick", action="store_true", help="only the one-factor-at-a-time settings")
    ap.add_argument("--replicates", type=int, default=3, help="synthetic datasets per condition")
    ap.add_argument("--curve-replicates", type=int, default=5, help="synthetic datasets per point of the minutes curve")
    ap.add_argument("--curve-snrs", default="0.2,0.3", help="SNRs of the minutes curve")
    ap.add_argument("--curve-chosen-only", action="store_true",
                    help="minutes curve of the chosen default only (not also the old default)")
    ap.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = ap.parse_args(argv)
    names = [n for n in args.runs.split(",") if n]
    if args.command == "prepare":
        prepare(tuple(names))
        if args.demo:
            prepare_demo()
        return 0
    data = set(args.data.split(","))
    sets = settings(args.quick)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    real = run_real(names, sets, log) if "real" in data else {}
    snrs = (0.2, 0.5)
    synth = run_synthetic(sets, snrs, replicates=args.replicates, log=log) if "synthetic" in data else {}
    # the demo: the settings at the old and new default smoothing (each smoothing re-denoises both
    # subjects); --demo-all for every setting
    demo_sets = sets if args.demo_all else [x for x in sets if x["fwhm"] in (BASE["fwhm"], CHOSEN["fwhm"])
                                            and x["strategy"] == "fox"]
    demo = run_demo(demo_sets, log) if "demo" in data else {}
    text = settings_table(sets, real, synth, snrs, demo) if (real or synth or demo) else ""
    if "minutes" in data:
        msnrs = tuple(float(x) for x in args.curve_snrs.split(","))
        mins = (4, 6, 8, 10, 15, 20, 30)
        curve_sets = ([] if args.curve_chosen_only else [BASE]) + ([CHOSEN] if CHOSEN != BASE else [])
        curve = minutes_curve(curve_sets, msnrs, mins, args.curve_replicates, log)
        text += ("\n\nRandom split-half distance (mm) by data length, synthetic runs (TR 2 s): median over "
                 f"{args.curve_replicates} datasets (largest of them in brackets):\n\n")
        text += minutes_table(curve, msnrs, mins, curve_sets)
    text += f"\n\n(total {time.time() - t0:.0f} s)\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
