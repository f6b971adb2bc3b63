"""Header problems of the BOLD inputs that the verdict reports (fMRIPrep route: qc reads the headers itself)."""

from __future__ import annotations

from pathlib import Path


def bold_header_warnings(path, t_r: float | None, tol_mm: float = 0.1) -> list[str]:
    """Header problems of a BOLD NIfTI (header only, no voxel data): qform/sform codes 0 or disagreement,
    and a header TR that differs from the sidecar's ``RepetitionTime``.

    Parameters
    ----------
    path : path-like
        The BOLD file.
    t_r : float or None
        ``RepetitionTime`` of the sidecar (s).
    tol_mm : float
        Largest accepted qform/sform disagreement (mm, at the grid corners).

    Returns
    -------
    list of str
        Messages naming the file (empty when the header is consistent or unreadable).
    """
    import nibabel as nib

    from tmstarget.errors import InputError
    from tmstarget.native.spaces import check_qform_sform

    name = Path(path).name
    try:
        img = nib.load(str(path))
    except Exception:
        return []
    header = img.header
    out = []
    try:
        # the shared check, asked for the distance only (tolerance applied here: a warning, not a refusal)
        diff = check_qform_sform(img, tol_mm=float("inf"), name=name)["max_difference_mm"]
    except InputError:  # both codes 0: no orientation recorded
        out.append(f"{name}: qform_code and sform_code are both 0, so the orientation is not recorded")
    else:
        if diff > tol_mm:
            out.append(f"{name}: the qform and sform disagree (a corner of the image moves {diff:.2f} mm "
                       "between them); viewers and navigators differ on which one they read")
    header_tr = _header_t_r(header)
    if t_r and header_tr is not None and abs(header_tr - float(t_r)) > 0.01:
        out.append(f"{name}: header TR {header_tr:g} s differs from the sidecar's RepetitionTime "
                   f"{float(t_r):g} s; using the sidecar (BIDS rule)")
    return out


def _header_t_r(header) -> float | None:
    """The header's TR in seconds (pixdim[4] with its unit, msec and usec as in
    :func:`tmstarget.io.nifti.read_t_r`), or None when not recorded. Not ``read_t_r`` itself: that one
    prefers the sidecar beside the file, and here the header is compared with the sidecar."""
    zooms = header.get_zooms()
    if len(zooms) <= 3 or not zooms[3] > 0:
        return None
    unit = header.get_xyzt_units()[1]
    return float(zooms[3]) / (1000.0 if unit == "msec" else 1e6 if unit == "usec" else 1.0)
