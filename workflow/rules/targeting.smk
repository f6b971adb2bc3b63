# Target selection in template space, with bootstrap uncertainty and the no-GSR comparison.
METHOD = config["targeting"]["method"]


def target_inputs(w):
    inputs = {
        "npz": WORK / w.subdir / f"{w.unit}_desc-{MAIN}_denoised.npz",
        "halves": WORK / w.subdir / f"{w.unit}_desc-{MAIN}_halves.npz",
        "seed": D("seed_mask", subdir=w.subdir, unit=w.unit),
        "search": D("search_mask", subdir=w.subdir, unit=w.unit),
        "fisherz": D("fisherz_map", subdir=w.subdir, unit=w.unit, strategy=cap(MAIN)),
    }
    if len(STRATEGIES) > 1:
        inputs["compare_npz"] = WORK / w.subdir / f"{w.unit}_desc-{COMPARE}_denoised.npz"
    if METHOD == "seedmap":
        # Leave-one-out group map: the seed maps (main strategy) of the *other subjects*.
        subject = UNITS[w.unit].subject
        inputs["group_maps"] = [for_unit("r_map", u, strategy=cap(MAIN)) for u in UNITS
                                if UNITS[u].subject != subject]
    return inputs


rule target:
    input:
        unpack(target_inputs),
    output:
        json=D("target_json"),
    params:
        step="target",
        cfg=config["targeting"],
        seed=config["seed"],
        search=config["search"],
        space=SPACE,
    log:
        LOGS / "target" / "{subdir}" / "{unit}.log",
    benchmark:
        LOGS / "benchmarks" / "target" / "{subdir}" / "{unit}.tsv"
    group: TARGET_GROUP
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/run_step.py"
