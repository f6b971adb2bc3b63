# Native (T1w world RAS mm) target, scalp entry and coil pose, then the neuronavigation files.
EXPORT_FORMATS = list(config["exports"]["formats"])


rule native:
    input:
        target=D("target_json"),
        xfm_t1w_to_mni=lambda w: UNITS[w.unit].anat["xfm_t1w_to_mni"],
        xfm_mni_to_t1w=lambda w: UNITS[w.unit].anat["xfm_mni_to_t1w"],
        brain_mask=lambda w: UNITS[w.unit].anat["brain_mask"],
        t1w=lambda w: UNITS[w.unit].t1w_navigation,
    output:
        tsv=D("native_tsv"),
        json=D("native_json"),
        coordsystem=D("native_coordsystem"),
        sphere=D("native_sphere"),
        sphere_json=D("native_sphere_json"),
    params:
        step="native",
        cfg=config["native"],
        t1w_navigation=lambda w: UNITS[w.unit].t1w_navigation,
        t1w_uri=lambda w: bids_uri(UNITS[w.unit].t1w_navigation,
                                   PLAN.bids_dir if PLAN.route == "raw" else PLAN.derivatives_dir,
                                   "raw" if PLAN.route == "raw" else "fmriprep"),
    log:
        LOGS / "native" / "{subdir}" / "{unit}.log",
    benchmark:
        LOGS / "benchmarks" / "native" / "{subdir}" / "{unit}.tsv"
    group: TARGET_GROUP
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    script:
        "../scripts/run_step.py"


rule maps_to_t1w:
    input:
        r=D("r_map"),
        fisherz=D("fisherz_map"),
        xfm_mni_to_t1w=lambda w: UNITS[w.unit].anat["xfm_mni_to_t1w"],
        t1w=lambda w: UNITS[w.unit].t1w_navigation,
    output:
        r=D("r_map_t1w"),
        fisherz=D("fisherz_map_t1w"),
        json=D("maps_t1w_json"),
    params:
        step="maps_to_t1w",
    log:
        LOGS / "maps_to_t1w" / "{subdir}" / "{unit}_{Strategy}.log",
    benchmark:
        LOGS / "benchmarks" / "maps_to_t1w" / "{subdir}" / "{unit}_{Strategy}.tsv"
    group: UNIT_GROUP
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    script:
        "../scripts/run_step.py"


def unit_of_subdir(subdir):
    """The unit whose files live in a subject (or subject/session) folder: sub-01 or sub-01_ses-1."""
    return subdir.replace("/", "_")


# The nav folder holds one unit's files, so its path has only {subdir}; the unit follows from it.
# The verdict gates the exports: on FAIL no navigator file is written (only nav/NOT_EXPORTED.txt).
rule exports:
    input:
        native=lambda w: D("native_json", subdir=w.subdir, unit=unit_of_subdir(w.subdir)),
        verdict=lambda w: D("verdict", subdir=w.subdir, unit=unit_of_subdir(w.subdir)),
        t1w=lambda w: UNITS[unit_of_subdir(w.subdir)].t1w_navigation,
    output:
        # one folder per unit: file names in tmstarget.navigation.exports.export_names
        nav=directory(D("nav_dir")),
    params:
        step="exports",
        formats=EXPORT_FORMATS,
        t1w_navigation=lambda w: UNITS[unit_of_subdir(w.subdir)].t1w_navigation,
    log:
        LOGS / "exports" / "{subdir}" / "nav.log",
    benchmark:
        LOGS / "benchmarks" / "exports" / "{subdir}" / "nav.tsv"
    group: TARGET_GROUP
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/run_step.py"
