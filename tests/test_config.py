"""Configuration defaults, overrides and schema validation."""

from __future__ import annotations

import pytest

from tmstarget.config import deep_merge, load_config
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
