"""CPU and wall time of the report step (``tmstarget.run.steps.report``) on the demo subject and on a 0.7 mm T1w.

For an OUTPUT_DIR of a finished ``tmstarget ... participant`` run, the report's inputs are rebuilt as the
workflow builds them (``workflow/rules/report.smk``, from the run's own ``logs/config.yaml`` and
:func:`tmstarget.bids.inputs.make_plan`), and the step runs in a fresh child process, as Snakemake runs it:
the page and the reportlet files go to a temporary folder, never into the run. Two measurements per run:

- the run as it is;
- "0.7 mm oblique": the same inputs with the three T1w-grid images (the preprocessed T1w, the BOLD reference
  and the seed map in T1w space) resliced onto a grid the size of issue 24's scan, 274 x 384 x 384 voxels of
  0.7 x 0.67 x 0.67 mm tilted 12 degrees (report-only: the T1w content is the run's, upsampled; targets, masks
  and time series are unchanged). Made once in ``--workdir``.

Prints, per measurement: CPU seconds of the whole child (interpreter start, imports, the step: what
Snakemake's benchmark file calls ``cpu_time``), CPU and wall seconds of the step itself, the page's size,
and CPU seconds per section. CPU s = user + system (``resource.getrusage``); wall times on a shared
machine are longer than on an idle one.

    python benchmarks/report_cost.py OUTPUT_DIR [--unit sub-01] [--repeat N] [--workdir DIR]
    python benchmarks/report_cost.py --prepare      # runs demo sub-01 first (config/demo.yaml) if needed

``--workdir`` (default ``~/.cache/tmstarget/bench-reportcost``) holds the resliced images and, with
``--prepare``, the demo run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time

def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime

args = json.loads(sys.argv[1])
from tmstarget.report import page
sections = {}
real = page.render_reportlet

def timed(r, ctx):
    c0 = cpu()
    out = real(r, ctx)
    sections[r.name] = cpu() - c0
    return out

page.render_reportlet = timed
c0, t0 = cpu(), time.time()
out = page.build_subject_report(args["inputs"], args["html"], reportlet_dir=args["figs"])
c1, t1 = cpu(), time.time()
print("RESULT " + json.dumps({"step_cpu_s": c1 - c0, "step_wall_s": t1 - t0, "process_cpu_s": c1,
                             "page_mb": out.stat().st_size / 1e6, "sections_cpu_s": sections}))
"""


def report_inputs(output_dir: Path, unit: str) -> dict:
    """The report step's inputs of ``unit`` in a finished run, as ``workflow/rules/report.smk`` lists them."""
    from tmstarget.bids.derivatives import OUTPUT_PATTERNS
    from tmstarget.bids.inputs import make_plan
    from tmstarget.config.settings import read_yaml

    config = read_yaml(output_dir / "logs" / "config.yaml")
    plan = make_plan(config)
    u = plan.units[unit]
    main = config["denoising"]["strategy"]
    deriv, work = output_dir / "tmstarget", output_dir / "work"

    def d(kind, strategy=main[:1].upper() + main[1:]):
        return str(deriv / OUTPUT_PATTERNS[kind].format(subdir=u.subdir, unit=u.unit, task=config["task"],
                                                        space=plan.space, strategy=strategy))

    return {"target_json": d("target_json"), "native_json": d("native_json"),
            "denoise_qc_json": d("denoise_qc", strategy=main), "seed_json": d("seed_json"),
            "verdict_json": d("verdict"), "fisherz_map": d("fisherz_map"), "fisherz_map_t1w": d("fisherz_map_t1w"),
            "seed_mask": d("seed_mask"), "search_mask": d("search_mask"),
            "denoised_npz": str(work / u.subdir / f"{u.unit}_desc-{main}_denoised.npz"),
            "preproc_bold": [r.bold for r in u.runs], "bold_mask": [r.mask for r in u.runs],
            "confounds": [r.confounds for r in u.runs],
            "boldref_t1w": [r.boldref_t1w for r in u.runs if r.boldref_t1w],
            "t1w": u.anat["preproc_t1w"], "t1w_mni": u.anat.get("t1w_mni"), "template_space": plan.space,
            "nav_formats": (config.get("exports") or {}).get("formats"), "run_config": config,
            "input_route": plan.route}


def measure(inputs: dict, unit: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        args = {"inputs": inputs, "html": f"{tmp}/{unit}.html", "figs": f"{tmp}/figs"}
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args, default=str)], capture_output=True,
                              text=True, env=env)
        wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the report step failed on {unit}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT "):]), "process_wall_s": wall}


def t1w_description(inputs: dict) -> str:
    import nibabel as nib
    import numpy as np

    img = nib.load(str(inputs["t1w"]))
    zooms = "x".join(f"{z:.2g}" for z in img.header.get_zooms()[:3])
    oblique = "" if np.allclose(np.abs(img.affine[:3, :3]).astype(bool), np.eye(3, dtype=bool)) else ", oblique"
    return f"T1w {'x'.join(str(n) for n in img.shape[:3])} of {zooms} mm{oblique}"


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


#: The 0.7 mm stand-in of issue 24's scan: grid shape, voxel size (mm) and tilt (degrees, about the left-right
#: axis; the scan was oblique, and a report that reslices an oblique T1w pays for it).
SHAPE_07, ZOOMS_07_MM, OBLIQUE_DEG = (274, 384, 384), (0.7, 0.67, 0.67), 12.0
#: The report's inputs on the T1w grid (the preprocessed T1w, and what is resampled onto it).
T1W_GRID_KEYS = ("t1w", "boldref_t1w", "fisherz_map_t1w")


def oblique_07mm_inputs(inputs: dict, workdir: Path) -> dict:
    """``inputs`` with the images of :data:`T1W_GRID_KEYS` resliced (cubic spline, same world) onto an oblique
    grid of :data:`SHAPE_07` voxels of :data:`ZOOMS_07_MM`, centred on the T1w's centre: what the report step
    reads for a 0.7 mm scan (report-only; targets, masks and time series stay the demo's). Made once."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    workdir.mkdir(parents=True, exist_ok=True)
    src = nib.load(str(inputs["t1w"]))
    centre_ras_mm = nib.affines.apply_affine(src.affine, (np.asarray(src.shape[:3]) - 1) / 2)
    a = np.deg2rad(OBLIQUE_DEG)
    rotation = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(ZOOMS_07_MM)
    affine[:3, 3] = centre_ras_mm - affine[:3, :3] @ ((np.asarray(SHAPE_07) - 1) / 2)
    out = dict(inputs)
    for key in T1W_GRID_KEYS:
        value = inputs.get(key)
        value = value[0] if isinstance(value, list) and value else value
        if not value:
            continue
        dst = workdir / Path(str(value)).name.replace(".nii", "_07mm.nii")
        if not dst.exists():
            img = nib.load(str(value))
            vox = np.linalg.inv(img.affine) @ affine          # output voxel -> input voxel
            data = ndimage.affine_transform(np.asarray(img.dataobj, dtype=np.float32), vox[:3, :3], vox[:3, 3],
                                            output_shape=SHAPE_07, order=3, mode="constant", cval=0.0)
            part = dst.with_name(f".part_{dst.name}")
            nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(part))
            part.rename(dst)
        out[key] = [str(dst)] if isinstance(inputs[key], list) else str(dst)
    return out


def prepare_demo(workdir: Path) -> Path:
    """sub-01 of the synthetic demo (``tmstarget demo-data``, ``config/demo.yaml``), run once in ``workdir``."""
    tmstarget = str(Path(sys.executable).with_name("tmstarget"))
    demo_bids, demo_out = workdir / "demo_bids", workdir / "demo"
    if not (demo_bids / "dataset_description.json").exists():
        _run([tmstarget, "demo-data", str(demo_bids)])
    if not list((demo_out / "tmstarget").glob("sub-01*.html")):
        _run([tmstarget, str(demo_bids), str(demo_out), "participant", "--participant-label", "01",
              "--config", str(REPO / "config" / "demo.yaml"), "--cores", "1"])
    return demo_out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", nargs="?", type=Path)
    parser.add_argument("--unit", default="sub-01")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "tmstarget" / "bench-reportcost")
    args = parser.parse_args(argv)
    if args.output_dir is None and not args.prepare:
        parser.error("give the OUTPUT_DIR of a finished run, or --prepare")
    out_dir = args.output_dir or prepare_demo(args.workdir)
    inputs = report_inputs(out_dir, args.unit)
    missing = [k for k, v in inputs.items() if isinstance(v, str) and k.endswith(("json", "map", "npz", "t1w"))
               and not Path(v).exists()]
    if missing:
        raise SystemExit(f"{out_dir}: {args.unit} has no {', '.join(missing)}; finish the run first")
    cases = [(out_dir.name, inputs),
             (f"{out_dir.name}, 0.7 mm oblique", oblique_07mm_inputs(inputs, args.workdir / f"{out_dir.name}_07mm"))]
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    print(f"report step of {args.unit}, tmstarget at {commit}; CPU s = user + system of the child process")
    for name, case_inputs in cases:
        for i in range(args.repeat):
            r = measure(case_inputs, args.unit)
            print(f"{name} ({t1w_description(case_inputs)}), run {i + 1}: "
                  f"process {r['process_cpu_s']:.1f} CPU s ({r['process_wall_s']:.1f} s wall), "
                  f"step {r['step_cpu_s']:.1f} CPU s ({r['step_wall_s']:.1f} s wall), page {r['page_mb']:.1f} MB")
            print("    sections (CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["sections_cpu_s"].items()
                                                     if v >= 0.05), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
