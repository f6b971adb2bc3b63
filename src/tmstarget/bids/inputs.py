"""Find the inputs of each target: raw BIDS (built-in preprocessing) or fMRIPrep derivatives.

Both routes end in the same :class:`Plan`: for every *unit* (one target; a subject, or a subject's
session with ``group_runs_by: session``) the list of runs with the paths of their fMRIPrep-layout
files (MNI BOLD, brain mask, confounds) and the anatomical files (preprocessed T1w, transforms).
For raw input these paths are the files the built-in preprocessing *will* write under
``OUTPUT_DIR/preproc``; for fMRIPrep input they are existing files, found with pybids by their
entities (space, res, desc, suffix, from/to, ...; no file-name patterns) and checked here so that a
missing piece is an error before any job runs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tmstarget.errors import InputError
from tmstarget.bids.fieldmaps import find_fieldmap
from tmstarget.config.settings import with_defaults
from tmstarget.bids.preflight import (check_bold_header, check_output_dir, check_repetition_time, check_subject_folders,
                                     check_t1w_header)

log = logging.getLogger(__name__)

BUILTIN_SPACE = "MNI152NLin2009aSym"
FMRIPREP_SPACES = ("MNI152NLin2009cAsym", "MNI152NLin6Asym", "MNI152NLin2009aSym")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
ANAT_KEYS = ("preproc_t1w", "brain_mask", "gm_probseg", "wm_probseg", "csf_probseg", "t1w_mni",
             "xfm_t1w_to_mni", "xfm_mni_to_t1w")


@dataclass
class RunInputs:
    """One resting-state run, in the fMRIPrep layout both routes share."""

    name: str                 # BIDS prefix, e.g. sub-01_ses-1_task-rest_run-1
    bold: str                 # MNI-space preprocessed BOLD
    mask: str                 # its brain mask
    confounds: str            # *_desc-confounds_timeseries.tsv
    boldref_mni: str | None = None
    boldref_t1w: str | None = None
    raw_bold: str | None = None
    t_r: float | None = None
    t1w_bold: str | None = None   # fMRIPrep space-T1w BOLD that a rule resamples into ``bold`` (MNI)
    t1w_mask: str | None = None   # its brain mask (resampled into ``mask``)


@dataclass
class UnitInputs:
    """What one target is computed from."""

    unit: str                 # file prefix: sub-01 or sub-01_ses-1
    subdir: str               # folder: sub-01 or sub-01/ses-1
    subject: str
    session: str | None
    runs: list[RunInputs]
    anat: dict                # keys ANAT_KEYS -> paths
    t1w_navigation: str       # the T1w whose world the exports use (the file to load in the navigator)


@dataclass
class Plan:
    route: str                # "raw" or "fmriprep"
    space: str                # template space name of the maps
    bids_dir: str
    output_dir: str
    units: dict[str, UnitInputs] = field(default_factory=dict)
    anat_jobs: dict[str, str] = field(default_factory=dict)   # preproc anat prefix -> raw T1w
    bold_jobs: dict[str, dict] = field(default_factory=dict)  # preproc run prefix -> {raw_bold, metadata, anat, fieldmap}
    derivatives_dir: str = ""  # the fMRIPrep folder (fmriprep route)
    t1w_bold_jobs: dict[str, dict] = field(default_factory=dict)  # work run prefix -> {t1w_bold, t1w_mask, xfm}

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- helpers


def _strip_ext(name: str) -> str:
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _unit_of(subject: str, session: str | None, group_runs_by: str) -> tuple[str, str]:
    if group_runs_by == "session" and session:
        return f"sub-{subject}_ses-{session}", f"sub-{subject}/ses-{session}"
    return f"sub-{subject}", f"sub-{subject}"


def _check_participants(available: list[str], requested: list[str], where: str) -> list[str]:
    requested = [p[4:] if p.startswith("sub-") else p for p in (requested or [])]
    if not available:
        raise InputError(f"{where}: no subjects found (no sub-*/ folders with data); check the path")
    missing = sorted(set(requested) - set(available))
    if missing:
        raise InputError(
            f"participant label(s) {', '.join(missing)} not found in {where}; available: "
            f"{', '.join(sorted(available))}"
        )
    return sorted(requested) if requested else sorted(available)


# fMRIPrep folders tmstarget never reads: not indexed (FreeSurfer's thousands of files, figures, logs, reports;
# pybids' own default skips code/, models/, sourcedata/ and stimuli/). Patterns see the path below the root.
FMRIPREP_NOT_INDEXED = (
    re.compile(r"^/(code|models|sourcedata|stimuli|logs?|figures|derivatives)(/|$)"),
    re.compile(r"^/sub-[^/]+/(ses-[^/]+/)?(?!ses-|anat(/|$)|func(/|$))[^/]+(/|$)"),  # all but anat/ and func/
    re.compile(r"^/[^/]+\.html$"),
)


def _layout(root: Path, derivative: bool = False, subjects: list[str] | None = None):
    """pybids layout of a raw dataset, or of a derivatives folder (``validate=False``) indexing only what
    the fMRIPrep route reads: the ``anat/`` and ``func/`` folders of ``subjects`` (all when None), with
    metadata (JSON sidecars) of the BOLD runs only."""
    import bids

    from tmstarget.bids.preflight import check_json_files

    check_json_files(root)  # a broken JSON named with its line, not inside a pybids repr
    kwargs = {}
    if derivative:
        ignore = list(FMRIPREP_NOT_INDEXED)
        if subjects is not None:
            ignore.append(re.compile(rf"^/sub-(?!({'|'.join(map(re.escape, subjects))})(/|$))[^/]+"))
        kwargs["indexer"] = bids.BIDSLayoutIndexer(validate=False, ignore=ignore, suffix="bold")
    try:
        return bids.BIDSLayout(str(root), validate=not derivative, is_derivative=derivative, **kwargs)
    except Exception as exc:  # pybids raises several types for a missing/invalid description
        fix = ("it needs a dataset_description.json with Name and BIDSVersion"
               if not derivative else "it needs a dataset_description.json with GeneratedBy")
        raise InputError(f"{root} is not a readable BIDS dataset ({exc}); {fix}") from None


def _subject_folders(root: Path) -> list[str]:
    """Labels of the ``sub-*`` folders that hold at least one file (what pybids would list as subjects)."""
    return sorted(p.name[4:] for p in root.glob("sub-*")
                  if p.is_dir() and next((f for f in p.rglob("*") if f.is_file()), None) is not None)


def _unindexed_images(root: Path, indexed: set[str]) -> list[str]:
    """NIfTI files inside sub-* folders that pybids did not accept (names that break BIDS rules)."""
    found = []
    for path in root.glob("sub-*/**/*.nii*"):
        if str(path.resolve()) not in indexed:
            found.append(str(path.relative_to(root)))
    return sorted(found)


# ----------------------------------------------------------------------------- raw route


def preproc_anat_paths(preproc_dir: Path, anat_prefix: str, space: str = BUILTIN_SPACE) -> dict:
    """Paths the built-in anatomical preprocessing writes for a T1w prefix (fMRIPrep naming)."""
    p = f"{preproc_dir}/{anat_prefix}"
    return {
        "preproc_t1w": f"{p}_desc-preproc_T1w.nii.gz",
        "brain_mask": f"{p}_desc-brain_mask.nii.gz",
        "gm_probseg": f"{p}_label-GM_probseg.nii.gz",
        "wm_probseg": f"{p}_label-WM_probseg.nii.gz",
        "csf_probseg": f"{p}_label-CSF_probseg.nii.gz",
        "t1w_mni": f"{p}_space-{space}_res-2_desc-preproc_T1w.nii.gz",
        "xfm_t1w_to_mni": f"{p}_from-T1w_to-{space}_mode-image_xfm.h5",
        "xfm_mni_to_t1w": f"{p}_from-{space}_to-T1w_mode-image_xfm.h5",
    }


def preproc_bold_paths(preproc_dir: Path, run_prefix: str, space: str = BUILTIN_SPACE) -> dict:
    """Paths the built-in BOLD preprocessing writes for a run prefix (fMRIPrep naming)."""
    p = f"{preproc_dir}/{run_prefix}"
    return {
        "bold_mni": f"{p}_space-{space}_res-2_desc-preproc_bold.nii.gz",
        "mask_mni": f"{p}_space-{space}_res-2_desc-brain_mask.nii.gz",
        "boldref_mni": f"{p}_space-{space}_res-2_boldref.nii.gz",
        "boldref_t1w": f"{p}_space-T1w_boldref.nii.gz",
        "confounds": f"{p}_desc-confounds_timeseries.tsv",
        "xfm_bold_to_t1w": f"{p}_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt",
    }


def plan_raw(bids_dir, output_dir, task="rest", participant_label=(), group_runs_by="subject",
             min_minutes: float = 0.0, t1w_tol_mm: float = 0.1, distortion_correction: str | None = None) -> Plan:
    """Plan the built-in preprocessing route from a raw BIDS dataset.

    ``distortion_correction`` (None: ``preprocessing.distortion_correction`` of config/config.yaml):
    ``auto`` finds each run's field maps (:mod:`tmstarget.bids.fieldmaps`, ``bold_jobs[run]["fieldmap"]``,
    None when there are none); ``none`` ignores ``fmap/``.

    Raises
    ------
    InputError
        Empty or non-BIDS folder, subject folders with non-BIDS labels, unknown participant, files
        with non-BIDS names, no resting-state run, no T1w, a 4D T1w or one whose qform and sform
        disagree (more than ``t1w_tol_mm``), or a run without a valid ``RepetitionTime`` (seconds).
    """
    bids_dir = Path(bids_dir).resolve()
    if distortion_correction is None:
        distortion_correction = with_defaults("preprocessing", None)["distortion_correction"]
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: BIDS folder not found; check the path")
    if not (bids_dir / "dataset_description.json").exists():
        raise InputError(
            f"{bids_dir} has no dataset_description.json, so it is not a BIDS dataset; convert the "
            "scans to BIDS first (e.g. with dcm2bids or heudiconv)"
        )
    check_subject_folders(bids_dir)
    layout = _layout(bids_dir)
    subjects = _check_participants(layout.get_subjects(), list(participant_label), str(bids_dir))
    indexed = {str(Path(f).resolve()) for f in layout.get(return_type="file")}
    bad = _unindexed_images(bids_dir, indexed)
    if bad:
        raise InputError(
            f"{bids_dir}: these files are not named as BIDS requires and were not read: "
            f"{', '.join(bad[:5])}; rename them like sub-01/func/sub-01_task-{task}_bold.nii.gz"
        )
    output_dir = Path(output_dir).resolve()
    preproc_dir = output_dir / "preproc"
    plan = Plan(route="raw", space=BUILTIN_SPACE, bids_dir=str(bids_dir), output_dir=str(output_dir))
    for sub in subjects:
        bolds = layout.get(subject=sub, task=task, suffix="bold", datatype="func",
                           extension=list(NIFTI_EXTENSIONS))
        if not bolds:
            raise InputError(
                f"sub-{sub}: no resting-state BOLD with task-{task} in {bids_dir}/sub-{sub}; "
                "set `task` in the config to your task label"
            )
        t1ws = layout.get(subject=sub, suffix="T1w", datatype="anat", extension=list(NIFTI_EXTENSIONS))
        if not t1ws:
            raise InputError(f"sub-{sub}: no T1w image in {bids_dir}/sub-{sub}/**/anat; a T1w is required")
        for bf in sorted(bolds, key=lambda f: f.path):
            ents = bf.get_entities()
            session = ents.get("session")
            # Prefer a T1w of the same session, else the first T1w of the subject.
            same = [t for t in t1ws if t.get_entities().get("session") == session]
            t1w = sorted(same or t1ws, key=lambda f: f.path)[0]
            anat_prefix = str(Path(t1w.relpath).parent / _strip_ext(Path(t1w.path).name)[: -len("_T1w")])
            if anat_prefix not in plan.anat_jobs:
                check_t1w_header(t1w.path, t1w_tol_mm)
            plan.anat_jobs[anat_prefix] = t1w.path
            meta = dict(layout.get_metadata(bf.path))  # a plain dict: pybids' BIDSMetadata does not survive asdict()
            if "RepetitionTime" not in meta:
                raise InputError(
                    f"{Path(bf.path).name}: no RepetitionTime in its JSON sidecar; add it (seconds) to "
                    f"{_strip_ext(Path(bf.path).name)}.json"
                )
            t_r = check_repetition_time(meta["RepetitionTime"], bf.path)
            check_bold_header(bf.path, t_r, min_minutes)
            name = _strip_ext(Path(bf.path).name)[: -len("_bold")]
            run_prefix = str(Path(bf.relpath).parent / name)
            fieldmap = (find_fieldmap(layout, bf.path, meta, sub, session, bids_dir)
                        if distortion_correction == "auto" else None)
            plan.bold_jobs[run_prefix] = {"raw_bold": bf.path, "metadata": meta, "anat": anat_prefix,
                                          "fieldmap": fieldmap}
            out = preproc_bold_paths(preproc_dir, run_prefix)
            unit, subdir = _unit_of(sub, session, group_runs_by)
            run = RunInputs(name=name, bold=out["bold_mni"], mask=out["mask_mni"], confounds=out["confounds"],
                            boldref_mni=out["boldref_mni"], boldref_t1w=out["boldref_t1w"],
                            raw_bold=bf.path, t_r=t_r)
            if unit not in plan.units:
                plan.units[unit] = UnitInputs(unit=unit, subdir=subdir, subject=sub, session=session
                                              if group_runs_by == "session" else None, runs=[],
                                              anat=preproc_anat_paths(preproc_dir, anat_prefix),
                                              t1w_navigation=t1w.path)
            plan.units[unit].runs.append(run)
    return plan


# ----------------------------------------------------------------------------- fMRIPrep route


def find_fmriprep_dir(bids_dir, fmriprep_dir=None) -> Path | None:
    """The fMRIPrep derivatives folder: the one given, or ``BIDS_DIR/derivatives/fmriprep``."""
    if fmriprep_dir:
        p = Path(fmriprep_dir).resolve()
        if not p.is_dir():
            raise InputError(f"{p}: fMRIPrep derivatives folder not found; check --derivatives")
        return p
    p = Path(bids_dir).resolve() / "derivatives" / "fmriprep"
    return p if p.is_dir() else None


def _nifti(layout, **query) -> list:
    """pybids query for NIfTI files (``.nii.gz`` or ``.nii``), sorted by path."""
    return sorted(layout.get(extension=list(NIFTI_EXTENSIONS), **query), key=lambda f: getattr(f, "path", f))


ANY = object()   # in :meth:`SubjectFiles.siblings`: the entity may have any value or be absent


class SubjectFiles:
    """The indexed files of one subject with the entities pybids parsed from their names: one layout query,
    then matched in memory (a pybids query per sibling costs ~50 ms; this keeps planning fast)."""

    def __init__(self, layout, subject: str):
        self.files = [(Path(f.path), f.get_entities()) for f in layout.get(subject=subject)]

    def siblings(self, ref: Path, **changes) -> list[Path]:
        """Files in the folder of ``ref`` named with its entities, ``changes`` applied: a value sets an
        entity, None requires it absent, :data:`ANY` leaves it free; every other entity must be exactly
        ``ref``'s (so ``run-1`` never matches a file without a run). Sorted by path."""
        ents = next(e for p, e in self.files if p == Path(ref))
        want = {k: v for k, v in ents.items() if k != "extension"}
        want.update(changes)
        want = {k: v for k, v in want.items() if v is not None}
        found = []
        for path, have in self.files:
            if path.parent != Path(ref).parent:
                continue
            free = {k for k, v in want.items() if v is ANY}
            if set(have) - free == set(want) - free and all(have[k] == v for k, v in want.items() if v is not ANY):
                found.append(path)
        return sorted(found)


def _choose_space(layout, deriv: Path, subjects: list[str], space: str) -> tuple[str, str]:
    """(template space of the analysis, space of the BOLD files to read).

    The BOLD space is the template space, or ``T1w`` when fMRIPrep wrote the BOLD only in T1w space:
    it is then resampled into the template through the T1w->template transform that fMRIPrep
    writes beside the T1w (a second interpolation, reported in the sidecar).
    """
    names = {f.get_entities().get("space")
             for f in _nifti(layout, subject=subjects, datatype="func", desc="preproc", suffix="bold")}
    if space != "auto":
        return space, (space if space in names or "T1w" not in names else "T1w")
    for candidate in FMRIPREP_SPACES:
        if candidate in names:
            return candidate, candidate
    if "T1w" in names:
        transforms = {f.get_entities().get("to")
                      for f in layout.get(subject=subjects, datatype="anat", suffix="xfm", mode="image",
                                          extension=".h5", **{"from": "T1w"})}
        for candidate in FMRIPREP_SPACES:
            if candidate in transforms:
                return candidate, "T1w"
        raise InputError(
            f"{deriv}: the BOLD runs are only in T1w space and there is no *_from-T1w_to-<MNI>_mode-image_xfm.h5 "
            f"({', '.join(FMRIPREP_SPACES)}) to take them to a template; rerun fMRIPrep with --output-spaces "
            "MNI152NLin2009cAsym:res-2")
    raise InputError(
        f"{deriv}: no preprocessed BOLD in an MNI space ({', '.join(FMRIPREP_SPACES)}); found spaces "
        f"{sorted(n for n in names if n) or 'none'}; rerun fMRIPrep with --output-spaces "
        "MNI152NLin2009cAsym:res-2"
    )


def _require(found: list, expected: Path, what: str, fix: str) -> str:
    """The first file found, or an error naming the file fMRIPrep would have written (``expected``)."""
    if not found:
        raise InputError(f"{expected.name}: {what} not found in {expected.parent}; {fix}")
    return str(found[0])


def _fmriprep_anat(layout, files: SubjectFiles, deriv: Path, sub: str, session: str | None, space: str) -> dict:
    from bids.layout import Query

    # fMRIPrep writes a subject-level anat folder, or a session one for single-session data.
    t1ws = [Path(f) for f in _nifti(layout, subject=sub, datatype="anat", desc="preproc", suffix="T1w",
                                    space=Query.NONE, return_type="file")]
    folders = ([deriv / f"sub-{sub}" / f"ses-{session}" / "anat"] if session else []) + [deriv / f"sub-{sub}" / "anat"]
    candidates = [f for folder in folders for f in t1ws if f.parent == folder]
    if not candidates:
        raise InputError(
            f"sub-{sub}: no *_desc-preproc_T1w.nii.gz (T1w space) in {deriv}/sub-{sub}/anat; "
            "tmstarget needs fMRIPrep's anatomical outputs (do not use --anat-only=False with "
            "--fs-no-reconall removed outputs)"
        )
    t1w = candidates[0]
    prefix = t1w.name[: t1w.name.index("_desc-preproc_T1w")]    # for the names in messages
    d = t1w.parent
    fix = f"rerun fMRIPrep with --output-spaces {space}"
    gz = ".nii.gz"

    def xfm(source, target):
        return files.siblings(t1w, desc=None, suffix="xfm", extension=".h5", mode="image", **{"from": source, "to": target})

    anat = {
        "preproc_t1w": str(t1w),
        "brain_mask": _require(files.siblings(t1w, desc="brain", suffix="mask", extension=gz),
                               d / f"{prefix}_desc-brain_mask.nii.gz", "T1w brain mask", "rerun fMRIPrep"),
    }
    for label in ("GM", "WM", "CSF"):   # optional: listed where fMRIPrep writes them
        found = files.siblings(t1w, desc=None, label=label, suffix="probseg", extension=gz)
        anat[f"{label.lower()}_probseg"] = str(found[0] if found else d / f"{prefix}_label-{label}_probseg.nii.gz")
    anat["xfm_t1w_to_mni"] = _require(xfm("T1w", space), d / f"{prefix}_from-T1w_to-{space}_mode-image_xfm.h5",
                                      "T1w->MNI transform", fix)
    anat["xfm_mni_to_t1w"] = _require(xfm(space, "T1w"), d / f"{prefix}_from-{space}_to-T1w_mode-image_xfm.h5",
                                      "MNI->T1w transform", fix)
    mni_t1 = files.siblings(t1w, space=space, res=ANY, extension=gz)
    anat["t1w_mni"] = str(mni_t1[0]) if mni_t1 else None
    return anat


def _one_per_run(files: list) -> list:
    """One BOLD per run: res-2 preferred when fMRIPrep wrote several resolutions; sorted by name."""
    by_run: dict[str, object] = {}
    for f in files:
        res = f.get_entities().get("res")
        key = Path(f.path).name.replace(f"_res-{res}", "") if res is not None else Path(f.path).name
        if key not in by_run or str(res) == "2":
            by_run[key] = f
    return [by_run[key] for key in sorted(by_run)]


def plan_fmriprep(bids_dir, fmriprep_dir, output_dir, task="rest", participant_label=(),
                  group_runs_by="subject", space="auto", min_minutes: float = 0.0,
                  t1w_tol_mm: float = 0.1) -> Plan:
    """Plan from fMRIPrep derivatives (MNI-space BOLD, confounds, T1w and transforms).

    Every file is found with pybids queries on a derivatives layout that indexes only the requested
    subjects' ``anat/`` and ``func/`` folders; a missing confounds file, mask or transform is an
    error naming the file fMRIPrep would have written.
    """
    deriv = Path(fmriprep_dir).resolve()
    check_subject_folders(deriv)
    subjects = _check_participants(_subject_folders(deriv), list(participant_label), str(deriv))
    layout = _layout(deriv, derivative=True, subjects=subjects if participant_label else None)
    space, bold_space = _choose_space(layout, deriv, subjects, space)
    output_dir = Path(output_dir).resolve()
    plan = Plan(route="fmriprep", space=space, bids_dir=str(Path(bids_dir).resolve()) if bids_dir else "",
                output_dir=str(output_dir), derivatives_dir=str(deriv))
    func_fix = "copy the complete fMRIPrep func folder"
    for sub in subjects:
        files = _nifti(layout, subject=sub, task=task, space=bold_space, desc="preproc", suffix="bold")
        if not files:
            raise InputError(
                f"sub-{sub}: no task-{task} *_space-{bold_space}_desc-preproc_bold.nii.gz in {deriv}/sub-{sub}; "
                f"rerun fMRIPrep with --output-spaces {space}:res-2 or set `task`"
            )
        found = SubjectFiles(layout, sub)
        for bold_file in _one_per_run(files):
            bold = Path(bold_file.path)
            stem = bold.name[: bold.name.index("_space-")]      # the run's name: entities before the space
            ses = bold_file.get_entities().get("session")
            d = bold.parent
            confounds = (found.siblings(bold, space=None, res=None, desc="confounds", suffix="timeseries", extension=".tsv")
                         or found.siblings(bold, space=None, res=None, desc="confounds", suffix="regressors",
                                           extension=".tsv"))
            confounds = _require(confounds, d / f"{stem}_desc-confounds_timeseries.tsv",
                                 "confounds file (*_desc-confounds_timeseries.tsv)", func_fix)
            spaced = bold.name[: bold.name.index("_desc-preproc_bold")]
            mask = _require(found.siblings(bold, desc="brain", suffix="mask", extension=".nii.gz"),
                            d / f"{spaced}_desc-brain_mask.nii.gz", "BOLD brain mask", func_fix)
            boldref = found.siblings(bold, desc=None, suffix="boldref", extension=".nii.gz")
            boldref_t1w = found.siblings(bold, space="T1w", res=None, desc=None, suffix="boldref", extension=".nii.gz")
            t_r = layout.get_metadata(str(bold)).get("RepetitionTime")
            t_r = None if t_r is None else check_repetition_time(t_r, bold)
            check_bold_header(bold, t_r, min_minutes)
            run = RunInputs(name=stem, bold=str(bold), mask=mask, confounds=confounds,
                            boldref_mni=str(boldref[0]) if boldref else None,
                            boldref_t1w=str(boldref_t1w[0]) if boldref_t1w else None,
                            t_r=t_r)
            unit, subdir = _unit_of(sub, ses, group_runs_by)
            if unit in plan.units:
                anat = plan.units[unit].anat
            else:
                anat = _fmriprep_anat(layout, found, deriv, sub, ses, space)
                check_t1w_header(anat["preproc_t1w"], t1w_tol_mm)
            if bold_space == "T1w":
                # resampled into the template by rule t1w_bold_to_template (work folder, fMRIPrep naming)
                prefix = f"{subdir}/{stem}_space-{space}"
                run.t1w_bold, run.t1w_mask = run.bold, run.mask
                run.bold = str(output_dir / "work" / f"{prefix}_desc-preproc_bold.nii.gz")
                run.mask = str(output_dir / "work" / f"{prefix}_desc-brain_mask.nii.gz")
                run.boldref_mni = None
                plan.t1w_bold_jobs[prefix] = {"t1w_bold": run.t1w_bold, "t1w_mask": run.t1w_mask,
                                              "xfm_t1w_to_mni": anat["xfm_t1w_to_mni"], "t_r": t_r}
            if unit not in plan.units:
                plan.units[unit] = UnitInputs(unit=unit, subdir=subdir, subject=sub,
                                              session=ses if group_runs_by == "session" else None,
                                              runs=[], anat=anat, t1w_navigation=anat["preproc_t1w"])
            plan.units[unit].runs.append(run)
    return plan


def make_plan(config: dict) -> Plan:
    """Choose the route (``input: auto|raw|fmriprep``) and plan it from a validated config."""
    bids_dir = config.get("bids_dir")
    output_dir = config.get("output_dir")
    if not output_dir:
        raise InputError("no output_dir given; pass OUTPUT_DIR on the command line or set output_dir")
    common = dict(task=config.get("task", "rest"), participant_label=config.get("participant_label") or [],
                  group_runs_by=config.get("group_runs_by", "subject"),
                  min_minutes=float(config.get("denoising", {}).get("min_retained_minutes", 0.0)),
                  t1w_tol_mm=float(config.get("native", {}).get("qform_sform_tol_mm", 0.1)))
    route = config.get("input", "auto")
    fmriprep_dir = None
    if route in ("auto", "fmriprep"):
        if not bids_dir and not config.get("fmriprep_dir"):
            raise InputError("no bids_dir given; pass BIDS_DIR on the command line")
        fmriprep_dir = find_fmriprep_dir(bids_dir, config.get("fmriprep_dir"))
        if route == "fmriprep" and fmriprep_dir is None:
            raise InputError(
                f"input: fmriprep but no fMRIPrep derivatives at {bids_dir}/derivatives/fmriprep; "
                "pass --derivatives PATH"
            )
    check_output_dir(output_dir, bids_dir, fmriprep_dir)
    if fmriprep_dir is not None:
        log.info("using fMRIPrep derivatives in %s", fmriprep_dir)
        return plan_fmriprep(bids_dir, fmriprep_dir, output_dir, space=config.get("space", "auto"), **common)
    if not bids_dir:
        raise InputError("no bids_dir given; pass BIDS_DIR on the command line")
    plan = plan_raw(bids_dir, output_dir, **common,
                    distortion_correction=with_defaults("preprocessing", config.get("preprocessing"))[
                        "distortion_correction"])
    if config.get("space", "auto") not in ("auto", BUILTIN_SPACE):
        raise InputError(
            f"space: {config['space']} is not available with the built-in preprocessing, which writes "
            f"{BUILTIN_SPACE}; set space: auto"
        )
    return plan
