"""The target step: one unit's denoised data in, the target JSON out (``*_desc-target_markers.json``).

:func:`run_target` reads the inputs, applies the rule (:mod:`tmstarget.target.rules`), measures the
target's uncertainty (:mod:`tmstarget.target.uncertainty`), repeats the rule on the no-GSR strategy and
writes the record; each part is one function below. Layout of the JSON: docs/architecture.md.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from tmstarget.errors import InputError, QCFailure
from tmstarget.io.files import write_json
from tmstarget.io.nifti import load_img_checked
from tmstarget.target.params import METHODS, resolve_target_cfg
from tmstarget.target.regions import grey_matter_probability, in_ba46, literature_sites_mni_ras_mm
from tmstarget.target.rules import SearchSpace, Selection, pearson_r
from tmstarget.denoise.arrays import Denoised, load_denoised
from tmstarget.target.selection import Problem, grid_mask, seedmap_weights, target_of
from tmstarget.target.uncertainty import (BOOTSTRAP_NOTE, bootstrap_targets, confidence, has_multiple_candidates,
                                          rule_split_half_study, summarize_spread, target_candidates)

log = logging.getLogger(__name__)


def run_target(denoised_npz, seed_mask_path, search_mask_path, fisherz_map_path, cfg: dict, out_json,
               comparison_npz=None, group_map_paths=(), seed_definition=None,
               search_definition=None, template_space: str | None = None, halves_npz=None) -> dict:
    """Choose the target in template space and write the target JSON (step adapter).

    Parameters
    ----------
    denoised_npz : path
        Main-strategy denoised time series (``data_tv`` T x V, ``mask``, ``affine``, ``t_r``,
        ``run_lengths``).
    seed_mask_path, search_mask_path : path
        uint8 NIfTI masks in the grid of ``mask`` (``regions.run_masks``).
    fisherz_map_path : path
        Seed map (``stat-fisherz``: Fisher z-transformed r, arctanh r; not a z statistic) of the main
        strategy, same grid; gives ``z_at_target`` (that Fisher z) / ``r_at_target``.
    cfg : dict
        ``config["targeting"]`` (keys in config/config.yaml; :func:`tmstarget.target.params.resolve_target_cfg`).
    out_json : path
        ``*_desc-target_markers.json`` (layout in docs/architecture.md).
    comparison_npz : path, optional
        Denoised data of the no-GSR strategy; the same rule gives ``gsr_comparison``.
    group_map_paths : sequence of paths
        The other subjects' sgACC r maps (seedmap rule without a normative map).
    seed_definition, search_definition : dict, optional
        Recorded as ``seed`` and ``search_region``.
    template_space : str, optional
        Default: the ``space-`` entity of the Fisher z map's file name.
    halves_npz : path, optional
        ``*_desc-<strategy>_halves.npz`` of the main strategy (raw seed and search series): split halves
        are then each denoised on their own (the reliability headline, :mod:`tmstarget.target.reliability`).

    Returns
    -------
    dict
        The JSON content.
    """
    params = resolve_target_cfg(cfg)
    method = params["method"]
    den, seed, search, z_img = _read_inputs(denoised_npz, seed_mask_path, search_mask_path, fisherz_map_path)
    weights, seedmap_info = None, None
    if method == "seedmap":
        weights, seedmap_info = seedmap_weights(params, den, search, group_map_paths)
    space, prob, sel = target_of(den, seed, search, method, params, weights)
    target_mm = space.xyz_mm[sel.index]
    target_ijk = space.ijk[sel.index]
    log.info("%s target at MNI %s (cluster %s voxels)", method, np.round(target_mm, 1), sel.cluster_size_voxels)

    z_at = float(np.asanyarray(z_img.dataobj)[tuple(target_ijk)])
    r_seed = float(pearson_r(prob.ts_search[:, [sel.index]], prob.seed_ref_t)[0])
    warnings = target_warnings(method, sel, space, z_at, r_seed)
    uncertainty, uncertainty_warnings = target_uncertainty(method, params, prob, space, den, seed, search,
                                                           halves_npz, target_mm)
    warnings += uncertainty_warnings
    gsr = None
    if comparison_npz is not None:
        gsr = gsr_comparison(comparison_npz, den, seed, search, method, params, weights is not None,
                             group_map_paths, target_mm)

    sites = literature_sites_mni_ras_mm()
    gm_at = float(grey_matter_probability(nib.Nifti1Image(den.mask.astype(np.uint8), den.affine))[tuple(target_ijk)])
    minutes = len(den.data_tv) * den.t_r / 60.0
    result = {
        "TemplateSpace": template_space_of(fisherz_map_path, template_space),
        "target_mni_ras_mm": target_mm.tolist(),
        "target_ijk": target_ijk.tolist(),
        "method": method,
        "method_parameters": method_parameters(method, params, seedmap_info),
        "unsnapped_point_mni_ras_mm": sel.point_mni_ras_mm.tolist(),
        "rule_score_at_target": sel.score,
        "r_at_target": float(np.tanh(z_at)),
        "z_at_target": z_at,
        "r_at_target_from_denoised": r_seed,
        "cluster_size_voxels": sel.cluster_size_voxels,
        "in_ba46": bool(in_ba46(target_mm, hemisphere="both")),
        "in_search_mask": bool(search[tuple(target_ijk)]),
        "grey_matter_probability_at_target": gm_at,
        "seed": seed_definition or {},
        "search_region": search_definition or {"mask": Path(search_mask_path).name,
                                               "voxels": int(search.sum())},
        "uncertainty": uncertainty,
        "gsr_comparison": gsr,
        "literature_distances_mm": {k: float(np.linalg.norm(target_mm - v)) for k, v in sites.items()},
        "denoising": {"strategy": den.strategy, "t_r": den.t_r, "volumes_kept": int(len(den.data_tv)),
                      "run_lengths": den.run_lengths.tolist(), "minutes_kept": round(minutes, 2)},
        "targeting_parameters": {k: v for k, v in params.items() if k not in METHODS},
        "warnings": warnings,
        "Sources": [Path(p).name for p in (denoised_npz, seed_mask_path, search_mask_path, fisherz_map_path)]
                   + ([Path(comparison_npz).name] if comparison_npz else []),
        "software": _software(),
    }
    write_json(result, out_json)
    return result


def _read_inputs(denoised_npz, seed_mask_path, search_mask_path, fisherz_map_path):
    """The denoised data, the seed and search masks on its grid (bool) and the Fisher z seed map."""
    den = load_denoised(denoised_npz)
    seed = grid_mask(seed_mask_path, den, "seed mask")
    search = grid_mask(search_mask_path, den, "search mask")
    z_img = load_img_checked(fisherz_map_path, ndim=3, what="seed Fisher z map")
    if z_img.shape[:3] != den.mask.shape:
        raise InputError(f"{Path(fisherz_map_path).name}: grid {z_img.shape[:3]} differs from {den.name} "
                         f"{den.mask.shape}; recompute the seed map from the same denoised data")
    return den, seed, search, z_img


def target_warnings(method: str, sel: Selection, space: SearchSpace, z_at: float, r_seed: float) -> list[str]:
    """Warnings about the target itself: a hierarchical cluster that swallowed the region, and a seed
    map (Fisher z ``z_at`` at the target) that disagrees with the denoised data (``r_seed``)."""
    warnings = []
    if method == "hierarchical" and sel.cluster_size_voxels > 0.5 * len(space.ijk):
        warnings.append(f"the hierarchical cluster holds {sel.cluster_size_voxels} of {len(space.ijk)} search "
                        "voxels: single linkage chains spatially smoothed voxels into one cluster, so the "
                        "target is the region's centre; use unsmoothed data (denoising smoothing_fwhm_mm: 0) "
                        "or targeting.hierarchical.linkage: average")
    if abs(np.tanh(z_at) - r_seed) > 0.1:
        warnings.append(f"the seed map gives r = {np.tanh(z_at):.2f} at the target but the denoised data give "
                        f"{r_seed:.2f}: the seed map and the time series may come from different inputs")
    return warnings


def target_uncertainty(method: str, params: dict, prob: Problem, space: SearchSpace, den: Denoised, seed, search,
                       halves_npz, target_mm) -> tuple[dict, list[str]]:
    """The ``uncertainty`` record (bootstrap, split halves, candidates, confidence) and its warnings."""
    uncertainty = {"method": "block-bootstrap", "n": int(params["bootstrap_samples"]),
                   "block_length_s": float(params["block_length_s"]), "random_seed": params["random_seed"]}
    boots = None
    if params["bootstrap_samples"] > 0:
        boots = bootstrap_targets(method, params, prob.ts_search, prob.ref_t, space, den.run_lengths,
                                  den.t_r, prob.ts_seed)
        uncertainty["targets_mni_ras_mm"] = [None if not np.all(np.isfinite(b)) else b.tolist() for b in boots]
        uncertainty.update(summarize_spread(boots, target_mm))
    if params["split_half"]:
        study = rule_split_half_study(method, params, prob, space, den, seed, search, halves_npz)
        uncertainty.update(split_half_record(study))
        rel = study["reliability"]
        cand_points = np.concatenate([study["first_second"], study["pairs"].reshape(-1, 3)])
        cand_from = f"split-half targets ({rel['measure']}: first/second half and {rel['n_splits']} block splits)"
    elif boots is not None:
        cand_points, cand_from = boots, "bootstrap targets (split-half disabled)"
    else:
        cand_points = None
    if boots is not None:
        uncertainty["bootstrap_note"] = BOOTSTRAP_NOTE
    warnings = []
    if cand_points is not None:
        warning = _add_candidates(uncertainty, cand_points, cand_from, space, params)
        if warning:
            warnings.append(warning)
    uncertainty["confident"], reasons = confidence(uncertainty, params)
    if reasons:
        warnings.append("uncertain target: " + "; ".join(reasons) + "; collect more data or use the "
                        "group/literature site")
    return uncertainty, warnings


def _finite_list(x) -> list | None:
    return x.tolist() if np.all(np.isfinite(x)) else None


def split_half_record(study: dict) -> dict:
    """The ``split_half_*`` and ``reliability`` keys of the uncertainty record from a split-half study."""
    head, rel = study["headline"], study["reliability"]
    return {
        "split_half_targets_mni_ras_mm": [_finite_list(x) for x in study["first_second"]],
        "split_half_distance_mm": head["first_vs_second_half_mm"],
        "split_half_n_splits": rel["n_splits"],
        "split_half_distances_mm": head["distances_mm"],
        "split_half_median_distance_mm": head["median_distance_mm"],
        "split_half_n_failed": head["n_failed"],
        "split_half_pair_targets_mni_ras_mm": [[_finite_list(x) for x in pair] for pair in study["pairs"]],
        "reliability": rel,
    }


def _add_candidates(uncertainty: dict, cand_points, cand_from: str, space: SearchSpace, params: dict) -> str | None:
    """Candidate targets into ``uncertainty``; the warning text when two or more are well supported."""
    cands = target_candidates(cand_points, space, float(params["candidate_separation_mm"]))
    uncertainty["candidates"] = cands
    uncertainty["candidates_from"] = cand_from
    uncertainty["candidate_separation_mm"] = float(params["candidate_separation_mm"])
    uncertainty["multiple_candidates"] = has_multiple_candidates(
        cands, float(params["multiple_candidates_min_support"]))
    if not uncertainty["multiple_candidates"]:
        return None
    return "two or more separated candidate targets: " + "; ".join(
        f"MNI ({', '.join(f'{v:.0f}' for v in c['target_mni_ras_mm'])}) with {c['support_fraction']:.0%} "
        "of the split-half targets" for c in cands[:3])


def gsr_comparison(comparison_npz, den: Denoised, seed, search, method: str, params: dict, use_weights: bool,
                   group_map_paths, target_mm) -> dict:
    """The same rule on the no-GSR strategy's data: its target and the shift from ``target_mm``."""
    cden = load_denoised(comparison_npz)
    if cden.mask.shape != den.mask.shape or not np.allclose(cden.affine, den.affine, atol=1e-3):
        raise InputError(f"{cden.name}: grid differs from {den.name}; rerun the denoise step")
    cweights = seedmap_weights(params, cden, search, group_map_paths)[0] if use_weights else None
    try:
        cspace, _, csel = target_of(cden, seed, search, method, params, cweights)
    except QCFailure as exc:
        return {"strategy": cden.strategy, "target_mni_ras_mm": None, "shift_mm": None, "note": str(exc)}
    c_mm = cspace.xyz_mm[csel.index]
    return {"strategy": cden.strategy, "target_mni_ras_mm": c_mm.tolist(),
            "shift_mm": float(np.linalg.norm(c_mm - target_mm))}


def template_space_of(fisherz_map_path, template_space: str | None) -> str | None:
    """``template_space``, else the ``space-`` entity of the seed map's file name (None if absent)."""
    if template_space is not None:
        return template_space
    m = re.search(r"space-([A-Za-z0-9]+)", Path(fisherz_map_path).name)
    return m.group(1) if m else None


def method_parameters(method: str, params: dict, seedmap_info: dict | None) -> dict:
    """The rule and the settings it used (``method_parameters`` of the JSON)."""
    out = {"rule": method}
    if method == "seedmap":
        out.update(params["seedmap"], cluster=params["cluster"], **seedmap_info)
    elif method in ("cluster", "hierarchical"):
        out.update(params[method])
    return out


def _software() -> dict:
    try:
        from tmstarget.bids.derivatives import software_versions

        return software_versions()
    except ImportError:  # pragma: no cover
        return {}
