"""Scalp projection on a synthetic spherical head with known geometry, and coil poses by hand."""

from __future__ import annotations

import numpy as np
import pytest

from builders.sphere_head import BRAIN_RADIUS_MM, HEAD_CENTRE, HEAD_RADIUS_MM, VOXEL_MM, sphere_t1w_and_brain
from builders.sphere_head import radius_mm as _radius_mm
from tmstarget.errors import InputError
from tmstarget.native.scalp import (coil_pose_simnibs, entry_to_target_mm, handle_direction_from_pose,
                             handle_direction_ras, head_mask_img, scalp_entry, scalp_to_cortex_mm,
                             target_offset_from_axis_mm)

A = np.sqrt(0.5)


@pytest.fixture(scope="module")
def head():
    """A noisy spherical 'T1w' (bright tissue, dark skull ring, dark noisy air) and its brain mask."""
    t1w_img, brain_img = sphere_t1w_and_brain()
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
    # part there, so the second tangent axis is inferior (0,0,-1). 45 deg: handle = (0,-a,-a).
    # SimNIBS: y points AWAY from the handle, y = (0,a,a); x = y cross z = (0,a,-a).
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0], handle_angle_deg=45)
    expected = np.array([
        [0.0, 0.0, 1.0, -50.0],
        [A, A, 0.0, 40.0],
        [-A, A, 0.0, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(pose, expected, atol=1e-12)
    np.testing.assert_allclose(handle_direction_from_pose(pose), [0, -A, -A], atol=1e-12)


def test_coil_pose_hand_example_straight_back_and_vertex():
    # handle straight back (0,-1,0): y = (0,1,0) anterior, x = y cross z = (0,0,-1)
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0], handle_angle_deg=0)
    np.testing.assert_allclose(pose[:3, :3], [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    # vertex entry on the right of the origin, normal down: lateral is +x, handle = (a, -a, 0),
    # y = (-a, a, 0), x = y cross z = (-a, -a, 0)
    pose = coil_pose_simnibs([0.5, 0, 80], [0, 0, -1], handle_angle_deg=45)
    np.testing.assert_allclose(pose[:3, :3], [[-A, -A, 0], [-A, A, 0], [0, 0, -1]], atol=1e-12)
    np.testing.assert_allclose(handle_direction_from_pose(pose), [A, -A, 0], atol=1e-12)


def _posterior_tangent(normal):
    p = np.array([0.0, -1.0, 0.0]) - np.dot([0.0, -1.0, 0.0], normal) * normal
    return p / np.linalg.norm(p)


@pytest.mark.parametrize("side", [-1.0, 1.0], ids=["left", "right"])
def test_coil_pose_dlpfc_handle_is_posterior_lateral_and_right_handed(side):
    entry = np.array([side * 45.0, 45.0, 40.0])
    normal = -entry / np.linalg.norm(entry)
    pose = coil_pose_simnibs(entry, normal, handle_angle_deg=45)
    axes = pose[:3, :3]
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-12)
    assert np.linalg.det(axes) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(axes[:, 2], normal, atol=1e-12)
    handle = handle_direction_from_pose(pose)
    np.testing.assert_allclose(handle, -axes[:, 1], atol=1e-12)  # SimNIBS: the handle lies along -y
    np.testing.assert_allclose(handle, handle_direction_ras(entry, normal, 45), atol=1e-12)
    posterior_t = _posterior_tangent(normal)
    assert np.degrees(np.arccos(np.dot(handle, posterior_t))) == pytest.approx(45.0, abs=1e-9)
    assert handle[1] < -0.3            # posterior
    assert side * handle[0] > 0.3      # lateral: left for a left entry, right for a right one
    assert axes[1, 1] > 0.3            # the SimNIBS y axis points anterior (away from the handle)
    # 90 deg handle is purely lateral in the tangent plane: perpendicular to the posterior tangent
    h90 = handle_direction_from_pose(coil_pose_simnibs(entry, normal, handle_angle_deg=90))
    assert np.dot(h90, posterior_t) == pytest.approx(0.0, abs=1e-12)
    assert side * h90[0] > 0.5


def test_handle_angle_zero_points_straight_posterior():
    entry = np.array([-45.0, 45.0, 40.0])
    normal = -entry / np.linalg.norm(entry)
    handle = handle_direction_from_pose(coil_pose_simnibs(entry, normal, handle_angle_deg=0))
    np.testing.assert_allclose(handle, _posterior_tangent(normal), atol=1e-12)
    # no sideways component in the scalp tangent plane: the handle lies in the plane of the normal and world y
    assert np.dot(handle, np.cross(normal, [0.0, 1.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
    assert handle[1] < -0.6


def test_coil_pose_explicit_handle_and_skin_distance():
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0], handle_direction=[0.3, 0, 1], skin_distance_mm=4)
    np.testing.assert_allclose(handle_direction_from_pose(pose), [0, 0, 1], atol=1e-12)  # tangent part
    np.testing.assert_allclose(pose[:3, 1], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], [-54, 40, 40], atol=1e-12)


def test_distances_hand_example():
    assert entry_to_target_mm([0, 0, 0], [3, 4, 0]) == pytest.approx(5.0)
    pose = coil_pose_simnibs([-50, 40, 40], [1, 0, 0])
    assert target_offset_from_axis_mm(pose, [-30, 40, 40]) == pytest.approx(0.0, abs=1e-12)
    assert target_offset_from_axis_mm(pose, [-30, 43, 44]) == pytest.approx(5.0, abs=1e-12)
