"""Adapters between Snakemake jobs and the package: one function per workflow rule.

Each function takes plain paths and settings (what a rule's ``input``, ``output`` and ``params``
hold) and calls one stage of the package. ``workflow/scripts/run_step.py`` is the only code that
touches the ``snakemake`` object: it calls :func:`run_from_snakemake`, which sets up logging to the
rule's log file and turns tmstarget's own errors into a one-paragraph message and a non-zero exit.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tmstarget.errors import TmsTargetError

log = logging.getLogger("tmstarget.run.steps")


# ----------------------------------------------------------------------------- one function per rule


def preprocess_anat(input, output, params):
    from tmstarget.preproc.anat import preprocess_anat as run

    return run(input["t1w"], dict(output), dict(params["cfg"]))


def preprocess_bold(input, output, params):
    from tmstarget.bids.inputs import ANAT_KEYS
    from tmstarget.preproc.bold import preprocess_bold as run

    anat = {k: input[k] for k in ANAT_KEYS}
    return run(input["bold"], dict(params["metadata"]), anat, dict(output), dict(params["cfg"]),
               fieldmap=params.get("fieldmap"))


def t1w_bold_to_template(input, output, params):
    from tmstarget.preproc.resample import resample_t1w_bold_to_template

    return resample_t1w_bold_to_template(input["t1w_bold"], input["t1w_mask"], input["xfm_t1w_to_mni"],
                                         output["bold"], output["mask"], params["space"], params.get("t_r"))


def denoise(input, output, params):
    from tmstarget.denoise.run import run_denoise

    return run_denoise(
        list(params["runs"]), dict(params["strategy"]), output["npz"], output["qc"],
        min_retained_minutes=params["min_retained_minutes"],
        warn_retained_minutes=params["warn_retained_minutes"],
        strategy_name=params["strategy_name"],
        out_halves_npz=output.get("halves"), halves_mask_paths=[input[k] for k in ("seed", "search") if k in input],
    )


def masks(input, output, params):
    from tmstarget.target.regions import run_masks

    return run_masks(input["mask"], dict(params["seed"]), dict(params["search"]),
                     output["seed"], output["search"], output["json"])


def seedmap(input, output, params):
    from tmstarget.target.connectivity import run_seedmap

    seed = dict(params["seed"])  # an absent key (None) takes its config/config.yaml default in run_seedmap
    return run_seedmap(input["npz"], input["seed"], output["r"], output["fisherz"], output["json"],
                       output["fisherz_json"],
                       seed_definition=seed,
                       min_seed_tsnr=seed.get("min_seed_tsnr"),
                       max_low_tsnr_fraction=seed.get("max_low_tsnr_fraction"))


def target(input, output, params):
    from tmstarget.target.step import run_target

    return run_target(
        input["npz"], input["seed"], input["search"], input["fisherz"], dict(params["cfg"]), output["json"],
        comparison_npz=input.get("compare_npz"), halves_npz=input.get("halves"), group_map_paths=list(input.get("group_maps", [])),
        seed_definition=dict(params["seed"]), search_definition=dict(params["search"]),
        template_space=params["space"],
    )


def native(input, output, params):
    from tmstarget.native.outputs import run_native

    return run_native(input["target"], params["t1w_navigation"], input["xfm_t1w_to_mni"],
                      input["xfm_mni_to_t1w"], input["brain_mask"], dict(params["cfg"]),
                      output["tsv"], output["json"], output["coordsystem"], output["sphere"],
                      t1w_uri=params.get("t1w_uri"), out_sphere_json=output.get("sphere_json"))


def maps_to_t1w(input, output, params):
    from tmstarget.native.spaces import run_maps_to_t1w

    return run_maps_to_t1w({"r": input["r"], "fisherz": input["fisherz"]}, input["t1w"], input["xfm_mni_to_t1w"],
                           {"r": output["r"], "fisherz": output["fisherz"]}, output["json"])


def registration_qc(input, output, params):
    from tmstarget.preproc.registration_qc import run_registration_qc

    return run_registration_qc(dict(params["anat"]), list(params["runs"]), output["json"],
                               thresholds=dict(params.get("thresholds") or {}))


def verdict(input, output, params):
    from tmstarget.qc.verdict import run_verdict

    inputs = {k: input[k] for k in ("target_json", "native_json", "denoise_qc_json", "seed_json")}
    inputs["bold_sidecars"] = list(params.get("bold_sidecars") or [])
    if input.get("registration_qc"):
        inputs["registration_qc"] = input["registration_qc"]
    unit = Path(output["json"]).name.split("_desc-verdict")[0]
    return run_verdict(inputs, output["json"], unit, thresholds=dict(params["thresholds"]),
                       bold_headers=list(params.get("bold_headers") or []))


def exports(input, output, params):
    """Navigator files in ``nav/``, gated by the verdict: on FAIL only ``nav/NOT_EXPORTED.txt``."""
    from tmstarget.navigation.exports import run_exports
    from tmstarget.qc.gate import export_gate

    if not export_gate(input["verdict"], Path(output["nav"])):
        return {}
    return run_exports(input["native"], params["t1w_navigation"], output["nav"], list(params["formats"]))


def report(input, output, params):
    from tmstarget.report import build_subject_report

    inputs = dict(params["inputs"])
    # the same drawn figures go into the page and into the reportlet files of `snakemake --report`
    return build_subject_report(inputs, output["html"], reportlet_dir=params.get("reportlet_dir"))


def reportlets(input, output, params):
    """One file per reportlet (for ``snakemake --report``), in the folder of the declared outputs."""
    from tmstarget.report import write_reportlets

    return write_reportlets(dict(params["inputs"]), params["out_dir"])


def group_report(input, output, params):
    from tmstarget.report import build_group_report

    return build_group_report(list(params["entries"]), output["html"], output["tsv"])


def dataset_files(input, output, params):
    from tmstarget.bids.derivatives import write_dataset_files

    write_dataset_files(Path(output["description"]).parent, dict(params["sources"]),
                        name=params.get("name", "tmstarget"),
                        generated_by=params.get("generated_by", "tmstarget"))


STEPS = {f.__name__: f for f in (preprocess_anat, preprocess_bold, t1w_bold_to_template, denoise, masks, seedmap, target,
                                 native, maps_to_t1w, registration_qc, verdict, exports, report, reportlets,
                                 group_report,
                                 dataset_files)}


# ----------------------------------------------------------------------------- Snakemake glue


def _named(io) -> dict:
    """Snakemake's Namedlist as a plain dict (lists stay lists)."""
    out = {}
    for key, value in io.items():
        out[key] = list(value) if isinstance(value, list) and not isinstance(value, str) else value
    return out


def setup_logging(log_path: str | None) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)


def os_error_message(exc: OSError, outputs: list) -> str:
    """One line for an operating-system error of a job: the cause, the file (the error's own, else the
    job's first output) and, for a full disk, the space left there."""
    import errno
    import shutil

    first = next((o[0] if isinstance(o, list) and o else o for o in outputs if o), None)
    where = exc.filename or first
    text = f"{exc.strerror or exc} writing {where}" if where else f"{exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and first:
        folder = Path(first).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free_mb = shutil.disk_usage(folder).free / 1e6
        text += f" ({free_mb:.0f} MB free in {folder}); free space there or choose another OUTPUT_DIR"
    return text


def run_from_snakemake(smk) -> None:
    """Run the step named in ``params.step`` with the job's inputs, outputs and params."""
    params = _named(smk.params)
    step = params.pop("step")
    setup_logging(smk.log[0] if smk.log else None)
    start = time.time()
    log.info("step %s started (%s)", step, ", ".join(f"{k}={v}" for k, v in smk.wildcards.items()))
    try:
        STEPS[step](_named(smk.input), _named(smk.output), params)
    except TmsTargetError as exc:
        # the CLI reads " ERROR: <message> [exit N]" from the job log to exit with the step's own class
        # (2 bad input, 3 quality failure) instead of Snakemake's generic 1
        log.error("%s [exit %d]", exc, exc.exit_code)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # e.g. the disk filled: name the cause and where this job was writing, not only a traceback
        log.warning("step %s stopped on an operating-system error:", step, exc_info=True)
        log.error("%s [exit 1]", os_error_message(exc, list(_named(smk.output).values())))
        sys.exit(1)
    log.info("step %s finished in %.1f s", step, time.time() - start)
