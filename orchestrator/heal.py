"""Healing: a placed stage model that fails requests or turns unready is reloaded with fresh
instances (a full reload: new stub processes).

The decision (:func:`heal_reason`) is pure; :func:`heal` applies it through
:meth:`orchestrator.apply.Cluster.change` with ``bump=True``.
"""
from __future__ import annotations

from typing import Callable, MutableMapping

from orchestrator.apply import Cluster
from orchestrator.observe import NodeSample


def heal_reason(prev: NodeSample | None, cur: NodeSample, model: str, ready: Callable[[], bool]) -> str | None:
    """Why ``model`` must be reloaded between two samples of its node, or None when it is healthy.

    Unhealthy: at least half of its requests since ``prev`` failed, or it is not ready
    (``ready`` is only asked when the counters look healthy). The cascade validates requests
    before calling stages, so stage failures mean a broken instance, e.g. a dead stub.
    """
    fails = oks = 0
    if prev is not None and model in cur.models and model in prev.models:
        fails = max(0, cur.models[model].fail - prev.models[model].fail)
        oks = max(0, cur.models[model].success - prev.models[model].success)
    # At least half failing: a broken instance (a dead stub fails everything it gets), not a
    # client's occasional bad request to a stage (inference is open to clients).
    if (fails == 0 or fails < oks) and ready():
        return None
    return f"{fails} failed requests" if fails else "not ready"


def heal(cluster: Cluster, health_prev: MutableMapping[str, NodeSample], samples: dict[str, NodeSample],
         now: float) -> list[dict]:
    """Reload every placed stage model that :func:`heal_reason` finds unhealthy since the last
    health look (``health_prev``, updated here to ``samples``). Returns the change records."""
    healed = []
    for node in cluster.nodes:
        if node.url in cluster.down or node.url not in samples:
            continue
        prev, cur = health_prev.get(node.url), samples[node.url]
        health_prev[node.url] = cur
        for m in cluster.models:
            slots = cluster.placement_of(node.url).slots.get(m, ())
            if not slots or cluster.health.in_backoff((node.url, m), now):
                continue
            reason = heal_reason(prev, cur, m, lambda m=m, node=node: node.is_ready(m))
            if reason is None:
                continue
            healed.append(cluster.change(node, m, slots, now, reason=reason, bump=True))
            if node.url in health_prev:  # counters restart with the reload
                del health_prev[node.url]
    return healed
