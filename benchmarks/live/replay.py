"""Open-loop replay of timed requests against the ``cascade`` model (async gRPC).

Each arrival is sent at its time whatever happened to the previous ones (an open loop, like
real users); every request ends as an image or an explicit error, both recorded with the
client-side latency. Errors are classified by :func:`client.errors.classify`.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Sequence

import numpy as np

from client.errors import classify


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One request to send ``t_s`` seconds after the replay starts."""

    t_s: float
    prompt: str
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one request ended. ``error_kind`` is the project's error class name ("" when ok);
    ``latency_ms`` is send -> response; ``image`` is kept only when asked for; ``confidence`` is the
    discriminator's score of the light image (NaN when none was scored: routed straight to heavy
    by the prompt router or by ``routing``)."""

    index: int
    t_send_s: float
    latency_ms: float
    ok: bool
    served_by: str = ""
    error_kind: str = ""
    error: str = ""
    image: np.ndarray | None = None
    confidence: float = float("nan")


# tritonclient calls the callback with keyword arguments ``result=`` and ``error=``.
def replay(url: str, arrivals: Sequence[Arrival], model: str = "cascade", timeout_s: float = 60.0,
           keep_images: bool = False, on_done: Callable[[Outcome], None] | None = None,
           clock: Callable[[], float] = time.monotonic) -> list[Outcome]:
    """Send every arrival at its time; wait for all answers (or ``timeout_s`` each).

    Returns the outcomes in arrival order. A request with no answer after ``timeout_s`` gets
    the client's deadline error (an explicit error, never a silent loss).
    """
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    client = grpcclient.InferenceServerClient(url)
    results: list[Outcome | None] = [None] * len(arrivals)
    done = threading.Semaphore(0)
    t0 = clock()

    def callback(i: int, sent: float, result, error) -> None:
        lat = (clock() - sent) * 1000.0
        if error is not None:
            msg = error.message() if callable(getattr(error, "message", None)) else str(error)
            status = error.status() if callable(getattr(error, "status", None)) else None
            out = Outcome(i, sent - t0, lat, False, error_kind=classify(status, msg or "").__name__, error=msg[:300])
        else:
            img = result.as_numpy("IMAGE")
            served = result.as_numpy("SERVED_BY").reshape(-1)[0].decode()
            conf = result.as_numpy("CONFIDENCE")
            ok = img is not None and img.size > 0
            out = Outcome(i, sent - t0, lat, ok, served_by=served, error="" if ok else "empty image",
                          error_kind="" if ok else "InferenceFailed",
                          image=img.reshape(img.shape[-3:]) if keep_images and ok else None,
                          confidence=float(conf.reshape(-1)[0]) if conf is not None and conf.size else float("nan"))
        results[i] = out
        if on_done is not None:
            on_done(out)
        done.release()

    try:
        for i, a in enumerate(arrivals):
            delay = t0 + a.t_s - clock()
            if delay > 0:
                time.sleep(delay)
            prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
            prompt.set_data_from_numpy(np.array([[a.prompt.encode()]], dtype=object))
            seed = grpcclient.InferInput("SEED", [1, 1], "INT64")
            seed.set_data_from_numpy(np.array([[a.seed]], dtype=np.int64))
            sent = clock()
            try:
                client.async_infer(model, [prompt, seed], callback=lambda result, error, i=i, s=sent: callback(i, s, result, error),
                                   client_timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - e.g. channel down: record it, go on
                results[i] = Outcome(i, sent - t0, 0.0, False, error_kind=classify(None, str(exc)).__name__,
                                     error=str(exc)[:300])
                done.release()
        for _ in arrivals:
            done.acquire(timeout=timeout_s + 5.0)
    finally:
        client.close()
    return [r if r is not None else Outcome(i, arrivals[i].t_s, float("nan"), False, error_kind="Lost",
                                            error="no callback") for i, r in enumerate(results)]


def constant_rate(rate_qps: float, duration_s: float, prompts: Sequence[str], start_s: float = 0.0) -> list[Arrival]:
    """Evenly spaced arrivals at ``rate_qps`` for ``duration_s`` seconds, cycling ``prompts``."""
    if rate_qps <= 0 or duration_s <= 0 or not prompts:
        raise ValueError(f"rate_qps={rate_qps}, duration_s={duration_s}, {len(prompts)} prompts; expected > 0, > 0, >= 1")
    n = int(rate_qps * duration_s)
    return [Arrival(start_s + k / rate_qps, prompts[k % len(prompts)], seed=k) for k in range(n)]
