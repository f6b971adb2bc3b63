"""Tests of tmstarget.target.connectivity: seed time series, chunked r, Fisher z, seed map adapter."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from tmstarget.target import connectivity as cn
from tmstarget.denoise.arrays import DenoiseResult, save_denoised_npz
from tmstarget.errors import InputError

SHAPE = (8, 7, 6)
AFFINE = np.array([[2.0, 0, 0, -8], [0, 2, 0, -7], [0, 0, 2, -6], [0, 0, 0, 1]])


def brain_mask() -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[1:7, 1:6, 1:5] = True
    return m


def planted_data(n_t=300, seed=0):
    """Voxel time series with planted correlations to a seed signal.

    Returns data_tv (T, V) float32, the mask image, the seed mask image, and the planted true r of
    each voxel (for an infinite series): x = a * s + sqrt(1 - a^2) * noise  ->  r = a.
    """
    rng = np.random.default_rng(seed)
    mask = brain_mask()
    n_v = int(mask.sum())
    seed_mask = np.zeros(SHAPE, bool)
    seed_mask[2:4, 2:4, 2:4] = True
    s = rng.standard_normal(n_t)
    a_v = np.linspace(-0.8, 0.8, n_v)
    seed_cols = np.flatnonzero(seed_mask[mask])
    a_v[seed_cols] = 0.95
    data = a_v * s[:, None] + np.sqrt(1 - a_v ** 2) * rng.standard_normal((n_t, n_v))
    return (data.astype(np.float32), nib.Nifti1Image(mask.astype(np.uint8), AFFINE),
            nib.Nifti1Image(seed_mask.astype(np.uint8), AFFINE), a_v)


def test_correlation_matches_numpy_corrcoef_and_is_chunk_independent():
    data_tv, _, _, _ = planted_data()
    rng = np.random.default_rng(3)
    seed_t = rng.standard_normal(data_tv.shape[0]) + 5.0
    expected = np.array([np.corrcoef(seed_t, data_tv[:, v])[0, 1] for v in range(data_tv.shape[1])])
    for chunk in (7, 64, 10 ** 6):
        r = cn.correlation_map_r(data_tv, seed_t, chunk_voxels=chunk)
        assert r.dtype == np.float32 and r.shape == (data_tv.shape[1],)
        assert np.max(np.abs(r - expected)) < 1e-6


def test_planted_correlations_recovered():
    data_tv, mask_img, seed_img, a_v = planted_data(n_t=2000)
    seed_t = cn.seed_timeseries(data_tv, mask_img, seed_img)
    r = cn.correlation_map_r(data_tv, seed_t)
    # the seed mean of 8 voxels with a = 0.95 correlates ~0.99 with s, so r ~ a; sampling sd of r
    # for n = 2000 is < 0.025, 4 sd tolerance
    assert np.max(np.abs(r - a_v * 0.99)) < 0.1
    assert np.corrcoef(r, a_v)[0, 1] > 0.99


def test_constant_voxels_and_seed_give_zero():
    data_tv = np.random.default_rng(0).standard_normal((50, 5)).astype(np.float32)
    data_tv[:, 2] = 7.0
    r = cn.correlation_map_r(data_tv, data_tv[:, 0])
    assert r[2] == 0.0 and math.isclose(r[0], 1.0, abs_tol=1e-6)
    assert not cn.correlation_map_r(data_tv, np.ones(50)).any()


def test_fisher_z():
    r = np.array([-1.0, -0.5, 0.0, 0.3, 1.0])
    z = cn.fisher_z(r)
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
    assert np.allclose(z[1:4], np.arctanh(r[1:4]), atol=1e-7)
    assert math.isclose(z[4], np.arctanh(1 - 1e-7), rel_tol=1e-6) and z[0] == -z[4]


def test_unmask_to_img_roundtrip():
    data_tv, mask_img, _, _ = planted_data(n_t=10)
    img = cn.unmask_to_img(data_tv[3], mask_img)
    vol = np.asarray(img.dataobj)
    assert img.shape == SHAPE and np.array_equal(img.affine, AFFINE)
    assert np.array_equal(vol[brain_mask()], data_tv[3])
    assert np.all(vol[~brain_mask()] == 0)


def test_unmask_to_img_equals_the_hand_written_fill_it_replaced():
    """nilearn.masking.unmask gives the same volume, dtype and header codes as ``vol[mask] = values``."""
    data_tv, mask_img, _, _ = planted_data(n_t=10)
    mask = brain_mask()
    for values, fill in ((data_tv[3], 0.0), (data_tv[3].astype(np.float64) * 1e3, 0.0), (data_tv[5], -1.5)):
        img = cn.unmask_to_img(values, mask_img, fill=fill)
        by_hand = np.full(SHAPE, fill, dtype=np.float32)
        by_hand[mask] = values
        vol = np.asanyarray(img.dataobj)
        assert vol.dtype == np.float32 and np.array_equal(vol, by_hand)
        assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
        assert np.array_equal(img.get_qform(), AFFINE) and img.header.get_xyzt_units()[0] == "mm"
    with pytest.raises(ValueError, match="values for a mask"):
        cn.unmask_to_img(data_tv[3][:-1], mask_img)


def test_seed_timeseries_and_seed_outside_mask():
    data_tv, mask_img, seed_img, _ = planted_data(n_t=20)
    cols = np.flatnonzero(np.asarray(seed_img.dataobj)[brain_mask()] > 0)
    assert cols.size == 8
    assert np.allclose(cn.seed_timeseries(data_tv, mask_img, seed_img), data_tv[:, cols].mean(axis=1), atol=1e-6)
    outside = np.zeros(SHAPE, np.uint8)
    outside[0, 0, 0] = 1
    with pytest.raises(InputError, match="outside the field of view"):
        cn.seed_timeseries(data_tv, mask_img, nib.Nifti1Image(outside, AFFINE))


def write_npz(tmp_path, data_tv, mask_img, tsnr_v):
    res = DenoiseResult(data_tv, mask_img, 2.0, np.array([data_tv.shape[0]]), tsnr_v.astype(np.float32), {})
    return save_denoised_npz(res, tmp_path / "sub-01_desc-fox_denoised.npz")


def test_run_seedmap_writes_maps_and_sidecar(tmp_path):
    data_tv, mask_img, seed_img, a_v = planted_data(n_t=400)
    tsnr_v = np.full(data_tv.shape[1], 80.0)
    npz = write_npz(tmp_path, data_tv, mask_img, tsnr_v)
    seed_path = tmp_path / "sub-01_desc-sgacc_mask.nii.gz"
    nib.save(seed_img, seed_path)
    out = {k: tmp_path / "out" / f"sub-01_stat-{k}_boldmap.nii.gz" for k in ("r", "fisherz")}
    out_json = tmp_path / "out" / "sub-01_stat-r_boldmap.json"
    definition = {"type": "sphere", "center_mni_ras_mm": [6, 16, -10], "radius_mm": 10}
    fisherz_json = tmp_path / "out" / "sub-01_stat-fisherz_boldmap.json"
    side = cn.run_seedmap(npz, seed_path, out["r"], out["fisherz"], out_json, fisherz_json,
                          seed_definition=definition)
    r_img, z_img = nib.load(out["r"]), nib.load(out["fisherz"])
    assert np.array_equal(r_img.affine, AFFINE) and r_img.get_data_dtype() == np.float32
    r_vol = np.asarray(r_img.dataobj)
    seed_t = data_tv[:, np.flatnonzero(np.asarray(seed_img.dataobj)[brain_mask()])].astype(np.float64).mean(axis=1)
    expected = np.array([np.corrcoef(seed_t, data_tv[:, v])[0, 1] for v in range(data_tv.shape[1])])
    assert np.max(np.abs(r_vol[brain_mask()] - expected)) < 1e-6
    assert np.allclose(np.asarray(z_img.dataobj)[brain_mask()], np.arctanh(np.clip(expected, -1 + 1e-7, 1 - 1e-7)), atol=1e-5)
    saved = json.loads(out_json.read_text())
    assert saved == side
    assert saved["Description"].startswith("Pearson correlation r of each voxel")
    fisherz_side = json.loads(fisherz_json.read_text())
    assert fisherz_side["Description"].startswith(
        "Fisher z-transformed Pearson correlation (arctanh r), not a z statistic")
    assert fisherz_side["Sources"] == [npz.name, seed_path.name, out["r"].name]
    assert saved["seed"] == definition
    assert (saved["seed_voxels_total"], saved["seed_voxels_in_mask"], saved["volumes"]) == (8, 8, 400)
    assert saved["seed_median_tsnr"] == 80.0 and saved["seed_low_tsnr_fraction"] == 0.0
    assert saved["warnings"] == []


def test_run_seedmap_low_tsnr_and_partial_seed_warn(tmp_path):
    data_tv, mask_img, seed_img, _ = planted_data(n_t=100)
    seed = np.asarray(seed_img.dataobj).copy()
    seed[0, 2:4, 2:4] = 1            # 4 voxels outside the brain mask
    seed_path = tmp_path / "seed.nii.gz"
    nib.save(nib.Nifti1Image(seed, AFFINE), seed_path)
    tsnr_v = np.full(data_tv.shape[1], 80.0)
    cols = np.flatnonzero(seed[brain_mask()] > 0)
    tsnr_v[cols[:6]] = 8.0           # 6 of 8 in-mask seed voxels in dropout
    npz = write_npz(tmp_path, data_tv, mask_img, tsnr_v)
    side = cn.run_seedmap(npz, seed_path, tmp_path / "r.nii.gz", tmp_path / "z.nii.gz", tmp_path / "r.json",
                          seed_definition={}, min_seed_tsnr=20.0, max_low_tsnr_fraction=0.5)
    assert (side["seed_voxels_total"], side["seed_voxels_in_mask"]) == (12, 8)
    assert side["seed_low_tsnr_fraction"] == 0.75 and side["seed_median_tsnr"] == 8.0
    assert len(side["warnings"]) == 2
    assert "4 of 12 seed voxels are outside" in side["warnings"][0]
    assert "75% of the seed voxels have tSNR < 20" in side["warnings"][1]
    # a lower threshold records no dropout warning
    side = cn.run_seedmap(npz, seed_path, tmp_path / "r.nii.gz", tmp_path / "z.nii.gz", tmp_path / "r.json",
                          min_seed_tsnr=5.0)
    assert side["seed_low_tsnr_fraction"] == 0.0 and len(side["warnings"]) == 1


def test_run_seedmap_seed_outside_fov_is_input_error(tmp_path):
    data_tv, mask_img, _, _ = planted_data(n_t=30)
    npz = write_npz(tmp_path, data_tv, mask_img, np.full(data_tv.shape[1], 50.0))
    seed = np.zeros(SHAPE, np.uint8)
    seed[0, 0, :] = 1
    seed_path = tmp_path / "sub-01_desc-sgacc_mask.nii.gz"
    nib.save(nib.Nifti1Image(seed, AFFINE), seed_path)
    with pytest.raises(InputError, match="sub-01_desc-sgacc_mask.nii.gz .*no voxel inside the BOLD brain mask.*field of view"):
        cn.run_seedmap(npz, seed_path, tmp_path / "r.nii.gz", tmp_path / "z.nii.gz", tmp_path / "r.json")
    assert not (tmp_path / "r.nii.gz").exists() and not (tmp_path / "r.json").exists()


def test_run_seedmap_resamples_seed_on_other_grid(tmp_path):
    data_tv, mask_img, seed_img, _ = planted_data(n_t=50)
    npz = write_npz(tmp_path, data_tv, mask_img, np.full(data_tv.shape[1], 50.0))
    # the same seed on a 1 mm grid covering the same box
    seed_2mm = np.asarray(seed_img.dataobj) > 0
    seed_1mm = np.repeat(np.repeat(np.repeat(seed_2mm, 2, 0), 2, 1), 2, 2).astype(np.uint8)
    aff_1mm = AFFINE.copy()
    aff_1mm[:3, :3] = np.eye(3)
    aff_1mm[:3, 3] -= 0.5
    seed_path = tmp_path / "seed_1mm.nii.gz"
    nib.save(nib.Nifti1Image(seed_1mm, aff_1mm), seed_path)
    side = cn.run_seedmap(npz, seed_path, tmp_path / "r.nii.gz", tmp_path / "z.nii.gz", tmp_path / "r.json")
    assert side["seed_voxels_in_mask"] == 8
