"""GPU pinning without a GPU: the CUDA device Triton gives a model instance reaches the construction
of every engine (ONNX Runtime's CUDA provider, TensorRT engine/context/stream, the AOT package),
checked with fakes for the CUDA calls."""
from __future__ import annotations

import contextlib
import json
import sys
import types

import numpy as np
import pytest
import torch

from serving import engines
from serving.triton import stage_model
from serving.triton.stage_model import ConfigInvalid, instance_device

DEVICE = 3


def _component(tmp_path, backend: str, device: str = "cuda") -> dict:
    (tmp_path / "unet.onnx").write_bytes(b"onnx")
    comp = {"name": "unet", "onnx": "unet.onnx", "inputs": ["sample"], "outputs": ["noise_pred"], "engines": {}}
    if backend != "onnxruntime":
        (tmp_path / f"unet.{backend}").write_bytes(b"engine")
        comp["engines"] = {backend: f"unet.{backend}"}
        comp["engine_info"] = {backend: {"device": device, "dtype": "float16", "max_batch": 32}}
    return comp


def test_onnxruntime_cuda_provider_gets_the_instance_device(tmp_path, monkeypatch):
    import onnxruntime

    seen = {}

    class FakeSession:
        def __init__(self, path, sess_options=None, providers=None):
            seen["providers"] = providers

        def get_inputs(self):
            return []

        get_outputs = get_inputs

        def get_providers(self):
            return [p if isinstance(p, str) else p[0] for p in seen["providers"]]

    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    engines.open_engine(_component(tmp_path, "onnxruntime"), tmp_path, "onnxruntime", device_id=DEVICE)
    assert seen["providers"] == [("CUDAExecutionProvider", {"device_id": DEVICE}), "CPUExecutionProvider"]


class _FakeCuda:
    """torch.cuda's device context, stream and current device, recording what was current when."""

    def __init__(self):
        self.current = 0
        self.events: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def device(self, dev):
        before, self.current = self.current, torch.device(dev).index
        try:
            yield
        finally:
            self.current = before

    def stream(self, device=None):
        self.events.append(("stream", torch.device(device).index))
        return types.SimpleNamespace(cuda_stream=0)


def _fake_tensorrt(cuda: _FakeCuda) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")

    class Engine:
        num_io_tensors = 0

        def create_execution_context(self):
            cuda.events.append(("context", cuda.current))
            return object()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            cuda.events.append(("engine", cuda.current))
            return Engine()

    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = Runtime
    trt.TensorIOMode = types.SimpleNamespace(INPUT=0)
    trt.nptype = lambda dtype: np.float32
    return trt


def test_tensorrt_engine_context_and_stream_are_created_on_the_instance_device(tmp_path, monkeypatch):
    cuda = _FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(cuda))
    monkeypatch.setattr(torch.cuda, "device", cuda.device)
    monkeypatch.setattr(torch.cuda, "Stream", cuda.stream)
    engine = engines.open_engine(_component(tmp_path, "tensorrt"), tmp_path, "tensorrt", device_id=DEVICE)
    assert cuda.events == [("engine", DEVICE), ("context", DEVICE), ("stream", DEVICE)]
    assert engine.device == torch.device("cuda", DEVICE) and engine.max_batch == 32


def test_cuda_aot_package_is_loaded_on_the_instance_device(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(engines, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch._inductor, "aoti_load_package",
                        lambda path, device_index=-1: seen.setdefault("device_index", device_index))
    engine = engines.open_engine(_component(tmp_path, "aot"), tmp_path, "aot", device_id=DEVICE)
    assert seen["device_index"] == DEVICE and engine.device == torch.device("cuda", DEVICE)


def test_cpu_aot_package_ignores_the_device_and_a_cuda_one_without_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path, device_index=-1: device_index)
    cpu = engines.open_engine(_component(tmp_path, "aot", device="cpu"), tmp_path, "aot", device_id=None)
    assert cpu.model == -1 and cpu.device == torch.device("cpu")
    monkeypatch.setattr(engines, "_cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="unet's package unet.aot was built for CUDA and torch sees no GPU"):
        engines.open_engine(_component(tmp_path, "aot"), tmp_path, "aot", device_id=DEVICE)


@pytest.mark.parametrize("args, expected", [
    ({"model_instance_kind": "GPU", "model_instance_device_id": "5"}, 5),
    ({"model_instance_kind": "CPU", "model_instance_device_id": "0"}, None),  # Triton says 0 for CPU too
    ({}, None),
])
def test_instance_device_is_the_gpu_of_a_kind_gpu_instance(args, expected):
    assert instance_device(args) == expected


def test_a_gpu_instance_without_a_device_index_is_refused():
    with pytest.raises(ConfigInvalid, match=r"model_instance_device_id='x' for a KIND_GPU instance"):
        instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "x"})


def test_load_stage_builds_every_component_on_the_device(tiny_exported, monkeypatch):
    from serving import pipeline

    _, repo = tiny_exported("sd")
    seen = []
    real = pipeline.open_engine
    monkeypatch.setattr(pipeline, "open_engine", lambda comp, art, backend, threads, device_id: (
        seen.append((comp["name"], device_id)), real(comp, art, backend, threads))[1])
    pipeline.load_stage(repo / "light" / "1" / "artifacts", device_id=DEVICE)
    assert sorted(seen) == [("text_encoder", DEVICE), ("unet", DEVICE), ("vae_decoder", DEVICE)]


def test_the_stage_model_passes_triton_s_device_to_the_runtime(tmp_path, monkeypatch):
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Logger = types.SimpleNamespace(log_info=lambda msg: None)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    seen = {}

    def fake_load_stage(art, backend, threads, expected_hash, device_id):
        seen["device_id"] = device_id
        spec = types.SimpleNamespace(stage="light", height_px=32, width_px=32, pipeline_class="P", steps=1)
        return types.SimpleNamespace(spec=spec, engines={})

    monkeypatch.setattr("serving.pipeline.load_stage", fake_load_stage)
    config = {"name": "light", "parameters": {"stage": {"string_value": "light"}},
              "input": [{"name": "PROMPT", "data_type": "TYPE_STRING", "dims": ["1"]}],
              "output": [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": ["32", "32", "3"]}]}
    stage_model.StageModel().initialize({"model_config": json.dumps(config), "model_repository": str(tmp_path),
                                         "model_version": "1", "model_instance_kind": "GPU",
                                         "model_instance_device_id": "2"})
    assert seen["device_id"] == 2
