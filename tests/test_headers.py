"""tmstarget.io.nifti: the one copy of each NIfTI header check and of the streaming reader."""

from __future__ import annotations

import gzip
import logging

import nibabel as nib
import numpy as np
import pytest

from tmstarget.errors import InputError
from tmstarget.io import nifti


def _img(shape=(5, 6, 7), affine=None, dtype=np.float32, data=None):
    data = np.zeros(shape, dtype) if data is None else data
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    return img


def _with_tr(value, unit):
    img = _img((4, 4, 4, 10))
    img.header.set_xyzt_units("mm", unit)
    img.header.set_zooms((1.0, 1.0, 1.0, value))
    return img


@pytest.mark.parametrize("value, unit", [(2.0, "sec"), (2000.0, "msec"), (2e6, "usec")])
def test_header_tr_honours_units(tmp_path, value, unit):
    img = _with_tr(value, unit)
    assert nifti.header_tr_s(img) == pytest.approx(2.0, rel=1e-6)
    assert nifti.header_tr_s(img.header) == pytest.approx(2.0, rel=1e-6)
    path = tmp_path / "bold.nii.gz"    # no sidecar: read_t_r falls back to the header, same units rule
    nib.save(img, path)
    assert nifti.read_t_r(path) == pytest.approx(2.0, rel=1e-6)


def test_header_tr_unset_and_mismatch_message():
    assert nifti.header_tr_s(_img((4, 4, 4))) is None
    assert nifti.header_tr_s(_with_tr(0.0, "sec")) is None
    img = _with_tr(2500.0, "msec")
    assert nifti.header_tr_mismatch(img, 2.0, "b.nii.gz") == (
        "b.nii.gz: header TR 2.5 s differs from the sidecar's RepetitionTime 2 s; using the sidecar (BIDS rule)")
    assert nifti.header_tr_mismatch(img, 2.505, "b.nii.gz") is None      # within 10 ms
    assert nifti.header_tr_mismatch(img, None, "b.nii.gz") is None


def test_dimension_rules_name_the_file():
    with pytest.raises(InputError, match=r"^b.nii.gz is 3D with shape \(6, 6, 6\); a resting-state run must be 4D"):
        nifti.require_4d((6, 6, 6), "b.nii.gz")
    with pytest.raises(InputError, match=r"^b.nii.gz has one volume \(shape \(6, 6, 6, 1\)\)"):
        nifti.require_4d((6, 6, 6, 1), "b.nii.gz")
    nifti.require_4d((6, 6, 6, 2), "b.nii.gz")
    with pytest.raises(InputError, match=r"^t.nii.gz is 4D with shape \(8, 8, 8, 3\); a T1w must be one 3D volume"):
        nifti.require_3d((8, 8, 8, 3), "t.nii.gz", "T1w")
    nifti.require_3d((8, 8, 8, 1), "t.nii.gz", "T1w")
    with pytest.raises(InputError, match=r"t.nii.gz has shape \(8, 8\); a T1w must be a 3D volume"):
        nifti.require_3d((8, 8), "t.nii.gz", "T1w")


def test_openers_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"missing.nii.gz: BOLD run not found; check the path"):
        nifti.open_bold_4d(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti" * 20))
    with pytest.raises(InputError, match=r"^bad.nii.gz: cannot read the NIfTI header .*copy or convert it again"):
        nifti.load_header(bad)
    three = tmp_path / "three.nii.gz"
    nib.save(_img((6, 6, 6)), three)
    with pytest.raises(InputError, match=r"three.nii.gz is 3D with shape \(6, 6, 6\)"):
        nifti.open_bold_4d(three)
    one_volume = tmp_path / "one.nii.gz"
    nib.save(_img((4, 4, 4, 1), data=np.arange(64, dtype=np.float32).reshape(4, 4, 4, 1)), one_volume)
    img = nifti.load_img_checked(one_volume, ndim=3, what="T1w")
    assert img.shape == (4, 4, 4) and float(np.asarray(img.dataobj)[3, 3, 3]) == 63.0
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 1, 1] = np.nan
    nib.save(_img(data=nan), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match=r"nan.nii.gz contains 1 NaN or infinite values"):
        nifti.load_img_checked(tmp_path / "nan.nii.gz", ndim=3)
    nib.save(_img(data=np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)), tmp_path / "t1.nii.gz")
    raw = (tmp_path / "t1.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: int(len(raw) * 0.6)])
    with pytest.raises(InputError, match=r"cut.nii.gz: cannot read this T1w \(EOFError: .*\); the file is truncated"):
        nifti.load_img_checked(tmp_path / "cut.nii.gz", ndim=3, what="T1w")


def test_qform_sform_one_measure_for_navigation_and_preprocessing(caplog):
    sform = np.diag([2.0, 2.0, 2.0, 1.0])
    qform = sform.copy()
    qform[0, 3] = 3.0                                  # every corner moves 3 mm
    img = _img()
    img.set_qform(qform, 1)
    img.set_sform(sform, 1)
    assert nifti.qform_sform_disagreement_mm(img) == pytest.approx(3.0, abs=1e-5)
    assert nifti.affine_disagreement_mm(qform, sform, img.shape) == pytest.approx(3.0, abs=1e-5)
    with pytest.raises(InputError, match=r"^t1.nii.gz: qform and sform disagree by up to 3.00 mm"):
        nifti.check_qform_sform(img, name="t1.nii.gz")
    with pytest.raises(InputError, match=r"^t1.nii.gz: the qform and sform of this T1w disagree .* 3.00 mm"):
        nifti.choose_affine(img, "t1.nii.gz", what="T1w")
    with caplog.at_level(logging.WARNING):
        affine, warnings = nifti.choose_affine(img, "bold.nii.gz", what="BOLD run", disagreement="warn")
    np.testing.assert_allclose(affine, sform)
    assert len(warnings) == 1 and warnings[0].endswith("using the sform")
    info = nifti.check_qform_sform(img, tol_mm=3.01, name="t1.nii.gz")
    assert info["affine_used"] == "sform" and info["max_difference_mm"] == pytest.approx(3.0, abs=1e-5)
    # no world space: navigation refuses, preprocessing goes on with the voxel sizes and says so
    img.set_qform(None, 0)
    img.set_sform(None, 0)
    assert nifti.qform_sform_codes(img) == (0, 0) and nifti.qform_sform_disagreement_mm(img) == 0.0
    with pytest.raises(InputError, match="neither qform nor sform is set"):
        nifti.check_qform_sform(img, name="t1.nii.gz")
    affine, warnings = nifti.choose_affine(img, "bold.nii.gz", what="BOLD run")
    np.testing.assert_allclose(nifti.voxel_size_mm(affine), [2.0, 2.0, 2.0])
    assert "both 0" in warnings[0]


def test_orientation_codes_and_obliquity():
    assert nifti.orientation_codes(np.eye(4)) == "RAS"
    assert nifti.orientation_codes(np.diag([-1.0, -1.0, 1.0, 1.0])) == "LPS"
    tilt = np.eye(4)
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    tilt[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    assert nifti.is_oblique(tilt) and not nifti.is_oblique(np.eye(4))


def test_inflate_gzip_concatenated_members_and_truncation(tmp_path):
    payload = np.random.default_rng(0).bytes(300_000)
    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(payload[:100_000]) + gzip.compress(payload[100_000:]))
    assert b"".join(nifti.inflate_gzip(two, piece_bytes=4096)) == payload
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(payload)[:-5000])
    with pytest.raises(EOFError, match="compressed stream ends early"):
        b"".join(nifti.inflate_gzip(cut))


def test_stream_volumes_reads_each_volume_once_and_names_where_a_file_ends(tmp_path):
    data = np.random.default_rng(1).normal(size=(5, 4, 3, 40)).astype(np.float32)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    img = nib.load(path)
    vol_bytes = 5 * 4 * 3 * 4
    blocks = list(nifti.stream_volumes(str(path), int(img.dataobj.offset), vol_bytes, 40))
    assert [(t0, n) for t0, n, _ in blocks] == [(0, 16), (16, 16), (32, 8)]
    got = np.concatenate([np.frombuffer(raw, np.float32).reshape(5, 4, 3, n, order="F") for _, n, raw in blocks], axis=3)
    np.testing.assert_array_equal(got, data)
    raw = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EOFError, match=r"file ends in volume \d+ of 40"):
        list(nifti.stream_volumes(str(tmp_path / "cut.nii.gz"), int(img.dataobj.offset), vol_bytes, 40))
