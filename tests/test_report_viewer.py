"""The interactive slice viewer of the report (tmstarget.report.viewer): where it paints the target, the
scalp entry and the seed map, that it loads nothing, that it stays small, and that a FAILed unit's page
has none of it."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from tmstarget import report
from tmstarget.report.viewer import (ENTRY_BALL_MM, ENTRY_RGB, TARGET_BALL_MM, TARGET_RGB, interactive_viewer_html,
                                     viewer_script_hashes)

from builders.nifti import centres_ras_mm
from builders.report_pages import text_outside_not_usable_folds
from builders.report_unit import (ENTRY_T1W, T1W_AFFINE, T1W_SHAPE, TARGET_T1W, Z_NEG_T1W, Z_POS_T1W, denoise_qc,
                                  head_t1, make_subject_inputs, save_private_nifti, write_verdict, z_map_t1w)


def _sprite(doc: str, img_id: str) -> np.ndarray:
    m = re.search(rf'id="{img_id}"[^>]*?src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    img = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    return np.asarray(img.convert("RGBA") if img.mode == "P" else img)


def _volume_from_sprite(sprite: np.ndarray, shape) -> np.ndarray:
    """Undo nilearn's sprite layout: sagittal slices ``data[x, :, ::-1].T`` pasted row by row."""
    nx, ny, nz = shape
    ncol = sprite.shape[1] // ny
    vol = np.zeros((nx, ny, nz) + sprite.shape[2:], sprite.dtype)
    for x in range(nx):
        r, c = divmod(x, ncol)
        vol[x] = np.swapaxes(sprite[r * nz:(r + 1) * nz, c * ny:(c + 1) * ny], 0, 1)[:, ::-1]
    return vol


def _params(doc: str) -> dict:
    return json.loads(re.search(r"brainsprite\((\{.*?\})\);", doc, flags=re.DOTALL).group(1))


@pytest.fixture(scope="module")
def viewer_doc(tmp_path_factory):
    d = tmp_path_factory.mktemp("viewer")
    t1w = save_private_nifti(d / "sub-01_desc-preproc_T1w.nii.gz", head_t1(T1W_SHAPE, T1W_AFFINE), T1W_AFFINE)
    return interactive_viewer_html(t1w, z_map_t1w(d / "sub-01_space-T1w_stat-fisherz_boldmap.nii.gz"), TARGET_T1W,
                                   ENTRY_T1W)


def test_the_viewer_paints_the_target_the_entry_and_the_seed_map_where_they_are(viewer_doc):
    params = _params(viewer_doc)
    shape = tuple(params["nbSlice"][a] for a in "XYZ")
    affine = np.asarray(params["affine"])
    assert np.allclose(np.diag(affine)[:3], 1.0)                          # the 1 mm viewer grid
    overlay = _volume_from_sprite(_sprite(viewer_doc, "overlayImg"), shape)
    xyz = centres_ras_mm(shape, affine)
    shown = overlay[..., 3] > 0
    for rgb, centre, radius in ((TARGET_RGB, TARGET_T1W, TARGET_BALL_MM), (ENTRY_RGB, ENTRY_T1W, ENTRY_BALL_MM)):
        ball = shown & np.all(np.abs(overlay[..., :3] - np.round(np.multiply(rgb, 255))) <= 1, axis=-1)
        assert np.linalg.norm(xyz[ball].mean(0) - centre) < 0.5                    # centred on the point (mm)
        volume_mm3 = 4 / 3 * np.pi * radius ** 3
        assert abs(ball.sum() - volume_mm3) < 0.2 * volume_mm3                  # its volume within 20 % (1 mm voxels)
    # the seed map: blue (anticorrelated) in the left blob, red in the right one, transparent between
    at = {name: tuple(np.round(nib.affines.apply_affine(np.linalg.inv(affine), p)).astype(int))
          for name, p in (("neg", Z_NEG_T1W), ("pos", Z_POS_T1W), ("zero", [0.0, 30.0, 20.0]))}
    rdbu = colormaps["RdBu_r"]
    assert np.abs(overlay[at["neg"]].astype(int) - np.round(np.multiply(rdbu(0.0), 255))).max() <= 2   # dark blue end
    # red end (the top seed value 1.99 is 3 of 256 colour steps below it)
    assert np.abs(overlay[at["pos"]].astype(int) - np.round(np.multiply(rdbu(1.0), 255))).max() <= 6
    assert overlay[at["zero"]][3] == 0
    # the viewer opens with the cursor on the target and no value read-out (overlay values are colour codes)
    cut_ras_mm = nib.affines.apply_affine(affine, [params["numSlice"][a] + 1 for a in "XYZ"])
    assert np.all(np.abs(cut_ras_mm - TARGET_T1W) <= 0.5)
    assert params["flagCoordinates"] is True and params["flagValue"] is False


def test_the_viewer_background_is_the_t1w_in_grey(viewer_doc):
    params = _params(viewer_doc)
    shape = tuple(params["nbSlice"][a] for a in "XYZ")
    sprite = _sprite(viewer_doc, "spriteImg")
    assert sprite.ndim == 2                                              # 8-bit grey, not nilearn's RGBA
    bg = _volume_from_sprite(sprite, shape)
    to_ijk = np.linalg.inv(params["affine"])
    at = lambda p: tuple(np.round(nib.affines.apply_affine(to_ijk, p)).astype(int))  # noqa: E731
    # brain (100) brighter than the ventricle (25) and the scalp shell (60); air outside is black
    brain, ventricle, air = bg[at([-40.0, 30.0, 20.0])], bg[at([9.0, -10.0, 12.0])], bg[at([-60.0, 60.0, 80.0])]
    assert brain > 200 and ventricle < brain - 100 and air == 0


def test_the_viewer_loads_nothing_and_its_scripts_are_inline(viewer_doc):
    assert re.search(r"https?://|//cdn|\bsrc=\"(?!data:)", viewer_doc) is None
    assert re.search(r"<script[^>]*\ssrc=", viewer_doc) is None
    assert viewer_doc.count("</script>") == 3                    # jQuery, brainsprite, the call (all inline)
    assert len(viewer_script_hashes(viewer_doc)) == 3
    assert all(re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", h) for h in viewer_script_hashes(viewer_doc))


def test_a_viewer_larger_than_its_budget_is_coarsened(tmp_path, viewer_doc):
    head = head_t1(T1W_SHAPE, T1W_AFFINE)                    # with texture, as a real T1w has
    head *= 1 + 0.2 * np.random.default_rng(3).random(head.shape).astype(np.float32)
    t1w = save_private_nifti(tmp_path / "t1w.nii.gz", head, T1W_AFFINE)
    budget = 320_000
    small = interactive_viewer_html(t1w, None, TARGET_T1W, ENTRY_T1W, max_bytes=budget)
    step_mm = np.diag(np.asarray(_params(small)["affine"]))[:3]
    assert np.allclose(step_mm, step_mm[0]) and step_mm[0] > 1.0     # coarser than the default 1 mm
    assert f"T1w, {step_mm[0]:.1f} mm" in small
    assert len(small) <= budget


def test_the_viewer_says_what_is_wrong_with_a_bad_input(tmp_path):
    bad = tmp_path / "sub-01_T1w.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="sub-01_T1w.nii.gz is not a readable NIfTI image"):
        interactive_viewer_html(bad, None, TARGET_T1W, ENTRY_T1W)
    with pytest.raises(ValueError, match="target_t1w_ras_mm"):
        interactive_viewer_html(bad, None, [1.0, float("nan"), 2.0], ENTRY_T1W)


def _viewer_page(inputs: dict) -> str:
    keep = ("summary", "viewer")
    return report.render_subject_html(inputs, reportlets=tuple(r for r in report.SUBJECT_REPORTLETS if r.name in keep))


@pytest.mark.parametrize("fd_scale, status", [(1.0, "pass"), (3.0, "warn")])
def test_a_usable_unit_has_the_viewer_in_a_sandboxed_iframe(tmp_path, fd_scale, status):
    inputs = make_subject_inputs(tmp_path)
    inputs["fisherz_map_t1w"] = str(z_map_t1w(tmp_path / "sub-01_space-T1w_stat-fisherz_boldmap.nii.gz"))
    Path(inputs["denoise_qc_json"]).write_text(json.dumps(denoise_qc(tmp_path, fd_scale=fd_scale)))
    assert write_verdict(inputs)["status"] == status
    page = _viewer_page(inputs)
    section = page.split('<section id="viewer">')[1].split("</section>")[0]
    assert "<h2>Explore the target on the T1w (interactive)</h2>" in section
    frame = re.search(r"<iframe class='viewer-frame' sandbox='allow-scripts' [^>]*srcdoc=\"([^\"]*)\"></iframe>",
                      section)
    doc = html.unescape(frame.group(1))
    assert doc.startswith("<!DOCTYPE html>") and "brainsprite(" in doc
    assert "<script" not in page.lower()                                  # only inside the escaped srcdoc
    assert "seed map in T1w space" not in section                        # it was found
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1))
    assert csp == report.page.CSP + "; script-src " + " ".join(viewer_script_hashes(doc))
    assert '<a href="#viewer">Viewer</a>' in page


def test_a_failed_unit_has_no_viewer_and_no_coordinate(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    inputs["fisherz_map_t1w"] = str(z_map_t1w(tmp_path / "sub-01_space-T1w_stat-fisherz_boldmap.nii.gz"))
    Path(inputs["denoise_qc_json"]).write_text(json.dumps(denoise_qc(tmp_path, fd_scale=8.0)))
    assert write_verdict(inputs)["status"] == "fail"
    page = _viewer_page(inputs)
    section = page.split('<section id="viewer">')[1].split("</section>")[0]
    assert "Not shown: the verdict is FAIL" in section
    for absent in ("iframe", "srcdoc", "brainsprite", "script-src", "'sha256-"):   # a CSP script hash, not the SHA-256 field
        assert absent not in page, absent
    outside = text_outside_not_usable_folds(page)
    for coordinate in ("(-40.5, 47.2, 35.0)", "-40.5", "47.2"):
        assert coordinate not in outside, coordinate


def test_the_viewer_section_without_a_t1w_target_says_so(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    inputs["native_json"] = str(tmp_path / "missing_native.json")
    section = _viewer_page(inputs).split('<section id="viewer">')[1].split("</section>")[0]
    assert "iframe" not in section
    assert re.search(r"Not (shown|available)", section)


def test_the_viewer_section_with_an_unreadable_t1w_says_which_file(tmp_path):
    inputs = make_subject_inputs(tmp_path)
    bad = tmp_path / "sub-01_desc-preproc_T1w.nii.gz"
    bad.write_bytes(b"not an image")
    inputs["t1w"] = str(bad)
    section = _viewer_page(inputs).split('<section id="viewer">')[1].split("</section>")[0]
    assert "iframe" not in section
    assert "Not available: T1w sub-01_desc-preproc_T1w.nii.gz is not a readable NIfTI image" in section
    assert str(tmp_path) not in section
