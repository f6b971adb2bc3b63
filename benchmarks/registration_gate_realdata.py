"""The BOLD->T1w registration gate's numbers on finished real-data runs, as registered and with the BOLD
reference moved in the T1w by known rigid misregistrations (issue 15).

    python benchmarks/registration_gate_realdata.py OUT [OUT ...]

OUT: the output folder of a raw-route workflow run (``tmstarget BIDS OUT participant``) of sub-01, e.g. the
same-person (ds000240 T1w + its ASL series) and different-person (+ RAPIDTIDETEST) datasets of
tests/realdata_bids.py. Prints, per run and per misregistration (tests/realdata_bids.MISREGISTRATIONS:
rotations about the T1w brain centre, shifts), the boundary fraction, the edge correlation and the level
the default thresholds give, plus the mask Dice as registered (whole template brain and within the BOLD
field of view). A moved copy is what the registration would have written had it ended that far off; the
registration itself is not rerun (that costs minutes per case).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from realdata_bids import MISREGISTRATIONS, brain_centre_ras_mm, moved_copy, rigid_ras  # noqa: E402

from tmstarget import registration_qc as rq  # noqa: E402


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
    main(sys.argv[1:])
