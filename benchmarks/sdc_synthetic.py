"""Issue 25: the synthetic B0 field of tmstarget.demo.distortion and how well each field map kind recovers it.

    python benchmarks/sdc_synthetic.py DEMO_BIDS WORK_DIR [KIND ...]

DEMO_BIDS is a demo dataset (``tmstarget demo-data``); for each KIND (default: phasediff fieldmap pepolar)
WORK_DIR/dist-KIND is made by ``make_distorted_dataset`` (sub-01; reused when present). Prints the true
displacement at the sgACC seed, the ventromedial PFC and the left DLPFC, its spread inside the true brain,
and, when tmstarget.preproc.fieldmap is installed, the residual |estimated - true| displacement of each kind
inside the brain (the computation of tests/test_sdc_workflow.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from tmstarget.demo.distortion import (FIELDMAP_KINDS, _mni_to_native_ras_mm, brain_mask_on_bold_grid,
                                       displacement_error_mm, load_distortion_truth, make_distorted_dataset)

RUN = "sub-01/func/sub-01_task-rest"
POINTS_MNI = (("sgACC seed MNI (6, 16, -10)", (6, 16, -10)), ("vmPFC MNI (0, 40, -18)", (0, 40, -18)),
              ("left DLPFC MNI (-40, 40, 30)", (-40, 40, 30)))


def field_summary(bids: Path) -> None:
    truth = load_distortion_truth(bids, "01")
    img = nib.load(str(truth["b0displacement_mm"]))
    disp = img.get_fdata()
    m2t = nib.load(str(bids / "sourcedata/groundtruth/sub-01/sub-01_mni_to_t1w_map.nii.gz"))
    for name, p in POINTS_MNI:
        ijk = nib.affines.apply_affine(np.linalg.inv(img.affine), _mni_to_native_ras_mm(np.array([p], float), m2t))
        print(f"true displacement at {name}: {float(ndi.map_coordinates(disp, ijk.T, order=1)[0]):+.2f} mm")
    brain = brain_mask_on_bold_grid(bids, "01")
    err = displacement_error_mm(np.zeros_like(disp), disp, brain)
    print(f"|true displacement| in the brain ({err['voxels']} voxels; = residual without correction): median "
          f"{err['median_mm']:.2f} mm, p95 {err['p95_mm']:.2f} mm, max {err['max_mm']:.2f} mm")


def residual(bids: Path, kind: str, work: Path) -> None:
    from tmstarget.bids.inputs import plan_raw
    from tmstarget.preproc.fieldmap import estimate_shift_vox

    t0 = time.time()
    fieldmap = plan_raw(bids, work / f"plan-{kind}", distortion_correction="auto").bold_jobs[RUN]["fieldmap"]
    truth = load_distortion_truth(bids, "01")
    bold = nib.load(str(bids / f"{RUN}_bold.nii.gz"))
    boldref = np.asarray(bold.dataobj[..., 3:13], dtype=np.float32).mean(axis=3)
    est = estimate_shift_vox(fieldmap, boldref, bold.affine)
    true_mm = nib.load(str(truth["b0displacement_mm"])).get_fdata()
    err = displacement_error_mm(est["shift_vox"] * truth["pe_voxel_mm"], true_mm, brain_mask_on_bold_grid(bids, "01"))
    print(f"{kind} (matched by {fieldmap.get('matched_by')}): residual |estimated - true| in the brain: median "
          f"{err['median_mm']:.3f} mm, p95 {err['p95_mm']:.3f} mm, max {err['max_mm']:.2f} mm "
          f"({time.time() - t0:.0f} s)", flush=True)


def main(argv: list[str]) -> None:
    demo, work = Path(argv[0]), Path(argv[1])
    kinds = argv[2:] or list(FIELDMAP_KINDS)
    for n, kind in enumerate(kinds):
        bids = work / f"dist-{kind}"
        if not bids.exists():
            make_distorted_dataset(demo, bids, kind=kind, subjects=["01"],
                                   match="intendedfor" if kind == "pepolar" else "b0field")
        if n == 0:
            field_summary(bids)
        try:
            import tmstarget.preproc.fieldmap  # noqa: F401
        except ImportError:
            print("tmstarget.preproc.fieldmap not installed: no residuals")
            continue
        residual(bids, kind, work)


if __name__ == "__main__":
    main(sys.argv[1:])
