"""The BIDS-App command line: help, and bad input caught before anything is written."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from conftest import make_raw_bids, write_json, write_nifti
from tmstarget.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_help_explains_the_app(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("participant", "--derivatives", "--participant-label", "--profile", "demo-data",
                 "research result", "exit status"):
        assert text in out


def bad_dataset(tmp_path, kind):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    func = bids / "sub-01" / "func"
    bold = func / "sub-01_task-rest_bold.nii.gz"
    if kind == "3d":
        write_nifti(bold, np.ones((6, 6, 6)))
    elif kind == "no_tr":
        write_json(func / "sub-01_task-rest_bold.json", {"TaskName": "rest"})
    elif kind == "few_volumes":
        write_nifti(bold, np.ones((6, 6, 6, 40)), tr=2.0)
    elif kind == "bad_name":
        (func / "sub-01_rest.nii.gz").write_bytes(bold.read_bytes())
    elif kind == "empty":
        bids = tmp_path / "empty"
        bids.mkdir()
    elif kind == "bad_header":
        bold.write_bytes(gzip.compress(b"not a nifti at all" * 10))
    return bids


@pytest.mark.parametrize("kind, args, message", [
    ("3d", [], r"sub-01_task-rest_bold.nii.gz is 3D with shape \(6, 6, 6\); a resting-state run must be 4D"),
    ("no_tr", [], r"sub-01_task-rest_bold.nii.gz: no RepetitionTime in its JSON sidecar; add it"),
    ("few_volumes", [], r"sub-01_task-rest_bold.nii.gz has 40 volumes \(1.3 min at TR 2 s\); at least 5 min"),
    ("bad_name", [], r"not named as BIDS requires.*sub-01/func/sub-01_rest.nii.gz"),
    ("empty", [], r"has no dataset_description.json, so it is not a BIDS dataset"),
    ("bad_header", [], r"sub-01_task-rest_bold.nii.gz: cannot read the NIfTI header"),
    ("ok", ["--participant-label", "07"], r"participant label\(s\) 07 not found.*available: 01"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, kind, args, message):
    bids = bad_dataset(tmp_path, kind)
    out = tmp_path / "out"
    code, text = run_cli(capsys, bids, out, "participant", *args)
    assert code == 2
    assert "tmstarget: error:" in text
    import re
    assert re.search(message, text), text
    assert "Traceback" not in text
    assert not out.exists()


def test_bad_config_key_exits_2(tmp_path, capsys):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    cfg = tmp_path / "my.yaml"
    cfg.write_text("targeting:\n  methd: peak\n")
    code, text = run_cli(capsys, bids, tmp_path / "out", "participant", "--config", cfg)
    assert code == 2
    assert "my.yaml: invalid setting at `targeting`" in text and "'methd' was unexpected" in text
    assert not (tmp_path / "out").exists()


def test_second_run_on_the_same_output_is_refused(tmp_path, capsys):
    """A live run holds OUT/logs/.tmstarget.lock; a second run must not touch its outputs."""
    import fcntl
    import subprocess
    import sys

    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(out / "logs" / ".tmstarget.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, text = run_cli(capsys, bids, out, "participant", "--dry-run")
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert "another tmstarget run is using this output folder" in text
    assert not (out / "logs" / "config.yaml").exists()


def test_stale_snakemake_lock_of_a_killed_run_is_removed(tmp_path, capsys):
    bids = make_raw_bids(tmp_path / "bids", n_vols=200)
    out = tmp_path / "out"
    locks = out / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("stale")
    code, text = run_cli(capsys, bids, out, "participant", "--dry-run")
    assert code == 0, text
    assert "removed the Snakemake lock of an interrupted run" in text
