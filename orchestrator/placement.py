"""Pure placement: a plan's worker counts -> which slots of which node run which model, and the
actions that turn the running placement into the planned one.

A *slot* is one GPU (its device id) on a GPU node, or one CPU instance slot on a node without
GPUs (CPU slots stand in for GPUs so that the whole loop runs and is tested on CPU). One node
runs one Triton; each model's instances on a node are one ``instance_group``:

- GPU node: ``[{"kind": "KIND_GPU", "count": 1, "gpus": [0, 2]}]`` (one instance per listed GPU);
- CPU node: ``[{"kind": "KIND_CPU", "count": n}]``.

Changing only ``instance_group`` makes Triton add/remove instances in place (no full reload);
the orchestrator uses that only to add instances (:func:`removes_instances`).
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping, Sequence

from serving.control import ControlState
from planner.types import Plan, RouterCurve

KINDS = ("gpu", "cpu")


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One Triton server: its gRPC ``url``, slot kind and slot ids (GPU ids, or 0..n-1 for CPU)."""

    url: str
    kind: str
    slots: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"node {self.url}: kind={self.kind!r}; expected one of {KINDS}")
        if not self.slots or len(set(self.slots)) != len(self.slots) or min(self.slots) < 0:
            raise ValueError(f"node {self.url}: slots={self.slots}; expected distinct ids >= 0, at least one")


@dataclasses.dataclass(frozen=True)
class Placement:
    """Slots per model on one node (a model absent or with ``()`` runs no instance there)."""

    slots: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def count(self, model: str) -> int:
        return len(self.slots.get(model, ()))

    def as_json(self) -> dict[str, list[int]]:
        return {m: list(s) for m, s in sorted(self.slots.items()) if s}


@dataclasses.dataclass(frozen=True)
class Action:
    """One change on one node: ``set_instances`` (load with this instance group) or ``unload``."""

    node: str
    model: str
    op: str
    slots: tuple[int, ...] = ()

    def as_json(self) -> dict:
        return {"node": self.node, "model": self.model, "op": self.op, "slots": list(self.slots)}


def instance_group(kind: str, slots: Sequence[int]) -> list[dict]:
    """The Triton ``instance_group`` (JSON config form) for ``slots`` of a ``kind`` node."""
    if not slots:
        raise ValueError("instance_group needs at least one slot (unload the model instead)")
    if kind == "gpu":
        return [{"kind": "KIND_GPU", "count": 1, "gpus": [int(g) for g in slots]}]
    if kind == "cpu":
        return [{"kind": "KIND_CPU", "count": len(slots)}]
    raise ValueError(f"kind={kind!r}; expected one of {KINDS}")


def instance_devices(groups: Sequence[Mapping]) -> dict[tuple[str, int | None], int]:
    """Instances per ``(kind, gpu id)`` of an ``instance_group`` (JSON config form); CPU groups
    count under gpu id None. A group with ``gpus`` runs ``count`` instances on each listed GPU."""
    out: dict[tuple[str, int | None], int] = {}
    for grp in groups:
        for gpu in grp.get("gpus") or [None]:
            key = (str(grp.get("kind", "KIND_AUTO")), None if gpu is None else int(gpu))
            out[key] = out.get(key, 0) + int(grp.get("count", 1))
    return out


def removes_instances(loaded: Sequence[Mapping], wanted: Sequence[Mapping]) -> bool:
    """Whether going from the ``loaded`` instance_group to ``wanted`` removes an instance: fewer
    instances of some kind, or a GPU the wanted group no longer lists. Such a change must not take
    Triton's in-place instance update (see ``TritonNode.set_instances``: Triton #7723)."""
    have, want = instance_devices(loaded), instance_devices(wanted)
    return any(n > want.get(key, 0) for key, n in have.items())


def slots_from_instance_group(kind: str, groups: Sequence[Mapping], taken: set[int], node_slots: Sequence[int]) -> tuple[int, ...]:
    """Inverse of :func:`instance_group` for a running model's config (adoption after a restart).

    GPU: the listed GPU ids. CPU: ``count`` slots not in ``taken`` (CPU slots are interchangeable).
    """
    if kind == "gpu":
        return tuple(sorted({int(g) for grp in groups for g in grp.get("gpus", [])}))
    n = sum(int(grp.get("count", 1)) for grp in groups)
    free = [s for s in node_slots if s not in taken]
    return tuple(free[:n])


def split_workers(workers: Mapping[str, int], models: Sequence[str], nodes: Sequence[NodeSpec],
                  available: Mapping[str, Sequence[int]], current: Mapping[str, Placement]) -> dict[str, Placement]:
    """Spread a global plan's per-model worker counts over nodes, keeping running slots in place.

    Each model's workers go to nodes in proportion to their available slots (so every node
    runs a similar light/heavy mix and can serve its share of queries end to end). Raises
    ValueError when the plan asks for more workers than slots are available.
    """
    total_avail = sum(len(available.get(n.url, ())) for n in nodes)
    asked = sum(int(workers.get(m, 0)) for m in models)
    if asked > total_avail:
        raise ValueError(f"plan asks for {asked} workers {dict(workers)}; only {total_avail} slots are available")
    room = {n.url: len(available.get(n.url, ())) for n in nodes}
    counts: dict[str, dict[str, int]] = {n.url: {} for n in nodes}
    for m in models:
        want = int(workers.get(m, 0))
        for _ in range(want):
            # The node furthest below its proportional share that still has room.
            best = max((n for n in nodes if room[n.url] > 0),
                       key=lambda n: len(available.get(n.url, ())) * want / max(total_avail, 1) - counts[n.url].get(m, 0))
            counts[best.url][m] = counts[best.url].get(m, 0) + 1
            room[best.url] -= 1
    out = {}
    for n in nodes:
        out[n.url] = _choose_slots(counts[n.url], models, tuple(available.get(n.url, ())),
                                   current.get(n.url, Placement()))
    return out


def _choose_slots(counts: Mapping[str, int], models: Sequence[str], avail: tuple[int, ...], cur: Placement) -> Placement:
    """Slots per model on one node: keep each model's running slots first, then take free ones."""
    chosen: dict[str, list[int]] = {}
    used: set[int] = set()
    for m in models:  # pass 1: keep what already runs there
        keep = [s for s in cur.slots.get(m, ()) if s in avail][: counts.get(m, 0)]
        chosen[m] = keep
        used.update(keep)
    held_by_others = {s for m in models for s in cur.slots.get(m, ())}
    for m in models:  # pass 2: prefer slots nobody runs on, then slots another model gives up
        need = counts.get(m, 0) - len(chosen[m])
        free = [s for s in avail if s not in used]
        free.sort(key=lambda s: (s in held_by_others, s))
        chosen[m] += free[:need]
        used.update(free[:need])
    return Placement(MappingProxyType({m: tuple(sorted(s)) for m, s in chosen.items() if s}))


def diff(node: NodeSpec, current: Placement, target: Placement, models: Sequence[str]) -> list[Action]:
    """Actions that turn ``current`` into ``target`` on ``node``: shrinking ones first, so that
    a GPU is released by one model before another model's instance is placed on it."""
    shrink, grow = [], []
    for m in models:
        cur, tgt = tuple(current.slots.get(m, ())), tuple(target.slots.get(m, ()))
        same = (len(cur) == len(tgt)) if node.kind == "cpu" else (set(cur) == set(tgt))
        if same:
            continue
        if not tgt:
            shrink.append(Action(node.url, m, "unload"))
        elif (len(tgt) < len(cur)) if node.kind == "cpu" else set(tgt) <= set(cur):
            shrink.append(Action(node.url, m, "set_instances", tgt))
        else:
            grow.append(Action(node.url, m, "set_instances", tgt))
    return shrink + grow


def plan_actions(workers: Mapping[str, int], models: Sequence[str], nodes: Sequence[NodeSpec],
                 available: Mapping[str, Sequence[int]], current: Mapping[str, Placement]
                 ) -> tuple[dict[str, Placement], list[Action]]:
    """A plan's worker counts + the running placement -> (target placement per node, the actions
    that get there: per node in ``nodes`` order, shrinking ones first). The one placement
    decision of the live loop and the simulator. ValueError when more workers are asked than
    slots are available."""
    target = split_workers(workers, models, nodes, available, current)
    actions = [a for n in nodes for a in diff(n, current.get(n.url, Placement()), target[n.url], models)]
    return target, actions


def control_state(plan: Plan, light: str, heavy: str, slo_ms: float, version: int,
                  discriminator_batch: int | None = None, router: RouterCurve | None = None) -> ControlState:
    """The control file (docs/interfaces.md section 3) that carries ``plan``'s threshold, routing,
    batch sizes and router threshold to the serving models. A model with no workers is never
    routed to. The plan's router share becomes the router's score threshold through the
    calibration ``router`` (as t comes from f(t)); no curve, or a share of 0: no router. The
    plan's ``admit_factor`` (the overload fallback's shedding at the SLO) passes through."""
    nl, nh = int(plan.workers.get(light, 0)), int(plan.workers.get(heavy, 0))
    if nl == 0 and nh == 0:
        routing = "cascade"  # nothing is placed: keep the default policy; requests will fail fast
    elif nh == 0:
        routing = "light"
    elif nl == 0:
        routing = "heavy"
    else:
        routing = plan.routing if plan.routing in ("cascade", "random") else "cascade"
    heavy_share = min(1.0, max(0.0, 1.0 - plan.light_fraction)) if routing == "random" else 0.0
    bs = {m: int(b) for m, b in plan.batch_size.items() if m in (light, heavy) and int(plan.workers.get(m, 0)) > 0}
    batch = {"light": bs[light]} if light in bs else {}
    if heavy in bs:
        batch["heavy"] = bs[heavy]
    if "light" in batch:
        batch["discriminator"] = int(discriminator_batch or batch["light"])
    instances = {"light": nl, "heavy": nh, "discriminator": nl} if nl or nh else {}  # discriminator follows light
    router_threshold = router.threshold_for(plan.router_share) if router is not None and routing == "cascade" else None
    return ControlState(version=version, threshold=float(min(1.0, max(0.0, plan.threshold))), routing=routing,
                        heavy_share=heavy_share, slo_ms=float(slo_ms), batch_size=MappingProxyType(batch),
                        instances=MappingProxyType(instances), router_threshold=router_threshold,
                        admit_factor=plan.admit_factor)


def routing_weights(plan: Plan, placements: Mapping[str, Placement], light: str, heavy: str,
                    scale: int = 100) -> dict[str, int]:
    """Integer routing weight per node (sum ~``scale``) for a weighted gRPC load balancer.

    A node's weight is the cascade throughput it sustains: per model, its workers there times
    the plan's per-worker capacity, divided by the share of queries that model sees (light: all
    queries in the cascade but those the prompt router sends straight to heavy, heavy: every
    query it serves, routed or deferred). Equal weights when nothing is placed.
    """
    per_worker = {m: float(plan.capacity_qps.get(m, 0.0)) / int(plan.workers[m])
                  for m in (light, heavy) if int(plan.workers.get(m, 0)) > 0}
    heavy_load = max(0.0, 1.0 - plan.light_fraction)
    loads = {light: 1.0 - plan.router_share if plan.routing != "random" else plan.light_fraction, heavy: heavy_load}
    if int(plan.workers.get(heavy, 0)) == 0:
        loads = {light: 1.0, heavy: 0.0}
    elif int(plan.workers.get(light, 0)) == 0:
        loads = {light: 0.0, heavy: 1.0}
    cap = {}
    for node, p in placements.items():
        caps = [p.count(m) * per_worker.get(m, 0.0) / loads[m] for m in (light, heavy) if loads[m] > 1e-9]
        cap[node] = min(caps) if caps else 0.0
    total = sum(cap.values())
    if total <= 0:
        n = max(len(placements), 1)
        return {node: scale // n for node in placements}
    return {node: int(round(scale * c / total)) for node, c in cap.items()}
