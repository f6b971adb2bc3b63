"""The protocol for choosing target defaults (issue 20, item 5): choose on one set, report on another.

Candidates (:func:`candidate_settings`): smoothing x cluster percentile x denoising strategy x rule.
Two kinds of data, each scored by its own criterion (lower is better):

- **real** runs that the registration gate does not FAIL: the headline split-half distance
  (:func:`split_half_distance_mm`, median over every balanced split of 60 s blocks) - no truth exists;
- **synthetic** runs with a planted anticorrelated blob at several SNRs and lengths: the distance of the
  full-data target from the planted point (median over the runs) - the truth is known.

Folds (:func:`cross_validate`): choose on synthetic, report on real; choose on real, report on
synthetic; leave one real run out; leave one SNR out. In every fold the chosen setting's held-out figure
is printed next to that of the current default (:data:`DEFAULT`).
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np

#: the current default (config/config.yaml: fox = GSR, 4 mm, cluster rule at the 20th percentile)
DEFAULT = {"strategy": "fox", "fwhm": 4.0, "method": "cluster", "percentile": 20.0}
SMOOTHING_MM = (0.0, 4.0, 6.0, 8.0)
PERCENTILES = (5.0, 10.0, 20.0)
STRATEGIES = ("fox", "acompcor")
#: target rules compared. >>> EXTEND HERE after merging branch contarg: append its method name (e.g.
#: "contarg_exact") once tmstarget.target.rules.select knows it; a rule with a percentile gets all PERCENTILES.
RULES = ("peak", "cluster")
RULES_WITH_PERCENTILE = ("cluster",)
#: 60 s blocks (targeting.block_length_s); every balanced split is enumerated up to this many, else
#: this many distinct splits are drawn (fixed generator, so a rerun gives the same figure)
BLOCK_LENGTH_S = 60.0
MAX_SPLITS = 64


def candidate_settings(quick: bool = False) -> list[dict]:
    """Every candidate setting (``quick``: smoothing 0/4/8 mm, percentiles 10/20 only)."""
    fwhms = (0.0, 4.0, 8.0) if quick else SMOOTHING_MM
    pcts = (10.0, 20.0) if quick else PERCENTILES
    out = []
    for strategy, fwhm, method in itertools.product(STRATEGIES, fwhms, RULES):
        for pct in (pcts if method in RULES_WITH_PERCENTILE else (None,)):
            out.append({"strategy": strategy, "fwhm": fwhm, "method": method, "percentile": pct})
    if DEFAULT not in out:
        out.append(dict(DEFAULT))
    return out


def setting_label(s: dict) -> str:
    """Short stable name, e.g. ``GSR 4mm cluster p20`` (the default is marked in tables, not here)."""
    strat = {"fox": "GSR", "acompcor": "aCompCor"}.get(s["strategy"], s["strategy"])
    pct = f" p{s['percentile']:g}" if s.get("percentile") is not None else ""
    return f"{strat} {s['fwhm']:g}mm {s['method']}{pct}"


def target_params(s: dict) -> dict:
    from tmstarget.target import params as TP

    cfg = {"method": s["method"]}
    if s.get("percentile") is not None:
        cfg["cluster"] = {"percentile": s["percentile"]}
    return TP.resolve_target_cfg(cfg)


# ----------------------------------------------------------------------------- the split-half adapter
def balanced_block_splits(n_blocks: int, max_splits: int = MAX_SPLITS) -> list[tuple[int, ...]]:
    """Block sets of half A of balanced splits (half A has ``n_blocks // 2`` blocks, mirror images counted
    once): all of them when there are at most ``max_splits``, else ``max_splits`` distinct ones drawn with a
    fixed generator (seed 0)."""
    k = n_blocks // 2
    if k == 0:
        return []
    combos = itertools.combinations(range(n_blocks), k)
    if n_blocks % 2 == 0:
        combos = (c for c in combos if 0 in c)           # the complement of a set without block 0 is the mirror
    n_all = comb(n_blocks, k) // (2 if n_blocks % 2 == 0 else 1)
    if n_all <= max_splits:
        return list(combos)
    rng = np.random.default_rng(0)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_splits:
        a = tuple(sorted(rng.choice(n_blocks, k, replace=False).tolist()))
        if n_blocks % 2 == 0 and 0 not in a:
            a = tuple(sorted(set(range(n_blocks)) - set(a)))
        chosen.add(a)
    return sorted(chosen)


def block_rows(run_lengths, block_volumes: int) -> list[np.ndarray]:
    """Row indices of consecutive ``block_volumes`` blocks within each run (a run's last block may be shorter)."""
    blocks, offset = [], 0
    for n in np.asarray(run_lengths, int):
        blocks += [np.arange(s, min(s + block_volumes, offset + n)) for s in range(offset, offset + n, block_volumes)]
        offset += n
    return blocks


def split_half_distance_mm(den, seed, search, s: dict, max_splits: int = MAX_SPLITS, halves_npz=None) -> dict:
    """THE adapter: headline split-half distance of setting ``s`` on one denoised run.

    It is the workflow's own computation (``tmstarget.target.uncertainty.rule_split_half_study`` on
    :mod:`tmstarget.target.reliability`):
    every balanced split of 60 s blocks (or ``max_splits`` distinct ones drawn with the fixed seed 0), each
    half denoised on its own from ``halves_npz`` (the raw seed/search series the denoise step writes) when
    given, else both halves cut from the one denoised series (synthetic runs, which have no confounds).

    Returns
    -------
    dict
        ``median_mm`` (NaN when no split gave two targets), ``q25_mm`` and ``q75_mm`` (interquartile range
        of the split distances), ``n_splits``, ``n_failed`` (splits where a half gave no target),
        ``enumerated`` (all balanced splits used), ``halves_cleaned`` (independently or jointly).
    """
    from tmstarget.target import selection as T, uncertainty as TU

    params = {**target_params(s), "split_half_max_splits": int(max_splits), "random_seed": 0}
    space = T.space_of(search, den)
    prob = T.build_problem(den, seed, search, s["method"])
    study = TU.rule_split_half_study(s["method"], params, prob, space, den, seed, search, halves_npz)
    rel, head = study["reliability"], study["headline"]
    ok = np.asarray([x for x in head["distances_mm"] if x is not None], float)
    pct = (lambda q: float(np.percentile(ok, q)) if len(ok) else float("nan"))
    return {"median_mm": pct(50), "q25_mm": pct(25), "q75_mm": pct(75), "n_splits": int(rel["n_splits"]),
            "n_failed": int(head["n_failed"]), "enumerated": bool(rel["splits_enumerated"]),
            "halves_cleaned": rel["halves_cleaned"]}


def full_target_mni_ras_mm(den, seed, search, s: dict) -> np.ndarray:
    """Target of setting ``s`` from all the data (NaN when the rule finds none)."""
    from tmstarget.target import selection as T
    from tmstarget.errors import QCFailure

    try:
        space, _, sel = T.target_of(den, seed, search, s["method"], target_params(s), None)
    except QCFailure:
        return np.full(3, np.nan)
    return space.xyz_mm[sel.index]


# ----------------------------------------------------------------------------- criteria and folds
def _or_inf(v) -> float:
    """A missing figure (None or NaN: no target) ranks last."""
    return float(v) if v is not None and np.isfinite(v) else np.inf


def real_score(results: dict, runs, label: str) -> float:
    """Criterion on real runs: median over ``runs`` of the split-half median (a run without one counts as inf)."""
    vals = [results[r][label]["split_half"]["median_mm"] for r in runs]
    return float(np.median([_or_inf(v) for v in vals]))


def synthetic_score(results: list[dict], label: str, keep=lambda row: True) -> float:
    """Criterion on synthetic runs: median planted-target recovery error (no target counts as inf)."""
    vals = [row["settings"][label]["recovery_mm"] for row in results if keep(row) and label in row["settings"]]
    return float(np.median([_or_inf(v) for v in vals])) if vals else float("nan")


def synthetic_split_half(results: list[dict], label: str, keep=lambda row: True) -> float:
    """Tie-breaker on synthetic runs: median split-half distance over the runs (recovery errors on a 2 mm grid
    tie often)."""
    vals = [row["settings"][label]["split_half"]["median_mm"] for row in results if keep(row) and label in row["settings"]]
    return float(np.median([_or_inf(v) for v in vals])) if vals else float("nan")


def choose(labels, score, order, tie_break=None) -> str:
    """Label of the smallest score; ties broken by ``tie_break`` (smaller first), then by ``order`` (the
    default first, so a setting must do strictly better on both to displace it)."""
    return min(labels, key=lambda lab: (score(lab), tie_break(lab) if tie_break else 0.0, order.index(lab)))


def cross_validate(sets: list[dict], real: dict, synthetic: list[dict]) -> list[dict]:
    """Every fold: chosen setting on the training set, its held-out figure and the default's.

    ``real``: {run: {label: {"split_half": adapter output, ...}}} of gate-accepted runs only;
    ``synthetic``: [{"snr", "minutes", "replicate", "settings": {label: {"recovery_mm", ...}}}].
    Ties of the synthetic recovery are broken by the synthetic split-half median. Synthetic runs have no
    confounds: a setting differing only in strategy scores the same there, and the remaining tie goes to the
    default, then to GSR settings (the order).
    """
    d_lab = setting_label(DEFAULT)
    labels = [setting_label(s) for s in sets]
    order = [d_lab] + sorted((lab for lab in labels if lab != d_lab), key=lambda lab: (not lab.startswith("GSR"), lab))
    synth_labels = [lab for lab in labels if lab in (synthetic[0]["settings"] if synthetic else {})]
    folds = []

    def fold(name, train_what, test_what, train, test, pool, tie_break=None):
        chosen = choose(pool, train, order, tie_break)
        folds.append({"fold": name, "train": train_what, "test": test_what, "chosen": chosen,
                      "chosen_train": train(chosen), "default_train": train(d_lab),
                      "chosen_test": test(chosen), "default_test": test(d_lab),
                      "default_kept": bool(test(d_lab) <= test(chosen))})

    runs = sorted(real)
    if runs and synthetic:
        fold("synthetic -> real", "synthetic recovery mm", "real split-half median mm",
             lambda lab: synthetic_score(synthetic, lab), lambda lab: real_score(real, runs, lab),
             [lab for lab in labels if lab in synth_labels], lambda lab: synthetic_split_half(synthetic, lab))
        fold("real -> synthetic", "real split-half median mm", "synthetic recovery mm",
             lambda lab: real_score(real, runs, lab), lambda lab: synthetic_score(synthetic, lab), synth_labels)
    if len(runs) > 1:
        for held in runs:
            rest = [r for r in runs if r != held]
            fold(f"leave out {held}", f"split-half median mm on {', '.join(rest)}", f"split-half median mm on {held}",
                 lambda lab, rest=rest: real_score(real, rest, lab), lambda lab, held=held: real_score(real, [held], lab),
                 labels)
    snrs = sorted({row["snr"] for row in synthetic})
    for snr in snrs if len(snrs) > 1 else ():
        fold(f"leave out SNR {snr:g}", "synthetic recovery mm, other SNRs", f"synthetic recovery mm, SNR {snr:g}",
             lambda lab, snr=snr: synthetic_score(synthetic, lab, lambda row: row["snr"] != snr),
             lambda lab, snr=snr: synthetic_score(synthetic, lab, lambda row: row["snr"] == snr), synth_labels,
             lambda lab, snr=snr: synthetic_split_half(synthetic, lab, lambda row: row["snr"] != snr))
    return folds
