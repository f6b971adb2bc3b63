# Built-in preprocessing (raw BIDS route only): writes fMRIPrep-layout files under OUTPUT_DIR/preproc,
# so both input routes meet on one downstream path.

if PLAN.route == "raw":

    rule preproc_description:
        output:
            description=PREPROC / "dataset_description.json",
        params:
            step="dataset_files",
            sources={"raw": PLAN.bids_dir},
            name="tmstarget built-in preprocessing",
            generated_by="tmstarget-preproc",
        log:
            LOGS / "preproc_description.log",
        benchmark:
            LOGS / "benchmarks" / "preproc_description.tsv"
        localrule: True
        script:
            "../scripts/run_step.py"

    rule preprocess_anat:
        input:
            t1w=lambda w: PLAN.anat_jobs[w.anat],
        output:
            **preproc_anat_paths(PREPROC, "{anat}"),
        params:
            step="preprocess_anat",
            cfg=config["preprocessing"],
        log:
            LOGS / "preprocess_anat" / "{anat}.log",
        benchmark:
            LOGS / "benchmarks" / "preprocess_anat" / "{anat}.tsv"
        group: UNIT_GROUP
        threads: 2
        resources:
            mem_mb=6000,
            runtime=90,
        script:
            "../scripts/run_step.py"

    rule preprocess_bold:
        input:
            bold=lambda w: PLAN.bold_jobs[w.run]["raw_bold"],
            description=PREPROC / "dataset_description.json",
            **{k: (lambda w, k=k: preproc_anat_paths(PREPROC, PLAN.bold_jobs[w.run]["anat"])[k])
               for k in ANAT_KEYS},
            fmap=lambda w: sorted(str(p) for p in ((PLAN.bold_jobs[w.run].get("fieldmap") or {})
                                                   .get("files") or {}).values()),
        output:
            **preproc_bold_paths(PREPROC, "{run}"),
        params:
            step="preprocess_bold",
            metadata=lambda w: PLAN.bold_jobs[w.run]["metadata"],
            fieldmap=lambda w: PLAN.bold_jobs[w.run].get("fieldmap"),
            cfg=config["preprocessing"],
        log:
            LOGS / "preprocess_bold" / "{run}.log",
        benchmark:
            LOGS / "benchmarks" / "preprocess_bold" / "{run}.tsv"
        group: UNIT_GROUP
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        script:
            "../scripts/run_step.py"


if PLAN.t1w_bold_jobs:

    # fMRIPrep wrote the BOLD only in T1w space: resample it into the template (fMRIPrep route).
    rule t1w_bold_to_template:
        input:
            t1w_bold=lambda w: PLAN.t1w_bold_jobs[w.t1wrun]["t1w_bold"],
            t1w_mask=lambda w: PLAN.t1w_bold_jobs[w.t1wrun]["t1w_mask"],
            xfm_t1w_to_mni=lambda w: PLAN.t1w_bold_jobs[w.t1wrun]["xfm_t1w_to_mni"],
        output:
            bold=WORK / "{t1wrun}_desc-preproc_bold.nii.gz",
            mask=WORK / "{t1wrun}_desc-brain_mask.nii.gz",
        params:
            step="t1w_bold_to_template",
            space=SPACE,
            t_r=lambda w: PLAN.t1w_bold_jobs[w.t1wrun]["t_r"],
        wildcard_constraints:
            t1wrun=r"sub-[^/]+(/ses-[^/]+)?/sub-[^/]+_space-[a-zA-Z0-9]+",
        log:
            LOGS / "t1w_bold_to_template" / "{t1wrun}.log",
        benchmark:
            LOGS / "benchmarks" / "t1w_bold_to_template" / "{t1wrun}.tsv"
        group: UNIT_GROUP
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../scripts/run_step.py"
