"""The sections of ``report.json`` (``zoo.report``), built from arrays already computed: judge
checks, features, scores. No model runs here, so every section is a function of its inputs.

Groups of prompts: ``easy``, ``hard``, ``all`` and the hard kinds ``pair`` (a relation is
stated), ``triple`` (three listed objects) and ``twin`` (a count of identical objects).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.metrics import SHARES, cascade_curves, fid
from zoo.report_stats import N_BOOT, auc_with_interval, fid_with_interval, margins_over_random, proportion
from zoo.text_baseline import hard_kind

DIFFICULTY_GROUPS = ("easy", "hard", "all")
KIND_GROUPS = ("pair", "triple", "twin")
INTERVALS = {"fidelity": "Wilson score interval, 95 %",
             "auc": f"percentile bootstrap over prompts, {N_BOOT} resamples, 2.5th-97.5th percentile",
             "fid": f"{N_BOOT} bootstrap resamples of the generated and the reference images (independently, with "
                    "replacement): ci95 = 2.5th-97.5th percentile of the resampled FIDs (biased up, may lie above fid); "
                    "fid_bias_corrected = 2 fid - their mean, ci95_bias_corrected = basic bootstrap interval "
                    "(zoo.report_stats.fid_with_interval)"}


def group_masks(difficulty: np.ndarray, kind: np.ndarray) -> dict[str, np.ndarray]:
    """bool mask of every group (see the module docstring) over the prompts."""
    masks = {d: (np.ones(len(difficulty), bool) if d == "all" else difficulty == d) for d in DIFFICULTY_GROUPS}
    return {**masks, **{k: kind == k for k in KIND_GROUPS}}


def fidelity_section(checks: dict[str, dict[str, np.ndarray]], masks: dict[str, np.ndarray],
                     has_relation: np.ndarray) -> dict:
    """Per image source (heavy, light, real) and group: the judge's verdict (``faithful``) and its
    parts, ``objects`` (every (colour, shape, size) count right: nothing missing, wrong or extra)
    and ``relation`` (over the group's prompts that state one; None where none do), each a share
    with a Wilson interval; then heavy minus light in points per group."""
    out: dict = {"interval": INTERVALS["fidelity"]}
    for source, check in checks.items():
        out[source] = {g: {"faithful": proportion(check["faithful"][m]), "objects": proportion(check["objects"][m]),
                           "relation": proportion(check["relation"][m & has_relation])}
                       for g, m in masks.items()}
    if "heavy" in checks and "light" in checks:
        out["heavy_minus_light_points"] = {
            g: 100 * (out["heavy"][g]["faithful"]["rate"] - out["light"][g]["faithful"]["rate"])
            for g, m in masks.items() if m.any()}
    return out


def fid_section(features: dict[str, np.ndarray], masks: dict[str, np.ndarray], n_boot: int = N_BOOT) -> dict:
    """FID of heavy, light and a second real draw (the floor) against the real renders, per
    difficulty, each with its bootstrap interval."""
    out: dict = {"interval": INTERVALS["fid"], "reference": "real renders of the same prompts",
                 "features": "the judge's penultimate layer"}
    for source in ("heavy", "light", "real_ref"):
        out[source] = {g: fid_with_interval(features[source][masks[g]], features["real"][masks[g]], n_boot, seed=i)
                       for i, g in enumerate(DIFFICULTY_GROUPS)}
    return out


def auc_by_group(scores: np.ndarray, labels: np.ndarray, masks: dict[str, np.ndarray], n_boot: int = N_BOOT) -> dict:
    """AUC of ``scores`` for ``labels`` in every group, with bootstrap intervals."""
    return {g: auc_with_interval(scores[m], labels[m], n_boot, seed=i) for i, (g, m) in enumerate(masks.items())}


def discriminator_section(confidence: dict[str, np.ndarray], light_ok: np.ndarray, masks: dict[str, np.ndarray],
                          n_boot: int = N_BOOT) -> dict:
    """The discriminator's confidence (P(real)) as a score of "the light image is correct", per group,
    and as a score of real renders vs light images."""
    light, real = confidence["light"], confidence["real"]
    labels = np.r_[np.ones(len(real), bool), np.zeros(len(light), bool)]
    return {"interval": INTERVALS["auc"],
            "auc_light_correct": auc_by_group(light, light_ok, masks, n_boot),
            "auc_real_vs_light": auc_with_interval(np.concatenate([real, light]), labels, n_boot),
            "mean_confidence": {k: float(v.mean()) for k, v in confidence.items()}}


def fid_curves(light_f: np.ndarray, heavy_f: np.ndarray, real_f: np.ndarray, confidence: np.ndarray,
               seed: int) -> dict:
    """FID of the served image set vs deferred share (discriminator routing; one seeded random draw);
    point estimates."""
    n = len(light_f)
    order = np.argsort(confidence, kind="mergesort")
    perm = np.random.default_rng(seed).permutation(n)
    disc, rand = [], []
    for s in SHARES:
        k = int(round(s * n))
        for sel, out in ((order, disc), (perm, rand)):
            mixed = light_f.copy()
            mixed[sel[:k]] = heavy_f[sel[:k]]
            out.append(fid(mixed, real_f))
    return {"share": SHARES.tolist(), "discriminator": disc, "random": rand}


def cascade_section(light_ok: np.ndarray, heavy_ok: np.ndarray, confidence: np.ndarray) -> dict:
    """Fidelity of the served set vs deferred share (discriminator vs random routing, random = exact
    expectation) on the held-out compositions, with the margin at every share 10-90 %."""
    curves = cascade_curves(light_ok, heavy_ok, confidence)
    return {**curves, "margin_10_to_90": margins_over_random(curves)}


def scores_section(scores: dict[str, np.ndarray], light_ok: np.ndarray, masks: dict[str, np.ndarray],
                   n_boot: int = N_BOOT) -> dict:
    """AUC for "the light image is correct" of several scores side by side, per group."""
    return {name: auc_by_group(s, light_ok, masks, n_boot) for name, s in scores.items()}


def hard_kinds(scenes: Sequence) -> np.ndarray:
    """The group label (easy / pair / triple / twin) of every scene."""
    return np.array([hard_kind(s) for s in scenes])

