"""Per-node routing weights applied live to HAProxy through its runtime API (no reload).

HAProxy (the distribution's package) balances gRPC per request (HTTP/2 streams in ``mode
http``) over one ``server`` per node in one backend; the server of node ``host:port`` is named
:func:`server_name` (the config is rendered by ``deploy/haproxy.py`` with the same names). Each
window the orchestrator sends ``set weight <backend>/<server> <w>`` for every node over the
runtime socket (``stats socket ... level admin``): HAProxy applies it at once to new requests,
open connections and requests in flight are untouched. Weight 0 sends a node nothing (a dead
node also fails HAProxy's own health check within about a second, before the next window).

:func:`weight_commands` and :func:`parse_stat` are pure; :class:`HAProxyRuntime` is the socket
adapter and a loop hook (a balancer that does not answer is recorded, never raised).
"""
from __future__ import annotations

import csv
import io
import socket
from typing import Any, Mapping

from orchestrator.hooks import LoopHooks

MAX_WEIGHT = 256  # HAProxy's weight range is 0..256


def server_name(url: str) -> str:
    """HAProxy server name of the node with gRPC ``url`` (``10.0.0.1:8001`` -> ``node_10_0_0_1_8001``)."""
    return "node_" + "".join(c if c.isalnum() else "_" for c in url)


def weight_commands(backend: str, weights: Mapping[str, int]) -> list[str]:
    """Runtime-API commands that set every node's weight (clipped to HAProxy's 0..256).

    Raises ValueError for a negative weight (the published weights are never negative).
    """
    out = []
    for url, w in sorted(weights.items()):
        if int(w) < 0:
            raise ValueError(f"routing weight of {url} is {w}; expected an integer >= 0")
        out.append(f"set weight {backend}/{server_name(url)} {min(int(w), MAX_WEIGHT)}")
    return out


def parse_stat(text: str, backend: str) -> dict[str, dict[str, str]]:
    """``show stat`` CSV -> ``{server name: row}`` for the servers of ``backend`` (row keys:
    HAProxy's column names, e.g. ``status`` UP/DOWN/MAINT, ``weight``, ``stot``)."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"show stat: expected a CSV header line '# pxname,...', got {text[:80]!r}")
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:]] + lines[1:])))
    return {r["svname"]: r for r in rows if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}


class HAProxyRuntime(LoopHooks):
    """HAProxy's runtime API at ``address``: a unix socket path, or ``host:port`` for a TCP socket."""

    def __init__(self, address: str, backend: str = "triton", timeout_s: float = 2.0):
        self.address, self.backend, self.timeout_s = address, backend, timeout_s
        self.last_applied: dict[str, int] = {}
        self.last_error: str | None = None

    def command(self, cmd: str) -> str:
        """Send one command (non-interactive mode: one per connection) and return the answer."""
        if "/" in self.address or self.address.endswith(".sock"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = self.address
        else:
            host, _, port = self.address.rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (host, int(port))
        with sock:
            sock.settimeout(self.timeout_s)
            sock.connect(target)
            sock.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def set_weights(self, weights: Mapping[str, int]) -> None:
        """Apply every node's weight; raises OSError (socket) or RuntimeError (HAProxy refused)."""
        for cmd in weight_commands(self.backend, weights):
            answer = self.command(cmd).strip()
            if answer:  # HAProxy answers nothing on success
                raise RuntimeError(f"haproxy refused {cmd!r}: {answer[:200]}")

    def servers(self) -> dict[str, dict[str, str]]:
        """The backend's servers as ``show stat`` reports them (status, weight, sessions, ...)."""
        return parse_stat(self.command("show stat"), self.backend)

    # -- loop hook ----------------------------------------------------------------------------
    def weights_published(self, weights: Mapping[str, int], version: int) -> None:
        try:
            self.set_weights(weights)
            self.last_applied, self.last_error = dict(weights), None
        except (OSError, RuntimeError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def window_finished(self, rec: dict[str, Any]) -> None:
        rec["balancer"] = {"applied": dict(self.last_applied), "error": self.last_error}
