"""Load shedding on admission, with the live cascade's own decision (:mod:`serving.routing`).

The live cascade model admits a request when its predicted latency stays within drop_factor x
SLO (:func:`serving.routing.admit_batch`); the prediction uses the queries ahead of it at each
stage and EWMA estimates of each stage call's round trip (queueing included), size and the
deferral rate. Here the simulator keeps the same estimates from its own batches and asks the same
function. What the simulator feeds it, and why:

- a stage call is one batch on one worker; its round trip is the batch's finish minus the mean
  time its queries entered the model's queue (as the live round trip includes the stage's queue);
- ``queries_ahead`` is per worker of the stage by default (``ahead_per_worker``): the queries
  queued or running at the model divided by its workers, the work ahead of a query on the worker
  that will serve it. The live cascade passes the total over all instances, which over-predicts
  by the instance count when a stage runs on several GPUs (``ahead_per_worker=False`` reproduces it).
"""
from __future__ import annotations

from serving import routing

STAGES = ("light", "heavy")  # the simulator's models; the light profile includes the discriminator


class AdmissionControl:
    """The live cascade's shedding decision on simulated state (one per run)."""

    def __init__(self, slo_ms: float, drop_factor: float, ewma_alpha: float, ahead_per_worker: bool = True) -> None:
        self.slo_ms, self.drop_factor, self.alpha = slo_ms, drop_factor, ewma_alpha
        self.ahead_per_worker = ahead_per_worker
        self.batch_ms: dict[str, float] = {}
        self.batch_items: dict[str, float] = {}
        self.defer_rate = 0.0
        self._est: routing.StageEstimates | None = routing.StageEstimates()

    def observe_call(self, stage: str, round_trip_ms: float, n_items: int) -> None:
        """One finished batch of ``n_items`` queries on ``stage``, ``round_trip_ms`` from queueing to finish."""
        self.batch_ms[stage] = routing.ewma(self.batch_ms.get(stage), round_trip_ms, self.alpha)
        self.batch_items[stage] = routing.ewma(self.batch_items.get(stage), n_items, self.alpha)
        self._est = None

    def observe_deferrals(self, fraction: float) -> None:
        """The deferred share of one light batch's cascade-routed queries."""
        self.defer_rate = routing.ewma(self.defer_rate, fraction, self.alpha)
        self._est = None

    @property
    def est(self) -> routing.StageEstimates:
        """The estimates as the live cascade hands them to its decision (rebuilt after a change)."""
        if self._est is None:
            self._est = routing.StageEstimates(batch_ms=dict(self.batch_ms), batch_items=dict(self.batch_items),
                                               defer_rate=self.defer_rate)
        return self._est

    def ahead(self, waiting: tuple[int, int], workers: tuple[int, int]) -> dict[str, float]:
        """``queries_ahead`` per stage from the queries queued or running and the workers per model."""
        if not self.ahead_per_worker:
            return {s: float(w) for s, w in zip(STAGES, waiting)}
        return {s: w / max(n, 1) for s, w, n in zip(STAGES, waiting, workers)}

    def admits(self, route: str, ahead: dict[str, float]) -> bool:
        """Whether one query on ``route`` is admitted with ``ahead`` queries in front of it."""
        return routing.admit_batch([(route, 1, self.slo_ms)], ahead, self.est, self.drop_factor)[0].admitted

    def admitted_count(self, route: str, ahead: dict[str, float], stage: str, step: float, n: int) -> int:
        """How many of ``n`` queries arriving back to back on ``route`` are admitted, when each
        admitted one adds ``step`` to ``ahead[stage]`` (nothing else changes between them).

        The prediction grows with the queries ahead, so the admitted ones are a prefix: once one
        is shed, every later one sees the same state and is shed too. Binary search over it.
        """
        def ok(k: int) -> bool:
            return self.admits(route, {**ahead, stage: ahead.get(stage, 0.0) + k * step})

        if n <= 0 or not ok(0):
            return 0
        lo, hi = 0, n - 1  # ok(lo) holds; find the last k with ok(k)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo + 1
