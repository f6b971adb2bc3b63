"""Shared fixtures: tiny BIDS and fMRIPrep trees built from generated data."""

from __future__ import annotations

import json
import os
from pathlib import Path

# ITK reads its thread count once, at its first filter: pin it before anything imports ants, so that
# registrations run inside the test process are as deterministic as the workflow's jobs (which pin it
# at their start, tmstarget.preproc.registration.make_ants_repeatable). Without this a test process that had
# already run a multi-threaded ITK filter gave a real T1w->template correlation of 0.58 instead of 0.76.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import nibabel as nib
import numpy as np
import pytest

FMRIPREP_SPACE = "MNI152NLin2009cAsym"


def write_nifti(path: Path, data, affine=None, tr=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine)
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        zooms = list(img.header.get_zooms())
        zooms[3] = tr
        img.header.set_zooms(zooms)
    nib.save(img, path)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def make_raw_bids(root: Path, subjects=("01",), sessions=(None,), runs=(None,), n_vols=20, tr=2.0) -> Path:
    """A minimal raw BIDS dataset with small random images (for input discovery, not science)."""
    rng = np.random.default_rng(0)
    write_json(root / "dataset_description.json", {"Name": "tiny", "BIDSVersion": "1.9.0"})
    for sub in subjects:
        for ses in sessions:
            base = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "")
            prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            write_nifti(base / "anat" / f"{prefix}_T1w.nii.gz", rng.random((8, 8, 8)), np.eye(4))
            for run in runs:
                name = f"{prefix}_task-rest" + (f"_run-{run}" if run else "") + "_bold"
                write_nifti(base / "func" / f"{name}.nii.gz", rng.random((6, 6, 6, n_vols)), tr=tr)
                write_json(base / "func" / f"{name}.json", {"RepetitionTime": tr, "TaskName": "rest"})
    return root


def make_fmriprep_tree(root: Path, subjects=("01",), runs=(None,), n_vols=20, space=FMRIPREP_SPACE,
                       with_xfm=True) -> Path:
    """A miniature fMRIPrep output tree with fMRIPrep's exact naming (contents are small stand-ins)."""
    rng = np.random.default_rng(1)
    write_json(root / "dataset_description.json", {
        "Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]})
    mni_affine = np.array([[2.0, 0, 0, -96], [0, 2, 0, -132], [0, 0, 2, -78], [0, 0, 0, 1]])
    for sub in subjects:
        anat = root / f"sub-{sub}" / "anat"
        write_nifti(anat / f"sub-{sub}_desc-preproc_T1w.nii.gz", rng.random((8, 8, 8)), np.eye(4))
        write_nifti(anat / f"sub-{sub}_desc-brain_mask.nii.gz", np.ones((8, 8, 8)), np.eye(4))
        for lab in ("GM", "WM", "CSF"):
            write_nifti(anat / f"sub-{sub}_label-{lab}_probseg.nii.gz", rng.random((8, 8, 8)), np.eye(4))
        if with_xfm:
            for name in (f"from-T1w_to-{space}", f"from-{space}_to-T1w"):
                (anat / f"sub-{sub}_{name}_mode-image_xfm.h5").write_bytes(b"\x89HDF\r\n\x1a\nstand-in")  # HDF5 signature: passes the preflight header check
        func = root / f"sub-{sub}" / "func"
        for run in runs:
            stem = f"sub-{sub}_task-rest" + (f"_run-{run}" if run else "")
            write_nifti(func / f"{stem}_space-{space}_res-2_desc-preproc_bold.nii.gz",
                        rng.random((6, 6, 6, n_vols)), mni_affine, tr=2.0)
            write_json(func / f"{stem}_space-{space}_res-2_desc-preproc_bold.json", {"RepetitionTime": 2.0})
            write_nifti(func / f"{stem}_space-{space}_res-2_desc-brain_mask.nii.gz", np.ones((6, 6, 6)), mni_affine)
            write_nifti(func / f"{stem}_space-{space}_res-2_boldref.nii.gz", rng.random((6, 6, 6)), mni_affine)
            cols = ["global_signal", "csf", "white_matter", "trans_x", "framewise_displacement"]
            lines = ["\t".join(cols)] + ["\t".join("n/a" if (i == 0 and c == "framewise_displacement") else "0.1"
                                                   for c in cols) for i in range(n_vols)]
            (func / f"{stem}_desc-confounds_timeseries.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_bids(tmp_path):
    return make_raw_bids(tmp_path / "bids")


@pytest.fixture
def tiny_fmriprep(tmp_path):
    bids = make_raw_bids(tmp_path / "bids")
    make_fmriprep_tree(bids / "derivatives" / "fmriprep")
    return bids


DEMO_SUBJECTS = ("01", "02")


def run_tmstarget_cli(*args, check=True):
    """``python -m tmstarget.run.cli ARGS`` in a subprocess; with ``check``, a failure shows its output."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "tmstarget.run.cli", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def demo_workflow(tmp_path_factory):
    """The demo dataset (two subjects) through the whole raw-BIDS workflow, run ONCE per test session.

    The most expensive thing the suite does; every test that needs built-in preprocessing outputs of
    the demo (workflow, preprocessing, spaces, registration checks) reads them from here instead of
    preprocessing the demo again. Returns a dict: ``bids``, ``out``, ``result`` (the CLI's
    CompletedProcess), ``preproc`` (OUT/preproc, fMRIPrep layout).
    """
    from tmstarget.config.settings import REPO_ROOT
    from tmstarget.demo.core import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_workflow")
    bids = make_demo_dataset(root / "bids", n_subjects=len(DEMO_SUBJECTS), seed=0)
    out = root / "out"
    result = run_tmstarget_cli(bids, out, "group", "--config", REPO_ROOT / "config" / "demo.yaml", "--cores", 2)
    return {"bids": bids, "out": out, "result": result, "preproc": out / "preproc"}


@pytest.fixture(scope="module")
def small_head():
    """MNI template (brain) downsampled to 4 mm: array (X, Y, Z) and its RAS affine (a small head for
    the preprocessing tests)."""
    from scipy import ndimage

    from tmstarget.preproc import templates as ptpl

    tpl = ptpl.load_template(2)["t1"]
    data = ndimage.zoom(tpl.get_fdata(), 0.5, order=1).astype(np.float32)
    affine = tpl.affine.copy()
    affine[:3, :3] *= 2
    return data * 1000, affine


# ---- running the suite on two workers (pytest-xdist, `make test` uses `-n 2 --dist loadgroup`) ----
# Each worker process builds its own session fixtures, so every file whose tests read the shared demo
# workflow run (the `demo_workflow` fixture, four minutes of CPU) goes to ONE worker as one group; every
# other file is a group of its own, so that module-scoped fixtures are built once as well. The groups
# that take longest go first (in alternation to the two workers, `--no-loadscope-reorder` keeps this
# order), so the short files fill in behind them and neither worker idles at the end.
LONGEST_GROUPS_FIRST = ("demo_workflow", "test_realdata", "test_resilience", "test_slurm", "test_report_browser")


def _xdist_group_of(items_in_file) -> str:
    if any("demo_workflow" in item.fixturenames for item in items_in_file):
        return "demo_workflow"
    return items_in_file[0].path.stem


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    by_file: dict = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    group_of = {path: _xdist_group_of(file_items) for path, file_items in by_file.items()}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of[item.path]))

    def rank(item):
        group = group_of[item.path]
        return LONGEST_GROUPS_FIRST.index(group) if group in LONGEST_GROUPS_FIRST else len(LONGEST_GROUPS_FIRST)

    items.sort(key=rank)  # stable: within a group and among the rest, the collected order is kept


def pytest_configure(config):
    """Refuse ``--dist loadgroup`` where it silently does not group. pytest-xdist 3.8 passes a test's
    group by appending ``@group`` to its node id, which pytest 9.2 ignores (pytest-dev/pytest-xdist#1386;
    pyproject.toml pins pytest below 9.2 for this): the tests would be dealt out one by one and each
    worker would run the four-minute demo workflow itself."""
    from importlib.metadata import PackageNotFoundError, version

    if getattr(config.option, "dist", "no") != "loadgroup":
        return
    try:
        xdist_version = version("pytest-xdist")
    except PackageNotFoundError:
        return

    def release(text):
        return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())

    if release(pytest.__version__) >= (9, 2) and release(xdist_version) <= (3, 8):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with pytest-xdist {xdist_version}: --dist loadgroup would not group "
            "the tests (pytest-dev/pytest-xdist#1386) and every worker would rerun the demo workflow; "
            "install the pinned test extra (pip install -e '.[test]') or run without -n")
