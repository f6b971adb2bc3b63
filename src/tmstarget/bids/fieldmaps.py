"""The field maps of a BOLD run, found in ``fmap/`` as the BIDS specification defines them (planning time).

Kinds (BIDS "Fieldmap data", case 1-4):

- ``phasediff``: ``_phasediff`` (``EchoTime1``, ``EchoTime2`` in s) with ``_magnitude1`` (``_magnitude2``
  optional);
- ``phase1``/``phase2`` (two phase images): found but **not supported**; the run is planned uncorrected
  with a finding saying so (:data:`UNSUPPORTED_TWO_PHASE`);
- ``fieldmap``: ``_fieldmap`` (``Units`` Hz, rad/s or T) with ``_magnitude``;
- ``pepolar``: ``_epi`` images, at least one with ``PhaseEncodingDirection`` opposite to the BOLD's
  (same axis, other sign); one along the BOLD's own direction is used when present, else the BOLD
  reference stands in for it.

A run's field map is matched by ``B0FieldSource`` (BOLD sidecar) = ``B0FieldIdentifier`` (field map
sidecars) first, else by the field maps' ``IntendedFor`` naming the run (BIDS URI ``bids::sub-01/...``
or the older path relative to the subject folder). The BOLD's ``PhaseEncodingDirection`` and
``TotalReadoutTime`` (or ``EffectiveEchoSpacing`` x (N_PE - 1), N_PE the image size along the
phase-encoding axis, per BIDS) are read here. Missing or contradictory metadata raises
:class:`InputError` naming the file and the key, before anything runs.

The result (:func:`find_fieldmap`) is a JSON-serialisable dict or None; it travels in
``Plan.bold_jobs[run]["fieldmap"]`` to :mod:`tmstarget.preproc.fieldmap`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib

from tmstarget.errors import InputError

log = logging.getLogger(__name__)

#: the field map suffixes read, in the order a kind is preferred when several match one run
FMAP_SUFFIXES = ("phasediff", "magnitude1", "magnitude2", "phase1", "phase2", "fieldmap", "magnitude", "epi")
UNSUPPORTED_TWO_PHASE = ("two phase images (_phase1/_phase2) are not supported by tmstarget's built-in "
                         "distortion correction; convert them to a _phasediff (phase2 - phase1) or a _fieldmap "
                         "in Hz, or use fMRIPrep")
#: readout times from TotalReadoutTime and from EffectiveEchoSpacing x (N_PE - 1) may differ this much
READOUT_REL_TOL = 0.02
#: gamma / 2 pi of hydrogen (Hz per tesla), for ``_fieldmap`` in T
GYROMAGNETIC_HZ_PER_T = 42.577478e6

PE_AXES = {"i": 0, "j": 1, "k": 2}


def sidecar_name(path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)] + ".json"
    return name


def _listify(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def parse_pe_direction(value, path, key: str = "PhaseEncodingDirection") -> tuple[int, int]:
    """(voxel axis 0/1/2, sign +1/-1) of a BIDS ``PhaseEncodingDirection`` (``i``, ``j-``, ...)."""
    text = str(value) if value is not None else ""
    if len(text) not in (1, 2) or text[0] not in PE_AXES or text[1:] not in ("", "-"):
        raise InputError(f"{sidecar_name(path)}: {key} is {value!r}; BIDS needs one of i, i-, j, j-, k, k- "
                         "(the voxel axis along which the phase was encoded); add it to the sidecar")
    return PE_AXES[text[0]], -1 if text.endswith("-") else 1


def total_readout_time_s(meta: dict, path, n_pe: int) -> float:
    """``TotalReadoutTime`` (s), or ``EffectiveEchoSpacing`` x (N_PE - 1) when only that is given (BIDS).

    Both given and disagreeing by more than :data:`READOUT_REL_TOL`: :class:`InputError`."""
    trt = meta.get("TotalReadoutTime")
    ees = meta.get("EffectiveEchoSpacing")
    derived = None
    if ees is not None:
        if not _positive(ees):
            raise InputError(f"{sidecar_name(path)}: EffectiveEchoSpacing must be a positive number of seconds, "
                             f"not {ees!r}")
        derived = float(ees) * (int(n_pe) - 1)
    if trt is not None:
        if not _positive(trt):
            raise InputError(f"{sidecar_name(path)}: TotalReadoutTime must be a positive number of seconds, "
                             f"not {trt!r}")
        trt = float(trt)
        if derived is not None and abs(derived - trt) > READOUT_REL_TOL * trt:
            raise InputError(
                f"{sidecar_name(path)}: TotalReadoutTime {trt:g} s contradicts EffectiveEchoSpacing {float(ees):g} s "
                f"x ({n_pe} - 1) phase-encoding steps = {derived:g} s; fix or remove one of the two keys")
        return trt
    if derived is None:
        raise InputError(f"{sidecar_name(path)}: TotalReadoutTime (or EffectiveEchoSpacing) is missing; the field "
                         "maps of this run cannot be used without it. Add \"TotalReadoutTime\": <seconds> to the "
                         "sidecar, or set preprocessing.distortion_correction: none")
    return derived


def _positive(value) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def _number(meta: dict, key: str, path) -> float:
    value = meta.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{sidecar_name(path)}: {key} is {'missing' if value is None else repr(value)}; BIDS "
                         f"requires it (a number) for this field map; add it to the sidecar") from None


def intended_for_matches(intended, bold_relpath: str, subject: str) -> bool:
    """Whether an ``IntendedFor`` value names the BOLD at ``bold_relpath`` (relative to the dataset root).

    Forms: ``bids::sub-01/func/x_bold.nii.gz`` (BIDS URI, current), ``bids:<name>:...`` (another
    dataset: never this run), ``func/x_bold.nii.gz`` (relative to the subject folder, deprecated)."""
    rel = bold_relpath.replace("\\", "/")
    for item in _listify(intended):
        item = str(item)
        if item.startswith("bids::"):
            if item[len("bids::"):].lstrip("/") == rel:
                return True
        elif item.startswith("bids:"):
            continue
        elif f"sub-{subject}/" + item.lstrip("/") == rel:
            return True
    return False


def _fmap_files(layout, subject: str, session: str | None) -> list[tuple[str, str, dict]]:
    """(path, suffix, metadata) of every field map image of the subject (and session)."""
    query = dict(subject=subject, datatype="fmap", extension=[".nii.gz", ".nii"])
    if session is not None:
        query["session"] = session
    out = []
    for f in layout.get(**query):
        suffix = f.get_entities().get("suffix")
        if suffix in FMAP_SUFFIXES:
            out.append((f.path, suffix, layout.get_metadata(f.path)))
    return sorted(out)


def _stem(path: str, suffix: str) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name[: -len(suffix) - 1]


def find_fieldmap(layout, bold_path: str, bold_meta: dict, subject: str, session: str | None,
                  bids_dir) -> dict | None:
    """The field map of one BOLD run (see the module doc), or None when none is matched.

    Returns
    -------
    dict or None
        ``kind`` (phasediff | fieldmap | pepolar | unsupported), ``matched_by`` (B0FieldSource |
        IntendedFor), ``files`` (absolute paths by role), kind-specific metadata (``echo_time1_s``,
        ``echo_time2_s``; ``units``; ``epi`` [{path, pe_axis, pe_sign, total_readout_time_s}]),
        the BOLD's ``pe_direction``, ``pe_axis``, ``pe_sign``, ``total_readout_time_s``, ``sources``
        (BIDS URIs), and for ``unsupported`` a ``finding`` text.

    Raises
    ------
    InputError
        ``B0FieldSource`` naming no field map, a field map without the metadata its kind needs, a BOLD
        without ``PhaseEncodingDirection`` or readout time, or a PEPOLAR set with no image opposite to the
        BOLD's phase encoding.
    """
    bids_dir = Path(bids_dir)
    fmaps = _fmap_files(layout, subject, session)
    if not fmaps:
        return None
    bold_rel = str(Path(bold_path).resolve().relative_to(bids_dir.resolve())).replace("\\", "/")
    sources = _listify(bold_meta.get("B0FieldSource"))
    if sources:
        matched = [f for f in fmaps if set(_listify(f[2].get("B0FieldIdentifier"))) & set(map(str, sources))]
        if not matched:
            raise InputError(f"{sidecar_name(bold_path)}: B0FieldSource {sources!r} names no field map (no "
                             f"B0FieldIdentifier with that value in sub-{subject}'s fmap/); fix B0FieldSource "
                             "or the field maps' B0FieldIdentifier")
        matched_by = "B0FieldSource"
    else:
        matched = [f for f in fmaps if intended_for_matches(f[2].get("IntendedFor"), bold_rel, subject)]
        matched_by = "IntendedFor"
        if not matched:
            return None
    # magnitude images rarely carry IntendedFor: take those of the matched phase-difference / field map
    stems = {(_stem(p, s)) for p, s, _ in matched if s in ("phasediff", "fieldmap", "phase1", "phase2")}
    for f in fmaps:
        if f[1] in ("magnitude", "magnitude1", "magnitude2") and _stem(f[0], f[1]) in stems and f not in matched:
            matched.append(f)
    by_suffix: dict[str, list] = {}
    for f in matched:
        by_suffix.setdefault(f[1], []).append(f)
    out = {"matched_by": matched_by, "sources": sorted(_bids_uri(p, bids_dir) for p, _, _ in matched)}
    if "phasediff" in by_suffix:
        out.update(_phasediff(by_suffix))
    elif "fieldmap" in by_suffix:
        out.update(_hz_fieldmap(by_suffix))
    elif "epi" in by_suffix:
        out["kind"] = "pepolar"
    elif "phase1" in by_suffix or "phase2" in by_suffix:
        out.update(kind="unsupported", files={}, finding=f"{Path(bold_path).name}: field maps found but not used: "
                   + UNSUPPORTED_TWO_PHASE)
        return out
    else:
        return None
    n_pe_shape = nib.load(bold_path).shape[:3]
    pe_axis, pe_sign = parse_pe_direction(bold_meta.get("PhaseEncodingDirection"), bold_path)
    out.update(pe_direction=str(bold_meta["PhaseEncodingDirection"]), pe_axis=pe_axis, pe_sign=pe_sign,
               total_readout_time_s=total_readout_time_s(bold_meta, bold_path, n_pe_shape[pe_axis]))
    if out["kind"] == "pepolar":
        out.update(_pepolar(by_suffix["epi"], pe_axis, pe_sign, bold_path))
    return out


def _one(by_suffix: dict, suffix: str, need: str) -> tuple[str, str, dict]:
    items = by_suffix.get(suffix, [])
    if len(items) > 1:
        raise InputError(f"{Path(items[0][0]).name} and {Path(items[1][0]).name}: several _{suffix} images are "
                         f"intended for one run; give each run one {need} (B0FieldSource / IntendedFor)")
    return items[0]


def _phasediff(by_suffix: dict) -> dict:
    path, _, meta = _one(by_suffix, "phasediff", "phase difference")
    te1, te2 = _number(meta, "EchoTime1", path), _number(meta, "EchoTime2", path)
    if te1 == te2:
        raise InputError(f"{sidecar_name(path)}: EchoTime1 equals EchoTime2 ({te1:g} s); the echo times of the two "
                         "phase images must differ: fix the sidecar")
    if not (0 < te1 < 1 and 0 < te2 < 1):
        raise InputError(f"{sidecar_name(path)}: EchoTime1/EchoTime2 ({te1!r}, {te2!r}) must be positive seconds "
                         "below 1 (BIDS uses seconds, not ms); fix the sidecar")
    files = {"phasediff": path}
    for mag in ("magnitude1", "magnitude2"):
        if mag in by_suffix:
            files[mag] = by_suffix[mag][0][0]
    return {"kind": "phasediff", "files": files, "echo_time1_s": te1, "echo_time2_s": te2}


def _hz_fieldmap(by_suffix: dict) -> dict:
    path, _, meta = _one(by_suffix, "fieldmap", "field map")
    units = meta.get("Units")
    if units not in ("Hz", "rad/s", "T", "Tesla"):
        raise InputError(f"{sidecar_name(path)}: Units is {'missing' if units is None else repr(units)}; BIDS "
                         "requires Units (Hz, rad/s or T) for a _fieldmap; add it to the sidecar")
    files = {"fieldmap": path}
    if "magnitude" in by_suffix:
        files["magnitude"] = by_suffix["magnitude"][0][0]
    return {"kind": "fieldmap", "files": files, "units": "T" if units == "Tesla" else units}


def _pepolar(epis: list, bold_axis: int, bold_sign: int, bold_path) -> dict:
    parsed = []
    for path, _, meta in epis:
        axis, sign = parse_pe_direction(meta.get("PhaseEncodingDirection"), path)
        n_pe = nib.load(path).shape[axis]
        parsed.append({"path": path, "pe_axis": axis, "pe_sign": sign,
                       "pe_direction": str(meta["PhaseEncodingDirection"]),
                       "total_readout_time_s": total_readout_time_s(meta, path, n_pe)})
    if any(p["pe_axis"] != bold_axis for p in parsed):
        bad = next(p for p in parsed if p["pe_axis"] != bold_axis)
        raise InputError(f"{sidecar_name(bad['path'])}: PhaseEncodingDirection {bad['pe_direction']} is not along "
                         f"the axis of {Path(bold_path).name}'s; a PEPOLAR field map needs images along the BOLD's "
                         "phase-encoding axis: fix the sidecar or its IntendedFor / B0FieldIdentifier")
    opposite = [p for p in parsed if p["pe_sign"] != bold_sign]
    same = [p for p in parsed if p["pe_sign"] == bold_sign]
    if not opposite:
        raise InputError(f"{sidecar_name(parsed[0]['path'])}: PhaseEncodingDirection of every _epi matched to "
                         f"{Path(bold_path).name} equals the BOLD's; PEPOLAR needs one with the opposite direction")
    files = {"epi_opposite": opposite[0]["path"]}
    if same:
        files["epi_same"] = same[0]["path"]
    return {"files": files, "epi": [opposite[0]] + same[:1]}


def _bids_uri(path, bids_dir: Path) -> str:
    try:
        return "bids:raw:" + str(Path(path).resolve().relative_to(bids_dir.resolve())).replace("\\", "/")
    except ValueError:
        return Path(path).name


def fieldmap_input_files(fieldmap: dict | None) -> list[str]:
    """The image files of a planned field map (inputs of the preprocess_bold rule); [] for None."""
    if not fieldmap:
        return []
    return sorted(str(p) for p in fieldmap.get("files", {}).values())
