"""GPU artifacts built ahead of time (never inside Triton's ``initialize``): TensorRT fp16 engines
from the exported ONNX when TensorRT is importable, otherwise CUDA AOTInductor packages of the
PyTorch modules (:mod:`export.aot`, the same code that builds the CPU packages CI serves). Both
are listed under ``engines`` (with ``engine_info``) in ``stage.json`` and picked by
:func:`serving.engines.choose_backend`.

The TensorRT builder needs a GPU: :func:`cuda_available` gates every call and its test is
marked ``gpu``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_QUERY_BATCH = 32  # Triton max_batch_size; the UNet sees up to twice this under CFG
OPT_QUERY_BATCH = 8


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package imports."""
    try:
        import tensorrt  # noqa: F401, PLC0415

        return True
    except ImportError:
        return False


def batch_range(component: str) -> tuple[int, int, int]:
    """(min, opt, max) batch of a component's optimization profile (UNet: doubled for CFG)."""
    k = 2 if component == "unet" else 1
    return 1, OPT_QUERY_BATCH * k, MAX_QUERY_BATCH * k


def build_tensorrt_engine(onnx_path: Path, example: dict[str, Any], component: str, out_path: Path) -> Path:  # pragma: no cover
    """Build a serialized fp16 TensorRT engine with a dynamic-batch optimization profile."""
    import tensorrt as trt  # noqa: PLC0415

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch_range(component)
    for name, tensor in example.items():
        rest = tuple(tensor.shape[1:])
        profile.set_shape(name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    out_path.write_bytes(bytes(engine))
    return out_path


def build_engines(comp, out_dir: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:  # pragma: no cover
    """Build the fp16 GPU artifact of one component: a TensorRT engine when TensorRT imports, else a
    CUDA AOTInductor package. Returns ``({backend: file name}, {backend: engine_info})`` for ``stage.json``."""
    if tensorrt_available():
        path = build_tensorrt_engine(out_dir / comp.onnx_file, comp.inputs, comp.name, out_dir / f"{comp.name}.fp16.plan")
        return {"tensorrt": path.name}, {"tensorrt": {"device": "cuda", "dtype": "float16",
                                                      "max_batch": batch_range(comp.name)[2]}}
    from export.aot import build_aot_package  # noqa: PLC0415

    path = out_dir / f"{comp.name}.aot.cuda.fp16.pt2"
    return {"aot": path.name}, {"aot": build_aot_package(comp, path, device="cuda", dtype="float16")}
