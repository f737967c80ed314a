"""Reading demand from a running Triton: cumulative counters in, per-window deltas out.

Two sources per node, both read by :mod:`orchestrator.node` and parsed here (pure):

- Triton's statistics protocol (restricted; the orchestrator sends the key): per model the
  cumulative ``success`` / ``fail`` request counts and total queueing time.
- The metrics endpoint (Prometheus text, bound to localhost): per model the number of
  requests waiting in the scheduler (``nv_inference_pending_request_count``, a gauge) and the
  cascade's own metrics from ``serving/triton/metrics.py`` (``diffserve_cascade_drops_total``,
  ``diffserve_cascade_errors_total``, and ``diffserve_cascade_in_flight``: requests the cascade
  accepted and has not answered yet, summed over its instances).

A window's arrivals are the cascade requests that finished (success + fail) plus the growth of
its pending queue: every request that arrived either finished, or is still waiting.

What the planner reads per window is built from these measurements by ONE pure function,
:func:`build_observation` (the simulator calls it too): per model a :class:`QueueWindow` in
queries (Triton counts requests; a stage request carries a whole batch of queries, so request
counts are scaled by the model's measured queries per request, ``inference_count / success``).

The cascade's ``execute`` hands each batch to its event loop and returns at once, so Triton
counts a cascade request as a success when the cascade ACCEPTED it (its answer, image, drop or
error, comes later); Triton's pending count is then only the queue in front of ``execute``, and
the cascade's own queue is ``in_flight``. A window's arrivals are the cascade requests Triton
handed to ``execute`` (success + fail) plus the growth of its pending queue.
"""
from __future__ import annotations

import dataclasses
import math
import re
from types import MappingProxyType
from typing import Iterable, Mapping

from orchestrator.control import Observation
from planner.types import Allocation

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?\s*$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

DROPS_METRIC = "diffserve_cascade_drops_total"
ERRORS_METRIC = "diffserve_cascade_errors_total"
PENDING_METRIC = "nv_inference_pending_request_count"
IN_FLIGHT_METRIC = "diffserve_cascade_in_flight"


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> ``[(metric name, labels, value)]`` (comments skipped).

    Raises ValueError naming the line when a sample line does not parse.
    """
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"metrics line {n}: {raw[:120]!r}; expected 'name{{labels}} value'")
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            value = float(m.group(4))
        except ValueError:
            raise ValueError(f"metrics line {n}: value {m.group(4)!r} is not a number") from None
        out.append((m.group(1), labels, value))
    return out


def _sum(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    total = 0.0
    for n, lab, v in samples:
        if n == name and all(lab.get(k) == want for k, want in labels.items()) and math.isfinite(v):
            total += v
    return total


@dataclasses.dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model since it was loaded (``queue_ns``: total queueing time, ns)."""

    success: int = 0
    fail: int = 0
    queue_count: int = 0
    queue_ns: int = 0
    pending: int = 0  # gauge: requests waiting in the scheduler now
    inferences: int = 0  # queries executed (Triton's inference_count: a batch of n requests' rows counts n)
    in_flight: int = 0  # gauge (the cascade): requests accepted by execute and not answered yet


@dataclasses.dataclass(frozen=True)
class NodeSample:
    """One node's counters at monotonic time ``t_s`` (seconds)."""

    t_s: float
    models: Mapping[str, ModelCounters]
    drops: int = 0
    errors: int = 0


def sample_from(t_s: float, statistics: Mapping, metrics_text: str) -> NodeSample:
    """Build a :class:`NodeSample` from a statistics reply (``as_json=True``) and metrics text."""
    samples = parse_prometheus(metrics_text)
    models: dict[str, ModelCounters] = {}
    for st in statistics.get("model_stats", []):
        name = st["name"]
        inf = st.get("inference_stats", {})

        def count(key: str, field: str = "count") -> int:
            return int(inf.get(key, {}).get(field, 0))

        models[name] = ModelCounters(
            success=count("success"), fail=count("fail"), queue_count=count("queue"),
            queue_ns=count("queue", "ns"), pending=int(_sum(samples, PENDING_METRIC, model=name)),
            inferences=int(st.get("inference_count", 0)),
            in_flight=int(_sum(samples, IN_FLIGHT_METRIC, model=name)),
        )
    return NodeSample(t_s=t_s, models=MappingProxyType(models),
                      drops=int(_sum(samples, DROPS_METRIC)), errors=int(_sum(samples, ERRORS_METRIC)))


@dataclasses.dataclass(frozen=True)
class QueueWindow:
    """What one model's queue saw during one control window, counted in queries.

    ``arrived``: queries that entered the queue; ``started``: queries that left it (began
    executing); ``wait_s``: the total queueing time of the ``started`` queries (their whole
    wait, also the part before the window began), in query-seconds; ``waiting_end``: queries
    still waiting when the window ended. Both the live loop (Triton statistics + metrics,
    :func:`queue_window`) and the simulator measure exactly these.
    """

    arrived: float = 0.0
    started: float = 0.0
    wait_s: float = 0.0
    waiting_end: float = 0.0

    def __post_init__(self) -> None:
        for name in ("arrived", "started", "wait_s", "waiting_end"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"QueueWindow.{name} = {v!r}; expected a finite number >= 0")

    def __add__(self, other: "QueueWindow") -> "QueueWindow":
        return QueueWindow(self.arrived + other.arrived, self.started + other.started,
                           self.wait_s + other.wait_s, self.waiting_end + other.waiting_end)


@dataclasses.dataclass(frozen=True)
class WindowStats:
    """What happened on the serving side between two samples.

    ``arrivals``: cascade requests that arrived; ``completed``/``failed``: that Triton counted
    as a success / failure (for the cascade: accepted by its ``execute``, see the module
    docstring); ``drops``: load-shed requests (a subset of ``failed``); ``pending``: cascade
    requests waiting for ``execute`` at the end; ``in_flight``: cascade requests accepted and not
    yet answered at the end (its own queue); ``queues``: per model, its :class:`QueueWindow`
    (queries); ``failures_by_model``: failed requests per model (a stage model that fails is
    unhealthy, e.g. a dead stub process). ``window_s`` is the elapsed seconds.
    """

    window_s: float
    arrivals: int
    completed: int
    failed: int
    drops: int
    pending: int
    queues: Mapping[str, QueueWindow] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    failures_by_model: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    in_flight: int = 0

    @property
    def queue_delay_ms(self) -> dict[str, float]:
        """Mean queueing delay per model of the queries it started in the window (absent when none)."""
        return {m: 1000.0 * q.wait_s / q.started for m, q in self.queues.items() if q.started > 0}


def _delta(cur: int, prev: int) -> int:
    # A counter that went down means the model was reloaded (counters restart at 0): the
    # current value is then the best estimate of what happened since.
    return cur - prev if cur >= prev else cur


def queue_window(prev: ModelCounters, cur: ModelCounters) -> QueueWindow:
    """One model's :class:`QueueWindow` from two samples of its Triton counters (pure).

    Triton counts requests; each is scaled by the window's queries per request
    (``inference_count`` over successful requests; 1 when nothing succeeded)."""
    success, inferences = _delta(cur.success, prev.success), _delta(cur.inferences, prev.inferences)
    per_request = inferences / success if success > 0 and inferences > 0 else 1.0
    arrived = max(0, success + _delta(cur.fail, prev.fail) + cur.pending - prev.pending)
    return QueueWindow(arrived=arrived * per_request, started=_delta(cur.queue_count, prev.queue_count) * per_request,
                       wait_s=_delta(cur.queue_ns, prev.queue_ns) / 1e9 * per_request,
                       waiting_end=cur.pending * per_request)


def window_stats(prev: NodeSample, cur: NodeSample, cascade: str = "cascade") -> WindowStats:
    """The deltas between two samples of the same node (pure). Raises ValueError if time ran backwards."""
    window_s = cur.t_s - prev.t_s
    if not window_s > 0:
        raise ValueError(f"samples at t={prev.t_s} s and t={cur.t_s} s; expected the second strictly later")
    zero = ModelCounters()
    queues: dict[str, QueueWindow] = {}
    fails: dict[str, int] = {}
    for name, c in cur.models.items():
        p = prev.models.get(name, zero)
        if _delta(c.fail, p.fail) > 0:
            fails[name] = _delta(c.fail, p.fail)
        queues[name] = queue_window(p, c)
    cc, pc = cur.models.get(cascade, zero), prev.models.get(cascade, zero)
    completed, failed = _delta(cc.success, pc.success), _delta(cc.fail, pc.fail)
    arrivals = max(0, completed + failed + cc.pending - pc.pending)
    return WindowStats(window_s=window_s, arrivals=arrivals, completed=completed, failed=failed,
                       drops=_delta(cur.drops, prev.drops), pending=cc.pending,
                       queues=MappingProxyType(queues), failures_by_model=MappingProxyType(fails),
                       in_flight=cc.in_flight)


def merge(stats: Iterable[WindowStats]) -> WindowStats:
    """Sum several nodes' windows into one (counts and queue measurements add up)."""
    stats = list(stats)
    if not stats:
        raise ValueError("merge() needs at least one WindowStats")
    queues: dict[str, QueueWindow] = {}
    fails: dict[str, int] = {}
    for s in stats:
        for k, q in s.queues.items():
            queues[k] = queues.get(k, QueueWindow()) + q
        for k, v in s.failures_by_model.items():
            fails[k] = fails.get(k, 0) + v
    return WindowStats(
        window_s=max(s.window_s for s in stats),
        arrivals=sum(s.arrivals for s in stats), completed=sum(s.completed for s in stats),
        failed=sum(s.failed for s in stats), drops=sum(s.drops for s in stats),
        pending=sum(s.pending for s in stats), in_flight=sum(s.in_flight for s in stats),
        queues=MappingProxyType(queues), failures_by_model=MappingProxyType(fails),
    )


def build_observation(window_start_ms: float, window_s: float, arrivals: int, queues: Mapping[str, QueueWindow],
                      current: Allocation | None, drops: int = 0, timeouts: int = 0) -> Observation:
    """The planner's per-window input from plain measurements (pure; the live loop and the
    simulator both call it, so the planner sees the same quantities from both).

    ``arrivals``: queries that arrived at the cascade in ``[window_start_ms, +window_s)``;
    ``queues``: per model name, its :class:`QueueWindow`; ``current``: the allocation in force.
    Per model:

    - ``queue_delay_ms`` = ``wait_s / started`` (absent when nothing started);
    - ``model_arrival_qps`` = ``arrived / window_s``;
    - ``queue_length`` (time-averaged queries waiting) by Little's law, arrival rate x mean
      delay; a model that started nothing while queries waited gets ``waiting_end`` (its
      backlog), since it has no measured delay.

    So the planner's Little's-law estimate ``queue_length / model_arrival_qps`` equals the
    measured mean delay whenever both are known.
    """
    if not window_s > 0:
        raise ValueError(f"window_s={window_s}; expected > 0 seconds")
    delay_ms, length, rate_qps = {}, {}, {}
    for model, q in queues.items():
        rate_qps[model] = q.arrived / window_s
        if q.started > 0:
            delay_ms[model] = 1000.0 * q.wait_s / q.started
            length[model] = rate_qps[model] * q.wait_s / q.started
        else:
            length[model] = q.waiting_end
    return Observation(window_start_ms=window_start_ms, window_s=window_s, arrivals=arrivals, drops=drops,
                       timeouts=timeouts, queue_delay_ms=delay_ms, queue_length=length, model_arrival_qps=rate_qps,
                       current=current)
