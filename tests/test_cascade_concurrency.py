"""The cascade on a real tritonserver never holds a request for another one's work, and never
answers one past its drop bound (stand-in stages, tests/assets/cascade_repository)."""
from __future__ import annotations

import json
import queue
import re
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from client import CascadeClient
from client.errors import DROP_MARKER, TRITON_SHED_MESSAGES
from serving.control import write_control

pytestmark = pytest.mark.triton

EASY, HARD = "an easy red circle", "a hard scene with four objects"


def set_param(config, key: str, value: str) -> None:
    text = re.sub(rf'(key: "{key}" value: \{{ string_value: )"[^"]*"', rf'\1"{value}"', config.read_text())
    assert f'"{value}"' in text, key
    config.write_text(text)


def test_a_light_served_request_is_not_held_by_a_deferred_one_of_the_same_batch(tmp_path):
    from conftest import CASCADE_MODELS, build_cascade_repository
    from orchestrator.server import TritonServer, TritonServerConfig

    repo = build_cascade_repository(tmp_path / "repo", tmp_path / "control.json")
    set_param(repo / "heavy" / "config.pbtxt", "delay_ms", "2000")  # heavy: 2 s per call
    cascade = repo / "cascade" / "config.pbtxt"
    # a 300 ms batching window so that both requests below land in the same cascade batch
    cascade.write_text(cascade.read_text().replace("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 300000"))
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=CASCADE_MODELS,
                                         log_path=tmp_path / "tritonserver.log")) as server:
        stats = server.grpc_client()
        before = stats.get_inference_statistics("cascade", as_json=True)["model_stats"][0]
        done: dict[str, tuple[str, float]] = {}

        def send(name: str, prompt: str) -> None:
            t0 = time.perf_counter()
            with CascadeClient(server.grpc_url, timeout_s=60) as c:
                served = c.generate(prompt).served_by
            done[name] = (served, time.perf_counter() - t0)

        threads = [threading.Thread(target=send, args=("deferred", HARD)), threading.Thread(target=send, args=("light", EASY))]
        threads[0].start()
        time.sleep(0.05)  # the deferred request is sent first
        threads[1].start()
        for t in threads:
            t.join(60)
        after = stats.get_inference_statistics("cascade", as_json=True)["model_stats"][0]
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) == 1  # one batch held both
    assert done["deferred"][0] == "heavy" and done["deferred"][1] >= 2.0
    print(done)
    assert done["light"][0] == "light" and done["light"][1] < 1.0, done  # not the heavy 2 s


def _histogram(metrics_url: str, name: str) -> dict[float | str, float]:
    """A cascade histogram: {bucket bound (float): cumulative count, "count": count, "sum": sum}."""
    out: dict[float | str, float] = {}
    for line in urllib.request.urlopen(metrics_url, timeout=10).read().decode().splitlines():
        if line.startswith(name) and 'model="cascade"' in line:
            m = re.search(r'le="([^"]+)"', line)
            out[float(m.group(1)) if m else line.split("{")[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_burst_of_200_requests_is_served_within_the_drop_bound_or_refused_and_none_is_lost(cascade_stack):
    server, control, _ = cascade_stack
    slo_ms = 1000.0
    # heavy one query per call: the stand-in then takes 40 ms per deferred query, one after the
    # other: 100 deferred queries are ~4 s of heavy work against a 1.5 s drop bound.
    write_control(control, {"batch_size": {"heavy": 1}})
    time.sleep(0.25)
    try:
        ratio_before = _histogram(server.metrics_url, "diffserve_cascade_answer_slo_ratio")
        stats = server.grpc_client()
        q_before = stats.get_inference_statistics("cascade", as_json=True)["model_stats"][0]["inference_stats"]["queue"]
        client = server.grpc_client()
        answers: queue.Queue = queue.Queue()
        sent_s = {}
        for k in range(200):
            inp = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[f"{HARD if k % 2 else EASY} {k}".encode()]], dtype=object))
            sent_s[k] = time.perf_counter()
            client.async_infer("cascade", [inp], parameters={"slo_ms": slo_ms},
                               callback=lambda result, error, k=k: answers.put((k, result, error, time.perf_counter())))
        got = {}
        for _ in range(200):
            k, result, error, t_s = answers.get(timeout=60)  # none hangs
            assert k not in got, f"request {k} answered twice"
            got[k] = (result, error, t_s - sent_s[k])
        ratio_after = _histogram(server.metrics_url, "diffserve_cascade_answer_slo_ratio")
        q_after = stats.get_inference_statistics("cascade", as_json=True)["model_stats"][0]["inference_stats"]["queue"]
    finally:
        control.unlink(missing_ok=True)
        time.sleep(0.15)
    served = [k for k, (r, e, _) in got.items() if e is None]
    refused = [e for r, e, _ in got.values() if e is not None]
    for e in refused:  # every refusal is load shedding (ours or Triton's bounded queue), UNAVAILABLE
        assert e.status() == "StatusCode.UNAVAILABLE" and (
            DROP_MARKER in e.message() or any(m in e.message().lower() for m in TRITON_SHED_MESSAGES)), e.message()
    assert len(served) + len(refused) == 200 and served and refused, (len(served), len(refused))
    for k in served:
        assert got[k][0].as_numpy("IMAGE").shape == (1, 16, 16, 3)

    def delta(key: float | str) -> float:
        return ratio_after.get(key, 0.0) - ratio_before.get(key, 0.0)

    queue_ms = (int(q_after["ns"]) - int(q_before.get("ns", 0))) / 1e6 / max(1, int(q_after["count"]) - int(q_before.get("count", 0)))
    client_ms = sorted(1000.0 * got[k][2] for k in served)
    print(json.dumps({"served": len(served), "refused": len(refused), "served_within_1x_slo": delta(1.0),
                      "served_within_1.5x_slo": delta(1.5), "cascade_queue_mean_ms": round(queue_ms, 1),
                      "client_p50_ms": round(client_ms[len(client_ms) // 2]), "client_max_ms": round(client_ms[-1])}))
    # server-side time (receipt by the cascade -> answer) / SLO of every served request
    assert delta("count") == len(served)
    assert delta(1.5) == len(served), {k: delta(k) for k in ratio_after}  # none past 1.5 x SLO
    assert queue_ms < 0.1 * slo_ms  # the time before the cascade received them was small
