"""Run one exported network: ONNX Runtime (CPU or CUDA), a TensorRT engine, or an AOTInductor package.

Every engine maps ``{input name: numpy array}`` to ``{output name: numpy array}`` (float32), so
the pipeline code above it is the same on a 2-core CPU and on a GPU. Which artifact a component
uses is decided once, at load, by :func:`open_engine` from what ``stage.json`` lists and what the
machine can run; nothing is compiled or built here (TensorRT engines and AOT packages are
built by ``python -m export`` ahead of time, never inside Triton's ``initialize``).

GPU pinning: ``device_id`` is the CUDA device Triton gave the model instance (``KIND_GPU``:
``model_instance_device_id``); every engine builds its session/context/stream and allocates its
tensors on that device. ``None`` (a ``KIND_CPU`` instance, or a caller outside Triton) keeps the
process's current device, as before pinning existed.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np

BACKENDS = ("auto", "onnxruntime", "tensorrt", "aot")
AOT_DEVICES = ("cpu", "cuda")


class Engine(Protocol):
    """One network. ``run`` returns float32 numpy arrays keyed by output name."""

    backend: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def run_in_chunks(run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]], feeds: Mapping[str, np.ndarray],
                  max_batch: int | None) -> dict[str, np.ndarray]:
    """``run(feeds)``, split along the batch axis into near-equal chunks of at most ``max_batch``.

    Ahead-of-time engines are built for a batch range (an AOT package for at most 32: diffusers
    guards ``batch >= 64`` in its up-sampling blocks, so torch.export cannot cover 64 in one
    range); the UNet under classifier-free guidance sees twice the query batch, up to 64.
    """
    n = len(next(iter(feeds.values())))
    if not max_batch or n <= max_batch:
        return run(feeds)
    chunks = -(-n // max_batch)
    bounds = np.linspace(0, n, chunks + 1).round().astype(int)
    outs = [run({k: v[a:b] for k, v in feeds.items()}) for a, b in zip(bounds[:-1], bounds[1:])]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


class OrtEngine:
    """ONNX Runtime session; CUDA execution provider (on ``device_id``) when onnxruntime-gpu sees a GPU, else CPU.

    ``threads`` is ONNX Runtime's intra-op thread count (0 = its default, one per core).
    ``spin``: let idle pool threads busy-wait for work (None: ``$DIFFSERVE_ORT_SPIN``, default off).
    Off by default because a Triton server runs several sessions (light, heavy, discriminator,
    several instances) in separate processes on the same cores: spinning pools then steal each
    other's cores (measured: heavy batch 1 inside Triton ~1.0 s with spinning vs ~0.33 s without).
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 0, providers: list[Any] | None = None,
                 spin: bool | None = None, device_id: int | None = None):
        import onnxruntime as ort  # noqa: PLC0415 - keep module import light

        if spin is None:
            spin = os.environ.get("DIFFSERVE_ORT_SPIN", "0") == "1"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if providers is None:
            providers = ort_providers(ort.get_available_providers(), device_id)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.providers = tuple(self.session.get_providers())

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {k: feeds[k] for k in self.input_names})
        return dict(zip(self.output_names, outs))


def ort_providers(available: list[str], device_id: int | None) -> list[Any]:
    """ONNX Runtime's provider list: CUDA on ``device_id`` (default: device 0) when available, then CPU."""
    providers: list[Any] = []
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"device_id": int(device_id or 0)}))
    if "CPUExecutionProvider" in available:
        providers.append("CPUExecutionProvider")
    return providers


def _cuda_device(device_id: int | None):
    """The torch CUDA device to pin to: ``cuda:<device_id>``, or the current device when None."""
    import torch  # noqa: PLC0415

    return torch.device("cuda", torch.cuda.current_device() if device_id is None else int(device_id))


class TensorRTEngine:
    """A serialized TensorRT engine (fp16, built by ``export.gpu``) run through torch CUDA tensors.

    The engine, its execution context and its stream are created with ``device_id`` current, and
    every tensor lives on that device: a TensorRT engine is bound to the device it was
    deserialized on, so creating it under the wrong current device puts every instance on GPU 0.
    """

    backend = "tensorrt"

    def __init__(self, path: str | Path, device_id: int | None = None, max_batch: int | None = None):
        import tensorrt as trt  # noqa: PLC0415
        import torch  # noqa: PLC0415

        self._torch, self.max_batch = torch, max_batch
        self.device = _cuda_device(device_id)
        logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            with open(path, "rb") as f:
                self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {path} (built for another TensorRT/GPU?)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = tuple(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self._dtypes = {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in names}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_in_chunks(self._run, feeds, self.max_batch)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - needs TensorRT + a GPU
        torch = self._torch
        with torch.cuda.device(self.device):
            keep = []
            for n in self.input_names:
                t = torch.from_numpy(np.ascontiguousarray(feeds[n].astype(self._dtypes[n], copy=False))).to(self.device)
                keep.append(t)
                self.context.set_input_shape(n, tuple(t.shape))
                self.context.set_tensor_address(n, t.data_ptr())
            outs = {}
            for n in self.output_names:
                shape = tuple(self.context.get_tensor_shape(n))
                t = torch.empty(shape, dtype=torch.from_numpy(np.zeros(0, self._dtypes[n])).dtype, device=self.device)
                outs[n] = t
                self.context.set_tensor_address(n, t.data_ptr())
            # the input copies ran on the device's current stream; the engine runs on its own
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            self.stream.synchronize()
            return {n: t.float().cpu().numpy() for n, t in outs.items()}


class AotEngine:
    """An AOTInductor package (``torch._inductor.aoti_compile_and_package``, built by ``export.aot``).

    ``device``: what the package was compiled for (``cpu`` or ``cuda``; recorded in
    ``stage.json``). A CUDA package is loaded on ``device_id`` (``aoti_load_package``'s
    ``device_index``) and fed tensors on that device. Packages take and return float32 whatever
    their compute precision (the fp16 casts are compiled into the package), and run batches over
    ``max_batch`` in chunks (:func:`run_in_chunks`). ``threads``: torch intra-op threads on CPU
    (0 = leave torch's default).
    """

    backend = "aot"

    def __init__(self, path: str | Path, input_names: tuple[str, ...], output_names: tuple[str, ...],
                 device: str = "cuda", device_id: int | None = None, max_batch: int | None = None, threads: int = 0):
        import torch  # noqa: PLC0415

        if device not in AOT_DEVICES:
            raise ValueError(f"AOT package device {device!r}; expected one of {AOT_DEVICES}")
        self._torch, self.max_batch = torch, max_batch
        self.device = torch.device("cpu") if device == "cpu" else _cuda_device(device_id)
        if device == "cpu" and threads:
            torch.set_num_threads(int(threads))
        self.model = torch._inductor.aoti_load_package(
            str(path), device_index=-1 if self.device.type == "cpu" else int(self.device.index))
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_in_chunks(self._run, feeds, self.max_batch)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        with torch.inference_mode(), _on_device(torch, self.device):
            outs = self.model(*args)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs)}


@contextlib.contextmanager
def _on_device(torch, device) -> Iterator[None]:
    """Make ``device`` current while a CUDA package runs (its kernels launch on the current device)."""
    if device.type != "cuda":
        yield
        return
    with torch.cuda.device(device):
        yield


def _cuda_available() -> bool:
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _tensorrt_imports() -> bool:
    try:
        import tensorrt  # noqa: F401, PLC0415

        return True
    except ImportError:
        return False


def engine_info(component: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """What ``stage.json`` records about a built engine (``device``, ``dtype``, ``max_batch``).

    Exports made before this was recorded hold CUDA fp16 engines only.
    """
    return {"device": "cuda", "dtype": "float16", **dict(component.get("engine_info", {}).get(backend, {}))}


def runnable_backends(component: Mapping[str, Any], artifact_dir: Path) -> tuple[str, ...]:
    """The backends of ``component`` that can run on this machine: ONNX Runtime, an AOT package built
    for the CPU or (with a GPU) for CUDA, a TensorRT engine (with a GPU and TensorRT)."""
    files = dict(component.get("engines", {}))
    present = {b for b, f in files.items() if (Path(artifact_dir) / f).exists()}
    cuda = _cuda_available()
    out = ["onnxruntime"]
    if "aot" in present and (engine_info(component, "aot")["device"] == "cpu" or cuda):
        out.append("aot")
    if "tensorrt" in present and cuda and _tensorrt_imports():
        out.append("tensorrt")
    return tuple(out)


def choose_backend(component: Mapping[str, Any], artifact_dir: Path, requested: str = "auto") -> str:
    """Which artifact of ``component`` (a ``stage.json`` entry) to run here.

    ``auto``: a TensorRT engine when one was built and TensorRT + a GPU are present, else an
    AOT package built for this machine's device (a CUDA package on a GPU, a CPU package on a
    machine without one), else ONNX Runtime. An explicit backend whose artifact is missing, or
    an AOT package for CUDA without a GPU, is an error naming the file, not a silent fallback.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend {requested!r}; expected one of {BACKENDS}")
    files = dict(component.get("engines", {}))
    present = {b for b, f in files.items() if (artifact_dir / f).exists()}
    # torch is imported (to ask for CUDA) only when an engine other than ONNX Runtime exists:
    # the ONNX-only serving path stays free of torch
    if requested != "auto":
        if requested != "onnxruntime" and requested not in present:
            raise FileNotFoundError(f"backend {requested!r} requested but {component['name']} has no such artifact "
                                    f"in {artifact_dir} (stage.json engines: {sorted(files)}); re-export on this machine")
        if requested == "aot" and engine_info(component, "aot")["device"] == "cuda" and not _cuda_available():
            raise RuntimeError(f"backend 'aot' requested but {component['name']}'s package {files['aot']} was built for "
                               f"CUDA and torch sees no GPU here; re-export on this machine (`--cpu-aot` for CPU)")
        return requested
    if "tensorrt" in present and _cuda_available() and _tensorrt_imports():
        return "tensorrt"
    if "aot" in present and engine_info(component, "aot")["device"] == ("cuda" if _cuda_available() else "cpu"):
        return "aot"
    return "onnxruntime"


def open_engine(component: Mapping[str, Any], artifact_dir: str | Path, backend: str = "auto",
                threads: int | None = None, device_id: int | None = None) -> Engine:
    """Load one component listed in ``stage.json`` (keys ``name``, ``onnx``, ``inputs``, ``outputs``, ``engines``,
    ``engine_info``) on ``device_id`` (the instance's GPU; None: the current device)."""
    artifact_dir = Path(artifact_dir)
    if threads is None:
        threads = int(os.environ.get("DIFFSERVE_ORT_THREADS", "0"))
    chosen = choose_backend(component, artifact_dir, backend)
    if chosen in ("tensorrt", "aot"):
        info = engine_info(component, chosen)
        path = artifact_dir / component["engines"][chosen]
        if chosen == "tensorrt":
            return TensorRTEngine(path, device_id=device_id, max_batch=info.get("max_batch"))
        return AotEngine(path, tuple(component["inputs"]), tuple(component["outputs"]), device=info["device"],
                         device_id=device_id, max_batch=info.get("max_batch"), threads=threads)
    path = artifact_dir / component["onnx"]
    if not path.exists():
        raise FileNotFoundError(f"{component['name']}: {path} is missing; run `make export`")
    return OrtEngine(path, threads=threads, device_id=device_id)
