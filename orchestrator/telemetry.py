"""The orchestrator's own Prometheus metrics, kept from its window records (pure).

:class:`OrchestratorMetrics` takes every record the loop produces (``window`` and ``error``
events) and renders the Prometheus text exposition served at ``/metrics`` by
:mod:`orchestrator.endpoint`:

| metric | kind | labels |
| --- | --- | --- |
| ``diffserve_orchestrator_windows_total`` | counter | control windows stepped |
| ``diffserve_orchestrator_failures_total`` | counter | ``kind``: action (a load/unload failed), window (a step raised), node (a node did not answer) |
| ``diffserve_orchestrator_actions_total`` | counter | ``op`` (set_instances / unload / heal), ``result`` (ok / failed / skipped) |
| ``diffserve_orchestrator_arrival_rate_qps`` | gauge | measured arrival rate of the last window |
| ``diffserve_orchestrator_demand_qps`` | gauge | demand estimate the plan was made for |
| ``diffserve_orchestrator_threshold`` | gauge | the plan's confidence threshold |
| ``diffserve_orchestrator_light_fraction`` | gauge | share of queries the plan expects light to answer |
| ``diffserve_orchestrator_plan_workers`` | gauge | ``model``: workers in the plan |
| ``diffserve_orchestrator_plan_batch_size`` | gauge | ``model``: batch size in the plan |
| ``diffserve_orchestrator_solve_time_ms`` | gauge | the planner's solve time for the last plan |
| ``diffserve_orchestrator_control_version`` | gauge | version of the control state in force |
| ``diffserve_orchestrator_node_up`` | gauge | ``node``: 1 when the node answered this window |
| ``diffserve_orchestrator_node_workers`` | gauge | ``node``, ``model``: instances placed there |
| ``diffserve_orchestrator_routing_weight`` | gauge | ``node``: published balancer weight |
| ``diffserve_orchestrator_node_control_version`` | gauge | ``node``: version its agent holds (-1: unknown) |
| ``diffserve_orchestrator_node_stale`` | gauge | ``node``: 1 when it misses the current control state |
"""
from __future__ import annotations

import threading
from typing import Any, Iterable, Mapping

PREFIX = "diffserve_orchestrator_"
_HELP = {
    "windows_total": ("counter", "Control windows stepped"),
    "failures_total": ("counter", "Failures: action (load/unload failed), window (a step raised), node (no answer)"),
    "actions_total": ("counter", "Placement actions by operation and result"),
    "arrival_rate_qps": ("gauge", "Measured arrival rate of the last window, queries/s"),
    "demand_qps": ("gauge", "Demand estimate the last plan was made for, queries/s"),
    "threshold": ("gauge", "Confidence threshold of the last plan"),
    "light_fraction": ("gauge", "Share of queries the last plan expects light to answer"),
    "plan_workers": ("gauge", "Workers per model in the last plan"),
    "plan_batch_size": ("gauge", "Batch size per model in the last plan"),
    "solve_time_ms": ("gauge", "Planner solve time of the last plan, ms"),
    "control_version": ("gauge", "Version of the control state in force at the orchestrator"),
    "node_up": ("gauge", "1 when the node answered in the last window"),
    "node_workers": ("gauge", "Instances per model placed on the node"),
    "routing_weight": ("gauge", "Routing weight published for the node"),
    "node_control_version": ("gauge", "Control-state version the node's agent holds (-1: unknown)"),
    "node_stale": ("gauge", "1 when the node has missed the current control state"),
}


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(esc.items())) + "}"


class OrchestratorMetrics:
    """Counters and last-window gauges; ``observe(rec)`` per record, ``render()`` for ``/metrics``."""

    def __init__(self, nodes: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._nodes = tuple(nodes)
        self._counters: dict[tuple[str, tuple], float] = {("windows_total", ()): 0.0}
        for kind in ("action", "window", "node"):
            self._counters[("failures_total", (("kind", kind),))] = 0.0
        self._gauges: dict[tuple[str, tuple], float] = {}

    def _inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self._counters[key] = self._counters.get(key, 0.0) + value

    def _set(self, name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            self._gauges[(name, tuple(sorted(labels.items())))] = float(value)

    def observe(self, rec: Mapping[str, Any]) -> None:
        """Take one loop record (``event`` window or error; others are ignored)."""
        with self._lock:
            if rec.get("event") == "error":
                self._inc("failures_total", kind="window")
                return
            if rec.get("event") != "window":
                return
            self._inc("windows_total")
            self._window(rec)

    def _window(self, rec: Mapping[str, Any]) -> None:
        self._inc("failures_total", len(rec.get("node_errors", {})), kind="node")
        for act in list(rec.get("actions", [])) + list(rec.get("healed", [])):
            result = str(act.get("result", ""))
            outcome = "ok" if result == "ok" else ("skipped" if result.startswith("skipped") else "failed")
            self._inc("actions_total", op=str(act.get("op", "heal")), result=outcome)
            if outcome == "failed":
                self._inc("failures_total", kind="action")
        self._set("arrival_rate_qps", rec.get("observation", {}).get("arrival_rate_qps"))
        self._set("demand_qps", rec.get("demand_qps"))
        plan = rec.get("plan") or {}
        self._set("threshold", plan.get("threshold"))
        self._set("light_fraction", plan.get("light_fraction"))
        self._set("solve_time_ms", plan.get("solve_time_ms"))
        for model, n in (plan.get("workers") or {}).items():
            self._set("plan_workers", n, model=model)
        for model, b in (plan.get("batch_size") or {}).items():
            self._set("plan_batch_size", b, model=model)
        self._set("control_version", (rec.get("control") or {}).get("version"))
        down = set(rec.get("down", []))
        placement = rec.get("placement", {})
        for node in sorted(set(self._nodes) | set(placement) | down):
            self._set("node_up", 0.0 if node in down else 1.0, node=node)
            for model in ("light", "heavy"):
                self._set("node_workers", len(placement.get(node, {}).get(model, [])), node=node, model=model)
        for node, w in (rec.get("routing_weights") or {}).items():
            self._set("routing_weight", w, node=node)
        for node, v in (rec.get("control_versions") or {}).items():
            self._set("node_control_version", -1 if v is None else v, node=node)
        stale = set(rec.get("stale_nodes", []))
        for node in rec.get("control_versions") or {}:
            self._set("node_stale", 1.0 if node in stale else 0.0, node=node)

    def render(self) -> str:
        """Prometheus text exposition (version 0.0.4) of every metric seen so far."""
        with self._lock:
            series = list(self._counters.items()) + list(self._gauges.items())
        lines: list[str] = []
        for short in sorted({name for (name, _), _ in series}):
            kind, doc = _HELP[short]
            lines += [f"# HELP {PREFIX}{short} {doc}", f"# TYPE {PREFIX}{short} {kind}"]
            for (name, labels), value in sorted(series):
                if name == short:
                    lines.append(f"{PREFIX}{short}{_labels(dict(labels))} {value:g}")
        return "\n".join(lines) + "\n"
