"""Per-model FIFO queues and batch latency tables of the simulator (plain data, no events)."""
from __future__ import annotations

import numpy as np

from planner.types import ModelProfile


class Fifo:
    """Queue of query indices in a preallocated array (a query enters each model's queue at most once)."""

    __slots__ = ("buf", "head", "tail")

    def __init__(self, capacity: int) -> None:
        self.buf = np.empty(max(capacity, 1), dtype=np.int64)
        self.head = 0
        self.tail = 0

    def __len__(self) -> int:
        return self.tail - self.head

    def push(self, idx: np.ndarray) -> None:
        n = len(idx)
        self.buf[self.tail:self.tail + n] = idx
        self.tail += n

    def push1(self, i: int) -> None:
        self.buf[self.tail] = i
        self.tail += 1

    def queued(self) -> np.ndarray:
        """The waiting query indices, head first (a view)."""
        return self.buf[self.head:self.tail]

    def clear(self) -> np.ndarray:
        """Removes and returns every waiting query (a copy)."""
        out = self.buf[self.head:self.tail].copy()
        self.head = self.tail
        return out


def latency_table(profile: ModelProfile) -> list[float]:
    """``table[n]`` = latency (ms) of a batch of n, linear between profiled sizes (index 0 unused).

    A Python list: scalar indexing of a list is several times faster than of an ndarray."""
    sizes = np.array(profile.batch_sizes, dtype=np.float64)
    ms = np.array([profile.latency_ms(int(b)) for b in sizes])
    return np.interp(np.arange(int(sizes[-1]) + 1, dtype=np.float64), sizes, ms).tolist()
