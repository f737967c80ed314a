"""Exported tiny SD and SDXL repositories served by a real tritonserver through the stage models."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving import load_stage
from serving.control import write_control
from orchestrator.server import TritonStartError

pytestmark = pytest.mark.triton
MODELS = ("light", "heavy", "discriminator")


def _generate(client, model: str, prompts: list[str], seeds: list[int] | None):
    p = grpcclient.InferInput("PROMPT", [len(prompts), 1], "BYTES")
    p.set_data_from_numpy(np.array([[s.encode()] for s in prompts], dtype=object))
    inputs = [p]
    if seeds is not None:
        s = grpcclient.InferInput("SEED", [len(seeds), 1], "INT64")
        s.set_data_from_numpy(np.array(seeds, dtype=np.int64).reshape(-1, 1))
        inputs.append(s)
    return client.infer(model, inputs).as_numpy("IMAGE")


def _point_control_file(repo, control) -> None:
    """Give each rendered config.pbtxt a test-local control file (the default lives under runs/)."""
    for m in MODELS:
        cfg = repo / m / "config.pbtxt"
        text = cfg.read_text()
        start = text.index('key: "control_file"')
        end = text.index("}", text.index("string_value", start)) + 1
        cfg.write_text(text[:start] + f'key: "control_file" value: {{ string_value: "{control}" }}' + text[end:])


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_exported_pipeline_serves_the_runtime_image(tiny_exported, triton_server_factory, tmp_path, kind):
    _, exported = tiny_exported(kind)
    repo = tmp_path / "repo"
    shutil.copytree(exported, repo)
    control = tmp_path / "control.json"
    write_control(control, {"batch_size": {"light": 1, "heavy": 2, "discriminator": 2}})
    _point_control_file(repo, control)
    server = triton_server_factory(repo, load_models=MODELS)
    client = server.grpc_client()
    prompts, seeds = ["a red circle on the left", "two blue squares", "a"], [3, 4, 5]
    for stage in ("light", "heavy"):
        images = _generate(client, stage, prompts, seeds)
        assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
        expected = load_stage(repo / stage / "1" / "artifacts").generate(prompts, seeds)
        assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1  # same runtime, chunked by the control file
    conf_in = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
    conf_in.set_data_from_numpy(images)
    conf = client.infer("discriminator", [conf_in]).as_numpy("CONFIDENCE")
    assert conf.shape == (3, 1) and np.all((conf > 0) & (conf < 1))
    # SEED is optional: seed 0, as in the cascade model
    np.testing.assert_array_equal(_generate(client, "light", ["a"], None), _generate(client, "light", ["a"], [0]))
    client.close()


def test_bad_requests_get_clear_errors_and_the_stage_keeps_serving(tiny_exported, triton_server_factory):
    _, repo = tiny_exported("sd")
    server = triton_server_factory(repo, load_models=("light",))
    client = server.grpc_client()
    with pytest.raises(InferenceServerException, match=r"SEED\[0\]=-5; expected an integer in \[0, 4294967295\]"):
        _generate(client, "light", ["a"], [-5])
    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        p = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
        p.set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=object))
        client.infer("light", [p])
    assert _generate(client, "light", ["still fine"], [1]).shape == (1, 32, 32, 3)
    client.close()


def test_a_stale_repository_is_refused_at_load(tiny_exported, triton_server_factory, tmp_path):
    cfg_path, exported = tiny_exported("sd")
    repo = tmp_path / "repo"
    shutil.copytree(exported, repo, ignore=shutil.ignore_patterns("heavy", "discriminator"))
    edited = tmp_path / "edited.yaml"
    edited.write_text(cfg_path.read_text().replace("slo_ms: 5000", "slo_ms: 7000"))
    cfg = repo / "light" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(str(cfg_path), str(edited)))
    with pytest.raises(TritonStartError, match="config changed since the export"):
        triton_server_factory(repo, load_models=("light",), startup_timeout_s=60)
    assert json.loads((repo / "light" / "1" / "artifacts" / "stage.json").read_text())["config_hash"]
