"""One place that opens NIfTI images and checks their headers (docs/method.md, "Inputs"):

- opening: :func:`load_header` (header only), :func:`open_bold_4d` (a 4D run read lazily),
  :func:`load_img_checked` (every voxel read and checked), with one rule for "4D run" and "3D image"
  (:func:`require_4d`, :func:`require_3d`) and one message style naming the file and the fix;
- world space: qform/sform codes and their agreement in mm (:func:`qform_sform_disagreement_mm`,
  :func:`check_qform_sform` for images a navigator loads, :func:`choose_affine` for preprocessing),
  orientation codes (:func:`orientation_codes`, :func:`is_oblique`);
- repetition time with the header's units (sec, msec, usec): :func:`header_tr_s`, :func:`read_t_r`,
  :func:`header_tr_mismatch`;
- reading voxels once from front to back: :func:`inflate_gzip` (the one zlib reader),
  :func:`stream_volumes`, :func:`load_masked_bold`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError

log = logging.getLogger(__name__)

VOLUME_CHUNK = 16           # volumes read from a BOLD file at a time
INFLATE_PIECE_BYTES = 1 << 23   # compressed bytes handed to zlib at a time

#: qform and sform disagree when a voxel corner moves more than this (mm)
QFORM_SFORM_TOLERANCE_MM = 0.1

#: errors of reading a file's voxels (truncated or corrupt data)
READ_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile)


# ----------------------------------------------------------------------------- opening


def unreadable_data_error(name: str, what: str, exc: BaseException) -> InputError:
    """The one message for voxels that cannot be read (truncated or corrupt file)."""
    return InputError(f"{name}: cannot read this {what} ({type(exc).__name__}: {exc}); the file is truncated "
                      "or corrupt: copy or convert it again")


def load_header(path: str | os.PathLike, what: str = "image", keep_file_open: bool = False):
    """Open a NIfTI file reading its header only (voxels stay on disk, read lazily).

    Raises
    ------
    InputError
        ``<path>: <what> not found; check the path`` or ``<file>: cannot read the NIfTI header (...);
        the file is corrupt: copy or convert it again``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; check the path")
    try:
        return nib.load(str(path), keep_file_open=keep_file_open) if keep_file_open else nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for a broken header
        raise InputError(f"{path.name}: cannot read the NIfTI header ({exc}); the file is corrupt: copy or "
                         "convert it again") from None


def require_4d(shape: tuple, name: str) -> None:
    """A resting-state run is 4D with at least two volumes; else an error naming the file."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4 and shape[3] >= 2:
        return
    if len(shape) == 4:
        raise InputError(f"{name} has one volume (shape {shape}); a resting-state run must be 4D (x, y, z, time) "
                         "with many volumes")
    raise InputError(f"{name} is {len(shape)}D with shape {shape}; a resting-state run must be 4D (x, y, z, time)")


def require_3d(shape: tuple, name: str, what: str = "image") -> None:
    """An anatomical image or mask is one 3D volume (a 4D image with one volume counts as 3D)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        raise InputError(f"{name} is {len(shape)}D with shape {shape}; a {what} must be one 3D volume: keep the "
                         f"volume you want (e.g. `fslroi in out 0 1`) or re-export the {what}")
    if len(shape) < 3:
        raise InputError(f"{name} has shape {shape}; a {what} must be a 3D volume")


def open_bold_4d(path, what: str = "BOLD run") -> nib.Nifti1Image:
    """A 4D run opened lazily (file kept open for repeated reads); header checked by :func:`require_4d`."""
    img = load_header(path, what, keep_file_open=True)
    require_4d(img.shape, Path(path).name)
    return img


def load_img_checked(path: str | os.PathLike, ndim: int | None = None, what: str = "image",
                     min_volumes: int | None = None, read_data: bool = True) -> nib.Nifti1Image:
    """Load a NIfTI image and fail with a message naming the file and the fix.

    Checks that the file exists, is readable to the end (catches truncated ``.nii.gz``), has the
    expected number of dimensions (:func:`require_3d`, :func:`require_4d`; a 4D image with one
    volume is returned as 3D for ``ndim=3``), has at least ``min_volumes`` volumes, and contains
    no NaN or infinite values. With ``read_data=False`` only the header is read (the checks of the
    voxels, end of file and NaN, are then the caller's, e.g. as it streams the volumes).
    """
    path = Path(path)
    name = path.name
    img = load_header(path, what)
    data = None
    if read_data or (ndim == 3 and img.ndim > 3):
        try:
            data = np.asanyarray(img.dataobj)
        except READ_ERRORS + (ValueError,) as exc:
            raise unreadable_data_error(name, what, exc) from None
    shape = img.shape if data is None else data.shape
    if ndim == 3:
        require_3d(shape, name, what)
        if len(shape) > 3:
            data = data.reshape(shape[:3])
            img = nib.Nifti1Image(data, img.affine, img.header)
            shape = data.shape
    elif ndim == 4:
        if len(shape) != 4:
            require_4d(shape, name)
    elif ndim is not None and len(shape) != ndim:
        raise InputError(f"{name} is {len(shape)}D with shape {shape}; a {what} must be {ndim}D")
    if min_volumes is not None and len(shape) == 4 and shape[3] < min_volumes:
        raise InputError(
            f"{name} has {shape[3]} volumes; at least {min_volumes} are needed for a seed map "
            "(use a longer resting-state run)"
        )
    if data is not None and np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(
            f"{name} contains {n_bad} NaN or infinite values; replace them (e.g. re-export the image "
            "from the scanner or the preprocessing) before running tmstarget"
        )
    return img


def same_grid(a, b, atol: float = 1e-3) -> bool:
    """Same voxel grid: shape (first 3 axes) and affine within ``atol`` mm."""
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=atol)


def voxel_size_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (3,) in mm from a 4x4 affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def nifti_img(data: np.ndarray, affine_ras: np.ndarray, dtype=np.float32, code: int = 1) -> nib.Nifti1Image:
    """NIfTI image with qform = sform = ``affine_ras`` (so every reader sees one world)."""
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), np.asarray(affine_ras, dtype=float))
    img.set_qform(affine_ras, code)
    img.set_sform(affine_ras, code)
    img.header.set_xyzt_units("mm", "sec")
    return img


# ----------------------------------------------------------------------------- world space


def affine_disagreement_mm(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple) -> float:
    """Largest distance (mm) between the world positions two affines give the 8 corners of a grid
    (so a tiny rotation far from the origin counts as what it does to the head).

    Parameters
    ----------
    affine_a, affine_b : array (4, 4)
        Voxel-to-world affines (RAS mm).
    shape : tuple of int
        Spatial grid shape (first 3 entries used).
    """
    last = np.asarray(shape[:3], dtype=float) - 1
    corners = np.array([[i, j, k] for i in (0, last[0]) for j in (0, last[1]) for k in (0, last[2])])
    affine_a, affine_b = np.asarray(affine_a, dtype=float), np.asarray(affine_b, dtype=float)
    world_a = corners @ affine_a[:3, :3].T + affine_a[:3, 3]
    world_b = corners @ affine_b[:3, :3].T + affine_b[:3, 3]
    return float(np.max(np.linalg.norm(world_a - world_b, axis=1)))


def qform_sform_codes(img) -> tuple[int, int]:
    """``(qform_code, sform_code)`` of a NIfTI image (0 = not set)."""
    return int(img.header["qform_code"]), int(img.header["sform_code"])


def qform_sform_disagreement_mm(img) -> float:
    """How far (mm, at the grid corners) qform and sform disagree; 0.0 unless both codes are set."""
    qcode, scode = qform_sform_codes(img)
    if qcode <= 0 or scode <= 0:
        return 0.0
    return affine_disagreement_mm(img.header.get_qform(), img.header.get_sform(), img.shape[:3])


def check_qform_sform(img_or_path, tol_mm: float = QFORM_SFORM_TOLERANCE_MM, name: str | None = None) -> dict:
    """Refuse a T1w whose qform and sform disagree (navigators differ in which one they read).

    Parameters
    ----------
    img_or_path : nibabel image or path to a NIfTI file.
    tol_mm : largest accepted disagreement in mm (:func:`qform_sform_disagreement_mm`; qform is
        stored as float32 quaternions, so exact equality is not expected).
    name : file name used in messages (default: the image's file name).

    Returns
    -------
    dict with ``qform_code``, ``sform_code``, ``affine_used`` ("sform" or "qform", what nibabel and
    the navigators read first), ``intent_code`` (the code of that transform) and
    ``max_difference_mm`` (0.0 when only one is set).

    Raises
    ------
    InputError : both codes are 0 (no world space at all), or both are set and disagree.
    """
    if isinstance(img_or_path, (str, os.PathLike)):
        name = name or Path(img_or_path).name
        img = load_img_checked(img_or_path, ndim=3, what="T1w image")
    else:
        img = img_or_path
        if name is None:
            name = Path(img.get_filename()).name if img.get_filename() else "the T1w image"
    qcode, scode = qform_sform_codes(img)
    if qcode == 0 and scode == 0:
        raise InputError(
            f"{name}: neither qform nor sform is set (both codes 0), so it has no scanner world space; "
            "re-export the T1w from DICOM (e.g. with dcm2niix) so positions mean the same to every navigator"
        )
    diff_mm = qform_sform_disagreement_mm(img)
    if diff_mm > tol_mm:
        raise InputError(
            f"{name}: qform and sform disagree by up to {diff_mm:.2f} mm (tolerance {tol_mm} mm); "
            "neuronavigators differ in which one they read, so a target would land in different places. "
            "Make them agree (e.g. `fslorient -copysform2qform` or nibabel "
            "`img.set_qform(img.get_sform()); nib.save(img, path)`) and rerun"
        )
    used, code = ("sform", scode) if scode > 0 else ("qform", qcode)
    return {"qform_code": qcode, "sform_code": scode, "affine_used": used, "intent_code": code,
            "max_difference_mm": diff_mm}


def choose_affine(img: nib.Nifti1Image, path: str | os.PathLike, what: str = "image",
                  disagreement: str = "error") -> tuple[np.ndarray, list[str]]:
    """Pick the voxel-to-world affine (RAS mm) of an image for preprocessing and explain problems.

    Rules: sform if ``sform_code > 0`` (nibabel's and most tools' choice), else qform if
    ``qform_code > 0``, else the voxel-size-only affine (NIfTI "method 1"), with a warning that the
    orientation is not recorded and registration has to find it. When both codes are set and the
    two matrices move a grid corner by more than :data:`QFORM_SFORM_TOLERANCE_MM`, raise
    :class:`InputError` (``disagreement="error"``) or warn and use the sform (``"warn"``).

    Parameters
    ----------
    img : nibabel.Nifti1Image
    path : path-like
        The file the image came from (named in messages).
    what : str
        Word for the image in messages ("T1w", "BOLD run").
    disagreement : {"error", "warn"}

    Returns
    -------
    affine : array (4, 4)
        RAS mm voxel-to-world affine to use.
    warnings : list of str
        Human-readable warnings (also logged).
    """
    name = Path(path).name
    header = img.header
    qcode, scode = qform_sform_codes(img)
    warnings: list[str] = []
    if scode > 0 and qcode > 0:
        dist_mm = qform_sform_disagreement_mm(img)
        if dist_mm > QFORM_SFORM_TOLERANCE_MM:
            msg = (f"{name}: the qform and sform of this {what} disagree (a corner of the image moves "
                   f"{dist_mm:.2f} mm between them); viewers and navigators differ on which one they read. "
                   "Make them equal (e.g. nibabel: img.set_qform(img.get_sform()); or "
                   "fslorient -copysform2qform) after checking which one is right")
            if disagreement == "error":
                raise InputError(msg)
            msg += "; using the sform"
            log.warning(msg)
            warnings.append(msg)
        affine = header.get_sform()
    elif scode > 0:
        affine = header.get_sform()
    elif qcode > 0:
        affine = header.get_qform()
    else:
        # NIfTI-1 "method 1": x = pixdim[1] * i, y = pixdim[2] * j, z = pixdim[3] * k (no flip; nibabel's
        # get_base_affine flips x, the Analyze convention, which mirrored RAS-stored data), centred
        affine = header.get_base_affine()
        affine[0, :] *= -1
        msg = (f"{name}: qform_code and sform_code are both 0, so the {what}'s orientation in the "
               "scanner is not recorded; using voxel sizes only with the voxel axes taken as R, A, S (NIfTI "
               "method 1) and letting the registration's centre-of-mass and rotation search find the "
               "position and tilt. A left-right flip cannot be detected this way: check the BOLD->T1w figure, and set "
               "sform_code/qform_code to 1 if the stored matrices are right (e.g. re-convert the DICOMs "
               "with dcm2niix)")
        log.warning(msg)
        warnings.append(msg)
    affine = np.asarray(affine, dtype=float)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(np.isfinite(affine)) or np.any(zooms < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{name}: the {what}'s affine is singular or not finite ({affine.tolist()}); "
                         "fix the header (pixdim, qform, sform) or re-convert the image")
    return affine, warnings


def orientation_codes(affine: np.ndarray) -> str:
    """Axis codes of the voxel axes, e.g. ``"RAS"`` or ``"LPS"`` (nibabel's ``aff2axcodes``)."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=float)))


def is_oblique(affine: np.ndarray, tolerance_deg: float = 1.0) -> bool:
    """True if the voxel axes are tilted more than ``tolerance_deg`` from the world axes."""
    directions = np.asarray(affine)[:3, :3] / np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    cos_max = np.max(np.abs(directions), axis=0)
    return bool(np.any(np.degrees(np.arccos(np.clip(cos_max, -1, 1))) > tolerance_deg))


# ----------------------------------------------------------------------------- repetition time


def header_tr_s(img_or_header) -> float | None:
    """Repetition time in the NIfTI header in seconds (``pixdim[4]`` with its unit: sec, msec or usec),
    or None when not set."""
    header = getattr(img_or_header, "header", img_or_header)
    zooms = header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = header.get_xyzt_units()[1] if hasattr(header, "get_xyzt_units") else "sec"
    return float(zooms[3]) / (1000.0 if unit == "msec" else 1e6 if unit == "usec" else 1.0)


def header_tr_mismatch(img, t_r: float | None, name: str, tol_s: float = 0.01) -> str | None:
    """The message when the header TR differs from the sidecar's by more than ``tol_s``, else None."""
    header = header_tr_s(img)
    if t_r is None or header is None or abs(header - float(t_r)) <= tol_s:
        return None
    return (f"{name}: header TR {header:g} s differs from the sidecar's RepetitionTime {float(t_r):g} s; "
            "using the sidecar (BIDS rule)")


def read_t_r(bold_path: str | os.PathLike, t_r: float | None = None) -> float:
    """Repetition time in seconds: given value, else the JSON sidecar beside the BOLD, else the header."""
    bold_path = Path(bold_path)
    if t_r:
        return float(t_r)
    name = bold_path.name
    stem = name[:-7] if name.endswith(".nii.gz") else bold_path.stem
    sidecar = bold_path.with_name(stem + ".json")
    if sidecar.exists():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{sidecar.name}: not valid JSON ({exc}); fix the sidecar of {name}") from None
        if meta.get("RepetitionTime"):
            return float(meta["RepetitionTime"])
    try:
        header_tr = header_tr_s(nib.load(str(bold_path)))
    except Exception:  # noqa: BLE001 - reported below as a user error
        header_tr = None
    if header_tr is not None:
        return header_tr
    raise InputError(f"{name}: repetition time unknown; add RepetitionTime (seconds) to "
                     f"{stem}.json or set pixdim[4] in the NIfTI header")


# ----------------------------------------------------------------------------- reading voxels once


def inflate_gzip(filename, piece_bytes: int = INFLATE_PIECE_BYTES) -> Iterator[bytes]:
    """Yield the inflated bytes of a gzip file in large pieces (concatenated members included).

    :mod:`zlib` with large pieces is several times faster than :class:`gzip.GzipFile`, which works in
    8 kB steps. Raises ``EOFError("compressed stream ends early")`` after the last piece when the
    stream is cut; a consumer that stops early never reaches that check.
    """
    inflate = zlib.decompressobj(wbits=31)
    with open(filename, "rb") as f:
        while True:
            piece = f.read(piece_bytes)
            if not piece:
                tail = inflate.flush()
                if tail:
                    yield tail
                if not inflate.eof:
                    raise EOFError("compressed stream ends early")
                return
            data = inflate.decompress(piece)
            while inflate.eof and inflate.unused_data:  # concatenated gzip members
                rest = inflate.unused_data
                inflate = zlib.decompressobj(wbits=31)
                data += inflate.decompress(rest)
            if data:
                yield data


def stream_volumes(filename: str, offset: int, vol_bytes: int, n_total: int):
    """Yield ``(first_volume, n_volumes, bytes)`` blocks of a NIfTI file read once, front to back.

    ``.nii.gz`` is inflated by :func:`inflate_gzip`; other files are read with nibabel's opener.
    A file that ends early raises ``EOFError("file ends in volume k of n")``.
    """
    want = vol_bytes * VOLUME_CHUNK
    if not str(filename).endswith(".gz"):
        with nib.openers.ImageOpener(filename, "rb") as f:
            f.seek(offset)
            for t0 in range(0, n_total, VOLUME_CHUNK):
                n = min(VOLUME_CHUNK, n_total - t0)
                buf = f.read(vol_bytes * n)
                if len(buf) < vol_bytes * n:
                    raise EOFError(f"file ends in volume {t0 + len(buf) // vol_bytes} of {n_total}")
                yield t0, n, buf
        return
    pending = bytearray()
    skip = offset
    t0 = 0
    pieces = inflate_gzip(filename)
    try:
        while t0 < n_total:
            try:
                data = next(pieces)
            except (StopIteration, EOFError):
                raise EOFError(f"file ends in volume {t0 + len(pending) // vol_bytes} of {n_total}") from None
            if skip:
                cut = min(skip, len(data))
                data = data[cut:]
                skip -= cut
            pending += data
            while t0 < n_total and (len(pending) >= want or len(pending) >= vol_bytes * (n_total - t0)):
                n = min(VOLUME_CHUNK, n_total - t0)
                yield t0, n, bytes(pending[: vol_bytes * n])
                del pending[: vol_bytes * n]
                t0 += n
    finally:
        pieces.close()


def load_masked_bold(img: nib.Nifti1Image, mask_3d: np.ndarray, first_volume: int = 0) -> np.ndarray:
    """Read the in-mask voxels of a 4D image, streaming a few volumes at a time (peak memory ~ output).

    The file is read once from start to end (a ``.nii.gz`` cannot be sliced without decompressing
    from its start, so slicing volume blocks would cost quadratic time).

    Parameters
    ----------
    img : Nifti1Image
        4D BOLD loaded from a NIfTI file (read lazily).
    mask_3d : ndarray of bool, shape (X, Y, Z)
    first_volume : int
        Volumes before this are skipped (dummy scans).

    Returns
    -------
    ndarray float32, shape (T, V)
        T = volumes from ``first_volume`` on, V = voxels of the mask in C order.
    """
    filename = img.get_filename()
    name = Path(filename or "BOLD").name
    proxy = img.dataobj
    if filename is None or not hasattr(proxy, "offset"):
        return np.asarray(img.dataobj, dtype=np.float32)[mask_3d].T[first_volume:].copy()
    shape = img.shape
    n_total = shape[3]
    disk_dtype = np.dtype(proxy.dtype)
    slope = float(proxy.slope) if np.isfinite(proxy.slope) and proxy.slope != 0 else 1.0
    inter = float(proxy.inter) if np.isfinite(proxy.inter) else 0.0
    vol_bytes = int(np.prod(shape[:3])) * disk_dtype.itemsize
    data_tv = np.empty((n_total - first_volume, int(mask_3d.sum())), dtype=np.float32)
    # voxel positions of the mask (C order of the mask) in the file's Fortran-ordered volume
    flat_f = np.ravel_multi_index(np.nonzero(mask_3d), mask_3d.shape, order="F")
    try:
        for t0, n, raw in stream_volumes(filename, int(proxy.offset), vol_bytes, n_total):
            block = np.frombuffer(raw, dtype=disk_dtype).reshape(shape[:3] + (n,), order="F")
            lo = max(t0, first_volume)
            if lo >= t0 + n:
                continue
            vals = block[..., lo - t0:].reshape(-1, t0 + n - lo, order="F")[flat_f].astype(np.float32)
            if slope != 1.0 or inter != 0.0:
                vals = vals * np.float32(slope) + np.float32(inter)
            if not np.isfinite(vals).all():
                raise InputError(f"{name} contains NaN or infinite values inside the brain mask "
                                 f"(volumes {lo}-{t0 + n - 1}); replace them before running tmstarget")
            data_tv[lo - first_volume: t0 + n - first_volume] = vals.T
    except READ_ERRORS as exc:
        raise unreadable_data_error(name, "BOLD run", exc) from None
    return data_tv
