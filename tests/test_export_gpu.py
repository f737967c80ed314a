"""GPU path: fp16 engines built ahead of time (TensorRT or CUDA AOTInductor) reproduce PyTorch. Skipped without
a GPU (the same AOT code path is built and served on CPU by tests/test_export_aot.py, never skipped)."""
from __future__ import annotations

import pytest

from export import gpu

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu.cuda_available(), reason="needs an NVIDIA GPU (CUDA)")]


@pytest.fixture(scope="module")
def tiny_components():
    from serving.config import SchedulerChoice, StageConfig
    from export.exporter import components, geometry
    from export.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    return components(pipe, geometry(pipe, StageConfig("tiny", 2, 3.0, SchedulerChoice(), 32, 32)))


def _check_engine(comp, engine, tol_rel: float) -> None:
    from export.exporter import torch_outputs
    from export.verify import compare_outputs

    for b in (1, 2):
        inputs = {k: v[:b] for k, v in comp.inputs.items()}
        errs = compare_outputs(torch_outputs(comp, inputs), engine.run({k: v.numpy() for k, v in inputs.items()}))
        assert all(e["max_rel_err"] < tol_rel for e in errs.values()), (comp.name, b, errs)


def test_cuda_aot_packages_match_pytorch_in_fp16(tiny_components, tmp_path):
    from export.aot import build_aot_package
    from serving.engines import AotEngine

    for comp in tiny_components:
        info = build_aot_package(comp, tmp_path / f"{comp.name}.pt2", device="cuda", dtype="float16")
        engine = AotEngine(tmp_path / f"{comp.name}.pt2", tuple(comp.inputs), comp.outputs, device="cuda", device_id=0,
                           max_batch=info["max_batch"])
        _check_engine(comp, engine, tol_rel=2e-2)


@pytest.mark.skipif(not gpu.tensorrt_available(), reason="needs TensorRT")
def test_tensorrt_engines_match_pytorch_in_fp16(tiny_components, tmp_path):
    from export.exporter import export_onnx
    from serving.engines import TensorRTEngine

    for comp in tiny_components:
        onnx_path = export_onnx(comp, tmp_path)
        plan = gpu.build_tensorrt_engine(onnx_path, comp.inputs, comp.name, tmp_path / f"{comp.name}.plan")
        _check_engine(comp, TensorRTEngine(plan), tol_rel=2e-2)


def test_engine_choice_prefers_built_gpu_artifacts(tmp_path):
    from serving.engines import choose_backend

    (tmp_path / "unet.fp16.pt2").write_bytes(b"x")
    comp = {"name": "unet", "onnx": "unet.onnx", "engines": {"aot": "unet.fp16.pt2"},
            "engine_info": {"aot": {"device": "cuda", "dtype": "float16", "max_batch": 32}}}
    assert choose_backend(comp, tmp_path) == "aot"
    assert choose_backend(comp, tmp_path, "onnxruntime") == "onnxruntime"
