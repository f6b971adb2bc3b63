"""The arrays the denoise step writes and the targeting steps read.

- ``work/<unit>_desc-<strategy>_denoised.npz``: the denoised time series (:class:`DenoiseResult`
  written by :func:`save_denoised_npz`, read as a dict by :func:`load_denoised_npz` or as
  :class:`Denoised` by :func:`load_denoised`);
- ``work/<unit>_desc-<strategy>_halves.npz``: the raw series for independently denoised halves
  (:class:`RawRuns`, :func:`save_raw_runs`, :func:`load_raw_runs`).

Every reader goes through :func:`read_npz`, so a missing, unreadable or incomplete file gives one
message style: the file, what is wrong, and the fix (docs/architecture.md).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget.io.files import atomic_path


@dataclass
class DenoiseResult:
    """Denoised, z-scored and concatenated runs.

    Attributes
    ----------
    data_tv : ndarray float32, shape (T, V)
        Kept volumes of all runs (each run z-scored), voxels of ``mask_img`` in C order.
    mask_img : Nifti1Image
        3D uint8 analysis mask (intersection of the run masks).
    t_r : float
        Seconds.
    run_lengths : ndarray int, shape (n_runs,)
        Volumes kept per run (runs left out contribute 0).
    tsnr_v : ndarray float32, shape (V,)
        Temporal SNR before denoising (mean / std after linear detrending), averaged over runs.
    qc : dict
        The denoising QC record (format of ``*_desc-denoise_qc.json``).
    """

    data_tv: np.ndarray
    mask_img: nib.Nifti1Image
    t_r: float
    run_lengths: np.ndarray
    tsnr_v: np.ndarray
    qc: dict = field(default_factory=dict)
    halves: RawRuns | None = None      # when asked for (halves_mask_3d)

    @property
    def affine(self) -> np.ndarray:
        return self.mask_img.affine

    @property
    def warnings(self) -> list[str]:
        return list(self.qc.get("warnings", []))


@dataclass
class Denoised:
    """Denoised time series of one unit (``work/<unit>_desc-<strategy>_denoised.npz``)."""

    data_tv: np.ndarray      # (T, V) float32
    mask: np.ndarray         # 3D bool, columns of data_tv in C order
    affine: np.ndarray       # (4, 4) voxel -> MNI RAS mm
    t_r: float               # seconds
    run_lengths: np.ndarray  # (n_runs,) volumes per run
    name: str

    @property
    def strategy(self) -> str | None:
        m = re.search(r"desc-([A-Za-z0-9]+)_denoised", self.name)
        return m.group(1) if m else None


@dataclass
class RawRuns:
    """Centred, smoothed, not cleaned series of some voxels (``*_desc-<strategy>_halves.npz``).

    Attributes
    ----------
    raw_tc : ndarray float32, shape (T, C)
        Kept volumes of the included runs (rows as in ``data_tv``), columns ``columns``.
    columns : ndarray int, shape (C,)
        Column indices into ``data_tv`` (voxels of the analysis mask in C order).
    kept : list of ndarray bool, shape (T_run,)
        Per included run: volumes (after the dummy volumes) kept by the joint denoising.
    confounds : list of ndarray float64, shape (T_run, k)
        Per included run: the confound regressors of the strategy (after the dummy volumes).
    t_r : float
        Seconds.
    strategy : dict
        The validated denoising strategy (filter band, ``detrend``).
    """

    raw_tc: np.ndarray
    columns: np.ndarray
    kept: list
    confounds: list
    t_r: float
    strategy: dict
    name: str = "halves"

    @property
    def run_lengths(self) -> np.ndarray:
        return np.array([int(k.sum()) for k in self.kept], int)


# ----------------------------------------------------------------------------- the one reader

#: The fix named by every message about a damaged denoise output.
REDO = "delete it and rerun the denoise step"
#: Arrays every ``*_denoised.npz`` has (``run_lengths`` and ``tsnr_v`` are read when present).
DENOISED_KEYS = ("data_tv", "mask", "affine", "t_r")
HALVES_KEYS = ("raw_tc", "columns", "t_r", "strategy_json", "n_runs")


def read_npz(path: str | os.PathLike, keys, what: str) -> dict:
    """All arrays of an npz written by the denoise step, checked for the arrays ``keys``.

    Raises
    ------
    InputError
        ``<file>: <what is wrong>; <fix>`` when the file is missing, unreadable or lacks a key.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; rerun the denoise step")
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise InputError(f"{path.name}: cannot read {what} ({exc}); {REDO}") from None
    missing = sorted(set(keys) - set(arrays))
    if missing:
        raise InputError(f"{path.name}: {what} without the array(s) {missing}; {REDO}")
    return arrays


def _bad(path: Path, problem: str) -> InputError:
    return InputError(f"{path.name}: {problem}; {REDO}")


def read_denoised_arrays(path: str | os.PathLike, keys=DENOISED_KEYS) -> dict:
    """The arrays of a ``*_denoised.npz`` (:func:`read_npz`) with their shapes checked: ``data_tv``
    (T, V) with V the voxels of ``mask``, ``run_lengths`` summing to T (filled with ``[T]`` when
    absent), ``tsnr_v`` (V,) when present. ``t_r`` becomes a float."""
    path = Path(path)
    z = read_npz(path, keys, "denoised time series")
    data_tv, n_mask = z["data_tv"], int((np.asarray(z["mask"]) > 0).sum())
    if data_tv.ndim != 2 or data_tv.shape[1] != n_mask:
        raise _bad(path, f"data_tv has shape {data_tv.shape} but the mask has {n_mask} voxels")
    if np.shape(z["affine"]) != (4, 4) or np.ndim(z["mask"]) != 3:
        raise _bad(path, f"mask {np.shape(z['mask'])} / affine {np.shape(z['affine'])} are not a 3D grid")
    z["run_lengths"] = np.asarray(z["run_lengths"] if "run_lengths" in z else [len(data_tv)], int)
    if z["run_lengths"].sum() != data_tv.shape[0]:
        raise _bad(path, f"run_lengths sum to {z['run_lengths'].sum()}, data_tv has {data_tv.shape[0]} volumes")
    if "tsnr_v" in z and np.shape(z["tsnr_v"]) != (n_mask,):
        raise _bad(path, f"tsnr_v has shape {np.shape(z['tsnr_v'])}, the mask has {n_mask} voxels")
    z["t_r"] = float(z["t_r"])
    return z


# ----------------------------------------------------------------------------- writers and readers


def save_denoised_npz(result: DenoiseResult, path: str | os.PathLike) -> Path:
    """Write the denoised time series in the ``work/*_denoised.npz`` format (atomic, uncompressed)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f, data_tv=np.ascontiguousarray(result.data_tv, dtype=np.float32),
                mask=np.asarray(result.mask_img.dataobj).astype(np.uint8),
                affine=np.asarray(result.mask_img.affine, dtype=np.float64),
                t_r=np.float64(result.t_r), run_lengths=np.asarray(result.run_lengths, dtype=np.int64),
                tsnr_v=np.asarray(result.tsnr_v, dtype=np.float32),
            )
    return Path(path)


def load_denoised_npz(path: str | os.PathLike) -> dict:
    """Read a ``*_denoised.npz`` (with ``tsnr_v``); returns its arrays plus ``mask_img`` (uint8 Nifti1Image)."""
    out = read_denoised_arrays(path, DENOISED_KEYS + ("tsnr_v",))
    out["mask_img"] = nib.Nifti1Image(out["mask"].astype(np.uint8), out["affine"])
    return out


def load_denoised(path: str | os.PathLike) -> Denoised:
    """Read and check a denoised ``.npz`` as :class:`Denoised` (finite values only)."""
    path = Path(path)
    z = read_denoised_arrays(path)
    data_tv = np.asarray(z["data_tv"], dtype=np.float32)
    if not np.all(np.isfinite(data_tv)):
        raise _bad(path, "data_tv contains NaN or infinite values")
    return Denoised(data_tv, np.asarray(z["mask"]) > 0, np.asarray(z["affine"], float), z["t_r"],
                    z["run_lengths"], path.name)


def save_raw_runs(raw: RawRuns, path: str | os.PathLike) -> Path:
    """Write :class:`RawRuns` (atomic, uncompressed npz)."""
    arrays = {"raw_tc": np.ascontiguousarray(raw.raw_tc, dtype=np.float32),
              "columns": np.asarray(raw.columns, np.int64), "t_r": np.float64(raw.t_r),
              "strategy_json": np.array(json.dumps(raw.strategy)), "n_runs": np.int64(len(raw.kept))}
    for i, (k, x) in enumerate(zip(raw.kept, raw.confounds)):
        arrays[f"kept_{i}"] = np.asarray(k, bool)
        arrays[f"confounds_{i}"] = np.asarray(x, np.float64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def load_raw_runs(path: str | os.PathLike) -> RawRuns:
    """Read and check a ``*_halves.npz`` written by the denoise step."""
    path = Path(path)
    what = "raw series for independent halves"
    z = read_npz(path, HALVES_KEYS, what)
    n = int(z["n_runs"])
    per_run = [f"{key}_{i}" for i in range(n) for key in ("kept", "confounds")]
    missing = sorted(set(per_run) - set(z))
    if missing:
        raise _bad(path, f"{what} without the array(s) {missing}")
    try:
        strategy = json.loads(str(z["strategy_json"]))
    except json.JSONDecodeError as exc:
        raise _bad(path, f"strategy_json is not JSON ({exc})") from None
    raw = RawRuns(np.asarray(z["raw_tc"], np.float32), np.asarray(z["columns"], np.int64),
                  [np.asarray(z[f"kept_{i}"], bool) for i in range(n)],
                  [np.asarray(z[f"confounds_{i}"], np.float64) for i in range(n)],
                  float(z["t_r"]), strategy, path.name)
    if (raw.raw_tc.ndim != 2 or raw.run_lengths.sum() != len(raw.raw_tc)
            or raw.raw_tc.shape[1] != len(raw.columns)):
        raise _bad(path, f"kept volumes {raw.run_lengths.tolist()} or columns ({len(raw.columns)}) do not match "
                         f"raw_tc {raw.raw_tc.shape}")
    if any(np.ndim(x) != 2 or len(x) != len(k) for k, x in zip(raw.kept, raw.confounds)):
        raise _bad(path, "confounds and kept volumes of a run differ in length")
    return raw
