"""What the simulator counts during one control window, for the control loop's Observation."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class WindowStats:
    """Drops (shed on admission or failed) and the batches each model started in the window."""

    __slots__ = ("drops", "dispatched", "arrived")

    def __init__(self, models: int = 2) -> None:
        self.drops = 0
        self.dispatched: tuple[list, ...] = tuple([] for _ in range(models))  # (dispatch time, query ids) per model
        self.arrived = [0] * models  # queries that entered each model's queue

    def queue_windows(self, names: Sequence[str], enq: Sequence[np.ndarray], waiting_end: Sequence[int]) -> dict:
        """Per model the :class:`orchestrator.observe.QueueWindow` the live loop measures: queries that
        entered the queue, started, their total wait (query-seconds) and the queue left at the end."""
        from orchestrator.observe import QueueWindow  # noqa: PLC0415

        out = {}
        for m, name in enumerate(names):
            started, wait_ms = 0, 0.0
            for t, chunk in self.dispatched[m]:
                c = np.asarray(chunk, dtype=np.int64)
                started += len(c)
                wait_ms += float(len(c) * t - enq[m][c].sum())
            out[name] = QueueWindow(arrived=float(self.arrived[m]), started=float(started), wait_s=wait_ms / 1000.0,
                                    waiting_end=float(waiting_end[m]))
        return out
