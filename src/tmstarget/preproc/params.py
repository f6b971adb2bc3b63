"""Settings of the built-in preprocessing (config key ``preprocessing``; defaults in config/config.yaml):
registration modes and checks."""

from __future__ import annotations

import numpy as np

from tmstarget.config.settings import default_config
from tmstarget.errors import InputError

#: registration settings per mode: template resolution (mm), SyN iterations per level
#: (coarsest first, each level halves the shrink factor), affine iterations (shrink 8, 4, 2, 1),
#: Atropos iterations. "default" is antsRegistrationSyNQuick's schedule: no iterations at shrink 1
#: (the 1 mm template's full grid), i.e. the affine and SyN stop at 2 mm; the SyN field is still
#: written on the 1 mm grid. The 1 mm SyN level cost 3/4 of the step's CPU on a 0.7 mm T1w (see
#: docs/architecture.md, "Working resolution").
REGISTRATION_MODES = {
    "default": {"template_resolution_mm": 1, "syn_iterations": (100, 70, 50, 0),
                "affine_iterations": (1000, 500, 250, 0), "atropos_iterations": 5},
    "fast": {"template_resolution_mm": 2, "syn_iterations": (60, 30, 10),
             "affine_iterations": (500, 250, 100, 0), "atropos_iterations": 3},
}


def resolve_params(params: dict | None) -> dict:
    """``params`` completed from the ``preprocessing`` section of config/config.yaml; unknown keys or bad
    values raise :class:`InputError`."""
    params = dict(params or {})
    defaults = default_config()["preprocessing"]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise InputError(f"preprocessing: unknown setting(s) {unknown}; known: {sorted(defaults)}")
    out = {**defaults, **params}
    if out["registration"] not in REGISTRATION_MODES:
        raise InputError(f"preprocessing.registration must be one of {sorted(REGISTRATION_MODES)}, "
                         f"not {out['registration']!r}")
    if out["dummy_scans"] != "auto" and not (isinstance(out["dummy_scans"], (int, np.integer))
                                             and out["dummy_scans"] >= 0):
        raise InputError(f"preprocessing.dummy_scans must be 'auto' or a number >= 0, not {out['dummy_scans']!r}")
    if float(out["output_resolution_mm"]) != 2:
        raise InputError("preprocessing.output_resolution_mm: only 2 (the MNI152 2 mm grid downstream "
                         "steps expect) is supported")
    if int(out["chunk_volumes"]) < 1:
        raise InputError("preprocessing.chunk_volumes must be >= 1")
    if not 0.5 <= float(out["anat_working_resolution_mm"]) <= 3.0:
        raise InputError("preprocessing.anat_working_resolution_mm must be between 0.5 and 3 mm, not "
                         f"{out['anat_working_resolution_mm']!r}")
    if out["registration_init"] not in ("search", "header"):
        raise InputError("preprocessing.registration_init must be 'search' or 'header', not "
                         f"{out['registration_init']!r}")
    return out
