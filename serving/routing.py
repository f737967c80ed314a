"""Pure decisions of the cascade model: routing, deferral, load shedding.

No Triton imports: ``cascade_model.py`` is the thin adapter that feeds these functions what it
reads from requests (validated by :mod:`serving.validation`), the control state and its own
latency observations.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from serving.control import ControlState
from serving.validation import REQUEST_ROUTES, RequestOptions

STAGE_NAMES = ("light", "discriminator", "heavy")


def choose_route(options: RequestOptions, policy: ControlState, uniform01: float,
                 router_score: float | None = None) -> str:
    """``cascade``, ``light`` or ``heavy`` for one query.

    A per-request ``routing`` wins; otherwise the control file's policy, where ``random`` sends
    the query to heavy with probability ``heavy_share`` (``uniform01`` is a U[0, 1) draw,
    passed in so that this stays deterministic under test), and ``cascade`` sends a prompt whose
    ``router_score`` is at or above the policy's ``router_threshold`` straight to heavy (the
    prompt router; no threshold or no score: the query cascades).
    """
    if options.routing is not None:
        return options.routing
    if policy.routing == "random":
        return "heavy" if uniform01 < policy.heavy_share else "light"
    if policy.routing == "cascade" and router_routes(router_score, policy):
        return "heavy"
    return policy.routing


def router_routes(router_score: float | None, policy: ControlState) -> bool:
    """Whether the prompt router sends a prompt with ``router_score`` straight to heavy."""
    return policy.router_threshold is not None and router_score is not None and router_score >= policy.router_threshold


def defer_mask(confidence: Sequence[float] | np.ndarray, threshold: float) -> np.ndarray:
    """True where the light image goes to heavy: confidence strictly below ``threshold``."""
    return np.asarray(confidence, dtype=np.float32) < np.float32(threshold)


def ewma(previous: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first sample initialises it."""
    return float(sample) if previous is None else float(alpha * sample + (1.0 - alpha) * previous)


@dataclasses.dataclass(frozen=True)
class StageEstimates:
    """What the cascade has observed so far (EWMA), per stage.

    ``batch_ms``: round-trip ms of one stage call (its queueing included, so conservative);
    ``batch_items``: queries per call, so ``batch_ms / batch_items`` is ms per query;
    ``defer_rate``: fraction of cascade queries deferred to heavy. Missing stage = unobserved.
    """

    batch_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    batch_items: Mapping[str, float] = dataclasses.field(default_factory=dict)
    defer_rate: float = 0.0


def stage_path(route: str, defer_rate: float) -> dict[str, float]:
    """Probability that a query on ``route`` visits each stage."""
    if route == "light":
        return {"light": 1.0}
    if route == "heavy":
        return {"heavy": 1.0}
    if route == "cascade":
        return {"light": 1.0, "discriminator": 1.0, "heavy": min(max(defer_rate, 0.0), 1.0)}
    raise ValueError(f"route={route!r}; expected one of {list(REQUEST_ROUTES)}")


def stage_load(requests: Sequence[tuple[str, int]], defer_rate: float) -> dict[str, float]:
    """Expected queries a batch sends to each stage, for (route, n_queries) pairs."""
    load: dict[str, float] = {}
    for route, n in requests:
        for stage, p_visit in stage_path(route, defer_rate).items():
            load[stage] = load.get(stage, 0.0) + p_visit * n
    return load


def predict_batch_ms(load: Mapping[str, float], queries_ahead: Mapping[str, int], est: StageEstimates) -> float:
    """Expected ms from now until a batch sending ``load`` queries to each stage completes.

    Per stage: the work already in flight there (``queries_ahead`` queries, drained at the
    observed ms per query) plus the batch's own work (its queries at the observed ms per
    query, at least one observed round trip), weighted by min(1, load) for stages the batch
    may skip (heavy, at the observed deferral rate). All of a batch's requests are answered
    together, so this is every one of its requests' latency. Unobserved stages count 0: a
    cold server admits everything until it has measured something.
    """
    total = 0.0
    for stage, n in load.items():
        batch_ms = est.batch_ms.get(stage)
        if batch_ms is None or n <= 0.0:
            continue
        per_query_ms = batch_ms / max(est.batch_items.get(stage, 1.0), 1.0)
        ahead_ms = max(queries_ahead.get(stage, 0), 0) * per_query_ms
        total += min(n, 1.0) * (ahead_ms + max(batch_ms, n * per_query_ms))
    return total


def predict_latency_ms(route: str, queries_ahead: Mapping[str, int], est: StageEstimates, n_queries: int = 1) -> float:
    """Expected ms until one request of ``n_queries`` on ``route``, alone in its batch, completes."""
    return predict_batch_ms(stage_load([(route, n_queries)], est.defer_rate), queries_ahead, est)


@dataclasses.dataclass(frozen=True)
class Admission:
    """Whether a request runs in this batch; ``predicted_ms`` is the batch latency with it in,
    ``limit_ms`` the tightest drop limit (drop_factor x SLO) it had to meet (inf: none)."""

    admitted: bool
    predicted_ms: float
    limit_ms: float


def admit_batch(requests: Sequence[tuple[str, int, float | None]], queries_ahead: Mapping[str, int],
                est: StageEstimates, drop_factor: float) -> list[Admission]:
    """Admission control for one batch of (route, n_queries, slo_ms) requests, in arrival order.

    A request is admitted when the batch's predicted latency with it added stays within
    ``drop_factor`` x SLO of itself and of every request admitted before it (they all finish
    together); otherwise it is shed. So under a burst the head of the queue runs and the rest
    is refused at once instead of all of it missing the deadline.
    """
    admitted: list[tuple[str, int]] = []
    limit = math.inf
    out: list[Admission] = []
    for route, n, slo_ms in requests:
        trial = admitted + [(route, n)]
        predicted = predict_batch_ms(stage_load(trial, est.defer_rate), queries_ahead, est)
        own = drop_factor * slo_ms if slo_ms is not None else math.inf
        if predicted <= min(limit, own):
            admitted, limit = trial, min(limit, own)
            out.append(Admission(True, predicted, min(limit, own)))
        else:
            out.append(Admission(False, predicted, min(limit, own)))
    return out


def drop_message(marker: str, admission: Admission, slo_ms: float | None, drop_factor: float) -> str:
    """The error text for a shed query (contains ``marker`` so that clients can classify it)."""
    slo = f"{slo_ms:.0f} ms" if slo_ms is not None else "none"
    return (f"{marker} request dropped: predicted latency {admission.predicted_ms:.0f} ms exceeds the drop limit "
            f"{admission.limit_ms:.0f} ms ({drop_factor:g} x SLO; this request's SLO: {slo}, or an earlier "
            f"request's in the same batch)")
