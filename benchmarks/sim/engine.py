"""Discrete-event simulator of a GPU cluster serving a light -> heavy diffusion cascade.

Model of the system (the DiffServe paper's serving side):

* Workers (GPUs) each hold one model (or none). Each model has one FIFO queue; an idle worker
  takes up to its planned batch size from the head of its model's queue at once (dynamic
  batching with no queueing delay, like Triton's batcher with ``max_queue_delay`` 0).
* A batch of ``n`` takes the profiled latency, linearly interpolated between profiled sizes.
* Routing (from the plan in force, derived by the live orchestrator's own
  ``orchestrator.placement.control_state``): ``cascade``: every query runs on the light model,
  and the ones whose confidence is below the threshold are re-queued on the heavy model;
  ``random`` (query-agnostic, Proteus-like): each query goes straight to the heavy model with
  probability ``heavy_share``; with 0 light workers queries go straight to heavy, with 0 heavy
  workers nothing is deferred.
* Load shedding: when a worker forms a batch, queries whose *predicted* finish
  (now + batch latency) is after ``arrival + drop_factor x SLO`` are dropped. At each control
  tick queued queries already past that deadline are dropped too. A served query whose latency
  exceeds the SLO is a timeout.
* Re-planning every ``window_s``: the control loop (:mod:`orchestrator.control`, the same code as
  the live orchestrator) sees an :class:`Observation` and returns a plan. A worker moved to
  another model finishes its running batch, then is unavailable for ``model_load_s``.

Performance: arrivals are not heap events. Between two heap events (batch completions, model
loads, control ticks) arrivals are appended to the queues in one numpy slice unless an idle
worker could take them; routing and drop checks are numpy operations per batch.
"""
from __future__ import annotations

import heapq
import math
import time
from typing import Any

import numpy as np

from orchestrator.control import ControlDecision, ControlLoop, Observation
from orchestrator.placement import control_state
from planner.types import Allocation, ModelProfile, Plan

from .trace import Trace
from .types import DROPPED, PENDING, SERVED_HEAVY, SERVED_LIGHT, SimConfig, SimResult, WindowRecord

__all__ = ["DROPPED", "PENDING", "SERVED_HEAVY", "SERVED_LIGHT", "SimConfig", "SimResult", "Simulator",
           "WindowRecord", "simulate"]

LIGHT, HEAVY, NONE = 0, 1, -1
IDLE, BUSY, LOADING = 0, 1, 2
# Heap event kinds; at equal times completions come first, the control tick last.
_DONE, _READY, _CONTROL = 0, 1, 2
_SMALL = 8  # batches up to this size are handled with scalar Python operations


class _Fifo:
    """Queue of query indices in a preallocated array (each query enters a queue at most once)."""

    __slots__ = ("buf", "head", "tail")

    def __init__(self, capacity: int) -> None:
        self.buf = np.empty(max(capacity, 1), dtype=np.int64)
        self.head = 0
        self.tail = 0

    def __len__(self) -> int:
        return self.tail - self.head

    def push(self, idx: np.ndarray) -> None:
        n = len(idx)
        self.buf[self.tail:self.tail + n] = idx
        self.tail += n

    def push1(self, i: int) -> None:
        self.buf[self.tail] = i
        self.tail += 1


def _latency_table(profile: ModelProfile) -> np.ndarray:
    """``table[n]`` = latency (ms) of a batch of n, linear between profiled sizes (index 0 unused)."""
    sizes = np.array(profile.batch_sizes, dtype=np.float64)
    ms = np.array([profile.latency_ms(int(b)) for b in sizes])
    return np.interp(np.arange(int(sizes[-1]) + 1, dtype=np.float64), sizes, ms)


class Simulator:
    """One simulation run; build it, call :meth:`run` once."""

    def __init__(self, trace: Trace, confidence: np.ndarray, loop: ControlLoop, config: SimConfig = SimConfig()) -> None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != trace.arrival_ms.shape:
            raise ValueError(f"confidence has shape {confidence.shape}; expected one per query {trace.arrival_ms.shape}")
        self.trace, self.loop, self.cfg = trace, loop, config
        cc = loop.config
        self.names = (cc.models[0].name, cc.models[-1].name)
        # Python lists: scalar indexing of a list is several times faster than of an ndarray.
        self.lat = (_latency_table(cc.models[0]).tolist(), _latency_table(cc.models[-1]).tolist())
        self.slo_ms = cc.slo_ms
        self.window_ms = cc.window_s * 1000.0
        self.load_ms = config.model_load_s * 1000.0
        n = len(trace)
        self.arr = trace.arrival_ms
        self.conf = confidence
        self.deadline = self.arr + config.drop_factor * cc.slo_ms
        # Scalar copies for the single-query fast paths (idle workers take batches of one).
        self.arr_l = self.arr.tolist()
        self.deadline_l = self.deadline.tolist()
        self.conf_l = confidence.tolist()
        self.coin = np.random.default_rng(config.seed).random(n)  # random routing draws
        self.finish = np.full(n, np.nan)
        self.outcome = np.zeros(n, dtype=np.int8)
        self.heavy_enq = np.zeros(n)
        self.enq = (self.arr, self.heavy_enq)
        self.fifo = (_Fifo(n), _Fifo(n))
        w = cc.num_workers
        self.model = [NONE] * w
        self.state = [IDLE] * w
        self.pending: list[int | None] = [None] * w
        self.gen = [0] * w
        self.busy_until = [0.0] * w
        self.batch_of: list[Any] = [None] * w
        self.idle: tuple[list[int], list[int]] = ([], [])
        self.batch = [1, 1]
        self.threshold = 0.0
        self.mode = "cascade"
        self.heavy_share = 0.0
        self.heap: list[tuple] = []
        self.seq = 0
        self.events = 0
        # Per-window counters for the Observation (reset at each control tick).
        self.w_drops = 0
        self.w_timeouts = 0
        self.w_batches: tuple[list, list] = ([], [])  # (dispatch time, chunk) per model this window
        self.w_in = [0, 0]  # queries that entered each model's queue
        self.windows: list[WindowRecord] = []
        self.planner_wall_s = 0.0
        self.planner_cpu_s = 0.0

    # ---- events -------------------------------------------------------------------------
    def _push(self, t: float, kind: int, w: int = -1, gen: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, w, gen))

    def _drop(self, idx: np.ndarray, now: float) -> None:
        self.outcome[idx] = DROPPED
        self.finish[idx] = now
        self.w_drops += len(idx)

    def _take_batch(self, m: int, now: float):
        """Head of queue m as one batch (dropping queries that would finish past their
        deadline); returns (indices, finish_ms) or None when the queue empties. Batches of up to
        _SMALL queries are Python lists (scalar fast path), larger ones int64 arrays."""
        q, lat, b = self.fifo[m], self.lat[m], self.batch[m]
        while True:
            n = min(b, q.tail - q.head)
            if n <= 0:
                return None
            finish = now + lat[n]
            if n <= _SMALL:  # a scalar min over a short list beats three numpy calls
                ids = q.buf[q.head:q.head + n].tolist()
                dl = self.deadline_l
                if min([dl[i] for i in ids]) >= finish:
                    q.head += n
                    return ids, finish
            else:
                chunk = q.buf[q.head:q.head + n]
                if self.deadline[chunk].min() >= finish:
                    q.head += n
                    return chunk.copy(), finish
            chunk = q.buf[q.head:q.head + n]
            late = self.deadline[chunk] < finish
            keep = chunk[~late]
            self._drop(chunk[late], now)
            new_head = q.head + n - len(keep)
            q.buf[new_head:q.head + n] = keep
            q.head = new_head

    def _dispatch(self, m: int, now: float) -> None:
        """Idle workers of model m take batches while there is work."""
        idle, q, batches = self.idle[m], self.fifo[m], self.w_batches[m]
        while idle and q.tail > q.head:
            got = self._take_batch(m, now)
            if got is None:
                return
            chunk, finish = got
            w = idle.pop()
            self.state[w] = BUSY
            self.busy_until[w] = finish
            self.batch_of[w] = chunk
            batches.append((now, chunk))  # queueing stats are computed per window
            self.seq += 1
            heapq.heappush(self.heap, (finish, _DONE, self.seq, w, 0))

    def _on_done(self, w: int, now: float) -> None:
        chunk, m = self.batch_of[w], self.model[w]
        self.batch_of[w] = None
        cascade = m == LIGHT and self.mode == "cascade" and self.threshold > 0
        if type(chunk) is list:
            n_def = self._finish_small(chunk, m, cascade, now)
        else:
            n_def = self._finish_array(chunk, m, cascade, now)
        self.state[w] = IDLE
        self._become_available(w, now)
        if n_def:
            self._dispatch(HEAVY, now)

    def _finish_small(self, ids: list, m: int, cascade: bool, now: float) -> int:
        """Completes a small batch with scalar operations; returns how many were deferred."""
        n_def = 0
        conf, thr, arr, slo = self.conf_l, self.threshold, self.arr_l, self.slo_ms
        code = SERVED_LIGHT if m == LIGHT else SERVED_HEAVY
        for i in ids:
            if cascade and conf[i] < thr:
                self.heavy_enq[i] = now
                self.fifo[HEAVY].push1(i)
                n_def += 1
            else:
                self.finish[i] = now
                self.outcome[i] = code
                if now - arr[i] > slo:
                    self.w_timeouts += 1
        self.w_in[HEAVY] += n_def
        return n_def

    def _finish_array(self, chunk: np.ndarray, m: int, cascade: bool, now: float) -> int:
        """Completes a large batch with numpy operations; returns how many were deferred."""
        if cascade:
            defer = self.conf[chunk] < self.threshold
            served = chunk[~defer]
            deferred = chunk[defer]
            if len(deferred):
                self.heavy_enq[deferred] = now
                self.fifo[HEAVY].push(deferred)
                self.w_in[HEAVY] += len(deferred)
        else:
            served, deferred = chunk, chunk[:0]
        self.finish[served] = now
        self.outcome[served] = SERVED_LIGHT if m == LIGHT else SERVED_HEAVY
        self.w_timeouts += int(np.count_nonzero(now - self.arr[served] > self.slo_ms))
        return len(deferred)

    def _become_available(self, w: int, now: float) -> None:
        """Worker w finished its batch: start a pending move, or go idle and take work."""
        target = self.pending[w]
        self.pending[w] = None
        if target is None or target == self.model[w]:
            m = self.model[w]
            self.idle[m].append(w)
            if self.fifo[m].tail > self.fifo[m].head:
                self._dispatch(m, now)
        elif target == NONE:
            self.model[w] = NONE
        else:
            self._start_load(w, target, now)

    def _start_load(self, w: int, m: int, now: float) -> None:
        self.model[w] = m
        self.state[w] = LOADING
        self.gen[w] += 1
        self._push(now + self.load_ms, _READY, w, self.gen[w])

    def _move(self, w: int, m: int, now: float, instant: bool) -> None:
        """Reassign worker w to model m (NONE: unassign). Busy workers move after their batch."""
        st, cur = self.state[w], self.model[w]
        if st == BUSY:
            self.pending[w] = None if m == cur else m
            return
        if cur == m:
            return
        if st == IDLE and cur != NONE:
            self.idle[cur].remove(w)
        self.gen[w] += 1  # invalidates a load in progress
        if m == NONE:
            self.model[w], self.state[w] = NONE, IDLE
        elif instant or self.load_ms == 0:
            self.model[w], self.state[w] = m, IDLE
            self.idle[m].append(w)
        else:
            self._start_load(w, m, now)

    def _effective(self, w: int) -> int:
        p = self.pending[w]
        return self.model[w] if p is None else p

    def _apply(self, plan: Plan, now: float, instant: bool = False) -> None:
        want = [int(plan.workers.get(n, 0)) for n in self.names]
        if min(want) < 0 or sum(want) > len(self.model):
            raise ValueError(f"plan {plan.policy!r} asks for workers {dict(plan.workers)}; expected >= 0 each, "
                             f"<= {len(self.model)} in all")
        for m in (LIGHT, HEAVY):
            b = int(plan.batch_size.get(self.names[m], 1) or 1)
            if not 1 <= b < len(self.lat[m]):
                raise ValueError(f"plan {plan.policy!r}: batch size {b} for {self.names[m]!r}; "
                                 f"expected 1..{len(self.lat[m]) - 1} (the profiled range)")
            self.batch[m] = b
        if plan.routing not in ("cascade", "random", "light", "heavy"):
            raise ValueError(f"plan {plan.policy!r}: routing {plan.routing!r}; "
                             "expected 'cascade', 'random', 'light' or 'heavy'")
        # Routing, heavy share and threshold exactly as the live orchestrator writes them into the
        # serving models' control file (same function): e.g. a model without workers gets no queries.
        state = control_state(plan, self.names[LIGHT], self.names[HEAVY], self.slo_ms, version=0)
        self.mode, self.heavy_share, self.threshold = state.routing, float(state.heavy_share), float(state.threshold)

        def key(w: int) -> tuple:  # cheapest to move first: idle, loading, then soonest free
            return ({IDLE: 0, LOADING: 1, BUSY: 2}[self.state[w]], self.busy_until[w], w)

        for m in (LIGHT, HEAVY):
            have = sorted((w for w in range(len(self.model)) if self._effective(w) == m), key=key)
            for w in have[:max(0, len(have) - want[m])]:
                self._move(w, NONE, now, instant)
        for m in (LIGHT, HEAVY):
            have = sum(1 for w in range(len(self.model)) if self._effective(w) == m)
            free = sorted((w for w in range(len(self.model)) if self._effective(w) == NONE), key=key)
            for w in free[:max(0, want[m] - have)]:
                self._move(w, m, now, instant)
        for m in (LIGHT, HEAVY):
            self._dispatch(m, now)

    def _purge(self, now: float) -> None:
        """Drop queued queries whose deadline has passed (no worker could still serve them)."""
        for q in self.fifo:
            ids = q.buf[q.head:q.tail]
            late = self.deadline[ids] < now
            if late.any():
                keep = ids[~late]
                self._drop(ids[late], now)
                q.buf[q.tail - len(keep):q.tail] = keep
                q.head = q.tail - len(keep)

    def _allocation(self) -> Allocation:
        counts = {n: 0 for n in self.names}
        for w in range(len(self.model)):
            e = self._effective(w)
            if e != NONE:
                counts[self.names[e]] += 1
        return Allocation(workers=counts, batch_size={n: self.batch[i] for i, n in enumerate(self.names)},
                          threshold=self.threshold)

    def _record(self, now: float, d: ControlDecision) -> None:
        p = d.plan
        self.planner_wall_s += d.planner_wall_ms / 1000.0
        self.planner_cpu_s += d.planner_cpu_ms / 1000.0
        self.windows.append(WindowRecord(
            time_ms=now, threshold=float(p.threshold), routing=p.routing, light_fraction=float(p.light_fraction),
            workers={k: int(v) for k, v in p.workers.items()}, batch_size={k: int(v) for k, v in p.batch_size.items()},
            demand_qps=d.demand_qps, measured_rate_qps=d.measured_rate_qps, status=p.status, reason=p.reason,
            planner_wall_ms=d.planner_wall_ms, planner_cpu_ms=d.planner_cpu_ms))

    def _queue_stats(self, m: int, start: float, now: float) -> tuple[float | None, float]:
        """(mean queueing delay in ms of the queries dispatched this window or None, time-averaged
        queue length over the window) of model m. The queue-length integral counts each query's
        waiting inside [start, now): dispatched ones until dispatch, queued ones until now."""
        ids: list[int] = []
        ts: list[float] = []
        arrays, array_ts = [], []
        for t, c in self.w_batches[m]:
            if type(c) is list:
                ids.extend(c)
                ts.extend([t] * len(c))
            else:
                arrays.append(c)
                array_ts.append(np.full(len(c), t))
        all_ids = np.concatenate([np.array(ids, dtype=np.int64)] + arrays)
        t_disp = np.concatenate([np.array(ts, dtype=np.float64)] + array_ts)
        e = self.enq[m][all_ids]
        mean_delay = float(np.mean(t_disp - e)) if len(all_ids) else None
        q = self.fifo[m]
        queued = self.enq[m][q.buf[q.head:q.tail]]
        area = float(np.sum(t_disp - np.maximum(e, start))) + float(np.sum(now - np.maximum(queued, start)))
        return mean_delay, area / (now - start)

    def _on_control(self, now: float) -> None:
        self._purge(now)
        start = now - self.window_ms
        arrivals = int(np.searchsorted(self.arr, now, "left") - np.searchsorted(self.arr, start, "left"))
        stats = [self._queue_stats(m, start, now) for m in (LIGHT, HEAVY)]
        qd = {self.names[m]: stats[m][0] for m in (LIGHT, HEAVY) if stats[m][0] is not None}
        win_s = self.window_ms / 1000.0
        obs = Observation(window_start_ms=start, window_s=win_s, arrivals=arrivals,
                          drops=self.w_drops, timeouts=self.w_timeouts, queue_delay_ms=qd,
                          queue_length={self.names[m]: stats[m][1] for m in (LIGHT, HEAVY)},
                          model_arrival_qps={self.names[m]: self.w_in[m] / win_s for m in (LIGHT, HEAVY)},
                          current=self._allocation())
        self.w_drops = self.w_timeouts = 0
        self.w_batches, self.w_in = ([], []), [0, 0]
        decision = self.loop.step(obs)
        self._record(now, decision)
        self._apply(decision.plan, now)

    # ---- arrivals -----------------------------------------------------------------------
    def _admit(self, p0: int, p1: int) -> None:
        """Queries p0..p1-1 arrive: append them to the queue(s) the routing mode sends them to."""
        idx = np.arange(p0, p1)
        if self.mode in ("cascade", "light"):
            self.fifo[LIGHT].push(idx)
            self.w_in[LIGHT] += len(idx)
            return
        if self.mode == "heavy":
            to_heavy = idx
        else:
            sel = self.coin[p0:p1] < self.heavy_share
            to_heavy = idx[sel]
            self.fifo[LIGHT].push(idx[~sel])
            self.w_in[LIGHT] += len(idx) - len(to_heavy)
        self.heavy_enq[to_heavy] = self.arr[to_heavy]
        self.fifo[HEAVY].push(to_heavy)
        self.w_in[HEAVY] += len(to_heavy)

    def _arrivals_find_idle(self) -> bool:
        if self.mode in ("cascade", "light"):
            return bool(self.idle[LIGHT])
        if self.mode == "heavy":
            return bool(self.idle[HEAVY])
        return bool(self.idle[LIGHT]) or bool(self.idle[HEAVY])

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
        heap, arr, ptr = self.heap, self.arr, 0
        while True:
            t_ev = heap[0][0] if heap else math.inf
            if ptr < n and arr[ptr] < t_ev:
                if self._arrivals_find_idle():
                    now = self.arr_l[ptr]
                    if self.mode in ("cascade", "light"):
                        self.fifo[LIGHT].push1(ptr)
                        self.w_in[LIGHT] += 1
                        ptr += 1
                        self._dispatch(LIGHT, now)  # an idle light worker exists (checked above)
                    else:
                        self._admit(ptr, ptr + 1)
                        ptr += 1
                        self._dispatch(LIGHT, now)
                        self._dispatch(HEAVY, now)
                else:
                    p1 = n if t_ev == math.inf else int(np.searchsorted(arr, t_ev, "left"))
                    self._admit(ptr, p1)
                    ptr = p1
                continue
            if not heap:
                break
            now, kind, _, w, gen = heapq.heappop(heap)
            self.events += 1
            if kind == _DONE:
                self._on_done(w, now)
            elif kind == _READY:
                if gen == self.gen[w]:
                    self.state[w] = IDLE
                    self.idle[self.model[w]].append(w)
                    self._dispatch(self.model[w], now)
            else:
                self._on_control(now)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        # Whatever is still queued has no worker left to serve it: it is shed.
        for q in self.fifo:
            ids = q.buf[q.head:q.tail]
            self.outcome[ids] = DROPPED
            q.head = q.tail
        loop_wall = time.perf_counter() - t_wall - self.planner_wall_s
        loop_cpu = time.process_time() - t_cpu - self.planner_cpu_s
        return SimResult(arrival_ms=self.arr, finish_ms=self.finish, outcome=self.outcome,
                         windows=tuple(self.windows), slo_ms=self.slo_ms, window_s=self.window_ms / 1000.0,
                         events=self.events, loop_wall_s=loop_wall, planner_wall_s=self.planner_wall_s,
                         loop_cpu_s=loop_cpu, planner_cpu_s=self.planner_cpu_s)


def simulate(trace: Trace, confidence: np.ndarray, loop: ControlLoop, config: SimConfig = SimConfig(),
             progress: bool = False) -> SimResult:
    """Runs one simulation of ``trace`` under the control ``loop``. See :class:`Simulator`."""
    return Simulator(trace, confidence, loop, config).run(progress=progress)
