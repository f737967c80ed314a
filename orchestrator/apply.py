"""Applying placements: the cluster's bookkeeping (what runs where, which models are failing,
which nodes are down) and the one way it changes, :meth:`Cluster.change`.

Every load / unload the orchestrator makes goes through :meth:`Cluster.change`, so the
bookkeeping always follows what Triton actually runs: a change that fails is backed off
(:mod:`orchestrator.health`) and the placement is re-read from Triton.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from client.errors import DiffServeError
from orchestrator.health import Backoff, HealthBook
from orchestrator.node import TritonNode
from orchestrator.placement import Placement, plan_actions, slots_from_instance_group, split_workers
from planner.types import Plan


class Cluster:
    """The nodes as the orchestrator believes they are.

    ``placement``: slots per model per node url; ``health``: failing (node, model) pairs and
    their backoff; ``down``: urls of nodes that did not answer. ``models`` are the two managed
    stage models (light, heavy); ``discriminator`` (or None) follows light's slots.
    """

    def __init__(self, nodes: Sequence[TritonNode], models: tuple[str, str], discriminator: str | None,
                 backoff: Backoff, clock: Callable[[], float]):
        self.nodes = list(nodes)
        self.models = models
        self.discriminator = discriminator
        self.backoff = backoff
        self.clock = clock
        self.placement: dict[str, Placement] = {}
        self.health = HealthBook()
        self.down: set[str] = set()
        self._lock = threading.Lock()  # changes may run in parallel threads (re-applying a plan after a restart)

    def placement_of(self, url: str) -> Placement:
        return self.placement.get(url, Placement())

    def placement_json(self) -> dict[str, dict[str, list[int]]]:
        return {u: p.as_json() for u, p in self.placement.items()}

    def available(self, now: float) -> dict[str, tuple[int, ...]]:
        """Slots per node that a plan may use: not on a down node, not quarantined."""
        out = {}
        for node in self.nodes:
            if node.url in self.down:
                out[node.url] = ()
                continue
            q = self.health.quarantined(node.url, now)
            out[node.url] = tuple(s for s in node.spec.slots if s not in q)
        return out

    def apply_placement(self, plan: Plan, available: dict, now: float, actions: list) -> bool:
        """Apply ``plan``'s placement; returns True when some action failed (slots quarantined)."""
        specs = [n.spec for n in self.nodes]
        workers = {m: int(plan.workers.get(m, 0)) for m in self.models}
        _, planned = plan_actions(workers, self.models, specs, available, self.placement)
        by_url = {n.url: n for n in self.nodes}
        failed = False
        for act in planned:  # the same placement decision as the simulator's
            node = by_url[act.node]
            if node.url in self.down:
                continue
            if self.health.in_backoff((node.url, act.model), now):
                actions.append({**act.as_json(), "result": "skipped: in backoff"})
                continue
            res = self.change(node, act.model, () if act.op == "unload" else act.slots, now)
            actions.append({**act.as_json(), **res})
            failed = failed or res["result"] != "ok"
        return failed

    def change(self, node: TritonNode, model: str, slots: tuple[int, ...], now: float, reason: str = "",
               bump: bool = False, follow: bool = True) -> dict[str, Any]:
        """Execute one change (``slots`` empty: unload) and record success / failure + backoff.
        ``follow``: the discriminator follows a change of light (off when the caller places it)."""
        key = (node.url, model)
        before = self.placement_of(node.url).slots.get(model, ())
        t0 = time.perf_counter()
        out: dict[str, Any] = {"node": node.url, "model": model, "slots": list(slots)}
        if reason:
            out["reason"] = reason
        try:
            if slots:
                node.set_instances(model, slots, bump_generation=bump)
            else:
                node.unload(model)
            self.set_slots(node.url, model, slots)
            with self._lock:
                self.health = self.health.succeeded(key)
            if follow and self.discriminator and model == self.models[0] and slots:
                self.follow_light(node, slots)
            out["result"] = "ok"
        except DiffServeError as exc:
            added = tuple(s for s in slots if s not in before) or tuple(slots) or before
            # The backoff starts when the failure is known (a failed load can take seconds).
            with self._lock:
                self.health = self.health.failed(key, self.clock(), added, str(exc), self.backoff)
            self.set_slots(node.url, model, self.running_slots(node, model))
            out["result"] = f"failed: {str(exc)[:300]}"
        out["wall_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        return out

    def follow_light(self, node: TritonNode, light_slots: tuple[int, ...]) -> None:
        """The discriminator runs where light runs (it scores every light image)."""
        try:
            node.set_instances(self.discriminator, light_slots)
        except DiffServeError:
            pass  # the discriminator keeps its previous instances; the cascade still serves

    def running_slots(self, node: TritonNode, model: str) -> tuple[int, ...]:
        """What Triton actually runs for ``model`` now (after a failed change)."""
        try:
            if not node.is_ready(model):
                return ()
            cfg = node.model_config(model)
        except DiffServeError:
            return ()
        others = {s for m, ss in self.placement_of(node.url).slots.items() if m != model for s in ss}
        before = self.placement_of(node.url).slots.get(model, ())
        groups = cfg.get("instance_group", [])
        if node.spec.kind == "cpu":
            n = sum(int(g.get("count", 1)) for g in groups)
            keep = list(before[:n])
            keep += [s for s in node.spec.slots if s not in others and s not in keep][: n - len(keep)]
            return tuple(sorted(keep))
        return slots_from_instance_group("gpu", groups, others, node.spec.slots)

    def set_slots(self, url: str, model: str, slots: tuple[int, ...]) -> None:
        with self._lock:
            cur = dict(self.placement_of(url).slots)
            cur[model] = tuple(slots)
            self.placement[url] = Placement({m: s for m, s in cur.items() if s})

    def target(self, plan: Plan, now: float) -> dict[str, Placement]:
        """Where ``plan``'s workers go on the available slots (running slots kept in place)."""
        workers = {m: int(plan.workers.get(m, 0)) for m in self.models}
        return split_workers(workers, self.models, [n.spec for n in self.nodes], self.available(now), self.placement)

    def placed_workers(self) -> int:
        return sum(p.count(m) for p in self.placement.values() for m in self.models)

    def running_workers(self) -> dict[str, int]:
        return {m: sum(p.count(m) for p in self.placement.values()) for m in self.models}

    def load_fresh(self, node: TritonNode, plan: Plan | None, always_up: Sequence[str | None],
                   now: float) -> list[dict[str, Any]]:
        """A node whose server just (re)started with nothing loaded: load the always-up models
        and ``plan``'s placement there all at once (Triton loads different models in parallel),
        so service is back after the slowest load instead of the sum of all. Returns one record
        per load."""
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        self.placement.pop(node.url, None)
        slots = self.target(plan, now)[node.url].slots if plan is not None else {}
        light_slots = slots.get(self.models[0], ())

        def always(model: str) -> dict[str, Any]:
            t0 = time.perf_counter()
            out: dict[str, Any] = {"node": node.url, "model": model, "op": "load"}
            try:
                if model == self.discriminator and light_slots:
                    node.set_instances(model, light_slots)  # it runs where light runs
                else:
                    node.load_default(model)
                out["result"] = "ok"
            except DiffServeError as exc:
                out["result"] = f"failed: {str(exc)[:300]}"
            out["wall_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
            return out

        try:  # an always-up model the repository does not have (e.g. no router) is not loaded
            index = node.repository_index()
        except DiffServeError:
            index = None
        jobs = [lambda m=m: always(m) for m in always_up if m and (index is None or m in index)]
        jobs += [lambda m=m, s=s: {**self.change(node, m, s, now, follow=False), "op": "set_instances"}
                 for m, s in slots.items() if m in self.models and s]
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            return list(pool.map(lambda job: job(), jobs))
