"""The orchestrator's HTTP endpoint: its metrics for Prometheus and the control state for nodes.

- ``GET /metrics``: Prometheus text (:mod:`orchestrator.telemetry`), open like Triton's.
- ``GET /control?node=<grpc url>&have=<version>&wait_s=<s>``: the current whole control state
  for a node's agent (:mod:`orchestrator.channel`); long-polls until the version differs from
  ``have`` (``have`` omitted: none held). Needs the admin key header when the orchestrator has
  one (the same ``header:value`` Triton's restricted protocols use), so that no one else reads
  the plan or poses as a node. Answers ``200 {"version": v, "state": {...}}``, ``204`` before the
  first state, ``400`` naming a bad parameter, ``401`` without the key, ``404`` unknown node.
- ``GET /healthz``: ``ok``.
"""
from __future__ import annotations

import hmac
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from orchestrator.channel import MAX_WAIT_S, ControlChannel
from orchestrator.telemetry import OrchestratorMetrics

DEFAULT_WAIT_S = 10.0


class OrchestratorEndpoint:
    """A threaded HTTP server on ``host:port`` (0: a free port) serving ``channel`` and ``metrics``."""

    def __init__(self, channel: ControlChannel, metrics: OrchestratorMetrics, host: str = "127.0.0.1",
                 port: int = 0, admin_key: str | None = None):
        self.channel, self.metrics = channel, metrics
        header, _, value = (admin_key or "").partition(":")
        if admin_key and not (header and value):
            raise ValueError(f"admin_key must look like 'header:value', got {admin_key!r}")
        self._key = (header.lower(), value) if admin_key else None
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "OrchestratorEndpoint":
        self._thread = threading.Thread(target=self.server.serve_forever, name="orchestrator-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorised(self, headers) -> bool:
        if self._key is None:
            return True
        got = headers.get(self._key[0]) or ""
        return hmac.compare_digest(got.encode(), self._key[1].encode())

    def control(self, query: dict[str, list[str]], headers) -> tuple[int, dict | None]:
        """``(status, body)`` of one ``/control`` request."""
        if not self.authorised(headers):
            return 401, {"error": "missing or wrong admin key header"}
        node = (query.get("node") or [""])[0]
        if not node:
            return 400, {"error": "node=<grpc url> is required"}
        have_text = (query.get("have") or [""])[0]
        wait_text = (query.get("wait_s") or [str(DEFAULT_WAIT_S)])[0]
        try:
            have = int(have_text) if have_text not in ("", "none") else None
        except ValueError:
            return 400, {"error": f"have={have_text!r}; expected an integer version or nothing"}
        try:
            wait_s = float(wait_text)
        except ValueError:
            return 400, {"error": f"wait_s={wait_text!r}; expected seconds in [0, {MAX_WAIT_S}]"}
        try:
            state = self.channel.poll(node, have, wait_s)
        except ValueError as exc:
            return (404 if "not one of" in str(exc) else 400), {"error": str(exc)}
        if state is None:
            return 204, None
        return 200, {"version": state.version, "state": state.to_json()}


def _handler(endpoint: OrchestratorEndpoint) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, endpoint.metrics.render().encode(), "text/plain; version=0.0.4")
            elif url.path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif url.path == "/control":
                status, body = endpoint.control(urllib.parse.parse_qs(url.query), self.headers)
                self._send(status, b"" if body is None else json.dumps(body).encode(), "application/json")
            else:
                self._send(404, json.dumps({"error": f"no such path {url.path!r}; expected /metrics, "
                                                     "/control or /healthz"}).encode(), "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent went away during its long poll (stopped, restarted): nothing to answer

        def log_message(self, *args) -> None:  # quiet: one line per agent poll would flood the log
            pass

    return Handler
