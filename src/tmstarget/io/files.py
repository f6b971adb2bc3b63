"""Small I/O helpers: atomic writes, checksums, JSON. (Checked NIfTI loading lives in
:mod:`tmstarget.io.nifti`.)"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.json``) so writers that choose a
    format from the file name still work. On error the temporary file is removed, so no partial
    output is ever left under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600; give the file the permissions a plain open() would (0666 & ~umask)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` (absent or an empty folder); it becomes ``out`` only if the
    block succeeds, else it is removed: a dataset is written whole or not at all.

    Raises
    ------
    InputError
        ``out`` exists and is not an empty folder.
    """
    import shutil

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; choose a new output folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


TEMP_GLOB = ".*.tmp*"  # names made by atomic_path: .<final name>.<random>.tmp<suffix>


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed run left behind (``atomic_path`` never finished them).

    Call it only while no other job writes under ``root`` (the workflow does so at start, after
    Snakemake has locked the output directory). Returns the files removed.
    """
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for path in root.rglob(TEMP_GLOB):
        if path.is_file() and ".snakemake" not in path.parts:
            path.unlink()
            removed.append(path)
    return removed


def save_img(img: nib.spatialimages.SpatialImage, path: str | os.PathLike) -> Path:
    """Save a NIfTI image atomically."""
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write JSON atomically with stable formatting (numpy scalars and arrays converted)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"cannot serialise {type(o).__name__}")

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=default, allow_nan=False) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); fix or regenerate the file") from None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
