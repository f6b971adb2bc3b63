"""Gate-accepted preparation of the real runs for the reliability benchmark (issue 20, item 5).

Every real run is preprocessed by a route the project's own registration gate can judge, and the gate
(:func:`tmstarget.preproc.registration_qc.assess_registration`) is run on it; a run the gate FAILs is recorded
with its verdict and not used for choosing settings.

Routes (``ROUTES``):

- ``same_person``: ds000240 sub-01, its T1w and its own pCASL label/control series as the rest run
  (``tests/builders/realdata_bids.asl_as_bold``: 100 volumes, TR 3.5 s, 5.8 min), through the built-in
  preprocessing (``registration: fast``). The gate's BOLD -> T1w checks apply as in the workflow.
- ``template_direct``: rapidtide's RAPIDTIDETEST (and HAPPYTEST, see ``ROUTES``), whose person has no T1w in the public
  data. The mean EPI is registered *affinely* to nilearn's MNI152NLin2009aSym 2 mm template (antspyx,
  Mattes MI inside the dilated template brain); the template, pulled through that affine onto a 2 mm grid
  in the run's own world, stands in for the T1w (its brain mask, GM/WM maps and CSF = brain - GM - WM),
  with the affine as the "T1w -> MNI" transform. The unchanged built-in BOLD preprocessing then does
  motion correction, the rigid coregistration to that stand-in (near identity), the confounds and the
  one resampling to MNI. The gate's boundary check then measures the EPI's grey/white contrast along the
  *template's* white-matter boundary after the affine: the same check, against a template instead of
  the person's own anatomy (weaker: an affine does not line up every sulcus).
- ``template_syn``: the same with ANTs SyN (affine, then a deformable warp) instead of the affine, so the
  template's sulci follow the EPI more closely.

Outputs in fMRIPrep layout under ``<bench>/preproc/<route>/``, one ``<run>.done`` JSON per run with the
preprocessing QC, the seconds taken and the gate result (``gate.status`` pass / warn / fail).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

#: run name -> (route, raw file in the real-data folder, metadata or None for its own sidecar)
ROUTES = {
    "ds000240-ASL": ("same_person", "sub-01_asl.nii.gz", {"RepetitionTime": 3.5}),
    "RAPIDTIDETEST": ("template_direct", "sub-RAPIDTIDETEST.nii.gz", {"RepetitionTime": 1.5}),
    "RAPIDTIDETEST-SyN": ("template_syn", "sub-RAPIDTIDETEST.nii.gz", {"RepetitionTime": 1.5}),
}
#: HAPPYTEST (2.1 min: three 60 s blocks, so three splits) would enter as
#: ("template_syn", "sub-HAPPYTEST.nii.gz", None); left out of the default set to keep the clean run short.
#: ANTs transform of the mean EPI to the template per template route
TEMPLATE_TRANSFORM = {"template_direct": "Affine", "template_syn": "SyN"}
PARAMS = {"registration": "fast"}


def run_paths(bench: Path, name: str) -> tuple[dict, dict, Path]:
    """(anat paths, BOLD paths, done marker) of one prepared run, fMRIPrep naming."""
    from tmstarget.bids.inputs import preproc_anat_paths, preproc_bold_paths

    route = ROUTES[name][0]
    root = bench / "preproc" / route / f"sub-{name}"
    anat = preproc_anat_paths(root / "anat", f"sub-{name}")
    bold = preproc_bold_paths(root / "func", f"sub-{name}_task-rest")
    return anat, bold, bench / "preproc" / route / f"{name}.done"


def gate(anat: dict, bold: dict, name: str) -> dict:
    """The project's registration gate on one prepared run (checks whose files are missing are left out)."""
    from tmstarget.preproc.registration_qc import assess_registration

    return assess_registration(anat, [{"name": name, "mask_mni": bold["mask_mni"], "boldref_mni": bold["boldref_mni"],
                                       "boldref_t1w": bold["boldref_t1w"]}])


def mean_epi(raw_path: Path, metadata: dict, n_volumes: int = 40):
    """ANTs image of the mean of (up to) the middle ``n_volumes`` volumes of a 4D run (no motion correction:
    only an initial picture for the registration to the template), in the world the built-in preprocessing
    gives the run (:func:`tmstarget.preproc.bold.read_bold_header`: e.g. HAPPYTEST stores no orientation)."""
    from tmstarget.preproc.headers import nifti_to_ants
    from tmstarget.preproc.bold import read_bold_header

    img, affine, _, _ = read_bold_header(raw_path, metadata)
    n = img.shape[3]
    lo = max(0, n // 2 - n_volumes // 2)
    data = np.asarray(img.dataobj[..., lo: lo + n_volumes], dtype=np.float32).mean(axis=3)
    return nifti_to_ants(data, affine)


def template_stand_in(raw_path: Path, metadata: dict, anat: dict, workdir: Path, transform: str = "Affine") -> dict:
    """Write the template, pulled onto the run's world by ``transform`` (ANTs ``Affine`` or ``SyN``), as the
    run's stand-in "T1w" (``anat`` paths: preproc_t1w, brain_mask, gm/wm/csf_probseg; xfm_t1w_to_mni = that
    transform, MNI points -> run world, one file)."""
    import shutil

    import ants

    from tmstarget.preproc.headers import ants_affine_ras
    from tmstarget.io.nifti import nifti_img
    from tmstarget.preproc.registration import make_ants_repeatable
    from tmstarget.preproc.templates import load_template, to_ants
    from tmstarget.io.files import save_img

    make_ants_repeatable()
    mni = load_template(2)
    t1, mask = to_ants(mni["t1"]), to_ants(mni["mask"])
    epi = mean_epi(raw_path, metadata)
    epi_brain = ants.get_mask(epi, cleanup=2)
    reg = ants.registration(fixed=t1 * mask, moving=epi * epi_brain, type_of_transform=transform,
                            mask=ants.iMath(mask, "MD", 2), aff_metric="mattes",
                            aff_iterations=(1000, 500, 250, 100), aff_shrink_factors=(8, 4, 2, 1),
                            aff_smoothing_sigmas=(3, 2, 1, 0), outprefix=str(workdir / "epi2mni_"),
                            write_composite_transform=transform != "Affine")
    fwd = reg["fwdtransforms"] if isinstance(reg["fwdtransforms"], str) else reg["fwdtransforms"][0]
    xfm = Path(anat["xfm_t1w_to_mni"]).with_suffix(".mat" if transform == "Affine" else ".h5")
    shutil.copy(fwd, xfm)          # maps template points to run-world points
    anat["xfm_t1w_to_mni"] = str(xfm)
    grid = ants.resample_image(epi, (2.0, 2.0, 2.0), use_voxels=False, interp_type=0)
    grid = ants.pad_image(grid, pad_width=[(8, 8)] * 3)
    inv = reg["invtransforms"]
    inv = [inv] if isinstance(inv, str) else inv

    def pulled(img, interp="linear"):
        return ants.apply_transforms(fixed=grid, moving=img, transformlist=inv,
                                     whichtoinvert=[True] if transform == "Affine" else [False], interpolator=interp)

    brain = pulled(mask, "nearestNeighbor")
    gm, wm = pulled(to_ants(mni["gm"])), pulled(to_ants(mni["wm"]))
    affine = ants_affine_ras(grid)
    csf = np.clip(brain.numpy() - gm.numpy() - wm.numpy(), 0.0, 1.0) * (brain.numpy() > 0)
    for key, data in (("preproc_t1w", pulled(t1).numpy()), ("brain_mask", brain.numpy() > 0),
                      ("gm_probseg", gm.numpy()), ("wm_probseg", wm.numpy()), ("csf_probseg", csf)):
        save_img(nifti_img(data, affine, dtype=np.uint8 if key == "brain_mask" else np.float32), anat[key])
    return anat


def prepare_run(bench: Path, realdata: Path, name: str, log=print) -> dict:
    """Preprocess one real run by its route and gate it; cached (``<run>.done``)."""
    from tmstarget.preproc import anat as pa
    from tmstarget.preproc import bold as pb
    from tmstarget.io.files import read_json

    anat, bold, done = run_paths(bench, name)
    if done.exists():
        return json.loads(done.read_text())
    route, raw, meta = ROUTES[name]
    for p in (anat["preproc_t1w"], bold["bold_mni"]):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    extra = {}
    if meta is None:
        sidecar = read_json(realdata / raw.replace(".nii.gz", ".json"))
        meta = {k: sidecar[k] for k in ("RepetitionTime", "SliceTiming", "SliceEncodingDirection")}
        extra = {"slice_timing": True}
    raw_path = realdata / raw
    if route == "same_person":
        import nibabel as nib

        from builders.realdata_bids import asl_as_bold   # tests/ is on sys.path (see reliability.py)
        raw_path = Path(bold["bold_mni"]).parent / "asl_label_control_as_bold.nii.gz"
        nib.save(asl_as_bold(realdata), raw_path)
        pa.preprocess_anat(realdata / "sub-01_T1w.nii.gz", anat, PARAMS)
    else:
        template_stand_in(raw_path, meta, anat, Path(anat["preproc_t1w"]).parent, TEMPLATE_TRANSFORM[route])
    t_anat = time.time() - t0
    qc = pb.preprocess_bold(raw_path, meta, anat, bold, {**PARAMS, **extra})
    verdict = gate(anat, bold, name)
    out = {"run": name, "route": route, "seconds": round(time.time() - t0), "anat_seconds": round(t_anat),
           "anat": anat, "bold": bold, "minutes": round(qc["volumes"] * qc["t_r"] / 60, 2),
           "volumes": qc["volumes"], "t_r": qc["t_r"], "mean_fd_mm": round(qc["mean_fd_mm"], 3),
           "gate": {"status": verdict["status"],
                    "checks": [{k: c[k] for k in ("name", "value", "level")} for c in verdict["checks"]]}}
    done.write_text(json.dumps(out, indent=1, default=str) + "\n")
    log(f"{name}: {route}, prepared in {out['seconds']} s, gate {verdict['status'].upper()} "
        + "; ".join(f"{c['name']}={c['value']:g}" for c in verdict["checks"]))
    return out


def prepared_runs(bench: Path) -> dict:
    """{run: its ``.done`` record} of every prepared run."""
    out = {}
    for name in ROUTES:
        done = run_paths(bench, name)[2]
        if done.exists():
            out[name] = json.loads(done.read_text())
    return out
