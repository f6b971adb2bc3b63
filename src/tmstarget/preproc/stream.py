"""Out-of-core pieces of the built-in BOLD preprocessing: a run is read one volume at a time and
never held whole in memory (issue 14: peak memory under 4 GB at 2 mm x 1200 volumes).

- :func:`scratch_dir`: a temporary folder beside an output, removed at the end (its files carry
  :data:`tmstarget.io.files.TEMP_GLOB` names, so a killed run's leftovers are removed on resume).
- :func:`uncompressed_copy`: a ``.nii.gz`` inflated once to a temporary ``.nii`` (a gzip stream
  cannot be sliced per volume without decompressing from its start each time), with
  :func:`tmstarget.io.nifti.inflate_gzip`, the one zlib reader.
- :class:`BoldVolumes`: ``[..., t]`` gives volume ``t`` of an uncompressed NIfTI as float32 (the
  stored dtype is read from disk per volume and scaled by nibabel, as ``get_fdata`` would).
- :class:`DiskTimeVoxels`: a (T, V) float32 matrix on disk, written one time point (row) at a time
  and read back a block of voxel columns at a time (DVARS and aCompCor need every voxel's whole
  time series; they are computed column block by column block).
- :func:`slice_timing_to_file`: slice-timing correction slab by slab into a temporary float32 run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget.io.nifti import READ_ERRORS, inflate_gzip, load_header, require_4d, unreadable_data_error

log = logging.getLogger(__name__)

#: bytes of float64 working data per block of voxel columns (DVARS, aCompCor, slice timing)
BLOCK_BYTES = 64 * 2 ** 20


@contextlib.contextmanager
def scratch_dir(beside: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to ``beside`` (same file system as the outputs), removed on exit."""
    parent = Path(beside).parent
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{Path(beside).name}.", suffix=".tmpdir", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def scratch_file(folder: Path, name: str) -> Path:
    """A file name inside ``folder`` that :func:`tmstarget.io.files.remove_stale_temporaries` recognises."""
    return Path(folder) / f".{name}.scratch.tmp.nii"


def uncompressed_copy(path: str | os.PathLike, folder: Path) -> Path:
    """``path`` itself when it is an uncompressed ``.nii``, else a ``.nii`` inflated into ``folder``.

    Raises :class:`InputError` (naming the file) when the gzip stream is corrupt or ends early.
    """
    path = Path(path)
    if not path.name.endswith(".gz"):
        return path
    dest = scratch_file(folder, path.name[:-3])
    try:
        with open(dest, "wb") as out:
            for data in inflate_gzip(path):
                out.write(data)
    except READ_ERRORS as exc:
        raise unreadable_data_error(path.name, "BOLD run", exc) from None
    return dest


class BoldVolumes:
    """Volumes ``first_volume ..`` of a 4D uncompressed NIfTI, read one at a time as float32.

    ``shape`` is (X, Y, Z, T) with T counted from ``first_volume``; ``vols[..., t]`` (or
    :meth:`volume`) reads volume ``first_volume + t`` from disk (a seek and one read: nibabel's
    array proxy slices the file). Float volumes with NaN or infinite values raise
    :class:`InputError` naming ``name`` and the volume.
    """

    def __init__(self, path: str | os.PathLike, first_volume: int = 0, name: str | None = None,
                 affine: np.ndarray | None = None):
        self.path = Path(path)
        self.img = load_header(path, "BOLD run")
        require_4d(self.img.shape, name or self.path.name)
        expected = int(self.img.dataobj.offset) + int(np.prod(self.img.shape)) * self.img.get_data_dtype().itemsize
        if self.path.stat().st_size < expected:
            raise unreadable_data_error(name or self.path.name, "BOLD run",
                                        EOFError("the file ends before its last volume"))
        self.first_volume = int(first_volume)
        self.name = name or self.path.name
        self.affine = self.img.affine if affine is None else affine
        self.shape = tuple(self.img.shape[:3]) + (self.img.shape[3] - self.first_volume,)
        self._check_finite = np.issubdtype(self.img.get_data_dtype(), np.floating)

    def volume(self, t: int) -> np.ndarray:
        index = self.first_volume + int(t)
        vol = np.asarray(self.img.dataobj[..., index], dtype=np.float32)
        if self._check_finite and not np.isfinite(vol).all():
            n_bad = int(vol.size - np.count_nonzero(np.isfinite(vol)))
            raise InputError(f"{self.name} contains {n_bad} NaN or infinite values in volume {index}; replace "
                             "them (e.g. re-export the image from the scanner) before running tmstarget")
        return vol

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 2 and key[0] is Ellipsis and isinstance(key[1], (int, np.integer)):
            return self.volume(int(key[1]))
        raise TypeError("BoldVolumes supports only [..., t] with an integer t")

    def drop(self, n: int) -> "BoldVolumes":
        """The same run without its first ``n`` volumes (counted from this view's first)."""
        return BoldVolumes(self.path, self.first_volume + int(n), self.name, self.affine)

    def __len__(self) -> int:
        return self.shape[3]


class DiskTimeVoxels:
    """A (T, V) float32 matrix in a file: rows written in order, read back as column blocks.

    ``m[:, a:b]`` returns the float32 array (T, b - a) (pread of each row's slice), so a caller
    that works through the voxels a block at a time (:func:`tmstarget.preproc.confounds.dvars`,
    :func:`~tmstarget.preproc.confounds.acompcor`) needs memory for one block only.
    ``columns(a, b)`` is the view of columns a..b (a (T, b - a) matrix of the same kind).
    """

    def __init__(self, path: Path, n_t: int, n_v: int, first_column: int = 0, n_columns: int | None = None):
        self.path = Path(path)
        self.n_t, self.n_v = int(n_t), int(n_v)
        self.first_column = int(first_column)
        self.shape = (self.n_t, self.n_v - self.first_column if n_columns is None else int(n_columns))
        self._rows_written = 0

    @classmethod
    def create(cls, path: Path, n_t: int, n_v: int) -> "DiskTimeVoxels":
        with open(path, "wb") as f:
            f.truncate(int(n_t) * int(n_v) * 4)
        return cls(path, n_t, n_v)

    def write_row(self, t: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype="<f4")
        if values.size != self.n_v:
            raise ValueError(f"row of {values.size} values, expected {self.n_v}")
        with open(self.path, "r+b") as f:
            f.seek(int(t) * self.n_v * 4)
            f.write(values.tobytes())

    def columns(self, start: int, stop: int) -> "DiskTimeVoxels":
        return DiskTimeVoxels(self.path, self.n_t, self.n_v, self.first_column + start, stop - start)

    def __getitem__(self, key):
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None) and isinstance(key[1], slice)
                and key[1].step in (None, 1)):
            raise TypeError("DiskTimeVoxels supports only [:, a:b]")
        a, b, _ = key[1].indices(self.shape[1])
        b = max(a, b)
        out = np.empty((self.n_t, b - a), dtype=np.float32)
        if b == a:
            return out
        start = (self.first_column + a) * 4
        with open(self.path, "rb") as f:
            for t in range(self.n_t):
                f.seek(t * self.n_v * 4 + start)
                out[t] = np.frombuffer(f.read((b - a) * 4), dtype="<f4")
        return out


def voxels_per_block(n_t: int, bytes_per_value: int = 8, budget_bytes: int | None = None) -> int:
    """Columns of a (T, V) block that fit ``budget_bytes`` (default :data:`BLOCK_BYTES`), so the
    memory of block-wise work does not grow with T."""
    budget = BLOCK_BYTES if budget_bytes is None else budget_bytes
    return max(64, int(budget // (max(int(n_t), 1) * bytes_per_value)))


def write_float32_run_header(path: Path, shape_xyzt: tuple, affine_ras: np.ndarray, zooms: tuple) -> int:
    """An uncompressed float32 NIfTI of ``shape_xyzt`` (data zero-filled, sparse); returns its data offset."""
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(int(s) for s in shape_xyzt))
    header.set_data_dtype(np.float32)
    header.set_qform(affine_ras, 1)
    header.set_sform(affine_ras, 1)
    header.set_zooms(tuple(zooms))
    header["vox_offset"] = 352
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\x00" * (352 - f.tell()))
        f.truncate(352 + int(np.prod(shape_xyzt)) * 4)
    return 352


def slice_timing_to_file(vols: BoldVolumes, slice_times_s, t_r: float, slice_axis: int, folder: Path) -> BoldVolumes:
    """Slice-timing correction (:func:`tmstarget.preproc.confounds.slice_timing_correct`) of ``vols``
    written to a temporary float32 run in ``folder``, one slab of the slowest voxel axis (z) at a time.

    Each slab holds every volume of a few z planes (at least one), so memory grows with T for one
    plane only (X * Y * T values; 100 x 100 x 1200 is 96 MB in float64).
    """
    from tmstarget.preproc.confounds import slice_timing_correct

    x, y, z, n_t = vols.shape
    path = scratch_file(folder, "stc")
    offset = write_float32_run_header(path, vols.shape, vols.affine, tuple(vols.img.header.get_zooms()[:3]) + (t_r,))
    plane = x * y
    nz = max(1, min(z, BLOCK_BYTES // max(plane * n_t * 8, 1)))  # read at call time (tests lower it)
    proxy = vols.img.dataobj
    first = vols.first_volume
    slice_times_s = np.asarray(slice_times_s, dtype=float)
    reference_time_s = float((slice_times_s.min() + slice_times_s.max()) / 2)  # of the whole volume
    with open(path, "r+b") as f:
        for z0 in range(0, z, nz):
            z1 = min(z, z0 + nz)
            slab = np.asarray(proxy[:, :, z0:z1, first:first + n_t], dtype=np.float32)
            if vols._check_finite and not np.isfinite(slab).all():
                raise InputError(f"{vols.name} contains NaN or infinite values (planes {z0}-{z1 - 1}); replace them "
                                 "before running tmstarget")
            times = slice_times_s[z0:z1] if slice_axis == 2 else slice_times_s
            out = slice_timing_correct(slab, times, t_r, slice_axis=slice_axis, reference_time_s=reference_time_s)
            for t in range(n_t):
                f.seek(offset + (t * z + z0) * plane * 4)
                f.write(np.asarray(out[..., t], dtype="<f4").tobytes(order="F"))
            del slab, out
    return BoldVolumes(path, 0, vols.name, vols.affine)
