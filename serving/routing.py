"""Pure decisions of the cascade model: request validation, routing, deferral, load shedding.

No Triton imports: ``cascade_model.py`` is the thin adapter that feeds these functions what it
reads from requests, the control file and its own latency observations. Every rejection is a
:class:`BadRequest` whose message names the value and what was expected (the adapter turns it
into gRPC INVALID_ARGUMENT).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from serving.control import ControlState

# Prompt policy: at most PROMPT_MAX_BYTES UTF-8 bytes are accepted (longer is INVALID_ARGUMENT,
# so an accidental megabyte payload never reaches the tokenizer); accepted prompts longer than
# the text encoder's context (77 tokens for CLIP) are truncated by the stage's tokenizer.
PROMPT_MAX_BYTES = 2048
SEED_MAX = 2**32 - 1  # numpy/torch generators take seeds in [0, 2**32 - 1]
DEFAULT_SEED = 0
REQUEST_ROUTES = ("cascade", "light", "heavy")
REQUEST_PARAMETERS = ("routing", "slo_ms")
STAGE_NAMES = ("light", "discriminator", "heavy")


class BadRequest(ValueError):
    """The request is malformed; the message says which value and what was expected."""


@dataclasses.dataclass(frozen=True)
class RequestOptions:
    """Per-request parameters: a forced route (None = the control file's policy) and an SLO."""

    routing: str | None = None
    slo_ms: float | None = None


def decode_prompt(raw: Any, index: int = 0) -> str:
    """One PROMPT element (bytes) as text, or BadRequest (empty, too long, not UTF-8)."""
    if not isinstance(raw, (bytes, bytearray, np.bytes_)):
        raise BadRequest(f"PROMPT[{index}] is {type(raw).__name__}; expected UTF-8 bytes")
    raw = bytes(raw)
    if len(raw) > PROMPT_MAX_BYTES:
        raise BadRequest(f"PROMPT[{index}] is {len(raw)} bytes; expected at most {PROMPT_MAX_BYTES} bytes "
                         "of UTF-8 (longer prompts are rejected; the text encoder truncates to its context)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"PROMPT[{index}] is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset "
                         f"{exc.start}); expected UTF-8 text") from exc
    if not text.strip():
        raise BadRequest(f"PROMPT[{index}] is empty ({raw[:20]!r}); expected a non-empty text prompt")
    return text


def check_seed(value: Any, index: int = 0) -> int:
    """One SEED element as int, or BadRequest when outside [0, 2**32 - 1]."""
    seed = int(value)
    if not 0 <= seed <= SEED_MAX:
        raise BadRequest(f"SEED[{index}]={seed}; expected an integer in [0, {SEED_MAX}]")
    return seed


def parse_options(parameters: str | Mapping[str, Any] | None) -> RequestOptions:
    """Validate request parameters (Triton passes them to Python models as a JSON string).

    Known: ``routing`` in {cascade, light, heavy}; ``slo_ms`` a positive number (numbers
    may arrive as strings from HTTP clients). Unknown keys are rejected.
    """
    if parameters is None or parameters == "":
        return RequestOptions()
    params = json.loads(parameters) if isinstance(parameters, str) else dict(parameters)
    unknown = sorted(set(params) - set(REQUEST_PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown request parameters {unknown}; expected only {list(REQUEST_PARAMETERS)}")
    routing = params.get("routing")
    if routing is not None and routing not in REQUEST_ROUTES:
        raise BadRequest(f"parameter routing={routing!r}; expected one of {list(REQUEST_ROUTES)}")
    slo_ms = params.get("slo_ms")
    if slo_ms is not None:
        try:
            if isinstance(slo_ms, bool):
                raise ValueError
            slo_ms = float(slo_ms)
        except (TypeError, ValueError):
            raise BadRequest(f"parameter slo_ms={params['slo_ms']!r}; expected a positive number of ms") from None
        if not (math.isfinite(slo_ms) and slo_ms > 0):
            raise BadRequest(f"parameter slo_ms={params['slo_ms']!r}; expected a positive number of ms")
    return RequestOptions(routing=routing, slo_ms=slo_ms)


def choose_route(options: RequestOptions, policy: ControlState, uniform01: float) -> str:
    """``cascade``, ``light`` or ``heavy`` for one query.

    A per-request ``routing`` wins; otherwise the control file's policy, where ``random`` sends
    the query to heavy with probability ``heavy_share`` (``uniform01`` is a U[0, 1) draw,
    passed in so that this stays deterministic under test).
    """
    if options.routing is not None:
        return options.routing
    if policy.routing == "random":
        return "heavy" if uniform01 < policy.heavy_share else "light"
    return policy.routing


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
