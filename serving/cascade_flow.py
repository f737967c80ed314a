"""The cascade's per-request flow, free of Triton: light -> discriminator -> heavy, with deadlines.

One :class:`BatchFlow` runs the admitted requests of one batch that Triton's dynamic batcher
gathered, on an asyncio event loop:

* with a prompt router in the control state, the batch's cascade-routed prompts are scored by
  the ``router`` stage in ONE call first; those at or above the router threshold go straight to
  heavy (no light image, no discriminator); a router that fails routes nothing (the queries
  cascade: the router saves work, it is not needed for an answer);
* the batch's light-path queries go to ``light`` in ONE call, the cascade-routed images to the
  discriminator in ONE call; the deferred queries (and those forced to heavy) go to ``heavy`` in
  calls of at most the heavy batch size, so that the heavy stage's instances share them;
* each request is answered as soon as its OWN queries are done: a light-served request does not
  wait for the heavy queries of its batch;
* a request is never answered after its drop bound (``deadline_s``): before each stage call,
  requests whose predicted finish is past it are shed, a timer sheds a request still waiting at
  its bound, and a result that is ready too late is shed instead of sent;
* a stage error fails exactly the requests whose queries caused it (a call shared by several
  requests that fails is retried once per request).

The stage calls and the answers are injected (:class:`Stages`, :class:`Responder`), so this runs
under test with fakes. Everything here runs on the event loop's thread.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Awaitable, Callable, Protocol, Sequence

import numpy as np

from serving import routing


class StageError(RuntimeError):
    """A stage call failed; ``code`` is the stage's Triton error code when known."""

    def __init__(self, message: str, code: object = None):
        super().__init__(message)
        self.code = code


class StageTimeout(StageError):
    """A stage call did not answer within ``stage_timeout_ms`` (not the queries' fault: no retry)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One valid request: its queries, where they go and its SLO (None: no deadline)."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    route: str
    slo_ms: float | None


@dataclasses.dataclass(eq=False)  # mutable and compared by identity: the state of one request in flight
class Pending:
    """One admitted request in flight: its outputs so far and whether it has been answered."""

    job: Job
    received_s: float
    deadline_s: float | None
    token: object = None  # the adapter's handle (e.g. the Triton response sender)
    images: list = dataclasses.field(default_factory=list)
    served: list = dataclasses.field(default_factory=list)
    confidence: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    answered: bool = False
    waiting_on: str = "light"  # the stage its queries are in now (for the message if it expires)

    def __post_init__(self) -> None:
        n = len(self.job.prompts)
        self.images, self.served = [None] * n, [""] * n
        self.confidence = np.full(n, np.nan, dtype=np.float32)

    @property
    def done(self) -> bool:
        return all(self.served)


Row = tuple[Pending, int]  # one query: (its request, its index in the request)


class Stages(Protocol):
    """The stage calls and what the cascade knows about the stages' load."""

    async def generate(self, stage: str, prompts: list[str], seeds: list[int]) -> np.ndarray: ...

    async def score(self, images: np.ndarray) -> np.ndarray: ...

    async def route(self, prompts: list[str]) -> np.ndarray: ...

    def ahead(self) -> dict[str, int]: ...

    def estimates(self) -> routing.StageEstimates: ...


class Responder(Protocol):
    """Sends the ONE answer of a request (the flow calls at most one of these per request)."""

    def result(self, p: Pending, threshold: float) -> None: ...

    def error(self, p: Pending, exc: StageError) -> None: ...

    def drop(self, p: Pending, message: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class FlowSettings:
    """What one batch runs with: the control state's threshold and heavy batch size, the drop
    factor, the DROP_MARKER text, and hooks for the discriminator's confidences / deferrals."""

    threshold: float
    heavy_batch: int
    drop_factor: float
    marker: str
    on_confidences: Callable[[np.ndarray], None] = lambda c: None
    on_deferred: Callable[[int, int], None] = lambda n_deferred, n_scored: None
    router_threshold: float | None = None  # the control state's: None = no prompt router
    on_routed: Callable[[int, int], None] = lambda n_routed, n_scored: None


class BatchFlow:
    """Runs one batch of admitted requests (see the module docstring)."""

    def __init__(self, stages: Stages, responder: Responder, settings: FlowSettings,
                 clock: Callable[[], float]):
        self.stages, self.responder, self.settings, self.clock = stages, responder, settings, clock

    # -- answers (each request exactly once) ---------------------------------------------------
    def finish(self, p: Pending) -> None:
        if p.answered:
            return
        if p.deadline_s is not None and self.clock() > p.deadline_s:  # ready, but too late to send
            self.expire(p, "the answer")
            return
        p.answered = True
        self.responder.result(p, self.settings.threshold)

    def fail(self, p: Pending, exc: StageError) -> None:
        if not p.answered:
            p.answered = True
            self.responder.error(p, exc)

    def shed(self, p: Pending, message: str) -> None:
        if not p.answered:
            p.answered = True
            self.responder.drop(p, message)

    def expire(self, p: Pending, waiting_on: str | None = None) -> None:
        """``p`` reached its drop bound unanswered: shed it (its stage work, if any, runs on)."""
        waiting_on = waiting_on or p.waiting_on
        elapsed_ms = 1000.0 * (self.clock() - p.received_s)
        self.shed(p, routing.late_message(self.settings.marker, waiting_on, elapsed_ms, None, p.job.slo_ms or 0.0,
                                          self.settings.drop_factor))

    # -- deadline checks before a stage call ---------------------------------------------------
    def keep(self, rows: Sequence[Row], stage: str, route_rest: bool) -> list[Row]:
        """The rows of requests that can still meet their deadline through ``stage`` (and, when
        ``route_rest``, the rest of their route); the other requests are shed now."""
        est, ahead = self.stages.estimates(), {s: float(v) for s, v in self.stages.ahead().items()}
        now, kept, verdict = self.clock(), [], {}
        for p, k in rows:
            if p.answered:
                continue
            if p not in verdict:
                n = sum(1 for q, _ in rows if q is p)
                predicted = (routing.path_ms(p.job.route, n, ahead, est) if route_rest
                             else routing.stage_ms(stage, n, ahead.get(stage, 0.0), est))
                verdict[p] = p.deadline_s is None or now + predicted / 1000.0 <= p.deadline_s
                if verdict[p]:
                    ahead[stage] = ahead.get(stage, 0.0) + n
                else:
                    self.shed(p, routing.late_message(self.settings.marker, stage, 1000.0 * (now - p.received_s),
                                                      predicted, p.job.slo_ms or 0.0, self.settings.drop_factor))
            if verdict[p]:
                kept.append((p, k))
        return kept

    # -- stage calls with per-request error isolation ------------------------------------------
    async def isolated(self, call: Callable[[list[Row]], Awaitable[np.ndarray]], rows: list[Row]) -> dict[Row, np.ndarray]:
        """``call(rows)`` as {row: output}. A failure of a call shared by several requests is
        retried once per request, so that only the request that caused it gets the error."""
        rows = [r for r in rows if not r[0].answered]
        if not rows:
            return {}
        try:
            return dict(zip(rows, await call(rows)))
        except StageTimeout as exc:  # retrying per request would only wait again
            for p, _ in rows:
                self.fail(p, exc)
            return {}
        except StageError as exc:
            groups: dict[Pending, list[Row]] = {}
            for r in rows:
                groups.setdefault(r[0], []).append(r)
            if len(groups) == 1:
                self.fail(rows[0][0], exc)
                return {}
        out: dict[Row, np.ndarray] = {}
        for part in await asyncio.gather(*(self.isolated(call, g) for g in groups.values())):
            out.update(part)
        return out

    async def generate(self, stage: str, rows: list[Row]) -> list[Row]:
        """Generate ``rows`` on ``stage``; returns the rows that got an image."""
        for p, _ in rows:
            p.waiting_on = stage

        async def call(rs: list[Row]) -> np.ndarray:
            return await self.stages.generate(stage, [p.job.prompts[k] for p, k in rs], [p.job.seeds[k] for p, k in rs])

        got = await self.isolated(call, rows)
        for (p, k), img in got.items():
            p.images[k], p.served[k] = img, stage
        return [r for r in rows if r in got]

    # -- the paths ------------------------------------------------------------------------------
    async def run(self, pending: Sequence[Pending]) -> None:
        """Serve every request of ``pending``; each gets exactly one answer (bugs included).

        A timer sheds each request that is still unanswered at its drop bound."""
        loop = asyncio.get_running_loop()
        timers = [loop.call_later(max(0.0, p.deadline_s - self.clock()), self.expire, p)
                  for p in pending if p.deadline_s is not None]
        try:
            light = [(p, k) for p in pending if p.job.route in ("cascade", "light") for k in range(len(p.job.prompts))]
            heavy = [(p, k) for p in pending if p.job.route == "heavy" for k in range(len(p.job.prompts))]
            routed = await self.routed(light)
            heavy += [r for r in light if r in routed]
            light = [r for r in light if r not in routed]
            await asyncio.gather(self.light_path(light), self.heavy(self.keep(heavy, "heavy", False)))
        finally:
            for timer in timers:
                timer.cancel()
            for p in pending:  # a bug must not leave a request unanswered
                if not p.answered:
                    self.fail(p, StageError("internal error: the cascade finished without answering this request"))

    async def routed(self, rows: list[Row]) -> set[Row]:
        """The cascade-routed queries the prompt router sends straight to heavy (none without a router)."""
        thr = self.settings.router_threshold
        cascade = [r for r in rows if r[0].job.route == "cascade"]
        if thr is None or not cascade:
            return set()
        for p, _ in cascade:
            p.waiting_on = "router"
        try:
            scores = np.asarray(await self.stages.route([p.job.prompts[k] for p, k in cascade]), np.float64).reshape(-1)
        except StageError:
            return set()
        out = {r for r, s in zip(cascade, scores) if routing.router_routes(float(s), thr)}
        self.settings.on_routed(len(out), len(cascade))
        return out

    async def light_path(self, rows: list[Row]) -> None:
        rows = self.keep(rows, "light", True)
        if not rows:
            return
        ok = await self.generate("light", rows)
        for p in dict.fromkeys(p for p, _ in ok if p.job.route == "light"):
            self.finish(p)
        scored = self.keep([r for r in ok if r[0].job.route == "cascade"], "discriminator", False)
        if not scored:
            return

        for p, _ in scored:
            p.waiting_on = "discriminator"

        async def score(rs: list[Row]) -> np.ndarray:
            return await self.stages.score(np.stack([p.images[k] for p, k in rs]))

        got = await self.isolated(score, scored)
        scored = [r for r in scored if r in got]
        if not scored:
            return
        conf = np.array([float(np.asarray(got[r]).reshape(-1)[0]) for r in scored], dtype=np.float32)
        self.settings.on_confidences(conf)
        mask = routing.defer_mask(conf, self.settings.threshold)
        deferred = []
        for (p, k), c, d in zip(scored, conf, mask):
            p.confidence[k] = c
            if d:
                p.served[k] = ""  # its light image is replaced by heavy's
                deferred.append((p, k))
        self.settings.on_deferred(len(deferred), len(scored))
        for p in dict.fromkeys(p for p, _ in scored):
            if p.done:
                self.finish(p)
        await self.heavy(self.keep(deferred, "heavy", False))

    async def heavy(self, rows: list[Row]) -> None:
        """Heavy calls of at most ``heavy_batch`` queries, concurrently (the stage's instances share them)."""
        size = max(1, self.settings.heavy_batch)
        await asyncio.gather(*(self.heavy_chunk(rows[i:i + size]) for i in range(0, len(rows), size)))

    async def heavy_chunk(self, rows: list[Row]) -> None:
        for p in dict.fromkeys(p for p, _ in await self.generate("heavy", rows)):
            if p.done:
                self.finish(p)
