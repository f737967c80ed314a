"""Hybrid routing on the tiny cascade: random, discriminator-only, router-only and hybrid (``make tiny-report``).

At a heavy share h (the share of queries that end on the heavy model):

- random: h of the queries, drawn at random (exact expectation);
- discriminator-only (DiffServe): every query runs light; the h least confident light images
  are re-run on heavy;
- router-only: the h prompts with the highest router score go straight to heavy;
- hybrid (HADIS): the router sends a share r straight to heavy and the discriminator defers a
  share d of the rest, with r + (1 - r) d = h. The split r is chosen per h on a CALIBRATION
  prompt set (the domain's ``select`` split, as ``make calibrate`` and the planner would) and
  then evaluated on the report's EVALUATION prompts (the ``eval`` split: other compositions), so
  hybrid is not better than the others by construction. The choice rule (:mod:`zoo.router_share`:
  the largest r within one standard error of the best calibration fidelity, or the plain argmax)
  is itself chosen on the calibration set alone, by half-split validation
  (:func:`zoo.router_share.choose_rule`; bootstrap and half-split numbers of both rules are
  recorded in hybrid.json under ``router_share_selection``).

Quality = prompt fidelity (the judge finds exactly the prompt's objects) of the served set.
"""
from __future__ import annotations

import json

import numpy as np

from export.hybrid_calibration import heavy_mask, split  # one implementation, shared with make calibrate
from zoo.router_share import (ROUTER_SHARE_STEP, RULE, RULES, bootstrap_choices, candidate_router_shares, choose_rule,
                               half_split_check)

HEAVY_SHARES = np.round(np.arange(0.10, 0.9001, 0.05), 2)


def fidelity(light_ok: np.ndarray, heavy_ok: np.ndarray, heavy: np.ndarray) -> float:
    return float(np.where(heavy, heavy_ok, light_ok).mean())


def served_correct(s: dict, heavy_share: float, step: float = ROUTER_SHARE_STEP) -> tuple[np.ndarray, np.ndarray]:
    """(candidate router shares, bool (R, N): is prompt n's served image correct under candidate r)."""
    candidates = candidate_router_shares(heavy_share, step)
    rows = [np.where(heavy_mask(s["router_score"], s["confidence"], r, split(heavy_share, r)), s["heavy_ok"], s["light_ok"])
            for r in candidates]
    return candidates, np.stack(rows).astype(bool)


def best_router_share(light_ok: np.ndarray, heavy_ok: np.ndarray, router_score: np.ndarray, confidence: np.ndarray,
                      heavy_share: float, step: float = ROUTER_SHARE_STEP, rule: str = RULE) -> float:
    """The router share r in {0, step, ..., h} that ``rule`` (:data:`zoo.router_share.RULES`) picks on this set."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; expected one of {sorted(RULES)}")
    s = {"light_ok": light_ok, "heavy_ok": heavy_ok, "router_score": router_score, "confidence": confidence}
    return RULES[rule](*served_correct(s, heavy_share, step))


def selection_diagnostics(calibration: dict, shares=HEAVY_SHARES, n_boot: int = 200, n_splits: int = 50) -> dict:
    """How noisy the choice of r is, per rule, from the CALIBRATION set alone: r over bootstrap
    resamples (5th / 50th / 95th percentile per heavy share) and the half-split check of
    :func:`zoo.router_share.half_split_check` (strata: the set's easy half and hard half)."""
    from tqdm import tqdm  # noqa: PLC0415

    n = len(calibration["light_ok"])
    strata = np.arange(n) >= n // 2  # eval_prompts lists the easy prompts first, then as many hard ones
    per_share = [served_correct(calibration, float(h)) for h in tqdm(shares, desc="calibration surfaces")]
    out = {"step": ROUTER_SHARE_STEP, "heavy_share": [float(h) for h in shares]}
    for name, rule in tqdm(list(RULES.items()), desc="selection diagnostics"):
        pct = [np.percentile(bootstrap_choices(c, ok, rule, n_boot), [5, 50, 95]) for c, ok in per_share]
        out[name] = {"bootstrap_n": n_boot, "bootstrap_p5_p50_p95": [[float(v) for v in p] for p in pct],
                     "half_split": half_split_check(per_share, rule, strata, n_splits)}
    out["rule"] = choose_rule({name: out[name]["half_split"] for name in RULES})
    out["rule_chosen_by"] = ("zoo.router_share.choose_rule: fewest shares behind the better baseline on the "
                             f"calibration half splits, then mean margin, then preference ({RULE} first)")
    return out


def curves(evaluation: dict, calibration: dict, rule: str, shares=HEAVY_SHARES) -> dict:
    """The four fidelity curves on ``evaluation``, hybrid's split chosen on ``calibration`` by ``rule``.

    Each set is a dict of arrays ``light_ok``, ``heavy_ok`` (bool), ``router_score``, ``confidence``.
    """
    e = evaluation
    n = len(e["light_ok"])
    out = {"heavy_share": [float(h) for h in shares], "random": [], "discriminator": [], "router": [], "hybrid": [],
           "hybrid_router_share": [], "hybrid_minus_better_standard_error": []}

    def served(r: float, h: float) -> np.ndarray:
        return np.where(heavy_mask(e["router_score"], e["confidence"], r, split(h, r)), e["heavy_ok"], e["light_ok"])

    for h in shares:
        k = int(round(h * n))
        out["random"].append(float(((n - k) * e["light_ok"].mean() + k * e["heavy_ok"].mean()) / n))
        baselines = {name: served(r, float(h)) for name, r in (("discriminator", 0.0), ("router", float(h)))}
        r = best_router_share(calibration["light_ok"], calibration["heavy_ok"], calibration["router_score"],
                              calibration["confidence"], float(h), rule=rule)
        hybrid = served(r, float(h))
        for name, ok in (*baselines.items(), ("hybrid", hybrid)):
            out[name].append(float(ok.mean()))
        out["hybrid_router_share"].append(r)
        # the evaluation set's own noise in "hybrid - the better baseline": SE of the paired per-prompt difference
        better = max(baselines.values(), key=np.mean).astype(float)
        out["hybrid_minus_better_standard_error"].append(float((hybrid - better).std(ddof=1) / np.sqrt(n)))
    better = [max(d, r) for d, r in zip(out["discriminator"], out["router"])]
    out["hybrid_at_least_the_better_everywhere"] = all(hy >= b - 1e-12 for hy, b in zip(out["hybrid"], better))
    out["hybrid_strictly_better_at"] = [h for h, hy, b in zip(out["heavy_share"], out["hybrid"], better) if hy > b + 1e-12]
    return out


def routing_result(evaluation: dict, calibration: dict) -> dict:
    """The rule chosen on ``calibration`` (``router_share_selection``) and the curves it gives on
    ``evaluation``: one place ties the two, so hybrid never runs a rule this cascade did not choose."""
    selection = selection_diagnostics(calibration)
    return {"router_share_selection": selection, **curves(evaluation, calibration, rule=selection["rule"])}


CALIBRATION_SEED = 20251126  # configs/tiny.yaml's calibration.seed: what `make calibrate` would see


def routing_set(prompts: list[str], light: np.ndarray, heavy: np.ndarray, judge, disc, router) -> dict:
    """The arrays :func:`curves` takes, for one prompt set with its light and heavy images."""
    from zoo.sampling import disc_confidence  # noqa: PLC0415

    return {"light_ok": judge.fidelity(light, prompts), "heavy_ok": judge.fidelity(heavy, prompts),
            "router_score": router.score(prompts), "confidence": disc_confidence(disc, light)}


def plot(result: dict, path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("hybrid", "o-"), ("discriminator", "s-"), ("router", "^-"), ("random", "k--")):
        ax.plot(result["heavy_share"], np.array(result[key]) * 100, style, ms=3, label=key)
    ax.set(xlabel="share of queries served by heavy", ylabel="prompt fidelity of served images (%)",
           title="tiny cascade: routing policies (evaluation prompts)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def hybrid_report(out, weights, pipes: dict, judge, disc, evaluation: dict, calibration_per_difficulty: int,
                  cache=None, evaluation_prompts: dict | None = None) -> dict:
    """hybrid.json + hybrid.png under ``out``: the four curves on ``evaluation``, hybrid's router share
    chosen on ``calibration_per_difficulty`` x 2 calibration prompts (seed :data:`CALIBRATION_SEED`, the
    ``select`` split, like :func:`zoo.calibration.held_apart_prompts`)."""
    from pathlib import Path  # noqa: PLC0415

    from serving.router import load_router  # noqa: PLC0415
    from zoo.domain import eval_prompts  # noqa: PLC0415
    from zoo.sampling import cached_images  # noqa: PLC0415
    from zoo.train_discriminator import roc_auc  # noqa: PLC0415

    prompts = eval_prompts(CALIBRATION_SEED, calibration_per_difficulty, split="select")
    seeds = [CALIBRATION_SEED + i for i in range(len(prompts))]
    heavy, light = cached_images(pipes, prompts, seeds, weights, cache)
    calibration = routing_set(prompts, light, heavy, judge, disc, load_router(Path(weights) / "router"))
    result = {"evaluation_prompts": evaluation_prompts or {"n": len(evaluation["light_ok"])},
              "calibration_prompts": {"seed": CALIBRATION_SEED, "split": "select",
                                      "n_per_difficulty": calibration_per_difficulty},
              "router_auc_light_fails": {
                  "evaluation": roc_auc(evaluation["router_score"], ~evaluation["light_ok"]),
                  "calibration": roc_auc(calibration["router_score"], ~calibration["light_ok"])},
              "discriminator_auc_light_fails": roc_auc(-evaluation["confidence"], ~evaluation["light_ok"]),
              **routing_result(evaluation, calibration)}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "hybrid.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, Path(out) / "hybrid.png")
    print("heavy share  random  disc   router  hybrid (router share)")
    for row in zip(result["heavy_share"], result["random"], result["discriminator"], result["router"],
                   result["hybrid"], result["hybrid_router_share"]):
        print("{:4.2f}        {:.3f}   {:.3f}  {:.3f}   {:.3f}  ({:.2f})".format(*row))
    sel = result["router_share_selection"]
    for name in RULES:
        print(f"rule {name}: half-split check on calibration: {sel[name]['half_split']}")
    print(f"rule used (chosen on the calibration half splits): {sel['rule']}")
    print(f"hybrid >= the better of discriminator and router at every share: "
          f"{result['hybrid_at_least_the_better_everywhere']}; strictly better at {result['hybrid_strictly_better_at']}")
    return result


EVALUATION_PER_DIFFICULTY = 1000  # the committed hybrid.json: 2,000 evaluation prompts (steps of 1/2,000)
CALIBRATION_PER_DIFFICULTY = 500  # 1,000 calibration prompts (the half-split check in zoo/router_share.py)
IMAGE_CACHE_DIR = "runs/tiny"


def run(out, weights, pipes: dict, judge, disc, n_per_difficulty: int = EVALUATION_PER_DIFFICULTY,
        calibration_per_difficulty: int = CALIBRATION_PER_DIFFICULTY, cache_dir=IMAGE_CACHE_DIR) -> dict:
    """The routing-policy report on ``n_per_difficulty`` x 2 evaluation prompts (the report's seed and
    image seeds), images cached under ``cache_dir`` (keyed by the weight files, prompts and seeds)."""
    from pathlib import Path  # noqa: PLC0415

    from serving.router import load_router  # noqa: PLC0415
    from zoo.domain import eval_prompts  # noqa: PLC0415
    from zoo.sampling import PROMPT_SEED, cached_images  # noqa: PLC0415

    cache_dir = Path(cache_dir)
    prompts = eval_prompts(PROMPT_SEED, n_per_difficulty, split="eval")
    seeds = list(range(10_000, 10_000 + len(prompts)))  # the report's evaluation seeds
    heavy, light = cached_images(pipes, prompts, seeds, weights, cache_dir / f"report_images_{n_per_difficulty}.npz")
    evaluation = routing_set(prompts, light, heavy, judge, disc, load_router(Path(weights) / "router"))
    return hybrid_report(out, weights, pipes, judge, disc, evaluation, calibration_per_difficulty,
                         cache_dir / f"report_images_{calibration_per_difficulty}_calibration.npz",
                         {"seed": PROMPT_SEED, "split": "eval", "n_per_difficulty": n_per_difficulty})


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.hybrid``: only the routing-policy part of ``make tiny-report`` (same defaults, same caches)."""
    import argparse  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from export.discriminators import load_discriminator  # noqa: PLC0415
    from zoo.judge import load_judge  # noqa: PLC0415
    from zoo.sampling import WEIGHTS, load_pipeline  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny"))
    ap.add_argument("--n-per-difficulty", type=int, default=EVALUATION_PER_DIFFICULTY,
                    help="evaluation prompts per difficulty")
    ap.add_argument("--calibration-per-difficulty", type=int, default=CALIBRATION_PER_DIFFICULTY,
                    help="calibration prompts per difficulty on which hybrid picks its router share")
    ap.add_argument("--image-cache-dir", type=Path, default=Path(IMAGE_CACHE_DIR),
                    help="where generated images are cached (reused only when made from the same weight files)")
    a = ap.parse_args(argv)
    pipes = {k: load_pipeline(a.weights / k) for k in ("heavy", "light")}
    judge, disc = load_judge(a.weights / "judge"), load_discriminator(a.weights / "discriminator")
    run(a.out, a.weights, pipes, judge, disc, a.n_per_difficulty, a.calibration_per_difficulty, a.image_cache_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
