from tmstarget.qc.verdict import thresholds_from_config


def verdict_bold_sidecars(w):
    """Preprocessing sidecars whose HeaderWarnings the verdict reports (raw route)."""
    if PLAN.route != "raw":
        return []
    return [str(Path(r.bold).with_name(Path(r.bold).name.replace(".nii.gz", ".json"))) for r in UNITS[w.unit].runs]


def registration_qc_files(w):
    """What the registration checks of a unit read (tmstarget.preproc.registration_qc): files that exist or a rule makes."""
    u = UNITS[w.unit]
    anat = {k: u.anat.get(k) for k in ("t1w_mni", "brain_mask", "preproc_t1w", "wm_probseg")
            if u.anat.get(k) and (PLAN.route == "raw" or Path(u.anat[k]).exists())}
    runs = [{"name": r.name, **({"mask_mni": r.mask} if r.mask else {}),
             **({"boldref_mni": r.boldref_mni} if r.boldref_mni else {}),
             **({"boldref_t1w": r.boldref_t1w} if r.boldref_t1w else {})} for r in u.runs]
    return anat, runs


# Registration checks of one unit (T1w -> template correlation, brain volume, BOLD mask overlap, BOLD-T1w
# edges); a FAIL there makes the verdict FAIL.
rule registration_qc:
    input:
        lambda w: list(registration_qc_files(w)[0].values())
        + [p for run in registration_qc_files(w)[1] for k, p in run.items() if k != "name"],
    output:
        json=D("registration_qc"),
    params:
        step="registration_qc",
        anat=lambda w: registration_qc_files(w)[0],
        runs=lambda w: registration_qc_files(w)[1],
        thresholds=(config.get("qc") or {}).get("registration") or {},
    log:
        LOGS / "registration_qc" / "{subdir}" / "{unit}.log",
    benchmark:
        LOGS / "benchmarks" / "registration_qc" / "{subdir}" / "{unit}.tsv"
    group: UNIT_GROUP
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/run_step.py"


# One verdict per unit (PASS / WARN / FAIL, reasons, action), judged with this run's configured thresholds;
# the report, the group table, the exports and the terminal summary all read it.
rule verdict:
    input:
        target_json=D("target_json"),
        native_json=D("native_json"),
        denoise_qc_json=lambda w: D("denoise_qc", subdir=w.subdir, unit=w.unit, strategy=MAIN),
        seed_json=lambda w: D("seed_json", subdir=w.subdir, unit=w.unit, strategy=cap(MAIN)),
        registration_qc=D("registration_qc"),
    output:
        json=D("verdict"),
    params:
        step="verdict",
        thresholds=thresholds_from_config(config),
        # written beside the preprocessed BOLD, not declared outputs: read when present (raw route)
        bold_sidecars=verdict_bold_sidecars,
        bold_headers=lambda w: [] if PLAN.route == "raw" else [[r.t1w_bold or r.bold, r.t_r] for r in UNITS[w.unit].runs],
    log:
        LOGS / "verdict" / "{subdir}" / "{unit}.log",
    benchmark:
        LOGS / "benchmarks" / "verdict" / "{subdir}" / "{unit}.tsv"
    group: TARGET_GROUP
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/run_step.py"
