"""Pure bookkeeping of failing models: exponential backoff and quarantined slots.

A model that fails to load (or turns unhealthy and cannot be healed) on a node is not tried
again there before ``retry_at_s``; the slots it was given are left out of the next plans until
then, so the planner re-solves with fewer workers. Each further failure doubles the wait.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping

Key = tuple[str, str]  # (node url, model)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Wait ``base_s * 2**(failures - 1)`` seconds, at most ``max_s``."""

    base_s: float = 1.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_s:
            raise ValueError(f"Backoff(base_s={self.base_s}, max_s={self.max_s}); expected 0 < base_s <= max_s")

    def delay_s(self, failures: int) -> float:
        if failures < 1:
            raise ValueError(f"failures={failures}; expected >= 1")
        return min(self.max_s, self.base_s * 2.0 ** (failures - 1))


@dataclasses.dataclass(frozen=True)
class ModelHealth:
    """Consecutive failures of one model on one node, when to retry, and the slots set aside."""

    failures: int
    retry_at_s: float
    slots: tuple[int, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class HealthBook:
    """Immutable map (node, model) -> :class:`ModelHealth` for the models that are failing."""

    entries: Mapping[Key, ModelHealth] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def failed(self, key: Key, now_s: float, slots: tuple[int, ...], reason: str, backoff: Backoff) -> "HealthBook":
        """One more failure of ``key`` at ``now_s``; ``slots`` are quarantined until the retry."""
        n = self.entries[key].failures + 1 if key in self.entries else 1
        new = dict(self.entries)
        new[key] = ModelHealth(failures=n, retry_at_s=now_s + backoff.delay_s(n), slots=tuple(slots), reason=reason)
        return HealthBook(MappingProxyType(new))

    def succeeded(self, key: Key) -> "HealthBook":
        """``key`` loaded fine: forget its failures."""
        if key not in self.entries:
            return self
        new = dict(self.entries)
        del new[key]
        return HealthBook(MappingProxyType(new))

    def in_backoff(self, key: Key, now_s: float) -> bool:
        e = self.entries.get(key)
        return e is not None and now_s < e.retry_at_s

    def quarantined(self, node: str, now_s: float) -> set[int]:
        """Slots of ``node`` set aside by models still waiting for their retry."""
        return {s for (n, _), e in self.entries.items() if n == node and now_s < e.retry_at_s for s in e.slots}

    def as_json(self, now_s: float) -> list[dict]:
        return [{"node": n, "model": m, "failures": e.failures, "retry_in_s": round(max(0.0, e.retry_at_s - now_s), 3),
                 "slots": list(e.slots), "reason": e.reason[:300]} for (n, m), e in sorted(self.entries.items())]
