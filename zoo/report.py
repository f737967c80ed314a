"""Quality and cost report of the embedded tiny cascade (``make tiny-report``).

On a fixed, seeded set of prompts of HELD-OUT compositions (``split="eval"``: no training stream
draws them; half easy, half hard), the heavy and the light pipelines generate one image each
through diffusers, and the independent judge (:mod:`zoo.judge`) checks them. ``report.json``:

- ``caption_overlap``: the training caption streams replayed from their seeds (:mod:`zoo.report_overlap`)
  against the evaluation and the selection prompts: distinct captions and composition keys in common;
- ``fidelity``: heavy, light and real renders per difficulty and hard kind (pair / triple / twin),
  with the judge's parts (objects, relation) and Wilson 95 % intervals;
- ``fid``: heavy, light and real-vs-real FID per difficulty with bootstrap 95 % intervals;
- ``discriminator``: AUC of its confidence for "the light image is correct" per group, and real vs light;
- ``text_only_scores``: the discriminator beside a logistic regression on the caption alone
  (fitted on the selection prompts' light images, :mod:`zoo.text_baseline`) and the router when
  its words match the domain;
- ``cascade_curve_fidelity`` / ``cascade_curve_fid``: served quality vs deferred share,
  discriminator vs random routing; ``discriminator_beats_random_10_to_90`` at every 5 % share;
- ``cost_batch1_cpu_diffusers``: batch-1 wall times (median, IQR, min, max of ``--timing-repeats``
  interleaved runs), threads and load average;
- ``provenance``: prompt seeds, splits, sizes, weight hashes, sampling, git commit.

PNGs: ``cascade_curve.png``, ``fidelity_by_difficulty.png``, ``auc_by_difficulty.png``,
``samples_{easy,hard}.png``. Then the routing-policy curves (``hybrid.json``, :mod:`zoo.hybrid`)
unless ``--skip-hybrid``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from export.discriminators import load_discriminator
from zoo import hybrid, report_plots
from zoo.domain import eval_prompts, parse_caption, render
from zoo.judge import load_judge
from zoo.report_overlap import overlap_section, replay_streams
from zoo.report_provenance import cached_light_images, provenance
from zoo.report_sections import (cascade_section, discriminator_section, fid_curves, fid_section, fidelity_section,
                                 group_masks, hard_kinds, scores_section)
from zoo.report_stats import timing_summary
from zoo.sampling import PROMPT_SEED, SAMPLING, WEIGHTS, cached_images, disc_confidence, generate, load_pipeline
from zoo.select_checkpoint import SELECTION_PROMPT_SEED
from zoo.text_baseline import feature_names, fit_text_baseline, router_text_score, text_baseline_score

EVAL_IMAGE_SEED = 10_000  # image i of the evaluation prompts uses seed 10,000 + i (as zoo.hybrid)
SELECT_IMAGE_SEED = 20_000


def time_batch1(pipes: dict, prompt: str, repeats: int) -> dict:
    """Batch-1 wall ms of each pipeline, ``repeats`` runs each after one warm-up, heavy and light
    interleaved so that a change of load on the shared CPU hits both alike."""
    for role, pipe in pipes.items():
        generate(pipe, [prompt], [0], SAMPLING[role])
    times: dict[str, list[float]] = {role: [] for role in pipes}
    load_before = os.getloadavg()
    for r in range(repeats):
        for role, pipe in pipes.items():
            t0 = time.perf_counter()
            generate(pipe, [prompt], [r], SAMPLING[role])
            times[role].append((time.perf_counter() - t0) * 1e3)
    out = {role: timing_summary(t) for role, t in times.items()}
    return {**out, "heavy_over_light_median": out["heavy"]["median_ms"] / out["light"]["median_ms"],
            "prompt": prompt, "threads": torch.get_num_threads(),
            "loadavg_1_5_15_before": list(load_before), "loadavg_1_5_15_after": list(os.getloadavg())}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _role_steps(text: str) -> tuple[str, int]:
    role, _, steps = text.partition("=")
    if role not in ("vae", "heavy", "light") or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected ROLE=STEPS with ROLE vae, heavy or light and STEPS >= 1, got {text!r}")
    return role, int(steps)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny"))
    p.add_argument("--n-per-difficulty", type=_positive_int, default=1000,
                   help="evaluation prompts per difficulty (1000: FID on 2,000 images per set)")
    p.add_argument("--select-per-difficulty", type=_positive_int, default=1000,
                   help="selection prompts per difficulty (light images only) on which the text baseline is fitted")
    p.add_argument("--timing-repeats", type=_positive_int, default=30)
    p.add_argument("--n-boot", type=_positive_int, default=200, help="bootstrap resamples of each AUC and FID")
    p.add_argument("--threads", type=_positive_int, default=2)
    p.add_argument("--replay-max-steps", type=_positive_int, default=None,
                   help="cap the replayed training streams at this many steps (a quick look; default: all)")
    p.add_argument("--replay-steps", type=_role_steps, action="append", default=[], metavar="ROLE=STEPS",
                   help="steps of the vae/heavy/light stream where the weights were trained with other --steps than "
                        "zoo.build.STEPS (repeatable, e.g. heavy=12000)")
    p.add_argument("--image-cache", type=Path, default=None,
                   help="npz of the evaluation images, reused when made from the same weights, prompts and seeds "
                        f"(default {hybrid.IMAGE_CACHE_DIR}/report_images_<n>.npz, shared with zoo.hybrid)")
    p.add_argument("--no-image-cache", action="store_true", help="generate every image afresh, cache nothing")
    p.add_argument("--skip-hybrid", action="store_true", help="skip the routing-policy curves (hybrid.json)")
    p.add_argument("--hybrid-per-difficulty", type=_positive_int, default=hybrid.EVALUATION_PER_DIFFICULTY,
                   help="evaluation prompts per difficulty of the routing-policy curves (hybrid.json)")
    p.add_argument("--calibration-per-difficulty", type=_positive_int, default=hybrid.CALIBRATION_PER_DIFFICULTY,
                   help="calibration prompts per difficulty on which hybrid routing picks its router share")
    p.add_argument("--hybrid-image-cache-dir", type=Path, default=Path(hybrid.IMAGE_CACHE_DIR),
                   help="image cache of the routing-policy curves (keyed by the weight files, like --image-cache)")
    a = p.parse_args(argv)
    for role in ("heavy", "light", "judge", "discriminator"):
        if not (a.weights / role).is_dir():
            p.error(f"--weights {a.weights}: no {role}/ folder (expected heavy, light, judge, discriminator)")
    return a


def _caches(a: argparse.Namespace) -> tuple[Path | None, Path | None]:
    if a.no_image_cache:
        return None, None
    cache = a.image_cache or Path(hybrid.IMAGE_CACHE_DIR) / f"report_images_{a.n_per_difficulty}.npz"
    return cache, cache.with_name(f"report_selection_light_{a.select_per_difficulty}.npz")


def _text_only(a: argparse.Namespace, light_pipe, judge, prompts: list[str], light_ok: np.ndarray,
               confidence: np.ndarray, masks: dict) -> tuple[dict, list[str]]:
    """The discriminator beside the text-only scores (fitted on the selection prompts' light
    images), and the selection prompts."""
    _, select_cache = _caches(a)
    select = eval_prompts(SELECTION_PROMPT_SEED, a.select_per_difficulty, split="select")
    select_light = cached_light_images(light_pipe, select, [SELECT_IMAGE_SEED + i for i in range(len(select))],
                                       a.weights, select_cache)
    select_ok = judge.fidelity(select_light, select)
    weights, bias = fit_text_baseline(select, select_ok)
    scores = {"discriminator": confidence, "text_baseline": text_baseline_score(prompts, weights, bias)}
    router_score, router_note = router_text_score(a.weights / "router", prompts)
    if router_score is not None:
        scores["router"] = router_score
    top = np.argsort(-np.abs(weights))[:10]
    half = a.select_per_difficulty
    return {"auc_light_correct": scores_section(scores, light_ok, masks, a.n_boot),
            "text_baseline": {
                "fitted_on": {"split": "select", "seed": SELECTION_PROMPT_SEED, "n_per_difficulty": half,
                              "light_fidelity_easy": float(select_ok[:half].mean()),
                              "light_fidelity_hard": float(select_ok[half:].mean())},
                "model": "L2 logistic regression (l2=1) on zoo.text_baseline.caption_features, P(light image correct)",
                "largest_weights": {feature_names()[i]: float(weights[i]) for i in top}},
            "router": router_note}, select


def _evaluate(a: argparse.Namespace, pipes: dict, judge, disc) -> tuple[dict, dict]:
    """(report sections, what the plots and the overlap need)."""
    eval_cache, _ = _caches(a)
    prompts = eval_prompts(PROMPT_SEED, a.n_per_difficulty)
    scenes = [parse_caption(q) for q in prompts]
    heavy, light = cached_images(pipes, prompts, [EVAL_IMAGE_SEED + i for i in range(len(prompts))], a.weights,
                                 eval_cache)
    rng = np.random.default_rng(PROMPT_SEED)
    real = np.stack([render(s, rng) for s in scenes])
    real_ref = np.stack([render(s, rng) for s in scenes])  # a second draw: the FID floor

    checks = {k: judge.check(v, scenes) for k, v in (("heavy", heavy), ("light", light), ("real", real))}
    masks = group_masks(np.array([s.difficulty for s in scenes]), hard_kinds(scenes))
    feats = {k: judge.features(v) for k, v in (("heavy", heavy), ("light", light), ("real", real),
                                               ("real_ref", real_ref))}
    conf = {k: disc_confidence(disc, v) for k, v in (("light", light), ("heavy", heavy), ("real", real))}
    light_ok, heavy_ok = checks["light"]["faithful"], checks["heavy"]["faithful"]
    text_only, select = _text_only(a, pipes["light"], judge, prompts, light_ok, conf["light"], masks)
    print("statistics (bootstrap intervals) ...", flush=True)
    sections = {
        "fidelity": fidelity_section(checks, masks, np.array([s.relation is not None for s in scenes])),
        "fid": fid_section(feats, masks, a.n_boot),
        "discriminator": discriminator_section(conf, light_ok, masks, a.n_boot),
        "text_only_scores": text_only,
        "cascade_curve_fidelity": cascade_section(light_ok, heavy_ok, conf["light"]),
        "cascade_curve_fid": fid_curves(feats["light"], feats["heavy"], feats["real"], conf["light"], PROMPT_SEED),
    }
    return sections, {"prompts": prompts, "select_prompts": select, "real": real, "light": light, "heavy": heavy,
                      "masks": masks}


def _print_summary(report: dict) -> None:
    fidelity, fids = report["fidelity"], report["fid"]

    def share(row: dict) -> str:
        return "  n/a  " if row["rate"] is None else f"{row['rate']:6.1%} [{row['ci95'][0]:.1%}, {row['ci95'][1]:.1%}]"

    print("fidelity (Wilson 95%)   heavy                     light                     real")
    for g in ("easy", "hard", "pair", "triple", "twin", "all"):
        print(f"  {g:6s} " + "  ".join(share(fidelity[s][g]["faithful"]) for s in ("heavy", "light", "real")))
    print("judge parts on hard prompts: objects right heavy {} light {}; relation shown heavy {} light {}".format(
        *(share(fidelity[s]["hard"][part]) for part in ("objects", "relation") for s in ("heavy", "light"))))
    print("FID: point [bootstrap percentile 95%] / bias-corrected [basic 95%]")
    for g in ("easy", "hard", "all"):
        print(f"  {g:6s} " + "   ".join(
            f"{s} {r['fid']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] / {r['fid_bias_corrected']:.1f} "
            f"[{r['ci95_bias_corrected'][0]:.1f}, {r['ci95_bias_corrected'][1]:.1f}]"
            for s, r in ((s, fids[s][g]) for s in ("heavy", "light", "real_ref"))))
    print("AUC, light image correct (bootstrap 95%)")
    for name, by_group in report["text_only_scores"]["auc_light_correct"].items():
        print(f"  {name:14s} " + "  ".join(
            f"{g} {r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r["auc"] is not None else f"{g} n/a"
            for g, r in by_group.items() if g in ("all", "easy", "hard")))
    print(f"  router: {report['text_only_scores']['router']}")
    overlap = report["caption_overlap"]
    print(f"caption overlap with the training streams all zero: {overlap['all_zero']} ("
          + ", ".join(f"{k}: {v['captions']} captions, {v['evaluation_distinct_in_stream']} eval"
                      for k, v in overlap["streams"].items()) + ")")
    curve = report["cascade_curve_fidelity"]
    print("share  disc   random")
    for s, dv, rv in zip(curve["share"], curve["discriminator"], curve["random"]):
        print(f"{s:4.2f}  {dv:.3f}  {rv:.3f}")
    print(f"discriminator routing beats random at every share 10-90%: {report['discriminator_beats_random_10_to_90']}")
    t = report["cost_batch1_cpu_diffusers"]
    print(f"batch-1 CPU ms (diffusers, {t['threads']} threads, median of {t['heavy']['n']}; IQR): heavy "
          f"{t['heavy']['median_ms']:.1f} ({t['heavy']['iqr_ms']:.1f}), light {t['light']['median_ms']:.1f} "
          f"({t['light']['iqr_ms']:.1f}), ratio {t['heavy_over_light_median']:.1f}; load {t['loadavg_1_5_15_before']}")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; prints a summary and writes report.json + PNGs."""
    a = _parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    pipes = {"heavy": load_pipeline(a.weights / "heavy"), "light": load_pipeline(a.weights / "light")}
    judge, disc = load_judge(a.weights / "judge"), load_discriminator(a.weights / "discriminator")
    sections, data = _evaluate(a, pipes, judge, disc)
    streams = replay_streams(a.replay_max_steps, dict(a.replay_steps))
    overlap = overlap_section(streams, {"evaluation": data["prompts"], "selection": data["select_prompts"]})
    overlap["replay_max_steps"] = a.replay_max_steps
    print(f"timing batch 1, {a.timing_repeats} runs per pipeline ...", flush=True)
    timing = time_batch1(pipes, data["prompts"][-1], a.timing_repeats)
    report = {
        "provenance": provenance(a.weights, {
            "evaluation": {"seed": PROMPT_SEED, "split": "eval", "n_per_difficulty": a.n_per_difficulty,
                           "image_seed_start": EVAL_IMAGE_SEED},
            "selection": {"seed": SELECTION_PROMPT_SEED, "split": "select", "n_per_difficulty": a.select_per_difficulty,
                          "image_seed_start": SELECT_IMAGE_SEED}}, sys.argv, a.n_boot),
        "caption_overlap": overlap,
        **sections,
        "discriminator_beats_random_10_to_90": sections["cascade_curve_fidelity"]["margin_10_to_90"][
            "beats_random_everywhere"],
        "cost_batch1_cpu_diffusers": timing,
    }
    (a.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    report_plots.plot_cascade(a.out, sections["cascade_curve_fidelity"], sections["cascade_curve_fid"])
    report_plots.plot_fidelity_and_fid(a.out, sections["fidelity"], sections["fid"])
    report_plots.plot_auc(a.out, sections["text_only_scores"]["auc_light_correct"])
    for d in ("easy", "hard"):
        idx = np.flatnonzero(data["masks"][d])[:8]
        report_plots.sample_grid(data["real"][idx], data["light"][idx], data["heavy"][idx],
                                 [data["prompts"][i] for i in idx], a.out / f"samples_{d}.png", f"{d} prompts")
    _print_summary(report)
    if not a.skip_hybrid:
        hybrid.run(a.out, a.weights, pipes, judge, disc, a.hybrid_per_difficulty, a.calibration_per_difficulty,
                   a.hybrid_image_cache_dir)
    print(f"wrote {a.out / 'report.json'} and PNGs")


if __name__ == "__main__":
    main()
