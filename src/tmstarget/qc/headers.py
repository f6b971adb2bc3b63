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
    from tmstarget.io.nifti import check_qform_sform, header_tr_mismatch

    name = Path(path).name
    try:
        img = nib.load(str(path))
    except Exception:
        return []
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
    mismatch = header_tr_mismatch(img, t_r or None, name)
    if mismatch:
        out.append(mismatch)
    return out

