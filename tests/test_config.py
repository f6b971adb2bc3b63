"""Configuration defaults, overrides and schema validation."""

from __future__ import annotations

import pytest

from tmstarget.config.settings import deep_merge, load_config
from tmstarget.errors import InputError


def test_defaults_are_valid_and_follow_method_md():
    c = load_config()
    fox = c["denoising"]["strategies"][c["denoising"]["strategy"]]
    assert c["seed"]["center_mni_ras_mm"] == [6, 16, -10] and c["seed"]["radius_mm"] == 10
    assert fox["global_signal"] is True and fox["fd_threshold_mm"] == pytest.approx(0.5)
    assert (fox["high_pass_hz"], fox["low_pass_hz"]) == pytest.approx((0.01, 0.1))
    assert c["denoising"]["strategies"][c["denoising"]["compare_strategy"]]["global_signal"] is False
    assert c["targeting"]["method"] == "cluster"


def test_user_file_overrides_only_its_keys(tmp_path):
    user = tmp_path / "my.yaml"
    user.write_text("targeting:\n  method: peak\nseed:\n  radius_mm: 8\n")
    c = load_config(user)
    assert c["targeting"]["method"] == "peak" and c["targeting"]["bootstrap_samples"] == 50
    assert c["seed"]["radius_mm"] == 8 and c["seed"]["center_mni_ras_mm"] == [6, 16, -10]


@pytest.mark.parametrize("override, message", [
    ({"denoisng": {}}, r"`\(top level\)`.*'denoisng' was unexpected"),
    ({"targeting": {"method": "best"}}, r"`targeting.method`: 'best' is not one of"),
    ({"targeting": {"cluster": {"percentile_of": "positive"}}}, r"`targeting.cluster.percentile_of`: 'positive'"),
    ({"seed": {"center_mni_ras_mm": [6, 16]}}, r"`seed.center_mni_ras_mm`"),
    ({"denoising": {"strategy": "nope"}}, r"denoising.strategy is 'nope' but denoising.strategies defines only"),
    ({"denoising": {"strategies": {"fox": {"motoin": 24}}}}, r"`denoising.strategies.fox`.*'motoin'"),
])
def test_bad_keys_are_clear_errors(override, message):
    with pytest.raises(InputError, match=message):
        load_config(overrides=override)


def test_bad_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_deep_merge_keeps_siblings():
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def _schema_key_paths(node: dict, prefix: str = "") -> list[str]:
    """Dotted key paths of the schema's named properties (strategy keys under their $def)."""
    paths = []
    for key, sub in (node.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.append(path)
        paths += _schema_key_paths(sub, path)
    return paths


def test_every_schema_key_is_documented_in_config_readme():
    import yaml

    from tmstarget.config.settings import REPO_ROOT

    schema = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    readme = (REPO_ROOT / "config" / "README.md").read_text()
    paths = _schema_key_paths(schema) + _schema_key_paths(schema["$defs"]["strategy"])
    sections = {"preprocessing", "denoising", "seed", "search", "targeting", "native", "exports"}
    missing = []
    for path in paths:
        parts = path.split(".")
        if len(parts) == 1 and parts[0] in sections:
            assert f"## `{parts[0]}`" in readme, parts[0]
            continue
        # documented as `key` in its section's table, or `parent.key` for nested method options
        local = ".".join(parts[1:]) if len(parts) > 1 else parts[0]
        if f"`{local}`" not in readme and f"`{local}." not in readme and f"`{parts[-1]}`" not in readme:
            missing.append(path)
    assert not missing, f"config keys without documentation in config/README.md: {missing}"
    assert len(paths) > 60


def test_step_defaults_live_in_config_yaml():
    """Every key the seed, search, targeting and native steps understand has its default in config.yaml
    (no hidden parameters, no module table), and the steps complete partial settings from it."""
    from tmstarget.config.settings import default_config, read_yaml, SCHEMA, with_defaults
    from tmstarget.target.params import resolve_target_cfg

    defaults, schema = default_config(), read_yaml(SCHEMA)

    def keys(props, prefix=""):
        for key, spec in props.items():
            if spec.get("type") == "object" and "properties" in spec:
                yield from keys(spec["properties"], f"{prefix}{key}.")
            else:
                yield prefix + key

    for section in ("seed", "search", "targeting", "native"):
        for path in keys(schema["properties"][section]["properties"]):
            node = defaults[section]
            for part in path.split("."):
                assert part in node, f"{section}.{path} has no default in config/config.yaml"
                node = node[part]
    c = load_config()
    assert c["targeting"]["hierarchical"]["linkage"] == "single"
    assert resolve_target_cfg(None) == defaults["targeting"]
    partial = resolve_target_cfg({"cluster": {"percentile": 10}, "random_seed": None})
    assert partial["cluster"] == {**defaults["targeting"]["cluster"], "percentile": 10}
    assert partial["random_seed"] == defaults["targeting"]["random_seed"] == 0
    assert with_defaults("native", {"handle_angle_deg": 30})["target_sphere_radius_mm"] == 5
    with pytest.raises(InputError, match=r"`targeting.cluster.percentile`"):
        load_config(overrides={"targeting": {"cluster": {"percentile": 150}}})
