"""docs/reliability.md generator (issue 20, item 4) and the default-choice protocol (item 5): the page is
deterministic, every number in it comes from the benchmark output, and the folds choose as stated.
Fast: a small hand-made benchmark output, no real data."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import reliability_docs as docs  # noqa: E402
import reliability_protocol as proto  # noqa: E402

NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?")
SETS = [{"strategy": "fox", "fwhm": 4.0, "method": "cluster", "percentile": 20.0},
        {"strategy": "fox", "fwhm": 0.0, "method": "peak", "percentile": None},
        {"strategy": "acompcor", "fwhm": 4.0, "method": "cluster", "percentile": 20.0}]
LABELS = [proto.setting_label(s) for s in SETS]   # default, peak, aCompCor


def _sh(median, q25, q75, n=10):
    return {"median_mm": median, "q25_mm": q25, "q75_mm": q75, "n_splits": n, "n_failed": 0, "enumerated": True}


def fixture_output() -> dict:
    """A benchmark output small enough to check by eye: two real runs, two SNRs of one synthetic run each."""
    real = {"RUN-A": {LABELS[0]: {"split_half": _sh(6.3, 2.83, 8.25), "retained_minutes": 4.96}, LABELS[1]: {"split_half": _sh(4.47, 2.0, 7.21)},
                      LABELS[2]: {"split_half": _sh(9.17, 6.0, 12.04)}},
            "RUN-B": {LABELS[0]: {"split_half": _sh(2.83, 2.0, 3.46, 3), "retained_minutes": 2.13}, LABELS[1]: {"split_half": _sh(3.46, 2.0, 4.9, 3)},
                      LABELS[2]: {"split_half": _sh(None, None, None, 3)}}}
    synth = [{"snr": 0.2, "minutes": 6.0, "replicate": 0,
              "settings": {LABELS[0]: {"recovery_mm": 2.83, "split_half": _sh(7.48, 4.0, 9.8)},
                           LABELS[1]: {"recovery_mm": 12.81, "split_half": _sh(11.66, 8.0, 14.14)},
                           LABELS[2]: {"recovery_mm": 2.83, "split_half": _sh(7.48, 4.0, 9.8)}}},
             {"snr": 0.5, "minutes": 6.0, "replicate": 0,
              "settings": {LABELS[0]: {"recovery_mm": 0.0, "split_half": _sh(2.0, 2.0, 2.83)},
                           LABELS[1]: {"recovery_mm": 4.47, "split_half": _sh(4.47, 2.83, 5.66)},
                           LABELS[2]: {"recovery_mm": 0.0, "split_half": _sh(2.0, 2.0, 2.83)}}}]
    gate = {"status": "pass", "checks": [{"name": "bold_wm_boundary_fraction", "value": 0.81, "level": "pass"}]}
    return {"commit": "abc1234", "command": "python benchmarks/reliability_bench.py run", "default": LABELS[0],
            "settings": LABELS, "max_splits": 64, "block_length_s": 60.0,
            "synthetic_design": {"snrs": [0.2, 0.5], "minutes": [6.0], "replicates": 1, "t_r": 2.0,
                                 "planted_mni_ras_mm": [-44.0, 40.0, 29.0]},
            "runs": {"RUN-A": {"route": "same_person", "minutes": 5.83, "volumes": 100, "t_r": 3.5, "mean_fd_mm": 0.51,
                               "gate": gate},
                     "RUN-B": {"route": "template_direct", "minutes": 2.13, "volumes": 110, "t_r": 1.16,
                               "mean_fd_mm": 0.12, "gate": gate},
                     "RUN-C": {"route": "template_direct", "minutes": 6.5, "volumes": 260, "t_r": 1.5, "mean_fd_mm": 0.09,
                               "gate": {"status": "fail", "checks": [{"name": "bold_wm_boundary_fraction", "value": 0.52,
                                                                      "level": "fail"}]}}},
            "used_runs": ["RUN-A", "RUN-B"], "real": real, "synthetic": synth,
            "folds": proto.cross_validate(SETS, real, synth),
            "minutes_curve": {"snr": 0.2, "points": [{"minutes": 4.0, "median_mm": 9.17, "max_mm": 20.59, "n": 3},
                                                     {"minutes": 30.0, "median_mm": 3.46, "max_mm": 4.47, "n": 3}]},
            "demo": {"sub-01": {"planted_mni_ras_mm": [-42.0, 44.0, 20.0], "target_mni_ras_mm": [-42.0, 46.0, 20.0],
                                "error_mni_mm": 2.0, "error_t1w_mm": 1.93, "grid_floor_mm": 0.0,
                                "target_to_nearest_voxel_mm": 2.0,
                                "noise_free": {"setting": LABELS[0], "target_mni_ras_mm": [-40.0, 32.0, 40.0],
                                               "error_mm": 2.0, "centre_of_mass_mni_ras_mm": [-40.95, 32.1, 39.2],
                                               "centre_of_mass_error_mm": 1.33},
                                "noise_free_previous_default": {"setting": "GSR 6mm cluster p10",
                                                                "target_mni_ras_mm": [-42.0, 32.0, 40.0],
                                                                "error_mm": 0.0, "centre_of_mass_mni_ras_mm": [-41.5, 32.2, 39.5],
                                                                "centre_of_mass_error_mm": 0.77}},
                     "sub-02": {"planted_mni_ras_mm": [-39.0, 33.0, 26.0], "target_mni_ras_mm": [-40.0, 34.0, 26.0],
                                "error_mni_mm": 1.41, "error_t1w_mm": 1.38, "grid_floor_mm": 1.41,
                                "target_to_nearest_voxel_mm": 0.0}},
            "demo_goal_mm": 1.5}


def numbers_in(obj) -> set[str]:
    """Every number of a JSON value as the page may print it (also the digits inside strings)."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= numbers_in(k) | numbers_in(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= numbers_in(v)
    elif isinstance(obj, bool) or obj is None:
        pass
    elif isinstance(obj, (int, float)):
        out |= {f"{obj:.1f}", f"{obj:.2f}", f"{obj:g}", str(obj)}
    elif isinstance(obj, str):
        out |= set(NUMBER.findall(obj))
    return out


def test_render_is_deterministic_and_only_the_date_changes(tmp_path):
    res = fixture_output()
    a = docs.render(res, "2026-12-07", tmp_path)
    b = docs.render(res, "2026-12-07", tmp_path)
    c = docs.render(res, "2027-01-31", tmp_path)
    assert a == b
    diff = [(x, y) for x, y in zip(a.splitlines(), c.splitlines()) if x != y]
    assert len(a.splitlines()) == len(c.splitlines())
    assert len(diff) == 1 and "2026-12-07" in diff[0][0] and "2027-01-31" in diff[0][1]


def test_every_number_on_the_page_comes_from_the_output_or_the_fixed_text(tmp_path):
    res = fixture_output()
    page = docs.render(res, "today", tmp_path)
    fixed = set(NUMBER.findall(docs.TEMPLATE.read_text()))
    allowed = numbers_in(res) | fixed
    stray = [n for n in NUMBER.findall(page) if n not in allowed]
    assert stray == []
    # the template itself carries no measured figure: only citations, section numbers and the 1.5 mm goal
    assert {"6.3", "2.83", "0.81", "9.17"}.isdisjoint(fixed)
    # and the measured figures do reach the page
    for shown in ("6.3 [2.8-8.2]", "0.81", "FAIL", "1.41", "9.2", "20.6", "MNI (-40, 32, 40), 2.00 mm", "1.33 mm"):
        assert shown in page


def test_folds_choose_on_training_data_and_report_held_out():
    res = fixture_output()
    folds = {f["fold"]: f for f in res["folds"]}
    # synthetic -> real: the default and its aCompCor twin tie at 1.4 mm (median of 2.83 and 0.0); the tie goes
    # to the default; held out, its real median over RUN-A/RUN-B is the median of 6.3 and 2.83
    f = folds["synthetic -> real"]
    assert f["chosen"] == LABELS[0] and f["chosen_train"] == pytest.approx(1.415) and f["default_kept"]
    assert f["chosen_test"] == pytest.approx((6.3 + 2.83) / 2)
    # real -> synthetic: peak has the smaller real median (3.965 vs 4.565) but recovers worse held out
    f = folds["real -> synthetic"]
    assert f["chosen"] == LABELS[1] and f["chosen_train"] == pytest.approx((4.47 + 3.46) / 2)
    assert f["chosen_test"] == pytest.approx((12.81 + 4.47) / 2) and f["default_test"] == pytest.approx(1.415)
    assert f["default_kept"]
    # leave out RUN-A: chosen on RUN-B (default 2.83 < peak 3.46 < aCompCor none), reported on RUN-A
    f = folds["leave out RUN-A"]
    assert f["chosen"] == LABELS[0] and f["chosen_test"] == pytest.approx(6.3)
    # leave out RUN-B: peak wins on RUN-A (4.47), and also on RUN-B? no: 3.46 > 2.83, so the default is kept
    f = folds["leave out RUN-B"]
    assert f["chosen"] == LABELS[1] and f["chosen_test"] == pytest.approx(3.46) and f["default_test"] == pytest.approx(2.83)
    assert f["default_kept"]
    page = docs.render(res, "today", Path("/nonexistent"))
    assert "better than the setting chosen without it in 2 of 6 folds, equal in 4 (in 4 of them" in page
    assert set(folds) == {"synthetic -> real", "real -> synthetic", "leave out RUN-A", "leave out RUN-B",
                          "leave out SNR 0.2", "leave out SNR 0.5"}


@pytest.mark.parametrize("n_blocks, expected", [(1, 0), (2, 1), (3, 3), (6, 10), (7, 35), (12, 64)])
def test_balanced_block_splits_enumerated_or_a_fixed_draw(n_blocks, expected):
    splits = proto.balanced_block_splits(n_blocks, max_splits=64)
    assert len(splits) == expected == len(set(splits))
    assert all(len(a) == n_blocks // 2 for a in splits)
    assert splits == proto.balanced_block_splits(n_blocks, max_splits=64)   # no seed to change it


@pytest.mark.parametrize("n_blocks", [2, 6, 12])
def test_even_block_count_counts_a_split_and_its_mirror_image_once(n_blocks):
    splits = proto.balanced_block_splits(n_blocks, max_splits=64)
    assert splits and all(0 in a for a in splits)   # block 0 always in half A: (A, B) and (B, A) not both
