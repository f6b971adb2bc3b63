"""Susceptibility distortion: the B0 field (Hz) of a BOLD run from its BIDS field maps, and the voxel
shift along the phase-encoding (PE) axis that the one resampling of :mod:`tmstarget.preproc.bold` adds.

Convention (sdcflows' and FSL FUGUE's): tissue at undistorted voxel index ``y`` (along the PE voxel
axis) appears in the EPI at ``y + shift_vox(y)`` with ``shift_vox = field_hz x TotalReadoutTime x
sign(PE)`` (``j`` +1, ``j-`` -1). Undoing it samples the EPI at ``y + shift_vox(y)``: no extra
interpolation, the shift is added to the sampling indices (:func:`sampling_indices_with_shift`).

Field estimates (each returns Hz on the field map's own grid unless stated):

- :func:`field_hz_from_phasediff`: phase difference (rad; scanner units rescaled to [-pi, pi)),
  unwrapped with scikit-image's ``restoration.unwrap_phase`` inside the magnitude's head mask,
  field = dphi / (2 pi (EchoTime2 - EchoTime1));
- :func:`field_hz_from_fieldmap`: a ``_fieldmap`` in Hz, rad/s (/ 2 pi) or T (x 42.577 MHz/T);
- :func:`field_hz_from_pepolar`: two EPI references with opposite PE (the BOLD's own direction and
  the other), registered with antspyx SyN restricted to the PE axis (``restrict_transformation``);
  the registration gives the displacement between the two (``-2 x shift`` for equal readouts), each
  half assigned back to the undistorted position by a fixed-point iteration. Returned on the grid of
  the same-direction image.

The field is taken into the BOLD reference grid by world (scanner) coordinates
(:func:`field_to_grid_hz`), not by registering the magnitude to the BOLD reference: a field map and
the BOLD of one session share the scanner frame (BIDS field maps are acquired for that purpose), and
a rigid registration to the distorted BOLD reference would be biased by the very distortion being
measured. Head motion between the field map and the run is not modelled (as in FSL FUGUE).

sdcflows (nipreps) was checked first: its estimators are nipype workflows that call FSL (PRELUDE,
TOPUP, FUGUE) and AFNI (3dQwarp) binaries, which pip cannot install, and it pulls niworkflows and
TemplateFlow (network at run time); the conversions here follow its formulas (phasediff -> Hz, Hz ->
voxel shift map). nitransforms is not needed: the shift is added to indices, not composed as a
transform.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from tmstarget.errors import InputError

log = logging.getLogger(__name__)

GYROMAGNETIC_HZ_PER_T = 42.577478e6
#: fixed-point iterations that move the PEPOLAR half-displacement from distorted to undistorted positions
PEPOLAR_FIXED_POINT_ITERATIONS = 6


def phase_to_rad(phase: np.ndarray) -> np.ndarray:
    """Phase in rad; images in scanner units (range above 2 pi, e.g. Siemens -4096..4095) rescaled
    linearly onto [-pi, pi) as sdcflows' ``au2rad`` does."""
    phase = np.asarray(phase, np.float64)
    lo, hi = float(phase.min()), float(phase.max())
    if hi - lo <= 2 * np.pi + 1e-3:
        return phase
    return (phase - lo) / (hi - lo) * 2 * np.pi - np.pi


def head_mask_from_magnitude(magnitude: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """Voxels above ``fraction`` of the magnitude's 98th percentile, holes filled, largest component."""
    magnitude = np.asarray(magnitude, np.float64)
    mask = magnitude > fraction * np.percentile(magnitude, 98)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return ndimage.binary_fill_holes(mask)


def field_hz_from_phasediff(phasediff: np.ndarray, echo_time1_s: float, echo_time2_s: float,
                            mask: np.ndarray | None = None) -> np.ndarray:
    """Field (Hz) from a phase-difference image: unwrapped (scikit-image) inside ``mask``, the 2 pi
    multiple nearest the median inside ``mask`` removed, divided by 2 pi (TE2 - TE1); outside ``mask``
    the nearest inside value (so edge voxels of the BOLD sample a plausible field)."""
    from skimage.restoration import unwrap_phase

    phase_rad = phase_to_rad(phasediff)
    mask = np.ones(phase_rad.shape, bool) if mask is None else np.asarray(mask, bool)
    unwrapped = np.asarray(unwrap_phase(np.ma.masked_array(phase_rad, mask=~mask)).filled(0.0), np.float64)
    unwrapped -= 2 * np.pi * np.round(np.median(unwrapped[mask]) / (2 * np.pi))
    field_hz = unwrapped / (2 * np.pi * (float(echo_time2_s) - float(echo_time1_s)))
    return fill_outside_mask(field_hz, mask)


def field_hz_from_fieldmap(fieldmap: np.ndarray, units: str) -> np.ndarray:
    """A BIDS ``_fieldmap`` in Hz: Hz as is, rad/s divided by 2 pi, T times gamma / 2 pi."""
    data = np.asarray(fieldmap, np.float64)
    if units == "Hz":
        return data
    if units == "rad/s":
        return data / (2 * np.pi)
    if units == "T":
        return data * GYROMAGNETIC_HZ_PER_T
    raise InputError(f"field map Units {units!r} is not Hz, rad/s or T")


def fill_outside_mask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` inside ``mask``; outside, the value of the nearest inside voxel."""
    if mask.all() or not mask.any():
        return values
    _, nearest = ndimage.distance_transform_edt(~mask, return_indices=True)
    return values[tuple(nearest)]


def field_to_grid_hz(field_hz: np.ndarray, field_affine_ras: np.ndarray, shape, affine_ras: np.ndarray) -> np.ndarray:
    """The field sampled (linear, nearest value beyond its edge) at the voxel centres of another grid of
    the same scanner space (world coordinates; see the module doc for why not a registration)."""
    ijk = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    to_field = np.linalg.inv(field_affine_ras) @ affine_ras
    ijk_field = to_field[:3, :3] @ ijk + to_field[:3, 3:4]
    return ndimage.map_coordinates(np.asarray(field_hz, np.float64), ijk_field, order=1, mode="nearest",
                                   prefilter=False).reshape(tuple(shape))


def shift_vox_from_field_hz(field_hz: np.ndarray, total_readout_time_s: float, pe_sign: int) -> np.ndarray:
    """Voxel shift along the PE axis: field (Hz) x TotalReadoutTime (s) x sign(PE)."""
    return np.asarray(field_hz, np.float64) * float(total_readout_time_s) * (1 if pe_sign >= 0 else -1)


def shift_mm_from_vox(shift_vox: np.ndarray, affine_ras: np.ndarray, pe_axis: int) -> np.ndarray:
    """A voxel shift along ``pe_axis`` in mm (voxel size along that axis)."""
    return np.asarray(shift_vox) * float(np.linalg.norm(np.asarray(affine_ras)[:3, pe_axis]))


def sampling_indices_with_shift(ijk_3n: np.ndarray, shift_vox_n: np.ndarray | None, pe_axis: int) -> np.ndarray:
    """Voxel indices (3, N) with the shift added along the PE axis (a copy); ``None`` returns them as is."""
    if shift_vox_n is None:
        return ijk_3n
    out = np.array(ijk_3n, dtype=np.float64, copy=True)
    out[pe_axis] += shift_vox_n
    return out


def unwarp_volume(distorted: np.ndarray, shift_vox: np.ndarray, pe_axis: int) -> np.ndarray:
    """A distorted EPI volume resampled (linear) at ``y + shift_vox(y)`` along the PE axis, on its own grid."""
    ijk = np.indices(distorted.shape, dtype=np.float64).reshape(3, -1)
    ijk = sampling_indices_with_shift(ijk, np.asarray(shift_vox, np.float64).ravel(), pe_axis)
    return ndimage.map_coordinates(np.asarray(distorted, np.float32), ijk, order=1, mode="constant", cval=0.0,
                                   prefilter=False).reshape(distorted.shape).astype(np.float32)


def _physical_axis(affine_ras: np.ndarray, pe_axis: int) -> int:
    """The world axis (0 x, 1 y, 2 z; same index in LPS) closest to the voxel axis ``pe_axis``."""
    return int(np.argmax(np.abs(np.asarray(affine_ras)[:3, pe_axis])))


def pepolar_displacement_vox(same: np.ndarray, opposite: np.ndarray, affine_ras: np.ndarray, pe_axis: int,
                             mask: np.ndarray | None = None) -> np.ndarray:
    """Displacement (voxels along ``pe_axis``) w such that ``opposite`` at ``x + w(x)`` matches ``same``
    at ``x`` (both on one grid): antspyx SyN (CC metric) with the deformation restricted to the world
    axis of the PE voxel axis."""
    import ants
    import nibabel as nib

    from tmstarget.preproc.headers import RAS_TO_LPS, nifti_to_ants
    from tmstarget.preproc.registration import make_ants_repeatable

    make_ants_repeatable()
    fixed = nifti_to_ants(np.asarray(same, np.float32), affine_ras)
    moving = nifti_to_ants(np.asarray(opposite, np.float32), affine_ras)
    restrict = tuple(1 if i == _physical_axis(affine_ras, pe_axis) else 0 for i in range(3))
    kwargs = {"mask": nifti_to_ants(np.asarray(mask, np.float32), affine_ras)} if mask is not None else {}
    with tempfile.TemporaryDirectory(prefix="tmstarget_pepolar_") as tmp:
        reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="SyNOnly", syn_metric="CC",
                                syn_sampling=2, reg_iterations=(100, 70, 40), flow_sigma=2, total_sigma=0,
                                restrict_transformation=restrict, outprefix=str(Path(tmp) / "pepolar_"),
                                initial_transform="Identity", **kwargs)
        warp = [t for t in reg["fwdtransforms"] if t.endswith(".nii.gz")][0]
        disp_lps = np.asarray(nib.load(warp).dataobj, np.float64).reshape(tuple(same.shape) + (3,))
    # world (LPS mm) displacement -> voxel displacement: inverse of the LPS direction matrix
    to_vox = np.linalg.inv((RAS_TO_LPS @ np.asarray(affine_ras))[:3, :3])
    return disp_lps @ to_vox[pe_axis]


def field_hz_from_pepolar(same: np.ndarray, opposite: np.ndarray, affine_ras: np.ndarray, pe_axis: int,
                          pe_sign_same: int, readout_same_s: float, readout_opposite_s: float,
                          mask: np.ndarray | None = None) -> np.ndarray:
    """Field (Hz) on the grid of ``same`` (the image whose PE direction is the BOLD's) from a reversed-PE pair.

    With shift d = f T s: ``same`` shows undistorted y at y + f T_s s, ``opposite`` at y - f T_o s, so the
    registration displacement at x = y + f(y) T_s s is w(x) = -f(y) s (T_s + T_o). f is solved by the
    fixed point f(y) = -w(y + f(y) T_s s) / (s (T_s + T_o)) (:data:`PEPOLAR_FIXED_POINT_ITERATIONS`)."""
    sign = 1 if pe_sign_same >= 0 else -1
    disp_vox = pepolar_displacement_vox(same, opposite, affine_ras, pe_axis, mask)
    total_s = float(readout_same_s) + float(readout_opposite_s)
    ijk = np.indices(same.shape, dtype=np.float64).reshape(3, -1)
    field_hz = -disp_vox.ravel() / (sign * total_s)
    for _ in range(PEPOLAR_FIXED_POINT_ITERATIONS):
        at = sampling_indices_with_shift(ijk, field_hz * float(readout_same_s) * sign, pe_axis)
        w = ndimage.map_coordinates(disp_vox, at, order=1, mode="nearest", prefilter=False)
        field_hz = -w / (sign * total_s)
    return field_hz.reshape(same.shape)


def _load(path) -> "tuple[np.ndarray, np.ndarray]":
    from tmstarget.io.nifti import load_img_checked

    img = load_img_checked(path, what="field map")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 4:  # a one-volume 4D image, or an _epi series: its mean
        data = data.mean(axis=3)
    return data, img.affine


def estimate_shift_vox(fieldmap: dict, boldref: np.ndarray, boldref_affine_ras: np.ndarray) -> dict:
    """The BOLD reference grid's voxel shift along PE from a planned field map
    (:func:`tmstarget.bids.fieldmaps.find_fieldmap`).

    Returns
    -------
    dict
        ``shift_vox`` (array on the BOLD reference grid), ``field_hz`` (same grid), ``pe_axis``,
        ``method`` (text for the sidecar).
    """
    kind = fieldmap["kind"]
    files = fieldmap["files"]
    if kind == "phasediff":
        phase, affine = _load(files["phasediff"])
        mag = _load(files["magnitude1"])[0] if "magnitude1" in files else None
        mask = head_mask_from_magnitude(mag) if mag is not None and mag.shape == phase.shape else None
        field = field_hz_from_phasediff(phase, fieldmap["echo_time1_s"], fieldmap["echo_time2_s"], mask)
        method = "phase difference (scikit-image unwrapping), mapped by scanner coordinates"
    elif kind == "fieldmap":
        data, affine = _load(files["fieldmap"])
        field = field_hz_from_fieldmap(data, fieldmap["units"])
        method = f"field map in {fieldmap['units']}, mapped by scanner coordinates"
    elif kind == "pepolar":
        opposite = fieldmap["epi"][0]
        opp, opp_affine = _load(opposite["path"])
        if "epi_same" in files:
            same_info = fieldmap["epi"][1]
            same, affine = _load(same_info["path"])
            readout_same = same_info["total_readout_time_s"]
        else:  # the BOLD reference is the same-direction image
            same, affine = np.asarray(boldref, np.float64), np.asarray(boldref_affine_ras)
            readout_same = fieldmap["total_readout_time_s"]
        opp = field_to_grid_hz(opp, opp_affine, same.shape, affine)  # onto one grid (world coordinates)
        field = field_hz_from_pepolar(_normalised(same), _normalised(opp), affine, fieldmap["pe_axis"],
                                      fieldmap["pe_sign"], readout_same, opposite["total_readout_time_s"])
        method = ("PEPOLAR: antspyx SyN restricted to the phase-encoding axis between reversed-PE references, "
                  "mapped by scanner coordinates")
    else:
        raise ValueError(f"no field estimate for field map kind {kind!r}")
    field_bold = field_to_grid_hz(field, affine, boldref.shape, boldref_affine_ras)
    shift = shift_vox_from_field_hz(field_bold, fieldmap["total_readout_time_s"], fieldmap["pe_sign"])
    return {"shift_vox": shift, "field_hz": field_bold, "pe_axis": int(fieldmap["pe_axis"]), "method": method}


def _normalised(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float64)
    scale = np.percentile(image, 99)
    return (image / scale if scale > 0 else image).astype(np.float32)
