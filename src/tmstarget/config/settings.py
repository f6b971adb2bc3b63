"""Configuration: defaults from ``config/config.yaml``, user overrides, schema validation.

The schema (``workflow/schemas/config.schema.yaml``) rejects unknown keys, so a typo such as
``denoisng:`` is a clear error before any job runs. The same function serves the CLI and the
Snakefile.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

from tmstarget.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
SNAKEFILE = REPO_ROOT / "workflow" / "Snakefile"

SPLIT_HALF_REPEATS_GONE = (
    "targeting.split_half_repeats was replaced by targeting.split_half_max_splits: every split of the data "
    "into halves of whole blocks is used up to that many (so the figure depends on no random seed), above it "
    "that many are drawn; remove split_half_repeats from the config (config/README.md)")


def _check_checkout() -> None:
    if not DEFAULT_CONFIG.exists() or not SCHEMA.exists():
        raise InputError(
            f"{DEFAULT_CONFIG} or {SCHEMA} is missing: tmstarget runs from its source checkout; "
            "install it with `pip install -e .` inside the repository"
        )


def read_yaml(path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found; check the path") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file must be a mapping of keys to values")
    return data


def deep_merge(base: dict, override: dict, none_keeps_default: bool = False) -> dict:
    """Return ``base`` updated recursively by ``override`` (mappings merged, other values replaced).

    With ``none_keeps_default`` a ``None`` in ``override`` keeps the value of ``base`` (a key absent
    from ``base`` is still added).
    """
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, none_keeps_default)
        elif value is not None or not none_keeps_default or key not in out:
            out[key] = copy.deepcopy(value)
    return out


@functools.lru_cache(maxsize=1)
def _default_config() -> dict:
    _check_checkout()
    return read_yaml(DEFAULT_CONFIG)


def default_config() -> dict:
    """A copy of ``config/config.yaml``: the one place where every default lives."""
    return copy.deepcopy(_default_config())


def with_defaults(section: str, cfg: dict | None) -> dict:
    """The ``section`` of ``config/config.yaml`` overlaid with ``cfg`` (a step's own settings, possibly
    partial): nested mappings merged, ``None`` keeps the default. Steps called by the workflow get the
    whole validated section; this completes the partial dicts of tests, benchmarks and library calls."""
    return deep_merge(default_config()[section], cfg or {}, none_keeps_default=True)


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate against the schema; raise InputError naming the offending key."""
    _check_checkout()
    if isinstance(config.get("targeting"), dict) and "split_half_repeats" in config["targeting"]:
        raise InputError(f"{source}: {SPLIT_HALF_REPEATS_GONE}")
    schema = read_yaml(SCHEMA)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "(top level)"
        raise InputError(
            f"{source}: invalid setting at `{where}`: {e.message}. See config/README.md for the keys "
            "and their allowed values"
        )
    strategies = config.get("denoising", {}).get("strategies", {})
    for key in ("strategy", "compare_strategy"):
        name = config.get("denoising", {}).get(key)
        if name is not None and name not in strategies:
            raise InputError(
                f"{source}: denoising.{key} is '{name}' but denoising.strategies defines only "
                f"{', '.join(sorted(strategies))}"
            )
    return config


def load_config(user_config=None, overrides: dict | None = None) -> dict:
    """Defaults, then a user YAML file, then ``overrides`` (e.g. from the CLI); validated."""
    _check_checkout()
    config = read_yaml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG)
    if user_config:
        config = deep_merge(config, read_yaml(user_config))
        source = str(user_config)
    config = deep_merge(config, overrides or {})
    return validate_config(config, source)
