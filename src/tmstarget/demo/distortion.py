"""A copy of the demo dataset whose BOLD is distorted by a known B0 field, with BIDS field maps of it.

:func:`make_distorted_dataset` takes a demo BIDS dataset (``tmstarget demo-data``,
:func:`tmstarget.demo.core.make_demo_dataset`) and writes a copy in which every chosen subject's BOLD
run is distorted along its phase-encoding (PE) axis by a synthetic susceptibility field, plus ONE kind
of B0 field map of that same field, written as the BIDS specification's ``fmap/`` section defines it:

``phasediff``
    ``_phasediff`` (rad, wrapped to [-pi, pi); random phase outside the head, as scanners write it),
    ``_magnitude1``/``_magnitude2``; ``EchoTime1``/``EchoTime2`` (s) in the phasediff sidecar.
``fieldmap``
    ``_fieldmap`` (``Units: Hz``; 0 outside the head) and ``_magnitude``.
``pepolar``
    ``_dir-AP_epi`` (PE ``j-``, the BOLD's) and ``_dir-PA_epi`` (PE ``j``): a few volumes each of the
    undistorted BOLD, distorted in opposite directions; ``PhaseEncodingDirection`` and
    ``TotalReadoutTime`` in each sidecar.

The GRE field maps (phasediff, fieldmap) lie on their own grid (3 x 3 x 3.5 mm, offset from the BOLD
grid), in the same scanner world as the BOLD; their magnitude is the demo T1w sampled there. Field maps
are tied to the run by ``B0FieldIdentifier`` / ``B0FieldSource`` (``match="b0field"``) or by
``IntendedFor`` (``"intendedfor"``: BIDS URI ``bids::sub-01/func/...``; ``"intendedfor-relative"``: the
older path relative to the subject folder). The BOLD sidecar gets ``TotalReadoutTime`` and the
``EffectiveEchoSpacing`` it is derived from (BIDS: TotalReadoutTime = EffectiveEchoSpacing x (N_PE - 1)).

Field and sign convention (the one of BIDS, FSL and fMRIPrep/sdcflows)
-----------------------------------------------------------------------
The field ``f`` (Hz) is a function of the object's true position ``x``. With total readout time ``T``
(s) and PE direction ``j`` (``j-``), signal from ``x`` appears displaced along the PE voxel axis by
``s(x) = +f(x) T`` voxels (``-f(x) T`` for ``j-``): a positive field with PE ``j`` shifts signal
toward +j. The distorted image is ``I_d(x + s(x)) = I(x) / (1 + ds/dx)`` (signal conserved, so
compressed regions brighten), computed by inverting ``y = x + s(x)`` along every PE line
(fixed-point iteration; the field keeps ``|ds/dx| < 1``, no fold-over). Correction is therefore
``I(x) ~ I_d(x + s(x))``: sdcflows' ``B0FieldTransform.apply`` samples the distorted image at
``ijk + fmap_hz * ro_time`` (negated for ``-``) along the PE axis, the same thing.

Ground truth (``sourcedata/groundtruth/sub-XX/``): ``sub-XX_b0field_hz.nii.gz`` (the field on the
BOLD grid, at undistorted positions), ``sub-XX_b0displacement_mm.nii.gz`` (``s`` in mm along the +j
voxel axis of the BOLD grid) and ``sub-XX_distortion.json`` (:func:`load_distortion_truth`).
Distortion is applied to the written (moving, noisy) BOLD in the scanner frame, so its thermal noise
is resampled too; the head moves < 1 mm, the field stays with the scanner.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from tmstarget import __version__
from tmstarget.errors import InputError
from tmstarget.io.files import atomic_folder, read_json, save_img, write_json

log = logging.getLogger(__name__)

#: The kinds of B0 field map the builder writes (one per dataset).
FIELDMAP_KINDS = ("phasediff", "fieldmap", "pepolar")
#: How field maps are tied to the BOLD run.
MATCH_STYLES = ("b0field", "intendedfor", "intendedfor-relative")

PE_DIRECTION = "j-"
#: BIDS TotalReadoutTime of the BOLD and the PEPOLAR EPIs (s): 76 PE lines x 0.467 ms effective echo spacing.
TOTAL_READOUT_TIME_S = 0.035
ECHO_TIME1_S, ECHO_TIME2_S = 0.00492, 0.00738  # Siemens' usual GRE field map, delta TE 2.46 ms
N_EPI_VOLUMES = 3
#: Field-map grid: voxel size (mm) and offset of its centre from the BOLD grid's (mm).
FMAP_VOXEL_MM = (3.0, 3.0, 3.5)
FMAP_CENTRE_OFFSET_MM = (1.1, -1.3, 0.9)
#: The synthetic susceptibility field: Gaussian blobs (MNI RAS mm centre, peak Hz, sigma mm). Positive over
#: the frontal sinus / orbitofrontal cortex (reaching the ventromedial PFC and the sgACC seed), negative
#: near the ear canals (inferior temporal lobes), as measured B0 maps of the human head look.
FIELD_BLOBS_MNI = (
    ((0.0, 34.0, -30.0), 90.0, 15.0),
    ((-46.0, -20.0, -32.0), -40.0, 13.0),
    ((46.0, -20.0, -32.0), -40.0, 13.0),
)
#: A broad part of the field over the whole head, so that every brain voxel is displaced (a correction that
#: did nothing would leave a residual of ~1 mm everywhere, not only near the sinuses): an offset (Hz) at the
#: MNI head centre (0, -18, 10) and a first-order shim residual (Hz per mm along the scanner's x, y, z).
FIELD_OFFSET_HZ = 12.0
FIELD_GRADIENT_HZ_PER_MM = (0.0, 0.05, 0.15)
HEAD_CENTRE_MNI_RAS_MM = (0.0, -18.0, 10.0)
BOLD_NAME = "sub-{sub}_task-rest_bold"
B0_IDENTIFIER = "b0map{kind}"


# --------------------------------------------------------------------------------------------
# the physics: field -> shift -> distorted image


def pe_axis_and_sign(pe_direction: str) -> tuple[int, int]:
    """Voxel axis (0, 1, 2) and sign (+1, -1) of a BIDS ``PhaseEncodingDirection`` (``i``, ``j-``, ...)."""
    text = str(pe_direction)
    if text not in ("i", "j", "k", "i-", "j-", "k-"):
        raise ValueError(f"PhaseEncodingDirection {pe_direction!r} is not one of i, j, k, i-, j-, k-")
    return "ijk".index(text[0]), -1 if text.endswith("-") else 1


def shift_vox_from_field_hz(field_hz: np.ndarray, total_readout_time_s: float, pe_direction: str) -> np.ndarray:
    """Signed displacement (voxels along the PE voxel axis, + = increasing index) of signal at each true
    position: ``field_hz * total_readout_time_s``, negated for a ``-`` direction."""
    _, sign = pe_axis_and_sign(pe_direction)
    return np.asarray(field_hz, dtype=np.float64) * float(total_readout_time_s) * sign


def _sample_along_axis(values: np.ndarray, coord_axis: np.ndarray, axis: int, order: int = 1) -> np.ndarray:
    """``values`` sampled at every voxel with its ``axis`` index replaced by ``coord_axis`` (same shape)."""
    grid = np.indices(values.shape, dtype=np.float64)
    grid[axis] = coord_axis
    return ndi.map_coordinates(values, grid, order=order, mode="nearest")


def source_coordinates(shift_vox: np.ndarray, axis: int, tol_vox: float = 1e-4,
                       max_iter: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert ``y = x + s(x)`` along ``axis``: for every voxel ``y`` of the distorted grid the true position
    ``x`` (fractional index) whose signal lands there, the Jacobian ``1 + ds/dx`` at ``x``, and a mask of
    the voxels whose source lies inside the grid.

    Fixed-point iteration ``x <- y - s(x)`` (``s`` linearly interpolated along the axis), a contraction
    while ``max |ds/dx| < 1``.
    """
    shift = np.asarray(shift_vox, dtype=np.float64)
    slope = np.gradient(shift, axis=axis)
    if np.max(np.abs(slope)) >= 0.95:
        raise ValueError(f"the displacement changes by {np.max(np.abs(slope)):.2f} voxel per voxel along the PE "
                         "axis: signal would fold over; use a weaker or smoother field")
    y = np.indices(shift.shape, dtype=np.float64)[axis]
    x = y - shift
    for _ in range(max_iter):
        x_new = y - _sample_along_axis(shift, x, axis)
        step = float(np.max(np.abs(x_new - x)))
        x = x_new
        if step < tol_vox:
            break
    jacobian = 1.0 + _sample_along_axis(slope, x, axis)
    inside = (x >= -0.5) & (x <= shift.shape[axis] - 0.5)
    return x, jacobian, inside


def distort_volume(volume: np.ndarray, shift_vox: np.ndarray, pe_axis: int, inverse=None,
                   jacobian: bool = True) -> np.ndarray:
    """A 3D volume as EPI with displacement ``shift_vox`` along ``pe_axis`` would record it (float64).

    ``inverse`` is the result of :func:`source_coordinates` (computed when None); cubic-spline sampling,
    0 where the source lies outside the grid; with ``jacobian`` the intensity is divided by ``1 + ds/dx``.
    """
    x, jac, inside = inverse if inverse is not None else source_coordinates(shift_vox, pe_axis)
    grid = np.indices(volume.shape, dtype=np.float64)
    grid[pe_axis] = x
    out = ndi.map_coordinates(np.asarray(volume, dtype=np.float64), grid, order=3, mode="nearest")
    if jacobian:
        out /= jac
    out[~inside] = 0.0
    return out


def distort_series(data_xyzt: np.ndarray, shift_vox: np.ndarray, pe_axis: int, jacobian: bool = True) -> np.ndarray:
    """Every volume of a 4D array distorted by the same field (int16 in -> int16 out, rounded, clipped)."""
    inverse = source_coordinates(shift_vox, pe_axis)
    out = np.empty(data_xyzt.shape, dtype=data_xyzt.dtype)
    info = np.iinfo(out.dtype) if np.issubdtype(out.dtype, np.integer) else None
    for t in range(data_xyzt.shape[3]):
        vol = distort_volume(data_xyzt[..., t], shift_vox, pe_axis, inverse, jacobian)
        if info is not None:
            vol = np.clip(np.rint(vol), max(info.min, 0), info.max)
        out[..., t] = vol
    return out


def wrap_phase_rad(phase_rad: np.ndarray) -> np.ndarray:
    """Phase wrapped to [-pi, pi)."""
    return (np.asarray(phase_rad) + np.pi) % (2 * np.pi) - np.pi


# --------------------------------------------------------------------------------------------
# the synthetic field of one subject


def _mni_to_native_ras_mm(points_mni: np.ndarray, mni_to_t1w_map: nib.Nifti1Image) -> np.ndarray:
    """Native RAS mm of MNI points (N, 3) through the demo's ``mni_to_t1w_map`` (trilinear)."""
    data = np.asarray(mni_to_t1w_map.dataobj, dtype=np.float64)
    ijk = nib.affines.apply_affine(np.linalg.inv(mni_to_t1w_map.affine), np.atleast_2d(points_mni))
    return np.stack([ndi.map_coordinates(data[..., c], ijk.T, order=1, mode="nearest") for c in range(3)], axis=1)


def field_model_native(mni_to_t1w_map: nib.Nifti1Image, blobs=FIELD_BLOBS_MNI, scale: float = 1.0) -> dict:
    """The synthetic field of one subject in its native (scanner) world: ``blobs`` =
    ``[(centre_native_ras_mm (3,), peak_hz, sigma_mm)]`` (:data:`FIELD_BLOBS_MNI` with centres carried
    through the demo's MNI -> native map), ``centre_ras_mm`` (the head centre), ``offset_hz`` and
    ``gradient_hz_per_mm`` (:data:`FIELD_OFFSET_HZ`, :data:`FIELD_GRADIENT_HZ_PER_MM`); ``scale``
    multiplies every term."""
    centres = _mni_to_native_ras_mm(np.array([b[0] for b in blobs] + [HEAD_CENTRE_MNI_RAS_MM], dtype=float),
                                    mni_to_t1w_map)
    return {"blobs": [(centres[n], float(b[1]) * scale, float(b[2])) for n, b in enumerate(blobs)],
            "centre_ras_mm": centres[-1], "offset_hz": FIELD_OFFSET_HZ * scale,
            "gradient_hz_per_mm": np.asarray(FIELD_GRADIENT_HZ_PER_MM, dtype=float) * scale}


def field_hz_at(points_ras_mm: np.ndarray, model: dict) -> np.ndarray:
    """The synthetic field (Hz) at native points (N, 3): offset + linear gradient + Gaussian blobs."""
    pts = np.atleast_2d(np.asarray(points_ras_mm, dtype=np.float64))
    out = model["offset_hz"] + (pts - model["centre_ras_mm"]) @ model["gradient_hz_per_mm"]
    for centre, peak_hz, sigma_mm in model["blobs"]:
        out += peak_hz * np.exp(-np.sum((pts - centre) ** 2, axis=1) / (2 * sigma_mm ** 2))
    return out


def field_hz_on_grid(shape, affine: np.ndarray, model: dict) -> np.ndarray:
    """The synthetic field (Hz) at every voxel centre of a grid, array of ``shape``."""
    ijk = np.indices(tuple(shape)[:3], dtype=np.float64).reshape(3, -1).T
    return field_hz_at(nib.affines.apply_affine(affine, ijk), model).reshape(tuple(shape)[:3])


def fieldmap_grid(bold_shape, bold_affine: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the GRE field-map grid: :data:`FMAP_VOXEL_MM` voxels covering the BOLD field of
    view, centred :data:`FMAP_CENTRE_OFFSET_MM` away from the BOLD grid's centre (another grid, same world)."""
    bold_shape = np.asarray(bold_shape[:3])
    voxel = np.asarray(FMAP_VOXEL_MM)
    extent = bold_shape * np.abs(np.diag(bold_affine)[:3])
    shape = tuple(int(n) for n in np.ceil(extent / voxel))
    centre = nib.affines.apply_affine(bold_affine, (bold_shape - 1) / 2.0) + np.asarray(FMAP_CENTRE_OFFSET_MM)
    affine = np.diag(list(voxel) + [1.0])
    affine[:3, 3] = centre - voxel * (np.asarray(shape) - 1) / 2.0
    return shape, affine


def _resample_world(img: nib.Nifti1Image, shape, affine: np.ndarray, smooth_mm: float = 0.0) -> np.ndarray:
    """A 3D image sampled at the voxel centres of another grid in the same world (trilinear, 0 outside)."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    if smooth_mm > 0:
        data = ndi.gaussian_filter(data, smooth_mm / np.abs(np.diag(img.affine)[:3]) / 2.355)
    vox = np.linalg.inv(img.affine) @ affine
    return ndi.affine_transform(data, vox[:3, :3], vox[:3, 3], output_shape=tuple(shape), order=1, cval=0.0)


def _head_mask(magnitude: np.ndarray) -> np.ndarray:
    """Inside the head on a GRE magnitude: above 8 % of its robust maximum, closed (skull) and filled; padded
    first so that a head cut by the field of view keeps its edge voxels."""
    pad = 3
    head = np.pad(magnitude > 0.08 * np.percentile(magnitude[magnitude > 0], 99), pad)
    head = ndi.binary_fill_holes(ndi.binary_closing(head, iterations=2))
    return head[pad:-pad, pad:-pad, pad:-pad]


# --------------------------------------------------------------------------------------------
# writing the dataset


def _img(data, affine, dtype, t_r=None) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if t_r is not None:
        img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (float(t_r),))
    return img


def _link(sidecar: dict, sub: str, kind: str, match: str) -> dict:
    """The field map sidecar's tie to the BOLD run (B0FieldIdentifier or IntendedFor)."""
    bold = f"func/{BOLD_NAME.format(sub=sub)}.nii.gz"
    if match == "b0field":
        sidecar["B0FieldIdentifier"] = B0_IDENTIFIER.format(kind=kind)
    elif match == "intendedfor":
        sidecar["IntendedFor"] = [f"bids::sub-{sub}/{bold}"]
    else:
        sidecar["IntendedFor"] = [bold]
    return sidecar


def _write_gre(fmap: Path, sub: str, kind: str, match: str, field_fmap_hz, magnitude, head, affine, rng,
               delta_te_s: float) -> list[str]:
    """The phasediff (or Hz fieldmap) files and their magnitude images; returns the names written."""
    common = {"MagneticFieldStrength": 3, "Manufacturer": "synthetic (tmstarget.demo.distortion)"}
    mag = 1000.0 * magnitude / max(float(np.percentile(magnitude[head], 99)), 1e-6)
    if kind == "phasediff":
        phase = wrap_phase_rad(2 * np.pi * field_fmap_hz * delta_te_s)
        phase[~head] = rng.uniform(-np.pi, np.pi, size=int((~head).sum()))
        names = {"phasediff": phase.astype(np.float32), "magnitude1": mag,
                 "magnitude2": mag * np.exp(-delta_te_s / 0.045)}
        side = {"phasediff": _link({**common, "EchoTime1": ECHO_TIME1_S, "EchoTime2": ECHO_TIME1_S + delta_te_s,
                                    "Units": "rad"}, sub, kind, match),
                "magnitude1": {**common, "EchoTime": ECHO_TIME1_S},
                "magnitude2": {**common, "EchoTime": ECHO_TIME1_S + delta_te_s}}
    else:
        names = {"fieldmap": np.where(head, field_fmap_hz, 0.0).astype(np.float32), "magnitude": mag}
        side = {"fieldmap": _link({**common, "Units": "Hz"}, sub, kind, match), "magnitude": common}
    written = []
    for suffix, data in names.items():
        dtype = np.float32 if suffix in ("phasediff", "fieldmap") else np.int16
        data = data if dtype == np.float32 else np.clip(np.rint(data), 0, 32767)
        save_img(_img(data, affine, dtype), fmap / f"sub-{sub}_{suffix}.nii.gz")
        if suffix in side:  # BIDS: a magnitude image's sidecar is optional; every one is written here
            write_json(side[suffix], fmap / f"sub-{sub}_{suffix}.json")
        written.append(f"sub-{sub}_{suffix}.nii.gz")
    return written


def _write_pepolar(fmap: Path, sub: str, match: str, volumes_xyzt, shift_vox, pe_axis, affine, t_r) -> list[str]:
    """``_dir-AP_epi`` (PE j-, distorted like the BOLD) and ``_dir-PA_epi`` (PE j, the opposite way)."""
    written = []
    for label, direction in (("AP", "j-"), ("PA", "j")):
        _, sign = pe_axis_and_sign(direction)
        bold_sign = pe_axis_and_sign(PE_DIRECTION)[1]
        data = distort_series(volumes_xyzt, shift_vox * sign * bold_sign, pe_axis)
        name = f"sub-{sub}_dir-{label}_epi"
        save_img(_img(data, affine, np.int16, t_r), fmap / f"{name}.nii.gz")
        write_json(_link({"PhaseEncodingDirection": direction, "TotalReadoutTime": TOTAL_READOUT_TIME_S,
                          "EchoTime": 0.03, "RepetitionTime": float(t_r), "MagneticFieldStrength": 3,
                          "Manufacturer": "synthetic (tmstarget.demo.distortion)"}, sub, "pepolar", match),
                   fmap / f"{name}.json")
        written.append(f"{name}.nii.gz")
    return written


def _distort_subject(root: Path, sub: str, kind: str, match: str, field_scale: float, delta_te_s: float,
                     rng: np.random.Generator) -> dict:
    """Distort one subject's BOLD in place (inside the new copy ``root``) and add its field maps."""
    func, fmap = root / f"sub-{sub}" / "func", root / f"sub-{sub}" / "fmap"
    gt = root / "sourcedata" / "groundtruth" / f"sub-{sub}"
    bold_path = func / f"{BOLD_NAME.format(sub=sub)}.nii.gz"
    bold_img = nib.load(str(bold_path))
    meta = read_json(bold_path.with_name(bold_path.name.replace(".nii.gz", ".json")))
    truth = read_json(gt / f"sub-{sub}_groundtruth.json")
    model = field_model_native(nib.load(str(gt / truth["mni_to_t1w_map"])), scale=field_scale)
    affine, shape = bold_img.affine, bold_img.shape[:3]
    pe_axis, _ = pe_axis_and_sign(PE_DIRECTION)
    field_bold_hz = field_hz_on_grid(shape, affine, model)
    shift_vox = shift_vox_from_field_hz(field_bold_hz, TOTAL_READOUT_TIME_S, PE_DIRECTION)
    voxel_pe_mm = float(np.linalg.norm(affine[:3, pe_axis]))
    undistorted = np.asanyarray(bold_img.dataobj)
    n_dummy = int(truth["n_dummy_scans"])
    epi_volumes = np.array(undistorted[..., n_dummy:n_dummy + N_EPI_VOLUMES])
    distorted = distort_series(undistorted, shift_vox, pe_axis)
    save_img(_img(distorted, affine, np.int16, meta["RepetitionTime"]), bold_path)
    del distorted, undistorted
    n_pe = int(shape[pe_axis])
    meta.update({"PhaseEncodingDirection": PE_DIRECTION, "TotalReadoutTime": TOTAL_READOUT_TIME_S,
                 "EffectiveEchoSpacing": TOTAL_READOUT_TIME_S / (n_pe - 1)})
    if match == "b0field":
        meta["B0FieldSource"] = B0_IDENTIFIER.format(kind=kind)
    write_json(meta, bold_path.with_name(bold_path.name.replace(".nii.gz", ".json")))

    if kind == "pepolar":
        written = _write_pepolar(fmap, sub, match, epi_volumes, shift_vox, pe_axis, affine, meta["RepetitionTime"])
    else:
        fshape, faffine = fieldmap_grid(shape, affine)
        t1w = nib.load(str(root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"))
        magnitude = _resample_world(t1w, fshape, faffine, smooth_mm=3.0)
        head = _head_mask(magnitude)
        written = _write_gre(fmap, sub, kind, match, field_hz_on_grid(fshape, faffine, model), magnitude, head,
                             faffine, rng, delta_te_s)

    field_name, disp_name = f"sub-{sub}_b0field_hz.nii.gz", f"sub-{sub}_b0displacement_mm.nii.gz"
    save_img(_img(field_bold_hz, affine, np.float32), gt / field_name)
    save_img(_img(shift_vox * voxel_pe_mm, affine, np.float32), gt / disp_name)
    record = {
        "fieldmap_kind": kind, "match": match, "fieldmap_files": sorted(written),
        "b0field_hz": field_name, "b0displacement_mm": disp_name,
        "phase_encoding_direction": PE_DIRECTION, "total_readout_time_s": TOTAL_READOUT_TIME_S,
        "pe_voxel_axis": int(pe_axis), "pe_voxel_mm": voxel_pe_mm,
        "pe_axis_ras_unit": (affine[:3, pe_axis] / voxel_pe_mm).tolist(),
        "echo_times_s": [ECHO_TIME1_S, ECHO_TIME1_S + delta_te_s] if kind == "phasediff" else None,
        "field_blobs_mni": [{"centre_mni_ras_mm": list(c), "peak_hz": p * field_scale, "sigma_mm": s}
                            for c, p, s in FIELD_BLOBS_MNI],
        "field_blobs_native": [{"centre_ras_mm": c.tolist(), "peak_hz": p, "sigma_mm": s}
                               for c, p, s in model["blobs"]],
        "field_offset_hz": model["offset_hz"], "field_gradient_hz_per_mm": model["gradient_hz_per_mm"].tolist(),
        "field_linear_centre_ras_mm": model["centre_ras_mm"].tolist(),
        "convention": "signal from the true position x appears at x + s(x) along the PE voxel axis, "
                      "s = field_hz * TotalReadoutTime voxels (negated for a '-' direction); b0displacement_mm "
                      "is s in mm along the +index direction of that axis, on the BOLD grid (true positions); "
                      "correction samples the distorted image at x + s(x) (BIDS/FSL/sdcflows convention); "
                      "intensity divided by 1 + ds/dx",
        "max_abs_displacement_mm": float(np.max(np.abs(shift_vox)) * voxel_pe_mm),
        "generator": f"tmstarget.demo.distortion {__version__}",
    }
    write_json(record, gt / f"sub-{sub}_distortion.json")
    return record


def make_distorted_dataset(source_bids: str | os.PathLike, out_dir: str | os.PathLike, kind: str = "phasediff",
                           subjects: list[str] | None = None, match: str = "b0field", field_scale: float = 1.0,
                           delta_te_s: float = ECHO_TIME2_S - ECHO_TIME1_S, seed: int = 0) -> Path:
    """Copy a demo dataset, distort the BOLD of ``subjects`` by the known field and add one kind of field map.

    Parameters
    ----------
    source_bids : path
        A dataset made by :func:`tmstarget.demo.core.make_demo_dataset` (needs its ``sourcedata/groundtruth``).
    out_dir : path
        Folder to create (absent or empty); built in a temporary sibling and moved into place at the end.
    kind : {"phasediff", "fieldmap", "pepolar"}
        The field map written (:data:`FIELDMAP_KINDS`).
    subjects : list of str, optional
        Labels (``"01"``) to copy; all subjects of the source when None. Only these are in the copy.
    match : {"b0field", "intendedfor", "intendedfor-relative"}
        How the field maps name their run (module docstring).
    field_scale : float
        Multiplies the field's peaks (1: up to ~9 mm displacement below the frontal lobe).
    delta_te_s : float
        Echo-time difference of the phasediff (s); large values make the phase wrap inside the head.
    seed : int
        Seed of the random background phase.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    src, out = Path(source_bids), Path(out_dir)
    if kind not in FIELDMAP_KINDS:
        raise InputError(f"field map kind {kind!r}: choose one of {', '.join(FIELDMAP_KINDS)}")
    if match not in MATCH_STYLES:
        raise InputError(f"match {match!r}: choose one of {', '.join(MATCH_STYLES)}")
    available = sorted(p.name[4:] for p in src.glob("sub-*") if p.is_dir())
    subjects = list(subjects) if subjects else available
    missing = [s for s in subjects if s not in available
               or not (src / "sourcedata" / "groundtruth" / f"sub-{s}" / f"sub-{s}_groundtruth.json").exists()]
    if missing:
        raise InputError(f"{src}: no demo subject with ground truth for {', '.join('sub-' + s for s in missing)}; "
                         "make the source with `tmstarget demo-data`")
    with atomic_folder(out) as tmp:
        for name in ("README", "participants.json"):
            if (src / name).exists():
                shutil.copy2(src / name, tmp / name)
        rows = (src / "participants.tsv").read_text().splitlines()
        (tmp / "participants.tsv").write_text("\n".join([rows[0]] + [r for r in rows[1:]
                                                                      if r.split("\t")[0][4:] in subjects]) + "\n")
        description = json.loads((src / "dataset_description.json").read_text())
        description["Name"] = f"{description.get('Name', 'demo')}, BOLD distorted by a known B0 field ({kind})"
        description["GeneratedBy"] = list(description.get("GeneratedBy") or []) + [{
            "Name": "tmstarget.demo.distortion", "Version": __version__,
            "Description": f"make_distorted_dataset(kind={kind!r}, match={match!r}, field_scale={field_scale})"}]
        write_json(description, tmp / "dataset_description.json")
        rng = np.random.default_rng(seed)
        for sub in subjects:
            shutil.copytree(src / f"sub-{sub}", tmp / f"sub-{sub}")
            shutil.copytree(src / "sourcedata" / "groundtruth" / f"sub-{sub}",
                            tmp / "sourcedata" / "groundtruth" / f"sub-{sub}")
            _distort_subject(tmp, sub, kind, match, field_scale, delta_te_s, rng)
    log.info("distorted demo dataset (%s field map) written to %s", kind, out)
    return out


def load_distortion_truth(bids_dir: str | os.PathLike, subject: str) -> dict:
    """``sub-XX_distortion.json`` of a distorted demo dataset, with ``b0field_hz`` and ``b0displacement_mm``
    as absolute paths."""
    label = subject[4:] if subject.startswith("sub-") else subject
    folder = Path(bids_dir) / "sourcedata" / "groundtruth" / f"sub-{label}"
    path = folder / f"sub-{label}_distortion.json"
    if not path.exists():
        raise InputError(f"{path}: no distortion ground truth for sub-{label}; is {bids_dir} a dataset made by "
                         "tmstarget.demo.distortion.make_distorted_dataset?")
    truth = read_json(path)
    for key in ("b0field_hz", "b0displacement_mm"):
        truth[key] = folder / truth[key]
    return truth


def displacement_error_mm(estimated_mm: np.ndarray, truth_mm: np.ndarray, mask: np.ndarray) -> dict:
    """Median, 95th percentile and maximum of ``|estimated - truth|`` (mm) over ``mask``, and the voxel count."""
    err = np.abs(np.asarray(estimated_mm, dtype=np.float64) - np.asarray(truth_mm, dtype=np.float64))[np.asarray(mask, bool)]
    if err.size == 0:
        raise ValueError("the mask selects no voxel")
    return {"median_mm": float(np.median(err)), "p95_mm": float(np.percentile(err, 95)),
            "max_mm": float(err.max()), "voxels": int(err.size)}


def brain_mask_on_bold_grid(bids_dir: str | os.PathLike, subject: str) -> np.ndarray:
    """The true brain (nilearn's MNI152 brain mask carried through the demo's known T1w -> MNI map) on the
    subject's BOLD grid: bool array of the BOLD's 3D shape (for residuals "inside the brain")."""
    from nilearn import datasets

    label = subject[4:] if subject.startswith("sub-") else subject
    root = Path(bids_dir)
    gt = root / "sourcedata" / "groundtruth" / f"sub-{label}"
    truth = read_json(gt / f"sub-{label}_groundtruth.json")
    bold = nib.load(str(root / f"sub-{label}" / "func" / f"{BOLD_NAME.format(sub=label)}.nii.gz"))
    t1w_to_mni = nib.load(str(gt / truth["t1w_to_mni_map"]))
    maps = np.asarray(t1w_to_mni.dataobj, dtype=np.float64)
    vox = np.linalg.inv(t1w_to_mni.affine) @ bold.affine
    mni = np.stack([ndi.affine_transform(maps[..., c], vox[:3, :3], vox[:3, 3], output_shape=bold.shape[:3],
                                         order=1, cval=np.nan) for c in range(3)], axis=-1)
    mask_img = datasets.load_mni152_brain_mask(resolution=2)
    ijk = nib.affines.apply_affine(np.linalg.inv(mask_img.affine), np.nan_to_num(mni.reshape(-1, 3), nan=1e6))
    inside = ndi.map_coordinates(np.asarray(mask_img.dataobj, dtype=np.float32), ijk.T, order=0, cval=0.0)
    return (inside.reshape(bold.shape[:3]) > 0.5) & np.isfinite(mni).all(axis=-1)
