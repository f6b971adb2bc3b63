"""The BOLD->T1w registration gate's numbers on finished real-data runs, as registered and with the BOLD
reference moved in the T1w by known rigid misregistrations (issue 15).

    python benchmarks/registration_gate_realdata.py OUT [OUT ...] [--header-moves REALDATA_DIR]

OUT: the output folder of a raw-route workflow run (``tmstarget BIDS OUT participant``) of sub-01, e.g. the
same-person (ds000240 T1w + its ASL series) and different-person (+ RAPIDTIDETEST) datasets of
tests/builders/realdata_bids.py. Prints, per run and per misregistration (tests/builders/realdata_bids.MISREGISTRATIONS:
rotations about the T1w brain centre, shifts), the boundary fraction, the edge correlation and the level
the default thresholds give, plus the mask Dice as registered (whole template brain and within the BOLD
field of view). A moved copy is what the registration would have written had it ended that far off; the
registration itself is not rerun (that costs minutes per case).

``--header-moves REALDATA_DIR`` (scripts/fetch_real_data.sh's folder; the first OUT must be the
same-person run made from it, tests/builders/realdata_bids.same_person_bids) also reruns the BOLD
preprocessing (a few CPU minutes each) on that run with its header turned 30 degrees about x, and turned
10 degrees about z and moved 10 mm, against the first OUT's T1w preprocessing, and prints the gate and how
far the resulting BOLD -> T1w mapping lies from the unmoved run's (median / max over brain points, mm):
whether the registration (rotation search + rigid) undoes a header error.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from builders.realdata_bids import MISREGISTRATIONS, brain_centre_ras_mm, moved_copy, rigid_ras  # noqa: E402

from tmstarget.preproc import registration_qc as rq  # noqa: E402


HEADER_MOVES = {"header turned 30 deg about x": ((1, 0, 0), 30.0, (0, 0, 0)),
                "header turned 10 deg about z, moved 10 mm in y": ((0, 0, 1), 10.0, (0, 10, 0))}


def _bold_points_mm(xfm_txt, bold_img, points_ras):
    """Where the BOLD -> T1w transform (ITK text, LPS) sends T1w points, in mm along the BOLD's voxel axes."""
    import ants
    import numpy as np

    tx = ants.read_transform(str(xfm_txt))
    lps = points_ras * [-1, -1, 1]
    world = np.array([tx.apply_to_point(tuple(p)) for p in lps]) * [-1, -1, 1]
    ijk = nib.affines.apply_affine(np.linalg.inv(bold_img.affine), world)
    return ijk * np.asarray(bold_img.header.get_zooms()[:3])


def header_moves(out: Path, realdata: Path) -> None:
    import numpy as np

    from builders.realdata_bids import ASL_TR_S, asl_as_bold, same_person_bids

    from tmstarget.preproc import bold as pb
    from tmstarget.bids.inputs import preproc_anat_paths, preproc_bold_paths

    anat_dir = out / "preproc" / "sub-01" / "anat"
    anat = {k: str(anat_dir / Path(v).name) for k, v in preproc_anat_paths(anat_dir, "sub-01").items()}
    bold = asl_as_bold(realdata)
    mask = nib.load(anat["brain_mask"])
    points = nib.affines.apply_affine(mask.affine, np.argwhere(np.asarray(mask.dataobj) > 0)[::500])
    reference = _bold_points_mm(out / "preproc" / "sub-01" / "func" /
                                "sub-01_task-rest_from-boldref_to-T1w_mode-image_desc-coreg_xfm.txt", bold, points)
    centre = (bold.affine @ np.append((np.asarray(bold.shape[:3]) - 1) / 2.0, 1.0))[:3]
    for label, (axis, degrees, shift) in HEADER_MOVES.items():
        t0, c0 = time.time(), time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            moved_bids = same_person_bids(realdata, Path(tmp) / "bids", rigid_ras(axis, degrees, centre, shift))
            paths = preproc_bold_paths(Path(tmp) / "out", "sub-01_task-rest")
            (Path(tmp) / "out").mkdir()
            pb.preprocess_bold(moved_bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz",
                               {"RepetitionTime": ASL_TR_S}, anat, paths, {"registration": "fast"})
            result = rq.assess_registration({k: anat[k] for k in ("t1w_mni", "brain_mask", "preproc_t1w", "wm_probseg")},
                                            [{"name": "moved", **{k: str(paths[k]) for k in ("mask_mni", "boldref_mni", "boldref_t1w")}}])
            moved_bold = nib.load(moved_bids / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
            d = np.linalg.norm(_bold_points_mm(paths["xfm_bold_to_t1w"], moved_bold, points) - reference, axis=1)
        print(f"{label}: {result['status'].upper()} {dict((c['name'], c['value']) for c in result['checks'])}; "
              f"BOLD->T1w mapping from the unmoved run's: median {np.median(d):.2f} mm, max {d.max():.2f} mm "
              f"({time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU)", flush=True)


def main(outs: list[str]) -> None:
    for out in map(Path, outs):
        anat = out / "preproc" / "sub-01" / "anat"
        func = out / "preproc" / "sub-01" / "func"
        boldref = func / "sub-01_task-rest_space-T1w_boldref.nii.gz"
        t1w, mask, wm = (anat / f"sub-01_{s}.nii.gz" for s in ("desc-preproc_T1w", "desc-brain_mask", "label-WM_probseg"))
        mask_mni = func / "sub-01_task-rest_space-MNI152NLin2009aSym_res-2_desc-brain_mask.nii.gz"
        boldref_mni = func / "sub-01_task-rest_space-MNI152NLin2009aSym_res-2_boldref.nii.gz"
        t0, c0 = time.time(), time.process_time()
        print(f"== {out}")
        print(f"mask Dice with the template: whole brain {rq.mask_dice_with_template(mask_mni):.3f}, within the "
              f"field of view {rq.mask_dice_with_template(mask_mni, boldref_mni):.3f}; template brain covered "
              f"{rq.template_brain_coverage(mask_mni):.3f}")
        centre = brain_centre_ras_mm(nib.load(mask))
        cases = {"as registered": None, **MISREGISTRATIONS}
        with tempfile.TemporaryDirectory() as tmp:
            for name, spec in cases.items():
                path = boldref
                if spec is not None:
                    path = Path(tmp) / f"{name}.nii.gz"
                    nib.save(moved_copy(nib.load(boldref), rigid_ras(spec[0], spec[1], centre, spec[2])), path)
                frac = rq.wm_boundary_fraction(path, wm, mask)
                edge = rq.bold_t1w_edge_correlation(path, t1w, mask)
                levels = [c["level"] for c in rq.bold_checks("r", None, edge, boundary_fraction=frac)]
                print(f"{name:>14}: boundary fraction {frac:.3f}  edge correlation {edge:.3f}  levels (edge, boundary) {levels}")
        print(f"({time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU)")


if __name__ == "__main__":
    args = sys.argv[1:]
    realdata_dir = None
    if "--header-moves" in args:
        i = args.index("--header-moves")
        realdata_dir = Path(args[i + 1])
        del args[i:i + 2]
    main(args)
    if realdata_dir is not None:
        header_moves(Path(args[0]), realdata_dir)
