"""Same data, same coordinate: the target must not depend on where the head lies in the scanner, on
how the voxels are stored, on a lost header orientation or on the number of threads (issues 15, 16).

Every case runs the whole workflow (CLI, built-in preprocessing, demo settings) on one demo subject
whose T1w and BOLD were rewritten in the test:

(a) both images stored with permuted and flipped voxel axes, the same world coordinates;
(b) both images moved by one rigid transform (17 degrees about an oblique axis, 26 mm);
(c) qform and sform codes 0 on the BOLD (its world is then the voxel grid, NIfTI method 1); a T1w with
    codes 0 is refused before any job (navigator positions would have no defined world);
(d) the original again with one ITK thread and ``--cores 1`` (the original ran with ``--cores 2`` and
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 in the environment): identical transforms and target;
(e) the BOLD's header rotated 90 degrees relative to the T1w (beyond the +-30 degree rotation search):
    the registration checks FAIL, the verdict FAILs naming registration, no navigator file.

Criteria (issue 15): MNI seed maps correlate > 0.95 with the original's; MNI target within 2 mm; for
(b) the T1w target equals the rigid transform applied to the original T1w target within 2 mm. The
original run is shared (module fixture). Each case is one workflow run of a few CPU minutes, so all five
carry the ``acceptance`` marker: `make test-acceptance` and .ci/run run them. `make test` checks each link
of (e) on its own: the gate on real misregistered EPI (test_realdata), a failed registration check
failing the verdict and blocking exports (test_registration_qc), a FAIL subject exiting 3 with no
navigator file (test_resilience).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tmstarget.demo.core import make_demo_dataset

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "config" / "demo.yaml"
SPACE = "MNI152NLin2009aSym"
T1W = Path("sub-01/anat/sub-01_T1w.nii.gz")
BOLD = Path("sub-01/func/sub-01_task-rest_bold.nii.gz")


def tmstarget(bids, out, *extra, env_extra=None, check=True):
    cmd = [sys.executable, "-m", "tmstarget.run.cli", str(bids), str(out), "participant", "--config", str(DEMO_CONFIG),
           *map(str, extra)]
    env = {**os.environ, **(env_extra or {})}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return result


def outputs(out: Path) -> dict:
    d = out / "tmstarget" / "sub-01"
    return {
        "mni": json.loads((d / "func" / f"sub-01_task-rest_space-{SPACE}_desc-target_markers.json").read_text()),
        "t1w": json.loads((d / "anat" / "sub-01_space-T1w_desc-target_markers.json").read_text()),
        "fisherz": np.asarray(nib.load(d / "func" / f"sub-01_task-rest_space-{SPACE}_desc-sgaccFox_stat-fisherz_boldmap.nii.gz")
                        .dataobj, dtype=np.float64),
        "verdict": json.loads((d / "sub-01_desc-verdict_qc.json").read_text()),
        "registration_qc": json.loads((d / "sub-01_desc-registration_qc.json").read_text()),
        "nav": sorted(p.name for p in (d / "nav").iterdir() if not p.name.startswith(".")),
        "xfm": out / "preproc" / "sub-01" / "anat" / f"sub-01_from-T1w_to-{SPACE}_mode-image_xfm.h5",
        "mask": out / "preproc" / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz",
    }


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    inside = (a != 0) & (b != 0) & np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[inside], b[inside])[0, 1])


def mni_distance_mm(a: dict, b: dict) -> float:
    return float(np.linalg.norm(np.subtract(a["mni"]["target_mni_ras_mm"], b["mni"]["target_mni_ras_mm"])))


@pytest.fixture(scope="module")
def demo_bids(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariance")
    return make_demo_dataset(root / "bids", n_subjects=1, seed=0)


@pytest.fixture(scope="module")
def original(demo_bids, tmp_path_factory):
    out = tmp_path_factory.mktemp("original") / "out"
    tmstarget(demo_bids, out, "--cores", 2, env_extra={"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "2"})
    return outputs(out)


def variant(demo_bids, tmp_path, rewrite, which=(T1W, BOLD)) -> Path:
    """A copy of the demo dataset whose T1w and BOLD NIfTIs (or those in ``which``) went through
    ``rewrite(img) -> img``."""
    bids = tmp_path / "bids"
    shutil.copytree(demo_bids, bids)
    for rel in which:
        img = nib.load(demo_bids / rel)
        new = rewrite(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header))
        nib.save(new, bids / rel)
    return bids


WITHIN_2_MM = 2.0 + 1e-6  # mm; float round-off of a one-voxel step must not decide the test


def with_affine(img, affine, data=None, codes=1):
    header = img.header.copy()
    new = nib.Nifti1Image(np.asarray(img.dataobj) if data is None else data, affine, header)
    new.set_qform(affine, codes)
    new.set_sform(affine, codes)
    return new


def rigid_ras(axis, angle_deg, shift_mm) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(angle_deg)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    m[:3, 3] = shift_mm
    return m


def permute_and_flip(img):
    """Voxel axes reordered (z, x, y) and the first two flipped; world coordinates unchanged."""
    data = np.asarray(img.dataobj)
    perm = (2, 0, 1)
    new = np.transpose(data, perm + tuple(range(3, data.ndim)))
    new = new[::-1, ::-1]
    shape = new.shape[:3]
    # new index n -> old index o: o[perm[i]] = n'[i], n'[0] = shape0-1-n0, n'[1] = shape1-1-n1
    to_old = np.zeros((4, 4))
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    for i, p in enumerate(perm):
        to_old[p, i] = 1.0
    to_old[3, 3] = 1.0
    return with_affine(img, img.affine @ to_old @ flip, np.ascontiguousarray(new))


def assert_same_target(original, ours, label):
    corr = map_correlation(original["fisherz"], ours["fisherz"])
    dist = mni_distance_mm(original, ours)
    print(f"{label}: seed-map correlation {corr:.3f}, MNI target {dist:.2f} mm from the original; "
          f"registration QC {ours['registration_qc']['status']}")
    assert ours["registration_qc"]["status"] in ("pass", "warn"), ours["registration_qc"]
    assert corr > 0.95, corr
    # "within 2 mm" (issue 15): the target lies on the 2 mm MNI grid, so one grid step (2.0 mm) is within
    assert dist <= WITHIN_2_MM, dist


@pytest.mark.acceptance
def test_permuted_and_flipped_storage(original, demo_bids, tmp_path):
    bids = variant(demo_bids, tmp_path, permute_and_flip)
    tmstarget(bids, tmp_path / "out", "--cores", 2)
    ours = outputs(tmp_path / "out")
    assert_same_target(original, ours, "(a) permuted + flipped")
    # same world: the T1w target is the same point
    d = np.linalg.norm(np.subtract(original["t1w"]["target_t1w_ras_mm"], ours["t1w"]["target_t1w_ras_mm"]))
    assert d <= WITHIN_2_MM, d


@pytest.mark.acceptance
def test_rigidly_moved_head(original, demo_bids, tmp_path):
    move = rigid_ras((0.6, -0.5, 0.62), 17.0, (14.0, -18.0, 12.0))
    bids = variant(demo_bids, tmp_path, lambda img: with_affine(img, move @ img.affine))
    tmstarget(bids, tmp_path / "out", "--cores", 2)
    ours = outputs(tmp_path / "out")
    assert_same_target(original, ours, "(b) rigidly moved")
    expected = (move @ np.append(original["t1w"]["target_t1w_ras_mm"], 1.0))[:3]
    d = np.linalg.norm(expected - np.asarray(ours["t1w"]["target_t1w_ras_mm"]))
    print(f"(b) T1w target {d:.2f} mm from the moved original")
    assert d <= WITHIN_2_MM, d


@pytest.mark.acceptance
def test_zero_header_codes(original, demo_bids, tmp_path):
    """(c) A BOLD whose header lost its orientation (codes 0) gives the same target; a T1w with codes 0 is
    refused before any job by design: the navigator files give positions in the T1w's world, and with
    codes 0 that world is undefined (navigators disagree on how to read such a file)."""
    codes0 = lambda img: with_affine(img, img.affine, codes=0)  # noqa: E731
    bids = variant(demo_bids, tmp_path, codes0, which=(BOLD,))
    tmstarget(bids, tmp_path / "out", "--cores", 2)
    ours = outputs(tmp_path / "out")
    assert_same_target(original, ours, "(c) BOLD codes 0")
    header = [f["text"] for f in ours["verdict"]["findings"] if f["topic"] == "header"]
    assert ours["verdict"]["status"] == "warn" and any("left-right" in t for t in header), ours["verdict"]
    t1w_bids = variant(demo_bids, tmp_path / "t1w", codes0, which=(T1W,))
    refused = tmstarget(t1w_bids, tmp_path / "t1w" / "out", "--cores", 2, check=False)
    assert refused.returncode == 2 and "sub-01_T1w.nii.gz: neither qform nor sform is set" in refused.stderr
    assert not (tmp_path / "t1w" / "out" / "tmstarget").exists()


@pytest.mark.acceptance
def test_one_thread_and_one_core_give_identical_transforms_and_target(original, demo_bids, tmp_path):
    import tempfile

    import ants

    from tmstarget.preproc.headers import nifti_to_ants

    tmstarget(demo_bids, tmp_path / "out", "--cores", 1, env_extra={"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"})
    ours = outputs(tmp_path / "out")
    mask_img = nib.load(original["mask"])
    grid = nifti_to_ants(np.zeros(mask_img.shape, np.float32), mask_img.affine)
    fields = []
    with tempfile.TemporaryDirectory() as tmp:
        # T1w->MNI composite, as a displacement field on the MNI 2 mm grid
        from tmstarget.preproc.templates import load_template, to_ants

        mni = to_ants(load_template(2)["t1"])
        for i, run in enumerate((original, ours)):
            path = ants.apply_transforms(fixed=mni, moving=grid, transformlist=[str(run["xfm"])], compose=f"{tmp}/c{i}_")
            fields.append(np.asarray(nib.load(path).dataobj, dtype=np.float64))
    diff = np.linalg.norm(fields[0] - fields[1], axis=-1)
    print(f"(d) 1 vs 2 threads: T1w->MNI maps differ by at most {diff.max():.4f} mm")
    assert diff.max() < 0.01
    assert ours["mni"]["target_mni_ras_mm"] == original["mni"]["target_mni_ras_mm"]
    assert ours["t1w"]["target_t1w_ras_mm"] == original["t1w"]["target_t1w_ras_mm"]


@pytest.mark.acceptance
def test_misregistered_bold_fails_naming_registration_and_exports_nothing(demo_bids, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(demo_bids, bids)
    img = nib.load(demo_bids / BOLD)
    centre = (img.affine @ np.append((np.asarray(img.shape[:3]) - 1) / 2.0, 1.0))[:3]
    turn = rigid_ras((0, 0, 1), 90.0, (0, 0, 0))
    turn[:3, 3] = centre - turn[:3, :3] @ centre  # about the BOLD's centre
    nib.save(with_affine(img, turn @ img.affine), bids / BOLD)
    result = tmstarget(bids, tmp_path / "out", "--cores", 2, check=False)
    d = tmp_path / "out" / "tmstarget" / "sub-01"
    reg = json.loads((d / "sub-01_desc-registration_qc.json").read_text())
    verdict = json.loads((d / "sub-01_desc-verdict_qc.json").read_text())
    print("(e) registration QC", [(c["name"], c["value"], c["level"]) for c in reg["checks"]])
    assert reg["status"] == "fail"
    assert verdict["status"] == "fail" and not verdict["coordinate_usable"]
    assert any(f["topic"] == "registration" and f["level"] == "fail" for f in verdict["findings"])
    assert any("not usable" in r for r in verdict["reasons"]), verdict["reasons"]
    assert sorted(p.name for p in (d / "nav").iterdir() if not p.name.startswith(".")) == ["NOT_EXPORTED.txt"]
    assert result.returncode == 3, result.stdout
