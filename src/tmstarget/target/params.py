"""Targeting parameters: the ``targeting`` section of the config, completed from config/config.yaml and checked.

The defaults (and their sources) are in ``config/config.yaml`` and config/README.md; this module keeps
no table of its own.
"""

from __future__ import annotations

from tmstarget.config.settings import SPLIT_HALF_REPEATS_GONE, with_defaults
from tmstarget.errors import InputError

METHODS = ("peak", "cluster", "seedmap", "hierarchical")
PERCENTILE_OF = ("all", "negative")  # the voxels whose r distribution sets the cluster threshold


def resolve_target_cfg(cfg: dict | None) -> dict:
    """``targeting`` of config/config.yaml overlaid with ``cfg`` (nested dicts merged; ``None`` keeps defaults)."""
    if "split_half_repeats" in (cfg or {}):
        raise InputError(SPLIT_HALF_REPEATS_GONE)
    out = with_defaults("targeting", cfg)
    if out["method"] not in METHODS:
        raise InputError(f"targeting.method '{out['method']}' is not one of {', '.join(METHODS)}; fix the config")
    if out["cluster"]["percentile_of"] not in PERCENTILE_OF:
        raise InputError(f"targeting.cluster.percentile_of '{out['cluster']['percentile_of']}' is not one of "
                         f"{', '.join(PERCENTILE_OF)}; fix the config")
    if out["seedmap"]["selection"] not in ("cluster", "peak"):
        raise InputError("targeting.seedmap.selection must be cluster or peak; fix the config")
    return out
