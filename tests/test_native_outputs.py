"""The native step's vendor-neutral files (markers TSV, target sphere) and its settings (native/outputs.py)."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from tmstarget.errors import InputError
from tmstarget.native import outputs as no
from tmstarget.target.regions import sphere_mask


def _ref(shape=(41, 41, 41), origin=(-20, -20, -20)):
    affine = np.eye(4)
    affine[:3, 3] = origin
    return nib.Nifti1Image(np.zeros(shape, np.uint8), affine)


def test_markers_tsv_hand_example(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -20, -30]
    img = nib.Nifti1Image(np.zeros((20, 20, 20), np.uint8), affine)
    rows = [{"name": "target", "t1w_ras_mm": [0.0, 0.0, 0.0], "mni_ras_mm": [-40.0, 44.0, 26.0],
             "description": "hand\twith tab"},
            {"name": "scalp_entry", "t1w_ras_mm": [-9.2, 1.1, 2.9], "mni_ras_mm": [-60.0, 44.0, 30.0]}]
    path = no.write_markers_tsv(tmp_path / "sub" / "m.tsv", rows, img)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "name\tx\ty\tz\tmni_x\tmni_y\tmni_z\ti\tj\tk\tdescription"
    assert lines[1] == "target\t0.000\t0.000\t0.000\t-40.000\t44.000\t26.000\t5\t10\t15\thand with tab"
    # (-9.2 + 10)/2 = 0.4 -> 0, (1.1 + 20)/2 = 10.55 -> 11, (2.9 + 30)/2 = 16.45 -> 16; no description: n/a
    assert lines[2] == "scalp_entry\t-9.200\t1.100\t2.900\t-60.000\t44.000\t30.000\t0\t11\t16\tn/a"
    with open(path, newline="", encoding="utf-8") as f:
        assert [r["name"] for r in csv.DictReader(f, delimiter="\t")] == ["target", "scalp_entry"]


def test_sphere_is_the_regions_rule_with_lattice_count_and_centre():
    ref = _ref()
    sphere = np.asanyarray(no.sphere_mask_img([1.0, -2.0, 3.0], ref, 5.0).dataobj)
    assert sphere.dtype == np.uint8
    assert sphere.sum() == 515  # integer lattice points with x^2 + y^2 + z^2 <= 25
    assert np.array_equal(sphere > 0, sphere_mask(ref, [1.0, -2.0, 3.0], 5.0))
    np.testing.assert_allclose(np.argwhere(sphere).mean(axis=0) + ref.affine[:3, 3], [1, -2, 3], atol=1e-12)
    tiny = np.asanyarray(no.sphere_mask_img([1.3, -2.0, 3.0], ref, 0.1).dataobj) > 0
    assert tiny.sum() == 1 and tiny[21, 18, 23]
    with pytest.raises(InputError, match="outside the T1w grid"):
        no.sphere_mask_img([100.0, 0.0, 0.0], ref, 5.0)


def test_sphere_file_has_mm_units_both_codes_and_names_the_t1w(tmp_path):
    sha = "ab" * 32
    img = nib.load(no.save_sphere(tmp_path / "s.nii.gz", [1.0, -2.0, 3.0], _ref(), 5.0, t1w_sha256=sha))
    assert img.header.get_xyzt_units()[0] == "mm"
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    assert img.header["descrip"].tobytes().rstrip(b"\0").decode() == f"T1w sha256:{sha}"
    assert int(np.asanyarray(img.dataobj).sum()) == 515


def test_native_settings_come_from_config_yaml():
    from tmstarget.config.settings import default_config

    defaults = default_config()["native"]
    assert no.native_settings(None) == defaults
    assert no.native_settings({"handle_angle_deg": 30})["handle_angle_deg"] == 30
    with pytest.raises(InputError, match="unknown key"):
        no.native_settings({"handle_angle": 30})
    with pytest.raises(InputError, match="target_sphere_radius_mm must be > 0"):
        no.native_settings({"target_sphere_radius_mm": 0})
