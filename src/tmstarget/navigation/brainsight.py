"""Brainsight target import file (text format version 14): writer and reader."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget import __version__
from tmstarget.errors import InputError
from tmstarget.navigation.common import NavTarget, provenance_text, t1w_provenance, write_text

#: Brainsight text format version 14 (Brainsight >= 2.5.3) names the NIfTI transform as
#: "NIfTI:Q:<intent>" (qform) or "NIfTI:S:<intent>" (sform).
BRAINSIGHT_VERSION = 14
BRAINSIGHT_INTENT_NAMES = {1: "Scanner", 2: "Aligned", 3: "Talairach", 4: "MNI-152", 5: "Other-Template"}


def simnibs_to_brainsight_axes(axes_simnibs) -> np.ndarray:
    """(3, 3) SimNIBS axes (columns x, y, z) -> Brainsight axes (columns -x, y, -z).

    Brainsight's y, like SimNIBS's, points away from the handle; its z points out of the head.
    """
    a = np.asarray(axes_simnibs, float)
    return np.column_stack([-a[:, 0], a[:, 1], -a[:, 2]])


def brainsight_to_simnibs_axes(axes_brainsight) -> np.ndarray:
    """Inverse of :func:`simnibs_to_brainsight_axes` (the same sign flips)."""
    return simnibs_to_brainsight_axes(axes_brainsight)


BRAINSIGHT_COLUMNS = ["Target Name", "Loc. X", "Loc. Y", "Loc. Z"] + [f"m{a}n{c}" for a in range(3) for c in range(3)]


def brainsight_coordinate_system(prov: dict) -> tuple[str, str]:
    """Brainsight (v14) coordinate-system name for a NIfTI T1w and which transform it names.

    The qform is named when it is set (``NIfTI:Q:<intent>``; SimNIBS reads only those in v14 files),
    else the sform (``NIfTI:S:<intent>``). Both give the same positions here, as T1w files whose qform
    and sform disagree are refused.

    Parameters
    ----------
    prov : output of :func:`tmstarget.io.nifti.check_qform_sform` (``qform_code``, ``sform_code``).

    Returns
    -------
    (name, "qform" | "sform").
    """
    form, code = ("qform", prov["qform_code"]) if prov["qform_code"] > 0 else ("sform", prov["sform_code"])
    if code not in BRAINSIGHT_INTENT_NAMES:
        raise InputError(f"{prov.get('t1w_path') or 'T1w'}: {form}_code {code} is not a NIfTI intent Brainsight "
                         f"knows ({sorted(BRAINSIGHT_INTENT_NAMES)}); re-export the T1w from DICOM (e.g. dcm2niix)")
    return f"NIfTI:{form[0].upper()}:{BRAINSIGHT_INTENT_NAMES[code]}", form


def write_brainsight(path, targets: list[NavTarget], t1w_img: nib.Nifti1Image, t1w_path=None) -> Path:
    """Brainsight target import file (version 14, tab-separated), two rows per target.

    ``<name>-coil``: Loc. X/Y/Z is the coil centre on the scalp (what SimNIBS and Brainsight's coil
    display take as the position of a pose); ``<name>-cortex``: the cortical target with the same
    orientation (the trajectory's end in the brain). Positions are T1w world RAS mm of the transform
    named on the coordinate-system line. m0n0..m2n2: mXnY is component Y of axis X in Brainsight's
    convention (SimNIBS x and z negated: z points out of the head, y away from the handle).
    """
    prov = t1w_provenance(t1w_img, t1w_path)
    system, form = brainsight_coordinate_system(prov)
    other = "sform" if form == "qform" else "qform"
    other_code = prov["sform_code"] if form == "qform" else prov["qform_code"]
    agreement = (f"the {other} (code {other_code}) agrees within {prov['max_difference_mm']:.3f} mm"
                 if other_code else f"no {other} is set")
    lines = [
        f"# Version: {BRAINSIGHT_VERSION}",
        f"# Coordinate system: {system}",
        f"# Created by: tmstarget {__version__}",
        "# Units: millimetres, degrees, milliseconds, and microvolts",
        "# Encoding: UTF-8",
        "# Notes: Each column is delimited by a tab. Each value within a column is delimited by a semicolon.",
        f"# tmstarget: positions are world RAS mm of the T1w's {form} (code {prov[form + '_code']}); {agreement}. "
        "<name>-coil = coil centre on the scalp, <name>-cortex = cortical target on the same trajectory. "
        "Coil y points away from the handle.",
        f"# {provenance_text(prov)}",
        "# " + "\t".join(BRAINSIGHT_COLUMNS),
    ]
    for t in targets:
        axes = simnibs_to_brainsight_axes(t.pose_simnibs[:3, :3])
        orientation = [f"{axes[c, a]:.6f}" for a in range(3) for c in range(3)]
        name = t.name.replace("\t", " ")
        for suffix, point in (("coil", t.pose_simnibs[:3, 3]), ("cortex", t.target_ras_mm)):
            lines.append("\t".join([f"{name}-{suffix}"] + [f"{v:.4f}" for v in point] + orientation))
    return write_text(path, "\n".join(lines) + "\n")


def read_brainsight(path) -> dict:
    """Read a Brainsight target file: ``{"version": int, "coordinate_system": str, "targets": [{"name",
    "position_ras_mm" (3,), "axes_brainsight" (3, 3) columns = axes, "axes_simnibs" (3, 3)}]}``."""
    version, system, columns = None, None, None
    targets = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# Version:"):
            version = int(line.split(":", 1)[1])
        elif line.startswith("# Coordinate system:"):
            system = line.split(":", 1)[1].strip()
        elif line.startswith("# Target Name"):
            columns = line[2:].split("\t")
        if not line.strip() or line.startswith("#"):
            continue
        row = dict(zip(columns or BRAINSIGHT_COLUMNS, line.split("\t")))
        axes = np.array([[float(row[f"m{a}n{c}"]) for a in range(3)] for c in range(3)])
        targets.append({"name": row["Target Name"],
                        "position_ras_mm": np.array([float(row[f"Loc. {k}"]) for k in "XYZ"]),
                        "axes_brainsight": axes, "axes_simnibs": brainsight_to_simnibs_axes(axes)})
    return {"version": version, "coordinate_system": system, "targets": targets}
