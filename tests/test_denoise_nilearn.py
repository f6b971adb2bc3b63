"""Denoising against nilearn, which computes the same things (issue 22 item 4).

- Temporal cleaning. ``denoise_runs`` (the operator of :func:`tmstarget.denoise.temporal.temporal_operator`
  applied per run to voxel chunks in float32, then z-scored) equals
  ``nilearn.signal.clean(..., sample_mask=..., filter="butterworth", runs=..., standardize="zscore_sample")``
  on two demo-length runs with the demo's motion jerks: max abs difference < ``TOL_CLEAN`` = 2e-5
  (measured 4.5e-6 with 6,000 and 4.8e-6 with 30,000 voxels per run: float32 rounding of z-scores);
  on the mini fMRIPrep tree < ``TOL_CLEAN`` too (slow test).
  Ours is kept because it cleans a run chunk by chunk (one (T, T) matrix built once; nilearn holds
  several float64 copies of the whole run), and because nilearn 0.13.1 leaves some censored volumes
  un-interpolated (``_interpolate_volumes`` indexes with ``~sample_mask`` on integer indices):
  :func:`test_nilearn_interpolation_bug_is_why_ours_is_kept` shows the bug and that ours equals
  nilearn with it fixed. Each comparison asserts that its censoring avoids the bug.
- Confound selection. :func:`tmstarget.denoise.confounds.confound_matrix` equals
  ``nilearn.interfaces.fmriprep.load_confounds`` column by column on an fMRIPrep-style table (max abs
  difference 0), and the censoring mask equals its ``sample_mask`` with ``scrub=0``. Ours is kept because
  load_confounds cannot read the tables the workflow must accept: the built-in preprocessing writes no
  ``*_derivative1``/``*_power2`` columns (ours computes them from their base column, load_confounds
  raises), and it finds the table only from the BOLD file name, while the workflow passes its path.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import signal as nl_signal
from nilearn.interfaces.fmriprep import load_confounds

from builders.nifti import write_json, write_nifti
from tmstarget.demo.bold import band_limited_signal, synthesize_motion
from tmstarget.preproc.confounds import framewise_displacement
from tmstarget.denoise.confounds import MOTION_BASE, censoring_mask, confound_matrix, dummy_volume_count
from tmstarget.io.tables import read_confounds
from tmstarget.denoise.run import denoise_runs
from tmstarget.denoise.strategy import default_strategies

FOX = default_strategies()["fox"]
ACOMPCOR = default_strategies()["acompcor"]
T_R = 2.0
N_DUMMY = 3            # as the demo (tmstarget.demo.core.N_DUMMY_SCANS)
TOL_CLEAN = 2e-5       # max abs difference of the z-scored cleaned series (measured: 4.8e-6)


# ----------------------------------------------------------------------------- an fMRIPrep-style run


def fmriprep_confounds(motion: np.ndarray, tissue: np.ndarray, compcor: np.ndarray, n_dummy: int,
                       fd_mm: np.ndarray | None = None, derived: bool = True) -> pd.DataFrame:
    """fMRIPrep's confound columns (``n/a`` first rows of derivatives and FD become NaN)."""
    def deriv(x):
        return np.r_[np.nan, np.diff(x)]

    cols = {}
    for j, name in enumerate(MOTION_BASE):
        cols[name] = motion[:, j]
    for j, name in enumerate(("global_signal", "white_matter", "csf")):
        cols[name] = tissue[:, j]
    if derived:
        for name in list(cols):
            d = deriv(cols[name])
            cols[f"{name}_derivative1"], cols[f"{name}_power2"] = d, cols[name] ** 2
            cols[f"{name}_derivative1_power2"] = d ** 2
    fd = framewise_displacement(motion) if fd_mm is None else fd_mm
    cols["framewise_displacement"] = np.r_[np.nan, np.asarray(fd, float)[1:]]
    cols["std_dvars"] = np.r_[np.nan, np.ones(len(motion) - 1)]
    for j in range(compcor.shape[1]):
        cols[f"a_comp_cor_{j:02d}"] = compcor[:, j]
    for j in range(n_dummy):
        cols[f"non_steady_state_outlier{j:02d}"] = (np.arange(len(motion)) == j).astype(float)
    return pd.DataFrame(cols)


def write_fmriprep_run(root: Path, name: str, data_tv: np.ndarray, shape, confounds: pd.DataFrame,
                       compcor_masks=(), ext: str = ".nii.gz") -> dict:
    """``func/`` files of one run in fMRIPrep's names: BOLD (every voxel in the mask), mask, confounds
    TSV and its JSON (the ``Mask`` of each ``a_comp_cor_XX``); returns the run dict of denoise_runs."""
    stem = f"{name}_space-MNI152NLin2009cAsym_res-2"
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    bold = write_nifti(root / f"{stem}_desc-preproc_bold{ext}", data_tv.T.reshape(tuple(shape) + (-1,)), affine, T_R)
    write_json(root / f"{stem}_desc-preproc_bold.json", {"RepetitionTime": T_R})
    mask = write_nifti(root / f"{stem}_desc-brain_mask.nii.gz", np.ones(shape), affine)
    tsv = root / f"{name}_desc-confounds_timeseries.tsv"
    confounds.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    write_json(tsv.with_suffix(".json"), {f"a_comp_cor_{j:02d}": {"Mask": m, "Retained": True}
                                          for j, m in enumerate(compcor_masks)})
    return {"bold": str(bold), "mask": str(mask), "confounds": str(tsv)}


def demo_like_run(root: Path, name: str, seed: int, n_vox: int = 30_000, n_steady: int = 200):
    """A demo-length run (200 steady volumes + 3 dummies, TR 2 s, the demo's motion with its jerks):
    band-limited voxel signals, drift, confound mixes, and spikes at the jerks; ``n_vox`` voxels."""
    rng = np.random.default_rng(seed)
    n = n_steady + N_DUMMY
    motion, jerks = synthesize_motion(rng, n, N_DUMMY, T_R)
    tissue = band_limited_signal(rng, n, T_R, 0.0, 0.2, n_signals=3)
    compcor = band_limited_signal(rng, n, T_R, 0.0, 0.2, n_signals=8)
    latent = band_limited_signal(rng, n, T_R, n_signals=12)
    data = (1000.0 + latent @ rng.normal(0, 5, (12, n_vox)) + rng.normal(0, 3, (n, n_vox))
            + np.linspace(-1, 1, n)[:, None] * rng.normal(0, 10, n_vox)
            + np.column_stack([tissue, motion[:, :3]]) @ rng.normal(0, 2, (6, n_vox)))
    data[jerks] += 40.0
    data[:N_DUMMY] += 300.0
    shape = (n_vox // 1000, 40, 25)
    df = fmriprep_confounds(motion, tissue, compcor, N_DUMMY)
    return write_fmriprep_run(root, name, data.astype(np.float32), shape, df, ["WM"] * 3 + ["combined"] * 5,
                              ext=".nii")    # uncompressed: 24 MB of noise


def kept_after_dummies(df: pd.DataFrame, strategy: dict) -> tuple[int, np.ndarray]:
    """Leading dummies and the (T - dummies,) kept mask, as the denoise step censors."""
    n_dummy, flagged = dummy_volume_count(df)
    censored = censoring_mask(df["framewise_displacement"].to_numpy(), strategy["fd_threshold_mm"],
                              strategy["censor_before"], strategy["censor_after"]) | flagged
    return n_dummy, ~censored[n_dummy:]


def assert_nilearn_bug_not_triggered(kept: np.ndarray) -> None:
    """nilearn 0.13.1 interpolates censored volume j only if volume T-1-j is kept, and leaves censored
    volumes at the edges to ``extrapolate`` (not passed on with ``runs=``): avoid both."""
    censored = np.flatnonzero(~kept)
    assert kept[0] and kept[-1]
    assert kept[len(kept) - 1 - censored].all()


def nilearn_clean(runs: list[dict], strategy: dict, **extra) -> np.ndarray:
    """The runs cleaned by nilearn.signal.clean with ``runs=`` and one ``sample_mask`` per run."""
    signals, confounds, labels, masks = [], [], [], []
    for i, run in enumerate(runs):
        df = read_confounds(run["confounds"])
        n_dummy, kept = kept_after_dummies(df, strategy)
        assert_nilearn_bug_not_triggered(kept)
        mask = np.asarray(nib.load(run["mask"]).dataobj) > 0
        x = np.asarray(nib.load(run["bold"]).dataobj, dtype=np.float64)[mask].T[n_dummy:]
        signals.append(x)
        confounds.append(confound_matrix(df, strategy, run["confounds"])[0][n_dummy:])
        labels.append(np.full(len(x), i))
        masks.append(np.flatnonzero(kept))
    return nl_signal.clean(
        np.concatenate(signals), runs=np.concatenate(labels) if len(runs) > 1 else None,
        sample_mask=masks if len(runs) > 1 else masks[0], confounds=np.concatenate(confounds),
        detrend=strategy["detrend"], standardize="zscore_sample", standardize_confounds=True,
        filter="butterworth", low_pass=strategy["low_pass_hz"], high_pass=strategy["high_pass_hz"], t_r=T_R,
        **extra)


# ----------------------------------------------------------------------------- temporal cleaning


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("n_vox", [6_000, pytest.param(30_000, marks=pytest.mark.slow)])
def test_cleaning_matches_nilearn_on_demo_length_runs(tmp_path, n_vox):
    """Two demo-length runs (6,000 voxels each, and 30,000 in the slow run; the demo's jerks censored)
    concatenated: ours equals nilearn.signal.clean with runs= and a sample_mask per run (max abs
    difference < TOL_CLEAN)."""
    runs = [demo_like_run(tmp_path, f"sub-01_task-rest_run-{k + 1}", seed=k, n_vox=n_vox) for k in range(2)]
    strategy = {**FOX, "smoothing_fwhm_mm": None}
    ours = denoise_runs(runs, strategy, min_retained_minutes=1, warn_retained_minutes=1)
    ref = nilearn_clean(runs, strategy)
    assert ours.data_tv.shape == ref.shape == (sum(ours.run_lengths), n_vox)
    assert all(len(r["censored_volumes"]) >= 2 for r in ours.qc["runs"])     # the jerks were censored
    assert np.max(np.abs(ours.data_tv - ref)) < TOL_CLEAN


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_nilearn_interpolation_bug_is_why_ours_is_kept(tmp_path, monkeypatch):
    """Censored volumes 40 and T-1-40 (both spikes): nilearn 0.13.1 leaves them un-interpolated, so the
    filter spreads the spikes (difference > 0.05); with its ``_interpolate_volumes`` fixed (a boolean
    mask instead of ``~`` on indices) nilearn equals ours (< TOL_CLEAN)."""
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(3)
    n = 150 + N_DUMMY
    motion = np.cumsum(rng.normal(0, 0.01, (n, 6)), axis=0)
    fd = np.full(n, 0.1)
    spikes = np.array([40, n - N_DUMMY - 1 - 40]) + N_DUMMY
    fd[spikes] = 0.9
    tissue = band_limited_signal(rng, n, T_R, 0.0, 0.2, n_signals=3)
    data = 1000.0 + band_limited_signal(rng, n, T_R, n_signals=4) @ rng.normal(0, 5, (4, 60)) + rng.normal(0, 2, (n, 60))
    data[spikes] += 80.0
    df = fmriprep_confounds(motion, tissue, np.zeros((n, 0)), N_DUMMY, fd_mm=fd)
    run = write_fmriprep_run(tmp_path, "sub-01_task-rest", data.astype(np.float32), (3, 4, 5), df)
    strategy = {**FOX, "smoothing_fwhm_mm": None}
    ours = denoise_runs([run], strategy, min_retained_minutes=1, warn_retained_minutes=1).data_tv
    n_dummy, kept = kept_after_dummies(df, strategy)
    mask_img = nib.load(run["mask"])
    x = np.asarray(nib.load(run["bold"]).dataobj, dtype=np.float64)[np.asarray(mask_img.dataobj) > 0].T[n_dummy:]
    conf = confound_matrix(df, strategy, run["confounds"])[0][n_dummy:]

    def clean():
        return nl_signal.clean(x.copy(), sample_mask=np.flatnonzero(kept), confounds=conf, detrend=True,
                               standardize="zscore_sample", standardize_confounds=True, filter="butterworth",
                               low_pass=0.1, high_pass=0.01, t_r=T_R, extrapolate=False)

    assert np.max(np.abs(ours - clean())) > 0.05

    def interpolate_fixed(volumes, sample_mask, t_r, extrapolate):
        keep = np.zeros(len(volumes), bool)
        keep[sample_mask] = True
        times = np.arange(len(volumes)) * t_r
        volumes[~keep] = CubicSpline(times[keep], volumes[keep], extrapolate=extrapolate)(times)[~keep]
        return volumes

    monkeypatch.setattr(nl_signal, "_interpolate_volumes", interpolate_fixed)
    assert np.max(np.abs(ours - clean())) < TOL_CLEAN


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cleaning_matches_nilearn_on_mini_fmriprep_tree(tmp_path):
    """The mini fMRIPrep tree (tests/mini_fmriprep.py: 4 mm MNI BOLD, 160 volumes, its own confounds
    table without derivative columns) with two FD spikes planted: ours equals nilearn.signal.clean on
    the same confounds (< TOL_CLEAN); nilearn's load_confounds cannot read that table."""
    from builders.mini_fmriprep import make_mini_fmriprep

    func = make_mini_fmriprep(tmp_path / "fmriprep") / "sub-01" / "func"
    run = {"bold": str(next(func.glob("*_desc-preproc_bold.nii.gz"))),
           "mask": str(next(func.glob("*_desc-brain_mask.nii.gz"))),
           "confounds": str(next(func.glob("*_desc-confounds_timeseries.tsv")))}
    df = read_confounds(run["confounds"])
    df.loc[[50, 101], "framewise_displacement"] = 0.9
    df.to_csv(run["confounds"], sep="\t", index=False, na_rep="n/a")
    with pytest.raises(ValueError, match="derivative1|power2"):
        load_confounds(run["bold"], strategy=("motion",), motion="full")
    for strategy in ({**FOX, "smoothing_fwhm_mm": None}, {**ACOMPCOR, "smoothing_fwhm_mm": None}):
        ours = denoise_runs([run], strategy, min_retained_minutes=1, warn_retained_minutes=1)
        assert ours.qc["runs"][0]["censored_volumes"] == [50, 101]
        assert np.max(np.abs(ours.data_tv - nilearn_clean([run], strategy, extrapolate=False))) < TOL_CLEAN


# ----------------------------------------------------------------------------- confound selection


SELECTIONS = [   # (our strategy keys, the same selection in load_confounds' words; with compcor it
                 # requires high_pass, which adds nothing here: the table has no cosine_XX columns)
    (dict(motion=24, wm_csf=True, global_signal=True, derivatives=False, acompcor=0),
     dict(strategy=("motion", "wm_csf", "global_signal"), motion="full", wm_csf="basic", global_signal="basic")),
    (dict(motion=24, wm_csf=False, global_signal=False, derivatives=False, acompcor=5),
     dict(strategy=("motion", "compcor", "high_pass"), motion="full", compcor="anat_combined", n_compcor=5)),
    (dict(motion=6, wm_csf=True, global_signal=False, derivatives=True, acompcor=0),
     dict(strategy=("motion", "wm_csf"), motion="basic", wm_csf="derivatives")),
    (dict(motion=12, wm_csf=False, global_signal=True, derivatives=True, acompcor=0),
     dict(strategy=("motion", "global_signal"), motion="derivatives", global_signal="derivatives")),
]


@pytest.mark.parametrize("ours, theirs", SELECTIONS)
def test_confound_selection_matches_load_confounds(tmp_path, ours, theirs):
    """Same columns, same values (first derivative rows filled from the second row), max abs
    difference 0; our censoring mask (dummies, FD > 0.5 mm) equals load_confounds' sample_mask."""
    rng = np.random.default_rng(7)
    n = 120
    motion = np.cumsum(rng.normal(0, 0.05, (n, 6)), axis=0)
    fd = np.abs(rng.normal(0.2, 0.1, n))
    fd[[30, 31, 77]] = 0.8
    df = fmriprep_confounds(motion, rng.normal(size=(n, 3)), rng.normal(size=(n, 8)), 2, fd_mm=fd)
    run = write_fmriprep_run(tmp_path, "sub-01_task-rest", rng.normal(size=(n, 24)).astype(np.float32),
                             (2, 3, 4), df, ["CSF"] * 3 + ["combined"] * 5)
    strategy = {**FOX, **ours}
    x_tk, names = confound_matrix(read_confounds(run["confounds"]), strategy, run["confounds"])
    conf, sample_mask = load_confounds(run["bold"], **{**theirs, "strategy": theirs["strategy"] + ("scrub",)},
                                       fd_threshold=0.5, std_dvars_threshold=1.5, scrub=0, demean=False)
    assert sorted(names) == sorted(conf.columns)
    assert np.max(np.abs(x_tk - conf[names].to_numpy())) == 0.0
    n_dummy, kept = kept_after_dummies(read_confounds(run["confounds"]), strategy)
    assert np.array_equal(sample_mask, np.flatnonzero(kept) + n_dummy)


def test_load_confounds_cannot_read_what_the_workflow_accepts(tmp_path):
    """Why confound selection stays ours: a table without the derived columns (as the mini fMRIPrep
    tree writes) and a table without its JSON sidecar (as the built-in preprocessing writes) are read by
    ours (derived columns computed from their base: max abs difference < 1e-12 to fMRIPrep's; aCompCor: the
    first components) while load_confounds raises."""
    rng = np.random.default_rng(11)
    n = 80
    motion, tissue, comps = np.cumsum(rng.normal(0, 0.05, (n, 6)), axis=0), rng.normal(size=(n, 3)), rng.normal(size=(n, 6))
    full = fmriprep_confounds(motion, tissue, comps, 0)
    run = write_fmriprep_run(tmp_path, "sub-01_task-rest", rng.normal(size=(n, 8)).astype(np.float32), (2, 2, 2),
                             fmriprep_confounds(motion, tissue, comps, 0, derived=False))
    Path(run["confounds"]).with_suffix(".json").unlink()
    strategy = {**FOX, "derivatives": True}
    ours, names = confound_matrix(read_confounds(run["confounds"]), strategy, run["confounds"])
    reference, names_full = confound_matrix(full, strategy, run["confounds"])
    assert names == names_full and len(names) == 24 + 6
    assert np.max(np.abs(ours - reference)) < 1e-12    # measured 4e-16: the TSV text round trip
    with pytest.raises(ValueError):
        load_confounds(run["bold"], strategy=("motion",), motion="full")
    _, names = confound_matrix(read_confounds(run["confounds"]), ACOMPCOR, run["confounds"])
    assert names[24:] == [f"a_comp_cor_{j:02d}" for j in range(5)]
    with pytest.raises(ValueError):
        load_confounds(run["bold"], strategy=("compcor", "high_pass"), compcor="anat_combined", n_compcor=5)
