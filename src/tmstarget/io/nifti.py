"""One place that opens NIfTI images and reads their headers: 4D BOLD runs, repetition time, voxel size,
and the streaming reader that inflates a ``.nii.gz`` once from front to back."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError

VOLUME_CHUNK = 16           # volumes read from a BOLD file at a time


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
        hdr = nib.load(str(bold_path)).header
    except Exception:  # noqa: BLE001 - reported below as a user error
        hdr = None
    if hdr is not None and len(hdr.get_zooms()) == 4 and hdr.get_zooms()[3] > 0:
        zoom = float(hdr.get_zooms()[3])
        unit = hdr.get_xyzt_units()[1] if hasattr(hdr, "get_xyzt_units") else "sec"
        return zoom / 1000.0 if unit == "msec" else zoom / 1e6 if unit == "usec" else zoom
    raise InputError(f"{name}: repetition time unknown; add RepetitionTime (seconds) to "
                     f"{stem}.json or set pixdim[4] in the NIfTI header")


def open_bold_4d(path) -> nib.Nifti1Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: BOLD run not found; check the path")
    try:
        img = nib.load(str(path), keep_file_open=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path.name}: cannot read this BOLD run ({type(exc).__name__}: {exc}); "
                         "the file is corrupt: copy or convert it again") from None
    shape = img.shape
    if len(shape) != 4 or shape[3] < 2:
        raise InputError(f"{path.name} has shape {shape}; a resting-state run must be 4D (x, y, z, time)")
    return img


def same_grid(a, b) -> bool:
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=1e-3)


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
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{name}: cannot read this BOLD run ({type(exc).__name__}: {exc}); the file is "
                         "truncated or corrupt: copy or convert it again") from None
    return data_tv


def stream_volumes(filename: str, offset: int, vol_bytes: int, n_total: int):
    """Yield ``(first_volume, n_volumes, bytes)`` blocks of a NIfTI file read once, front to back.

    ``.nii.gz`` is inflated with :mod:`zlib` in large pieces (several times faster than
    :class:`gzip.GzipFile`, which works in 8 kB steps); other files are read with nibabel's opener.
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
    inflate = zlib.decompressobj(wbits=31)
    pending = bytearray()
    skip = offset
    t0 = 0
    with open(filename, "rb") as f:
        while t0 < n_total:
            piece = f.read(1 << 23)
            if not piece:
                data = inflate.flush()
                if not data:
                    raise EOFError(f"file ends in volume {t0 + len(pending) // vol_bytes} of {n_total}")
            else:
                data = inflate.decompress(piece)
                while inflate.eof and inflate.unused_data:      # concatenated gzip members
                    rest = inflate.unused_data
                    inflate = zlib.decompressobj(wbits=31)
                    data += inflate.decompress(rest)
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
            if not piece and t0 < n_total and not data:
                raise EOFError(f"file ends in volume {t0} of {n_total}")


def voxel_size_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (3,) in mm from a 4x4 affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
