"""Pure statistics of the tiny-cascade report (``zoo.report``): intervals, bootstraps, overlap, a
numpy logistic regression and the routing margins. Numpy and the standard library only.

Interval conventions (recorded in ``report.json`` too):

- a share of successes (fidelity): Wilson score interval at 95 % (:func:`wilson_interval`);
- an AUC or an FID: percentile bootstrap, 2.5th and 97.5th percentile over ``n_boot`` resamples
  of the items with replacement (:func:`auc_with_interval`, :func:`fid_with_interval`); an FID
  also gets the bias-corrected (basic bootstrap) estimate and interval, see :func:`fid_with_interval`.
"""
from __future__ import annotations

from statistics import NormalDist
from collections.abc import Iterable, Sequence

import numpy as np

from zoo.metrics import fid, roc_auc

CONFIDENCE = 0.95
N_BOOT = 200
_PERCENTILES = (2.5, 97.5)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n`` (stays inside [0, 1] and
    is not degenerate at 0 or n successes, unlike the normal approximation)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n > 0, got {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def proportion(ok: np.ndarray) -> dict:
    """``{"n", "successes", "rate", "ci95"}`` of a bool array (Wilson interval); rate None when empty."""
    ok = np.asarray(ok, bool)
    if len(ok) == 0:
        return {"n": 0, "successes": 0, "rate": None, "ci95": None}
    k = int(ok.sum())
    return {"n": len(ok), "successes": k, "rate": k / len(ok), "ci95": list(wilson_interval(k, len(ok)))}


def _percentile_interval(values: Sequence[float]) -> list[float]:
    return [float(v) for v in np.percentile(np.asarray(values, np.float64), _PERCENTILES)]


def auc_with_interval(scores: np.ndarray, labels: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """ROC AUC of ``scores`` for bool ``labels`` and its percentile-bootstrap 95 % interval.

    Resamples missing a class are skipped (``n_boot_used`` says how many counted). When the items
    hold one class only, ``auc`` is None with a ``note`` saying why.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    n_pos = int(labels.sum())
    out = {"n": len(labels), "n_positive": n_pos}
    if n_pos in (0, len(labels)):
        return {**out, "auc": None, "ci95": None, "note": "one class only: AUC undefined"}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        if 0 < labels[idx].sum() < len(idx):
            boots.append(roc_auc(scores[idx], labels[idx]))
    return {**out, "auc": roc_auc(scores, labels), "ci95": _percentile_interval(boots) if boots else None,
            "n_boot_used": len(boots)}


def fid_with_interval(generated: np.ndarray, reference: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """FID of two feature sets with bootstrap intervals: each resample draws the generated AND the
    reference rows with replacement, independently.

    A sample FID is biased up (by roughly c / n: sample covariances are noisy), and a resample is
    biased up by about as much again (duplicated rows), so the percentile interval ``ci95`` of the
    resampled FIDs can lie wholly above the point estimate ``fid``: at n = 2,000, 128-d Gaussians
    of one distribution give ``fid`` ~31 and ``ci95`` ~[58, 62]. The bootstrap's own shift,
    mean(resampled) - ``fid``, estimates that bias, so ``fid_bias_corrected`` = 2 ``fid`` -
    mean(resampled) and ``ci95_bias_corrected`` = [2 ``fid`` - q97.5, 2 ``fid`` - q2.5] (the basic
    bootstrap interval, lower end clipped at 0 as an FID is >= 0) estimate the FID of the
    distributions themselves (~0 and ~[0, 3] in that example).
    """
    generated, reference = np.asarray(generated), np.asarray(reference)
    rng = np.random.default_rng(seed)
    boots = np.array([fid(generated[rng.integers(0, len(generated), len(generated))],
                          reference[rng.integers(0, len(reference), len(reference))]) for _ in range(n_boot)])
    point = fid(generated, reference)
    low, high = _percentile_interval(boots)
    return {"fid": point, "ci95": [low, high], "bootstrap_median": float(np.median(boots)),
            "fid_bias_corrected": float(max(0.0, 2 * point - boots.mean())),
            "ci95_bias_corrected": [float(max(0.0, 2 * point - high)), float(max(0.0, 2 * point - low))],
            "n_generated": len(generated), "n_reference": len(reference), "n_boot": n_boot}


def caption_overlap(reference: Iterable[str], stream: Sequence[str]) -> dict:
    """How many distinct items of ``reference`` (captions, or composition keys) occur in ``stream``.

    Returns ``stream_items`` (with repeats), ``stream_distinct``, ``reference_distinct`` and
    ``reference_in_stream`` (distinct reference items found in the stream).
    """
    ref, seen = set(reference), set(stream)
    return {"stream_items": len(stream), "stream_distinct": len(seen), "reference_distinct": len(ref),
            "reference_in_stream": len(ref & seen)}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-8) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method: (weights (D,), bias). The bias is not
    penalised; ``l2`` > 0 keeps the weights finite on separable data."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) < 2:
        raise ValueError(f"fit_logistic needs x (N, D) and y (N,) with N >= 2, got {x.shape} and {y.shape}")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2!r}")
    design = np.hstack([x, np.ones((len(x), 1))])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = _sigmoid(design @ w)
        grad = design.T @ (p - y) + penalty * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < tol:
            break
    return w[:-1], float(w[-1])


def logistic_score(x: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """P(y = 1) of the fitted model for rows of ``x``."""
    return _sigmoid(np.asarray(x, np.float64) @ weights + bias)


def margins_over_random(curves: dict, low: float = 0.10, high: float = 0.90) -> dict:
    """Discriminator minus random fidelity at every share in [low, high] of a cascade curve
    (:func:`zoo.metrics.cascade_curves`), and whether it is strictly positive at every one."""
    rows = [(s, d - r) for s, d, r in zip(curves["share"], curves["discriminator"], curves["random"])
            if low - 1e-9 <= s <= high + 1e-9]
    return {"share": [float(s) for s, _ in rows], "margin": [float(m) for _, m in rows],
            "beats_random_everywhere": bool(rows) and all(m > 0 for _, m in rows)}


def timing_summary(times_ms: Sequence[float]) -> dict:
    """Median, quartiles, IQR, min and max of wall times in ms."""
    t = np.asarray(times_ms, np.float64)
    if len(t) == 0:
        raise ValueError("timing_summary needs at least one time")
    q1, median, q3 = np.percentile(t, [25, 50, 75])
    return {"n": len(t), "median_ms": float(median), "q1_ms": float(q1), "q3_ms": float(q3),
            "iqr_ms": float(q3 - q1), "min_ms": float(t.min()), "max_ms": float(t.max())}

