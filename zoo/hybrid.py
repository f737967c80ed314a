"""Hybrid routing on the tiny cascade: random, discriminator-only, router-only and hybrid (``make tiny-report``).

At a heavy share h (the share of queries that end on the heavy model):

- random: h of the queries, drawn at random (exact expectation);
- discriminator-only (DiffServe): every query runs light; the h least confident light images
  are re-run on heavy;
- router-only: the h prompts with the highest router score go straight to heavy;
- hybrid (HADIS): the router sends a share r straight to heavy and the discriminator defers a
  share d of the rest, with r + (1 - r) d = h. The split r is chosen per h on a CALIBRATION
  prompt set (as ``make calibrate`` and the planner would) and then evaluated on the report's
  EVALUATION prompts, so hybrid is not better than the others by construction.

Quality = prompt fidelity (the judge finds exactly the prompt's objects) of the served set.
"""
from __future__ import annotations

import json

import numpy as np

from export.hybrid_calibration import heavy_mask, split  # one implementation, shared with make calibrate

HEAVY_SHARES = np.round(np.arange(0.10, 0.9001, 0.05), 2)
ROUTER_SHARE_STEP = 0.05


def fidelity(light_ok: np.ndarray, heavy_ok: np.ndarray, heavy: np.ndarray) -> float:
    return float(np.where(heavy, heavy_ok, light_ok).mean())


def best_router_share(light_ok: np.ndarray, heavy_ok: np.ndarray, router_score: np.ndarray, confidence: np.ndarray,
                      heavy_share: float, step: float = ROUTER_SHARE_STEP) -> float:
    """The router share r in {0, step, ..., h} with the best fidelity at heavy share h on this set (ties: smaller r)."""
    candidates = np.round(np.arange(0.0, heavy_share + 1e-9, step), 4)
    scores = [fidelity(light_ok, heavy_ok, heavy_mask(router_score, confidence, r, split(heavy_share, r)))
              for r in candidates]
    return float(candidates[int(np.argmax(scores))])


def curves(evaluation: dict, calibration: dict, shares=HEAVY_SHARES) -> dict:
    """The four fidelity curves on ``evaluation``, hybrid's split chosen on ``calibration``.

    Each set is a dict of arrays ``light_ok``, ``heavy_ok`` (bool), ``router_score``, ``confidence``.
    """
    e = evaluation
    n = len(e["light_ok"])
    out = {"heavy_share": [float(h) for h in shares], "random": [], "discriminator": [], "router": [], "hybrid": [],
           "hybrid_router_share": []}
    for h in shares:
        k = int(round(h * n))
        out["random"].append(float(((n - k) * e["light_ok"].mean() + k * e["heavy_ok"].mean()) / n))
        for name, r in (("discriminator", 0.0), ("router", float(h))):
            out[name].append(fidelity(e["light_ok"], e["heavy_ok"],
                                      heavy_mask(e["router_score"], e["confidence"], r, split(h, r))))
        r = best_router_share(calibration["light_ok"], calibration["heavy_ok"], calibration["router_score"],
                              calibration["confidence"], float(h))
        out["hybrid_router_share"].append(r)
        out["hybrid"].append(fidelity(e["light_ok"], e["heavy_ok"],
                                      heavy_mask(e["router_score"], e["confidence"], r, split(h, r))))
    better = [max(d, r) for d, r in zip(out["discriminator"], out["router"])]
    out["hybrid_at_least_the_better_everywhere"] = all(hy >= b - 1e-12 for hy, b in zip(out["hybrid"], better))
    out["hybrid_strictly_better_at"] = [h for h, hy, b in zip(out["heavy_share"], out["hybrid"], better) if hy > b + 1e-12]
    return out


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
    chosen on ``calibration_per_difficulty`` x 2 calibration prompts (seed :data:`CALIBRATION_SEED`)."""
    from pathlib import Path  # noqa: PLC0415

    from serving.router import load_router  # noqa: PLC0415
    from zoo.domain import eval_prompts  # noqa: PLC0415
    from zoo.sampling import cached_images  # noqa: PLC0415
    from zoo.train_discriminator import roc_auc  # noqa: PLC0415

    prompts = eval_prompts(CALIBRATION_SEED, calibration_per_difficulty)
    seeds = [CALIBRATION_SEED + i for i in range(len(prompts))]
    heavy, light = cached_images(pipes, prompts, seeds, weights, cache)
    calibration = routing_set(prompts, light, heavy, judge, disc, load_router(Path(weights) / "router"))
    result = {"evaluation_prompts": evaluation_prompts or {"n": len(evaluation["light_ok"])},
              "calibration_prompts": {"seed": CALIBRATION_SEED, "n_per_difficulty": calibration_per_difficulty},
              "router_auc_light_fails": {
                  "evaluation": roc_auc(evaluation["router_score"], ~evaluation["light_ok"]),
                  "calibration": roc_auc(calibration["router_score"], ~calibration["light_ok"])},
              "discriminator_auc_light_fails": roc_auc(-evaluation["confidence"], ~evaluation["light_ok"]),
              **curves(evaluation, calibration)}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "hybrid.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, Path(out) / "hybrid.png")
    print("heavy share  random  disc   router  hybrid (router share)")
    for row in zip(result["heavy_share"], result["random"], result["discriminator"], result["router"],
                   result["hybrid"], result["hybrid_router_share"]):
        print("{:4.2f}        {:.3f}   {:.3f}  {:.3f}   {:.3f}  ({:.2f})".format(*row))
    print(f"hybrid >= the better of discriminator and router at every share: "
          f"{result['hybrid_at_least_the_better_everywhere']}; strictly better at {result['hybrid_strictly_better_at']}")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.hybrid``: only the routing-policy part of ``make tiny-report`` (same prompts, same caches)."""
    import argparse  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from export.discriminators import load_discriminator  # noqa: PLC0415
    from serving.router import load_router  # noqa: PLC0415
    from zoo.domain import eval_prompts  # noqa: PLC0415
    from zoo.judge import load_judge  # noqa: PLC0415
    from zoo.sampling import PROMPT_SEED, WEIGHTS, cached_images, load_pipeline  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny"))
    ap.add_argument("--n-per-difficulty", type=int, default=250, help="evaluation prompts per difficulty")
    ap.add_argument("--calibration-per-difficulty", type=int, default=500)
    ap.add_argument("--image-cache", type=Path, default=Path("runs/tiny/report_images.npz"))
    a = ap.parse_args(argv)
    pipes = {k: load_pipeline(a.weights / k) for k in ("heavy", "light")}
    judge, disc = load_judge(a.weights / "judge"), load_discriminator(a.weights / "discriminator")
    prompts = eval_prompts(PROMPT_SEED, a.n_per_difficulty)
    seeds = list(range(10_000, 10_000 + len(prompts)))  # the report's evaluation seeds
    heavy, light = cached_images(pipes, prompts, seeds, a.weights, a.image_cache)
    evaluation = routing_set(prompts, light, heavy, judge, disc, load_router(a.weights / "router"))
    hybrid_report(a.out, a.weights, pipes, judge, disc, evaluation, a.calibration_per_difficulty,
                  a.image_cache.with_name(a.image_cache.stem + "_calibration.npz"),
                  {"seed": PROMPT_SEED, "n_per_difficulty": a.n_per_difficulty})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
