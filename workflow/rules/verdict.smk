from tmstarget.qc import thresholds_from_config


def verdict_bold_sidecars(w):
    """Preprocessing sidecars whose HeaderWarnings the verdict reports (raw route)."""
    if PLAN.route != "raw":
        return []
    return [str(Path(r.bold).with_name(Path(r.bold).name.replace(".nii.gz", ".json"))) for r in UNITS[w.unit].runs]


# One verdict per unit (PASS / WARN / FAIL, reasons, action), judged with this run's configured thresholds;
# the report, the group table, the exports and the terminal summary all read it.
rule verdict:
    input:
        target_json=D("target_json"),
        native_json=D("native_json"),
        denoise_qc_json=lambda w: D("denoise_qc", subdir=w.subdir, unit=w.unit, strategy=MAIN),
        seed_json=lambda w: D("seed_json", subdir=w.subdir, unit=w.unit, strategy=cap(MAIN)),
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
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/run_step.py"
