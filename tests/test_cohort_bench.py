"""benchmarks/cohort.py (issue 23, item 4): the cohort builder makes N subjects pybids indexes as N subjects,
hard-linked to the source's files; ``docs`` renders the page from a small hand-made output, deterministically.
Fast: tiny images, no workflow run."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import cohort  # noqa: E402

from builders.bids import make_fmriprep_tree, make_raw_bids  # noqa: E402


def test_cohort_of_12_raw_subjects_is_indexed_by_pybids_as_12_hard_linked_subjects(tmp_path):
    import bids

    source = make_raw_bids(tmp_path / "source", subjects=("01", "02"))
    (source / "participants.tsv").write_text("participant_id\tage\nsub-01\t31\nsub-02\t40\n")
    labels = cohort.labels_for(12)
    dest = cohort.build_cohort(source, tmp_path / "cohort", labels)
    layout = bids.BIDSLayout(str(dest), validate=True)
    assert sorted(layout.get_subjects()) == labels and labels[0] == "0001" and labels[-1] == "0012"
    bolds = layout.get(suffix="bold", extension=".nii.gz", return_type="file")
    assert len(bolds) == 12
    src_bold = source / "sub-01/func/sub-01_task-rest_bold.nii.gz"
    for label in (labels[0], labels[-1]):
        bold = dest / f"sub-{label}/func/sub-{label}_task-rest_bold.nii.gz"
        assert os.stat(bold).st_ino == os.stat(src_bold).st_ino          # a hard link, not a copy
        assert layout.get_metadata(str(bold))["RepetitionTime"] == 2.0    # sidecar copied beside it
    assert os.stat(src_bold).st_nlink == 13                              # the source + 12 links
    assert not any(dest.rglob("sub-02*"))                                # only the source subject is copied
    rows = (dest / "participants.tsv").read_text().splitlines()
    assert rows[0] == "participant_id\tage" and rows[1] == "sub-0001\t31" and len(rows) == 13


def test_cohort_of_an_fmriprep_tree_renames_labels_inside_sidecars_and_derivatives(tmp_path):
    from tmstarget.bids.inputs import plan_fmriprep

    source = make_raw_bids(tmp_path / "source")
    make_fmriprep_tree(source / "derivatives" / "fmriprep")
    (source / "sub-01/func/sub-01_task-rest_bold.json").write_text(json.dumps(
        {"RepetitionTime": 2.0, "TaskName": "rest", "Note": "sub-01 scanned twice"}))
    dest = cohort.build_cohort(source, tmp_path / "cohort", cohort.labels_for(3))
    side = json.loads((dest / "sub-0003/func/sub-0003_task-rest_bold.json").read_text())
    assert side["Note"] == "sub-0003 scanned twice"
    plan = plan_fmriprep(dest, dest / "derivatives" / "fmriprep", tmp_path / "out")
    assert sorted(plan.units) == ["sub-0001", "sub-0002", "sub-0003"]
    assert plan.units["sub-0002"].runs[0].bold.endswith(
        "sub-0002/func/sub-0002_task-rest_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz")


def fixture_output() -> dict:
    """A benchmark output small enough to check by eye: both routes at N = 10 and 1000."""
    def m(wall, cpu, load=1.5):
        return {"wall_s": wall, "cpu_s": cpu, "load_1min": load}

    def row(n, plan, dry, parse, group, html_bytes):
        return {"n": n, "planning": {**m(*plan), "process": m(plan[0] + 2, plan[1] + 2)},
                "dry_run": {**m(*dry), "output_lines": 40 * n},
                "job_parse": {**m(*parse), "target": "x.json"},
                "group_report": {**m(*group), "html_bytes": html_bytes, "process": m(group[0] + 2, group[1] + 2)}}

    return {"commit": "abc1234", "command": "python benchmarks/cohort.py run --sizes 10 1000", "cores": 2,
            "snakemake_startup": m(0.9, 0.8),
            "thresholds": dict(cohort.THRESHOLDS),
            "routes": {"raw": [row(10, (0.6, 0.5), (4.2, 3.9), (3.1, 2.0), (0.3, 0.3), 80_000),
                               row(1000, (48.7, 45.1), (175.0, 170.2), (51.0, 49.5), (22.0, 21.5), 6_400_000)],
                       "fmriprep": [row(10, (0.4, 0.4), (3.0, 2.8), (1.2, 1.0), (0.2, 0.2), 70_000),
                                    row(1000, (25.0, 24.0), (55.0, 50.0), (1.3, 1.1), (12.0, 11.0), 4_100_000)]}}


def test_page_is_rendered_from_the_json_alone_and_deterministically():
    res = fixture_output()
    before = copy.deepcopy(res)
    page = cohort.render(res, "2026-12-08")
    assert page == cohort.render(json.loads(json.dumps(res)), "2026-12-08") and res == before
    assert "at commit abc1234 on 2026-12-08" in page
    assert "`python benchmarks/cohort.py run --sizes 10 1000`" in page
    raw_row = ("| 1000 | 48.7 s / 45.1 CPU-s (load 1.5) | 175.0 s / 170.2 CPU-s (load 1.5) "
               "| 51.0 s / 49.5 CPU-s (load 1.5) | 22.0 s / 21.5 CPU-s (load 1.5) | 6.40 MB | 40000 |")
    assert raw_row in page
    # the acceptance table: thresholds beside the measured figures, met or not
    assert "| planning, 1000 subjects (make_plan, wall) | raw | < 30 s | 48.7 s | **no** |" in page
    assert "| planning, 1000 subjects (make_plan, wall) | fmriprep | < 30 s | 25.0 s | yes |" in page
    assert "| one job's parse flat: CPU at N = 1000 / CPU at N = 10 | raw | < 1.25 | 24.75 | **no** |" in page
    assert "| one job's parse flat: CPU at N = 1000 / CPU at N = 10 | fmriprep | < 1.25 | 1.10 | yes |" in page
    assert "| group report, 1000 subjects (HTML size) | raw | < 5.00 MB | 6.40 MB | **no** |" in page
    assert "| group report, 1000 subjects (HTML size) | fmriprep | < 5.00 MB | 4.10 MB | yes |" in page
    # the demo figure at 100 subjects is not in this output: said so, not guessed
    assert "| dry run, 100 demo subjects (CPU) | raw | < 10 CPU-s | n/a | not measured |" in page
    assert "(`python -m snakemake --version`) took 0.9 s / 0.8 CPU-s (load 1.5)." in page
    assert page.index("## Raw BIDS route") < page.index("## fMRIPrep route") < page.index("## Acceptance")


def test_docs_command_writes_the_page_from_the_bench_json(tmp_path, monkeypatch):
    monkeypatch.setenv("TMSTARGET_COHORT_BENCH", str(tmp_path / "bench"))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cohort.json").write_text(json.dumps(fixture_output()))
    out = tmp_path / "page.md"
    assert cohort.main(["docs", "--out", str(out)]) == 0
    assert "| 10 | 0.4 s / 0.4 CPU-s (load 1.5) |" in out.read_text()


def test_page_of_a_run_cut_short_says_so():
    res = {**fixture_output(), "complete": False}
    assert "This run did not finish" in cohort.render(res, "2026-12-08")
    assert "This run did not finish" not in cohort.render({**res, "complete": True}, "2026-12-08")
