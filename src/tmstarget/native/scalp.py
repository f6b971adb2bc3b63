"""Scalp projection: head mask, scalp entry point, inward normal, coil pose, scalp-to-cortex depth.

Everything is in the world space of the subject's T1w (RAS+ mm). The coil pose follows SimNIBS's axes
(FORMATS.md; SimNIBS GUI tutorial: "green [y] axis pointing anteriorly. This means that the coil handle
points posteriorly"): a 4x4 matrix whose columns are the coil x, y, z axes and the coil centre; z points
into the head along the inward scalp normal, **y points away from the handle (the handle lies along
-y)**, x = y cross z. :func:`handle_direction_ras` is the one place that turns the configured handle angle
into a direction; :func:`coil_pose_simnibs` builds the axes from it and every vendor convention is
derived from that pose in :mod:`tmstarget.navigation.exports`.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from scipy import ndimage

from tmstarget.errors import InputError
from tmstarget.native.spaces import ijk_to_world_ras_mm, world_ras_mm_to_ijk

log = logging.getLogger(__name__)

#: World RAS directions used to place the handle (valid when the T1w world axes roughly follow the
#: head: scanner coordinates of an ordinary head-first-supine scan).
POSTERIOR_RAS = np.array([0.0, -1.0, 0.0])
INFERIOR_RAS = np.array([0.0, 0.0, -1.0])


# ----------------------------------------------------------------------------- head mask


def _otsu_threshold(values: np.ndarray, n_bins: int = 256) -> float:
    """Otsu's threshold of a 1D array (maximises the between-class variance)."""
    hist, edges = np.histogram(values, bins=n_bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes_all_axes(mask: np.ndarray) -> np.ndarray:
    """3D hole filling, then 2D filling slice by slice along each axis (closes ear canals, nostrils)."""
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        moved = np.moveaxis(mask, axis, 0)
        filled = np.stack([ndimage.binary_fill_holes(s) for s in moved])
        mask = np.moveaxis(filled, 0, axis)
    return mask


def head_mask_img(t1w_img: nib.Nifti1Image, threshold: float | None = None,
                  closing_mm: float = 4.0) -> nib.Nifti1Image:
    """Binary head mask (scalp and everything inside) from a T1w image.

    Light smoothing (1 voxel), an intensity threshold (Otsu's by default: background air is dark in a
    T1w, skin and fat bright), morphological closing by ``closing_mm``, the largest connected
    component, and hole filling in 3D and slice by slice so that dark skull, sinuses and ear canals
    count as inside.

    Parameters
    ----------
    t1w_img : 3D T1w image (world RAS mm affine).
    threshold : intensity threshold; None uses Otsu's on the smoothed image.
    closing_mm : radius in mm of the closing that bridges small gaps in the skin.

    Returns
    -------
    uint8 image (1 = head) in the T1w grid and affine.
    """
    data = np.asanyarray(t1w_img.dataobj).astype(np.float32)
    if data.ndim != 3:
        raise InputError(f"{t1w_img.get_filename() or 'T1w'}: a T1w must be 3D, got shape {data.shape}")
    smooth = ndimage.gaussian_filter(data, 1.0)
    if threshold is None:
        threshold = _otsu_threshold(smooth[np.isfinite(smooth)])
    mask = smooth > threshold
    # closing by about closing_mm: repeated 6-neighbour steps (a diamond, much faster than a ball on
    # a 1 mm whole-head grid); padded so the head touching the field of view is not eroded
    zooms = np.linalg.norm(t1w_img.affine[:3, :3], axis=0)
    steps = max(int(round(closing_mm / float(np.mean(zooms)))), 1)
    pad = steps + 1
    padded = ndimage.binary_closing(np.pad(mask, pad), structure=ndimage.generate_binary_structure(3, 1),
                                    iterations=steps)
    mask = padded[pad:-pad, pad:-pad, pad:-pad]
    mask = _largest_component(mask)
    mask = _fill_holes_all_axes(mask)
    if not mask.any():
        raise InputError(f"{t1w_img.get_filename() or 'T1w'}: no head found (threshold {threshold:.3g}); "
                         "check that this is a T1w image with the head inside the field of view")
    log.info("head mask: %d voxels (threshold %.3g)", int(mask.sum()), threshold)
    return nib.Nifti1Image(mask.astype(np.uint8), t1w_img.affine)


# ----------------------------------------------------------------------------- scalp entry and normal


def _sample_linear(volume: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Trilinear samples of a 3D array at (N, 3) continuous voxel indices (0 outside)."""
    return ndimage.map_coordinates(volume, np.atleast_2d(ijk).T, order=1, mode="constant", cval=0.0)


def _surface_crossing_mm(volume: np.ndarray, affine, start_ras_mm, direction, s_from: float, s_to: float,
                         step_mm: float = 0.1, inside_first: bool = True) -> float | None:
    """Distance s along ``start + s * direction`` where the interpolated binary ``volume`` crosses 0.5.

    ``inside_first`` True: first inside -> outside crossing; False: first outside -> inside crossing.
    Returns None when there is no crossing in [s_from, s_to].
    """
    s = np.arange(s_from, s_to + step_mm / 2, step_mm)
    points = np.asarray(start_ras_mm, float) + s[:, None] * np.asarray(direction, float)
    values = _sample_linear(volume, world_ras_mm_to_ijk(affine, points))
    inside = values >= 0.5
    change = np.flatnonzero(inside[:-1] != inside[1:]) if len(s) > 1 else np.array([], int)
    for idx in change:
        if inside[idx] == inside_first:
            v0, v1 = values[idx], values[idx + 1]
            frac = (v0 - 0.5) / (v0 - v1) if v0 != v1 else 0.0
            return float(s[idx] + frac * step_mm)
    return None


def scalp_entry(target_t1w_ras_mm, head_mask_img: nib.Nifti1Image,
                normal_smoothing_mm: float = 4.0, max_iterations: int = 20,
                tolerance_mm: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Nearest scalp point to a target and the inward scalp normal there.

    The nearest outer-boundary voxel of the head mask is found first (voxels at the edge of the field
    of view do not count as scalp). The inward normal is the gradient of the mask smoothed with a
    Gaussian of ``normal_smoothing_mm`` (sigma), which points from air into the head. The entry is then
    refined iteratively to where the ray from the target against the normal crosses the skin (the
    trilinearly interpolated mask at 0.5), until the normal points at the target (the nearest point of
    the smoothed surface), within ``tolerance_mm``.

    Parameters
    ----------
    target_t1w_ras_mm : (3,) target, T1w world RAS mm; must lie inside the head mask.
    head_mask_img : binary head mask (see :func:`head_mask_img`).
    normal_smoothing_mm : Gaussian sigma in mm for the normal estimate.
    max_iterations, tolerance_mm : refinement stops after this many steps or a move below this.

    Returns
    -------
    entry_ras_mm : (3,) scalp entry, T1w world RAS mm.
    inward_normal : (3,) unit vector in world RAS, pointing into the head.
    """
    target = np.asarray(target_t1w_ras_mm, dtype=float).reshape(3)
    affine = head_mask_img.affine
    mask = np.asanyarray(head_mask_img.dataobj) > 0
    target_ijk = np.rint(world_ras_mm_to_ijk(affine, target)).astype(int)
    inside_grid = np.all((target_ijk >= 0) & (target_ijk < mask.shape))
    if not inside_grid or not mask[tuple(target_ijk)]:
        raise InputError(
            f"target {np.round(target, 1).tolist()} (T1w RAS mm) lies outside the head mask of "
            f"{head_mask_img.get_filename() or 'the T1w'}; the MNI->T1w transform or the T1w does not match"
        )
    boundary = mask & ~ndimage.binary_erosion(mask, border_value=1)
    boundary_ijk = np.argwhere(boundary)
    if len(boundary_ijk) == 0:
        raise InputError("the head mask has no scalp surface inside the field of view; check the T1w")
    boundary_ras = ijk_to_world_ras_mm(affine, boundary_ijk)
    nearest = boundary_ras[int(np.argmin(np.sum((boundary_ras - target) ** 2, axis=1)))]

    mask_f = mask.astype(np.float32)
    voxel_mm = float(np.max(np.linalg.norm(affine[:3, :3], axis=0)))
    entry = nearest
    normal = _inward_normal(mask, affine, entry, normal_smoothing_mm)
    # The nearest voxel centre is only a start: among voxel centres at almost the same distance the
    # tangential error can reach several mm. Iterate: shoot a ray from the target against the local
    # inward normal, take the sub-voxel skin crossing, re-estimate the normal there. At the fixed point
    # the normal is parallel to (target - entry), the condition of the nearest surface point.
    for _ in range(max_iterations):
        ray = -normal
        depth = float(np.dot(entry - target, ray))
        s = _surface_crossing_mm(mask_f, affine, target, ray, max(depth - 4 * voxel_mm, 0.0),
                                 depth + 4 * voxel_mm, inside_first=True)
        if s is None:
            break
        new_entry = target + s * ray
        moved = float(np.linalg.norm(new_entry - entry))
        entry = new_entry
        normal = _inward_normal(mask, affine, entry, normal_smoothing_mm)
        if moved < tolerance_mm:
            break
    log.info("scalp entry %s mm, inward normal %s", np.round(entry, 1).tolist(), np.round(normal, 3).tolist())
    return entry, normal


def _inward_normal(mask: np.ndarray, affine, point_ras_mm, smoothing_mm: float) -> np.ndarray:
    """Unit gradient (world RAS) of the smoothed mask at a point, computed on a local patch."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    sigma_vox = smoothing_mm / zooms
    half = np.ceil(4 * sigma_vox).astype(int) + 2
    centre = np.rint(world_ras_mm_to_ijk(affine, point_ras_mm)).astype(int)
    lo = centre - half
    hi = centre + half + 1
    # local patch of the mask, zeros beyond the grid (as if padded), without copying the whole volume
    patch = np.zeros(hi - lo, np.float32)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, mask.shape)
    if np.all(src_hi > src_lo):
        dst = tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, lo, src_hi))
        patch[dst] = mask[tuple(slice(a, c) for a, c in zip(src_lo, src_hi))]
    smooth = ndimage.gaussian_filter(patch, sigma_vox, mode="constant")
    local_ijk = world_ras_mm_to_ijk(affine, point_ras_mm) - lo
    grad_ijk = np.array([_sample_linear(g, local_ijk)[0] for g in np.gradient(smooth)])
    # d(value)/d(world) = inv(A)^T d(value)/d(ijk) for world = A ijk + b
    grad_world = np.linalg.inv(affine[:3, :3]).T @ grad_ijk
    norm = float(np.linalg.norm(grad_world))
    if norm < 1e-9:
        raise InputError("cannot estimate the scalp normal (flat head mask around the entry); check the T1w")
    return grad_world / norm


# ----------------------------------------------------------------------------- coil pose


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _tangent(v, normal) -> np.ndarray:
    """Component of ``v`` orthogonal to the unit ``normal``."""
    return v - np.dot(v, normal) * normal


def handle_direction_ras(entry_ras_mm, inward_normal, handle_angle_deg: float = 45.0,
                         head_centre_ras_mm=None) -> np.ndarray:
    """Anatomical direction the coil handle points to: unit vector in the scalp tangent plane,
    ``handle_angle_deg`` from posterior towards lateral.

    This is the single definition of the configured handle placement; the coil axes
    (:func:`coil_pose_simnibs`) and every navigator file derive from it.

    Posterior is world -y projected onto the tangent plane. Lateral is the tangent direction
    perpendicular to it on the side away from the midline (world x of the entry relative to
    ``head_centre_ras_mm``, default the world origin). Where lateral has no tangent component (the
    normal itself points medially), "away from the vertex" (inferior) is used, as moving laterally on
    the side of the head means moving down. 0 deg = straight back, 90 deg = straight lateral;
    45 deg is the common posterior-lateral placement for a posterior-anterior current in DLPFC.

    Parameters
    ----------
    entry_ras_mm : (3,) scalp entry, T1w world RAS mm (tells the hemisphere).
    inward_normal : (3,) unit vector into the head, world RAS.
    handle_angle_deg : degrees from posterior towards lateral.
    head_centre_ras_mm : (3,) midline reference, T1w world RAS mm (default: world origin).

    Returns
    -------
    (3,) unit vector, world RAS, from the coil centre towards the handle.
    """
    z_axis = _unit(inward_normal)
    entry = np.asarray(entry_ras_mm, dtype=float)
    centre = np.zeros(3) if head_centre_ras_mm is None else np.asarray(head_centre_ras_mm, dtype=float)
    posterior_t = _tangent(POSTERIOR_RAS, z_axis)
    if np.linalg.norm(posterior_t) < 1e-6:  # normal along y (front or back of the head)
        posterior_t = _tangent(INFERIOR_RAS, z_axis)
    posterior_t = _unit(posterior_t)
    side = -1.0 if entry[0] - centre[0] < 0 else 1.0
    lateral = np.array([side, 0.0, 0.0])
    lateral_t = _tangent(_tangent(lateral, z_axis), posterior_t)
    if np.linalg.norm(lateral_t) < 0.1:
        lateral_t = _tangent(_tangent(INFERIOR_RAS, z_axis), posterior_t)
    if np.linalg.norm(lateral_t) < 1e-6:
        lateral_t = np.cross(z_axis, posterior_t)
    lateral_t = _unit(lateral_t)
    angle = np.deg2rad(handle_angle_deg)
    return _unit(np.cos(angle) * posterior_t + np.sin(angle) * lateral_t)


def coil_pose_simnibs(entry_ras_mm, inward_normal, handle_angle_deg: float = 45.0,
                      handle_direction=None, head_centre_ras_mm=None,
                      skin_distance_mm: float = 0.0) -> np.ndarray:
    """Coil pose in SimNIBS axes, T1w world RAS mm.

    Parameters
    ----------
    entry_ras_mm : (3,) scalp entry.
    inward_normal : (3,) unit vector into the head (becomes the coil z axis).
    handle_angle_deg : handle direction in the tangent plane, degrees from posterior towards lateral
        (see :func:`handle_direction_ras`); ignored when ``handle_direction`` is given.
    handle_direction : optional (3,) world RAS vector from the coil centre towards the handle; its
        tangent part is used.
    head_centre_ras_mm : (3,) used to tell which side is lateral (default: world origin).
    skin_distance_mm : coil centre this far outside the scalp along -z (hair, coil casing).

    Returns
    -------
    (4, 4) matrix; columns 0-2 are the coil x, y, z axes (world RAS unit vectors), column 3 the coil
    centre in mm: z = inward normal, y = minus the handle direction (SimNIBS: y points away from the
    handle), x = y cross z (right-handed). :func:`handle_direction_from_pose` gives the handle back.
    """
    z_axis = _unit(inward_normal)
    if handle_direction is not None:
        handle = _tangent(np.asarray(handle_direction, dtype=float), z_axis)
        if np.linalg.norm(handle) < 1e-6:
            raise ValueError("handle_direction is parallel to the scalp normal")
        handle = _unit(handle)
    else:
        handle = handle_direction_ras(entry_ras_mm, z_axis, handle_angle_deg, head_centre_ras_mm)
    y_axis = -handle
    x_axis = np.cross(y_axis, z_axis)
    pose = np.eye(4)
    pose[:3, 0] = x_axis
    pose[:3, 1] = y_axis
    pose[:3, 2] = z_axis
    pose[:3, 3] = np.asarray(entry_ras_mm, dtype=float) - skin_distance_mm * z_axis
    return pose


def handle_direction_from_pose(pose_simnibs) -> np.ndarray:
    """(3,) unit world RAS direction of the handle of a SimNIBS-axes pose (its -y axis)."""
    return -_unit(np.asarray(pose_simnibs, dtype=float)[:3, 1])


# ----------------------------------------------------------------------------- distances


def scalp_to_cortex_mm(entry_ras_mm, inward_normal, brain_mask_img: nib.Nifti1Image,
                       max_depth_mm: float = 80.0, step_mm: float = 0.1) -> float:
    """Distance in mm along the coil axis from the scalp entry to the brain surface.

    Walks from the entry along the inward normal until the trilinearly interpolated brain mask
    reaches 0.5. Returns NaN when the brain is not met within ``max_depth_mm``.

    Parameters
    ----------
    entry_ras_mm : (3,) scalp entry, T1w world RAS mm.
    inward_normal : (3,) unit vector into the head.
    brain_mask_img : binary brain mask in the T1w world space (any grid).
    """
    mask = (np.asanyarray(brain_mask_img.dataobj) > 0).astype(np.float32)
    s = _surface_crossing_mm(mask, brain_mask_img.affine, entry_ras_mm, _unit(inward_normal), 0.0,
                             max_depth_mm, step_mm=step_mm, inside_first=False)
    if s is None:
        if _sample_linear(mask, world_ras_mm_to_ijk(brain_mask_img.affine, entry_ras_mm))[0] >= 0.5:
            return 0.0
        log.warning("brain mask not reached within %.0f mm of the scalp entry along the coil axis", max_depth_mm)
        return float("nan")
    return s


def entry_to_target_mm(entry_ras_mm, target_ras_mm) -> float:
    """Straight-line distance in mm from the scalp entry to the cortical target."""
    return float(np.linalg.norm(np.asarray(target_ras_mm, float) - np.asarray(entry_ras_mm, float)))


def target_offset_from_axis_mm(pose: np.ndarray, target_ras_mm) -> float:
    """Distance in mm from the target to the coil z axis line (0 when the coil aims at the target)."""
    centre = pose[:3, 3]
    z_axis = pose[:3, 2]
    rel = np.asarray(target_ras_mm, float) - centre
    return float(np.linalg.norm(rel - np.dot(rel, z_axis) * z_axis))
