"""The Glossary and the Methods paragraph of the report (with the command that made it, its configuration,
the version and the date), and the words for the clustering rule."""

from __future__ import annotations

import datetime as _dt

from tmstarget.config.record import last_command
from tmstarget.qc.text import fmt, fmt3, scrub_paths
from tmstarget.report.common import SubjectContext
from tmstarget.report.verdict import target_uncertainty

#: (term, plain-words meaning) shown in the Glossary section.
GLOSSARY = (
    ("RAS", "The axis convention of the coordinates: x increases to the subject's Right, y to the Anterior "
            "(front), z to the Superior (up); values in millimetres."),
    ("MNI152NLin2009aSym", "The standard brain (template) the group coordinates refer to: the MNI ICBM 2009a "
                           "nonlinear symmetric average of 152 adults (Fonov et al. 2011)."),
    ("r / Fisher z", "r is the correlation of a voxel's signal with the seed's (-1 to 1; negative = "
                     "anticorrelated); Fisher z = atanh(r) makes values comparable across voxels and runs."),
    ("FD", "Framewise displacement: how far the head moved between two volumes, in mm (Power et al. 2012)."),
    ("Censoring", "Leaving out volumes with too much motion (FD above the threshold) from the analysis."),
    ("tSNR", "Temporal signal-to-noise ratio: mean over time divided by standard deviation. Low tSNR near the "
             "sinuses (signal dropout) makes the sgACC seed unreliable."),
    ("GSR", "Global signal regression: removing the whole-brain average signal. It cleans motion and "
            "breathing effects but can create anticorrelations (Murphy et al. 2009), hence the no-GSR check."),
    ("aCompCor", "Anatomical CompCor: noise signals taken from white matter and CSF by principal components "
                 "(Behzadi et al. 2007), used as the denoising without GSR."),
    ("Split-half", "The target computed separately from the first and second half of the data; their "
                   "distance shows how reproducible the target is with this amount of data."),
    ("Carpet plot", "Every brain voxel's signal over time as one row of an image; vertical bands are "
                    "artefacts that affect the whole brain at once (usually motion)."),
    ("Cluster rule", "How the target is chosen: the most anticorrelated voxels of the search region are "
                     "grouped into connected clusters and the centre of the largest is the target (Cash et al. "
                     "2021)."),
    ("HCPex", "An extended Human Connectome Project atlas of the cortex (Huang et al. 2022); its BA46 label "
              "is used to check that the target lies in Brodmann area 46."),
    ("5-cm rule", "The traditional scalp-based placement 5 cm anterior to the motor hotspot; its average "
                  "MNI position is one of the literature sites."),
    ("Beam F3", "The F3 EEG electrode position found with the Beam method from head measurements (Beam et al. "
                "2009); its average MNI position is one of the literature sites."),
)

#: Citation of each target rule, as written after its name in the Methods paragraph.
RULE_CITATIONS = {"cluster": " (Cash et al. 2021)", "peak": " (Fox et al. 2012)", "seedmap": " (Fox et al. 2013)",
                  "hierarchical": " (a reimplementation of the SAINT-like clustering)"}

def cluster_rule_words(method_parameters) -> str:
    """The cluster rule's settings in words (", here: ..."), or "" for another rule or no record.

    Says whether the run used the default (percentile of all search voxels, |r|-weighted centre) or the
    published Cash/contarg rule (percentile of the negative r only, unweighted centroid).
    """
    mp = method_parameters if isinstance(method_parameters, dict) else {}
    cl = mp.get("cluster") if isinstance(mp.get("cluster"), dict) else mp
    if mp.get("rule") not in ("cluster", "seedmap") or "percentile" not in cl:
        return ""
    pool = "the negative r values" if cl.get("percentile_of") == "negative" else "all search voxels"
    centre = "|r|-weighted centre" if cl.get("weight_by_abs_r", True) else "unweighted centroid"
    return (f", here: voxels at or below the {fmt(cl.get('percentile'), 0)}th percentile of {pool}, the largest "
            f"{cl.get('connectivity', 26)}-connected cluster and its {centre}, snapped to the nearest grey-matter "
            "search voxel")


CITATIONS = (
    "Fox MD, Buckner RL, White MP, Greicius MD, Pascual-Leone A. Efficacy of transcranial magnetic stimulation "
    "targets for depression is related to intrinsic functional connectivity with the subgenual cingulate. "
    "Biol Psychiatry. 2012;72(7):595-603.",
    "Fox MD, Liu H, Pascual-Leone A. Identification of reproducible individualized targets for treatment of "
    "depression with TMS based on intrinsic connectivity. NeuroImage. 2013;66:151-160.",
    "Cash RFH, Cocchi L, Lv J, Wu Y, Fitzgerald PB, Zalesky A. Personalized connectivity-guided DLPFC-TMS for "
    "depression: advancing computational feasibility, precision and reproducibility. Hum Brain Mapp. "
    "2021;42(13):4155-4172.",
    "Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but systematic correlations in "
    "functional connectivity MRI networks arise from subject motion. NeuroImage. 2012;59(3):2142-2154.",
    "Behzadi Y, Restom K, Liau J, Liu TT. A component based noise correction method (CompCor) for BOLD and "
    "perfusion based fMRI. NeuroImage. 2007;37(1):90-101.",
    "Murphy K, Birn RM, Handwerker DA, Jones TB, Bandettini PA. The impact of global signal regression on "
    "resting state correlations: are anti-correlated networks introduced? NeuroImage. 2009;44(3):893-905.",
    "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration with "
    "cross-correlation: evaluating automated labeling of elderly and neurodegenerative brain. Med Image Anal. "
    "2008;12(1):26-41.",
    "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate "
    "atlases for pediatric studies. NeuroImage. 2011;54(1):313-327.",
    "Huang CC, Rolls ET, Feng J, Lin CP. An extended Human Connectome Project multimodal parcellation atlas of "
    "the human cortex and subcortical areas. Brain Struct Funct. 2022;227(3):763-778.",
    "Beam W, Borckardt JJ, Reeves ST, George MS. An efficient and accurate new method for locating the F3 "
    "position for prefrontal TMS applications. Brain Stimul. 2009;2(1):50-54.",
    "Abraham A, Pedregosa F, Eickenberg M, et al. Machine learning for neuroimaging with scikit-learn. "
    "Front Neuroinform. 2014;8:14. (nilearn)",
    "Mölder F, Jablonski KP, Letcher B, et al. Sustainable data analysis with Snakemake. F1000Research. "
    "2021;10:33.",
)


def glossary_view(ctx: SubjectContext) -> dict:
    return {"terms": [{"term": t, "meaning": m} for t, m in GLOSSARY]}


def _command_line(cfg: dict) -> tuple[str, str | None]:
    """The command that made this report and its working directory, as recorded by the CLI in
    ``OUT/logs/commands.jsonl`` (absolute paths cut to names); without a record (a report made by plain
    ``snakemake``), an equivalent command rebuilt from the saved configuration, marked as such."""
    record = last_command(cfg["output_dir"]) if cfg.get("output_dir") else None
    if record:
        return scrub_paths(record["command_line"]), scrub_paths(record.get("working_directory") or "") or None
    parts = ["tmstarget", scrub_paths(cfg.get("bids_dir", "BIDS_DIR")), scrub_paths(cfg.get("output_dir", "OUT")),
             "participant"]
    labels = cfg.get("participant_label") or []
    if labels:
        parts += ["--participant-label", *[str(x) for x in labels]]
    if cfg.get("task"):
        parts += ["--task", str(cfg["task"])]
    if cfg.get("fmriprep_dir"):
        parts += ["--derivatives", scrub_paths(cfg["fmriprep_dir"])]
    parts += ["--config", "logs/config.yaml"]
    return "not recorded; equivalent: " + " ".join(parts), None


def methods_view(ctx: SubjectContext) -> dict:
    """A Methods paragraph to copy into a paper or a clinical note (like fMRIPrep's boilerplate), with the
    command line, the configuration, the version and a time-zone-stamped date."""
    import yaml

    from tmstarget import __version__

    t, q = ctx.target or {}, ctx.denoise_qc or {}
    cfg = ctx.inputs.get("run_config") if isinstance(ctx.inputs.get("run_config"), dict) else {}
    den = cfg.get("denoising") or {}
    strategy = q.get("strategy") or den.get("strategy") or (t.get("denoising") or {}).get("strategy") or "n/a"
    seed = t.get("seed") if isinstance(t.get("seed"), dict) else {}
    method = t.get("method") or "n/a"
    unc = target_uncertainty(ctx)
    space = t.get("TemplateSpace") or "MNI152NLin2009aSym"
    gsr_block = t.get("gsr_comparison") if isinstance(t.get("gsr_comparison"), dict) else {}
    compare = gsr_block.get("strategy") or den.get("compare_strategy")
    params = q.get("strategy_parameters") if isinstance(q.get("strategy_parameters"), dict) else {}
    gsr_on = bool(params.get("global_signal", (den.get("strategies") or {}).get(strategy, {}).get("global_signal", True)))
    parts = [
        f"Individual TMS targets were computed with tmstarget {__version__}, following Fox et al. (2012): the "
        "left dorsolateral prefrontal location whose resting-state signal is most anticorrelated with the "
        "subgenual anterior cingulate cortex (sgACC).",
        (f"Resting-state BOLD data were preprocessed with fMRIPrep (its derivatives were the input): motion "
         f"correction and registration to the subject's T1w image and to {space} (template: Fonov et al. 2011). "
         if ctx.inputs.get("input_route") == "fmriprep" else
         f"Resting-state BOLD data were motion-corrected and registered to the subject's T1w image and to "
         f"{space} with ANTs (Avants et al. 2008; template: Fonov et al. 2011). ")
        + f"Volumes with framewise "
        f"displacement (Power et al. 2012) above {fmt(q.get('fd_threshold_mm'), 2, 'mm')} were censored; "
        f"{fmt(q.get('minutes_kept'), 1, 'min')} of data were kept.",
        f"Nuisance signals were removed with the '{strategy}' strategy"
        + (" (including global signal regression)." if gsr_on else " (without global signal regression).")
        + (f" Because global signal regression can create anticorrelations (Murphy et al. 2009), the target was "
           f"also computed with the '{compare}' strategy"
           + (" (aCompCor, Behzadi et al. 2007)" if "compcor" in str(compare).lower() else "")
           + " and the distance between the two is reported." if compare else ""),
        f"The seed ({seed.get('type', 'sphere')}"
        + (f", centre MNI {fmt3(seed.get('center_mni_ras_mm'))} mm, radius {fmt(seed.get('radius_mm'), 0, 'mm')}"
           if seed.get("center_mni_ras_mm") is not None else "")
        + f") time series was correlated with every voxel (Fisher z), and the target was chosen with the "
        f"'{method}' rule{RULE_CITATIONS.get(str(method), '')}{cluster_rule_words(t.get('method_parameters'))} "
        "inside the left-DLPFC search region; BA46 "
        "membership was checked with the HCPex atlas (Huang et al. 2022).",
        "Reliability was measured by computing the target separately in two halves of the data (split-half)"
        + (f"; {unc['reliability']['n_splits']} splits into halves of whole "
           f"{fmt(unc['reliability'].get('block_length_s'), 0)}-s blocks, each half denoised "
           f"{unc['reliability'].get('halves_cleaned', 'jointly')}" if isinstance(unc.get("reliability"), dict)
           and unc["reliability"].get("n_splits") else "")
        + "; a block bootstrap is reported as a detail. The MNI target was mapped to the subject's T1w world "
          "space (RAS mm) for neuronavigation. Analyses used nilearn (Abraham et al. 2014) and Snakemake "
          "(Mölder et al. 2021).",
    ]
    now = _dt.datetime.now().astimezone()
    config_text = yaml.safe_dump(cfg, sort_keys=False) if cfg else ""
    command, cwd = _command_line(cfg) if cfg else ("not recorded (the report was made outside a workflow run)", None)
    return {"paragraph": " ".join(parts), "citations": list(CITATIONS), "command": command, "cwd": cwd,
            "config": scrub_paths(config_text) if config_text else "",
            "version": __version__,
            "date": now.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")}
