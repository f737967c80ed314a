"""``make calibrate`` for a cascade with a prompt router: the router curve and the 2-D hybrid surface.

HADIS (arXiv 2509.00642) puts a prompt router in front of the cascade: a router share r of ALL
queries (the highest router scores) goes straight to heavy, skipping light and the
discriminator; the discriminator defers a share d of the REST (the lowest light-image
confidences). The heavy model serves ``r + (1 - r) d``. From the calibration prompts' light and
heavy images, router scores and light-image confidences this module writes:

- ``router_curve.csv`` (``routed_share,score_threshold``): the router score threshold that sends
  a share of the prompts to heavy (score >= threshold, as the cascade routes). Threshold at
  share r = the lowest score among the ``round(r N)`` highest, so exactly that many prompts are
  at or above it (ties aside); at share 0, the next float above the highest score (none is).
  Non-increasing in the share, as :class:`planner.types.RouterCurve` requires.
- ``hybrid_surface.json``: on the grid router share x discriminator share (0, 0.1, ..., 1 each)
  the config's quality metric (FID: lower is better) of the served set, the heavy share
  ``r + (1 - r) d`` and the discriminator threshold t per cell (defer when confidence < t) that
  defers share d of the prompts the router keeps at r (:class:`planner.types.HybridSurface`).

:func:`heavy_mask` and :func:`split` are the one implementation of the hybrid split; the tiny
cascade's report (``zoo.hybrid``) imports them from here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

ROUTER_SHARES = tuple(round(0.1 * i, 1) for i in range(11))
DISC_SHARES = tuple(round(0.1 * i, 1) for i in range(11))
ROUTER_CURVE_SHARES = tuple(round(0.05 * i, 2) for i in range(21))  # finer than the surface: live shares in between
ROUTER_CURVE_CSV = "router_curve.csv"
HYBRID_SURFACE_JSON = "hybrid_surface.json"


def _routed(router_score: np.ndarray, router_share: float) -> np.ndarray:
    """Indices of the ``round(r N)`` highest router scores (ties keep input order)."""
    return np.argsort(-np.asarray(router_score), kind="mergesort")[: int(round(router_share * len(router_score)))]


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
    heavy[_routed(router_score, router_share)] = True
    rest = np.flatnonzero(~heavy)
    deferred = rest[np.argsort(np.asarray(confidence)[rest], kind="mergesort")[: int(round(disc_share * len(rest)))]]
    heavy[deferred] = True
    return heavy


def split(heavy_share: float, router_share: float) -> float:
    """The discriminator share d that makes r + (1 - r) d = h (0 when r >= h)."""
    if router_share >= heavy_share:
        return 0.0
    return (heavy_share - router_share) / (1.0 - router_share)


def _scores(router_score: np.ndarray) -> np.ndarray:
    s = np.asarray(router_score, np.float64)
    if s.ndim != 1 or len(s) == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"router scores of shape {s.shape}; expected a non-empty 1-D array of finite numbers")
    return s


def router_curve(router_score: np.ndarray, shares: Sequence[float] = ROUTER_CURVE_SHARES) -> list[tuple[float, float]]:
    """[(routed share, score threshold)]: at share r, the lowest of the ``round(r N)`` highest scores
    (share 0: the next float above the highest score). Thresholds are non-increasing in r."""
    s = _scores(router_score)
    desc = np.sort(s)[::-1]
    out = []
    for r in shares:
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"router share {r}; expected a fraction in [0, 1]")
        k = int(round(r * len(s)))
        out.append((float(r), float(np.nextafter(desc[0], np.inf)) if k == 0 else float(desc[k - 1])))
    return out


def disc_thresholds(router_score: np.ndarray, confidence: np.ndarray, router_shares: Sequence[float] = ROUTER_SHARES,
                    disc_shares: Sequence[float] = DISC_SHARES) -> list[list[float]]:
    """``t[i][j]``: of the prompts kept at ``router_shares[i]`` (M of them), the ``round(d_j M)``
    least confident are below t: t = the next confidence up; 0.0 when none is deferred, 1.0 when
    all are. Non-decreasing along each row."""
    s, c = _scores(router_score), np.asarray(confidence, np.float64)
    if c.shape != s.shape or np.any((c < 0) | (c > 1)) or not np.all(np.isfinite(c)):
        raise ValueError(f"confidences of shape {c.shape} for {len(s)} router scores; expected one P(real) in [0, 1] each")
    table = []
    for r in router_shares:
        kept_mask = np.ones(len(s), bool)
        kept_mask[_routed(s, r)] = False
        kept = np.sort(c[kept_mask])
        row = []
        for d in disc_shares:
            k = int(round(d * len(kept)))
            row.append(0.0 if k == 0 or not len(kept) else 1.0 if k >= len(kept) else float(kept[k]))
        table.append(row)
    return table


def hybrid_surface(light_images: np.ndarray, heavy_images: np.ndarray, router_score: np.ndarray,
                   confidence: np.ndarray, score: Callable[[np.ndarray], float],
                   router_shares: Sequence[float] = ROUTER_SHARES, disc_shares: Sequence[float] = DISC_SHARES) -> dict:
    """The surface as written to ``hybrid_surface.json``: ``fid[i][j]`` = ``score`` of the served set
    (heavy's image where :func:`heavy_mask` says heavy, light's elsewhere) at (r_i, d_j), plus the
    heavy share and the discriminator threshold per cell."""
    if light_images.shape != heavy_images.shape or len(light_images) != len(router_score):
        raise ValueError(f"light {light_images.shape}, heavy {heavy_images.shape}, {len(router_score)} router scores: "
                         "expected equal image shapes and one router score per image")
    cells = [(r, d) for r in router_shares for d in disc_shares]
    fid = np.zeros((len(router_shares), len(disc_shares)))
    for n, (r, d) in enumerate(tqdm(cells, desc="calibrate: hybrid surface", unit="cell")):
        mask = heavy_mask(router_score, confidence, r, d)
        mixed = np.where(mask[:, None, None, None], heavy_images, light_images)
        fid[n // len(disc_shares), n % len(disc_shares)] = float(score(mixed))
    return {"router_share": [float(r) for r in router_shares], "disc_share": [float(d) for d in disc_shares],
            "fid": fid.tolist(),
            "heavy_share": [[round(r + (1.0 - r) * d, 6) for d in disc_shares] for r in router_shares],
            "disc_threshold": disc_thresholds(router_score, confidence, router_shares, disc_shares)}


def write_router_curve(path: str | Path, rows: Sequence[tuple[float, float]]) -> Path:
    path = Path(path)
    # repr: the float64 exactly (share 0's threshold is the next float above the highest score, which
    # 9 digits round back onto that score), as confidences.csv writes the scores
    path.write_text("routed_share,score_threshold\n" + "".join(f"{r:g},{float(t)!r}\n" for r, t in rows))
    return path


def calibrate_hybrid(out: str | Path, light_images: np.ndarray, heavy_images: np.ndarray, router_score: np.ndarray,
                     confidence: np.ndarray, score: Callable[[np.ndarray], float] | None, metric: str,
                     meta: dict) -> list[Path]:
    """Write ``router_curve.csv`` and (with a quality ``score``) ``hybrid_surface.json`` under ``out``;
    returns the paths written. Without a score the surface is skipped with a message saying why."""
    out = Path(out)
    written = [write_router_curve(out / ROUTER_CURVE_CSV, router_curve(router_score))]
    if score is None:
        print(f"calibrate: hybrid surface SKIPPED: {metric}")
        return written
    surface = hybrid_surface(light_images, heavy_images, router_score, confidence, score)
    path = out / HYBRID_SURFACE_JSON
    path.write_text(json.dumps({
        "stages": "router -> light -> heavy", "metric": metric,
        "routing": "router share r of all prompts (highest router score) straight to heavy; discriminator share d "
                   "of the rest (lowest light-image confidence) deferred to heavy",
        **surface, **meta}, indent=1))
    return written + [path]
