"""Run one exported network: ONNX Runtime (CPU or CUDA), a TensorRT engine, or an AOTInductor package.

Every engine maps ``{input name: numpy array}`` to ``{output name: numpy array}`` (float32), so
the pipeline code above it is the same on a 2-core CPU and on a GPU. Which artifact a component
uses is decided once, at load, by :func:`open_engine` from what ``stage.json`` lists and what the
machine can run; nothing is compiled or built here (TensorRT engines and AOT packages are
built by ``python -m export`` ahead of time, never inside Triton's ``initialize``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

BACKENDS = ("auto", "onnxruntime", "tensorrt", "aoti")


class Engine(Protocol):
    """One network. ``run`` returns float32 numpy arrays keyed by output name."""

    backend: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtEngine:
    """ONNX Runtime session; CUDA execution provider when onnxruntime-gpu sees a GPU, else CPU.

    ``threads`` is ONNX Runtime's intra-op thread count (0 = its default, one per core).
    ``spin``: let idle pool threads busy-wait for work (None: ``$DIFFSERVE_ORT_SPIN``, default off).
    Off by default because a Triton server runs several sessions (light, heavy, discriminator,
    several instances) in separate processes on the same cores: spinning pools then steal each
    other's cores (measured: heavy batch 1 inside Triton ~1.0 s with spinning vs ~0.33 s without).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 0, providers: list[str] | None = None,
                 spin: bool | None = None):
        import onnxruntime as ort  # noqa: PLC0415 - keep module import light

        if spin is None:
            spin = os.environ.get("DIFFSERVE_ORT_SPIN", "0") == "1"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.providers = tuple(self.session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outs))


class TensorRTEngine:  # pragma: no cover - needs an NVIDIA GPU and TensorRT
    """A serialized TensorRT engine (fp16, built by ``export.gpu``) run through torch CUDA tensors."""

    backend = "tensorrt"

    def __init__(self, path: str | Path):
        import tensorrt as trt  # noqa: PLC0415
        import torch  # noqa: PLC0415

        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path} (built for another TensorRT/GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = tuple(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self._dtypes = {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in names}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        stream = torch.cuda.current_stream()
        keep = []
        for n in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(feeds[n].astype(self._dtypes[n], copy=False))).cuda()
            keep.append(t)
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        outs = {}
        for n in self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            t = torch.empty(shape, dtype=torch.from_numpy(np.zeros(0, self._dtypes[n])).dtype, device="cuda")
            outs[n] = t
            self.context.set_tensor_address(n, t.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in outs.items()}


class AotiEngine:  # pragma: no cover - needs an NVIDIA GPU
    """An AOTInductor package (``torch._inductor.aoti_compile_and_package``) on CUDA."""

    backend = "aoti"

    def __init__(self, path: str | Path, input_names: tuple[str, ...], output_names: tuple[str, ...]):
        import torch  # noqa: PLC0415

        self._torch = torch
        self.model = torch._inductor.aoti_load_package(str(path))
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).cuda().half()
                if feeds[n].dtype == np.float32 else torch.from_numpy(feeds[n]).cuda() for n in self.input_names]
        with torch.inference_mode():
            outs = self.model(*args)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs)}


def _cuda_available() -> bool:
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def choose_backend(component: Mapping[str, Any], artifact_dir: Path, requested: str = "auto") -> str:
    """Which artifact of ``component`` (a ``stage.json`` entry) to run here.

    ``auto``: a TensorRT engine when one was built and TensorRT + a GPU are present, else an
    AOT package on a GPU, else ONNX Runtime. An explicit backend whose artifact is missing is an
    error naming the file, not a silent fallback.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend {requested!r}; expected one of {BACKENDS}")
    files = dict(component.get("engines", {}))
    if requested != "auto":
        if requested != "onnxruntime" and not (artifact_dir / files.get(requested, "<none>")).exists():
            raise FileNotFoundError(f"backend {requested!r} requested but {component['name']} has no such artifact "
                                    f"in {artifact_dir} (stage.json engines: {sorted(files)}); re-export on this machine")
        return requested
    if "tensorrt" in files and (artifact_dir / files["tensorrt"]).exists() and _cuda_available():
        try:
            import tensorrt  # noqa: F401, PLC0415

            return "tensorrt"
        except ImportError:
            pass
    if "aoti" in files and (artifact_dir / files["aoti"]).exists() and _cuda_available():
        return "aoti"
    return "onnxruntime"


def open_engine(component: Mapping[str, Any], artifact_dir: str | Path, backend: str = "auto",
                threads: int | None = None) -> Engine:
    """Load one component listed in ``stage.json`` (keys ``name``, ``onnx``, ``inputs``, ``outputs``, ``engines``)."""
    artifact_dir = Path(artifact_dir)
    if threads is None:
        threads = int(os.environ.get("DIFFSERVE_ORT_THREADS", "0"))
    chosen = choose_backend(component, artifact_dir, backend)
    if chosen == "tensorrt":
        return TensorRTEngine(artifact_dir / component["engines"]["tensorrt"])
    if chosen == "aoti":
        return AotiEngine(artifact_dir / component["engines"]["aoti"], tuple(component["inputs"]),
                          tuple(component["outputs"]))
    path = artifact_dir / component["onnx"]
    if not path.exists():
        raise FileNotFoundError(f"{component['name']}: {path} is missing; run `make export`")
    return OrtEngine(path, threads=threads)
