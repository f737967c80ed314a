"""The simulated GPUs: which model each one holds, whether it is idle, busy or loading, and how a
plan's worker counts become moves.

The moves come from the live orchestrator's pure placement (:func:`orchestrator.placement.plan_actions`):
the cluster is one GPU node whose slots are the workers, so the simulator keeps and releases the
same GPUs the live loop would. A GPU moved to
another model finishes its running batch, then is unavailable for the model-load time.
"""
from __future__ import annotations

from typing import Callable, Sequence

from orchestrator.placement import NodeSpec, Placement, plan_actions

LIGHT, HEAVY, NONE = 0, 1, -1
IDLE, BUSY, LOADING = 0, 1, 2


class Cluster:
    """``num_workers`` GPUs serving the models ``names`` (light, heavy; or every variant a plan
    may choose a pair from: a GPU's model is an index into ``names``).

    ``start_load(w, now)`` is called when GPU w starts loading (the simulator schedules its end).
    """

    def __init__(self, num_workers: int, names: Sequence[str], load_ms: float,
                 start_load: Callable[[int, float], None]) -> None:
        self.names = tuple(names)
        self.node = NodeSpec("sim", "gpu", tuple(range(num_workers)))
        self.load_ms = load_ms
        self._start_load_cb = start_load
        self.model = [NONE] * num_workers
        self.state = [IDLE] * num_workers
        self.pending: list[int | None] = [None] * num_workers
        self.gen = [0] * num_workers  # bumped when a load is started or abandoned
        self.idle: tuple[list[int], ...] = tuple([] for _ in self.names)

    def __len__(self) -> int:
        return len(self.model)

    def effective(self, w: int) -> int:
        """The model GPU w holds once its pending move (after its batch) is done."""
        p = self.pending[w]
        return self.model[w] if p is None else p

    def counts(self) -> tuple[int, ...]:
        """GPUs per model (in ``names`` order), counting pending moves and loads."""
        eff = [self.effective(w) for w in range(len(self.model))]
        return tuple(eff.count(m) for m in range(len(self.names)))

    def placement(self) -> Placement:
        """The current placement in the live orchestrator's terms (slot = GPU index)."""
        slots: dict[str, tuple[int, ...]] = {}
        for w in range(len(self.model)):
            m = self.effective(w)
            if m != NONE:
                slots[self.names[m]] = slots.get(self.names[m], ()) + (w,)
        return Placement(slots)

    def apply(self, workers: dict[str, int], now: float, instant: bool = False) -> None:
        """Move GPUs so that ``workers[name]`` hold each model, with the live placement's actions
        (shrinking ones first). ValueError when more workers are asked than the cluster has."""
        current = self.placement()
        _, actions = plan_actions(workers, self.names, [self.node], {self.node.url: self.node.slots},
                                  {self.node.url: current})
        for act in actions:
            m = self.names.index(act.model)
            keep = set(act.slots)  # empty for "unload"
            for w in current.slots.get(act.model, ()):
                if w not in keep:
                    self.move(w, NONE, now, instant)
            for w in act.slots:
                if self.effective(w) != m:
                    self.move(w, m, now, instant)

    def move(self, w: int, m: int, now: float, instant: bool) -> None:
        """Reassign GPU w to model m (NONE: unassign). A busy GPU moves after its batch."""
        st, cur = self.state[w], self.model[w]
        if st == BUSY:
            self.pending[w] = None if m == cur else m
            return
        if cur == m:
            return
        if st == IDLE and cur != NONE:
            self.idle[cur].remove(w)
        self.gen[w] += 1  # invalidates a load in progress
        if m == NONE:
            self.model[w], self.state[w] = NONE, IDLE
        elif instant or self.load_ms == 0:
            self.model[w], self.state[w] = m, IDLE
            self.idle[m].append(w)
        else:
            self.start_load(w, m, now)

    def start_load(self, w: int, m: int, now: float) -> None:
        self.model[w] = m
        self.state[w] = LOADING
        self.gen[w] += 1
        self._start_load_cb(w, now)

    def finish_batch(self, w: int, now: float) -> int | None:
        """GPU w finished its batch: start its pending move, or go idle. Returns the model it is
        now idle on (to take work from), or None."""
        target = self.pending[w]
        self.pending[w] = None
        self.state[w] = IDLE
        if target is None or target == self.model[w]:
            m = self.model[w]
            self.idle[m].append(w)
            return m
        if target == NONE:
            self.model[w] = NONE
        else:
            self.start_load(w, target, now)
        return None

    def loaded(self, w: int, gen: int) -> int | None:
        """A load finished; returns the model GPU w is now idle on, or None for an abandoned load."""
        if gen != self.gen[w]:
            return None
        self.state[w] = IDLE
        self.idle[self.model[w]].append(w)
        return self.model[w]
