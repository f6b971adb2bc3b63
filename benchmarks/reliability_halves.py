"""The headline split-half figure measured: seed-free, independent vs joint halves (issue 20, items 1-3).

    python benchmarks/reliability_halves.py run     # writes <bench>/halves.json
    python benchmarks/reliability_halves.py docs    # writes docs/reliability_halves.md from that JSON
    make reliability-docs                           # prepare (reliability_bench.py), then both, from a clean cache

``<bench>`` is ``$TMSTARGET_BENCH`` (default ``~/.cache/tmstarget/bench-protocol``), prepared by
``python benchmarks/reliability_bench.py prepare``: the real runs through routes the registration gate can
judge (``reliability_prepare.py``; a run the gate FAILs is left out) and the demo dataset through the whole
workflow. For every used real run and each demo subject this runs the workflow's own steps with the default
config on the fMRIPrep-layout files (the masks step, the denoise step keeping the raw seed and search series,
the seed map and the target step) and records

- the headline (halves denoised on their own) and the joint figure (halves cut from the jointly denoised
  series), with ``random_seed`` 0 and 1 (every split is used up to ``split_half_max_splits``, so no seed
  enters);
- the figure the code used before issue 20 (20 drawn splits) over seeds 0-9, whose spread item 1 removes;
- the denoised output with and without keeping the raw series (max abs difference);

and, on synthetic runs longer than 12 blocks (where splits are drawn, not enumerated), the median over
``split_half_max_splits`` drawn splits for four seeds. Every number of docs/reliability_halves.md is formatted
from this JSON (``render`` is pure), so the page is regenerated, never typed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests")]

import reliability as old  # noqa: E402  (synthetic runs, masks)
import reliability_prepare as prep  # noqa: E402
from reliability_bench import _clean, bench_dir, git_commit  # noqa: E402
from reliability_docs import fmt, write_page  # noqa: E402  (numbers as reliability.md prints them)

#: seeds of the figure before issue 20 (20 drawn splits)
OLD_SEEDS = tuple(range(10))
OLD_SPLITS = 20
#: synthetic runs where the splits are drawn: 13 minutes at TR 2 s (13 blocks of 60 s, 1716 splits)
SYNTH_MINUTES, SYNTH_SNR, SYNTH_SEEDS = 13.0, 0.5, (0, 1, 2, 3)
OUT_DOC = REPO / "docs" / "reliability_halves.md"


def units(bench: Path) -> dict:
    """{name: fMRIPrep-layout BOLD paths}: the gate-accepted real runs and the demo subjects."""
    from tmstarget.bids.inputs import preproc_bold_paths

    out = {}
    for name, rec in prep.prepared_runs(bench).items():
        if rec["gate"]["status"] != "fail":
            out[name] = prep.run_paths(bench, name)[1]
    for func in sorted((bench / "demo" / "out" / "preproc").glob("sub-*/func")):
        sub = func.parent.name
        bold = preproc_bold_paths(func, f"{sub}_task-rest")
        if Path(bold["bold_mni"]).exists():
            out[f"demo {sub}"] = bold
    return out


def _figure(rel: dict) -> dict:
    keys = ("median_distance_mm", "p10_distance_mm", "p90_distance_mm", "first_vs_second_half_mm")
    return {k: rel.get(k) for k in keys}


def measure(name: str, bold: dict, work: Path, log) -> dict:
    """The workflow's own steps on one unit with the default config (see the module docstring)."""
    import nibabel as nib

    from tmstarget.config.settings import load_config
    from tmstarget.denoise import run as dn
    from tmstarget.denoise.arrays import load_denoised
    from tmstarget.target import regions as R
    from tmstarget.target import params as TP, rules as TR, selection as T, step as TS, uncertainty as TU

    cfg = load_config()
    tag = name.replace(" ", "_")
    work.mkdir(parents=True, exist_ok=True)
    seed_p, search_p = work / f"{tag}_seed.nii.gz", work / f"{tag}_search.nii.gz"
    R.run_masks(bold["mask_mni"], cfg["seed"], cfg["search"], seed_p, search_p, work / f"{tag}_masks.json")
    main = cfg["denoising"]["strategy"]
    strategy = cfg["denoising"]["strategies"][main]
    runs = [{"bold": bold["bold_mni"], "mask": bold["mask_mni"], "confounds": bold["confounds"]}]
    npz, halves = work / f"{tag}_desc-{main}_denoised.npz", work / f"{tag}_desc-{main}_halves.npz"
    t0 = time.perf_counter()
    res = dn.run_denoise(runs, strategy, npz, work / f"{tag}_qc.json", 1.0, 1.0, main,
                         out_halves_npz=halves, halves_mask_paths=[seed_p, search_p])
    t_halves = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = dn.denoise_runs(runs, strategy, 1.0, 1.0, main)
    t_plain = time.perf_counter() - t0
    out = {"denoised_max_abs_diff": float(np.max(np.abs(plain.data_tv - res.data_tv))),
           "raw_columns": int(len(res.halves.columns)), "voxels": int(res.data_tv.shape[1])}
    del plain
    den = load_denoised(npz)
    seed = np.asanyarray(nib.load(seed_p).dataobj) > 0
    r = TR.pearson_r(den.data_tv, den.data_tv[:, T.columns_of(seed, den)].mean(axis=1))
    vol = np.zeros(den.mask.shape, np.float32)
    vol[den.mask] = np.arctanh(np.clip(r, -0.999, 0.999))
    z_p = work / f"{tag}_space-MNI152NLin2009aSym_desc-sgacc_stat-fisherz_boldmap.nii.gz"
    nib.save(nib.Nifti1Image(vol, den.affine), z_p)
    tcfg = dict(cfg["targeting"])
    for seed_value in (0, 1):
        t0 = time.perf_counter()
        res_t = TS.run_target(npz, seed_p, search_p, z_p, {**tcfg, "random_seed": seed_value},
                             work / f"{tag}_seed{seed_value}_target.json", halves_npz=halves)
        rel = res_t["uncertainty"]["reliability"]
        log(f"{name}: target step (seed {seed_value}) {time.perf_counter() - t0:.1f} s")
        out[f"seed{seed_value}"] = {
            "independent": _figure(rel), "joint": _figure(rel["joint_halves"]),
            **{k: rel[k] for k in ("n_splits", "splits_enumerated", "n_blocks", "minutes", "reproducible",
                                   "plain_words")}}
    params = TP.resolve_target_cfg(tcfg)
    search = np.asanyarray(nib.load(search_p).dataobj) > 0
    space = T.space_of(search, den)
    prob = T.build_problem(den, seed, search, params["method"])
    drawn = {"independent": [], "joint": []}
    for s in OLD_SEEDS:
        study = TU.rule_split_half_study(params["method"], {**params, "split_half_max_splits": OLD_SPLITS, "random_seed": s},
                                    prob, space, den, seed, search, halves)
        rel = study["reliability"]
        if rel["splits_enumerated"]:       # 20 or fewer splits exist: nothing was drawn
            break
        drawn["independent"].append(rel["independent_halves"]["median_distance_mm"])
        drawn["joint"].append(rel["joint_halves"]["median_distance_mm"])
    out["drawn20_medians_mm"] = drawn
    s0 = out["seed0"]
    log(f"{name}: denoise step {t_halves:.1f} s keeping the raw seed/search series, {t_plain:.1f} s without")
    log(f"{name}: independent {s0['independent']['median_distance_mm']} mm, joint {s0['joint']['median_distance_mm']} mm, "
        f"{s0['n_splits']} splits, seed 1 identical: {out['seed0'] == out['seed1']}")
    return out


def synthetic_drawn(log) -> dict:
    """Medians over ``split_half_max_splits`` drawn splits, four seeds, on synthetic runs of 13 blocks (the
    default rule, joint halves: synthetic runs have no confounds or filter to refit)."""
    from tmstarget.config.settings import load_config
    from tmstarget.target import params as TP, selection as T, uncertainty as TU
    from tmstarget.target.reliability import count_balanced_splits

    params = TP.resolve_target_cfg(dict(load_config()["targeting"]))
    mask_img = old.synth_grid()
    seed, search = old.masks_for(mask_img, {"seed": "sphere", "search": "ba46"})
    rows = []
    for replicate in (0, 1):
        den = old.smoothed(old.synth_run(mask_img, np.random.default_rng(11000 + replicate), SYNTH_MINUTES, SYNTH_SNR),
                           4.0)
        space = T.space_of(search, den)
        prob = T.build_problem(den, seed, search, params["method"])
        medians = []
        for s in SYNTH_SEEDS:
            rel = TU.rule_split_half_study(params["method"], {**params, "random_seed": s}, prob, space, den, seed, search,
                                      None)["reliability"]
            medians.append(rel["median_distance_mm"])
        n_blocks = rel["n_blocks"]
        rows.append({"replicate": replicate, "n_blocks": n_blocks, "possible_splits": count_balanced_splits(n_blocks),
                     "drawn_splits": rel["n_splits"], "medians_mm": medians})
        log(f"synthetic replicate {replicate}: {rel['n_splits']} of {count_balanced_splits(n_blocks)} splits, "
            f"medians over seeds {medians}")
    return {"minutes": SYNTH_MINUTES, "snr": SYNTH_SNR, "seeds": list(SYNTH_SEEDS), "rows": rows}


def run(log) -> dict:
    bench = bench_dir()
    found = units(bench)
    if not found:
        raise SystemExit(f"nothing prepared under {bench}; run: python benchmarks/reliability_bench.py prepare")
    result = {"commit": git_commit(), "command": "python benchmarks/reliability_halves.py run",
              "units": {name: measure(name, bold, bench / "work" / "halves", log) for name, bold in found.items()},
              "synthetic": synthetic_drawn(log)}
    result = _clean(result)
    (bench / "halves.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    log(f"wrote {bench / 'halves.json'}")
    return result


# ----------------------------------------------------------------------------- the page
def _interval(fig: dict) -> str:
    return (f"{fmt(fig['median_distance_mm'])} mm ({fmt(fig['p10_distance_mm'])}-{fmt(fig['p90_distance_mm'])})")


def _spread(vals) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a (every split used)"
    return (f"{min(vals):.1f}-{max(vals):.1f} mm (P10-P90 over seeds "
            f"{np.percentile(vals, 10):.1f}-{np.percentile(vals, 90):.1f})")


def render(res: dict, date: str) -> str:
    """The page for ``res`` (pure: the same JSON and date give the same bytes)."""
    rows = []
    for name, u in sorted(res["units"].items()):
        s0, s1 = u["seed0"], u["seed1"]
        same = "identical" if s0 == s1 else (
            f"{abs(s0['independent']['median_distance_mm'] - s1['independent']['median_distance_mm']):.1f} mm apart")
        rows.append(f"| {name} | {s0['minutes']:.1f} | {s0['n_splits']} ({'all' if s0['splits_enumerated'] else 'drawn'}) "
                    f"| {_interval(s0['independent'])} | {_interval(s0['joint'])} "
                    f"| {fmt(s0['independent']['first_vs_second_half_mm'])} / {fmt(s0['joint']['first_vs_second_half_mm'])} mm "
                    f"| {same} | {'yes' if s0['reproducible'] else 'no'} |")
    old_lines = [f"- {name}: cleaned on their own {_spread(u['drawn20_medians_mm']['independent'])}; "
                 f"cleaned together {_spread(u['drawn20_medians_mm']['joint'])}."
                 for name, u in sorted(res["units"].items())]
    diff_lines = [f"- {name}: {u['raw_columns']} of {u['voxels']} voxels kept raw; denoised output with and without "
                  f"them: max abs difference {u['denoised_max_abs_diff']:.1e}."
                  for name, u in sorted(res["units"].items())]
    syn = res["synthetic"]
    syn_lines = [f"- replicate {r['replicate']}: {r['n_blocks']} blocks, {r['drawn_splits']} of {r['possible_splits']} "
                 f"splits drawn; medians for seeds {', '.join(str(s) for s in syn['seeds'])}: "
                 f"{', '.join(fmt(m) for m in r['medians_mm'])} mm (range "
                 f"{fmt(max(r['medians_mm']) - min(r['medians_mm']))} mm)." for r in syn["rows"]]
    words = "\n".join(f"- {name}: \"{u['seed0']['plain_words']}\"" for name, u in sorted(res["units"].items()))
    return f"""# The split-half figure, measured: independent and joint halves

Generated from the output of `{res['command']}` at commit {res['commit']} on {date}, rendered by
`python benchmarks/reliability_halves.py docs` (`make reliability-docs` prepares the runs and writes this page
and [reliability.md](reliability.md) from a clean cache). Do not edit by hand. The method is in
[reliability_method.md](reliability_method.md).

Units: the real runs the registration gate does not FAIL (prepared as in [reliability.md](reliability.md))
and the two demo subjects (`tmstarget demo-data`, through the whole workflow with `config/demo.yaml`). Each
runs the workflow's own masks, denoise, seed map and target steps with the default config.

## Headline and joint halves

Median distance between the targets of the two halves over the splits, with the 10th-90th percentile;
"all": every balanced split of the 60 s blocks was used. The headline is the independent figure (each half
denoised on its own); the joint figure cuts both halves from one denoised series. "seed 0 vs 1": the record
with `targeting.random_seed` 0 and 1. "reproducible": the headline median within
`targeting.confident_split_half_median_mm`.

| unit | minutes kept | splits | independent median (P10-P90) | joint median (P10-P90) | first vs second half: independent / joint | seed 0 vs 1 | reproducible |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

What the report says for these units (seed 0):

{words}

## The figure before issue 20: 20 drawn splits

Medians of 20 randomly drawn splits, for seeds {OLD_SEEDS[0]}-{OLD_SEEDS[-1]} (the code before issue 20 drew 20 with
one fixed seed), on the same halves:

{chr(10).join(old_lines)}

## Drawn splits on longer runs

Above `targeting.split_half_max_splits` possible splits (13 or more blocks) the splits are drawn with
`targeting.random_seed`. Synthetic runs of {syn['minutes']:g} minutes at TR 2 s, SNR {syn['snr']:g}
(`benchmarks/reliability.py`), the default rule:

{chr(10).join(syn_lines)}

## Keeping the raw series costs the main output nothing

{chr(10).join(diff_lines)}
"""


def write(res: dict, out: Path) -> Path:
    return write_page(render, res, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["run", "docs"])
    ap.add_argument("--out", type=Path, default=OUT_DOC, help="docs: the page written")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "run":
        run(log)
    else:
        write(json.loads((bench_dir() / "halves.json").read_text()), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
