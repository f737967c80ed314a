"""Loader of the HADIS reference data (``benchmarks/data/hadis/``; the README there credits the
source and gives every file's semantics) -> planner types: four model variants, the measured
hybrid surfaces of their six pairs, per-pair f(t) and cascade curves, and the prompt router.

- Profiles: the artifact has no measured batch profile; its controller's rule is batch ``b``
  latency = ``base x b`` for ``b = 1`` and ``base x b x 0.9`` for ``b > 1``, ``b`` in 1..32,
  with base 0.5, 1.3, 13 and 27 s (:data:`BASE_LATENCY_MS`); ``latency_factor`` scales them
  (the artifact also ran a 10x-faster ablation).
- Router: features z-normalised over the 5,000 prompts (mean, std with ddof 1, as pandas), score
  = features . :data:`ROUTER_WEIGHTS`; at router share r a prompt goes to heavy when its score is
  >= the (1 - r) quantile of the scores (:func:`router_curve`).
- Discriminator: a prompt's confidence in model i's image is the mean P(real) over its 4 rows of
  ``discriminator_scores_model<i>.txt.gz``; light-served when confidence >= t.
- Surfaces: ``quality_hybrid_4models.csv`` (11 x 11 per pair). The threshold t at (r, d) is
  calibrated on the 5,000 prompts: of the prompts the router keeps at r, the ``round(d M)``
  least confident are below t (:func:`disc_thresholds`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from planner.data import read_csv
from planner.types import DeferralCurve, HybridSurface, ModelProfile, QualityCurve, RouterCurve

HADIS_DIR = Path(os.environ.get("HADIS_ARTIFACT", Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "hadis"))
MODEL_NAMES = ("sdxl-lightning", "sd35-large-turbo", "sd35-medium", "sd35-large")
BASE_LATENCY_MS = (500.0, 1300.0, 13000.0, 27000.0)
BATCH_SIZES = tuple(range(1, 33))
SLO_MS = 6000.0
FEATURES = ("prompt_length", "token_rarity", "num_objects", "abstractness", "attribute_density",
            "spatial_relations", "action_verbs", "named_entities")
ROUTER_WEIGHTS = (0.85, 0.32, 0.72, 0.99, 0.76, 0.07, 0.78, 0.01)
IMAGES_PER_PROMPT = 4
DEFERRAL_STEP = 0.01  # f(t) of the cascade-only policies: one threshold per 1 % of prompts deferred
Pair = tuple[str, str]


def hadis_profile(name: str, base_ms: float, rank: int, latency_factor: float = 1.0) -> ModelProfile:
    """The artifact's batch rule: ``base`` at batch 1, ``base x b x 0.9`` above, batches 1..32."""
    base = base_ms * latency_factor
    return ModelProfile(name, {b: base if b == 1 else base * b * 0.9 for b in BATCH_SIZES}, rank)


def router_scores(path: Path) -> np.ndarray:
    """float64 (prompts,): the artifact's linear router score of each prompt (row i = prompt id i)."""
    rows = read_csv(path, FEATURES)
    try:
        x = np.array([[float(r[f]) for f in FEATURES] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: a feature is not a number ({exc})") from None
    std = x.std(axis=0, ddof=1)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return z @ np.asarray(ROUTER_WEIGHTS)


def router_curve(scores: np.ndarray, shares: tuple[float, ...]) -> RouterCurve:
    """Score threshold per router share: the (1 - r) quantile of ``scores`` (linear, as pandas)."""
    return RouterCurve(tuple(float(r) for r in shares), tuple(float(np.quantile(scores, 1.0 - r)) for r in shares))


def routed_mask(scores: np.ndarray, curve: RouterCurve, share: float) -> np.ndarray:
    """bool: the prompts the router sends to heavy at ``share`` (score >= the curve's threshold)."""
    threshold = curve.threshold_for(share)
    return np.zeros(len(scores), bool) if threshold is None else scores >= threshold


def load_confidence(path: Path) -> np.ndarray:
    """float64 (prompts,): mean P(real) (second column) over each prompt's 4 rows."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if raw.shape[1] != 2 or raw.shape[0] % IMAGES_PER_PROMPT:
        raise ValueError(f"{path}: {raw.shape} values; expected rows 'P(fake) P(real)', {IMAGES_PER_PROMPT} per prompt")
    return raw[:, 1].reshape(-1, IMAGES_PER_PROMPT).mean(axis=1)


def disc_thresholds(confidence: np.ndarray, scores: np.ndarray, curve: RouterCurve, router_share: tuple[float, ...],
                    disc_share: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """``t[i][j]``: of the prompts kept at ``router_share[i]``, the ``round(d_j M)`` least confident
    are below t (t = the next confidence up; 1.0 when all are deferred, 0.0 when none)."""
    table = []
    for r in router_share:
        kept = np.sort(confidence[~routed_mask(scores, curve, r)])
        row = []
        for d in disc_share:
            k = int(round(d * len(kept)))
            row.append(0.0 if k == 0 or not len(kept) else 1.0 if k >= len(kept) else float(kept[k]))
        table.append(tuple(row))
    return tuple(table)


@dataclasses.dataclass(frozen=True, eq=False)
class HadisData:
    """The HADIS setting as the planner and the simulator read it (see the module docstring).

    ``confidence[name]``: per prompt id, the discriminator's confidence in that model's image;
    ``router_score``: per prompt id; ``pair_curves``: per pair (f(t) from the light model's
    confidences, :func:`quantile_deferral`; cascade FID vs light share from ``quality_cascade_4models.csv``).
    """

    models: tuple[ModelProfile, ...]
    slo_ms: float
    surfaces: Mapping[Pair, HybridSurface]
    pair_curves: Mapping[Pair, tuple[DeferralCurve, QualityCurve]]
    router: RouterCurve
    router_score: np.ndarray
    confidence: Mapping[str, np.ndarray]
    traces_dir: Path


def _pair_of(path: Path, row: dict[str, str]) -> Pair:
    try:
        return MODEL_NAMES[int(row["light_model"])], MODEL_NAMES[int(row["heavy_model"])]
    except (ValueError, IndexError):
        raise ValueError(f"{path}: model indices {row['light_model']!r}, {row['heavy_model']!r}; "
                         f"expected 0..{len(MODEL_NAMES) - 1}") from None


def load_surfaces(path: Path, confidence: Mapping[str, np.ndarray], scores: np.ndarray
                  ) -> tuple[dict[Pair, HybridSurface], RouterCurve]:
    """Every pair's 11 x 11 surface (thresholds calibrated, :func:`disc_thresholds`) and the router curve."""
    by_pair: dict[Pair, dict[tuple[float, float], float]] = {}
    for row in read_csv(path, ("light_model", "heavy_model", "router_ratio", "disc_ratio", "fid")):
        by_pair.setdefault(_pair_of(path, row), {})[(round(float(row["router_ratio"]), 6),
                                                     round(float(row["disc_ratio"]), 6))] = float(row["fid"])
    surfaces, curve = {}, None
    for pair, cells in by_pair.items():
        rs, ds = tuple(sorted({k[0] for k in cells})), tuple(sorted({k[1] for k in cells}))
        if len(cells) != len(rs) * len(ds):
            raise ValueError(f"{path}: pair {pair} has {len(cells)} cells; expected a full {len(rs)} x {len(ds)} grid")
        curve = curve or router_curve(scores, rs)
        surfaces[pair] = HybridSurface(rs, ds, tuple(tuple(cells[(r, d)] for d in ds) for r in rs),
                                       disc_thresholds(confidence[pair[0]], scores, curve, rs, ds))
    if curve is None:
        raise ValueError(f"{path}: no rows")
    return surfaces, curve


def quantile_deferral(confidence: np.ndarray, step: float = DEFERRAL_STEP) -> DeferralCurve:
    """f(t) at the thresholds that defer 0, step, 2 step, ..., 1 of the prompts (as
    :func:`disc_thresholds` at r = 0; f is the share below each t, exactly). The confidences sit
    within 0.01 of 0 for most prompts (median 2e-4 for SDXL-Lightning), so an evenly spaced t
    grid would jump from f = 0 to f = 0.93 in one step; a grid in deferral shares does not."""
    shares = tuple(round(k * step, 9) for k in range(int(round(1.0 / step)) + 1))
    ts = sorted(set(disc_thresholds(confidence, np.zeros(len(confidence)), router_curve(np.zeros(2), (0.0, 1.0)),
                                    (0.0,), shares)[0]))
    return DeferralCurve(tuple(ts), tuple(float(np.mean(confidence < t)) for t in ts))


def load_cascade_curves(path: Path, confidence: Mapping[str, np.ndarray]) -> dict[Pair, tuple[DeferralCurve, QualityCurve]]:
    """Per pair: f(t) of the light model's confidences (:func:`quantile_deferral`) and FID vs
    light share without a router (``quality_cascade_4models.csv``, interpolated between its points)."""
    points: dict[Pair, list[tuple[float, float]]] = {}
    for row in read_csv(path, ("light_model", "heavy_model", "threshold", "fid")):
        points.setdefault(_pair_of(path, row), []).append((1.0 - float(row["threshold"]), float(row["fid"])))
    out = {}
    for pair, pts in points.items():
        pts = sorted((round(x, 9), y) for x, y in pts)
        out[pair] = (quantile_deferral(confidence[pair[0]]), QualityCurve(tuple(p[0] for p in pts), tuple(p[1] for p in pts)))
    return out


def load_hadis(path: str | Path | None = None, latency_factor: float = 1.0) -> HadisData:
    """The HADIS setting from ``path`` (default :data:`HADIS_DIR`); ValueError naming a bad file."""
    d = Path(path) if path is not None else HADIS_DIR
    if not latency_factor > 0:
        raise ValueError(f"latency_factor = {latency_factor}; expected > 0")
    models = tuple(hadis_profile(n, ms, i, latency_factor) for i, (n, ms) in enumerate(zip(MODEL_NAMES, BASE_LATENCY_MS)))
    confidence = {n: load_confidence(d / f"discriminator_scores_model{i}.txt.gz") for i, n in enumerate(MODEL_NAMES)}
    scores = router_scores(d / "prompt_features.csv")
    if any(len(c) != len(scores) for c in confidence.values()):
        raise ValueError(f"{d}: {len(scores)} prompts with features but {[len(c) for c in confidence.values()]} "
                         "with discriminator scores; expected the same prompts")
    surfaces, curve = load_surfaces(d / "quality_hybrid_4models.csv", confidence, scores)
    return HadisData(models=models, slo_ms=SLO_MS, surfaces=surfaces,
                     pair_curves=load_cascade_curves(d / "quality_cascade_4models.csv", confidence), router=curve,
                     router_score=scores, confidence=confidence, traces_dir=d / "traces")
