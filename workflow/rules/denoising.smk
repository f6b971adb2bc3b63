# Denoising and seed maps, per unit (one target) and per denoising strategy.
from dataclasses import asdict


def unit_runs(w):
    return [asdict(r) for r in UNITS[w.unit].runs]


rule denoise:
    input:
        bold=lambda w: [r.bold for r in UNITS[w.unit].runs],
        mask=lambda w: [r.mask for r in UNITS[w.unit].runs],
        confounds=lambda w: [r.confounds for r in UNITS[w.unit].runs],
        seed=D("seed_mask"),
        search=D("search_mask"),
    output:
        npz=WORK / "{subdir}" / "{unit}_desc-{strategy}_denoised.npz",
        halves=WORK / "{subdir}" / "{unit}_desc-{strategy}_halves.npz",  # raw seed/search series (reliability)
        qc=D("denoise_qc", strategy="{strategy}"),
    params:
        step="denoise",
        runs=unit_runs,
        strategy=lambda w: config["denoising"]["strategies"][w.strategy],
        strategy_name=lambda w: w.strategy,
        min_retained_minutes=config["denoising"]["min_retained_minutes"],
        warn_retained_minutes=config["denoising"]["warn_retained_minutes"],
    log:
        LOGS / "denoise" / "{subdir}" / "{unit}_{strategy}.log",
    benchmark:
        LOGS / "benchmarks" / "denoise" / "{subdir}" / "{unit}_{strategy}.tsv"
    group: UNIT_GROUP
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/run_step.py"


rule masks:
    input:
        mask=lambda w: UNITS[w.unit].runs[0].mask,
    output:
        seed=D("seed_mask"),
        search=D("search_mask"),
        json=D("masks_json"),
    params:
        step="masks",
        seed=config["seed"],
        search=config["search"],
    log:
        LOGS / "masks" / "{subdir}" / "{unit}.log",
    benchmark:
        LOGS / "benchmarks" / "masks" / "{subdir}" / "{unit}.tsv"
    group: UNIT_GROUP
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/run_step.py"


rule seedmap:
    input:
        npz=lambda w: WORK / w.subdir / f"{w.unit}_desc-{STRATEGY_OF[w.Strategy]}_denoised.npz",
        seed=D("seed_mask"),
    output:
        r=D("r_map"),
        fisherz=D("fisherz_map"),
        json=D("seed_json"),
        fisherz_json=D("fisherz_json"),
    params:
        step="seedmap",
        seed=config["seed"],
    log:
        LOGS / "seedmap" / "{subdir}" / "{unit}_{Strategy}.log",
    benchmark:
        LOGS / "benchmarks" / "seedmap" / "{subdir}" / "{unit}_{Strategy}.tsv"
    group: UNIT_GROUP
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    script:
        "../scripts/run_step.py"
