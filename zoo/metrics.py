"""Quality metrics of the tiny cascade: in-domain FID (the Frechet distance between Gaussians
fitted to two feature sets), ROC AUC and the cascade curve of discriminator vs random routing."""
from __future__ import annotations

import numpy as np

# Deferred shares at which the cascade curves are evaluated: 0, 5 %, ..., 100 %.
SHARES = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between N(mu_a, S_a) and N(mu_b, S_b) fitted to (N, D) feature arrays.

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`` (symmetric PSD square roots,
    numerically stable). Raises ValueError on mismatched dimensions or fewer than 2 rows.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 feature rows per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(s_a)
    cross = _sqrtm_psd(root_a @ s_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(cross))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count half).

    The Mann-Whitney statistic from average ranks, vectorised (the report bootstraps it hundreds of
    times). Raises ValueError when a class is missing.
    """
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positives and {n_neg} negatives")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank, averaged over each tie group
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cascade_curves(light_ok: np.ndarray, heavy_ok: np.ndarray, confidence: np.ndarray) -> dict:
    """Fidelity vs deferred share for discriminator and random routing.

    Discriminator routing defers the ``round(share * N)`` light images of lowest confidence;
    random routing's value is its exact expectation over which queries are deferred.
    Returns lists keyed ``share``, ``discriminator``, ``random`` (fractions in [0, 1]).
    """
    n = len(light_ok)
    order = np.argsort(confidence, kind="mergesort")  # least confident first
    disc, rand = [], []
    for s in SHARES:
        k = int(round(s * n))
        served = light_ok.astype(float).copy()
        served[order[:k]] = heavy_ok[order[:k]]
        disc.append(float(served.mean()))
        rand.append(float(((n - k) * light_ok.mean() + k * heavy_ok.mean()) / n))
    return {"share": SHARES.tolist(), "discriminator": disc, "random": rand}
