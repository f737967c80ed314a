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

import numpy as np

HEAVY_SHARES = np.round(np.arange(0.10, 0.9001, 0.05), 2)
ROUTER_SHARE_STEP = 0.05


def heavy_mask(router_score: np.ndarray, confidence: np.ndarray, router_share: float, disc_share: float) -> np.ndarray:
    """bool (N,): True for queries served by heavy under router share r and discriminator share d.

    The ``round(r N)`` highest router scores go to heavy; of the others, the ``round(d M)`` lowest
    discriminator confidences (M = the number not routed) are deferred. Ties keep input order.
    """
    n = len(router_score)
    if len(confidence) != n:
        raise ValueError(f"{n} router scores but {len(confidence)} confidences; expected one of each per query")
    if not (0.0 <= router_share <= 1.0 and 0.0 <= disc_share <= 1.0):
        raise ValueError(f"router_share={router_share}, disc_share={disc_share}; expected both in [0, 1]")
    heavy = np.zeros(n, bool)
    routed = np.argsort(-np.asarray(router_score), kind="mergesort")[: int(round(router_share * n))]
    heavy[routed] = True
    rest = np.flatnonzero(~heavy)
    deferred = rest[np.argsort(np.asarray(confidence)[rest], kind="mergesort")[: int(round(disc_share * len(rest)))]]
    heavy[deferred] = True
    return heavy


def split(heavy_share: float, router_share: float) -> float:
    """The discriminator share d that makes r + (1 - r) d = h (0 when r >= h)."""
    if router_share >= heavy_share:
        return 0.0
    return (heavy_share - router_share) / (1.0 - router_share)


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


def routing_set(prompts: list[str], light: np.ndarray, heavy: np.ndarray, judge, disc_confidence, router) -> dict:
    """The arrays :func:`curves` takes, for one prompt set with its light and heavy images."""
    return {"light_ok": judge.fidelity(light, prompts), "heavy_ok": judge.fidelity(heavy, prompts),
            "router_score": router.score(prompts), "confidence": disc_confidence(light)}


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
