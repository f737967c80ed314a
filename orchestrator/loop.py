"""The live control loop: every window, observe Triton, decide (shared pure core), apply.

One :class:`Orchestrator` manages one or more nodes (one Triton each). Per window it

1. samples every node (statistics + metrics) and turns the deltas into an
   :class:`~orchestrator.control.Observation`;
2. heals stage models that failed requests or turned unready (full reload with fresh stubs);
3. calls :func:`orchestrator.control.decide` (EWMA demand x over-provisioning -> planner);
4. spreads the plan's workers over the nodes' slots, diffs against the running placement and
   applies it: ``instance_group`` changes via ``load_model(config=...)`` (in-place instance
   updates), threshold/routing/batch sizes via the control file (no reload); a model that
   fails to load is backed off exponentially and the plan re-solved without its slots;
5. publishes per-node routing weights and appends one JSON line to the log.

On start it *adopts* what runs (repository index, model configs, control file) instead of
reloading; when it dies, Triton keeps serving the last plan (the control file persists).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from client.errors import DiffServeError
from orchestrator.control import (
    ControlConfig,
    DemandEstimator,
    Observation,
    Policy,
    build_instance,
    decide,
)
from orchestrator.health import Backoff, HealthBook
from orchestrator.hooks import LoopHooks
from orchestrator.node import TritonNode
from orchestrator.observe import NodeSample, merge, window_stats
from orchestrator.placement import (
    Placement,
    control_state,
    diff,
    routing_weights,
    slots_from_instance_group,
    split_workers,
)
from orchestrator.publish import JsonlLog, publish_weights
from orchestrator.server import PROJECT_ROOT
from planner.types import Allocation, Plan
from serving.control import (
    ControlState,
    default_control_path,
    read_control,
    resolve_control_path,
    write_control,
)
from serving.model_config import config_parameters

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
    slo_ms: float = 5000.0
    control_path: Path | None = None
    log_path: Path = RUNS / "orchestrator.jsonl"
    weights_path: Path = RUNS / "routing_weights.json"
    envoy_rds_path: Path | None = None
    backoff: Backoff = Backoff()
    max_resolves: int = 2
    health_interval_s: float | None = 1.0  # None: check health only once per window
    control_grace_s: float = 0.3  # after routing away from a model, before unloading it (3 x 100 ms re-read)

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
            "status": plan.status, "reason": plan.reason, "routing": plan.routing,
            "solve_time_ms": round(plan.solve_time_ms, 3)}


class Orchestrator:
    """The live loop over ``nodes``. ``control`` describes the cascade; its ``num_workers`` is
    replaced every window by the number of healthy slots."""

    def __init__(self, nodes: Sequence[TritonNode], control: ControlConfig, policy: Policy, config: LoopConfig,
                 estimator: DemandEstimator | None = None, clock: Callable[[], float] = time.monotonic,
                 hooks: Sequence[LoopHooks] = ()):
        if not nodes:
            raise ValueError("Orchestrator needs at least one node")
        self.nodes = list(nodes)
        self.control = control
        self.policy = policy
        self.config = config
        self.estimator = estimator or DemandEstimator()
        self.clock = clock
        self.hooks = tuple(hooks)  # deployment extensions (orchestrator/hooks.py)
        self.models = (config.light, config.heavy)
        self.placement: dict[str, Placement] = {}
        self.health = HealthBook()
        self.down: set[str] = set()
        self.log = JsonlLog(config.log_path)
        self.control_path: Path | None = config.control_path
        self.control_state: ControlState | None = None
        self.plan: Plan | None = None
        self.window = 0
        self._prev: dict[str, NodeSample] = {}  # at the last window
        self._health_prev: dict[str, NodeSample] = {}  # at the last health look (window or between)

    # -- adoption --------------------------------------------------------------------------
    def adopt(self) -> dict[str, Any]:
        """Read what runs (repository index, model configs, control file) without changing it;
        load only the models that must always be up (cascade, discriminator) if they are not."""
        for node in self.nodes:  # the always-up models first: the control file path is in their configs
            try:
                self._ensure_loaded(node)
            except DiffServeError:
                pass  # marked down below
        if self.control_path is None:  # it may load light to read its config
            self.control_path = self._control_path_from_config()
        adopted = {}
        for node in self.nodes:
            try:
                adopted[node.url] = self._adopt_node(node)
                self.down.discard(node.url)
            except DiffServeError as exc:
                self.down.add(node.url)
                adopted[node.url] = {"error": str(exc)}
        try:
            self.control_state = read_control(self.control_path)
        except (OSError, ValueError):
            self.control_state = None
        rec = {"event": "adopt", "t_unix_s": time.time(), "nodes": adopted, "control_file": str(self.control_path),
               "control": None if self.control_state is None else self.control_state.to_json()}
        self.log.write(rec)
        return rec

    def _adopt_node(self, node: TritonNode) -> dict[str, Any]:
        index = node.repository_index()
        taken: set[int] = set()
        slots: dict[str, tuple[int, ...]] = {}
        for m in self.models:
            if index.get(m) == "READY":
                cfg = node.model_config(m)
                slots[m] = slots_from_instance_group(node.spec.kind, cfg.get("instance_group", []), taken, node.spec.slots)
                taken.update(slots[m])
        self.placement[node.url] = Placement(slots)
        self._ensure_loaded(node, index)
        return {"index": index, "placement": self.placement[node.url].as_json()}

    def _ensure_loaded(self, node: TritonNode, index: dict[str, str] | None = None) -> None:
        """Load the cascade and the discriminator from the repository if they are not up."""
        index = node.repository_index() if index is None else index
        for m in (self.config.cascade, self.config.discriminator):
            if m and index.get(m) != "READY" and m in index:
                node.load_default(m)

    def _control_path_from_config(self) -> Path:
        """Where the serving models read the control file, resolved like they do: the cascade's
        ``control_file`` parameter, else the light stage's, else ``runs/control/<its cascade>.json``."""
        for node in self.nodes:
            if node.url in self.down:
                continue
            try:
                cascade = config_parameters(node.model_config(self.config.cascade))
                if cascade.get("control_file"):
                    return resolve_control_path(cascade["control_file"])
                if not node.is_ready(self.config.light):
                    node.load_default(self.config.light)  # its config names the control file
                light = config_parameters(node.model_config(self.config.light))
            except DiffServeError:
                continue
            if light.get("control_file"):
                return resolve_control_path(light["control_file"])
            return default_control_path(light.get("cascade") or "tiny")
        raise ValueError(f"no node answered for model {self.config.cascade!r}; pass control_path")

    # -- one window ------------------------------------------------------------------------
    def step(self, force_plan: bool = False) -> dict[str, Any]:
        """Observe, heal, decide and apply once; returns (and logs) the window's record.

        Right after adopting a running deployment the first call only observes (nothing is
        changed before one window is seen) unless ``force_plan``: plan from the prior demand now."""
        now = self.clock()
        rec: dict[str, Any] = {"event": "window", "window": self.window, "t_unix_s": time.time()}
        samples, stats = {}, {}
        for node in self.nodes:
            try:
                if node.url in self.down:
                    self._adopt_node(node)  # came back: take its state as it is
                    self.down.discard(node.url)
                samples[node.url] = node.sample()
            except DiffServeError as exc:
                self.down.add(node.url)
                rec.setdefault("node_errors", {})[node.url] = str(exc)[:300]
                continue
            if node.url in self._prev:
                stats[node.url] = window_stats(self._prev[node.url], samples[node.url], self.config.cascade)
        first = not self._prev
        self._prev.update(samples)
        observation = None
        if stats:
            ws = merge(stats.values())
            observation = Observation(window_start_ms=(now - ws.window_s) * 1000.0, window_s=ws.window_s,
                                      arrivals=ws.arrivals, drops=ws.drops, queue_delay_ms=dict(ws.queue_delay_ms),
                                      current=self._allocation())
            rec["observation"] = {"window_s": round(ws.window_s, 3), "arrivals": ws.arrivals,
                                  "completed": ws.completed, "failed": ws.failed, "drops": ws.drops,
                                  "pending": ws.pending, "arrival_rate_qps": round(observation.arrival_rate_qps, 3),
                                  "queue_delay_ms": {k: round(v, 2) for k, v in ws.queue_delay_ms.items()},
                                  "failures_by_model": dict(ws.failures_by_model)}
            rec["healed"] = self._heal(now, samples)
        elif first and self._placed_workers() > 0 and not force_plan:
            # Just adopted a running deployment: keep it until one full window is observed.
            rec["note"] = "adopted running state; first plan after one observed window"
            self._finish(rec)
            return rec
        self._decide_and_apply(now, observation, rec)
        self._finish(rec)
        return rec

    def restart_window(self) -> None:
        """Start the next observation window now (e.g. after a warm-up that is not demand):
        re-sample every node without deciding anything."""
        for node in self.nodes:
            if node.url in self.down:
                continue
            try:
                sample = node.sample()
            except DiffServeError:
                continue
            self._prev[node.url] = self._health_prev[node.url] = sample

    def _finish(self, rec: dict[str, Any]) -> None:
        rec["placement"] = {u: p.as_json() for u, p in self.placement.items()}
        rec["health"] = self.health.as_json(self.clock())
        rec["down"] = sorted(self.down)
        for hook in self.hooks:
            hook.window_finished(rec)
        self.log.write(rec)
        self.window += 1

    def check_health(self) -> list[dict]:
        """Between windows: sample every node and heal what failed since the last look.

        Cheap (one statistics + one metrics read per node), so the loop runs it every
        ``health_interval_s``: a dead stub is replaced within about a second instead of at the
        next window boundary. Returns (and logs, when not empty) the heal actions."""
        samples = {}
        for node in self.nodes:
            if node.url in self.down:
                continue
            try:
                samples[node.url] = node.sample()
            except DiffServeError:
                continue  # the next window marks it down
        healed = self._heal(self.clock(), samples)
        if healed:
            self.log.write({"event": "health", "window": self.window, "t_unix_s": time.time(), "healed": healed,
                            "placement": {u: p.as_json() for u, p in self.placement.items()}})
        return healed

    def _heal(self, now: float, samples: dict[str, NodeSample]) -> list[dict]:
        """Reload (fresh instances) every placed stage model that failed at least half of its
        requests since the last health look, or is not ready. The cascade validates requests
        before calling stages, so stage failures mean a broken instance, e.g. a dead stub."""
        healed = []
        for node in self.nodes:
            if node.url in self.down or node.url not in samples:
                continue
            prev, cur = self._health_prev.get(node.url), samples[node.url]
            self._health_prev[node.url] = cur
            for m in self.models:
                slots = self.placement.get(node.url, Placement()).slots.get(m, ())
                if not slots or self.health.in_backoff((node.url, m), now):
                    continue
                fails = oks = 0
                if prev is not None and m in cur.models and m in prev.models:
                    fails = max(0, cur.models[m].fail - prev.models[m].fail)
                    oks = max(0, cur.models[m].success - prev.models[m].success)
                # At least half failing: a broken instance (a dead stub fails everything it gets),
                # not a client's occasional bad request to a stage (inference is open to clients).
                if (fails == 0 or fails < oks) and node.is_ready(m):
                    continue
                reason = f"{fails} failed requests" if fails else "not ready"
                healed.append(self._run(node, m, slots, now, reason=reason, bump=True))
                if node.url in self._health_prev:  # counters restart with the reload
                    del self._health_prev[node.url]
        return healed

    def _decide_and_apply(self, now: float, observation: Observation | None, rec: dict[str, Any]) -> None:
        available = self._available(now)
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
            failed = self._apply_placement(plan, available, now, actions)
            if not failed or attempt == self.config.max_resolves:
                break
            # Re-solve without the quarantined slots (fewer workers), same demand estimate.
            available = self._available(now)
            n_avail = sum(len(v) for v in available.values())
            if n_avail < 1:
                break
            instance = build_instance(dataclasses.replace(self.control, num_workers=n_avail), decision.demand_qps,
                                      observation)
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
        running = self._running_workers()
        leaving = [m for m in self.models if running[m] > 0 and int(plan.workers.get(m, 0)) == 0]
        if not leaving or self.control_path is None:
            return
        interim = dataclasses.replace(plan, workers={m: (0 if m in leaving else running[m]) for m in self.models})
        self._write_control(interim, rec)
        rec["routed_away_before_unload"] = leaving
        time.sleep(self.config.control_grace_s)

    def _available(self, now: float) -> dict[str, tuple[int, ...]]:
        out = {}
        for node in self.nodes:
            if node.url in self.down:
                out[node.url] = ()
                continue
            q = self.health.quarantined(node.url, now)
            out[node.url] = tuple(s for s in node.spec.slots if s not in q)
        return out

    def _apply_placement(self, plan: Plan, available: dict, now: float, actions: list) -> bool:
        """Apply ``plan``'s placement; returns True when some action failed (slots quarantined)."""
        specs = [n.spec for n in self.nodes]
        workers = {m: int(plan.workers.get(m, 0)) for m in self.models}
        target = split_workers(workers, self.models, specs, available, self.placement)
        failed = False
        for node in self.nodes:
            if node.url in self.down:
                continue
            for act in diff(node.spec, self.placement.get(node.url, Placement()), target[node.url], self.models):
                if self.health.in_backoff((node.url, act.model), now):
                    actions.append({**act.as_json(), "result": "skipped: in backoff"})
                    continue
                if act.op == "unload":
                    res = self._run(node, act.model, (), now)
                else:
                    res = self._run(node, act.model, act.slots, now)
                actions.append({**act.as_json(), **res})
                failed = failed or res["result"] != "ok"
        return failed

    def _run(self, node: TritonNode, model: str, slots: tuple[int, ...], now: float, reason: str = "",
             bump: bool = False) -> dict[str, Any]:
        """Execute one change (``slots`` empty: unload) and record success / failure + backoff."""
        key = (node.url, model)
        before = self.placement.get(node.url, Placement()).slots.get(model, ())
        t0 = time.perf_counter()
        out: dict[str, Any] = {"node": node.url, "model": model, "slots": list(slots)}
        if reason:
            out["reason"] = reason
        try:
            if slots:
                node.set_instances(model, slots, bump_generation=bump)
            else:
                node.unload(model)
            self._set_slots(node.url, model, slots)
            self.health = self.health.succeeded(key)
            if self.config.discriminator and model == self.config.light and slots:
                self._follow_light(node, slots)
            out["result"] = "ok"
        except DiffServeError as exc:
            added = tuple(s for s in slots if s not in before) or tuple(slots) or before
            # The backoff starts when the failure is known (a failed load can take seconds).
            self.health = self.health.failed(key, self.clock(), added, str(exc), self.config.backoff)
            self._set_slots(node.url, model, self._running_slots(node, model))
            out["result"] = f"failed: {str(exc)[:300]}"
        out["wall_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        return out

    def _follow_light(self, node: TritonNode, light_slots: tuple[int, ...]) -> None:
        """The discriminator runs where light runs (it scores every light image)."""
        d = self.config.discriminator
        try:
            node.set_instances(d, light_slots)
        except DiffServeError:
            pass  # the discriminator keeps its previous instances; the cascade still serves

    def _running_slots(self, node: TritonNode, model: str) -> tuple[int, ...]:
        """What Triton actually runs for ``model`` now (after a failed change)."""
        try:
            if not node.is_ready(model):
                return ()
            cfg = node.model_config(model)
        except DiffServeError:
            return ()
        others = {s for m, ss in self.placement.get(node.url, Placement()).slots.items() if m != model for s in ss}
        before = self.placement.get(node.url, Placement()).slots.get(model, ())
        groups = cfg.get("instance_group", [])
        if node.spec.kind == "cpu":
            n = sum(int(g.get("count", 1)) for g in groups)
            keep = list(before[:n])
            keep += [s for s in node.spec.slots if s not in others and s not in keep][: n - len(keep)]
            return tuple(sorted(keep))
        return slots_from_instance_group("gpu", groups, others, node.spec.slots)

    def _set_slots(self, url: str, model: str, slots: tuple[int, ...]) -> None:
        cur = dict(self.placement.get(url, Placement()).slots)
        cur[model] = tuple(slots)
        self.placement[url] = Placement({m: s for m, s in cur.items() if s})

    def _placed_workers(self) -> int:
        return sum(p.count(m) for p in self.placement.values() for m in self.models)

    def _running_workers(self) -> dict[str, int]:
        return {m: sum(p.count(m) for p in self.placement.values()) for m in self.models}

    def _allocation(self) -> Allocation | None:
        if self.plan is None and self.control_state is None:
            return None
        bs = dict(self.plan.batch_size) if self.plan else {k: v for k, v in self.control_state.batch_size.items()}
        thr = self.plan.threshold if self.plan else self.control_state.threshold
        return Allocation(workers=self._running_workers(), batch_size=bs, threshold=thr)

    def _write_control(self, plan: Plan, rec: dict[str, Any]) -> None:
        # Route by what actually runs, so a model that failed to load is never routed to.
        running = self._running_workers()
        effective = dataclasses.replace(plan, workers=running)
        version = (self.control_state.version + 1) if self.control_state else 1
        state = control_state(effective, self.config.light, self.config.heavy, self.config.slo_ms, version)
        if self.control_state is None or dataclasses.replace(self.control_state, version=version) != state:
            write_control(self.control_path, state)
            self.control_state = state
            rec["control_written"] = True
            for hook in self.hooks:
                hook.control_written(state)
        rec["control"] = self.control_state.to_json()

    def _publish(self, plan: Plan, rec: dict[str, Any]) -> None:
        effective = dataclasses.replace(plan, workers=self._running_workers())
        live = {n.url: self.placement.get(n.url, Placement()) for n in self.nodes if n.url not in self.down}
        weights = routing_weights(effective, live, self.config.light, self.config.heavy) if live else {}
        weights.update({u: 0 for u in self.down})  # a node that does not answer gets no traffic
        publish_weights(weights, self.window, time.time(), self.config.weights_path, self.config.envoy_rds_path)
        rec["routing_weights"] = weights
        for hook in self.hooks:
            hook.weights_published(weights, self.window)

    # -- driving ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_windows: int | None = None,
            on_window: Callable[[dict[str, Any]], None] | None = None, step_first: bool = True) -> None:
        """Step every ``window_s`` until ``stop`` is set (or ``max_windows`` steps); the first
        step comes at once, or after one window when not ``step_first``."""
        next_t = self.clock()
        if not step_first and stop.wait(self.config.window_s):
            return
        next_t = self.clock()
        n = 0
        health_every_s = self.config.health_interval_s or self.config.window_s
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
            while not stop.is_set():
                remaining = next_t - self.clock()
                if remaining <= 0 or stop.wait(min(remaining, health_every_s)):
                    break
                if next_t - self.clock() > 0.2 * health_every_s:
                    try:
                        self.check_health()
                    except Exception as exc:  # noqa: BLE001 - never let a health look kill the loop
                        self.log.write({"event": "error", "t_unix_s": time.time(), "error": repr(exc)[:500]})
