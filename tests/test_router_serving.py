"""The prompt router on a real tritonserver: the real ``router`` model and the real cascade over
stand-in stages (tests/assets/cascade_repository). A prompt the router scores at or above the
control state's router threshold never reaches ``light`` (Triton's own statistics count it)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import CascadeClient
from serving.control import write_control
from serving.router import fit_router

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parent.parent
ROUTER_CONFIG = '''name: "router"
backend: "python"
max_batch_size: 32
input [ { name: "PROMPT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 1000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters [ { key: "stage" value: { string_value: "router" } },
             { key: "control_file" value: { string_value: "CONTROL" } } ]
'''


def add_router(repo: Path, control: Path) -> None:
    """The real router model with a router trained to score prompts that say "crowded" high."""
    shutil.copytree(ROOT / "model_repository" / "router", repo / "router",
                    ignore=shutil.ignore_patterns("__pycache__", "artifacts", "config.pbtxt"))
    (repo / "router" / "config.pbtxt").write_text(ROUTER_CONFIG.replace("CONTROL", str(control)))
    art = repo / "router" / "1" / "artifacts"
    prompts = [f"a crowded scene {k}" for k in range(50)] + [f"one circle {k}" for k in range(50)]
    fit_router(prompts, np.array([True] * 50 + [False] * 50), buckets=64).save(art)
    (art / "stage.json").write_text(json.dumps({"format_version": 1, "kind": "router", "stage": "router"}))


def model_stats(client, model: str) -> tuple[int, int]:
    s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


@pytest.fixture(scope="module")
def routed_stack(tmp_path_factory):
    from conftest import CASCADE_MODELS, build_cascade_repository
    from orchestrator.server import TritonServer, TritonServerConfig

    tmp = tmp_path_factory.mktemp("router")
    control = tmp / "control.json"
    repo = build_cascade_repository(tmp / "repo", control)
    add_router(repo, control)
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=CASCADE_MODELS + ("router",),
                                         log_path=tmp / "tritonserver.log")) as server:
        yield server, control


def test_a_prompt_above_the_router_threshold_never_reaches_light(routed_stack):
    server, control = routed_stack
    write_control(control, {"router_threshold": 0.5})
    time.sleep(0.3)
    stats = server.grpc_client()
    light_before, router_before = model_stats(stats, "light"), model_stats(stats, "router")
    with CascadeClient(server.grpc_url) as client:
        for k in range(6):
            res = client.generate(f"a crowded scene {k}")
            assert res.served_by == "heavy" and np.isnan(res.confidence)  # no light image was scored
    assert model_stats(stats, "light") == light_before  # Triton's own count: light never ran
    assert model_stats(stats, "router")[0] - router_before[0] == 6
    with CascadeClient(server.grpc_url) as client:
        assert client.generate("one circle 3").served_by in ("light", "heavy")
    assert model_stats(stats, "light")[0] == light_before[0] + 1  # a prompt below it cascades


def test_without_a_router_threshold_every_prompt_cascades_through_light(routed_stack):
    server, control = routed_stack
    write_control(control, {})
    time.sleep(0.3)
    stats = server.grpc_client()
    light_before, router_before = model_stats(stats, "light"), model_stats(stats, "router")
    with CascadeClient(server.grpc_url) as client:
        client.generate("a crowded scene 1")
    assert model_stats(stats, "light")[0] == light_before[0] + 1 and model_stats(stats, "router") == router_before


@pytest.mark.parametrize("prompt,message", [(b"\x00", "control character"), (b"  ", "no printable character"),
                                            (b"\xff", "not valid UTF-8")])
def test_bad_input_to_the_router_is_refused_like_every_other_model(routed_stack, prompt, message):
    server, _ = routed_stack
    inp = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[prompt]], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        server.grpc_client().infer("router", [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and message in err.value.message()
    with pytest.raises(InferenceServerException, match="unknown request parameters"):
        server.grpc_client().infer("router", [_ok_input()], parameters={"routing": "heavy"})


def _ok_input():
    inp = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"a crowded scene"]], dtype=object))
    return inp
