"""Scalp projection on a synthetic spherical head with known geometry, and coil poses by hand."""

from __future__ import annotations

import numpy as np
import nibabel as nib
import pytest

from tmstarget.errors import InputError
from tmstarget.scalp import (coil_pose_simnibs, entry_to_target_mm, head_mask_img, scalp_entry,
                             scalp_to_cortex_mm, target_offset_from_axis_mm)
from tmstarget.spaces import ijk_to_world_ras_mm

VOXEL_MM = 1.5
SHAPE = (100, 100, 100)
HEAD_CENTRE = np.array([3.0, -2.0, 5.0])
HEAD_RADIUS_MM = 60.0
BRAIN_RADIUS_MM = 45.0
A = np.sqrt(0.5)


def _affine():
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -np.array(SHAPE) * VOXEL_MM / 2
    return affine


def _radius_mm():
    xyz = ijk_to_world_ras_mm(_affine(), np.indices(SHAPE).reshape(3, -1).T)
    return np.linalg.norm(xyz - HEAD_CENTRE, axis=1).reshape(SHAPE)


@pytest.fixture(scope="module")
def head():
    """A noisy spherical 'T1w' (bright tissue, dark skull ring, dark noisy air) and its brain mask."""
    r = _radius_mm()
    rng = np.random.default_rng(0)
    t1w = np.where(r < HEAD_RADIUS_MM, 300 + 20 * rng.standard_normal(SHAPE), 10 * np.abs(rng.standard_normal(SHAPE)))
    t1w[(r > HEAD_RADIUS_MM - 8) & (r < HEAD_RADIUS_MM - 5)] = 30.0  # dark skull inside the head
    t1w_img = nib.Nifti1Image(t1w.astype(np.float32), _affine())
    brain_img = nib.Nifti1Image((r < BRAIN_RADIUS_MM).astype(np.uint8), _affine())
    return t1w_img, head_mask_img(t1w_img), brain_img


def test_head_mask_fills_dark_skull_and_matches_sphere_volume(head):
    _, mask_img, _ = head
    mask = mask_img.get_fdata() > 0
    volume_ml = mask.sum() * VOXEL_MM ** 3 / 1000
    expected_ml = 4 / 3 * np.pi * HEAD_RADIUS_MM ** 3 / 1000
    assert volume_ml == pytest.approx(expected_ml, rel=0.02)
    r = _radius_mm()
    skull = (r > HEAD_RADIUS_MM - 7.5) & (r < HEAD_RADIUS_MM - 5.5)
    assert mask[skull].all()
    assert not mask[r > HEAD_RADIUS_MM + 2 * VOXEL_MM].any()


@pytest.mark.parametrize("direction", [(-0.6, 0.5, 0.6), (0.0, 0.0, 1.0), (0.3, -0.9, 0.1)])
def test_scalp_entry_is_nearest_sphere_point_with_radial_normal(head, direction):
    _, mask_img, _ = head
    u = np.asarray(direction) / np.linalg.norm(direction)
    target = HEAD_CENTRE + 35.0 * u
    entry, normal = scalp_entry(target, mask_img)
    # nearest point of a sphere to an inner point: on the ray from the centre through it
    assert np.linalg.norm(entry - (HEAD_CENTRE + HEAD_RADIUS_MM * u)) < 1.0  # < 1 voxel (1.5 mm)
    angle_deg = np.degrees(np.arccos(np.clip(np.dot(normal, -u), -1, 1)))
    assert angle_deg < 5.0
    assert np.linalg.norm(normal) == pytest.approx(1.0, abs=1e-9)


def test_scalp_entry_refuses_target_outside_head(head):
    _, mask_img, _ = head
    with pytest.raises(InputError, match="outside the head mask"):
        scalp_entry(HEAD_CENTRE + np.array([0, 0, HEAD_RADIUS_MM + 5]), mask_img)


def test_scalp_to_cortex_on_concentric_spheres(head):
    _, mask_img, brain_img = head
    u = np.array([-0.6, 0.5, 0.6]) / np.linalg.norm([-0.6, 0.5, 0.6])
    entry, normal = scalp_entry(HEAD_CENTRE + 30 * u, mask_img)
    depth = scalp_to_cortex_mm(entry, normal, brain_img)
    expected = np.linalg.norm(entry - HEAD_CENTRE) - BRAIN_RADIUS_MM
    assert depth == pytest.approx(expected, abs=0.75)  # half a voxel: the mask surface is voxelised
    # pointing away from the head: the brain is never met
    assert np.isnan(scalp_to_cortex_mm(entry, -normal, brain_img))
    # starting inside the brain: depth 0
    assert scalp_to_cortex_mm(HEAD_CENTRE, normal, brain_img) == 0.0


def test_coil_pose_hand_example_45_degrees():
    # entry on the left side, inward normal +x: posterior tangent (0,-1,0); "lateral" has no tangent
    # part there, so the second tangent axis is inferior (0,0,-1). 45 deg: y = (0,-a,-a).
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0], handle_angle_deg=45)
    expected = np.array([
        [0.0, 0.0, 1.0, -50.0],
        [-A, -A, 0.0, 40.0],
        [A, -A, 0.0, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(pose, expected, atol=1e-12)


def test_coil_pose_hand_example_straight_back_and_vertex():
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0], handle_angle_deg=0)
    np.testing.assert_allclose(pose[:3, :3], [[0, 0, 1], [0, -1, 0], [1, 0, 0]], atol=1e-12)
    # vertex entry on the right of the origin, normal down: lateral is +x, y = (a, -a, 0), x = (a, a, 0)
    pose = coil_pose_simnibs([0.5, 0, 80], [0, 0, -1], handle_angle_deg=45)
    np.testing.assert_allclose(pose[:3, :3], [[A, A, 0], [A, -A, 0], [0, 0, -1]], atol=1e-12)


def test_coil_pose_left_dlpfc_is_posterior_lateral_and_right_handed():
    entry = np.array([-45.0, 45.0, 40.0])
    normal = -entry / np.linalg.norm(entry)
    pose = coil_pose_simnibs(entry, normal, handle_angle_deg=45)
    axes = pose[:3, :3]
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-12)
    assert np.linalg.det(axes) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(axes[:, 2], normal, atol=1e-12)
    y_axis = axes[:, 1]
    posterior_t = np.array([0, -1, 0]) - np.dot([0, -1, 0], normal) * normal
    posterior_t /= np.linalg.norm(posterior_t)
    assert np.degrees(np.arccos(np.dot(y_axis, posterior_t))) == pytest.approx(45.0, abs=1e-9)
    assert y_axis[0] < 0  # towards the left (lateral for a left entry)
    # 90 deg handle is purely lateral in the tangent plane: perpendicular to the posterior tangent
    y90 = coil_pose_simnibs(entry, normal, handle_angle_deg=90)[:3, 1]
    assert np.dot(y90, posterior_t) == pytest.approx(0.0, abs=1e-12)


def test_coil_pose_explicit_handle_and_skin_distance():
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0], handle_direction=[0.3, 0, 1], skin_distance_mm=4)
    np.testing.assert_allclose(pose[:3, 1], [0, 0, 1], atol=1e-12)  # tangent part of the handle vector
    np.testing.assert_allclose(pose[:3, 3], [-54, 40, 40], atol=1e-12)


def test_distances_hand_example():
    assert entry_to_target_mm([0, 0, 0], [3, 4, 0]) == pytest.approx(5.0)
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0])
    assert target_offset_from_axis_mm(pose, [-30, 40, 40]) == pytest.approx(0.0, abs=1e-12)
    assert target_offset_from_axis_mm(pose, [-30, 43, 44]) == pytest.approx(5.0, abs=1e-12)
