"""Discrete-event simulator of a GPU cluster serving a light -> heavy diffusion cascade.

Model of the system (the live system's decisions, on a simulated clock):

* Routing and shedding at admission, as the live cascade model: each arriving query gets its
  route from :func:`serving.routing.choose_route` under the control state the live orchestrator
  would write (:func:`orchestrator.placement.control_state`), and is shed at once when
  :func:`serving.routing.admit_batch` predicts it would finish past ``drop_factor`` x SLO
  (:mod:`.admission`; the limit is the control state's ``admit_factor`` x SLO when the plan
  sets one, as the overload fallback does). After admission the live drop bound holds
  (drop_factor x SLO after arrival): a deferred query predicted to finish heavy past it is shed
  before it enters heavy's queue, and a query whose batch ends past it is shed at the bound (its
  batch still ran, as the live stage work runs on). A query answered within it but after the SLO
  is a timeout.
* Each model has one FIFO queue; an idle GPU takes up to the planned batch size from its head at
  once (Triton's batcher with no queueing delay). A batch of ``n`` takes the profiled latency,
  linear between profiled sizes. ``cascade``: a light image whose confidence is below the
  threshold in force when the query was admitted is re-queued on the heavy model (the live
  cascade reads the threshold once per batch); confidences and threshold are compared in float32
  as :func:`serving.routing.defer_mask` does.
* The models are the control config's (two, or several variants: the plan's ``light_model`` and
  ``heavy_model`` are the pair in force). A query keeps the pair it was admitted under: a deferred
  one goes to that heavy model, with the confidence in that light model's image. With router
  scores and a router curve, the control state carries the router threshold and
  :func:`serving.routing.choose_route` sends a prompt at or above it straight to heavy: it skips
  the light model and the discriminator (``routed``).
* Every ``window_s`` the control loop (:mod:`orchestrator.control`, the live code) gets an
  :class:`Observation` with the fields the live loop fills (arrivals, drops, queueing delay per
  model, current allocation) and returns a plan; GPUs move with the live placement
  (:mod:`.cluster`). A query sent to a model that has no GPU left fails (a drop).

Performance: arrivals are not heap events. Between two heap events (batch completions, model
loads, control ticks) arrivals that find no idle GPU are admitted in one step (the admitted ones
are a prefix, found by binary search); batches up to ``_SMALL`` queries use scalar Python.
"""
from __future__ import annotations

import heapq
import math
import time
from typing import Any

import numpy as np

from orchestrator.control import ControlDecision, ControlLoop
from orchestrator.observe import build_observation
from orchestrator.placement import control_state
from planner.types import Allocation, Plan, RouterCurve
from serving import routing
from serving.control import ControlState
from serving.validation import RequestOptions

from .admission import STAGES, AdmissionControl
from .cluster import BUSY, HEAVY, LIGHT, Cluster
from .queues import Fifo, latency_table
from .trace import Trace
from .types import DROPPED, PENDING, SERVED_HEAVY, SERVED_LIGHT, SimConfig, SimResult, WindowRecord
from .window import WindowStats

__all__ = ["DROPPED", "PENDING", "SERVED_HEAVY", "SERVED_LIGHT", "SimConfig", "SimResult", "Simulator",
           "WindowRecord", "simulate"]

# Heap event kinds; at equal times completions come first, the control tick last.
_DONE, _READY, _CONTROL = 0, 1, 2
_SMALL = 8  # batches up to this size are handled with scalar Python operations
_NO_OPTIONS = RequestOptions()
_NOT_CASCADE = -1.0  # per-query threshold of a query not on the cascade route: never deferred


class Simulator:
    """One simulation run; build it, call :meth:`run` once.

    ``confidence``: per query, the discriminator's confidence in the light model's image, shape
    (queries,) for the first model, or (models, queries) with a row per model of the config (the
    pair's light model's row is read). ``router_score`` (queries,) and ``router`` (the router
    share -> score threshold calibration the orchestrator uses) enable the prompt router.
    """

    def __init__(self, trace: Trace, confidence: np.ndarray, loop: ControlLoop, config: SimConfig = SimConfig(),
                 router_score: np.ndarray | None = None, router: RouterCurve | None = None) -> None:
        confidence = np.asarray(confidence, dtype=np.float64)
        cc = loop.config
        n, k = len(trace), len(cc.models)
        rows = confidence[None, :] if confidence.ndim == 1 else confidence
        if rows.ndim != 2 or rows.shape[1:] != trace.arrival_ms.shape or not 1 <= len(rows) <= k:
            raise ValueError(f"confidence has shape {confidence.shape}; expected one per query {trace.arrival_ms.shape} "
                             f"or one row per model ({k}, {n})")
        if router_score is not None and np.shape(router_score) != trace.arrival_ms.shape:
            raise ValueError(f"router_score has shape {np.shape(router_score)}; expected one per query {trace.arrival_ms.shape}")
        self.trace, self.loop, self.cfg = trace, loop, config
        self.names = tuple(m.name for m in cc.models)
        self.lat = tuple([ms * config.service_latency_factor for ms in latency_table(m)] for m in cc.models)
        self.slo_ms = cc.slo_ms
        self.window_ms = cc.window_s * 1000.0
        self.arr = trace.arrival_ms
        self.arr_l = self.arr.tolist()
        # float32 like the live comparison (serving.routing.defer_mask), kept as Python floats.
        self.conf_rows = [row.astype(np.float32).astype(np.float64).tolist() for row in rows]
        self.conf_l = self.conf_rows[0] if len(rows) == 1 else [0.0] * n  # confidence each query was admitted with
        self.thr_l = [_NOT_CASCADE] * n  # threshold each query was admitted under
        self.light_of, self.heavy_of = [LIGHT] * n, [k - 1] * n  # the pair each query was admitted under
        self.at_heavy = [False] * n  # routed or deferred: its next (last) stop is its heavy model
        self.routed = np.zeros(n, dtype=bool)  # sent straight to heavy (router or heavy-only routing)
        self.router_l = None if router_score is None else np.asarray(router_score, dtype=np.float64).tolist()
        self.router = router
        self.coin = np.random.default_rng(config.seed).random(n).tolist()  # random routing draws
        self.finish = np.full(n, np.nan)
        self.outcome = np.zeros(n, dtype=np.int8)
        self.enq = tuple(np.zeros(n) for _ in range(k))  # when each query entered each model's queue
        self.ahead_enq = tuple(np.zeros(n) for _ in range(k))  # queries queued or running there when it entered
        self.fifo = tuple(Fifo(n) for _ in range(k))
        self.running = [0] * k  # queries in running batches per model
        self.batch_of: list[Any] = [None] * cc.num_workers
        self.cluster = Cluster(cc.num_workers, self.names, config.model_load_s * 1000.0, self._load_started)
        self.workers = (0,) * k  # GPUs per model after the last plan
        self.admission = AdmissionControl(self.slo_ms, config.drop_factor, config.ewma_alpha)
        self.batch = [1] * k
        self.pair = (LIGHT, k - 1)  # (light, heavy) model indices in force
        self.control = ControlState()
        self.threshold32 = 0.0
        self.heap: list[tuple] = []
        self.seq = 0
        self.events = 0
        self.stats = WindowStats(k)
        self.windows: list[WindowRecord] = []
        self.planner_wall_s = 0.0
        self.planner_cpu_s = 0.0

    # ---- events -------------------------------------------------------------------------
    def _push(self, t: float, kind: int, w: int = -1, gen: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, w, gen))

    def _load_started(self, w: int, now: float) -> None:
        self._push(now + self.cluster.load_ms, _READY, w, self.cluster.gen[w])

    def _drop(self, idx: Any, now: Any) -> None:
        self.outcome[idx] = DROPPED
        self.finish[idx] = now
        self.stats.drops += len(idx)

    def _enqueue(self, m: int, idx: np.ndarray, now: Any) -> None:
        """Queries ``idx`` enter model m's queue at ``now`` (a time, or one per query); with no
        GPU on m they fail at once (a drop)."""
        if self.workers[m] == 0:
            self._drop(idx, now)
            return
        self.enq[m][idx] = now
        self.ahead_enq[m][idx] = self.fifo[m].tail - self.fifo[m].head + self.running[m] + np.arange(len(idx))
        self.fifo[m].push(idx)
        self.stats.arrived[m] += len(idx)

    def _dispatch(self, m: int, now: float) -> None:
        """Idle GPUs of model m take batches while there is work."""
        idle, q, lat, b = self.cluster.idle[m], self.fifo[m], self.lat[m], self.batch[m]
        while idle and q.tail > q.head:
            n = min(b, q.tail - q.head)
            chunk = q.buf[q.head:q.head + n]
            chunk = chunk.tolist() if n <= _SMALL else chunk.copy()
            q.head += n
            finish = now + lat[n]
            w = idle.pop()
            self.cluster.state[w] = BUSY
            self.batch_of[w] = chunk
            self.running[m] += n
            self.stats.dispatched[m].append((now, chunk))  # queueing delay is computed per window
            self.seq += 1
            heapq.heappush(self.heap, (finish, _DONE, self.seq, w, 0))

    def _on_done(self, w: int, now: float) -> None:
        chunk, m = self.batch_of[w], self.cluster.model[w]
        self.batch_of[w] = None
        self.running[m] -= len(chunk)
        first = chunk[0] if type(chunk) is list else int(chunk[0])
        stage = HEAVY if self.at_heavy[first] else LIGHT  # a batch holds one stage (but across a pair change)
        if type(chunk) is list:
            deferred, n_casc, enq_sum = self._finish_small(chunk, m, now)
        else:
            deferred, n_casc, enq_sum = self._finish_array(chunk, m, now)
        self.admission.observe_call(STAGES[stage], now - enq_sum / len(chunk), len(chunk), float(self.ahead_enq[m][first]))
        self._shed_past_bound(chunk, now)
        if n_casc:
            self.admission.observe_deferrals(len(deferred) / n_casc)
        targets = self._defer(deferred, now) if len(deferred) else ()
        idle_on = self.cluster.finish_batch(w, now)
        if idle_on is not None:
            self._dispatch(idle_on, now)
        for h in targets:
            if idle_on != h:
                self._dispatch(h, now)

    def _shed_past_bound(self, chunk: Any, now: float) -> None:
        """Queries of a finished batch answered past their drop bound are shed at the bound instead
        (the live cascade's timer answers them then; the batch's work was done all the same)."""
        bound, arr, outcome = self.admission.bound_ms, self.arr_l, self.outcome
        late = [i for i in (chunk if type(chunk) is list else chunk.tolist())
                if now - arr[i] > bound and outcome[i] != PENDING]
        if late:
            outcome[late] = DROPPED
            self.finish[late] = [arr[i] + bound for i in late]
            self.stats.drops += len(late)

    def _defer(self, deferred: Any, now: float) -> list[int]:
        """Deferred queries enter the queue of the heavy model of their pair, but those predicted to
        finish there past their drop bound are shed now, as the live cascade does before its heavy
        call; returns the models queued on."""
        heavy, kept, shed = self.heavy_of, [], []
        ahead = {h: float(len(self.fifo[h]) + self.running[h]) for h in {heavy[i] for i in deferred}}
        for i in (deferred if type(deferred) is list else deferred.tolist()):
            if self.admission.within_bound(STAGES[HEAVY], ahead[heavy[i]], now, self.arr_l[i]):
                kept.append(i)
                ahead[heavy[i]] += 1
            else:
                shed.append(i)
        if shed:
            self._drop(shed, now)
        for i in kept:
            self.at_heavy[i] = True
        targets = list(dict.fromkeys(heavy[i] for i in kept))
        for h in targets:
            self._enqueue(h, np.asarray([i for i in kept if heavy[i] == h] if len(targets) > 1 else kept, dtype=np.int64), now)
        return targets

    def _finish_small(self, ids: list, m: int, now: float) -> tuple[list, int, float]:
        """Completes a small batch with scalar operations: (deferred ids, cascade-routed count,
        sum of queue-entry times). Element-wise numpy stores beat fancy indexing at these sizes."""
        enq, finish, outcome = self.enq[m], self.finish, self.outcome
        conf, thr, at_heavy = self.conf_l, self.thr_l, self.at_heavy
        enq_sum = 0.0
        deferred, n_casc = [], 0
        for i in ids:
            enq_sum += enq[i]
            if at_heavy[i]:
                finish[i] = now
                outcome[i] = SERVED_HEAVY
                continue
            if thr[i] >= 0.0:
                n_casc += 1
                if conf[i] < thr[i]:
                    deferred.append(i)
                    continue
            finish[i] = now
            outcome[i] = SERVED_LIGHT
        return deferred, n_casc, enq_sum

    def _finish_array(self, chunk: np.ndarray, m: int, now: float) -> tuple[np.ndarray, int, float]:
        """Completes a large batch with numpy operations (same result as :meth:`_finish_small`)."""
        enq_sum = float(self.enq[m][chunk].sum())
        ids = chunk.tolist()
        heavy = np.array([self.at_heavy[i] for i in ids], dtype=bool)
        thr = np.array([self.thr_l[i] for i in ids])
        conf = np.array([self.conf_l[i] for i in ids])
        cascade = ~heavy & (thr >= 0.0)
        defer = cascade & (conf < thr)
        self.finish[chunk[~defer]] = now
        self.outcome[chunk[heavy]] = SERVED_HEAVY
        self.outcome[chunk[~heavy & ~defer]] = SERVED_LIGHT
        return chunk[defer], int(np.count_nonzero(cascade)), enq_sum

    # ---- control --------------------------------------------------------------------------
    def _pair_names(self, plan: Plan) -> tuple[str, str]:
        """The (light, heavy) pair a plan runs: its own names; one it leaves out (a plan that serves
        on one model only, or names none) is the lightest / heaviest variant, which then has no GPUs
        in the plan, so that the control state routes nothing to it."""
        light = plan.light_model if plan.light_model in self.names else ""
        heavy = plan.heavy_model if plan.heavy_model in self.names else ""
        heavy = heavy or (self.names[-1] if self.names[-1] != light else self.names[-2])
        light = light or (self.names[0] if self.names[0] != heavy else self.names[1])
        return light, heavy

    def _apply(self, plan: Plan, now: float, instant: bool = False) -> None:
        for m, name in enumerate(self.names):
            b = int(plan.batch_size.get(name, 1) or 1)
            if not 1 <= b < len(self.lat[m]):
                raise ValueError(f"plan {plan.policy!r}: batch size {b} for {name!r}; "
                                 f"expected 1..{len(self.lat[m]) - 1} (the profiled range)")
            self.batch[m] = b
        light, heavy = self._pair_names(plan)
        self.pair = (self.names.index(light), self.names.index(heavy))
        # Routing, heavy share, threshold and router threshold exactly as the live orchestrator writes
        # them into the serving models' control file (same function): e.g. a model without workers
        # gets no queries.
        self.control = control_state(plan, light, heavy, self.slo_ms, version=0, router=self.router)
        self.admission.set_control(self.control)
        self.threshold32 = float(np.float32(self.control.threshold))
        self.cluster.apply({n: int(plan.workers.get(n, 0)) for n in self.names}, now, instant)
        self.workers = self.cluster.counts()
        for m in range(len(self.names)):
            if self.workers[m] == 0 and len(self.fifo[m]):  # requests to a model that is gone fail
                self._drop(self.fifo[m].clear(), now)
            self._dispatch(m, now)

    def _allocation(self) -> Allocation:
        return Allocation(workers=dict(zip(self.names, self.workers)),
                          batch_size={n: self.batch[i] for i, n in enumerate(self.names)},
                          threshold=self.control.threshold)

    def _record(self, now: float, d: ControlDecision) -> None:
        p = d.plan
        self.planner_wall_s += d.planner_wall_ms / 1000.0
        self.planner_cpu_s += d.planner_cpu_ms / 1000.0
        self.windows.append(WindowRecord(
            time_ms=now, threshold=float(p.threshold), routing=p.routing, light_fraction=float(p.light_fraction),
            workers={k: int(v) for k, v in p.workers.items()}, batch_size={k: int(v) for k, v in p.batch_size.items()},
            demand_qps=d.demand_qps, measured_rate_qps=d.measured_rate_qps, status=p.status, reason=p.reason,
            planner_wall_ms=d.planner_wall_ms, planner_cpu_ms=d.planner_cpu_ms, router_share=float(p.router_share),
            light_model=p.light_model, heavy_model=p.heavy_model))

    def _on_control(self, now: float) -> None:
        start = now - self.window_ms
        arrivals = int(np.searchsorted(self.arr, now, "left") - np.searchsorted(self.arr, start, "left"))
        waiting = [self.fifo[m].tail - self.fifo[m].head for m in range(len(self.names))]
        obs = build_observation(start, self.window_ms / 1000.0, arrivals,
                                self.stats.queue_windows(self.names, self.enq, waiting), self._allocation(),
                                drops=self.stats.drops)
        self.stats = WindowStats(len(self.names))
        decision = self.loop.step(obs)
        self._record(now, decision)
        self._apply(decision.plan, now)

    # ---- arrivals -----------------------------------------------------------------------
    def _ahead(self) -> dict[str, float]:
        light, heavy = self.pair
        waiting = (len(self.fifo[light]) + self.running[light], len(self.fifo[heavy]) + self.running[heavy])
        return self.admission.ahead(waiting)

    def _admitted(self, p0: int, p1: int, route: str) -> int:
        """Queries p0..p1-1 were admitted on ``route``: record their pair, threshold and stage;
        returns the model whose queue they enter."""
        light, heavy = self.pair
        k = p1 - p0
        if self.pair != (LIGHT, len(self.names) - 1):  # the lists start with the first pair (the hot path)
            self.light_of[p0:p1] = [light] * k
            self.heavy_of[p0:p1] = [heavy] * k
        if route == "cascade":
            self.thr_l[p0:p1] = [self.threshold32] * k
            if len(self.conf_rows) > 1:
                self.conf_l[p0:p1] = self.conf_rows[light][p0:p1]
        elif route == "heavy":
            self.at_heavy[p0:p1] = [True] * k
            self.routed[p0:p1] = True
        return heavy if route == "heavy" else light

    def _arrive_one(self, i: int) -> None:
        """Query i arrives: route, admit or shed, queue, dispatch."""
        now = self.arr_l[i]
        route = routing.choose_route(_NO_OPTIONS, self.control, self.coin[i],
                                     None if self.router_l is None else self.router_l[i])
        if not self.admission.admits(route, self._ahead()):
            self._drop([i], now)
            return
        m = self._admitted(i, i + 1, route)
        if self.workers[m] == 0:
            self._drop([i], now)
            return
        self.ahead_enq[m][i] = self.fifo[m].tail - self.fifo[m].head + self.running[m]
        self.fifo[m].push1(i)
        self.stats.arrived[m] += 1
        self.enq[m][i] = now
        self._dispatch(m, now)

    def _arrive_stretch(self, p0: int, p1: int) -> None:
        """Queries p0..p1-1 arrive before the next event and find no idle GPU (so nothing but
        their own queueing changes between them): admit the prefix the live rule admits."""
        route = self.control.routing  # not "random" nor the router: those take queries one by one
        role = HEAVY if route == "heavy" else LIGHT
        k = self.admission.admitted_count(route, self._ahead(), STAGES[role], p1 - p0)
        if k < p1 - p0:
            self._drop(np.arange(p0 + k, p1), self.arr[p0 + k:p1])  # each answered at its arrival
        if k:
            self._enqueue(self._admitted(p0, p0 + k, route), np.arange(p0, p0 + k), self.arr[p0:p0 + k])

    def _idle_for_route(self) -> bool:
        r = self.control.routing
        if r == "random" or (r == "cascade" and self.control.router_threshold is not None and self.router_l is not None):
            return True  # one by one: each query draws its route, or the router scores it
        return bool(self.cluster.idle[self.pair[HEAVY if r == "heavy" else LIGHT]])

    def run(self, progress: bool = False) -> SimResult:
        """Simulates the whole trace and drains the queues. Returns the result."""
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        n = len(self.arr)
        end_ms = float(self.arr[-1]) if n else 0.0
        first = self.loop.initial()
        self._record(0.0, first)
        self._apply(first.plan, 0.0, instant=True)  # the cluster starts with the first plan loaded
        n_ticks = int(end_ms // self.window_ms) + 1
        for k in range(1, n_ticks + 1):
            self._push(k * self.window_ms, _CONTROL)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n_ticks, desc=f"sim {self.loop.config.num_workers} workers", unit="window", leave=False)
        self._loop(bar)
        if bar is not None:
            bar.close()
        for q in self.fifo:  # whatever is still queued has no GPU left to serve it: it is shed
            self.outcome[q.clear()] = DROPPED
        return SimResult(arrival_ms=self.arr, finish_ms=self.finish, outcome=self.outcome,
                         windows=tuple(self.windows), slo_ms=self.slo_ms, window_s=self.window_ms / 1000.0,
                         events=self.events, loop_wall_s=time.perf_counter() - t_wall - self.planner_wall_s,
                         planner_wall_s=self.planner_wall_s,
                         loop_cpu_s=time.process_time() - t_cpu - self.planner_cpu_s, planner_cpu_s=self.planner_cpu_s,
                         model_names=self.names, light_model=np.array(self.light_of, dtype=np.int8),
                         heavy_model=np.array(self.heavy_of, dtype=np.int8), routed=self.routed)

    def _loop(self, bar: Any) -> None:
        heap, arr, n, ptr = self.heap, self.arr, len(self.arr), 0
        while True:
            t_ev = heap[0][0] if heap else math.inf
            if ptr < n and arr[ptr] < t_ev:
                if self._idle_for_route():
                    self._arrive_one(ptr)
                    ptr += 1
                else:
                    p1 = n if t_ev == math.inf else int(np.searchsorted(arr, t_ev, "left"))
                    self._arrive_stretch(ptr, p1)
                    ptr = p1
                continue
            if not heap:
                return
            now, kind, _, w, gen = heapq.heappop(heap)
            self.events += 1
            if kind == _DONE:
                self._on_done(w, now)
            elif kind == _READY:
                m = self.cluster.loaded(w, gen)
                if m is not None:
                    self._dispatch(m, now)
            else:
                self._on_control(now)
                if bar is not None:
                    bar.update(1)


def simulate(trace: Trace, confidence: np.ndarray, loop: ControlLoop, config: SimConfig = SimConfig(),
             progress: bool = False, router_score: np.ndarray | None = None, router: RouterCurve | None = None
             ) -> SimResult:
    """Runs one simulation of ``trace`` under the control ``loop``. See :class:`Simulator`."""
    return Simulator(trace, confidence, loop, config, router_score, router).run(progress=progress)
