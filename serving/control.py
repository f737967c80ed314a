"""The runtime control file (docs/interfaces.md section 3): threshold, routing, SLO, batch sizes.

The orchestrator (or, on a cluster node, the control agent) writes one JSON file by atomic
rename; every serving model reads it through :class:`ControlFile`, which re-parses it only
when the file at the path is a different one (inode, mtime or size changed) and looks at most
every ``check_interval_s`` (100 ms). So a new threshold, routing policy or batch size takes
effect within ~100 ms, without reloading any model::

    {"version": 7, "threshold": 0.42, "routing": "cascade", "heavy_share": 0.0,
     "slo_ms": 5000, "batch_size": {"light": 8, "heavy": 2, "discriminator": 8},
     "router_threshold": 0.8, "admit_factor": 1.0}

Pure parts (:func:`parse_control`, :func:`chunk_sizes`) raise ``ValueError`` with a message
naming the bad value and what was expected. The reader never raises for a missing or broken
file: it keeps serving with the last good state (or the defaults) and reports the problem in
:attr:`ControlFile.last_error`, because a half-written or bad control file must not take the
serving models down.

Whole states only: each state is one ``version``-numbered file swapped in by ``os.replace``, and
the reader parses one file at a time and swaps its cached state in one assignment, so a model
never serves a mix of two states. Because every atomic replace creates a new inode, two states
written within one mtime tick (coarse-mtime filesystems) are still told apart.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

ROUTING_POLICIES = ("cascade", "light", "heavy", "random")
STAGES = ("light", "heavy", "discriminator")
MAX_BATCH_SIZE = 32  # Triton max_batch_size of every serving model (docs/interfaces.md 2b)
DEFAULT_CHECK_INTERVAL_S = 0.1
_KEYS = ("version", "threshold", "routing", "heavy_share", "slo_ms", "batch_size", "instances", "router_threshold",
         "admit_factor")
MAX_ADMIT_FACTOR = 100.0  # the cascade's own drop_factor parameter has the same upper bound


@dataclasses.dataclass(frozen=True)
class ControlState:
    """One parsed control file.

    ``threshold``: confidence below which the cascade defers to heavy, in [0, 1].
    ``heavy_share``: probability of heavy under ``routing == "random"``, in [0, 1].
    ``slo_ms``: latency SLO in ms, or None (then the model's config default applies).
    ``batch_size``: planner batch size per stage (a stage absent here uses its own default).
    ``instances``: GPUs (instances) the plan gives each stage; the cascade's latency prediction
    divides a stage's work by them until it has measured how fast the stage drains a backlog.
    ``router_threshold``: under ``routing == "cascade"``, a prompt whose router score is at or
    above it goes straight to heavy (skipping light and the discriminator); None (or absent from
    the file): no router, every query cascades. Scores are the router's own scale (any real).
    ``admit_factor``: the plan asks the cascade to admit a request only when its predicted
    latency is within this x its SLO (the orchestrator's overload fallback sends 1.0: a query
    predicted past the SLO is a violation anyway, and serving it late makes later queries late);
    None (or absent): the cascade's own ``drop_factor``. It can only tighten admission
    (:func:`serving.routing.admit_limit_factor`); the drop bound of admitted requests stays
    ``drop_factor`` x SLO.
    """

    version: int = 0
    threshold: float = 0.5
    routing: str = "cascade"
    heavy_share: float = 0.0
    slo_ms: float | None = None
    batch_size: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    instances: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    router_threshold: float | None = None
    admit_factor: float | None = None

    def batch_size_for(self, stage: str, default: int = MAX_BATCH_SIZE) -> int:
        """The planner's batch size for ``stage``, or ``default`` when the file names none."""
        return int(self.batch_size.get(stage, default))

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this state (inverse of :func:`parse_control`)."""
        out: dict[str, Any] = {"version": self.version, "threshold": self.threshold, "routing": self.routing,
                               "heavy_share": self.heavy_share, "batch_size": dict(self.batch_size)}
        if self.slo_ms is not None:
            out["slo_ms"] = self.slo_ms
        if self.instances:
            out["instances"] = dict(self.instances)
        if self.router_threshold is not None:
            out["router_threshold"] = self.router_threshold
        if self.admit_factor is not None:
            out["admit_factor"] = self.admit_factor
        return out


def _number(obj: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"control file: {key}={v!r}; expected a number in [{lo}, {hi}]")
    return float(v)


def parse_control(obj: Any, base: ControlState | None = None) -> ControlState:
    """Validate a decoded control-file JSON object; keys it omits keep ``base``'s values.

    Raises ``ValueError`` naming the offending key and value (unknown keys are errors too, so
    that a typo such as ``"treshold"`` is not silently ignored).
    """
    base = base or ControlState()
    if not isinstance(obj, dict):
        raise ValueError(f"control file: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise ValueError(f"control file: unknown keys {unknown}; expected a subset of {list(_KEYS)}")
    kw: dict[str, Any] = {}
    if "version" in obj:
        v = obj["version"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"control file: version={v!r}; expected an integer >= 0")
        kw["version"] = v
    if "threshold" in obj:
        kw["threshold"] = _number(obj, "threshold", 0.0, 1.0)
    if "heavy_share" in obj:
        kw["heavy_share"] = _number(obj, "heavy_share", 0.0, 1.0)
    if "routing" in obj:
        if obj["routing"] not in ROUTING_POLICIES:
            raise ValueError(f"control file: routing={obj['routing']!r}; expected one of {list(ROUTING_POLICIES)}")
        kw["routing"] = obj["routing"]
    if "slo_ms" in obj:
        kw["slo_ms"] = None if obj["slo_ms"] is None else _number(obj, "slo_ms", 1e-3, 3.6e6)
    if "router_threshold" in obj:
        v = obj["router_threshold"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"control file: router_threshold={v!r}; expected a finite number or null (no router)")
        kw["router_threshold"] = None if v is None else float(v)
    if "admit_factor" in obj:
        kw["admit_factor"] = None if obj["admit_factor"] is None else _number(obj, "admit_factor", 1e-3, MAX_ADMIT_FACTOR)
    if "batch_size" in obj:
        kw["batch_size"] = MappingProxyType(_stage_counts(obj["batch_size"], "batch_size", 1, MAX_BATCH_SIZE))
    if "instances" in obj:
        kw["instances"] = MappingProxyType(_stage_counts(obj["instances"], "instances", 0, 1 << 20))
    return dataclasses.replace(base, **kw)


def _stage_counts(value: Any, key: str, lo: int, hi: int) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError(f"control file: {key}={value!r}; expected an object {{stage: int}}")
    out: dict[str, int] = {}
    for stage, n in value.items():
        if stage not in STAGES:
            raise ValueError(f"control file: {key} has stage {stage!r}; expected one of {list(STAGES)}")
        if isinstance(n, bool) or not isinstance(n, int) or not lo <= n <= hi:
            raise ValueError(f"control file: {key}[{stage!r}]={n!r}; expected an integer in [{lo}, {hi}]")
        out[stage] = n
    return out


def chunk_sizes(n_items: int, batch_size: int) -> list[int]:
    """Split ``n_items`` queries into consecutive chunks of at most ``batch_size``.

    This is how a stage enforces the planner's batch size without a reload: Triton's
    ``max_batch_size`` stays at the maximum, and the stage runs what the dynamic batcher hands
    it in these chunks. Example: ``chunk_sizes(5, 2) == [2, 2, 1]``.
    """
    if n_items < 0:
        raise ValueError(f"n_items={n_items}; expected >= 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")
    full, rest = divmod(n_items, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def write_control(path: str | Path, state: ControlState | Mapping[str, Any]) -> Path:
    """Atomically write a control file (temp file in the same folder, then ``os.replace``).

    ``state`` may be a :class:`ControlState` or a JSON-like mapping (validated first).
    Returns the path written.
    """
    path = Path(path)
    if not isinstance(state, ControlState):
        state = parse_control(dict(state))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state.to_json(), f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_control(path: str | Path, base: ControlState | None = None) -> ControlState:
    """Read and validate one control file (raises OSError / ValueError)."""
    text = Path(path).read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"control file {path}: not valid JSON ({exc})") from exc
    return parse_control(obj, base)


def default_control_path(cascade: str, project_root: str | Path | None = None) -> Path:
    """``<project_root>/runs/control/<cascade>.json`` (the default of the ``control_file`` parameter)."""
    root = Path(project_root or os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[1])
    return root / "runs" / "control" / f"{cascade}.json"


def resolve_control_path(value: str, project_root: str | Path | None = None) -> Path:
    """A ``control_file`` config parameter as a path; relative paths are under the project root."""
    p = Path(value)
    if p.is_absolute():
        return p
    root = Path(project_root or os.environ.get("PROJECT_ROOT") or Path(__file__).resolve().parents[1])
    return root / p


class ControlFile:
    """Cached reader of one control file, re-parsed when the file at its path changes.

    ``get()`` is cheap (one ``stat`` at most every ``check_interval_s``) and never raises:
    a missing file means ``default``; a broken file keeps the last good state and sets
    :attr:`last_error`. Thread-safe.
    """

    def __init__(self, path: str | Path, default: ControlState | None = None,
                 check_interval_s: float = DEFAULT_CHECK_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.default = default or ControlState()
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.default
        self._identity: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) of the file last parsed
        self._next_check = float("-inf")
        self.last_error: str | None = None

    def get(self) -> ControlState:
        """The current state (re-read if the file changed since the last check)."""
        with self._lock:
            now = self._clock()
            if now < self._next_check:
                return self._state
            self._next_check = now + self.check_interval_s
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._state, self._identity, self.last_error = self.default, None, None
                return self._state
            except OSError as exc:
                self.last_error = f"control file {self.path}: {exc}"
                return self._state
            # An atomic replace makes a new inode even when the mtime tick did not move.
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
            if identity == self._identity:
                return self._state
            try:
                self._state = read_control(self.path, self.default)
                self.last_error = None
            except (OSError, ValueError) as exc:
                self.last_error = str(exc)  # keep serving with the last good state
            self._identity = identity
            return self._state
