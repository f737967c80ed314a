"""Restricted model-control and statistics protocols on a real tritonserver, and localhost binding."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from client.errors import PermissionDenied, triton_errors
from orchestrator.server import TritonServerConfig, admin_headers
from tests.conftest import ASSETS

pytestmark = pytest.mark.triton

KEY = "x-diffserve-admin:s3cret-key"


@pytest.fixture
def restricted_server(triton_server_factory):
    return triton_server_factory(ASSETS / "smoke_repository", load_models=("smoke",), restricted_key=KEY)


def _ready(client, name: str) -> bool:
    return client.is_model_ready(name)


def _wait(pred, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_grpc_client_without_key_can_neither_load_nor_unload(restricted_server):
    client = restricted_server.grpc_client()
    with pytest.raises(PermissionDenied), triton_errors("unload_model", model="smoke"):
        client.unload_model("smoke")
    time.sleep(0.5)  # an accepted unload would have started by now
    assert _ready(client, "smoke")
    with pytest.raises(PermissionDenied), triton_errors("load_model", model="smoke"):
        client.load_model("smoke")
    with pytest.raises(PermissionDenied), triton_errors("get_model_repository_index"):
        client.get_model_repository_index()
    with pytest.raises(PermissionDenied), triton_errors("get_inference_statistics"):
        client.get_inference_statistics("smoke")
    # A wrong key is no better than none.
    with pytest.raises(PermissionDenied), triton_errors("unload_model", model="smoke"):
        client.unload_model("smoke", headers=admin_headers("x-diffserve-admin:wrong"))
    assert _ready(client, "smoke")


def test_http_client_without_key_can_neither_load_nor_unload(restricted_server):
    client = httpclient.InferenceServerClient(restricted_server.http_url)
    with pytest.raises(PermissionDenied), triton_errors("unload_model", model="smoke"):
        client.unload_model("smoke")
    with pytest.raises(PermissionDenied), triton_errors("load_model", model="smoke"):
        client.load_model("smoke")
    assert client.is_model_ready("smoke")


def test_client_with_key_can_unload_and_load_and_read_statistics(restricted_server):
    client = restricted_server.grpc_client()
    headers = admin_headers(KEY)
    client.unload_model("smoke", headers=headers)
    _wait(lambda: not _ready(client, "smoke"))
    client.load_model("smoke", headers=headers)
    _wait(lambda: _ready(client, "smoke"))
    stats = client.get_inference_statistics("smoke", headers=headers, as_json=True)
    assert stats["model_stats"][0]["name"] == "smoke"
    http = httpclient.InferenceServerClient(restricted_server.http_url)
    http.unload_model("smoke", headers=admin_headers(KEY, protocol="http"))
    _wait(lambda: not _ready(client, "smoke"))


def test_inference_stays_open_without_key(restricted_server):
    client = restricted_server.grpc_client()
    x = grpcclient.InferInput("X", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    t = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[b"hi"]], dtype=object))
    assert client.infer("smoke", [x, t]).as_numpy("Y").tolist() == [[2.0] * 4]


def _non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_servers_bind_to_localhost_by_default(restricted_server):
    assert TritonServerConfig().host == "127.0.0.1"
    ip = _non_loopback_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    for port in (restricted_server.grpc_port, restricted_server.http_port, restricted_server.metrics_port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            assert s.connect_ex((ip, port)) != 0, f"port {port} reachable on {ip}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) == 0


def test_admin_headers_rejects_malformed_key():
    with pytest.raises(ValueError, match="header:value"):
        admin_headers("no-colon-here")
    with pytest.raises(ValueError, match="'grpc' or 'http'"):
        admin_headers(KEY, protocol="smtp")
