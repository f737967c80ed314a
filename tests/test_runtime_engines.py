"""Engine choice on a machine without a GPU: ONNX Runtime, and explicit requests for missing artifacts fail clearly."""
from __future__ import annotations

import pytest

from serving.engines import choose_backend, open_engine


def test_auto_uses_onnxruntime_without_gpu_artifacts(tmp_path):
    assert choose_backend({"name": "unet", "onnx": "unet.onnx", "engines": {}}, tmp_path) == "onnxruntime"


def test_requesting_a_backend_whose_artifact_is_missing_names_it(tmp_path):
    comp = {"name": "unet", "onnx": "unet.onnx", "engines": {}}
    with pytest.raises(FileNotFoundError, match="backend 'tensorrt' requested but unet has no such artifact"):
        choose_backend(comp, tmp_path, "tensorrt")
    with pytest.raises(ValueError, match="backend 'cuda'; expected one of"):
        choose_backend(comp, tmp_path, "cuda")


def test_missing_onnx_file_says_run_make_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `make export`"):
        open_engine({"name": "unet", "onnx": "unet.onnx", "engines": {}}, tmp_path, "onnxruntime")
