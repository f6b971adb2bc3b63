"""A demo subject's native world and its known map to MNI.

Native space. A subject's native world is tied to MNI by a known map ``phi``::

    target_mni_ras_mm = phi(x_t1w_ras_mm) = L @ x_t1w_ras_mm + b + u(x_t1w_ras_mm)

with ``L`` a rotation (a few degrees) times an anisotropic scale (3-5 % larger in MNI, as the
template brain is larger than most), ``b`` a 5-10 mm translation and ``u`` a smooth displacement
(sums of three long-wavelength sinusoids per axis, at most ~4 mm). The T1w is the synthetic MNI head
sampled at ``phi(x)``; ``phi`` is stored on the T1w grid and its numerical inverse on the MNI 2 mm
grid (fixed-point iteration, converged far below 0.01 mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NativeToMniMap:
    """The map ``phi`` from a subject's native world to MNI: ``L @ x + b + u(x)`` (RAS mm).

    ``u`` is a sum of sinusoids: ``u_c(x) = sum_k amp[c, k] * sin(2 pi * freq[c, k] . x + phase[c, k])``.
    """

    linear: np.ndarray            # (3, 3)
    translation_mm: np.ndarray    # (3,)
    amp_mm: np.ndarray            # (3, K)
    freq_per_mm: np.ndarray       # (3, K, 3)
    phase: np.ndarray             # (3, K)

    def displacement_mm(self, points_ras_mm: np.ndarray) -> np.ndarray:
        """Smooth displacement ``u`` at native points, (N, 3) -> (N, 3) mm."""
        p_3n = np.ascontiguousarray(np.asarray(points_ras_mm, dtype=np.float32).T)
        k = self.amp_mm.shape[1]
        freq = (2 * np.pi * self.freq_per_mm.reshape(3 * k, 3)).astype(np.float32)
        arg = freq @ p_3n  # (3K, N); float32 keeps the error of u below 1e-5 mm
        arg += self.phase.reshape(3 * k, 1).astype(np.float32)
        np.sin(arg, out=arg)
        arg *= self.amp_mm.reshape(3 * k, 1).astype(np.float32)
        return arg.reshape(3, k, -1).sum(axis=1).T.astype(np.float64)

    def native_to_mni(self, points_native_ras_mm: np.ndarray) -> np.ndarray:
        """Native RAS mm (N, 3) -> MNI RAS mm (N, 3)."""
        p = np.atleast_2d(np.asarray(points_native_ras_mm, dtype=np.float64))
        return p @ self.linear.T + self.translation_mm + self.displacement_mm(p)

    def mni_to_native(self, points_mni_ras_mm: np.ndarray, tol_mm: float = 1e-4,
                      max_iter: int = 100) -> np.ndarray:
        """MNI RAS mm (N, 3) -> native RAS mm (N, 3), by fixed-point iteration.

        ``x = L^-1 (y - b - u(x))`` contracts because ``|L^-1 grad u|`` < 0.4 for the fields made
        by :func:`random_native_to_mni_map`; iteration stops when no point moves more than ``tol_mm``.
        """
        y = np.atleast_2d(np.asarray(points_mni_ras_mm, dtype=np.float64))
        inv = np.linalg.inv(self.linear)
        base = (y - self.translation_mm) @ inv.T
        x = base.copy()
        for _ in range(max_iter):
            x_new = base - self.displacement_mm(x) @ inv.T
            step = np.max(np.abs(x_new - x)) if len(x) else 0.0
            x = x_new
            if step < tol_mm:
                break
        return x

    def linear_affine(self) -> np.ndarray:
        """4x4 affine of the linear part (without ``u``), native RAS mm -> MNI RAS mm."""
        aff = np.eye(4)
        aff[:3, :3] = self.linear
        aff[:3, 3] = self.translation_mm
        return aff


def rotation_matrix(rot_xyz_rad) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for rotations (radians) about the x, y and z axes."""
    rx, ry, rz = rot_xyz_rad
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def random_native_to_mni_map(rng: np.random.Generator) -> NativeToMniMap:
    """Draw a subject's native->MNI map: 2-5 degree rotation, 3-5 % scale, 5-10 mm shift, <~4 mm warp."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(2.0, 5.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    scale = rng.uniform(1.03, 1.05, size=3)
    direction = rng.normal(size=3)
    translation = direction / np.linalg.norm(direction) * rng.uniform(5.0, 10.0)
    n_waves = 3
    amp = rng.uniform(0.6, 1.3, size=(3, n_waves))
    dirs = rng.normal(size=(3, n_waves, 3))
    dirs /= np.linalg.norm(dirs, axis=2, keepdims=True)
    wavelength = rng.uniform(100.0, 160.0, size=(3, n_waves, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(3, n_waves))
    return NativeToMniMap(rotation @ np.diag(scale), translation, amp, dirs / wavelength, phase)
