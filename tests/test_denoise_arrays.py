"""The denoise step's npz files and their one checked reader (tmstarget.denoise.arrays)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tmstarget.denoise.arrays import (DenoiseResult, RawRuns, load_denoised, load_denoised_npz, load_raw_runs,
                                      save_denoised_npz, save_raw_runs)
from tmstarget.denoise.strategy import default_strategies
from tmstarget.errors import InputError


def small_result(n_t=(30, 20)) -> DenoiseResult:
    rng = np.random.default_rng(0)
    mask = np.zeros((5, 4, 3), np.uint8)
    mask[1:4, :, 1:] = 1
    v = int(mask.sum())
    return DenoiseResult(rng.standard_normal((sum(n_t), v)).astype(np.float32),
                         nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0])), 2.0, np.array(n_t),
                         rng.uniform(10, 50, v).astype(np.float32), {})


def small_raw_runs() -> RawRuns:
    rng = np.random.default_rng(1)
    kept = [np.r_[np.ones(25, bool), np.zeros(3, bool)], np.ones(20, bool)]
    return RawRuns(rng.standard_normal((45, 6)).astype(np.float32), np.arange(6) * 2, kept,
                   [rng.standard_normal((28, 4)), rng.standard_normal((20, 4))], 2.0, default_strategies()["fox"])


def rewrite(path, **change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update({k: v for k, v in change.items() if v is not None})
    for k in [k for k, v in change.items() if v is None]:
        del arrays[k]
    np.savez(path, **arrays)


def test_denoised_roundtrip(tmp_path):
    res = small_result()
    path = save_denoised_npz(res, tmp_path / "sub-01_desc-fox_denoised.npz")
    den = load_denoised(path)
    assert np.array_equal(den.data_tv, res.data_tv) and den.data_tv.dtype == np.float32
    assert np.array_equal(den.mask, np.asarray(res.mask_img.dataobj) > 0)
    assert np.array_equal(den.affine, res.mask_img.affine) and den.t_r == 2.0
    assert den.run_lengths.tolist() == [30, 20] and den.strategy == "fox"
    d = load_denoised_npz(path)
    assert np.array_equal(d["tsnr_v"], res.tsnr_v) and d["t_r"] == 2.0
    assert np.array_equal(d["mask_img"].affine, res.mask_img.affine)
    rewrite(path, run_lengths=None)                        # an older file: one run
    assert load_denoised(path).run_lengths.tolist() == [50]


def test_raw_runs_roundtrip(tmp_path):
    raw = small_raw_runs()
    got = load_raw_runs(save_raw_runs(raw, tmp_path / "u_halves.npz"))
    assert np.array_equal(got.raw_tc, raw.raw_tc) and np.array_equal(got.columns, raw.columns)
    assert all(np.array_equal(a, b) for a, b in zip(got.kept, raw.kept))
    assert all(np.array_equal(a, b) for a, b in zip(got.confounds, raw.confounds))
    assert got.strategy == raw.strategy and got.t_r == 2.0 and got.run_lengths.tolist() == [25, 20]


READERS = [load_denoised, load_denoised_npz, load_raw_runs]


@pytest.mark.parametrize("reader", READERS)
def test_missing_and_unreadable_files(tmp_path, reader):
    with pytest.raises(InputError, match=r"nothing.npz: .* not found; rerun the denoise step"):
        reader(tmp_path / "nothing.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(InputError, match=r"^bad.npz: cannot read .*; delete it and rerun the denoise step$"):
        reader(tmp_path / "bad.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(InputError, match=r"^text.npz: cannot read"):
        reader(tmp_path / "text.npz")


@pytest.mark.parametrize("change, reader, match", [
    (dict(mask=None), load_denoised, r"without the array\(s\) \['mask'\]"),
    (dict(tsnr_v=None), load_denoised_npz, r"without the array\(s\) \['tsnr_v'\]"),
    (dict(data_tv=np.zeros((50, 7), np.float32)), load_denoised, r"data_tv has shape \(50, 7\) but the mask has 24"),
    (dict(run_lengths=np.array([30, 30])), load_denoised_npz, r"run_lengths sum to 60, data_tv has 50"),
    (dict(tsnr_v=np.ones(3, np.float32)), load_denoised_npz, r"tsnr_v has shape \(3,\)"),
    (dict(affine=np.eye(3)), load_denoised, r"not a 3D grid"),
])
def test_damaged_denoised_npz(tmp_path, change, reader, match):
    path = save_denoised_npz(small_result(), tmp_path / "d.npz")
    rewrite(path, **change)
    with pytest.raises(InputError, match=rf"^d.npz: .*{match}.*; delete it and rerun the denoise step$"):
        reader(path)


def test_non_finite_denoised_data(tmp_path):
    res = small_result()
    res.data_tv[3, 2] = np.nan
    path = save_denoised_npz(res, tmp_path / "d.npz")
    with pytest.raises(InputError, match=r"^d.npz: data_tv contains NaN .*rerun the denoise step$"):
        load_denoised(path)


@pytest.mark.parametrize("change, match", [
    (dict(kept_1=None), r"without the array\(s\) \['kept_1'\]"),
    (dict(n_runs=None), r"without the array\(s\) \['n_runs'\]"),
    (dict(raw_tc=np.zeros((44, 6), np.float32)), r"kept volumes \[25, 20\] or columns \(6\) do not match raw_tc \(44, 6\)"),
    (dict(confounds_0=np.zeros((27, 4))), r"confounds and kept volumes of a run differ"),
    (dict(strategy_json=np.array("{not json")), r"strategy_json is not JSON"),
])
def test_damaged_halves_npz(tmp_path, change, match):
    path = save_raw_runs(small_raw_runs(), tmp_path / "h.npz")
    rewrite(path, **change)
    with pytest.raises(InputError, match=rf"^h.npz: .*{match}.*; delete it and rerun the denoise step$"):
        load_raw_runs(path)
