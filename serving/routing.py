"""Pure decisions of the cascade model: routing, deferral, latency prediction, load shedding.

No Triton imports: :mod:`serving.triton.cascade_model` is the thin adapter that feeds these
functions what it reads from requests (validated by :mod:`serving.validation`), the control
state and its own latency observations; :mod:`serving.cascade_flow` applies them per request.

Latency model of one stage (``stage_ms``): the stage drains the queries already in flight there
at the rate it was observed to drain them, then serves the new queries in at least one observed
service time. Every request is answered on its own path, so each is judged against its own
deadline (``drop_factor`` x its SLO after the cascade received it).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from serving.control import ControlState
from serving.validation import REQUEST_ROUTES, RequestOptions

STAGE_NAMES = ("light", "discriminator", "heavy", "router")  # the cascade's BLS targets


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
    if policy.routing == "cascade" and router_routes(router_score, policy.router_threshold):
        return "heavy"
    return policy.routing


def router_routes(router_score: float | None, router_threshold: float | None) -> bool:
    """Whether the prompt router sends a prompt with ``router_score`` straight to heavy (the
    control state's ``router_threshold``; None: no router)."""
    return router_threshold is not None and router_score is not None and router_score >= router_threshold


def defer_mask(confidence: Sequence[float] | np.ndarray, threshold: float) -> np.ndarray:
    """True where the light image goes to heavy: confidence strictly below ``threshold``."""
    return np.asarray(confidence, dtype=np.float32) < np.float32(threshold)


def ewma(previous: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first sample initialises it."""
    return float(sample) if previous is None else float(alpha * sample + (1.0 - alpha) * previous)


def admit_limit_factor(policy: ControlState, drop_factor: float) -> float:
    """The admission limit (x SLO) under ``policy``: the control state's ``admit_factor`` when
    the plan sets one (the orchestrator's overload fallback: 1.0) and it is tighter, else the
    cascade's ``drop_factor``.

    Why tighter under overload: a request admitted on a prediction in (SLO, drop_factor x SLO]
    is a violation even when the prediction holds, and it holds a place in the queue that makes
    the requests after it late too. Never looser than ``drop_factor``: an admitted request is
    still dropped at its bound, ``drop_factor`` x SLO.
    """
    if policy.admit_factor is None:
        return drop_factor
    return min(float(policy.admit_factor), drop_factor)


def deadline_s(received_s: float, slo_ms: float | None, drop_factor: float) -> float | None:
    """The drop bound of a request received at ``received_s`` (monotonic s): no answer after it."""
    return None if slo_ms is None else received_s + drop_factor * slo_ms / 1000.0


@dataclasses.dataclass(frozen=True)
class StageEstimates:
    """What the cascade has observed so far (EWMA), per stage; a missing stage = unobserved.

    ``service_ms``: round trip of a call that found no query of the cascade ahead of it there
    (the first call seeds it); ``batch_items``: queries per call; ``drain_qps``: queries per
    second the stage drains while busy, from calls that found ``ahead`` queries there:
    ``ahead / (round trip - service)`` (several instances of a stage drain in parallel, so
    this is their combined rate); ``defer_rate``: fraction of cascade queries sent to heavy;
    ``instances``: the plan's instances (GPUs) per stage, from the control state.
    """

    service_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    batch_items: Mapping[str, float] = dataclasses.field(default_factory=dict)
    drain_qps: Mapping[str, float] = dataclasses.field(default_factory=dict)
    defer_rate: float = 0.0
    instances: Mapping[str, int] = dataclasses.field(default_factory=dict)


def fold_call(prev: tuple[float, float, float] | None, ms: float, n_items: int, ahead: float,
              alpha: float) -> tuple[float, float, float]:
    """One stage call folded into that stage's (service_ms, batch_items, drain_qps) EWMAs.

    ``prev`` is None before the stage's first call. A call with nothing ahead of it (or the
    first) measures the service time; one with ``ahead`` queries in flight there measures the
    rate the stage drains them, ``ahead / (round trip - service)``. drain_qps 0 = not measured.
    The live cascade (:mod:`serving.shared_state`) and the simulator both fold calls with this.
    """
    if prev is None:
        return float(ms), float(n_items), 0.0
    service, items, drain = prev
    items = ewma(items, n_items, alpha)
    if ahead <= 0:
        service = ewma(service, ms, alpha)
    elif ms > service:
        drain = ewma(drain or None, ahead / ((ms - service) / 1000.0), alpha)
    return service, items, drain


def stage_ms(stage: str, n_queries: float, queries_ahead: float, est: StageEstimates) -> float:
    """Expected ms until ``n_queries`` sent to ``stage`` now are done, ``queries_ahead`` being there.

    The queries ahead drain at the observed rate (before any is observed: one call's service
    time per call's worth of queries on each of the stage's planned instances, as if they were
    busy in parallel; one instance when the plan says nothing), then the new ones take at least
    one service time. Unobserved stage: 0 (a cold server admits everything
    until it has measured something).
    """
    service = est.service_ms.get(stage)
    if service is None or n_queries <= 0:
        return 0.0
    rate = est.drain_qps.get(stage)
    parallel = max(int(est.instances.get(stage, 1)), 1)
    per_query_ms = (1000.0 / rate if rate and rate > 0
                    else service / max(est.batch_items.get(stage, 1.0), 1.0) / parallel)
    return max(queries_ahead, 0.0) * per_query_ms + max(service, n_queries * per_query_ms)


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
    """Expected queries a list of (route, n_queries) requests sends to each stage."""
    load: dict[str, float] = {}
    for route, n in requests:
        for stage, p_visit in stage_path(route, defer_rate).items():
            load[stage] = load.get(stage, 0.0) + p_visit * n
    return load


def path_ms(route: str, n_queries: int, queries_ahead: Mapping[str, float], est: StageEstimates) -> float:
    """Expected ms until a request of ``n_queries`` on ``route`` is answered: light and
    discriminator in turn, heavy weighted by the probability of going there (the check before
    the heavy call uses the actual deferral)."""
    return sum(p_visit * stage_ms(stage, n_queries, queries_ahead.get(stage, 0), est)
               for stage, p_visit in stage_path(route, est.defer_rate).items() if p_visit > 0)


@dataclasses.dataclass(frozen=True)
class Admission:
    """Whether a request is served; ``predicted_ms`` is its expected latency, ``limit_ms`` its
    drop limit (drop_factor x SLO; inf: none)."""

    admitted: bool
    predicted_ms: float
    limit_ms: float


def admit_batch(requests: Sequence[tuple[str, int, float | None]], queries_ahead: Mapping[str, int],
                est: StageEstimates, drop_factor: float) -> list[Admission]:
    """Admission control for the (route, n_queries, slo_ms) requests of one gathered batch, in order.

    Each request is answered on its own path, so each is admitted when its own predicted
    latency stays within ``drop_factor`` x its SLO; the queries of the requests admitted before
    it count as work ahead of it. Under a burst the head of the queue runs and the rest is
    refused at once instead of all of it missing the deadline.
    """
    ahead = {s: float(max(queries_ahead.get(s, 0), 0)) for s in STAGE_NAMES}
    out: list[Admission] = []
    for route, n, slo_ms in requests:
        predicted = path_ms(route, n, ahead, est)
        limit = drop_factor * slo_ms if slo_ms is not None else math.inf
        ok = predicted <= limit
        out.append(Admission(ok, predicted, limit))
        if ok:
            for stage, load in stage_load([(route, n)], est.defer_rate).items():
                ahead[stage] += load
    return out


def drop_message(marker: str, admission: Admission, slo_ms: float | None, drop_factor: float) -> str:
    """The error text for a query shed on arrival (contains ``marker`` so that clients can classify it)."""
    slo = f"{slo_ms:.0f} ms" if slo_ms is not None else "none"
    return (f"{marker} request dropped: predicted latency {admission.predicted_ms:.0f} ms exceeds the drop limit "
            f"{admission.limit_ms:.0f} ms ({drop_factor:g} x SLO; this request's SLO: {slo})")


def late_message(marker: str, stage: str, elapsed_ms: float, predicted_ms: float | None, slo_ms: float,
                 drop_factor: float) -> str:
    """The error text for a request shed on its way (before ``stage``, or at its drop bound)."""
    limit = drop_factor * slo_ms
    if predicted_ms is None:
        what = f"its drop limit {limit:.0f} ms passed after {elapsed_ms:.0f} ms, waiting on {stage}"
    else:
        what = (f"after {elapsed_ms:.0f} ms, {stage} would answer in {predicted_ms:.0f} ms more, past its drop "
                f"limit {limit:.0f} ms")
    return f"{marker} request dropped: {what} ({drop_factor:g} x SLO; this request's SLO: {slo_ms:.0f} ms)"
