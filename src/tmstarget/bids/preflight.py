"""Input checks that run before any job, so a bad input stops the run at once with a message naming the
file and the fix (exit status 2) and nothing is written.

Cheap checks (folder names, where the output goes, headers and sidecars) are part of planning
(:func:`tmstarget.bids.inputs.make_plan`, which the Snakefile calls too). Reading every voxel once
(truncated files, NaNs) is done here by the CLI only, once per command, before the output folder is
created: :func:`check_input_data`.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError
from tmstarget.io.nifti import (READ_ERRORS, check_qform_sform, header_tr_mismatch, load_header, require_3d, require_4d,
                                same_grid, stream_volumes, unreadable_data_error)
from tmstarget.io.tables import read_confounds

log = logging.getLogger(__name__)

_LABEL = re.compile(r"[a-zA-Z0-9]+")


def check_output_dir(output_dir, *datasets) -> None:
    """Refuse an output folder that is, or lies inside, an input dataset (BIDS root, its ``derivatives/``,
    or the fMRIPrep folder).

    tmstarget writes ``preproc/``, ``tmstarget/``, ``work/`` and ``logs/`` into the output folder;
    inside a dataset they would mix with the raw data and be indexed as input by the next run.

    Raises
    ------
    InputError
        Naming both folders and the fix.
    """
    out = Path(output_dir).resolve()
    for root in datasets:
        if not root:
            continue
        root = Path(root).resolve()
        if out == root or root in out.parents:
            raise InputError(
                f"{out}: the output folder is inside the input dataset {root}; tmstarget would write its "
                "preproc/, tmstarget/, work/ and logs/ folders among the input files (and read them back as "
                f"input next time). Choose a folder outside it, e.g. {root.parent / (root.name + '_tmstarget')}"
            )


def _ascii_suggestion(label: str) -> str:
    folded = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-zA-Z0-9]", "", folded) or "01"


def check_subject_folders(root) -> None:
    """Refuse ``sub-*`` folders whose label is not letters and digits (e.g. ``sub-ü02``, ``sub-01_x``).

    pybids would silently skip them (or report "no subjects found"); BIDS labels are alphanumeric.

    Raises
    ------
    InputError
        Naming the folder and a rename.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("sub-") and not _LABEL.fullmatch(entry.name[4:]):
            raise InputError(
                f"{entry}: the subject folder name {entry.name!r} is not a BIDS label (only letters a-z, A-Z and "
                f"digits may follow 'sub-': no accents, spaces, '-' or '_'); rename the folder and the files in "
                f"it, e.g. to sub-{_ascii_suggestion(entry.name[4:])}"
            )


# folders pybids does not index (BIDS: not part of the raw data); derivatives are checked where they are used
_NOT_INDEXED = {"derivatives", "sourcedata", "code", "stimuli"}


def check_json_file(path) -> None:
    """One JSON file must be UTF-8 JSON without a byte-order mark.

    Raises
    ------
    InputError
        Naming the file, the line and column of the first error, and the fix.
    """
    import json

    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InputError(f"{path}: starts with a byte-order mark (BOM); save it as UTF-8 without BOM (in the "
                         "editor choose 'UTF-8', not 'UTF-8 with BOM')")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
                         ) from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); correct "
                         f"the file there (`python -m json.tool {path.name}` shows the same place)") from None


def check_json_files(root) -> int:
    """Check every ``*.json`` of a dataset (see :func:`check_json_file`) before pybids indexes it, so a
    broken sidecar is named with its line and column instead of failing inside pybids.

    Hidden folders are skipped, and at the top also ``derivatives/``, ``sourcedata/``, ``code/`` and
    ``stimuli/`` (pybids does not index them; the fMRIPrep folder is checked itself when used). Returns
    the number of files checked.
    """
    import os

    n = 0
    for folder, dirs, files in os.walk(root):
        top = Path(folder) == Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (top and d in _NOT_INDEXED))
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                check_json_file(Path(folder) / name)
                n += 1
    return n


def check_repetition_time(value, bold_path) -> float:
    """``RepetitionTime`` of a BOLD sidecar as seconds, or an error naming the JSON and the fix.

    Refuses non-numbers (``"2.0s"``), values <= 0 and values above 30 s (a TR in milliseconds, e.g.
    2000, which would otherwise surface much later as an impossible band-pass filter).
    """
    bold_path = Path(bold_path)
    sidecar = re.sub(r"\.nii(\.gz)?$", ".json", bold_path.name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{sidecar}: RepetitionTime is {value!r}, not a number; BIDS wants the repetition time "
                         f"as a number of seconds, e.g. \"RepetitionTime\": 2.0")
    t_r = float(value)
    if not np.isfinite(t_r) or t_r <= 0:
        raise InputError(f"{sidecar}: RepetitionTime is {value!r}; it must be a positive number of seconds, "
                         "e.g. 2.0")
    if t_r > 30:
        raise InputError(f"{sidecar}: RepetitionTime is {value!r}, more than 30 s: it looks like milliseconds; "
                         f"BIDS wants seconds: write \"RepetitionTime\": {t_r / 1000:g}")
    return t_r


def warn_tr_mismatch(bold_path, img, t_r: float | None) -> str | None:
    """Log (and return) a warning when the header TR differs from the sidecar's by more than 10 ms."""
    msg = header_tr_mismatch(img, t_r, Path(bold_path).name)
    if msg is None:
        return None
    msg += "; check which one is right"
    log.warning(msg)
    return msg


def check_bold_header(path, t_r: float | None, min_minutes: float = 0.0) -> None:
    """Cheap checks from the NIfTI header alone, so obvious problems stop the run before any job.

    A 3D image, an unreadable header, or fewer volumes than ``min_minutes`` of data are errors
    naming the file; a header TR that differs from ``t_r`` is a warning. Truncated data and NaNs are
    found by reading the data (:func:`check_input_data`, run by the CLI).
    """
    name = Path(path).name
    img = load_header(path, "BOLD run")
    shape = img.shape
    require_4d(shape, name)
    warn_tr_mismatch(path, img, t_r)
    if t_r and min_minutes and shape[3] * t_r < min_minutes * 60:
        raise InputError(
            f"{name} has {shape[3]} volumes ({shape[3] * t_r / 60:.1f} min at TR {t_r:g} s); at least "
            f"{min_minutes:g} min are required (denoising.min_retained_minutes); use a longer run"
        )


def check_t1w_header(path, qform_sform_tol_mm: float = 0.1) -> None:
    """A T1w must be readable, 3D and have one agreeing world space (header only).

    Raises
    ------
    InputError
        Unreadable header, 4D image, both qform/sform codes 0, or qform and sform disagreeing by
        more than ``qform_sform_tol_mm`` (the native step and every navigator export would refuse
        it after the whole analysis).
    """
    name = Path(path).name
    img = load_header(path, "T1w")
    require_3d(img.shape, name, "T1w")
    check_qform_sform(img, tol_mm=qform_sform_tol_mm, name=name)


def scan_image_data(path, what: str = "image", mask_path=None) -> dict:
    """Read every voxel of a NIfTI once (streamed): truncated files and NaN/infinite values are errors.

    Parameters
    ----------
    path : path-like
        3D or 4D NIfTI (``.nii`` or ``.nii.gz``).
    what : str
        Word for messages ("BOLD run", "T1w").
    mask_path : path-like, optional
        A 3D mask on the same grid: NaNs count only inside it (fMRIPrep writes none, but a tool in
        between may have; outside the brain they do no harm).

    Returns
    -------
    dict
        ``volumes`` (read) and ``seconds``.

    Raises
    ------
    InputError
        ``<file>: cannot read this <what> (EOFError: file ends in volume k of n); the file is truncated
        or corrupt`` or ``<file> contains NaN or infinite values inside the brain mask (volumes a-b)``.
    """
    t0 = time.time()
    path = Path(path)
    name = path.name
    img = load_header(path, what)
    proxy = img.dataobj
    shape = img.shape
    n_total = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    disk_dtype = np.dtype(proxy.dtype)
    vol_bytes = int(np.prod(shape[:3])) * disk_dtype.itemsize
    select = None
    if mask_path is not None:
        try:
            mimg = nib.load(str(mask_path))
            if tuple(mimg.shape[:3]) == tuple(shape[:3]):
                select = np.flatnonzero(np.asarray(mimg.dataobj).reshape(-1, order="F") > 0)
        except Exception:  # noqa: BLE001 (the mask is checked by its own step)
            select = None
    floating = np.issubdtype(disk_dtype, np.floating)
    bad_first = bad_last = None
    n_bad = 0
    try:
        for first, n, raw in stream_volumes(str(path), int(proxy.offset), vol_bytes, n_total):
            if not floating:
                continue
            block = np.frombuffer(raw, dtype=disk_dtype).reshape(-1, n, order="F")
            if select is not None:
                block = block[select]
            finite = np.isfinite(block)
            if not finite.all():
                cols = np.flatnonzero(~finite.all(axis=0))
                bad_first = first + int(cols[0]) if bad_first is None else bad_first
                bad_last = first + int(cols[-1])
                n_bad += int(finite.size - finite.sum())
    except READ_ERRORS as exc:
        raise unreadable_data_error(name, what, exc) from None
    if n_bad:
        where = "inside the brain mask " if select is not None else ""
        raise InputError(f"{name} contains NaN or infinite values {where}(volumes {bad_first}-{bad_last}, "
                         f"{n_bad} values); replace them (e.g. re-export the image, or set them to 0 outside the "
                         "brain) before running tmstarget")
    return {"volumes": n_total, "seconds": time.time() - t0}


def check_confounds_rows(n_rows: int, confounds_path, bold_path, n_volumes: int) -> None:
    """fMRIPrep writes one confounds row per BOLD volume; anything else is another run's file or a cut one."""
    if n_rows != n_volumes:
        raise InputError(f"{Path(confounds_path).name} has {n_rows} rows but {Path(bold_path).name} has {n_volumes} "
                         "volumes; use the confounds file of this run")


def check_same_grid(mask_path, bold_img, bold_path, tol_mm: float = 1e-3) -> None:
    """A brain mask must be on its BOLD's voxel grid (shape and affine), e.g. not another ``res-`` or space."""
    mask = load_header(mask_path, "brain mask")
    if not same_grid(mask, bold_img, atol=tol_mm):
        zooms = ", ".join(f"{z:g}" for z in mask.header.get_zooms()[:3])
        bold_zooms = ", ".join(f"{z:g}" for z in bold_img.header.get_zooms()[:3])
        raise InputError(f"{Path(mask_path).name} is on another grid ({mask.shape[:3]}, {zooms} mm voxels) than its "
                         f"BOLD {Path(bold_path).name} ({bold_img.shape[:3]}, {bold_zooms} mm); use the brain mask "
                         "fMRIPrep wrote with this BOLD (same space and res-)")


_TRANSFORM_MAGIC = {".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
                    ".txt": (b"#Insight Transform File", "an ITK text transform")}


def check_transform_file(path) -> None:
    """A transform file must be readable, non-empty and (``.h5``, ``.txt``) start like its format."""
    path = Path(path)
    fix = "copy it again from the fMRIPrep anat folder (or rerun fMRIPrep for this subject)"
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise InputError(f"{path}: cannot read this transform ({exc.strerror or exc}); {fix}") from None
    if not head:
        raise InputError(f"{path}: the transform file is empty; {fix}")
    magic, what = _TRANSFORM_MAGIC.get(path.suffix, (b"", ""))
    if magic and not head.startswith(magic):
        raise InputError(f"{path}: not {what} (it does not start like one); the file is damaged: {fix}")


def check_fmriprep_inputs(plan) -> int:
    """The cheap consistency checks of the fMRIPrep route, before any voxel is read: each run's confounds
    has one row per volume, its brain mask is on its grid, and every transform file is readable.
    Returns the number of runs checked; raises InputError naming the file and the fix."""
    for unit in plan.units.values():
        for key in ("xfm_t1w_to_mni", "xfm_mni_to_t1w"):
            if unit.anat.get(key):
                check_transform_file(unit.anat[key])
    n = 0
    for unit in plan.units.values():
        for run in unit.runs:
            bold, mask = (run.t1w_bold, run.t1w_mask) if run.t1w_bold else (run.bold, run.mask)
            img = load_header(bold, "BOLD run")
            n_volumes = int(img.shape[3]) if len(img.shape) > 3 else 1
            check_same_grid(mask, img, bold)
            check_confounds_rows(len(read_confounds(run.confounds)), run.confounds, bold, n_volumes)
            n += 1
    return n


def check_input_data(plan) -> dict:
    """Read every input image of a plan once: the T1w used for navigation and every BOLD run (with its
    brain mask on the fMRIPrep route). Returns ``{"files": n, "seconds": s}``; raises InputError."""
    t0 = time.time()
    if plan.route == "fmriprep":
        check_fmriprep_inputs(plan)  # headers and tables only: a wrong file is named before the long read
    seen = set()
    for unit in plan.units.values():
        jobs = [(unit.t1w_navigation, "T1w", None)]
        for run in unit.runs:
            if plan.route == "raw":
                jobs.append((run.raw_bold, "BOLD run", None))
            else:
                bold = run.t1w_bold or run.bold
                jobs.append((bold, "BOLD run", run.t1w_mask or run.mask))
        for path, what, mask in jobs:
            if path and path not in seen:
                seen.add(path)
                scan_image_data(path, what, mask)
    seconds = time.time() - t0
    log.info("read %d input image(s) in %.1f s: none truncated, no NaN", len(seen), seconds)
    return {"files": len(seen), "seconds": seconds}
