"""Control state for many nodes without shared storage: versioned states, pulled by each node.

The orchestrator holds the one current :class:`~serving.control.ControlState` (a whole state,
numbered by ``version``). Each node runs a small agent (``deploy/agent.py``) that long-polls
the orchestrator's endpoint (``GET /control?node=<url>&have=<version>``): the request returns
as soon as the orchestrator's version differs from ``have`` (or after ``wait_s`` with the same
state), and the agent swaps the whole state into the node-local control file atomically.
``have`` doubles as the node's acknowledgement: the orchestrator knows which version each node
holds, and a node that has not held the current version for ``stale_after_s`` is *stale*
(its agent cannot reach the orchestrator, or is stopped). A stale node keeps serving with its
last whole state; the orchestrator reports it in every window record and in its metrics.

Pure bookkeeping plus one condition variable; the HTTP side is :mod:`orchestrator.endpoint`.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from orchestrator.hooks import LoopHooks
from serving.control import ControlState

MAX_WAIT_S = 60.0


@dataclasses.dataclass(frozen=True)
class NodeAck:
    """What a node's agent last told: the version it holds (None: none yet) and when (monotonic s)."""

    version: int | None
    seen_s: float


def stale_nodes(current: int | None, published_s: float, acks: Mapping[str, NodeAck], nodes: Iterable[str],
                now_s: float, stale_after_s: float) -> list[str]:
    """Nodes that have not held version ``current`` although it is older than ``stale_after_s``.

    A node never heard from counts as holding nothing. No state published yet: nobody is stale.
    """
    if current is None or now_s - published_s < stale_after_s:
        return []
    return sorted(n for n in nodes if (acks.get(n) is None or acks[n].version != current))


class ControlChannel(LoopHooks):
    """The current whole control state, handed out to node agents, with their acknowledgements.

    ``nodes``: the node urls agents may poll for (others are refused). Thread-safe; a loop hook
    (``control_written`` publishes, ``window_finished`` reports versions and stale nodes).
    """

    def __init__(self, nodes: Iterable[str], stale_after_s: float = 3.0, clock: Callable[[], float] = time.monotonic):
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s={stale_after_s}; expected > 0 seconds")
        self.nodes = tuple(nodes)
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._cond = threading.Condition()
        self._state: ControlState | None = None
        self._published_s = clock()
        self._acks: dict[str, NodeAck] = {}

    # -- orchestrator side -------------------------------------------------------------------
    def publish(self, state: ControlState) -> None:
        """Make ``state`` the current one and wake every waiting agent."""
        with self._cond:
            if self._state is None or state.version != self._state.version or state != self._state:
                self._published_s = self._clock()
            self._state = state
            self._cond.notify_all()

    def control_written(self, state: ControlState) -> None:
        self.publish(state)

    def current(self) -> ControlState | None:
        with self._cond:
            return self._state

    def versions(self) -> dict[str, int | None]:
        """The version each node last said it holds (None: never heard from, or none yet)."""
        with self._cond:
            return {n: (self._acks[n].version if n in self._acks else None) for n in self.nodes}

    def stale(self) -> list[str]:
        with self._cond:
            current = None if self._state is None else self._state.version
            return stale_nodes(current, self._published_s, dict(self._acks), self.nodes, self._clock(),
                               self.stale_after_s)

    def last_seen_s(self) -> dict[str, float | None]:
        """Seconds since each node's agent last polled (None: never)."""
        now = self._clock()
        with self._cond:
            return {n: (round(now - self._acks[n].seen_s, 3) if n in self._acks else None) for n in self.nodes}

    def window_finished(self, rec: dict[str, Any]) -> None:
        rec["control_versions"] = self.versions()
        rec["control_last_poll_s"] = self.last_seen_s()
        rec["stale_nodes"] = self.stale()

    # -- agent side ----------------------------------------------------------------------------
    def poll(self, node: str, have: int | None, wait_s: float) -> ControlState | None:
        """An agent of ``node`` holding version ``have`` asks for the current state.

        Returns at once when the current version differs from ``have``, else after at most
        ``wait_s`` seconds (the same state, or a newer one published meanwhile). None: no state
        has been published yet. Raises ValueError for an unknown node or a bad ``wait_s``.
        """
        if node not in self.nodes:
            raise ValueError(f"node={node!r} is not one of this orchestrator's nodes {list(self.nodes)}")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait_s={wait_s}; expected seconds in [0, {MAX_WAIT_S}]")
        deadline = self._clock() + wait_s
        with self._cond:
            self._acks[node] = NodeAck(have, self._clock())
            while self._state is not None and self._state.version == have:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._state
