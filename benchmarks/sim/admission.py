"""Load shedding on admission, with the live cascade's own decision (:mod:`serving.routing`).

The live cascade admits a request when its predicted latency stays within drop_factor x SLO
(:func:`serving.routing.admit_batch`): per stage, the queries in flight there over all instances
drained at the stage's observed rate, plus at least one observed service time. Its estimates
come from its stage calls, folded by :func:`serving.routing.fold_call`. The simulator keeps the
same estimates from its own batches and asks the same functions: a stage call is one batch on
one worker; its round trip is the batch's finish minus the mean time its queries entered the
model's queue (the live round trip includes the stage's queue too), and ``ahead`` is the
queries queued or running at the model when the batch's first query entered the queue.
The admission limit is the live one too (:func:`serving.routing.admit_limit_factor`): the
cascade's drop_factor, or the control state's tighter ``admit_factor`` (the overload fallback's).
After admission the live cascade also holds each request to its drop bound
(:func:`serving.routing.deadline_s`, drop_factor x SLO after arrival): a deferred query predicted
to finish heavy past it is shed before the heavy call, and a query still unanswered at it is
shed then (``serving.cascade_flow.BatchFlow.keep`` / ``expire``); :meth:`AdmissionControl.within_bound`
is that prediction.
"""
from __future__ import annotations

from serving import routing
from serving.control import ControlState

STAGES = ("light", "heavy")  # the simulator's models; the light profile includes the discriminator


class AdmissionControl:
    """The live cascade's shedding decision on simulated state (one per run)."""

    def __init__(self, slo_ms: float, drop_factor: float, ewma_alpha: float) -> None:
        self.slo_ms, self.drop_factor, self.alpha = slo_ms, drop_factor, ewma_alpha
        self.admit_factor = drop_factor  # the limit in force (x SLO): drop_factor or the control state's
        self.stage_est: dict[str, tuple[float, float, float]] = {}
        self.defer_rate = 0.0
        self.instances: dict[str, int] = {}
        self._est: routing.StageEstimates | None = routing.StageEstimates()

    def observe_call(self, stage: str, round_trip_ms: float, n_items: int, ahead: float) -> None:
        """One finished batch of ``n_items`` queries on ``stage``, ``round_trip_ms`` from queueing to
        finish, ``ahead`` queries in front of it when it was queued."""
        self.stage_est[stage] = routing.fold_call(self.stage_est.get(stage), round_trip_ms, n_items, ahead, self.alpha)
        self._est = None

    def observe_deferrals(self, fraction: float) -> None:
        """The deferred share of one light batch's cascade-routed queries."""
        self.defer_rate = routing.ewma(self.defer_rate, fraction, self.alpha)
        self._est = None

    @property
    def est(self) -> routing.StageEstimates:
        """The estimates as the live cascade hands them to its decision (rebuilt after a change)."""
        if self._est is None:
            e = self.stage_est
            self._est = routing.StageEstimates(service_ms={k: v[0] for k, v in e.items()},
                                               batch_items={k: v[1] for k, v in e.items()},
                                               drain_qps={k: v[2] for k, v in e.items() if v[2] > 0},
                                               defer_rate=self.defer_rate, instances=self.instances)
        return self._est

    @staticmethod
    def ahead(waiting: tuple[int, int]) -> dict[str, float]:
        """``queries_ahead`` per stage: the queries queued or running there (all its GPUs: the
        estimates' drain rate is their combined rate, as live)."""
        return {s: float(w) for s, w in zip(STAGES, waiting)}

    def set_control(self, state: ControlState) -> None:
        """What the live cascade reads from the control state for its decision: the plan's
        instances per stage and the admission limit (``admit_factor``, or drop_factor)."""
        self.instances = dict(state.instances)
        self.admit_factor = routing.admit_limit_factor(state, self.drop_factor)
        self._est = None

    @property
    def bound_ms(self) -> float:
        """The drop bound after arrival: no query is answered later (the live cascade's deadline)."""
        return self.drop_factor * self.slo_ms

    def within_bound(self, stage: str, ahead: float, now_ms: float, arrival_ms: float) -> bool:
        """Whether one query sent to ``stage`` at ``now_ms`` with ``ahead`` queries there is predicted
        to finish by its drop bound (the live ``BatchFlow.keep`` before a stage call)."""
        return now_ms + routing.stage_ms(stage, 1, ahead, self.est) <= arrival_ms + self.bound_ms

    def admits(self, route: str, ahead: dict[str, float]) -> bool:
        """Whether one query on ``route`` is admitted with ``ahead`` queries in front of it."""
        return routing.admit_batch([(route, 1, self.slo_ms)], ahead, self.est, self.admit_factor)[0].admitted

    def admitted_count(self, route: str, ahead: dict[str, float], stage: str, n: int) -> int:
        """How many of ``n`` queries arriving back to back on ``route`` are admitted, when each
        admitted one adds one query to ``ahead[stage]`` (nothing else changes between them).

        The prediction grows with the queries ahead, so the admitted ones are a prefix: once one
        is shed, every later one sees the same state and is shed too. Binary search over it.
        """
        def ok(k: int) -> bool:
            return self.admits(route, {**ahead, stage: ahead.get(stage, 0.0) + k})

        if n <= 0 or not ok(0):
            return 0
        lo, hi = 0, n - 1  # ok(lo) holds; find the last k with ok(k)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo + 1
