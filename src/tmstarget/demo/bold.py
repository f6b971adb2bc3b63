"""The demo's resting BOLD run: planted signals, noise, head motion and slice timing.

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

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from tmstarget.demo.native_map import NativeToMniMap, rotation_matrix
from tmstarget.demo.phantom import (DECOY_MNI_RAS_MM, DECOY_SIGMA_MM, SEED_MNI_RAS_MM, SEED_SIGNAL_RADIUS_MM,
                                    TARGET_SIGMA_MM, build_mni_head_model, grid_affine, grid_points,
                                    native_head_center_ras_mm, smooth_step, with_header)

BOLD_VOXEL_MM = 3.0
BOLD_SHAPE = (64, 76, 48)
N_DUMMY_SCANS = 3

#: Fluctuation amplitudes in per cent of the voxel baseline (see :func:`synthesize_bold`).
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


def rigid_matrix(params: np.ndarray, center_ras_mm: np.ndarray) -> np.ndarray:
    """4x4 world RAS mm transform ``x -> R (x - c) + c + t`` for one row of motion parameters."""
    m = np.eye(4)
    r = rotation_matrix(params[3:])
    m[:3, :3] = r
    m[:3, 3] = center_ras_mm - r @ center_ras_mm + params[:3]
    return m


# --------------------------------------------------------------------------------------------
# BOLD



def gaussian_weight(points_mni, center, sigma_mm):
    """Gaussian of the distance (N,) of MNI points (N, 3) from ``center``, peak 1."""
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
    affine = grid_affine(BOLD_SHAPE, BOLD_VOXEL_MM, center)
    grid_center = nib.affines.apply_affine(affine, (np.asarray(BOLD_SHAPE) - 1) / 2.0)
    points_mni = mapping.native_to_mni(grid_points(BOLD_SHAPE, affine))
    gm, wm, csf, scalp = (head.sample(n, points_mni) for n in ("gm", "wm", "csf", "scalp"))
    dropout = 1.0 - 0.3 * gaussian_weight(points_mni, (0.0, 32.0, -28.0), 9.0)
    rel = (points_mni - np.array([0.0, -18.0, 10.0])) / 100.0
    coil = 1.0 + 0.12 * rel[:, 1] - 0.1 * rel[:, 2] ** 2 - 0.08 * rel[:, 0] ** 2
    baseline = (BOLD_BASELINE["wm"] * wm + BOLD_BASELINE["gm"] * gm + BOLD_BASELINE["csf"] * csf
                + BOLD_BASELINE["scalp"] * scalp) * dropout * coil
    brain_mask = (gm + wm) > 0.3

    # spatial weights (V,) and time courses (T,) of each fluctuation, in per cent
    a = AMPLITUDES_PCT
    seed_signal = band_limited_signal(rng, n_total, t_r)
    sphere = 1.0 - smooth_step(np.linalg.norm(points_mni - np.asarray(SEED_MNI_RAS_MM), axis=1)
                                - SEED_SIGNAL_RADIUS_MM, 1.5)
    weights = [a["seed"] * sphere * gm]
    courses = [seed_signal]
    if target_mni_ras_mm is not None:
        # grey-matter weighted, normalised so that the target point itself gets the full amplitude
        gm_at_target = max(float(head.sample("gm", np.asarray(target_mni_ras_mm)[None])[0]), 0.3)
        weights.append(-a["target"] * gaussian_weight(points_mni, target_mni_ras_mm, TARGET_SIGMA_MM)
                       * np.minimum(gm / gm_at_target, 1.0))
        courses.append(seed_signal)
    if plant_decoy:
        weights.append(-a["decoy"] * gaussian_weight(points_mni, DECOY_MNI_RAS_MM, DECOY_SIGMA_MM) * gm)
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
    img = with_header(nib.Nifti1Image(data, affine), zooms_extra=float(t_r))
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
