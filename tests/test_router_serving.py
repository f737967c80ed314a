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


def test_the_orchestrators_hybrid_plan_writes_a_router_threshold_and_routed_prompts_skip_light(routed_stack, tmp_path):
    """One Orchestrator.step with the hybrid policy: the plan's router share goes through the real
    placement path into the control file as the calibrated router threshold, and the cascade then
    sends the prompts above it straight to heavy (light's Triton count does not move)."""
    from export.hybrid_calibration import router_curve
    from orchestrator.control import ControlConfig, DemandEstimator
    from orchestrator.loop import LoopConfig, Orchestrator
    from orchestrator.node import TritonNode
    from orchestrator.placement import NodeSpec
    from planner import data, make_policy
    from planner.types import HybridSurface, RouterCurve
    from serving.control import read_control
    from serving.router import load_router
    from tests.orchestrator_support import PROFILES

    server, control = routed_stack
    write_control(control, {})
    profiles, deferral, quality = data.load_calibration(PROFILES, "cpu")
    # Routing half the prompts and deferring none is the best cell by far: the planner picks r = 0.5.
    surface = HybridSurface((0.0, 0.5), (0.0, 1.0), fid=((10.0, 9.0), (1.0, 5.0)), disc_threshold=((0.0, 1.0), (0.0, 1.0)))
    prompts = [f"a crowded scene {k}" for k in range(20)] + [f"one circle {k}" for k in range(20)]
    scores = load_router(Path(server.config.model_repository) / "router" / "1" / "artifacts").score(prompts)
    curve = RouterCurve(*map(tuple, zip(*router_curve(scores))))
    config = ControlConfig(models=profiles, slo_ms=2000.0, num_workers=3, deferral=deferral, quality=quality,
                           window_s=1.0, hybrid_surfaces={("light", "heavy"): surface}, router=curve)
    node = TritonNode(NodeSpec(server.grpc_url, "cpu", (0, 1, 2)), server.metrics_url)
    orch = Orchestrator([node], config, make_policy("hybrid"),
                        LoopConfig(window_s=1.0, control_path=control, log_path=tmp_path / "orch.jsonl",
                                   weights_path=tmp_path / "weights.json", metrics_path=tmp_path / "metrics.prom"),
                        estimator=DemandEstimator(initial_qps=2.0))
    orch.adopt()
    rec = orch.step(force_plan=True)
    assert rec["plan"]["router_share"] == 0.5 and rec["plan"]["workers"]["light"] >= 1, rec["plan"]
    threshold = read_control(control).router_threshold
    assert threshold == pytest.approx(curve.threshold_for(0.5)) and rec["control"]["router_threshold"] == threshold
    time.sleep(0.3)  # the serving models re-read the control file every 100 ms
    stats = server.grpc_client()
    light_before = model_stats(stats, "light")
    with CascadeClient(server.grpc_url) as client:
        for k in range(4):
            assert client.generate(f"a crowded scene {k}").served_by == "heavy"
        assert model_stats(stats, "light") == light_before  # Triton's own count: light never ran
        client.generate("one circle 3")
    assert model_stats(stats, "light")[0] == light_before[0] + 1  # below the threshold: the cascade
    node.close()
