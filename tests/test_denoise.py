"""Tests of tmstarget.denoise on small generated fMRIPrep-layout runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import signal as nl_signal

from tmstarget.denoise.arrays import load_denoised_npz
from tmstarget.denoise.confounds import (censoring_mask, confound_column_names, confound_matrix,
                                         dummy_volume_count, fill_undefined_first_row)
from tmstarget.io.tables import read_confounds
from tmstarget.denoise.run import denoise_runs, run_denoise
from tmstarget.denoise.smooth import smooth_masked
from tmstarget.denoise.strategy import default_strategies, validate_strategy
from tmstarget.denoise.temporal import temporal_operator
from tmstarget.errors import InputError, QCFailure
from tmstarget.io.nifti import load_masked_bold, read_t_r

from builders.denoise_run import MOTION, make_run  # noqa: F401 (MOTION: used by tests below)

#: The strategies of config/config.yaml (complete: every key), the base of every strategy below.
FOX, ACOMPCOR = default_strategies()["fox"], default_strategies()["acompcor"]


def nilearn_reference(run: dict, strategy: dict) -> np.ndarray:
    """The same run cleaned by nilearn.signal.clean (standardized), for comparison."""
    s = validate_strategy(strategy)
    img = nib.load(run["bold"])
    mask = np.asarray(nib.load(run["mask"]).dataobj) > 0
    df = read_confounds(run["confounds"])
    n_dummy, flagged = dummy_volume_count(df)
    x_tk, _ = confound_matrix(df, s, run["confounds"])
    signals = np.asarray(img.dataobj, dtype=np.float64)[mask].T[n_dummy:]
    censored = censoring_mask(df["framewise_displacement"].to_numpy(), s["fd_threshold_mm"],
                                 s["censor_before"], s["censor_after"]) | flagged
    sample_mask = np.flatnonzero(~censored[n_dummy:])
    return nl_signal.clean(
        signals, detrend=s["detrend"], standardize="zscore_sample", confounds=x_tk[n_dummy:] if x_tk.size else None,
        standardize_confounds=True, filter="butterworth", low_pass=s["low_pass_hz"], high_pass=s["high_pass_hz"],
        t_r=2.0, sample_mask=sample_mask, extrapolate=False,
    )


# ----------------------------------------------------------------------------- numerics vs nilearn


@pytest.mark.parametrize("strategy", [
    {**FOX, "smoothing_fwhm_mm": None},
    {**ACOMPCOR, "smoothing_fwhm_mm": None, "censor_before": 1, "censor_after": 2},
    {**FOX, "motion": 6, "wm_csf": True, "global_signal": False, "derivatives": True, "high_pass_hz": 0.01,
     "low_pass_hz": None, "smoothing_fwhm_mm": None},
    {**FOX, "motion": 12, "low_pass_hz": 0.08, "high_pass_hz": None, "detrend": False, "smoothing_fwhm_mm": None},
])
def test_matches_nilearn_signal_clean(tmp_path, strategy):
    # censored volumes inside the run and at its very end (dropped, not extrapolated)
    run = make_run(tmp_path, fd_spikes=(30, 31, 77, 120, 159))
    res = denoise_runs([run], strategy, min_retained_minutes=1, warn_retained_minutes=1)
    ref = nilearn_reference(run, strategy)
    assert res.data_tv.dtype == np.float32
    assert res.data_tv.shape == ref.shape
    assert np.max(np.abs(res.data_tv - ref)) < 1e-4


def test_no_censoring_matches_nilearn(tmp_path):
    strategy = {**FOX, "smoothing_fwhm_mm": None, "fd_threshold_mm": None}
    run = make_run(tmp_path, fd_spikes=(40,))
    res = denoise_runs([run], strategy, min_retained_minutes=1)
    assert res.data_tv.shape[0] == 160 - 2
    assert np.max(np.abs(res.data_tv - nilearn_reference(run, strategy))) < 1e-4


def test_regressors_removed_and_band_limited(tmp_path):
    run = make_run(tmp_path, n_vols=300)
    res = denoise_runs([run], {**FOX, "smoothing_fwhm_mm": None}, min_retained_minutes=1)
    df = read_confounds(run["confounds"])
    s = validate_strategy(FOX)
    x_tk, _ = confound_matrix(df, s, run["confounds"])
    op, _ = temporal_operator(298, np.ones(298, bool), 2.0, s, np.zeros((298, 0)))
    gs_filtered = op @ x_tk[2:, confound_column_names(s, df.columns).index("global_signal")]
    # residuals are orthogonal to the (identically filtered) global signal
    r = (gs_filtered - gs_filtered.mean()) @ res.data_tv / np.linalg.norm(gs_filtered - gs_filtered.mean())
    assert np.max(np.abs(r / math.sqrt(res.data_tv.shape[0] - 1))) < 1e-5
    # power above the low-pass cut-off (0.1 Hz) is < 1 % of the total
    spec = np.abs(np.fft.rfft(res.data_tv, axis=0)) ** 2
    freqs_hz = np.fft.rfftfreq(res.data_tv.shape[0], d=2.0)
    assert spec[freqs_hz > 0.13].sum() / spec.sum() < 0.01


# ----------------------------------------------------------------------------- confounds, censoring


def test_confound_column_names():
    cols = [f"a_comp_cor_{i:02d}" for i in (10, 2, 0, 1)]
    s = validate_strategy({**FOX, "motion": 6, "wm_csf": False, "global_signal": False})
    assert confound_column_names(s, cols) == MOTION
    s = validate_strategy({**FOX, "motion": 12, "wm_csf": False, "global_signal": False})
    assert len(confound_column_names(s, cols)) == 12
    s = validate_strategy({**FOX, "motion": 24, "derivatives": True})
    names = confound_column_names(s, cols)
    assert len(names) == 24 + 3 + 3
    assert names[24:] == ["white_matter", "csf", "global_signal", "white_matter_derivative1",
                          "csf_derivative1", "global_signal_derivative1"]
    s = validate_strategy({**FOX, "motion": 0, "wm_csf": False, "global_signal": False, "acompcor": 3})
    assert confound_column_names(s, cols) == ["a_comp_cor_00", "a_comp_cor_01", "a_comp_cor_02"]


def test_acompcor_uses_combined_mask_from_sidecar(tmp_path):
    run = make_run(tmp_path)
    meta = {f"a_comp_cor_{i:02d}": {"Mask": "WM" if i < 3 else "combined", "Retained": True} for i in range(6)}
    Path(run["confounds"].replace(".tsv", ".json")).write_text(json.dumps(meta))
    df = read_confounds(run["confounds"])
    s = validate_strategy({**FOX, "motion": 0, "wm_csf": False, "global_signal": False, "acompcor": 2})
    _, names = confound_matrix(df, s, run["confounds"])
    assert names == ["a_comp_cor_03", "a_comp_cor_04"]


def test_missing_derived_columns_are_computed(tmp_path):
    run = make_run(tmp_path)
    df = read_confounds(run["confounds"])
    s = validate_strategy({**FOX, "motion": 24})
    full, names = confound_matrix(df, s, run["confounds"])
    drop = [c for c in df.columns if c.endswith(("_power2", "_derivative1"))]
    reduced, names2 = confound_matrix(df.drop(columns=drop), s, run["confounds"])
    assert names == names2
    assert np.allclose(full, reduced, atol=1e-12)


def test_missing_confound_column_is_input_error(tmp_path):
    run = make_run(tmp_path)
    df = read_confounds(run["confounds"]).drop(columns=["global_signal"])
    df.to_csv(run["confounds"], sep="\t", index=False, na_rep="n/a")
    with pytest.raises(InputError, match="global_signal.*denoising.strategy"):
        denoise_runs([run], FOX, min_retained_minutes=1)
    with pytest.raises(InputError, match="acompcor"):
        denoise_runs([run], {**ACOMPCOR, "acompcor": 9}, min_retained_minutes=1)


def test_confounds_row_count_mismatch(tmp_path):
    run = make_run(tmp_path)
    df = read_confounds(run["confounds"]).iloc[:-3]
    df.to_csv(run["confounds"], sep="\t", index=False, na_rep="n/a")
    with pytest.raises(InputError, match="157 rows but .* 160 volumes"):
        denoise_runs([run], FOX, min_retained_minutes=1)


def test_censoring_mask_neighbours():
    fd_mm = np.array([np.nan, 0.1, 0.6, 0.1, 0.1, 0.1, 0.1, 0.7, 0.1])
    got = censoring_mask(fd_mm, 0.5, censor_before=1, censor_after=2)
    assert np.flatnonzero(got).tolist() == [1, 2, 3, 4, 6, 7, 8]
    assert np.flatnonzero(censoring_mask(fd_mm, 0.5)).tolist() == [2, 7]
    assert not censoring_mask(fd_mm, None).any()


def test_dummy_volume_count():
    df = pd.DataFrame({"non_steady_state_outlier00": [1, 0, 0, 0], "non_steady_state_outlier01": [0, 1, 0, 0],
                       "non_steady_state_outlier02": [0, 0, 0, 1]})
    n_lead, flagged = dummy_volume_count(df)
    assert n_lead == 2
    assert flagged.tolist() == [True, True, False, True]


# ----------------------------------------------------------------------------- strategy validation


def test_default_strategies_are_valid():
    fox = validate_strategy(FOX, "fox")
    assert (fox["motion"], fox["global_signal"], fox["wm_csf"], fox["acompcor"]) == (24, True, True, 0)
    assert (fox["high_pass_hz"], fox["low_pass_hz"], fox["fd_threshold_mm"], fox["smoothing_fwhm_mm"]) == (0.01, 0.1, 0.5, 4.0)
    acc = validate_strategy(ACOMPCOR, "acompcor")
    assert (acc["global_signal"], acc["wm_csf"], acc["acompcor"]) == (False, False, 5)


def test_strategy_defaults_live_in_config_yaml():
    """config/config.yaml is the one place the strategy values are set: its default strategy names
    every key of the schema's strategy, with the values of the module table it replaced (behaviour
    unchanged), and a strategy that leaves keys out takes them from it."""
    from tmstarget.config.settings import DEFAULT_CONFIG, SCHEMA, read_yaml

    cfg = read_yaml(DEFAULT_CONFIG)["denoising"]
    schema_keys = set(read_yaml(SCHEMA)["$defs"]["strategy"]["properties"])
    for name, strategy in cfg["strategies"].items():
        assert set(strategy) == schema_keys, name
    assert cfg["strategy"] == "fox"
    assert FOX == {"motion": 24, "wm_csf": True, "global_signal": True, "derivatives": False, "acompcor": 0,
                   "high_pass_hz": 0.01, "low_pass_hz": 0.1, "fd_threshold_mm": 0.5, "censor_before": 0,
                   "censor_after": 0, "smoothing_fwhm_mm": 4.0, "detrend": True}
    assert list(FOX) == list(cfg["strategies"]["fox"])     # key order of the QC record kept
    assert ACOMPCOR == {**FOX, "wm_csf": False, "global_signal": False, "acompcor": 5}
    assert validate_strategy({"motion": 6, "smoothing_fwhm_mm": 0}, "mine") == {**FOX, "motion": 6,
                                                                                "smoothing_fwhm_mm": None}
    assert (cfg["min_retained_minutes"], cfg["warn_retained_minutes"]) == (5.0, 8.0)   # denoise_runs' defaults
    own = {**FOX, "detrend": False}
    assert validate_strategy({"motion": 6}, "mine", defaults=own) == {**own, "motion": 6}


@pytest.mark.parametrize("bad, match", [
    ({"gsr": True}, "unknown key.*gsr"),
    ({"motion": 7}, "motion.*0, 6, 12 or 24"),
    ({"motion": True}, "motion"),
    ({"global_signal": "yes"}, "global_signal.*true or false"),
    ({"acompcor": -1}, "acompcor.*integer"),
    ({"high_pass_hz": 0.1, "low_pass_hz": 0.05}, "high_pass_hz.*below low_pass_hz"),
    ({"smoothing_fwhm_mm": "6mm"}, "smoothing_fwhm_mm.*number"),
    ({"fd_threshold_mm": 0}, "fd_threshold_mm.*positive"),
])
def test_strategy_validation_errors(bad, match):
    with pytest.raises(InputError, match=match):
        validate_strategy({**FOX, **bad}, "mine")


def test_low_pass_above_nyquist_is_input_error(tmp_path):
    run = make_run(tmp_path, t_r=5.0, n_vols=80)
    with pytest.raises(InputError, match="Nyquist.*TR 5 s"):
        denoise_runs([run], FOX, min_retained_minutes=1)


# ----------------------------------------------------------------------------- retained data, QC


def test_too_little_data_is_qc_failure(tmp_path):
    run = make_run(tmp_path, n_vols=160, fd_spikes=range(20, 60))   # 158 - 40 = 118 volumes = 3.9 min
    with pytest.raises(QCFailure) as exc:
        denoise_runs([run], FOX, strategy_name="fox")
    msg = str(exc.value)
    assert "3.9 min" in msg and "5 min" in msg and "denoising.min_retained_minutes" in msg
    assert "denoising.strategies.fox.fd_threshold_mm" in msg


def test_all_volumes_censored_is_qc_failure(tmp_path):
    run = make_run(tmp_path, n_vols=60, fd_spikes=range(1, 60))
    with pytest.raises(QCFailure, match="0.0 min"):
        denoise_runs([run], FOX, min_retained_minutes=0)


def test_warning_below_warn_threshold(tmp_path):
    run = make_run(tmp_path, n_vols=200, fd_spikes=(50, 51, 100))
    res = denoise_runs([run], {**FOX, "smoothing_fwhm_mm": None})
    assert res.data_tv.shape[0] == 200 - 2 - 3
    assert math.isclose(res.qc["minutes_kept"], 195 * 2 / 60, abs_tol=1e-3)
    assert any("6.5 min" in w and "8 min" in w for w in res.warnings)
    assert res.qc["runs"][0]["censored_volumes"] == [50, 51, 100]
    assert res.qc["runs"][0]["dummy_volumes"] == 2


# ----------------------------------------------------------------------------- runs, smoothing, tSNR


def test_multiple_runs_concatenated_with_common_mask(tmp_path):
    def mask_a(shape):
        m = np.ones(shape, bool)
        m[0] = False
        return m

    def mask_b(shape):
        m = np.ones(shape, bool)
        m[:, 0] = False
        return m

    run1 = make_run(tmp_path / "a", name="sub-01_task-rest_run-1", n_vols=120, seed=1, mask_fn=mask_a)
    run2 = make_run(tmp_path / "b", name="sub-01_task-rest_run-2", n_vols=100, seed=2, mask_fn=mask_b,
                    fd_spikes=(40,))
    res = denoise_runs([run1, run2], {**FOX, "smoothing_fwhm_mm": None},
                          min_retained_minutes=1)
    expected_mask = mask_a((7, 6, 5)) & mask_b((7, 6, 5))
    assert np.array_equal(np.asarray(res.mask_img.dataobj) > 0, expected_mask)
    assert res.run_lengths.tolist() == [118, 97]
    assert res.data_tv.shape == (215, int(expected_mask.sum()))
    for seg in (res.data_tv[:118], res.data_tv[118:]):
        assert np.max(np.abs(seg.mean(axis=0))) < 1e-5
        assert np.max(np.abs(seg.std(axis=0, ddof=1) - 1)) < 1e-4
    # each block equals the run denoised alone, restricted to the common mask
    alone = denoise_runs([run2], {**FOX, "smoothing_fwhm_mm": None}, min_retained_minutes=1)
    cols = expected_mask[mask_b((7, 6, 5))]
    assert np.max(np.abs(alone.data_tv[:, cols] - res.data_tv[118:])) < 1e-5


def test_different_tr_is_input_error(tmp_path):
    run1 = make_run(tmp_path / "a", t_r=2.0)
    run2 = make_run(tmp_path / "b", t_r=1.5)
    with pytest.raises(InputError, match="different repetition times"):
        denoise_runs([run1, run2], FOX, min_retained_minutes=1)


def test_tr_from_sidecar_then_header(tmp_path):
    run = make_run(tmp_path / "a", t_r=2.0)
    Path(run["bold"].replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 1.8}))
    assert read_t_r(run["bold"]) == 1.8
    assert read_t_r(run["bold"], 2.5) == 2.5
    run = make_run(tmp_path / "b", t_r=0.8, sidecar=False)
    assert math.isclose(read_t_r(run["bold"]), 0.8, rel_tol=1e-6)


@pytest.mark.parametrize("voxel_mm", [(2.0, 2.0, 2.0), (2.0, 2.5, 3.0)])
def test_smoothing_fwhm_in_mm(voxel_mm):
    shape = (41, 35, 29)
    mask = np.ones(shape, bool)
    data = np.zeros((1, mask.sum()), np.float32)
    centre = tuple(s // 2 for s in shape)
    data[0, np.ravel_multi_index(centre, shape)] = 1.0
    smooth_masked(data, mask, voxel_mm, 6.0)
    vol = data[0].reshape(shape)
    assert math.isclose(vol.sum(), 1.0, rel_tol=1e-3)
    for axis, vmm in enumerate(voxel_mm):
        profile = vol.sum(axis=tuple(a for a in range(3) if a != axis))
        pos_mm = (np.arange(shape[axis]) - centre[axis]) * vmm
        sigma_mm = math.sqrt((profile * pos_mm ** 2).sum() / profile.sum())
        assert abs(sigma_mm * math.sqrt(8 * math.log(2)) - 6.0) < 0.3


def test_smoothing_stays_in_mask_and_keeps_constants():
    shape = (12, 12, 12)
    mask = np.zeros(shape, bool)
    mask[2:10, 2:10, 2:10] = True
    data = np.full((2, mask.sum()), 3.0, np.float32)
    smooth_masked(data, mask, (2.0, 2.0, 2.0), 6.0)
    # normalised convolution: a constant stays constant up to the mask edge (no darkening)
    assert np.max(np.abs(data - 3.0)) < 1e-5


def test_tsnr_before_denoising(tmp_path):
    run = make_run(tmp_path, n_vols=200, mean=1000.0, noise_sd=10.0)
    res = denoise_runs([run], FOX, min_retained_minutes=1)
    # the generator adds confound mixes (sd ~ 3 * sqrt(4 * ~1)) on top of sd 10 noise
    df = read_confounds(run["confounds"])
    assert res.tsnr_v.dtype == np.float32
    img = np.asarray(nib.load(run["bold"]).dataobj, dtype=np.float64).reshape(-1, 200)[:, 2:]
    t = np.arange(198) - 98.5
    resid = img - img.mean(axis=1, keepdims=True)
    resid -= np.outer(resid @ t / (t @ t), t)
    expected = img.mean(axis=1) / np.sqrt((resid ** 2).sum(axis=1) / 196)
    assert np.max(np.abs(res.tsnr_v - expected) / expected) < 1e-4
    assert len(df) == 200


# ----------------------------------------------------------------------------- adapter


def test_run_denoise_writes_npz_and_qc(tmp_path):
    run = make_run(tmp_path / "in", n_vols=200, fd_spikes=(60,))
    out_npz = tmp_path / "work" / "sub-01_desc-fox_denoised.npz"
    out_qc = tmp_path / "out" / "sub-01_task-rest_desc-denoise_qc.json"
    res = run_denoise([dict(run, name="sub-01_task-rest", t_r=None)], FOX,
                         out_npz, out_qc, min_retained_minutes=1, warn_retained_minutes=5, strategy_name="fox")
    with np.load(out_npz) as z:
        assert set(z.files) == {"data_tv", "mask", "affine", "t_r", "run_lengths", "tsnr_v"}
        assert z["data_tv"].dtype == np.float32 and z["data_tv"].shape == (197, 7 * 6 * 5)
        assert z["mask"].dtype == np.uint8 and z["mask"].shape == (7, 6, 5)
        assert float(z["t_r"]) == 2.0 and z["run_lengths"].tolist() == [197]
        assert np.array_equal(z["data_tv"], res.data_tv)
    qc = json.loads(out_qc.read_text())
    assert qc["strategy"] == "fox" and qc["t_r"] == 2.0 and qc["fd_threshold_mm"] == 0.5
    assert qc["strategy_parameters"]["motion"] == 24
    assert (qc["volumes_total"], qc["volumes_kept"]) == (200, 197)
    assert math.isclose(qc["minutes_kept"], 197 * 2 / 60, abs_tol=1e-3)
    r = qc["runs"][0]
    assert r["bold"] == Path(run["bold"]).name and r["censored_volumes"] == [60] and r["dummy_volumes"] == 2
    assert len(r["framewise_displacement_mm"]) == 200 and r["framewise_displacement_mm"][0] == 0.0
    assert qc["warnings"] == [] and qc["status"] == "pass"
    assert sorted(p.name for p in out_npz.parent.iterdir()) == [out_npz.name]


def test_load_denoised_npz_roundtrip(tmp_path):
    run = make_run(tmp_path / "in", n_vols=120)
    out_npz = tmp_path / "d.npz"
    res = run_denoise([run], ACOMPCOR, out_npz, tmp_path / "qc.json",
                         min_retained_minutes=1)
    got = load_denoised_npz(out_npz)
    assert np.array_equal(got["data_tv"], res.data_tv)
    assert np.array_equal(got["mask_img"].affine, res.mask_img.affine)
    with pytest.raises(InputError, match="run the denoise step"):
        load_denoised_npz(tmp_path / "nothing.npz")


def test_smoothing_equals_ndimage_normalised_convolution():
    from scipy import ndimage

    rng = np.random.default_rng(5)
    shape = (14, 12, 10)
    mask = np.zeros(shape, bool)
    mask[2:12, 3:10, 1:9] = True
    data = rng.standard_normal((3, mask.sum())).astype(np.float32)
    voxel_mm = (2.0, 2.5, 3.0)
    sigma_vox = 6.0 / math.sqrt(8 * math.log(2)) / np.array(voxel_mm)
    expected = []
    for row in data:
        vol = np.zeros(shape)
        vol[mask] = row
        num = ndimage.gaussian_filter(vol, sigma_vox, mode="constant", truncate=4.0)
        den = ndimage.gaussian_filter(mask.astype(float), sigma_vox, mode="constant", truncate=4.0)
        expected.append(num[mask] / den[mask])
    smooth_masked(data, mask, voxel_mm, 6.0)
    assert np.max(np.abs(data - np.array(expected))) < 1e-5


def test_load_masked_bold_scaled_int16_and_truncated(tmp_path):
    rng = np.random.default_rng(2)
    vol = rng.integers(0, 3000, (5, 4, 3, 40)).astype(np.int16)
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "bold.nii.gz"
    nib.save(img, path)
    mask = np.zeros((5, 4, 3), bool)
    mask[1:4, 1:3, :] = True
    got = load_masked_bold(nib.load(path), mask, first_volume=3)
    expected = (vol.astype(np.float64) * 0.5 + 10.0)[mask].T[3:]
    assert got.dtype == np.float32 and got.shape == (37, mask.sum())
    assert np.max(np.abs(got - expected)) < 1e-3
    nib.save(img, tmp_path / "bold.nii")                      # uncompressed: nibabel's opener
    assert np.max(np.abs(load_masked_bold(nib.load(tmp_path / "bold.nii"), mask, 3) - expected)) < 1e-3
    raw = path.read_bytes()
    half = len(vol.tobytes()) // 2                           # a .nii.gz made of two gzip members
    import gzip as _gzip
    plain = _gzip.decompress(raw)
    (tmp_path / "two.nii.gz").write_bytes(_gzip.compress(plain[:half]) + _gzip.compress(plain[half:]))
    assert np.max(np.abs(load_masked_bold(nib.load(tmp_path / "two.nii.gz"), mask, 3) - expected)) < 1e-3
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cut.nii.gz: cannot read .*truncated"):
        load_masked_bold(nib.load(tmp_path / "cut.nii.gz"), mask)


def _zero_volumes(run: dict, zero=(), constant=()) -> None:
    img = nib.load(run["bold"])
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    for t in zero:
        data[..., t] = 0.0
    for t in constant:
        data[..., t] = 500.0
    nib.save(nib.Nifti1Image(data, img.affine, img.header), run["bold"])


@pytest.mark.parametrize("n_runs", [1, 2])
def test_constant_volumes_are_censored_like_motion(tmp_path, n_runs):
    """All-zero or constant volumes are found while reading, censored, listed in the QC and left out
    of the tSNR: the result equals censoring those volumes by framewise displacement."""
    strategy = {**FOX, "smoothing_fwhm_mm": None}
    faulty, by_fd = [], []
    for k in range(n_runs):
        run = make_run(tmp_path / f"z{k}", name=f"sub-01_task-rest_run-{k + 1}", n_vols=150, seed=k)
        _zero_volumes(run, zero=(50, 51), constant=(80,))
        faulty.append(run)
        by_fd.append(make_run(tmp_path / f"f{k}", name=f"sub-01_task-rest_run-{k + 1}", n_vols=150, seed=k,
                              fd_spikes=(50, 51, 80)))
    got = denoise_runs(faulty, strategy, min_retained_minutes=1)
    ref = denoise_runs(by_fd, strategy, min_retained_minutes=1)
    assert got.run_lengths.tolist() == ref.run_lengths.tolist() == [145] * n_runs   # 150 - 2 dummies - 3
    assert [r["constant_volumes"] for r in got.qc["runs"]] == [[50, 51, 80]] * n_runs
    assert got.qc["volumes_kept"] == 145 * n_runs and got.qc["minutes_kept"] == pytest.approx(145 * n_runs / 30, abs=1e-4)
    assert any("3 all-zero or constant volume(s) censored" in w or "6 all-zero" in w for w in got.qc["warnings"])
    assert np.max(np.abs(got.data_tv - ref.data_tv)) < 1e-5
    # tSNR from the good volumes only (the zero volumes would have lowered it ~10-fold)
    # (several runs: the mean of the runs' tSNR)
    good = np.setdiff1d(np.arange(148), [48, 49, 78])
    t = good - good.mean()
    per_run = []
    for run in by_fd:
        x = np.asarray(nib.load(run["bold"]).dataobj, dtype=np.float64).reshape(-1, 150)[:, 2:][:, good]
        resid = x - x.mean(axis=1, keepdims=True)
        resid -= np.outer(resid @ t / (t @ t), t)
        per_run.append(x.mean(axis=1) / np.sqrt((resid ** 2).sum(axis=1) / (len(good) - 2)))
    expected = np.mean(per_run, axis=0)
    assert np.max(np.abs(got.tsnr_v - expected) / expected) < 1e-4


# ----------------------------------------------------------------------------- derivative first row


def test_derivative_first_row_filled_as_nilearn_load_confounds(tmp_path):
    """No dummy volumes, so the undefined first row of the *_derivative1* columns is used: our
    cleaned series equals nilearn.signal.clean on the confounds nilearn's own load_confounds reads
    from the same fMRIPrep-style files (it fills that row with the second row's value)."""
    from nilearn.interfaces.fmriprep import load_confounds

    run = make_run(tmp_path, n_dummy=0)
    strategy = {**FOX, "smoothing_fwhm_mm": None, "fd_threshold_mm": None,
                "derivatives": True}
    conf, sample_mask = load_confounds(run["bold"], strategy=("motion", "wm_csf", "global_signal"),
                                       motion="full", wm_csf="derivatives", global_signal="derivatives",
                                       demean=True)
    assert sample_mask is None and conf.shape == (160, 24 + 6)
    assert conf.notna().all().all()
    ours = denoise_runs([run], strategy, min_retained_minutes=1, warn_retained_minutes=1).data_tv
    s = validate_strategy(strategy)
    mask = np.asarray(nib.load(run["mask"]).dataobj) > 0
    signals = np.asarray(nib.load(run["bold"]).dataobj, dtype=np.float64)[mask].T
    ref = nl_signal.clean(signals, detrend=True, standardize="zscore_sample", confounds=conf.to_numpy(),
                          standardize_confounds=True, filter="butterworth", low_pass=s["low_pass_hz"],
                          high_pass=s["high_pass_hz"], t_r=2.0)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) < 1e-4
    # the column-mean fill this replaces differs from nilearn by far more than the tolerance
    df = read_confounds(run["confounds"])
    x_mean_fill = df[conf.columns].to_numpy(dtype=np.float64)
    x_mean_fill = np.where(np.isfinite(x_mean_fill), x_mean_fill, np.nanmean(x_mean_fill, axis=0))
    old = nl_signal.clean(signals, detrend=True, standardize="zscore_sample", confounds=x_mean_fill,
                          standardize_confounds=True, filter="butterworth", low_pass=s["low_pass_hz"],
                          high_pass=s["high_pass_hz"], t_r=2.0)
    assert np.max(np.abs(old - ref)) > 1e-2


def test_fill_undefined_first_row():
    x = np.array([np.nan, 2.0, 3.0, np.nan, 5.0])
    out = fill_undefined_first_row(x)
    assert out[0] == 2.0 and np.isnan(out[3]) and np.isnan(x[0])
