"""Restricted protocols (model control, shared memory, model config, statistics) on a real
tritonserver, and localhost binding."""
from __future__ import annotations

import base64
import shutil
import socket
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from benchmarks.perf.run import run_mode
from client.errors import PermissionDenied, triton_errors
from orchestrator.server import RESTRICTED_APIS, TritonServer, TritonServerConfig, admin_headers, read_admin_key
from tests.conftest import ASSETS, CASCADE_MODELS, build_cascade_repository
from tests.triton_procs import running_stub_pids, stubs

pytestmark = pytest.mark.triton

KEY = "x-diffserve-admin:s3cret-key"


@pytest.fixture
def restricted_server(triton_server_factory):
    return triton_server_factory(ASSETS / "smoke_repository", load_models=("smoke",), restricted_key=KEY)


@pytest.fixture(scope="module")
def shared_restricted_server(tmp_path_factory):
    """One restricted server, ``smoke`` plus the stand-in ``light`` stage, for the tests that
    leave it as they found it (no unload)."""
    tmp = tmp_path_factory.mktemp("restricted")
    repo = tmp / "repo"
    shutil.copytree(ASSETS / "smoke_repository" / "smoke", repo / "smoke")
    shutil.copytree(ASSETS / "cascade_repository" / "light", repo / "light")
    shutil.copy(ASSETS / "cascade_repository" / "standin.py", repo / "standin.py")
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=("smoke", "light"), restricted_key=KEY,
                                         log_path=tmp / "tritonserver.log")) as server:
        yield server


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


# --- shared memory: the protocol that let an unauthenticated client kill the server (issue 15) ----
def _smoke_inputs(module=grpcclient):
    x = module.InferInput("X", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    t = module.InferInput("TEXT", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[b"hi"]], dtype=object))
    return [x, t]


def _serves(server) -> bool:
    """The server is alive, ready, and the smoke model answers a normal request correctly."""
    client = server.grpc_client()
    try:
        return (server.process.poll() is None and client.is_server_ready()
                and client.infer("smoke", _smoke_inputs()).as_numpy("Y").tolist() == [[2.0] * 4])
    finally:
        client.close()


def _light_inputs():
    prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[b"a red circle"]], dtype=object))
    seed = grpcclient.InferInput("SEED", [1, 1], "INT64")
    seed.set_data_from_numpy(np.zeros((1, 1), np.int64))
    return [prompt, seed]


def test_stub_region_cannot_be_registered_as_shared_memory_without_key(shared_restricted_server):
    # The attack: register light's Python stub's own region (its name is in /dev/shm), then have
    # Triton write light's IMAGE into it. Unrestricted, Triton 2.51 dies
    # (boost::interprocess::lock_exception, then a signal).
    stub = next(s for s in stubs(shared_restricted_server.process.pid).values() if s.instance.startswith("light"))
    assert Path(f"/dev/shm/{stub.shm_region}").exists()
    all_stubs = running_stub_pids(shared_restricted_server.process.pid)
    grpc = shared_restricted_server.grpc_client()
    http = httpclient.InferenceServerClient(shared_restricted_server.http_url)
    with pytest.raises(PermissionDenied), triton_errors("register_system_shared_memory"):
        grpc.register_system_shared_memory("victim", "/" + stub.shm_region, 1 << 20)
    with pytest.raises(PermissionDenied), triton_errors("register_system_shared_memory"):
        http.register_system_shared_memory("victim", "/" + stub.shm_region, 1 << 20)
    out = grpcclient.InferRequestedOutput("IMAGE")
    out.set_shared_memory("victim", 16 * 16 * 3)
    with pytest.raises(InferenceServerException, match="victim"):
        grpc.infer("light", _light_inputs(), outputs=[out])
    # Reading the registry or dropping someone's region needs the key too.
    for call in (lambda: grpc.get_system_shared_memory_status(), lambda: grpc.unregister_system_shared_memory(),
                 lambda: http.get_system_shared_memory_status(), lambda: http.unregister_system_shared_memory()):
        with pytest.raises(PermissionDenied), triton_errors("system shared memory"):
            call()
    time.sleep(0.5)  # a crash after the refused calls would show by now
    assert _serves(shared_restricted_server)
    assert grpc.infer("light", _light_inputs()).as_numpy("IMAGE").shape == (1, 16, 16, 3)
    assert running_stub_pids(shared_restricted_server.process.pid) == all_stubs  # the same stubs, still running


def test_cuda_shared_memory_needs_the_key_too(shared_restricted_server):
    grpc = shared_restricted_server.grpc_client()
    http = httpclient.InferenceServerClient(shared_restricted_server.http_url)
    handle = bytes(64)  # a cudaIpcMemHandle_t is 64 bytes; never opened: the refusal comes first
    with pytest.raises(PermissionDenied), triton_errors("register_cuda_shared_memory"):
        grpc.register_cuda_shared_memory("gpu", handle, 0, 1 << 20)
    with pytest.raises(PermissionDenied), triton_errors("register_cuda_shared_memory"):
        http.register_cuda_shared_memory("gpu", base64.b64encode(handle), 0, 1 << 20)
    with pytest.raises(PermissionDenied), triton_errors("get_cuda_shared_memory_status"):
        grpc.get_cuda_shared_memory_status()
    assert _serves(shared_restricted_server)


def test_key_holder_can_use_system_shared_memory(shared_restricted_server):
    region = shared_memory.SharedMemory(create=True, size=64)  # the client's own region
    grpc = shared_restricted_server.grpc_client()
    headers = admin_headers(KEY)
    try:
        grpc.register_system_shared_memory("mine", "/" + region.name, 64, headers=headers)
        out = grpcclient.InferRequestedOutput("Y")
        out.set_shared_memory("mine", 16)
        grpc.infer("smoke", _smoke_inputs(), outputs=[out])
        assert np.frombuffer(region.buf[:16], dtype=np.float32).tolist() == [2.0] * 4
        status = grpc.get_system_shared_memory_status(headers=headers, as_json=True)
        assert "mine" in status.get("regions", {})
        grpc.unregister_system_shared_memory("mine", headers=headers)
    finally:
        region.close()
        region.unlink()
    assert _serves(shared_restricted_server)


def test_model_config_needs_the_key_but_metadata_and_health_do_not(shared_restricted_server):
    grpc = shared_restricted_server.grpc_client()
    with pytest.raises(PermissionDenied), triton_errors("get_model_config", model="smoke"):
        grpc.get_model_config("smoke")
    assert grpc.get_model_config("smoke", headers=admin_headers(KEY), as_json=True)["config"]["name"] == "smoke"
    assert [i.name for i in grpc.get_model_metadata("smoke").inputs] == ["X", "TEXT"]
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("smoke")


def test_every_restricted_api_is_on_the_command_line():
    cmd = " ".join(TritonServer(TritonServerConfig(restricted_key=KEY)).command())
    for flag in ("--grpc-restricted-protocol=", "--http-restricted-api="):
        apis = cmd.split(flag, 1)[1].split(":", 1)[0].split(",")
        assert sorted(apis) == sorted(RESTRICTED_APIS)
    assert {"shared-memory", "model-repository", "model-config", "statistics"} <= set(RESTRICTED_APIS)


# --- the project's own clients read the key ------------------------------------------------------
def test_admin_key_comes_from_the_environment_then_the_key_file(tmp_path):
    key_file = tmp_path / "admin_key"
    assert read_admin_key({}, key_file) is None  # no key anywhere: an unrestricted server
    key_file.write_text(KEY + "\n")
    assert read_admin_key({}, key_file) == KEY
    assert read_admin_key({"DIFFSERVE_ADMIN_KEY": "x-other:v2"}, key_file) == "x-other:v2"
    key_file.write_text("no-colon\n")
    with pytest.raises(ValueError, match="header:value"):
        read_admin_key({}, key_file)


def test_perf_analyzer_measures_a_restricted_server_only_with_the_key(triton_server_factory, tmp_path):
    repo = build_cascade_repository(tmp_path / "repo", tmp_path / "control.json")
    server = triton_server_factory(repo, load_models=CASCADE_MODELS, restricted_key=KEY)
    # perf_analyzer reads the model config and the statistics: both restricted.
    with pytest.raises(RuntimeError, match="restricted"):
        run_mode(server.grpc_url, "concurrency", "1", tmp_path / "no-key", request_count=3, timeout_s=120)
    res = run_mode(server.grpc_url, "concurrency", "1", tmp_path / "key", request_count=3, timeout_s=120, admin_key=KEY)
    assert [r["Concurrency"] for r in res["rows"]] == ["1"] and float(res["rows"][0]["Inferences/Second"]) > 0
    secret = KEY.partition(":")[2]
    left_behind = [p for p in (tmp_path / "key").iterdir() if secret in p.read_text(errors="replace")]
    assert not left_behind and secret not in str(res["commands"])  # the key is not written to the run's files
