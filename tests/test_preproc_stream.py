"""Out-of-core BOLD preprocessing (issue 14 item 3): the streamed pieces give the in-memory numbers,
and preprocess_bold's peak memory does not grow with the number of volumes."""

from __future__ import annotations

import tracemalloc

import ants
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tmstarget.preproc import confounds as pc
from tmstarget.preproc import stream as ps
from tmstarget.preproc import bold as pb
from tmstarget.preproc import resample as prs
from tmstarget.preproc import templates as ptpl
from tmstarget.errors import InputError
from tmstarget.preproc.headers import RAS_TO_LPS

from builders.nifti import write_nifti


def _run(head, n_t, seed=0, moves=True):
    """A 4D run of the head with small rigid moves (voxel shifts) and noise, float32 (X, Y, Z, T)."""
    rng = np.random.default_rng(seed)
    out = np.empty(head.shape + (n_t,), np.float32)
    for t in range(n_t):
        shift = rng.normal(0, 0.3, 3) if moves and t else np.zeros(3)
        out[..., t] = ndimage.shift(head, shift, order=1) + rng.normal(0, 10, head.shape)
    return out


def _save_int16(data, affine, path, t_r=2.0):
    return write_nifti(path, np.clip(np.rint(data), 0, 32767), affine, tr=t_r, dtype=np.int16, codes=None)


def test_bold_volumes_read_the_stored_run_volume_by_volume(small_head, tmp_path):
    head, affine = small_head
    path = _save_int16(_run(head, 14), affine, tmp_path / "run_bold.nii.gz")
    full = nib.load(path).get_fdata(dtype=np.float32)
    raw = ps.uncompressed_copy(path, tmp_path)
    assert raw.name.endswith(".tmp.nii") and raw.parent == tmp_path
    vols = ps.BoldVolumes(raw).drop(3)
    assert vols.shape == full.shape[:3] + (11,)
    for t in (0, 5, 10):
        np.testing.assert_array_equal(vols[..., t], full[..., 3 + t])  # exact: int16 -> float32
    # the streamed global signal equals the in-memory one within float32 round-off
    np.testing.assert_allclose(pb.head_global_signal_streamed(ps.BoldVolumes(raw)), pb.head_global_signal(full),
                               rtol=1e-5)
    # a truncated .nii.gz and a NaN volume are named
    blob = path.read_bytes()
    bad = tmp_path / "cut_bold.nii.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="cut_bold.nii.gz: cannot read"):
        ps.uncompressed_copy(bad, tmp_path)
    nan_run = _run(head, 12)
    nan_run[3, 3, 3, 7] = np.nan
    nan_path = tmp_path / "nan_bold.nii"
    nib.save(nib.Nifti1Image(nan_run, affine), nan_path)
    with pytest.raises(InputError, match="1 NaN or infinite values in volume 7"):
        ps.BoldVolumes(nan_path, name="nan_bold.nii")[..., 7]


def test_disk_matrix_gives_the_in_memory_dvars_and_acompcor(tmp_path):
    rng = np.random.default_rng(1)
    n_t, n_v = 150, 3000
    data_tv = (rng.normal(0, 1, (n_t, n_v)) + rng.normal(0, 1, (n_t, 1)) * rng.normal(0, 1, n_v)
               + 100).astype(np.float32)
    store = ps.DiskTimeVoxels.create(tmp_path / "m.bin", n_t, n_v)
    for t in range(n_t):
        store.write_row(t, data_tv[t])
    np.testing.assert_array_equal(store[:, 10:20], data_tv[:, 10:20])
    part = store.columns(1000, 3000)
    assert part.shape == (n_t, 2000)
    np.testing.assert_array_equal(part[:, 0:5], data_tv[:, 1000:1005])
    d_mem, s_mem = pc.dvars(data_tv[:, 1000:])
    d_disk, s_disk = pc.dvars(part, chunk_voxels=ps.voxels_per_block(n_t, budget_bytes=200_000))
    np.testing.assert_allclose(d_disk, d_mem, rtol=1e-10)
    np.testing.assert_allclose(s_disk, s_mem, rtol=1e-10)
    c_mem = pc.acompcor(data_tv, 5, 2.0)
    c_disk = pc.acompcor(store, 5, 2.0, chunk_voxels=ps.voxels_per_block(n_t, budget_bytes=200_000))
    np.testing.assert_allclose(c_disk, c_mem, atol=1e-8)


def test_slice_timing_slab_by_slab_equals_in_memory(small_head, tmp_path):
    head, affine = small_head
    data = _run(head, 20, moves=False)
    path = tmp_path / "run.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    for axis in (2, 0):
        n_slices = data.shape[axis]
        times = list(np.linspace(0, 1.9, n_slices)[np.r_[0:n_slices:2, 1:n_slices:2]])
        expected = pc.slice_timing_correct(data[..., 2:], times, 2.0, slice_axis=axis)
        old = ps.BLOCK_BYTES
        ps.BLOCK_BYTES = data.shape[0] * data.shape[1] * 18 * 8 * 3  # slabs of 3 planes
        try:
            out = ps.slice_timing_to_file(ps.BoldVolumes(path).drop(2), times, 2.0, axis, tmp_path)
        finally:
            ps.BLOCK_BYTES = old
        for t in (0, 9, 17):
            np.testing.assert_allclose(out[..., t], expected[..., t], rtol=1e-6, atol=1e-3)


def test_streamed_native_series_equal_full_copy(small_head, tmp_path):
    """Mean and tissue time series from volume-by-volume resampling equal those of the full
    motion-corrected copy the previous version held in memory."""
    head, affine = small_head
    data = _run(head, 12)
    rng = np.random.default_rng(2)
    transforms = np.array([pc.motion_params_to_rigid(rng.normal(0, [0.5] * 3 + [0.01] * 3), np.zeros(3))
                           for _ in range(12)])
    shape = data.shape[:3]
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    points_lps = ((RAS_TO_LPS @ affine)[:3, :3] @ ijk + (RAS_TO_LPS @ affine)[:3, 3:4]).T
    native = np.stack([prs.sample_volume(data[..., t], prs.world_to_voxel_indices(
        points_lps, RAS_TO_LPS @ transforms[t] @ RAS_TO_LPS, affine)).reshape(shape) for t in range(12)], axis=3)
    np.testing.assert_allclose(pb.motion_corrected_mean(data, affine, transforms), native.mean(axis=3),
                               rtol=1e-5, atol=1e-3)
    mean = native.mean(axis=3)
    brain = mean > 300
    wm = mean > 900
    csf = (mean > 100) & (mean < 400)
    series = pb.native_tissue_series(data, affine, transforms, brain, wm, csf, tmp_path / "s.bin")
    brain_tv, noise_tv = native[brain].T, native[wm | csf].T
    np.testing.assert_allclose(series["global_signal"], brain_tv.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(series["white_matter"], native[wm].T.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(series["csf"], native[csf].T.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(pc.dvars(series["brain_tv"])[0][1:], pc.dvars(brain_tv)[0][1:], rtol=1e-6)
    np.testing.assert_allclose(np.abs(pc.acompcor(series["noise_tv"], 3, 2.0)),
                               np.abs(pc.acompcor(noise_tv, 3, 2.0)), atol=1e-6)


@pytest.fixture(scope="module")
def fake_anat(tmp_path_factory):
    """Anatomical outputs without preprocess_anat: the MNI 2 mm template as the T1w (identity T1w->MNI)."""
    folder = tmp_path_factory.mktemp("anat")
    tpl = ptpl.load_template(2)
    mask = tpl["mask"].get_fdata() > 0
    gm, wm = tpl["gm"].get_fdata(), tpl["wm"].get_fdata()
    paths = {}
    for key, data in (("preproc_t1w", tpl["t1"].get_fdata() * mask), ("brain_mask", mask.astype(np.uint8)),
                      ("wm_probseg", wm * mask), ("csf_probseg", np.clip(1 - gm - wm, 0, 1) * mask)):
        paths[key] = str(folder / f"{key}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32 if key != "brain_mask" else np.uint8),
                                 tpl["t1"].affine), paths[key])
    paths["xfm_t1w_to_mni"] = str(folder / "identity.mat")
    ants.write_transform(ants.create_ants_transform(transform_type="AffineTransform", dimension=3),
                         paths["xfm_t1w_to_mni"])
    return paths


def _traced_peak_mb(head, affine, n_t, anat, folder):
    from tmstarget.bids.inputs import preproc_bold_paths

    bold = _save_int16(_run(head, n_t, seed=n_t), affine, folder / f"sub-01_task-rest_acq-{n_t}_bold.nii.gz")
    out = preproc_bold_paths(folder / "out", f"sub-01_task-rest_acq-{n_t}")
    old = ps.BLOCK_BYTES
    ps.BLOCK_BYTES = 2 * 2 ** 20  # a small voxel block, so blocks are not the whole brain at either length
    tracemalloc.start()
    try:
        qc = pb.preprocess_bold(bold, {"RepetitionTime": 2.0}, anat, out,
                                {"dummy_scans": 0, "chunk_volumes": 5, "registration_init": "header"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ps.BLOCK_BYTES = old
    assert qc["volumes"] == n_t
    assert nib.load(out["bold_mni"]).shape[3] == n_t
    assert not [p for p in (folder / "out").rglob("*") if ".tmp" in p.name]  # scratch removed
    return peak / 2 ** 20


@pytest.mark.slow
def test_preprocess_bold_peak_memory_does_not_grow_with_run_length(small_head, fake_anat, tmp_path):
    """Peak traced memory (numpy + Python allocations, tracemalloc) of the whole preprocess_bold on
    40 and on 160 volumes of a 4 mm run (chunk_volumes 5, voxel blocks of 2 MB): the run is read
    volume by volume, so 4x the volumes may add at most 30 % to the peak, and the growth must stay
    below a tenth of one float32 copy of the 120 extra volumes. The previous version held two float32
    copies of the run (+ 2 x 64 MB here: ~1.6x the 40-volume peak).
    Measured 2026-12-02: 166.1 MB at both lengths (and at 100 and 400 volumes)."""
    head, affine = small_head
    peak_short = _traced_peak_mb(head, affine, 40, fake_anat, tmp_path)
    peak_long = _traced_peak_mb(head, affine, 160, fake_anat, tmp_path)
    extra_mb = head.size * 4 * 120 / 2 ** 20
    print(f"traced peak: {peak_short:.1f} MB (40 volumes), {peak_long:.1f} MB (160 volumes); one float32 copy "
          f"of the 120 extra volumes is {extra_mb:.0f} MB")
    assert peak_long < 1.3 * peak_short
    assert peak_long - peak_short < 0.1 * extra_mb
