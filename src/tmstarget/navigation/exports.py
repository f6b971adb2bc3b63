"""Every navigator file of a unit in one folder (:func:`run_exports`, rule ``exports``): the formats of the
config's ``exports.formats``, their file names (:func:`export_names`) and the README. The files themselves
are written by one module per vendor (:mod:`.brainsight`, :mod:`.localite`, :mod:`.ant`, :mod:`.slicer`);
what they share is in :mod:`.common`."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tmstarget import __version__
from tmstarget.errors import InputError
from tmstarget.io.files import read_json, sha256_file
from tmstarget.io.nifti import load_img_checked
from tmstarget.io.nifti import check_qform_sform
from tmstarget.navigation.ant import write_visor2
from tmstarget.navigation.brainsight import write_brainsight
from tmstarget.navigation.common import NavTarget, write_text
from tmstarget.navigation.localite import localite_timestamp, write_localite_entrytarget, write_localite_instrument
from tmstarget.navigation.slicer import write_slicer
from tmstarget.navigation.steps import readme_text

log = logging.getLogger(__name__)

#: Formats of the config's ``exports.formats`` and the file keys each writes.
EXPORT_FORMATS = {
    "brainsight": ["brainsight"],
    "localite": ["localite_instrument", "localite_entrytarget"],
    "visor2": ["visor2"],
    "slicer": ["slicer"],
}

WRITERS = {
    "brainsight": write_brainsight,
    "localite_instrument": write_localite_instrument,
    "localite_entrytarget": write_localite_entrytarget,
    "visor2": write_visor2,
    "slicer": write_slicer,
}

NATIVE_JSON_SUFFIX = "_space-T1w_desc-target_markers.json"

def export_names(prefix: str, stamp: str) -> dict[str, str]:
    """File names under the ``nav`` folder, relative to it, for a unit prefix (``sub-01[_ses-1]``).

    The Localite files follow the layout of a Localite session folder (``InstrumentMarkers/``,
    ``EntryTarget/``) with the run's ``stamp`` (:func:`localite_timestamp`), because Localite and readers
    of its files (SimNIBS's) take the marker type and date from the file name.
    """
    if not re.fullmatch(r"\d{17}", str(stamp)):
        raise ValueError(f"Localite time stamp {stamp!r} is not YYYYMMDDhhmmssSSS (17 digits)")
    return {
        "brainsight": f"{prefix}_desc-target_brainsight.txt",
        "localite_instrument": f"localite/InstrumentMarkers/InstrumentMarker{stamp}.xml",
        "localite_entrytarget": f"localite/EntryTarget/EntryTarget{stamp}.xml",
        "visor2": f"{prefix}_desc-target_visor2.mrk",
        "slicer": f"{prefix}_desc-target_slicer.mrk.json",
        "readme": "README.txt",
    }


def run_exports(native_json, t1w_path, nav_dir, formats, prefix: str | None = None) -> dict[str, Path]:
    """Write the neuronavigation files for the targets of a native JSON into one folder.

    Parameters
    ----------
    native_json : ``*_space-T1w_desc-target_markers.json`` from :func:`tmstarget.native.outputs.run_native`.
    t1w_path : the T1w to be loaded into the navigator; must be the file the native JSON was computed
        for (same SHA-256) and have agreeing qform and sform.
    nav_dir : output folder (created); file names in :func:`export_names`.
    formats : iterable of ``brainsight``, ``localite``, ``visor2``, ``slicer`` (config ``exports.formats``).
    prefix : file-name prefix; default: the unit taken from the native JSON's name (``sub-01`` of
        ``sub-01_space-T1w_desc-target_markers.json``).

    Returns
    -------
    ``{key: path written}``; keys among ``brainsight``, ``localite_instrument``, ``localite_entrytarget``,
    ``visor2``, ``slicer``, plus ``readme`` (``README.txt``: which T1w to load, the handle direction).
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise InputError(f"unknown export format(s) {unknown}; allowed: {sorted(EXPORT_FORMATS)}")
    native = read_json(native_json)
    t1w_path = Path(t1w_path)
    t1w_img = load_img_checked(t1w_path, ndim=3, what="T1w image")
    check_qform_sform(t1w_img, name=t1w_path.name)
    recorded = native.get("t1w_sha256")
    if recorded and recorded != sha256_file(t1w_path):
        raise InputError(
            f"{t1w_path.name}: this is not the T1w the target was mapped to ({Path(native_json).name} records "
            f"{native.get('t1w_path')} with sha256 {recorded[:12]}...); export for that file or rerun the native step"
        )
    markers = native.get("markers_t1w")
    if not markers:
        raise InputError(f"{Path(native_json).name}: no 'markers_t1w'; rerun the native step")
    targets = [NavTarget.from_marker(m) for m in markers]
    if prefix is None:
        name = Path(native_json).name
        prefix = name[:-len(NATIVE_JSON_SUFFIX)] if name.endswith(NATIVE_JSON_SUFFIX) else "target"
    nav_dir = Path(nav_dir)
    nav_dir.mkdir(parents=True, exist_ok=True)
    names = export_names(prefix, localite_timestamp(native_json))
    written: dict[str, Path] = {}
    for fmt in dict.fromkeys(formats):
        for key in EXPORT_FORMATS[fmt]:
            written[key] = WRITERS[key](nav_dir / names[key], targets, t1w_img, t1w_path=t1w_path)
            log.info("wrote %s: %s", key, names[key])
    shown = {k: names[k] for k in written}
    written["readme"] = write_text(nav_dir / names["readme"], readme_text(prefix, native, shown, __version__))
    return written
