"""Extension points of the live loop: what a deployment plugs in without changing the loop.

The loop calls every hook it was given (``Orchestrator(..., hooks=[...])``) at three moments:

- ``control_written(state)``: a new whole control state (new version) was written;
- ``weights_published(weights, version)``: per-node routing weights were published;
- ``window_finished(rec)``: the window's record is complete; a hook may add keys before the
  record is logged (e.g. which nodes hold a stale control state).

A hook must not raise for an outside failure (a balancer that does not answer): it records the
problem in the window record instead, so that the loop keeps planning.
"""
from __future__ import annotations

from typing import Any, Mapping

from serving.control import ControlState


class LoopHooks:
    """No-op base: subclasses override what they need."""

    def control_written(self, state: ControlState) -> None:
        """A new control state (``state.version``) is in force at the orchestrator."""

    def weights_published(self, weights: Mapping[str, int], version: int) -> None:
        """Routing weights per node url were published for window ``version``."""

    def window_finished(self, rec: dict[str, Any]) -> None:
        """The window's record, before it is logged; may add keys to it."""
