"""A synthetic spherical head of known geometry (shared by the scalp and navigator-export tests).

A noisy bright sphere (skin and tissue) of radius ``HEAD_RADIUS_MM`` with a dark skull ring inside, in
dark noisy air, and a concentric brain mask of radius ``BRAIN_RADIUS_MM``; 1.5 mm voxels, the centre
off the world origin. World axes are anatomical (RAS): +x right, +y anterior, +z superior.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from tmstarget.native.spaces import ijk_to_world_ras_mm

VOXEL_MM = 1.5
SHAPE = (100, 100, 100)
HEAD_CENTRE = np.array([3.0, -2.0, 5.0])
HEAD_RADIUS_MM = 60.0
BRAIN_RADIUS_MM = 45.0


def sphere_affine() -> np.ndarray:
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -np.array(SHAPE) * VOXEL_MM / 2
    return affine


def radius_mm() -> np.ndarray:
    """Distance (mm) of every voxel centre from the head centre, shape SHAPE."""
    xyz = ijk_to_world_ras_mm(sphere_affine(), np.indices(SHAPE).reshape(3, -1).T)
    return np.linalg.norm(xyz - HEAD_CENTRE, axis=1).reshape(SHAPE)


def sphere_t1w_and_brain(seed: int = 0) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The 'T1w' (float32, qform = sform, code 1) and its brain mask (uint8)."""
    r = radius_mm()
    rng = np.random.default_rng(seed)
    t1w = np.where(r < HEAD_RADIUS_MM, 300 + 20 * rng.standard_normal(SHAPE), 10 * np.abs(rng.standard_normal(SHAPE)))
    t1w[(r > HEAD_RADIUS_MM - 8) & (r < HEAD_RADIUS_MM - 5)] = 30.0  # dark skull inside the head
    t1w_img = nib.Nifti1Image(t1w.astype(np.float32), sphere_affine())
    brain_img = nib.Nifti1Image((r < BRAIN_RADIUS_MM).astype(np.uint8), sphere_affine())
    for img in (t1w_img, brain_img):
        img.set_qform(sphere_affine(), 1)
        img.set_sform(sphere_affine(), 1)
    return t1w_img, brain_img
