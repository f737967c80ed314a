"""Removing instances of a loaded model is a full reload, never Triton's in-place instance update:
shrinking a Python-backend model in place while requests are in flight crashes tritonserver
(triton-inference-server/server#7723; seen in a live benchmark: heavy 2 -> 1 under load).
Growing stays in place."""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from orchestrator.node import GENERATION_PARAM, TritonNode
from orchestrator.placement import NodeSpec, instance_group, removes_instances
from tests.triton_fakes import FakeTriton, stage_config



@pytest.mark.parametrize("kind, loaded, wanted, removes", [
    ("cpu", (0, 1), (0,), True),
    ("cpu", (0, 1, 2), (1, 2), True),
    ("cpu", (0,), (0, 1), False),
    ("cpu", (0, 1), (0, 1), False),
    ("gpu", (0, 1), (0,), True),
    ("gpu", (0, 1), (0, 2), True),  # same count, but GPU 1's instance goes away
    ("gpu", (0,), (0, 1), False),
    ("gpu", (1, 3), (1, 2, 3), False),
])
def test_a_change_removes_instances_when_fewer_remain_or_a_gpu_is_dropped(kind, loaded, wanted, removes):
    assert removes_instances(instance_group(kind, loaded), instance_group(kind, wanted)) is removes


def test_triton_normalised_cpu_groups_count_like_the_orchestrators():
    """Triton's returned config carries ``gpus: []`` and other fields on a CPU group."""
    served = [{"name": "heavy_0", "kind": "KIND_CPU", "count": 2, "gpus": [], "secondary_devices": [],
               "profile": [], "passive": False, "host_policy": ""}]
    assert removes_instances(served, instance_group("cpu", (0,)))
    assert not removes_instances(served, instance_group("cpu", (0, 1)))




def _beyond_instance_group(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "instance_group"}


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_a_shrink_changes_the_config_beyond_instance_group_and_a_growth_does_not(tmp_path, kind):
    (tmp_path / "heavy").mkdir()
    (tmp_path / "heavy" / "config.pbtxt").write_text(stage_config("heavy", f"KIND_{kind.upper()}", max_batch_size=8, image_px=16))
    node = TritonNode(NodeSpec("127.0.0.1:1", kind, (0, 1, 2)), "http://127.0.0.1:2/metrics", timeout_s=1.0,
                      model_repository=tmp_path, cpu_threads=1)
    node.client = FakeTriton(tmp_path)
    node.set_instances("heavy", (0,))
    for slots in [(0, 1), (0,), (0, 1, 2), (1, 2), (1,), (1, 2)]:
        before = node.model_config("heavy")
        node.set_instances("heavy", slots)
        after = node.model_config("heavy")
        shrink = removes_instances(before["instance_group"], after["instance_group"])
        assert (_beyond_instance_group(after) != _beyond_instance_group(before)) is shrink, (before, after)
    generations = [c.get("parameters", {}).get(GENERATION_PARAM, {}).get("string_value") for _, c in node.client.loads]
    assert generations[-7:] == [None, None, "1", "1", "2", "3", "3"]  # a new value on every shrink


@pytest.mark.triton
def test_shrinking_a_stage_under_in_flight_requests_keeps_the_server_up_and_answers_every_request(
        triton_server_factory, tmp_path):
    """Real Triton: the stand-in heavy stage (0.3 s per batch) on 2 instances, kept busy by 6 clients;
    the node shrinks it to 1 instance mid-stream. The server stays up, every request gets an image,
    and the remaining instance is a fresh stub (a full reload, not the in-place update of #7723)."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    from tests.conftest import build_cascade_repository  # noqa: PLC0415
    from tests.orchestrator_support import ADMIN_KEY, stub_pids  # noqa: PLC0415

    repo = build_cascade_repository(tmp_path / "repo", tmp_path / "control.json")
    cfg = repo / "heavy" / "config.pbtxt"
    cfg.write_text(re.sub(r'(key: "delay_ms" value: \{ string_value: )"[^"]*"', r'\1"300"', cfg.read_text()))
    server = triton_server_factory(repo, load_models=(), restricted_key=ADMIN_KEY)
    node = TritonNode(NodeSpec(server.grpc_url, "cpu", (0, 1)), server.metrics_url, admin_key=ADMIN_KEY,
                      model_repository=repo, timeout_s=60)
    stop, results, lock = threading.Event(), [], threading.Lock()

    def client_loop(i: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            while not stop.is_set():
                prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
                prompt.set_data_from_numpy(np.array([[f"a prompt {i}".encode()]], dtype=object))
                seed = grpcclient.InferInput("SEED", [1, 1], "INT64")
                seed.set_data_from_numpy(np.array([[i]], dtype=np.int64))
                try:
                    image = client.infer("heavy", [prompt, seed], client_timeout=30).as_numpy("IMAGE")
                    outcome = "ok" if image is not None and image.shape == (1, 16, 16, 3) else f"bad image {image}"
                except Exception as exc:  # noqa: BLE001 - every failure is what the test reports
                    outcome = f"{type(exc).__name__}: {exc}"
                with lock:
                    results.append(outcome)
        finally:
            client.close()

    try:
        node.set_instances("heavy", (0, 1))
        before = stub_pids(server, "heavy")
        assert len(before) == 2, before
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.5)  # both instances busy, a queue behind them
        done_before_shrink = len(results)
        node.set_instances("heavy", (0,))
        time.sleep(1.5)  # keep sending while the old instances drain
        stop.set()
        for t in threads:
            t.join(60)
        assert server.process.poll() is None, server.log_tail()
        assert node.is_live() and node.is_ready("heavy")
        errors = [r for r in results if r != "ok"]
        assert not errors, (len(errors), errors[:3])
        assert done_before_shrink >= 4 and len(results) > done_before_shrink  # load ran before and after
        deadline = time.monotonic() + 10.0
        while len(after := stub_pids(server, "heavy")) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)  # the old stubs exit once their in-flight requests are done
        assert len(after) == 1 and not set(after) & set(before), (before, after)
    finally:
        stop.set()
        node.close()
