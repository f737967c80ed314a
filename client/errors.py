"""The project's exceptions, and the one place that turns tritonclient errors into them.

Every caller of ``tritonclient`` (client, orchestrator, benchmarks) wraps its calls in
:func:`triton_errors` so that code above it sees only these types::

    with triton_errors("load_model", model="light"):
        client.load_model("light", config=cfg)
"""
from __future__ import annotations

import contextlib
from typing import Iterator


class DiffServeError(RuntimeError):
    """Base class of the project's errors."""


class InvalidRequest(DiffServeError):
    """The server rejected the request as malformed (gRPC INVALID_ARGUMENT, HTTP 400)."""


class RequestDropped(DiffServeError):
    """Load shedding: the request could not finish before its deadline and was refused at once."""


class ModelNotReady(DiffServeError):
    """The model is not loaded, still loading, or unavailable."""


class ModelLoadFailed(DiffServeError):
    """load_model/unload_model failed (bad config, initialize() raised, ...)."""


class PermissionDenied(DiffServeError):
    """A restricted protocol (model control, statistics) was called without the right key."""


class ServerUnavailable(DiffServeError):
    """The server cannot be reached (not started, crashed, wrong address)."""


class InferenceFailed(DiffServeError):
    """Any other server-side failure of an inference."""


# Load-shedding errors carry this marker so that clients can tell them from other failures.
DROP_MARKER = "[diffserve:dropped]"
# Triton's own refusals of queued requests (bounded queue full, queue timeout) are load shedding too.
TRITON_SHED_MESSAGES = ("exceeds maximum queue size", "request timeout expired")


def classify(status: str | None, message: str) -> type[DiffServeError]:
    """Map a tritonclient status string and message to one of the project's error types."""
    s = (status or "").upper()
    m = message.lower()
    if DROP_MARKER in message or any(t in m for t in TRITON_SHED_MESSAGES):
        return RequestDropped
    if "PERMISSION_DENIED" in s or "restricted" in m or "permission" in m:
        return PermissionDenied
    if "UNAVAILABLE" in s or "failed to connect" in m or "connection refused" in m or "socket closed" in m:
        return ServerUnavailable
    if "INVALID_ARGUMENT" in s or s == "400":
        return InvalidRequest
    if "not ready" in m or "unknown model" in m or "is not found" in m or "unavailable model" in m or "NOT_FOUND" in s:
        return ModelNotReady
    if "load failed" in m or "failed to load" in m or "load_model" in m:
        return ModelLoadFailed
    return InferenceFailed


@contextlib.contextmanager
def triton_errors(operation: str, model: str | None = None) -> Iterator[None]:
    """Re-raise ``tritonclient`` exceptions from the block as :class:`DiffServeError` subclasses.

    The message names the operation and model; the original exception is chained.
    """
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    try:
        yield
    except InferenceServerException as exc:
        msg = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
        status = exc.status() if callable(getattr(exc, "status", None)) else None
        cls = classify(status, msg or str(exc))
        if cls in (InferenceFailed, InvalidRequest) and operation in ("load_model", "unload_model"):
            # Triton 2.51 answers a load whose initialize() raised with INVALID_ARGUMENT
            # ("load failed for model ..."): for model control that is a failed load.
            cls = ModelLoadFailed
        where = f"{operation}({model})" if model else operation
        raise cls(f"{where}: {msg}") from exc
