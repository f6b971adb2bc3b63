"""The native step: the MNI target in the subject's T1w, the coil on the scalp, the native files.

Orchestration only. It uses the coordinate helpers of :mod:`tmstarget.native.spaces` (bottom of the import
graph: transforms, qform/sform, snapping), the scalp geometry of :mod:`tmstarget.native.scalp` (entry,
normal, the handle direction and the coil pose) and the sphere rule of :mod:`tmstarget.target.regions`;
it writes the vendor-neutral native files itself (markers TSV, target sphere), so it imports nothing of
:mod:`tmstarget.navigation`, the layer above (whose vendor writers read these files).

All positions are T1w world RAS mm unless a name says ``mni``. Coil poses are in SimNIBS axes:
columns x, y, z, centre; z into the head, y points away from the handle (the handle lies along -y),
x = y cross z (FORMATS.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.config.settings import default_config, with_defaults
from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path, read_json, save_img, sha256_file, write_json
from tmstarget.io.nifti import load_img_checked
from tmstarget.native import scalp
from tmstarget.io.nifti import check_qform_sform
from tmstarget.native.spaces import (ijk_to_world_ras_mm, mni_ras_mm_to_t1w_ras_mm, snap_into_mask,
                     t1w_ras_mm_to_mni_ras_mm, world_ras_mm_to_ijk)
from tmstarget.target.regions import sphere_mask

log = logging.getLogger(__name__)

PRIMARY_NAME = "sgACC-anticorrelation"

COIL_AXES_CONVENTION = ("simnibs: columns x, y, z, centre; z into the head, y points away from the handle "
                        "(handle along -y), x = y cross z")
HANDLE_ANGLE_CONVENTION = ("degrees from posterior towards lateral in the scalp tangent plane; "
                           "handle_direction_t1w_ras is the resulting direction (T1w world RAS)")


def native_settings(cfg: dict | None) -> dict:
    """config/config.yaml's ``native`` section overlaid with ``cfg``; unknown keys and a radius <= 0 refused."""
    cfg = dict(cfg or {})
    known = default_config()["native"]
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise InputError(f"config section 'native': unknown key(s) {unknown}; allowed: {sorted(known)}")
    out = with_defaults("native", cfg)
    if not out["target_sphere_radius_mm"] > 0:
        raise InputError("config native.target_sphere_radius_mm must be > 0 (mm)")
    return out


def _finite_or_none(value: float):
    return None if value is None or not np.isfinite(value) else float(value)


def place_coil(name: str, target_t1w_ras_mm, head_img, brain_mask_img, head_centre_ras_mm, cfg: dict) -> dict:
    """Scalp entry, coil pose, handle direction and distances for one T1w target.

    Parameters
    ----------
    name : label of the marker in the navigator files.
    target_t1w_ras_mm : (3,) cortical target, T1w world RAS mm.
    head_img : binary head mask in the T1w grid (:func:`tmstarget.native.scalp.head_mask_img`).
    brain_mask_img : binary brain mask in the T1w world space (scalp-to-cortex depth).
    head_centre_ras_mm : (3,) midline reference that tells lateral from medial, T1w world RAS mm.
    cfg : the ``native`` settings (keys of config/config.yaml's ``native``).

    Returns
    -------
    One entry of ``markers_t1w`` of the native JSON: ``name``, ``target_t1w_ras_mm``,
    ``entry_t1w_ras_mm``, ``inward_normal_t1w_ras``, ``coil_pose_t1w_ras`` (4x4 SimNIBS axes),
    ``handle_direction_t1w_ras`` (unit vector, the anatomical direction of the handle),
    ``scalp_to_cortex_mm``, ``entry_to_target_mm``, ``target_offset_from_coil_axis_mm``.
    """
    entry, normal = scalp.scalp_entry(target_t1w_ras_mm, head_img, normal_smoothing_mm=cfg["normal_smoothing_mm"])
    pose = scalp.coil_pose_simnibs(entry, normal, handle_angle_deg=cfg["handle_angle_deg"],
                                   head_centre_ras_mm=head_centre_ras_mm,
                                   skin_distance_mm=cfg["skin_distance_mm"])
    depth_mm = scalp.scalp_to_cortex_mm(entry, normal, brain_mask_img)
    return {
        "name": name,
        "target_t1w_ras_mm": np.asarray(target_t1w_ras_mm, float).tolist(),
        "entry_t1w_ras_mm": entry.tolist(),
        "inward_normal_t1w_ras": normal.tolist(),
        "coil_pose_t1w_ras": pose.tolist(),
        "handle_direction_t1w_ras": scalp.handle_direction_from_pose(pose).tolist(),
        "scalp_to_cortex_mm": _finite_or_none(depth_mm),
        "entry_to_target_mm": scalp.entry_to_target_mm(entry, target_t1w_ras_mm),
        "target_offset_from_coil_axis_mm": scalp.target_offset_from_axis_mm(pose, target_t1w_ras_mm),
    }


def head_centre_ras_mm(head_img) -> np.ndarray:
    """(3,) centroid of a binary head mask, world RAS mm (the midline reference for 'lateral')."""
    return ijk_to_world_ras_mm(head_img.affine, np.argwhere(np.asanyarray(head_img.dataobj) > 0).mean(axis=0))


def _ijk_in_grid(img, point_ras_mm, name: str) -> list[int]:
    ijk = np.rint(world_ras_mm_to_ijk(img.affine, point_ras_mm)).astype(int)
    if not np.all((ijk >= 0) & (ijk < img.shape[:3])):
        raise InputError(
            f"{name}: the target maps to {np.round(point_ras_mm, 1).tolist()} mm, outside this T1w's field "
            "of view; check that the transforms belong to this T1w"
        )
    return ijk.tolist()


def _mni_points(target: dict) -> tuple[list, dict]:
    """Every MNI point of a target JSON that goes to T1w, for one ANTs call.

    Returns the valid points (list of (3,) arrays, target first) and a dict ``slots`` telling where
    each of them came from: ``nogsr`` (index or None), ``clouds`` (key -> list of index or None) and
    ``candidates`` (list of index or None).
    """
    points = [np.asarray(target["target_mni_ras_mm"], float).reshape(3)]
    gsr = target.get("gsr_comparison") or {}
    slots: dict = {"nogsr": None, "clouds": {}, "candidates": []}
    if gsr.get("target_mni_ras_mm"):
        slots["nogsr"] = len(points)
        points.append(np.asarray(gsr["target_mni_ras_mm"], float).reshape(3))
    unc = target.get("uncertainty") or {}

    def add(p):
        if p is None:  # a resample without a target keeps its place
            return None
        points.append(np.asarray(p, float).reshape(3))
        return len(points) - 1

    for key in ("targets_mni_ras_mm", "split_half_targets_mni_ras_mm"):
        if unc.get(key):
            slots["clouds"][key] = [add(p) for p in unc[key]]
    for cand in unc.get("candidates") or []:
        slots["candidates"].append(add(cand.get("target_mni_ras_mm")) if isinstance(cand, dict) else None)
    return points, slots


def run_native(target_json, t1w_path, xfm_t1w_to_mni, xfm_mni_to_t1w, brain_mask_path, cfg: dict,
               out_tsv, out_json, out_coordsystem, out_sphere, t1w_uri: str | None = None,
               out_sphere_json=None) -> dict:
    """Map the MNI target to the subject's T1w, place the coil on the scalp, write the native files.

    Parameters
    ----------
    target_json : ``*_desc-target_markers.json`` from targeting (``target_mni_ras_mm``, optional
        ``uncertainty.targets_mni_ras_mm``, ``uncertainty.split_half_targets_mni_ras_mm``,
        ``uncertainty.candidates`` (dicts with ``target_mni_ras_mm``) and
        ``gsr_comparison.target_mni_ras_mm``).
    t1w_path : the T1w that will be loaded into the navigator; its world RAS mm is the output space.
    xfm_t1w_to_mni : ``from-T1w_to-<MNI>`` transform, used to map MNI points to T1w.
    xfm_mni_to_t1w : ``from-<MNI>_to-T1w`` transform, used to map back (round-trip check, entry in MNI).
    brain_mask_path : brain mask in the T1w world space (target snapping, scalp-to-cortex depth).
    cfg : config section ``native`` (keys and defaults in config/config.yaml).
    t1w_uri : BIDS URI of the T1w for the coordinate-system sidecar's ``IntendedFor`` (default: file name).
    out_tsv, out_json, out_coordsystem, out_sphere : output paths (markers TSV, sidecar JSON,
        ``_coordsystem.json``, NIfTI sphere in the T1w grid).
    out_sphere_json : optional JSON sidecar of the sphere (T1w file name and SHA-256, radius, centre).

    Returns
    -------
    The JSON written to ``out_json`` as a dict. Besides the target's keys it holds
    ``target_t1w_ras_mm``, ``entry_t1w_ras_mm``, ``coil_pose_t1w_ras`` (SimNIBS axes),
    ``handle_direction_t1w_ras`` (unit vector, where the handle points), ``coil_axes_convention``,
    ``markers_t1w`` (one entry per coil placement, see :func:`place_coil`) and the provenance keys.
    """
    cfg = native_settings(cfg)
    t1w_path = Path(t1w_path)
    target = read_json(target_json)
    if "target_mni_ras_mm" not in target:
        raise InputError(f"{target_json}: no 'target_mni_ras_mm'; rerun the targeting step")
    t1w_img = load_img_checked(t1w_path, ndim=3, what="T1w image")
    qform_sform = check_qform_sform(t1w_img, tol_mm=cfg["qform_sform_tol_mm"], name=t1w_path.name)
    brain_img = load_img_checked(brain_mask_path, ndim=3, what="brain mask")

    # 1. every MNI point in one ANTs call: target, no-GSR target, bootstrap clouds, candidates
    target_mni = np.asarray(target["target_mni_ras_mm"], float).reshape(3)
    gsr = target.get("gsr_comparison") or {}
    unc = target.get("uncertainty") or {}
    points_mni, slots = _mni_points(target)
    log.info("mapping %d MNI points to T1w with %s", len(points_mni), Path(xfm_t1w_to_mni).name)
    points_t1w = np.atleast_2d(mni_ras_mm_to_t1w_ras_mm(np.vstack(points_mni), xfm_t1w_to_mni))

    def mapped(index):
        return None if index is None else points_t1w[index].tolist()

    target_t1w_unsnapped = points_t1w[0]
    nogsr_t1w = points_t1w[slots["nogsr"]] if slots["nogsr"] is not None else None
    nogsr_mni = points_mni[slots["nogsr"]] if slots["nogsr"] is not None else None
    clouds_t1w = {key.replace("_mni_", "_t1w_"): [mapped(i) for i in idx] for key, idx in slots["clouds"].items()}

    # 2. snap into the T1w brain mask when the mapped target lands outside it
    target_t1w, snap_mm = snap_into_mask(target_t1w_unsnapped, brain_img)
    if snap_mm > 0:
        log.warning("target mapped outside the T1w brain mask; snapped %.1f mm to the nearest brain voxel", snap_mm)
    target_ijk = _ijk_in_grid(t1w_img, target_t1w, t1w_path.name)

    # 3. scalp: head mask, entry, coil pose, depths
    head_img = scalp.head_mask_img(t1w_img)
    head_centre = head_centre_ras_mm(head_img)
    primary = place_coil(PRIMARY_NAME, target_t1w, head_img, brain_img, head_centre, cfg)
    markers = [primary]
    if nogsr_t1w is not None:
        nogsr_snapped, _ = snap_into_mask(nogsr_t1w, brain_img)
        markers.append(place_coil(f"{PRIMARY_NAME}-noGSR", nogsr_snapped, head_img, brain_img, head_centre, cfg))

    # 4. back to MNI: round-trip check of the target and MNI positions of the entries
    back = np.atleast_2d(t1w_ras_mm_to_mni_ras_mm(
        np.vstack([target_t1w_unsnapped] + [m["entry_t1w_ras_mm"] for m in markers]), xfm_mni_to_t1w))
    roundtrip_mm = float(np.linalg.norm(back[0] - target_mni))
    if roundtrip_mm > 1.0:
        log.warning("MNI->T1w->MNI round trip of the target is off by %.2f mm (> 1 mm): the two transforms "
                    "may not be inverses of each other", roundtrip_mm)

    # 5. files
    t1w_sha = sha256_file(t1w_path)
    rows = [{"name": "target", "t1w_ras_mm": target_t1w, "mni_ras_mm": target_mni,
             "description": "sgACC-anticorrelation target"
                            + (f" (snapped {snap_mm:.1f} mm into the brain mask)" if snap_mm else "")},
            {"name": "scalp_entry", "t1w_ras_mm": primary["entry_t1w_ras_mm"], "mni_ras_mm": back[1],
             "description": "nearest scalp point to the target (where the coil touches the head)"}]
    if nogsr_t1w is not None:
        rows += [{"name": "target_nogsr", "t1w_ras_mm": markers[1]["target_t1w_ras_mm"], "mni_ras_mm": nogsr_mni,
                  "description": f"target without global signal regression ({gsr.get('strategy', '')})"},
                 {"name": "scalp_entry_nogsr", "t1w_ras_mm": markers[1]["entry_t1w_ras_mm"],
                  "mni_ras_mm": back[2], "description": "nearest scalp point to the no-GSR target"}]
    write_markers_tsv(out_tsv, rows, t1w_img)
    save_sphere(out_sphere, target_t1w, t1w_img, cfg["target_sphere_radius_mm"], t1w_sha256=t1w_sha)
    if out_sphere_json:
        write_json({
            "Description": f"sphere of radius {float(cfg['target_sphere_radius_mm']):g} mm at the "
                           "sgACC-anticorrelation target, in the grid of the T1w below",
            "T1wFileName": t1w_path.name,
            "T1wSha256": t1w_sha,
            "CentreT1wRasMm": np.asarray(target_t1w, float).tolist(),
            "RadiusMm": float(cfg["target_sphere_radius_mm"]),
            "Sources": [t1w_uri or t1w_path.name],
        }, out_sphere_json)
    write_json({
        "NIBSCoordinateSystem": "Other",
        "NIBSCoordinateUnits": "mm",
        "NIBSCoordinateSystemDescription": (
            "World RAS+ millimetres of the T1w image in IntendedFor (its NIfTI "
            f"{qform_sform['affine_used']}, intent code {qform_sform['intent_code']}); x right, y anterior, "
            "z superior. MNI columns are MNI152 world RAS mm of the template."),
        # a BIDS URI (bids:<dataset>:<path>) or the file name; never an absolute path
        "IntendedFor": t1w_uri or t1w_path.name,
        "IntendedForSha256": t1w_sha,
    }, out_coordsystem)

    native = dict(target)
    native.update({
        "target_t1w_ras_mm": target_t1w.tolist(),
        "target_t1w_ijk": target_ijk,
        "target_t1w_ras_mm_before_snap": target_t1w_unsnapped.tolist(),
        "target_snapped_to_brain_mask": bool(snap_mm > 0),
        "target_snap_distance_mm": snap_mm,
        "entry_t1w_ras_mm": primary["entry_t1w_ras_mm"],
        "entry_mni_ras_mm": back[1].tolist(),
        "inward_normal_t1w_ras": primary["inward_normal_t1w_ras"],
        "coil_pose_t1w_ras": primary["coil_pose_t1w_ras"],
        "handle_direction_t1w_ras": primary["handle_direction_t1w_ras"],
        "coil_axes_convention": COIL_AXES_CONVENTION,
        "handle_angle_deg": float(cfg["handle_angle_deg"]),
        "handle_angle_convention": HANDLE_ANGLE_CONVENTION,
        "scalp_to_cortex_mm": primary["scalp_to_cortex_mm"],
        "entry_to_target_mm": primary["entry_to_target_mm"],
        "target_offset_from_coil_axis_mm": primary["target_offset_from_coil_axis_mm"],
        "roundtrip_error_mm": roundtrip_mm,
        "markers_t1w": markers,
        "native_parameters": cfg,
        # file names only: absolute paths can carry a patient's name; the SHA-256 pins the exact file
        "t1w_path": t1w_path.name,
        "t1w_sha256": t1w_sha,
        "t1w_qform_sform": qform_sform,
        "transform_path": Path(xfm_t1w_to_mni).name,
        "transform_sha256": sha256_file(xfm_t1w_to_mni),
        "inverse_transform_path": Path(xfm_mni_to_t1w).name,
        "inverse_transform_sha256": sha256_file(xfm_mni_to_t1w),
        "brain_mask_path": Path(brain_mask_path).name,
        "target_sphere_radius_mm": float(cfg["target_sphere_radius_mm"]),
        "Sources": list(target.get("Sources", [])) + [Path(p).name for p in (target_json, t1w_path, xfm_t1w_to_mni,
                                                                            xfm_mni_to_t1w, brain_mask_path)],
    })
    if unc:
        native["uncertainty"] = {**unc, **clouds_t1w}
        if slots["candidates"]:
            native["uncertainty"]["candidates"] = [
                {**cand, "target_t1w_ras_mm": mapped(index)} if isinstance(cand, dict) else cand
                for cand, index in zip(unc["candidates"], slots["candidates"])]
        boots = [p for p in clouds_t1w.get("targets_t1w_ras_mm", []) if p is not None]
        if boots:
            dists = np.linalg.norm(np.asarray(boots) - target_t1w_unsnapped, axis=1)
            native["uncertainty"]["median_distance_t1w_mm"] = float(np.median(dists))
            native["uncertainty"]["p95_distance_t1w_mm"] = float(np.percentile(dists, 95))
    if nogsr_t1w is not None:
        native["gsr_comparison"] = {**gsr, "target_t1w_ras_mm": markers[1]["target_t1w_ras_mm"],
                                    "target_t1w_ras_mm_before_snap": nogsr_t1w.tolist(),
                                    "entry_t1w_ras_mm": markers[1]["entry_t1w_ras_mm"],
                                    "shift_t1w_mm": float(np.linalg.norm(nogsr_t1w - target_t1w_unsnapped))}
    write_json(native, out_json)
    log.info("target T1w %s mm (voxel %s), entry %s mm, handle towards %s, scalp-to-cortex %s mm, round trip %.2f mm",
             np.round(target_t1w, 1).tolist(), target_ijk, np.round(primary["entry_t1w_ras_mm"], 1).tolist(),
             np.round(primary["handle_direction_t1w_ras"], 2).tolist(), primary["scalp_to_cortex_mm"], roundtrip_mm)
    return native


# --------------------------------------------------------------------------------------------------
# Vendor-neutral native files (the navigation package's vendor writers read them)
# --------------------------------------------------------------------------------------------------
MARKERS_TSV_COLUMNS = ["name", "x", "y", "z", "mni_x", "mni_y", "mni_z", "i", "j", "k", "description"]


def write_markers_tsv(path, rows: list[dict], t1w_img: nib.Nifti1Image) -> Path:
    """BEP037-style markers TSV: one row per point; x, y, z T1w world RAS mm, MNI RAS mm, T1w voxel ijk.

    Parameters
    ----------
    rows : dicts with ``name``, ``t1w_ras_mm`` (3,), ``mni_ras_mm`` (3,) and optional ``description``.
    t1w_img : the T1w whose grid gives i, j, k (nearest voxel, 0-based).
    """
    lines = ["\t".join(MARKERS_TSV_COLUMNS)]
    for row in rows:
        t1w = np.asarray(row["t1w_ras_mm"], float)
        mni = np.asarray(row["mni_ras_mm"], float)
        ijk = np.rint(world_ras_mm_to_ijk(t1w_img.affine, t1w)).astype(int)
        values = ([row["name"]] + [f"{v:.3f}" for v in t1w] + [f"{v:.3f}" for v in mni]
                  + [str(v) for v in ijk] + [row.get("description", "n/a") or "n/a"])
        lines.append("\t".join(str(v).replace("\t", " ") for v in values))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sphere_mask_img(center_ras_mm, reference_img: nib.Nifti1Image, radius_mm: float) -> nib.Nifti1Image:
    """uint8 mask of :func:`tmstarget.target.regions.sphere_mask` (the one sphere rule) in a reference grid.

    Raises
    ------
    InputError
        The point lies outside the grid.
    """
    centre = np.asarray(center_ras_mm, float).reshape(3)
    own = np.rint(world_ras_mm_to_ijk(reference_img.affine, centre)).astype(int)
    if not np.all((own >= 0) & (own < reference_img.shape[:3])):
        raise InputError(f"target {np.round(centre, 1).tolist()} mm lies outside the T1w grid; cannot mark it")
    img = nib.Nifti1Image(sphere_mask(reference_img, centre, radius_mm).astype(np.uint8), reference_img.affine)
    img.set_qform(reference_img.affine, 1)
    img.set_sform(reference_img.affine, 1)
    img.header.set_xyzt_units("mm")
    return img


def save_sphere(path, center_ras_mm, reference_img: nib.Nifti1Image, radius_mm: float,
                t1w_sha256: str | None = None) -> Path:
    """Write :func:`sphere_mask_img` atomically; with ``t1w_sha256`` the header's ``descrip`` (80 bytes)
    names the T1w by checksum (``T1w sha256:<hex>``; its file name goes in the JSON sidecar)."""
    img = sphere_mask_img(center_ras_mm, reference_img, radius_mm)
    if t1w_sha256:
        img.header["descrip"] = f"T1w sha256:{t1w_sha256}"[:80].encode("ascii")
    return save_img(img, path)
