"""Shared fixtures (tiny BIDS and fMRIPrep trees, the demo workflow run once per session) and the
suite's grouping on xdist workers. The builders themselves live in tests/builders/: tests import them
from there, never from conftest or from another test module."""

from __future__ import annotations

import os

# ITK reads its thread count once, at its first filter: pin it before anything imports ants, so that
# registrations run inside the test process are as deterministic as the workflow's jobs (which pin it
# at their start, tmstarget.preproc.registration.make_ants_repeatable). Without this a test process that had
# already run a multi-threaded ITK filter gave a real T1w->template correlation of 0.58 instead of 0.76.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import numpy as np
import pytest

from builders.bids import make_fmriprep_tree, make_raw_bids
from builders.workflow import DEMO_SUBJECTS, run_tmstarget_cli


@pytest.fixture
def tiny_bids(tmp_path):
    return make_raw_bids(tmp_path / "bids")


@pytest.fixture
def tiny_fmriprep(tmp_path):
    bids = make_raw_bids(tmp_path / "bids")
    make_fmriprep_tree(bids / "derivatives" / "fmriprep")
    return bids


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
