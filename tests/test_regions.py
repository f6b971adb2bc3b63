"""Seed and search masks, atlas look-ups and literature sites (regions.py)."""

from __future__ import annotations

import itertools
import json

import nibabel as nib
import numpy as np
import pytest

from tmstarget.target import regions as R
from tmstarget.errors import InputError

FOX_BA46_SITES = [(-44.0, 40.0, 29.0), (-38.0, 44.0, 26.0)]


@pytest.fixture(scope="module")
def mni_mask_img():
    """The MNI152 2 mm brain mask shipped with nilearn, as a stand-in BOLD brain mask."""
    from nilearn.datasets import load_mni152_brain_mask

    m = load_mni152_brain_mask(resolution=2)
    return nib.Nifti1Image((m.get_fdata() > 0).astype(np.uint8), m.affine)


def _ijk(img, point_ras_mm):
    return tuple(np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), point_ras_mm)).astype(int))


def test_literature_sites_match_method_table():
    sites = R.literature_sites_mni_ras_mm()
    assert set(R.DLPFC_SPHERE_SITES) <= set(sites)
    np.testing.assert_array_equal(sites["BA46 site"], [-44, 40, 29])
    np.testing.assert_array_equal(sites["5-cm rule site"], [-41, 16, 54])
    assert all(s.shape == (3,) and s[0] < 0 for s in sites.values())  # all left hemisphere


def test_in_ba46_labels_fox_sites_and_not_the_5cm_site():
    for p in FOX_BA46_SITES:
        assert R.in_ba46(p)
        assert R.in_ba46(p, hemisphere="left")
        assert not R.in_ba46(p, hemisphere="right")
        assert R.hcpex_label_at(p) == "Area_46_L"
    atlas = nib.load(R.hcpex_path())
    ijk_right = np.argwhere(np.asanyarray(atlas.dataobj) == R.hcpex_labels()["Area_46_R"])
    right_point = nib.affines.apply_affine(atlas.affine, ijk_right[len(ijk_right) // 2])
    assert right_point[0] > 0
    assert R.in_ba46(right_point, hemisphere="right") and not R.in_ba46(right_point, hemisphere="left")
    assert not R.in_ba46((-41.0, 16.0, 54.0))                  # 5-cm rule site: area 8Av
    assert not R.in_ba46((0.0, 0.0, 500.0))                    # outside the atlas


def test_ba46_search_mask_contains_fox_sites(mni_mask_img):
    region = R.atlas_label_mask(mni_mask_img, R.BA46_LABELS, "left")
    for p in FOX_BA46_SITES:
        assert region[_ijk(mni_mask_img, p)]
    search, info = R.search_mask(mni_mask_img, {"region": "ba46"})
    assert search[_ijk(mni_mask_img, FOX_BA46_SITES[0])]
    # (-38, 44, 26) has grey-matter probability ~0.17 in the MNI152 template: it is excluded by the
    # 0.3 threshold but a grey-matter BA46 voxel lies within one 2 mm voxel of it.
    xyz = R.voxel_centres_ras_mm(mni_mask_img.shape, mni_mask_img.affine)[search]
    assert np.min(np.linalg.norm(xyz - FOX_BA46_SITES[1], axis=1)) <= 2.0 + 1e-6
    assert info["atlas_labels"] == ["Area_46_L"]
    assert np.all(xyz[:, 0] < 0)
    assert info["search_voxels_in_mask"] == int(search.sum()) > 300
    gm = R.grey_matter_probability(mni_mask_img)
    assert gm[search].min() >= 0.3


def test_right_hemisphere_and_spheres(mni_mask_img):
    right, _ = R.search_mask(mni_mask_img, {"region": "ba46", "hemisphere": "right"})
    xyz = R.voxel_centres_ras_mm(mni_mask_img.shape, mni_mask_img.affine)
    assert np.all(xyz[right][:, 0] > 0)
    spheres, info = R.search_mask(mni_mask_img, {"region": "dlpfc_spheres"})
    centres = np.asarray(info["sphere_centres_mni_ras_mm"])
    assert centres.shape == (4, 3)
    d = np.linalg.norm(xyz[spheres][:, None, :] - centres[None], axis=-1).min(axis=1)
    assert d.max() <= 20.0 + 1e-6
    both, _ = R.search_mask(mni_mask_img, {"region": "ba46_or_spheres"})
    ba46, _ = R.search_mask(mni_mask_img, {"region": "ba46"})
    assert np.all(both >= spheres) and np.all(both >= ba46)
    assert both.sum() == (spheres | ba46).sum()


def test_sphere_mask_counts_lattice_points(mni_mask_img):
    # radius 10 mm on a 2 mm grid, centred on a voxel centre: lattice points with |v| <= 5 voxels
    expected = sum(1 for v in itertools.product(range(-5, 6), repeat=3) if np.dot(v, v) <= 25)
    sphere = R.sphere_mask(mni_mask_img, (6.0, 16.0, -10.0), 10.0)
    assert sphere.sum() == expected
    assert abs(sphere.sum() * 8.0 - 4 / 3 * np.pi * 1000) / (4 / 3 * np.pi * 1000) < 0.03


def test_sphere_mask_is_the_full_grid_rule_plus_the_voxel_of_the_point(mni_mask_img):
    """The bounding-box sphere equals the full-grid rule (centre within radius, 1e-6 mm^2 tolerance) used
    for the seed and DLPFC spheres, voxel for voxel; below half a voxel diagonal it adds the voxel of the
    point, and a point outside the grid marks nothing of its own."""
    xyz = R.voxel_centres_ras_mm(mni_mask_img.shape, mni_mask_img.affine)

    def full_grid(centre, radius):
        return np.sum((xyz - np.asarray(centre, float)) ** 2, axis=-1) <= float(radius) ** 2 + 1e-6

    rng = np.random.default_rng(0)
    sites = list(R.literature_sites_mni_ras_mm().values())
    cases = [([6, 16, -10], 10), ([-6, 16, -10], 10)] + [(c, 20.0) for c in sites] + [
        (rng.uniform(-80, 80, 3), rng.uniform(2.0, 25.0)) for _ in range(20)] + [([0.3, 0.7, -0.2], 6.0)]
    for centre, radius in cases:
        assert np.array_equal(R.sphere_mask(mni_mask_img, centre, radius), full_grid(centre, radius)), (centre, radius)
    tiny = R.sphere_mask(mni_mask_img, [1.0, 1.0, 1.0], 0.5)   # between voxel centres: none within 0.5 mm
    assert tiny.sum() == 1 and not full_grid([1.0, 1.0, 1.0], 0.5).any()
    assert tiny[_ijk(mni_mask_img, [1.0, 1.0, 1.0])]
    edge = R.sphere_mask(mni_mask_img, [0.0, 0.0, 200.0], 30.0)   # wholly outside the grid: empty, no voxel of its own
    assert np.array_equal(edge, full_grid([0.0, 0.0, 200.0], 30.0))


def test_seed_default_and_bilateral(mni_mask_img):
    seed, info = R.seed_mask(mni_mask_img, {})
    assert info["seed_voxels_in_mask"] == seed.sum() == R.sphere_mask(mni_mask_img, (6, 16, -10), 10).sum()
    xyz = R.voxel_centres_ras_mm(mni_mask_img.shape, mni_mask_img.affine)
    np.testing.assert_allclose(xyz[seed].mean(axis=0), [6, 16, -10], atol=0.01)
    bil, binfo = R.seed_mask(mni_mask_img, {"type": "bilateral"})
    np.testing.assert_allclose(xyz[bil].mean(axis=0), [0, 16, -10], atol=0.01)
    assert seed.sum() < bil.sum() < 2 * seed.sum()  # the two spheres overlap near the midline
    a25, ainfo = R.seed_mask(mni_mask_img, {"type": "area25"})
    assert ainfo["atlas_labels"] == ["Area_25_L", "Area_25_R"]
    centre = xyz[a25].mean(axis=0)
    assert abs(centre[0]) < 3 and np.linalg.norm(centre - [0, 16, -10]) < 12


def test_seed_partly_outside_fov_reports_kept_voxels(mni_mask_img, tmp_path):
    data = np.asanyarray(mni_mask_img.dataobj).copy()
    xyz = R.voxel_centres_ras_mm(data.shape, mni_mask_img.affine)
    data[xyz[..., 2] < -12] = 0                    # field of view cut below z = -12
    cut = nib.Nifti1Image(data, mni_mask_img.affine)
    seed, info = R.seed_mask(cut, {})
    sphere = R.sphere_mask(cut, (6, 16, -10), 10)
    assert info["seed_voxels_total"] == sphere.sum()
    assert info["seed_voxels_in_mask"] == (sphere & (xyz[..., 2] >= -12)).sum() < sphere.sum()


def test_seed_outside_fov_raises(mni_mask_img, tmp_path):
    data = np.asanyarray(mni_mask_img.dataobj).copy()
    xyz = R.voxel_centres_ras_mm(data.shape, mni_mask_img.affine)
    data[xyz[..., 1] > -20] = 0                    # posterior brain only
    path = tmp_path / "sub-01_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(data, mni_mask_img.affine), path)
    with pytest.raises(InputError, match="sub-01_desc-brain_mask.nii.gz.*seed"):
        R.run_masks(path, {}, {}, tmp_path / "seed.nii.gz", tmp_path / "search.nii.gz", tmp_path / "m.json")
    assert not (tmp_path / "seed.nii.gz").exists()
    with pytest.raises(InputError, match="seed.type"):
        R.seed_mask(mni_mask_img, {"type": "cube"})


def test_user_mask_on_another_grid(mni_mask_img, tmp_path):
    # a 1 mm user mask: a 6 mm box around the BA46 site, resampled by nearest neighbour
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-60, 20, 10]
    data = np.zeros((40, 40, 40), np.uint8)
    data[16 - 6:16 + 7, 20 - 6:20 + 7, 19 - 6:19 + 7] = 1   # centred on (-44, 40, 29)
    path = tmp_path / "user_search.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    search, info = R.search_mask(mni_mask_img, {"region": "mask", "mask_path": str(path),
                                                "grey_matter_threshold": 0.0, "min_voxels": 5})
    xyz = R.voxel_centres_ras_mm(mni_mask_img.shape, mni_mask_img.affine)[search]
    assert np.all(np.abs(xyz - [-44, 40, 29]) <= 6.5)
    grid_xyz = R.voxel_centres_ras_mm(mni_mask_img.shape, mni_mask_img.affine)
    in_box = np.all(np.abs(grid_xyz - [-44, 40, 29]) <= 6.5, axis=-1)   # 7 x 7 x 6 centres
    assert in_box.sum() == 7 * 7 * 6
    assert search.sum() == (in_box & (np.asanyarray(mni_mask_img.dataobj) > 0)).sum() > 100
    with pytest.raises(InputError, match="mask_path"):
        R.search_mask(mni_mask_img, {"region": "mask"})


def test_run_masks_writes_aligned_masks_and_json(mni_mask_img, tmp_path):
    path = tmp_path / "brain_mask.nii.gz"
    nib.save(mni_mask_img, path)
    out = R.run_masks(path, {"type": "sphere", "center_mni_ras_mm": [6, 16, -10], "radius_mm": 10,
                             "mask_path": None},
                      {"region": "ba46", "grey_matter_threshold": 0.3, "mask_path": None},
                      tmp_path / "seed.nii.gz", tmp_path / "search.nii.gz", tmp_path / "masks.json")
    seed_img, search_img = nib.load(tmp_path / "seed.nii.gz"), nib.load(tmp_path / "search.nii.gz")
    for img in (seed_img, search_img):
        assert img.shape == mni_mask_img.shape
        np.testing.assert_allclose(img.affine, mni_mask_img.affine)
    assert np.asanyarray(seed_img.dataobj).sum() == out["seed"]["seed_voxels_in_mask"]
    assert np.asanyarray(search_img.dataobj).sum() == out["search_region"]["search_voxels_in_mask"]
    on_disk = json.loads((tmp_path / "masks.json").read_text())
    assert on_disk["seed"]["radius_mm"] == 10 and on_disk["search_region"]["hemisphere"] == "left"
    assert on_disk["Sources"] == ["brain_mask.nii.gz"]
    with pytest.raises(InputError, match="overlap"):
        R.run_masks(path, {"center_mni_ras_mm": [-44, 40, 29]}, {}, tmp_path / "s2.nii.gz",
                    tmp_path / "r2.nii.gz", tmp_path / "m2.json")
