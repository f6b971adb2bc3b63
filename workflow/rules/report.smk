from tmstarget.report import reportlet_titles

# QC reports (self-contained HTML) and the derivative's dataset files.


def report_inputs(w):
    u = UNITS[w.unit]
    main = cap(MAIN)
    return {
        "target_json": D("target_json", subdir=u.subdir, unit=u.unit),
        "native_json": D("native_json", subdir=u.subdir, unit=u.unit),
        "denoise_qc_json": D("denoise_qc", subdir=u.subdir, unit=u.unit, strategy=MAIN),
        "seed_json": D("seed_json", subdir=u.subdir, unit=u.unit, strategy=main),
        "verdict_json": D("verdict", subdir=u.subdir, unit=u.unit),
        "fisherz_map": D("fisherz_map", subdir=u.subdir, unit=u.unit, strategy=main),
        "fisherz_map_t1w": D("fisherz_map_t1w", subdir=u.subdir, unit=u.unit, strategy=main),  # the interactive viewer's
        "seed_mask": D("seed_mask", subdir=u.subdir, unit=u.unit),
        "search_mask": D("search_mask", subdir=u.subdir, unit=u.unit),
        "denoised_npz": str(WORK / u.subdir / f"{u.unit}_desc-{MAIN}_denoised.npz"),
        "preproc_bold": [r.bold for r in u.runs],
        "bold_mask": [r.mask for r in u.runs],
        "confounds": [r.confounds for r in u.runs],
        "boldref_t1w": [r.boldref_t1w for r in u.runs if r.boldref_t1w],
        "t1w": u.anat["preproc_t1w"],
        "t1w_mni": u.anat.get("t1w_mni"),
        "template_space": SPACE,
        # not files: the export formats named in the report's navigator box
        "nav_formats": EXPORT_FORMATS,
        # the configuration of this run, for the report's Methods (command line, settings)
        "run_config": config,
        "input_route": PLAN.route,
    }


NOT_FILES = ("template_space", "nav_formats", "run_config", "input_route")


def report_file_inputs(w):
    inputs = report_inputs(w)
    files = []
    for key, value in inputs.items():
        if key in NOT_FILES or value is None:
            continue
        files += value if isinstance(value, list) else [value]
    return files


REPORTLETS = reportlet_titles()


# The subject page and one file per report section for `snakemake --report`
# (tmstarget BIDS OUT participant -- --report r.html), from figures drawn once.
rule report:
    input:
        report_file_inputs,
    output:
        html=D("report"),
        reportlets=[
            report(
                str(WORK / "reportlets" / "{unit}" / name),
                caption="../report/reportlet.rst",
                category="{unit}",
                labels={"subject": "{unit}", "section": title},
            )
            for name, title, _ in REPORTLETS
        ],
    params:
        step="report",
        inputs=report_inputs,
        reportlet_dir=lambda w: str(WORK / "reportlets" / w.unit),
    log:
        LOGS / "report" / "{unit}.log",
    benchmark:
        LOGS / "benchmarks" / "report" / "{unit}.tsv"
    group: TARGET_GROUP
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    script:
        "../scripts/run_step.py"


def group_entries():
    from tmstarget.qc.group import unit_group_entries

    return unit_group_entries(DERIV, UNITS.values(), TASK, SPACE, MAIN)


rule group_report:
    input:
        lambda w: [e[k] for e in group_entries() for k in ("target_json", "native_json", "denoise_qc_json", "seed_json", "verdict_json")],
        [for_unit("report", u) for u in UNITS],
    output:
        html=DERIV / "group.html",
        tsv=DERIV / "group_targets.tsv",
    params:
        step="group_report",
        entries=lambda w: group_entries(),
    log:
        LOGS / "group_report.log",
    benchmark:
        LOGS / "benchmarks" / "group_report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/run_step.py"


rule dataset_description:
    output:
        description=DERIV / "dataset_description.json",
    params:
        step="dataset_files",
        sources={"raw": PLAN.bids_dir} if PLAN.route == "raw" else {"fmriprep": PLAN.derivatives_dir},
    log:
        LOGS / "dataset_description.log",
    benchmark:
        LOGS / "benchmarks" / "dataset_description.tsv"
    localrule: True
    script:
        "../scripts/run_step.py"
