"""Queueing estimates for batched diffusion models on GPUs (pure functions, no solver).

Two families:

- The paper's (DiffServe): Little's law on what was observed in the last window,
  ``W = L / lambda`` (:func:`littles_law_delay_ms`).
- Ours (policy ``quality``), a model of batched service so that the plan's own allocation sets
  the queueing delay instead of the past window's queues:

  * batch fill: a GPU that waits for a full batch of ``b`` queries, fed ``lambda / x``
    queries/s, keeps the first query of a batch waiting ``(b - 1) x / lambda`` seconds
    (:func:`batch_fill_ms`, worst case in a batch; 0 for ``b = 1``);
  * congestion: batches arrive at rate ``lambda / b`` and are served in a deterministic
    ``s_b`` by ``c`` GPUs sharing one queue (Triton's dynamic batcher): an M/D/c queue of
    batches, approximated by Allen-Cunneen, ``W ~= C(c, a) s_b / (c - a) * (ca2 + cs2) / 2``
    with offered load ``a = lambda s_b / b`` Erlangs, Erlang-C probability of waiting
    ``C(c, a)``, service SCV ``cs2 = 0`` (profiled deterministic latency) and arrival SCV
    ``ca2`` (1 = Poisson batches, the conservative default; ``1/b`` when batches form from
    Poisson queries) (:func:`mdc_wait_ms`).

All times are milliseconds, rates queries per second. A server of the queueing formulas is one
GPU (one model instance on it), called ``gpus`` in every name here.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from planner.types import ModelProfile


def littles_law_delay_ms(queue_length: float, arrival_qps: float) -> float:
    """Mean queueing delay ``L / lambda`` in ms (0 when nothing arrives)."""
    if queue_length < 0 or arrival_qps < 0:
        raise ValueError(f"queue_length {queue_length} and arrival_qps {arrival_qps}; expected both >= 0")
    return 0.0 if arrival_qps == 0 else 1000.0 * queue_length / arrival_qps


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """Erlang-C probability that an arrival waits, for ``servers`` servers and load ``a`` Erlangs.

    Returns 1.0 when the queue is unstable (``a >= servers``). Computed with the numerically
    stable Erlang-B recursion, so it works for thousands of servers.
    """
    if servers < 1:
        raise ValueError(f"servers = {servers}; expected an int >= 1")
    a = float(offered_erlangs)
    if a < 0:
        raise ValueError(f"offered load {a} Erlangs; expected >= 0")
    if a == 0:
        return 0.0
    if a >= servers:
        return 1.0
    inv_b = 1.0  # 1 / Erlang-B(0, a)
    for k in range(1, servers + 1):
        inv_b = 1.0 + inv_b * k / a
    erlang_b = 1.0 / inv_b
    rho = a / servers
    return erlang_b / (1.0 - rho * (1.0 - erlang_b))


def erlang_c_many(servers: np.ndarray, offered_erlangs: np.ndarray) -> np.ndarray:
    """Vectorized :func:`erlang_c` (one Erlang-B recursion pass up to the largest server count).

    Used by the planner to price hundreds of (batch, utilization, rate) options in one pass.
    """
    c = np.asarray(servers, dtype=np.int64)
    a = np.asarray(offered_erlangs, dtype=np.float64)
    if c.shape != a.shape or (c < 1).any() or (a < 0).any():
        raise ValueError("servers and offered loads must have the same shape, servers >= 1, loads >= 0")
    out = np.where(a == 0, 0.0, 1.0)
    ok = np.flatnonzero((a > 0) & (a < c))
    if ok.size == 0:
        return out
    order = ok[np.argsort(-c[ok], kind="stable")]  # largest server count first
    av, cv = a[order], c[order]
    inv_b = np.ones_like(av)
    erlang_b = np.empty_like(av)
    # Row j needs the recursion up to k = cv[j]; rows are sorted so the rows still running at
    # step k are a prefix, and the prefix shrinks as k passes each row's server count (the rows
    # with cv == k are one block at its end, found by binary search on the descending counts).
    counts, first = np.unique(-cv, return_index=True)
    block_start = dict(zip((-counts).tolist(), first.tolist()))  # server count -> first row with it
    active = len(cv)
    for k in range(1, int(cv[0]) + 1):
        inv_b[:active] = 1.0 + inv_b[:active] * k / av[:active]
        done = block_start.get(k)
        if done is not None:
            erlang_b[done:active] = 1.0 / inv_b[done:active]
            active = done
    rho = av / cv
    out[order] = erlang_b / (1.0 - rho * (1.0 - erlang_b))
    return out


def mdc_wait_ms_many(arrival_qps, batch, batch_latency_ms, gpus, arrival_scv: float = 1.0) -> np.ndarray:
    """Vectorized :func:`mdc_wait_ms` over equal-shape arrays (``inf`` where unstable)."""
    lam = np.asarray(arrival_qps, dtype=np.float64)
    b = np.asarray(batch, dtype=np.float64)
    s = np.asarray(batch_latency_ms, dtype=np.float64)
    c = np.asarray(gpus, dtype=np.int64)
    a = lam * (s / 1000.0) / b
    pw = erlang_c_many(c, np.minimum(a, c))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(a < c, pw * s / np.maximum(c - a, 1e-300) * arrival_scv / 2.0, np.inf)
    return np.where(lam == 0, 0.0, w)


def mdc_wait_ms(arrival_qps: float, batch: int, batch_latency_ms: float, gpus: int, arrival_scv: float = 1.0) -> float:
    """Mean wait of a batch in an M/D/c-style queue (Allen-Cunneen), in ms.

    ``arrival_qps`` queries/s grouped in batches of ``batch`` served in ``batch_latency_ms`` by
    ``gpus`` parallel GPUs sharing one queue. Returns ``inf`` when utilization >= 1.
    """
    if arrival_qps < 0 or batch < 1 or batch_latency_ms <= 0 or gpus < 1 or arrival_scv < 0:
        raise ValueError(
            f"arrival_qps={arrival_qps}, batch={batch}, batch_latency_ms={batch_latency_ms}, "
            f"gpus={gpus}, arrival_scv={arrival_scv}; expected >= 0, >= 1, > 0, >= 1, >= 0"
        )
    if arrival_qps == 0:
        return 0.0
    s = batch_latency_ms
    a = arrival_qps * (s / 1000.0) / batch  # offered load in Erlangs (busy GPUs on average)
    if a >= gpus:
        return math.inf
    return erlang_c(gpus, a) * s / (gpus - a) * (arrival_scv + 0.0) / 2.0


def batch_fill_ms(arrival_qps: float, batch: int, gpus: int) -> float:
    """Worst-case wait for a full batch at one of ``gpus`` GPUs fed ``arrival_qps`` in all, ms.

    ``(batch - 1) * gpus / arrival_qps`` seconds; 0 for ``batch == 1``; ``inf`` when nothing
    arrives but a batch > 1 is awaited.
    """
    if arrival_qps < 0 or batch < 1 or gpus < 0:
        raise ValueError(f"arrival_qps={arrival_qps}, batch={batch}, gpus={gpus}; expected >= 0, >= 1, >= 0")
    if batch == 1 or gpus == 0:
        return 0.0
    if arrival_qps == 0:
        return math.inf
    return 1000.0 * (batch - 1) * gpus / arrival_qps


def min_gpus(arrival_qps: float, batch: int, batch_latency_ms: float, utilization: float) -> int:
    """Fewest GPUs that keep utilization <= ``utilization`` (at least 1)."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization {utilization}; expected in (0, 1]")
    a = arrival_qps * (batch_latency_ms / 1000.0) / batch
    return max(1, math.ceil(a / utilization - 1e-9))


@dataclasses.dataclass(frozen=True)
class QueueModel:
    """How a stage's queueing delay is estimated (see :mod:`planner.queueing`).

    ``kind="observed"``: the paper's constant per model (``observed_ms``), utilization 1.0.
    ``kind="batched"``: M/D/c wait of batches + batch-fill wait, per utilization level.
    ``max_batch_wait_ms`` caps the fill wait (the batcher's max queue delay; None = waits for a
    full batch, fill grows with GPUs).
    """

    kind: str
    utilization_levels: tuple[float, ...] = (1.0,)
    observed_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    arrival_scv: float = 1.0
    max_batch_wait_ms: float | None = None
    # Stage rates are planned with the demand's over-provisioning margin; the M/D/c wait is priced
    # at rate / rate_margin (the forecast), so the margin is not counted twice: a plan at
    # utilization 0.95 of the over-provisioned demand waits as at 0.95 / margin (Instance.demand_margin).
    rate_margin: float = 1.0

    def __post_init__(self) -> None:
        if not self.rate_margin >= 1.0:
            raise ValueError(f"QueueModel.rate_margin {self.rate_margin}; expected >= 1")
        if self.kind not in ("observed", "batched"):
            raise ValueError(f"QueueModel.kind = {self.kind!r}; expected 'observed' or 'batched'")
        if not self.utilization_levels or any(not 0 < r <= 1 for r in self.utilization_levels):
            raise ValueError(f"utilization_levels {self.utilization_levels}; expected values in (0, 1]")
        if self.max_batch_wait_ms is not None and not self.max_batch_wait_ms >= 0:
            raise ValueError(f"max_batch_wait_ms {self.max_batch_wait_ms}; expected >= 0 or None")

    def min_gpus(self, prof: ModelProfile, b: int, rho: float, lam: float) -> int:
        """Fewest GPUs the wait estimate assumes at batch ``b``, level ``rho``, rate ``lam``."""
        if self.kind == "observed":
            return 1
        return min_gpus(lam, b, prof.latency_ms(b), rho)

    def wait_ms_flat(self, segments: list[tuple[str, int]], batch: np.ndarray, latency_ms: np.ndarray, rho: np.ndarray,
                     rate_qps: np.ndarray, max_gpus: int) -> np.ndarray:
        """Queueing wait (not fill) in ms of each (batch, its latency, level rho, rate) of flat
        equal-length arrays whose consecutive ``segments`` (model name, length) belong to one model
        each, priced in one vectorized pass (one Erlang-C recursion for all).

        ``observed``: the model's observed delay. ``batched``: M/D/c wait with the fewest GPUs that
        keep utilization <= rho (:func:`min_gpus`, element by element: the plan has at least that
        many, and more GPUs only shorten the wait); ``inf`` where that floor exceeds ``max_gpus``
        (unusable option).
        """
        if self.kind == "observed":
            return np.repeat([float(self.observed_ms.get(n, 0.0)) for n, _ in segments], [k for _, k in segments])
        b, s, lam = np.asarray(batch, dtype=np.int64), np.asarray(latency_ms, np.float64), np.asarray(rate_qps, np.float64)
        a = lam * (s / 1000.0) / b  # min_gpus, element by element
        c = np.maximum(1, np.ceil(a / np.asarray(rho, np.float64) - 1e-9)).astype(np.int64)
        out = np.full(len(b), np.inf)
        usable = c <= max_gpus
        if usable.any():
            out[usable] = mdc_wait_ms_many(lam[usable] / self.rate_margin, b[usable], s[usable], c[usable],
                                           self.arrival_scv)
        return out

    def fill_ms_per_gpu(self, b: int, lam: float) -> float:
        """Batch-fill wait per GPU of the stage, ms (0 when not modelled)."""
        if self.kind == "observed" or b == 1 or self.max_batch_wait_ms is not None:
            return 0.0
        return math.inf if lam <= 0 else 1000.0 * (b - 1) / lam

    def fill_const_ms(self, b: int) -> float:
        """Constant fill wait when capped by the batcher's max queue delay."""
        if self.kind == "observed" or b == 1 or self.max_batch_wait_ms is None:
            return 0.0
        return float(self.max_batch_wait_ms)
