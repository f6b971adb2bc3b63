"""Inputs of one unit's report, read tolerantly, and small formatting helpers (no HTML here).

:class:`SubjectContext` gives lazy access to the files of one unit (JSON, images, the denoised
npz); a missing or unreadable input raises :class:`Unavailable` in the section that needs it, and is
listed in the report's provenance. NIfTI header text fields (``descrip``, ``db_name``, ``aux_file``,
``intent_name``) are never read: images are rebuilt from data and affine only (:func:`_clean_img`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from ..qc import _fmt, _point, read_json_tolerant, scrub_paths  # noqa: E402

STATUS_COLOURS = {"pass": "#1b7f3b", "warn": "#b06f00", "fail": "#b3261e", "info": "#555555"}


MAX_CARPET_VOXELS = 1200


def _fmt_mm3(point) -> str:
    """A point (3,) in mm as ``(x, y, z)`` with one decimal, or ``n/a``."""
    p = _point(point)
    return "n/a" if p is None else "(" + ", ".join(f"{v:.1f}" for v in p) + ")"


def _points(values) -> np.ndarray:
    """An (N, 3) array of the finite points in a JSON list (None entries dropped)."""
    pts = [p for p in (_point(v) for v in (values or [])) if p is not None]
    return np.asarray(pts, dtype=float).reshape(-1, 3)


def _first_number(*values):
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
            data = np.nan_to_num(data)
            self._cache[cache_key] = _clean_img(data, img.affine)
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
        return _point((self.target or {}).get("target_mni_ras_mm"))

    def target_t1w(self) -> np.ndarray | None:
        return _point((self.native or {}).get("target_t1w_ras_mm"))


def _clean_img(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """A new image with only data and affine: no header text (descrip, db_name, ...) survives."""
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=float))
    img.set_qform(img.affine, 1)
    img.set_sform(img.affine, 1)
    return img


#: Smallest font size (points) in any figure: 13.9 px at 100 dpi; no figure is wider than the page column (1050 px),
#: so no text is drawn below 12 px on screen at 100 %.
MIN_FONT_PT = 10


def _figure(width_in: float = 9.0, height_in: float = 3.0):
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
                         "xtick.labelsize": MIN_FONT_PT, "ytick.labelsize": MIN_FONT_PT,
                         "legend.fontsize": MIN_FONT_PT})
    return plt.figure(figsize=(width_in, height_in), dpi=100)


def _unit_name(inputs: dict) -> str:
    p = inputs.get("target_json") or inputs.get("denoise_qc_json") or ""
    m = re.match(r"(sub-[A-Za-z0-9]+(?:_ses-[A-Za-z0-9]+)?)", Path(str(p)).name)
    return m.group(1) if m else "subject"
