"""Inputs of one unit's report, read tolerantly, and small formatting helpers (no HTML here).

:class:`SubjectContext` gives lazy access to the files of one unit (JSON, images, the denoised
npz); a missing or unreadable input raises :class:`Unavailable` in the section that needs it, and is
listed in the report's provenance. NIfTI header text fields (``descrip``, ``db_name``, ``aux_file``,
``intent_name``) are never read: images are rebuilt from data and affine only (:func:`clean_img`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from tmstarget.qc.metrics import read_json_tolerant  # noqa: E402
from tmstarget.qc.text import point  # noqa: E402

STATUS_COLOURS = {"pass": "#1b7f3b", "warn": "#b06f00", "fail": "#b3261e", "info": "#555555"}


MAX_CARPET_VOXELS = 1200


def finite_points(values) -> np.ndarray:
    """An (N, 3) array of the finite points in a JSON list (None entries dropped)."""
    pts = [p for p in (point(v) for v in (values or [])) if p is not None]
    return np.asarray(pts, dtype=float).reshape(-1, 3)


def first_number(*values):
    """The first value that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


class Unavailable(Exception):
    """A reportlet cannot be drawn because an input is missing; the message says which."""


class SubjectContext:
    """Lazy, tolerant access to the inputs of one subject report (keys as in :func:`build_subject_report`)."""

    def __init__(self, inputs: dict):
        self.inputs = dict(inputs or {})
        self._cache: dict = {}
        self.missing: list[str] = []

    def _note(self, what: str) -> None:
        if what not in self.missing:
            self.missing.append(what)

    def json(self, key: str) -> dict | None:
        if key not in self._cache:
            obj, problem = read_json_tolerant(self.inputs.get(key))
            if problem:
                self._note(f"{key}: {problem}")
            self._cache[key] = obj
        return self._cache[key]

    def path(self, key: str) -> Path | None:
        value = self.inputs.get(key)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is None or str(value) == "":
            return None
        p = Path(value)
        if not p.exists():
            self._note(f"{key}: {p.name} not found")
            return None
        return p

    def paths(self, key: str) -> list[Path]:
        value = self.inputs.get(key) or []
        if isinstance(value, (str, os.PathLike)):
            value = [value]
        out = []
        for v in value:
            p = Path(v)
            if p.exists():
                out.append(p)
            else:
                self._note(f"{key}: {p.name} not found")
        return out

    def img(self, key: str) -> nib.Nifti1Image:
        """A 3D image of ``key`` (first volume of a 4D image); raises Unavailable when missing."""
        cache_key = ("img", key)
        if cache_key not in self._cache:
            p = self.path(key)
            if p is None:
                raise Unavailable(f"{key} not available")
            try:
                img = nib.load(str(p))
                data = np.asanyarray(img.dataobj, dtype=np.float32)
            except Exception as exc:  # unreadable image: say so in the section
                raise Unavailable(f"{p.name} is not readable ({type(exc).__name__})") from None
            if data.ndim == 4:
                data = data[..., 0]
            bad = ~np.isfinite(data)
            if bad.any():  # NaN and inf as 0 (np.nan_to_num's three passes cost a second on a 0.7 mm T1w)
                data = np.where(bad, np.float32(0), data)
            self._cache[cache_key] = clean_img(data, img.affine)
        return self._cache[cache_key]

    def t1w_grid(self, voxel_mm: float | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
        """The grid the report draws T1w-space images on: :func:`head_grid` of the T1w around its head,
        the target and the scalp entry, ``voxel_mm`` (default :data:`DISPLAY_VOXEL_MM`) axis-aligned RAS."""
        voxel_mm = float(voxel_mm or DISPLAY_VOXEL_MM)
        cache_key = ("grid", voxel_mm)
        if cache_key not in self._cache:
            geom = self.native or {}
            points = [p for p in (point(geom.get("target_t1w_ras_mm")), point(geom.get("entry_t1w_ras_mm")))
                      if p is not None]
            self._cache[cache_key] = head_grid(self.img("t1w"), voxel_mm, points)
        return self._cache[cache_key]

    def on_t1w_grid(self, key: str, voxel_mm: float | None = None) -> nib.Nifti1Image:
        """The image of ``key`` (a T1w-space image) resampled once (linear) onto :meth:`t1w_grid`: what every
        T1w figure and the slice viewer draw, so the full-resolution image is resliced once, not per figure."""
        voxel_mm = float(voxel_mm or DISPLAY_VOXEL_MM)
        cache_key = ("on_grid", key, voxel_mm)
        if cache_key not in self._cache:
            affine, shape = self.t1w_grid(voxel_mm)
            self._cache[cache_key] = resample_to_grid(self.img(key), affine, shape)
        return self._cache[cache_key]

    def npz(self) -> dict:
        if "npz" not in self._cache:
            p = self.path("denoised_npz")
            if p is None:
                raise Unavailable("denoised time series (work/*_denoised.npz) not available")
            try:
                with np.load(p, allow_pickle=False) as d:
                    self._cache["npz"] = {k: d[k] for k in d.files}
            except Exception as exc:
                raise Unavailable(f"{p.name} is not readable ({type(exc).__name__})") from None
        return self._cache["npz"]

    @property
    def target(self) -> dict | None:
        return self.json("target_json")

    @property
    def native(self) -> dict | None:
        return self.json("native_json")

    @property
    def denoise_qc(self) -> dict | None:
        return self.json("denoise_qc_json")

    @property
    def seed(self) -> dict | None:
        return self.json("seed_json")

    def target_mni(self) -> np.ndarray | None:
        return point((self.target or {}).get("target_mni_ras_mm"))

    def target_t1w(self) -> np.ndarray | None:
        return point((self.native or {}).get("target_t1w_ras_mm"))


#: Voxel size (mm) of the grid the report draws T1w-space images on (:meth:`SubjectContext.on_t1w_grid`). A view
#: of an ortho figure shows a head of about 190 x 230 x 200 mm in 250-330 px (three views side by side in the
#: 900-1050 px of the page's column, under a title): 0.7-0.9 mm per pixel, so 1 mm voxels are drawn about
#: one pixel each; a 0.7 mm T1w would be resliced, whole, for every figure to draw the same pixels.
DISPLAY_VOXEL_MM = 1.0
#: Margin (mm) of :func:`head_grid` around the head and the points.
HEAD_MARGIN_MM = 4.0


def head_box_ijk(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last voxel indices (3,) of the head: voxels above 10 % of the 99th percentile of the image
    (estimated on every 2nd voxel along each axis, the same number within the percentile's own spread)."""
    sample = data[::2, ::2, ::2]
    level = 0.1 * np.percentile(sample, 99)
    head = data > level
    lo, hi = [], []
    for axis in range(3):
        present = np.flatnonzero(head.any(axis=tuple(a for a in range(3) if a != axis)))
        if not present.size:
            raise ValueError("the T1w is empty (no voxel above 10 % of its 99th percentile)")
        lo.append(present[0])
        hi.append(present[-1])
    return np.asarray(lo), np.asarray(hi)


def head_grid(t1w: nib.Nifti1Image, voxel_mm: float, points_ras_mm=(), margin_mm: float = HEAD_MARGIN_MM
              ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axis-aligned RAS grid (affine (4, 4), shape) of ``voxel_mm`` around the T1w's head and the given points."""
    lo_ijk, hi_ijk = head_box_ijk(np.asarray(t1w.dataobj))
    corners_ijk = np.array([[a, b, c] for a in (lo_ijk[0], hi_ijk[0]) for b in (lo_ijk[1], hi_ijk[1])
                            for c in (lo_ijk[2], hi_ijk[2])], dtype=float)
    corners_ras_mm = nib.affines.apply_affine(t1w.affine, corners_ijk)
    box_ras_mm = np.vstack([corners_ras_mm] + [np.asarray(p, float)[None] for p in points_ras_mm])
    lo_ras_mm, hi_ras_mm = box_ras_mm.min(0) - margin_mm, box_ras_mm.max(0) + margin_mm
    shape = tuple(int(n) for n in np.ceil((hi_ras_mm - lo_ras_mm) / voxel_mm) + 1)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = lo_ras_mm
    return affine, shape


def resample_to_grid(img: nib.Nifti1Image, affine: np.ndarray, shape, order: int = 1) -> nib.Nifti1Image:
    """``img`` resampled onto the grid (``affine``, ``shape``) in one pass (linear by default; 0 outside)."""
    from scipy import ndimage

    vox = np.linalg.inv(img.affine) @ np.asarray(affine, float)      # grid voxel -> image voxel
    matrix = vox[:3, :3]
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix)      # grids not rotated to each other: scipy's separable path, ~3x faster
    data = np.asarray(img.dataobj, dtype=np.float32)
    with warnings.catch_warnings():  # scipy notes that a 1-D matrix is a diagonal since 0.18: meant so
        warnings.simplefilter("ignore", UserWarning)
        out = ndimage.affine_transform(data, matrix, vox[:3, 3], output_shape=tuple(shape), order=order,
                                       mode="constant", cval=0.0, prefilter=False)
    return clean_img(out, affine)


@contextlib.contextmanager
def frozen_heap():
    """Run the block with the objects that exist before it frozen (:func:`gc.freeze`): nilearn calls
    ``gc.collect()`` on every image it reads (about 60 times in one subject report), and with matplotlib,
    nilearn and pandas loaded each full collection cost 0.1 CPU-s; frozen, a collection scans only the
    objects the block made. Unfrozen afterwards (nothing changes for the caller)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _gzip_volumes(path, img, chunk_bytes: int = 1 << 22):
    """Each 3D volume of a gzipped 4D NIfTI file as a flat array in file (Fortran) order, raw values, read in
    one stream: nibabel's per-volume reads go through Python's gzip module 8 kB at a time, which cost more
    than the decompression itself (200 demo volumes: 7 of 8 CPU-s). None when the file is not one gzip member."""
    import zlib

    proxy = img.dataobj                     # where nibabel itself reads: offset, dtype and order of the data
    if getattr(proxy, "order", "F") != "F":
        return
    dtype = np.dtype(proxy.dtype)
    vol_bytes = int(np.prod(img.shape[:3])) * dtype.itemsize
    skip = int(proxy.offset)
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    buf = bytearray()
    with open(path, "rb") as f:
        for _ in range(img.shape[3]):
            while len(buf) < skip + vol_bytes:
                chunk = f.read(chunk_bytes)
                if not chunk or stream.unused_data:
                    return
                buf += stream.decompress(chunk)
            yield np.frombuffer(bytes(buf[skip:skip + vol_bytes]), dtype=dtype)
            del buf[:skip + vol_bytes]
            skip = 0


def read_masked_timeseries(bold_path, mask_3d: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(T, len(columns)) float32 of a 4D BOLD file at ``mask_3d`` voxels (C order) picked by ``columns``.

    Reads one volume at a time (a gzipped file as one stream, :func:`_gzip_volumes`), so memory stays at
    one volume.
    """
    img = nib.load(str(bold_path), keep_file_open=True)
    if len(img.shape) != 4 or img.shape[:3] != mask_3d.shape:
        raise Unavailable(f"{Path(bold_path).name} is not a 4D image on the grid of the mask")
    flat = np.flatnonzero(mask_3d.reshape(-1))[columns]
    out = np.empty((img.shape[3], flat.size), dtype=np.float32)
    if str(bold_path).endswith(".gz"):
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)   # 1 and 0 when unscaled
        in_file = np.ravel_multi_index(np.unravel_index(flat, mask_3d.shape), mask_3d.shape, order="F")
        t = 0
        for t, vol in enumerate(_gzip_volumes(bold_path, img), start=1):
            out[t - 1] = vol[in_file].astype(np.float32) * slope + inter
        if t == img.shape[3]:
            return np.nan_to_num(out)
    proxy = img.dataobj
    for t in range(img.shape[3]):
        out[t] = np.asarray(proxy[..., t], dtype=np.float32).reshape(-1)[flat]
    return np.nan_to_num(out)


def clean_img(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A new image with only data and affine: no header text (descrip, db_name, ...) survives."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=float))
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    return img


#: Smallest font size (points) in any figure: 13.9 px at 100 dpi; no figure is wider than the page column (1050 px),
#: so no text is drawn below 12 px on screen at 100 %.
MIN_FONT_PT = 10


def make_figure(width_in: float = 9.0, height_in: float = 3.0):
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
                         "xtick.labelsize": MIN_FONT_PT, "ytick.labelsize": MIN_FONT_PT,
                         "legend.fontsize": MIN_FONT_PT})
    return plt.figure(figsize=(width_in, height_in), dpi=100)


def unit_name(inputs: dict) -> str:
    p = inputs.get("target_json") or inputs.get("denoise_qc_json") or ""
    m = re.match(r"(sub-[A-Za-z0-9]+(?:_ses-[A-Za-z0-9]+)?)", Path(str(p)).name)
    return m.group(1) if m else "subject"


def grid_mm(ctx: SubjectContext) -> float:
    """Voxel spacing (mm) of the seed map, the grid every target lies on (2.0 when unknown)."""
    try:
        zooms = ctx.img("fisherz_map").header.get_zooms()[:3]
        return float(max(zooms))
    except Unavailable:
        return 2.0


#: Which world axis is horizontal in each view of a nilearn display (x: sagittal, y: coronal, z: axial;
#: l / r: the glass brain's side views) and which axis the view cuts.
_VIEW_AXES = {"x": (1, 0), "l": (1, None), "r": (1, None), "y": (0, 1), "z": (0, 2)}
_SIDE_WORDS = {0: ("L", "R"), 1: ("P", "A")}


def _view_label(ax, x: float, y: float, text: str, ha: str, va: str = "center", colour: str = "#ffd54f") -> None:
    ax.text(x, y, text, transform=ax.transAxes, fontsize=12, fontweight="bold", color=colour, ha=ha, va=va,
            zorder=9, bbox={"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.6, "lw": 0})


def label_anterior_posterior(display, keys=("x", "l", "r", "y", "z"), cuts: bool = True) -> int:
    """Label every view of a nilearn ``display`` inside its frame (draw it with ``annotate=False``): "A"/"P"
    at the ends of views whose horizontal axis is world y, "L"/"R" where it is world x (on the correct
    side whatever the orientation), and, with ``cuts``, the cut as ``x = -42 mm`` in the lower left
    corner. Returns the number of views labelled."""
    n = 0
    cut_coords = getattr(display, "cut_coords", None)
    for key in keys:
        cut = display.axes.get(key)
        if cut is None:
            continue
        ax = cut.ax
        horizontal, cut_axis = _VIEW_AXES[key]
        low, high = _SIDE_WORDS[horizontal]
        x0, x1 = ax.get_xlim()
        left, right = (high, low) if x0 > x1 else (low, high)
        height = 0.5 if horizontal == 1 else 0.8  # A/P at mid-height, L/R high (below a title): never side by side
        _view_label(ax, 0.02, height, left, "left")
        _view_label(ax, 0.98, height, right, "right")
        if cuts and cut_axis is not None and cut_coords is not None and len(cut_coords) == 3:
            _view_label(ax, 0.02, 0.03, f"{'xyz'[cut_axis]} = {float(cut_coords[cut_axis]):.0f} mm", "left", "bottom",
                        colour="white")
        n += 1
    return n
