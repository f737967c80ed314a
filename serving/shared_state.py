"""Work in flight and latency estimates shared by all instances of the cascade model.

Each cascade instance is its own process; shedding must see the work of all of them. They share
a small memory-mapped file named after the server process, the repository and the model (so a
restarted server starts cold).
"""
from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from serving import routing

_STAGE_FIELDS = 4  # per stage: service_ms, batch_items, drain_qps, calls observed


class SharedState:
    """Work in flight and EWMA estimates, shared across the cascade's instances.

    * Backlog: queries in flight at each stage (submitted and not yet answered), summed over all
      instances. Each instance owns one row; within an instance only its event-loop thread
      writes it (one writer per row: no locks needed); readers sum the rows.
    * Estimates (:class:`serving.routing.StageEstimates`): learnt from every instance's calls
      (a lost update between two writers only drops one EWMA sample).
    """

    N_SLOTS = 256

    def __init__(self, path: Path, slot: int):
        self.path, self.slot = path, slot % self.N_SLOTS
        n_stages = len(routing.STAGE_NAMES)
        n_counts, n_est = self.N_SLOTS * n_stages, _STAGE_FIELDS * n_stages + 1
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = 8 * (n_counts + n_est)
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self._counts = np.memmap(path, dtype=np.int64, mode="r+", shape=(self.N_SLOTS, n_stages))
        self._est = np.memmap(path, dtype=np.float64, mode="r+", shape=(n_est,), offset=8 * n_counts)
        self._counts[self.slot] = 0  # a restarted instance must not inherit a crashed one's counts

    @staticmethod
    def slot_for(instance_name: str) -> int:
        """Row index for a Triton instance name such as ``cascade_0_1`` (group 0, instance 1)."""
        m = re.search(r"_(\d+)_(\d+)$", instance_name)
        if m:
            return int(m.group(1)) * 32 + int(m.group(2))
        m = re.search(r"_(\d+)$", instance_name)
        return int(m.group(1)) if m else zlib.crc32(instance_name.encode())

    def add(self, stage: str, n: int) -> None:
        self._counts[self.slot, routing.STAGE_NAMES.index(stage)] += n

    def totals(self) -> dict[str, int]:
        """Queries in flight per stage over all instances."""
        sums = np.asarray(self._counts).sum(axis=0)
        return {s: int(max(sums[i], 0)) for i, s in enumerate(routing.STAGE_NAMES)}

    def _field(self, stage: str, k: int) -> int:
        return _STAGE_FIELDS * routing.STAGE_NAMES.index(stage) + k

    def estimates(self) -> routing.StageEstimates:
        """The shared EWMA estimates (a stage with no observation yet is absent)."""
        e = np.asarray(self._est).copy()
        seen = [s for s in routing.STAGE_NAMES if e[self._field(s, 3)] > 0]
        return routing.StageEstimates(
            service_ms={s: float(e[self._field(s, 0)]) for s in seen},
            batch_items={s: float(e[self._field(s, 1)]) for s in seen},
            drain_qps={s: float(e[self._field(s, 2)]) for s in seen if e[self._field(s, 2)] > 0},
            defer_rate=float(e[-1]))

    def observe_call(self, stage: str, ms: float, n_items: int, ahead: int, alpha: float) -> None:
        """Fold one stage call (round trip ``ms`` for ``n_items`` queries, which found ``ahead``
        queries in flight there) into the estimates: a call with nothing ahead (or the first
        call) measures the service time, one with work ahead the rate the stage drains it."""
        i_service, i_items, i_drain, i_calls = (self._field(stage, k) for k in range(_STAGE_FIELDS))
        prev = None if self._est[i_calls] == 0 else tuple(float(self._est[i]) for i in (i_service, i_items, i_drain))
        self._est[i_service], self._est[i_items], self._est[i_drain] = routing.fold_call(prev, ms, n_items, ahead, alpha)
        self._est[i_calls] += 1

    def observe_deferrals(self, fraction: float, alpha: float) -> None:
        """Fold one batch's deferred fraction into the deferral-rate EWMA."""
        self._est[-1] = routing.ewma(float(self._est[-1]), fraction, alpha)
