"""The live control loop: every window, observe Triton, decide (shared pure core), apply.

One :class:`Orchestrator` manages one or more nodes (one Triton each). Per window it

1. samples every node (statistics + metrics) and turns the deltas into an
   :class:`~orchestrator.control.Observation` (:mod:`orchestrator.observe`);
2. heals stage models that failed requests or turned unready (full reload with fresh stubs,
   :mod:`orchestrator.heal`);
3. calls :func:`orchestrator.control.decide` (EWMA demand x over-provisioning -> planner);
4. spreads the plan's workers over the nodes' slots, diffs against the running placement and
   applies it (:mod:`orchestrator.apply`): ``instance_group`` changes via
   ``load_model(config=...)`` (in-place instance updates), threshold/routing/batch sizes via
   the control file (no reload); a model that fails to load is backed off exponentially and
   the plan re-solved without its slots;
5. publishes per-node routing weights and appends one JSON line to the log.

On start it *adopts* what runs (repository index, model configs, control file;
:mod:`orchestrator.adopt`) instead of reloading; when it dies, Triton keeps serving the last
plan (the control file persists).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from client.errors import DiffServeError
from orchestrator.adopt import adopt_node, control_path_from_config, ensure_loaded, served_cascade_check
from orchestrator.apply import Cluster
from orchestrator.control import ControlConfig, DemandEstimator, Observation, Policy, build_instance, decide
from orchestrator.heal import heal
from orchestrator.health import Backoff
from orchestrator.hooks import LoopHooks
from orchestrator.node import TritonNode
from orchestrator.observe import NodeSample, WindowStats, build_observation, merge, window_stats
from orchestrator.placement import control_state, routing_weights
from orchestrator.publish import JsonlLog, publish_weights, write_metrics
from orchestrator.server import PROJECT_ROOT
from orchestrator.supervise import ServerSupervisor
from planner.types import Allocation, Plan
from serving.control import ControlState, read_control, write_control

RUNS = PROJECT_ROOT / "runs" / "orchestrator"


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Knobs of the live loop. ``control_path`` None: the cascade model's ``control_file``
    parameter (relative paths under the project root). Times in seconds."""

    window_s: float = 5.0
    light: str = "light"
    heavy: str = "heavy"
    cascade: str = "cascade"
    discriminator: str | None = "discriminator"  # follows light's slots; None: not managed
    router: str | None = "router"  # the prompt router (CPU, always up) when the repository has one
    slo_ms: float | None = None  # None: the ControlConfig's (the cascade YAML's); set, it must agree
    slo_source: str = ""  # where the SLO came from (the YAML, or an explicit override), for the log
    cascade_config_hash: str | None = None  # of the cascade YAML planned for; checked against the served one
    control_path: Path | None = None
    log_path: Path = RUNS / "orchestrator.jsonl"
    metrics_path: Path = RUNS / "metrics.prom"
    weights_path: Path = RUNS / "routing_weights.json"
    envoy_rds_path: Path | None = None
    backoff: Backoff = Backoff()
    max_resolves: int = 2
    health_interval_s: float | None = 1.0  # None: check health only once per window
    control_grace_s: float = 0.3  # after routing away from a model, before unloading it (3 x 100 ms re-read)
    supervise_interval_s: float = 0.25  # how often a supervised server's process is checked (a pid look)

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s={self.window_s}; expected > 0 seconds")
        if self.health_interval_s is not None and not self.health_interval_s > 0:
            raise ValueError(f"health_interval_s={self.health_interval_s}; expected > 0 seconds or None")
        if self.light == self.heavy:
            raise ValueError(f"light and heavy are both {self.light!r}; expected two different models")


def plan_json(plan: Plan) -> dict[str, Any]:
    return {"policy": plan.policy, "workers": dict(plan.workers), "batch_size": dict(plan.batch_size),
            "threshold": plan.threshold, "capacity_qps": {k: round(v, 3) for k, v in plan.capacity_qps.items()},
            "expected_fid": plan.expected_fid, "light_fraction": plan.light_fraction, "slack_ms": plan.slack_ms,
            "status": plan.status, "reason": plan.reason, "routing": plan.routing, "router_share": plan.router_share,
            "solve_time_ms": round(plan.solve_time_ms, 3)}


class Orchestrator:
    """The live loop over ``nodes``. ``control`` describes the cascade; its ``num_workers`` is
    replaced every window by the number of healthy slots."""

    def __init__(self, nodes: Sequence[TritonNode], control: ControlConfig, policy: Policy, config: LoopConfig,
                 estimator: DemandEstimator | None = None, clock: Callable[[], float] = time.monotonic,
                 supervisor: ServerSupervisor | None = None, hooks: Sequence[LoopHooks] = ()):
        if not nodes:
            raise ValueError("Orchestrator needs at least one node")
        if config.slo_ms is not None and config.slo_ms != control.slo_ms:
            raise ValueError(f"LoopConfig.slo_ms={config.slo_ms} but ControlConfig.slo_ms={control.slo_ms}; "
                             "expected one SLO (leave LoopConfig.slo_ms None)")
        self.control = control
        self.policy = policy
        self.config = config
        self.estimator = estimator or DemandEstimator()
        self.clock = clock
        self.hooks = tuple(hooks)  # deployment extensions (orchestrator/hooks.py)
        self.models = (config.light, config.heavy)
        self.cluster = Cluster(nodes, self.models, config.discriminator, config.backoff, clock)
        self.log = JsonlLog(config.log_path)
        self.control_path: Path | None = config.control_path
        self.control_state: ControlState | None = None
        self.plan: Plan | None = None
        self.window = 0
        self._prev: dict[str, NodeSample] = {}  # at the last window
        self._health_prev: dict[str, NodeSample] = {}  # at the last health look (window or between)
        self.supervisor = supervisor
        if supervisor is not None and supervisor.grpc_url not in {n.url for n in nodes}:
            raise ValueError(f"the supervised server listens on {supervisor.grpc_url}; expected one of the nodes "
                             f"{[n.url for n in nodes]}")
        self.counters = {"windows_total": 0, "heals_total": 0, "server_restarts_total": 0,
                         "server_restart_failures_total": 0, "shm_regions_removed_total": 0}

    @property
    def nodes(self) -> list[TritonNode]:
        return self.cluster.nodes

    @property
    def _always_up(self) -> tuple[str | None, ...]:
        return (self.config.cascade, self.config.discriminator, self.config.router)

    # -- adoption --------------------------------------------------------------------------
    def adopt(self) -> dict[str, Any]:
        """Read what runs (repository index, model configs, control file) without changing it;
        load only the models that must always be up (cascade, discriminator) if they are not."""
        for node in self.nodes:  # the always-up models first: the control file path is in their configs
            try:
                ensure_loaded(node, self._always_up)
            except DiffServeError:
                pass  # marked down below
        if self.control_path is None:  # it may load light to read its config
            self.control_path = control_path_from_config(self.cluster, self.config.cascade)
        adopted = {}
        for node in self.nodes:
            try:
                adopted[node.url] = adopt_node(self.cluster, node, self._always_up)
                self.cluster.down.discard(node.url)
            except DiffServeError as exc:
                self.cluster.down.add(node.url)
                adopted[node.url] = {"error": str(exc)}
        try:
            self.control_state = read_control(self.control_path)
        except (OSError, ValueError):
            self.control_state = None
        rec = {"event": "adopt", "t_unix_s": time.time(), "nodes": adopted, "control_file": str(self.control_path),
               "control": None if self.control_state is None else self.control_state.to_json(),
               "slo_ms": self.control.slo_ms, "slo_source": self.config.slo_source,
               **served_cascade_check(self.cluster, self.config.cascade_config_hash)}
        self.log.write(rec)
        return rec

    # -- one window ------------------------------------------------------------------------
    def step(self, force_plan: bool = False) -> dict[str, Any]:
        """Observe, heal, decide and apply once; returns (and logs) the window's record.

        Right after adopting a running deployment the first call only observes (nothing is
        changed before one window is seen) unless ``force_plan``: plan from the prior demand now."""
        self.supervise()
        now = self.clock()
        rec: dict[str, Any] = {"event": "window", "window": self.window, "t_unix_s": time.time()}
        samples, stats = self._sample_window(rec)
        first = not self._prev
        self._prev.update(samples)
        observation = None
        if stats:
            observation = self._observation(now, merge(stats.values()), rec)
            rec["healed"] = heal(self.cluster, self._health_prev, samples, now)
        elif first and self.cluster.placed_workers() > 0 and not force_plan:
            # Just adopted a running deployment: keep it until one full window is observed.
            rec["note"] = "adopted running state; first plan after one observed window"
            self._finish(rec)
            return rec
        self._decide_and_apply(now, observation, rec)
        self._finish(rec)
        return rec

    def _sample_window(self, rec: dict[str, Any]) -> tuple[dict[str, NodeSample], dict[str, WindowStats]]:
        """Sample every node (re-adopting nodes that came back); the window's deltas per node
        that was also sampled at the last window. Nodes that do not answer are marked down."""
        samples, stats = {}, {}
        for node in self.nodes:
            try:
                if node.url in self.cluster.down:
                    adopt_node(self.cluster, node, self._always_up)  # came back: take its state as it is
                    self.cluster.down.discard(node.url)
                samples[node.url] = node.sample()
            except DiffServeError as exc:
                self.cluster.down.add(node.url)
                rec.setdefault("node_errors", {})[node.url] = str(exc)[:300]
                continue
            if node.url in self._prev:
                stats[node.url] = window_stats(self._prev[node.url], samples[node.url], self.config.cascade)
        return samples, stats

    def _observation(self, now: float, ws: WindowStats, rec: dict[str, Any]) -> Observation:
        """The planner's input for the window that ends ``now`` (:func:`build_observation`); its
        measurements go into the window's record."""
        cascade = ws.queues.get(self.config.cascade)
        arrivals = round(cascade.arrived) if cascade is not None else ws.arrivals  # queries, not requests
        observation = build_observation(window_start_ms=(now - ws.window_s) * 1000.0, window_s=ws.window_s,
                                        arrivals=arrivals, queues=ws.queues, current=self._allocation(),
                                        drops=ws.drops)
        rec["observation"] = {
            "window_s": round(ws.window_s, 3), "arrivals": arrivals, "completed": ws.completed, "failed": ws.failed,
            "drops": ws.drops, "pending": ws.pending, "in_flight": ws.in_flight, "arrival_rate_qps": round(observation.arrival_rate_qps, 3),
            **{field: {k: round(v, 3) for k, v in getattr(observation, field).items()}
               for field in ("queue_delay_ms", "queue_length", "model_arrival_qps")},
            "failures_by_model": dict(ws.failures_by_model)}
        return observation

    def restart_window(self) -> None:
        """Start the next observation window now (e.g. after a warm-up that is not demand):
        re-sample every node without deciding anything."""
        for node in self.nodes:
            if node.url in self.cluster.down:
                continue
            try:
                sample = node.sample()
            except DiffServeError:
                continue
            self._prev[node.url] = self._health_prev[node.url] = sample

    def _finish(self, rec: dict[str, Any]) -> None:
        rec["placement"] = self.cluster.placement_json()
        rec["health"] = self.cluster.health.as_json(self.clock())
        rec["down"] = sorted(self.cluster.down)
        for hook in self.hooks:
            hook.window_finished(rec)
        self.log.write(rec)
        self.window += 1
        self.counters["windows_total"] += 1
        self.counters["heals_total"] += len(rec.get("healed", []))
        write_metrics(self.config.metrics_path, self.counters)

    def check_health(self) -> list[dict]:
        """Between windows: sample every node and heal what failed since the last look.

        Cheap (one statistics + one metrics read per node), so the loop runs it every
        ``health_interval_s``: a dead stub is replaced within about a second instead of at the
        next window boundary. Returns (and logs, when not empty) the heal actions."""
        if self.supervisor is not None and self.supervisor.alive():
            self.supervisor.watch()  # its /dev/shm regions, to remove them if it dies
        samples = {}
        for node in self.nodes:
            if node.url in self.cluster.down:
                continue
            try:
                samples[node.url] = node.sample()
            except DiffServeError:
                continue  # the next window marks it down
        healed = heal(self.cluster, self._health_prev, samples, self.clock())
        if healed:
            self.log.write({"event": "health", "window": self.window, "t_unix_s": time.time(), "healed": healed,
                            "placement": self.cluster.placement_json()})
            self.counters["heals_total"] += len(healed)
            write_metrics(self.config.metrics_path, self.counters)
        return healed

    def supervise(self) -> dict[str, Any] | None:
        """If the supervised tritonserver has exited: restart it (:mod:`orchestrator.supervise`),
        take the new server's state as it is and re-apply the current plan at once (not at the
        next window). Returns (and logs, and counts) the restart event; None when it runs."""
        sup = self.supervisor
        if sup is None or sup.alive():
            return None
        event = sup.restart()
        if event is None:
            return None  # a failed restart waits for its backoff
        self.counters["shm_regions_removed_total"] = sup.regions_removed
        if event["result"] != "ok":
            self.counters["server_restart_failures_total"] += 1
        else:
            t0 = time.monotonic()
            node = next(n for n in self.nodes if n.url == sup.grpc_url)
            event["reapplied"] = self._reapply(node)
            sup.watch()
            event["reapply_s"] = round(time.monotonic() - t0, 3)
            self.counters["server_restarts_total"] += 1
            self.counters["last_server_restart_seconds"] = event["restart_s"] + event["reapply_s"]
        self.log.write({**event, "window": self.window, "placement": self.cluster.placement_json()})
        write_metrics(self.config.metrics_path, self.counters)
        return event

    def _reapply(self, node: TritonNode) -> dict[str, Any]:
        """A fresh server on ``node``: forget its counters, load the always-up models and the
        current plan's placement there in parallel (:meth:`Cluster.load_fresh`), then make the
        control file route by what runs."""
        for prev in (self._prev, self._health_prev):
            prev.pop(node.url, None)
        self.cluster.down.discard(node.url)
        node.reconnect()
        rec: dict[str, Any] = {"actions": self.cluster.load_fresh(node, self.plan, self._always_up, self.clock())}
        if self.plan is not None:
            self._write_control(self.plan, rec)
        return rec

    def _decide_and_apply(self, now: float, observation: Observation | None, rec: dict[str, Any]) -> None:
        available = self.cluster.available(now)
        n_avail = sum(len(v) for v in available.values())
        if n_avail < 1:
            rec["note"] = "no healthy slot: nothing to plan"
            return
        decision = decide(dataclasses.replace(self.control, num_workers=n_avail), self.policy, self.estimator, observation)
        self.estimator = decision.estimator
        rec["demand_qps"] = round(decision.demand_qps, 4)
        rec["planner_wall_ms"] = round(decision.planner_wall_ms, 3)
        plan, actions, resolves = decision.plan, [], []
        rec["plan"] = plan_json(plan)
        self._route_away_before_unload(plan, rec)
        for attempt in range(self.config.max_resolves + 1):
            failed = self.cluster.apply_placement(plan, available, now, actions)
            if not failed or attempt == self.config.max_resolves:
                break
            # Re-solve without the quarantined slots (fewer workers), same demand estimate.
            available = self.cluster.available(now)
            n_avail = sum(len(v) for v in available.values())
            if n_avail < 1:
                break
            instance = build_instance(dataclasses.replace(self.control, num_workers=n_avail), decision.demand_qps,
                                      observation, decision.estimator.overprovision)
            plan = self.policy.plan(instance)
            resolves.append(plan_json(plan))
        rec["actions"] = actions
        if resolves:
            rec["resolved_plans"] = resolves
        self.plan = plan
        self._write_control(plan, rec)
        self._publish(plan, rec)

    def _route_away_before_unload(self, plan: Plan, rec: dict[str, Any]) -> None:
        """Before a model is unloaded everywhere, stop routing to it and let the serving models
        re-read the control file (they check every 100 ms), so no request is sent to a model
        that is going away. Loads need no such step: the control file is written after them."""
        running = self.cluster.running_workers()
        leaving = [m for m in self.models if running[m] > 0 and int(plan.workers.get(m, 0)) == 0]
        if not leaving or self.control_path is None:
            return
        interim = dataclasses.replace(plan, workers={m: (0 if m in leaving else running[m]) for m in self.models})
        self._write_control(interim, rec)
        rec["routed_away_before_unload"] = leaving
        time.sleep(self.config.control_grace_s)

    def _allocation(self) -> Allocation | None:
        if self.plan is None and self.control_state is None:
            return None
        bs = dict(self.plan.batch_size) if self.plan else {k: v for k, v in self.control_state.batch_size.items()}
        thr = self.plan.threshold if self.plan else self.control_state.threshold
        return Allocation(workers=self.cluster.running_workers(), batch_size=bs, threshold=thr)

    def _write_control(self, plan: Plan, rec: dict[str, Any]) -> None:
        # Route by what actually runs, so a model that failed to load is never routed to.
        effective = dataclasses.replace(plan, workers=self.cluster.running_workers())
        version = (self.control_state.version + 1) if self.control_state else 1
        state = control_state(effective, self.config.light, self.config.heavy, self.control.slo_ms, version,
                              router=self.control.router)
        if self.control_state is None or dataclasses.replace(self.control_state, version=version) != state:
            write_control(self.control_path, state)
            self.control_state = state
            rec["control_written"] = True
            for hook in self.hooks:
                hook.control_written(state)
        rec["control"] = self.control_state.to_json()

    def _publish(self, plan: Plan, rec: dict[str, Any]) -> None:
        effective = dataclasses.replace(plan, workers=self.cluster.running_workers())
        down = self.cluster.down
        live = {n.url: self.cluster.placement_of(n.url) for n in self.nodes if n.url not in down}
        weights = routing_weights(effective, live, self.config.light, self.config.heavy) if live else {}
        weights.update({u: 0 for u in down})  # a node that does not answer gets no traffic
        publish_weights(weights, self.window, time.time(), self.config.weights_path, self.config.envoy_rds_path)
        rec["routing_weights"] = weights
        for hook in self.hooks:
            hook.weights_published(weights, self.window)

    # -- driving ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_windows: int | None = None,
            on_window: Callable[[dict[str, Any]], None] | None = None, step_first: bool = True) -> None:
        """Step every ``window_s`` until ``stop`` is set (or ``max_windows`` steps); the first
        step comes at once, or after one window when not ``step_first``."""
        if not step_first and stop.wait(self.config.window_s):
            return
        next_t = self.clock()
        n = 0
        while not stop.is_set() and (max_windows is None or n < max_windows):
            try:
                rec = self.step()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad window
                rec = {"event": "error", "window": self.window, "t_unix_s": time.time(), "error": repr(exc)[:500]}
                self.log.write(rec)
                self.window += 1
            if on_window is not None:
                on_window(rec)
            n += 1
            next_t += self.config.window_s
            self._between_windows(stop, next_t)

    def _between_windows(self, stop: threading.Event, next_t: float) -> None:
        """Wait until ``next_t`` (or ``stop``), checking health every ``health_interval_s`` and a
        supervised server's process every ``supervise_interval_s``."""
        health_every_s = self.config.health_interval_s or self.config.window_s
        tick_s = min(health_every_s, self.config.supervise_interval_s) if self.supervisor else health_every_s
        next_health = self.clock() + health_every_s
        while not stop.is_set():
            remaining = next_t - self.clock()
            if remaining <= 0 or stop.wait(min(remaining, tick_s)):
                break
            try:
                self.supervise()
                if self.clock() >= next_health - 1e-6 and next_t - self.clock() > 0.2 * health_every_s:
                    self.check_health()
                    next_health = self.clock() + health_every_s
            except Exception as exc:  # noqa: BLE001 - never let a health look kill the loop
                self.log.write({"event": "error", "t_unix_s": time.time(), "error": repr(exc)[:500]})
