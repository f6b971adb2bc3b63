"""BIDS-Derivatives bookkeeping: output names, dataset_description.json, provenance.

BIDS has no suffix for seed maps or TMS targets yet; tmstarget uses XCP-D-like names
(``_stat-fisherz_boldmap``) and the NIBS-BIDS draft's ``_markers.tsv`` / ``_coordsystem.json``, lists them
in the derivative's README and hides them from the validator with ``.bidsignore``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

from tmstarget import __version__
from tmstarget.io.files import atomic_path, write_json

CODE_URL = "https://github.com/tmstarget/tmstarget"
PIPELINE_NAME = "tmstarget"

# One place for every output name of the tmstarget derivative (relative to OUTPUT_DIR/tmstarget).
# Fields: {subdir} sub-01[/ses-1], {unit} sub-01[_ses-1], {task}, {space}, {strategy} (e.g. Fox).
OUTPUT_PATTERNS = {
    "denoise_qc": "{subdir}/func/{unit}_task-{task}_desc-{strategy}_qc.json",
    "seed_mask": "{subdir}/func/{unit}_space-{space}_desc-sgacc_mask.nii.gz",
    "search_mask": "{subdir}/func/{unit}_space-{space}_desc-search_mask.nii.gz",
    "masks_json": "{subdir}/func/{unit}_space-{space}_desc-regions_mask.json",
    "r_map": "{subdir}/func/{unit}_task-{task}_space-{space}_desc-sgacc{strategy}_stat-r_boldmap.nii.gz",
    # stat-fisherz: Fisher z-transformed Pearson r (arctanh r), not a z statistic (the name used beside
    # XCP-D's stat-pearsoncorrelation for that transform; BIDS stats maps use stat-z for z statistics)
    "fisherz_map": "{subdir}/func/{unit}_task-{task}_space-{space}_desc-sgacc{strategy}_stat-fisherz_boldmap.nii.gz",
    "fisherz_json": "{subdir}/func/{unit}_task-{task}_space-{space}_desc-sgacc{strategy}_stat-fisherz_boldmap.json",
    "seed_json": "{subdir}/func/{unit}_task-{task}_space-{space}_desc-sgacc{strategy}_stat-r_boldmap.json",
    "target_json": "{subdir}/func/{unit}_task-{task}_space-{space}_desc-target_markers.json",
    "r_map_t1w": "{subdir}/anat/{unit}_task-{task}_space-T1w_desc-sgacc{strategy}_stat-r_boldmap.nii.gz",
    "fisherz_map_t1w": "{subdir}/anat/{unit}_task-{task}_space-T1w_desc-sgacc{strategy}_stat-fisherz_boldmap.nii.gz",
    "maps_t1w_json": "{subdir}/anat/{unit}_task-{task}_space-T1w_desc-sgacc{strategy}_stat-fisherz_boldmap.json",
    "native_tsv": "{subdir}/anat/{unit}_space-T1w_desc-target_markers.tsv",
    "native_json": "{subdir}/anat/{unit}_space-T1w_desc-target_markers.json",
    "native_coordsystem": "{subdir}/anat/{unit}_space-T1w_coordsystem.json",
    "native_sphere": "{subdir}/anat/{unit}_space-T1w_desc-target_mask.nii.gz",
    "native_sphere_json": "{subdir}/anat/{unit}_space-T1w_desc-target_mask.json",
    # one folder per unit; file names inside: tmstarget.navigation.exports.export_names
    "nav_dir": "{subdir}/nav",
    "verdict": "{subdir}/{unit}_desc-verdict_qc.json",
    "registration_qc": "{subdir}/{unit}_desc-registration_qc.json",
    "report": "{unit}.html",
}

BIDSIGNORE = """\
# tmstarget outputs that BIDS has no suffix for yet (see README)
*_boldmap.nii.gz
*_boldmap.json
*_qc.json
*_markers.tsv
*_markers.json
*_coordsystem.json
*_mask.json
nav/
*.html
group_targets.tsv
"""

README = """\
# tmstarget derivatives

Individualized sgACC-anticorrelation TMS targets (Fox et al. 2012 method), research coordinates.

| file | content |
| --- | --- |
| `*_desc-<strategy>_qc.json` | denoising QC: motion, censored volumes, minutes kept |
| `*_space-<tpl>_desc-sgacc_mask.nii.gz`, `*_desc-search_mask.nii.gz` | seed and search region as used |
| `*_desc-sgacc<Strategy>_stat-r_boldmap.nii.gz` / `stat-fisherz` | seed correlation: Pearson r / Fisher z-transformed r (arctanh r, not a z statistic) |
| `*_space-<tpl>_desc-target_markers.json` | the target in template (MNI) space with all parameters |
| `anat/*_space-T1w_desc-target_markers.tsv/.json` | target, scalp entry and coil pose in T1w world RAS mm |
| `anat/*_space-T1w_desc-target_mask.nii.gz` (+ `.json`) | sphere at the target in the T1w grid (mm; the JSON names the T1w and its SHA-256) |
| `*_desc-verdict_qc.json` | the unit's verdict: PASS / WARN / FAIL, reasons, action, every QC finding and threshold |
| `nav/*` | Brainsight, Localite (`nav/localite/InstrumentMarkers/`, `nav/localite/EntryTarget/`), ANT visor2 and 3D Slicer imports; `nav/README.txt` names the T1w to load (only `nav/NOT_EXPORTED.txt` when the verdict is FAIL) |
| `sub-*.html`, `group.html`, `group_targets.tsv` | QC reports |
"""


def output_path(kind: str, root, **fields) -> str:
    """Absolute path of one output of the tmstarget derivative (see :data:`OUTPUT_PATTERNS`)."""
    return str(Path(root) / OUTPUT_PATTERNS[kind].format(**fields))


def software_versions() -> dict:
    """Versions of tmstarget and the libraries that shape its numbers."""
    versions = {"tmstarget": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "nibabel", "nilearn", "pandas", "antspyx", "snakemake", "pybids"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def bids_uri(path, dataset_root, dataset_name: str) -> str:
    """``bids:<dataset>:<relative path>`` for a file inside a dataset, else the file name only.

    Absolute paths are never written into sidecars (they can name a patient or an institution).
    """
    path = Path(path).resolve()
    try:
        rel = path.relative_to(Path(dataset_root).resolve())
    except ValueError:
        return f"bids:{dataset_name}:{path.name}"
    return f"bids:{dataset_name}:{rel.as_posix()}"


def dataset_description(source_datasets: dict[str, str] | None = None) -> dict:
    desc = {
        "Name": "tmstarget: individualized sgACC-anticorrelation TMS targets",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}],
    }
    if source_datasets:
        desc["DatasetLinks"] = {k: Path(v).name for k, v in source_datasets.items()}
    return desc


def write_dataset_files(out_root, source_datasets: dict[str, str] | None = None,
                        name: str = "tmstarget", generated_by: str = PIPELINE_NAME) -> None:
    """Write ``dataset_description.json``, ``.bidsignore`` and ``README`` of a derivative folder."""
    out_root = Path(out_root)
    desc = dataset_description(source_datasets)
    if name != "tmstarget":
        desc["Name"] = name
        desc["GeneratedBy"][0]["Name"] = generated_by
    write_json(desc, out_root / "dataset_description.json")
    if name == "tmstarget":
        for fname, text in ((".bidsignore", BIDSIGNORE), ("README.md", README)):
            with atomic_path(out_root / fname) as tmp:
                tmp.write_text(text)


def relpath(path, start) -> str:
    return os.path.relpath(path, start)
