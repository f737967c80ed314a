"""Engines built ahead of time during an export: which ones the options ask for, building or reusing
them, which engine sets can serve (and so must be verified) on this machine.

GPU: fp16 TensorRT engines or CUDA AOTInductor packages (:mod:`export.gpu`); CPU, on request
(``--cpu-aot``): float32 AOTInductor packages (:mod:`export.aot`). ``stage.json`` lists them per
component under ``engines`` (file names) and ``engine_info`` (device, dtype, max_batch).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export import repository
from serving.config import ConfigError


def want_gpu(option: str) -> bool:
    """Whether to build GPU engines for ``--gpu-engines option`` (``on`` without CUDA is an error)."""
    from export import gpu  # noqa: PLC0415

    if option == "off":
        return False
    available = gpu.cuda_available()
    if option == "on" and not available:
        raise RuntimeError("--gpu-engines on, but no CUDA device is visible to torch")
    return available


def check_engine_options(opts) -> None:
    """Refuse option sets that would build two AOT packages for one component (``stage.json`` holds one)."""
    from export import gpu  # noqa: PLC0415

    if opts.cpu_aot and want_gpu(opts.gpu_engines) and not gpu.tensorrt_available():
        raise ConfigError("--cpu-aot on a machine that builds CUDA AOT packages (CUDA visible, TensorRT not "
                          "installed): one AOT package per component; add --gpu-engines off to build CPU packages here")


def cpu_aot_package(comp, out_dir: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Build a float32 CPU AOTInductor package of ``comp`` into ``out_dir`` (``--cpu-aot``)."""
    from export.aot import build_aot_package  # noqa: PLC0415

    path = out_dir / f"{comp.name}.aot.cpu.pt2"
    return {"aot": path.name}, {"aot": build_aot_package(comp, path, device="cpu", dtype="float32")}


class BuiltEngines:
    """The engines built so far in one export run, by what they were built from, so that a component
    identical to one of an earlier stage (same class, weights and example shapes: a light and a heavy
    stage that share a weights folder) gets a copy of its engine instead of a second build (minutes
    for a real-size UNet)."""

    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._built: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {}

    @staticmethod
    def key(comp, label: str) -> str:
        import hashlib  # noqa: PLC0415

        import torch  # noqa: PLC0415

        h = hashlib.sha256(f"{label}\0{comp.name}\0{type(comp.module).__name__}".encode())
        for name, value in [*comp.module.state_dict().items(), *comp.inputs.items()]:
            t = value.detach().cpu().contiguous()
            h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()

    def copy_into(self, key: str, out_dir: Path) -> tuple[dict[str, str], dict[str, Any]] | None:
        """Copy a built engine into ``out_dir`` (None when none was built from the same component)."""
        if key not in self._built:
            return None
        stage, files, info = self._built[key]
        for name in files.values():
            shutil.copy2(repository.artifact_dir(self.repo, stage) / name, out_dir / name)
        return files, info

    def add(self, key: str, stage: str, files: dict[str, str], info: dict[str, Any]) -> None:
        """Record an engine of ``stage`` (looked up in its final artifact folder, once the stage is swapped in)."""
        self._built[key] = (stage, files, info)


def build_engines(comps, out_dir: Path, entries: dict[str, dict[str, Any]], opts, stage: str,
                  built: BuiltEngines | None = None) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """Build the engines ``opts`` ask for ahead of time into ``out_dir`` (or copy them from ``built``);
    record file names under ``entries[<component>]["engines"]`` and what they are under
    ``["engine_info"]``. Returns ``(key, files, info)`` of each engine built here for ``built.add``."""
    from export import gpu  # noqa: PLC0415

    jobs = ([("GPU engines", gpu.build_engines)] if want_gpu(opts.gpu_engines) else []) + \
        ([("CPU AOT packages", cpu_aot_package)] if opts.cpu_aot else [])
    new = []
    for label, build in jobs:
        for comp in tqdm(comps, desc=f"{stage}: {label}", unit="graph"):
            key = BuiltEngines.key(comp, label) if built is not None else ""
            copied = built.copy_into(key, out_dir) if built is not None else None
            files, info = copied or build(comp, out_dir)
            if copied is None:
                new.append((key, files, info))
            entries[comp.name]["engines"].update(files)
            entries[comp.name].setdefault("engine_info", {}).update(info)
    return new


def engine_sets(entries: dict[str, dict[str, Any]], artifact_dir: Path) -> list[str]:
    """The ``backend`` values to verify on this machine: ``onnxruntime`` (the fallback and the
    baseline), each ahead-of-time backend every component has and can run here, and ``auto``
    when what it picks differs per component (the mix is what would serve)."""
    from serving.engines import choose_backend, runnable_backends  # noqa: PLC0415

    comps = [{"name": n, **e} for n, e in entries.items()]
    runnable = [set(runnable_backends(c, artifact_dir)) for c in comps]
    out = ["onnxruntime"] + [b for b in ("aot", "tensorrt") if all(b in r for r in runnable)]
    if len({choose_backend(c, artifact_dir) for c in comps}) > 1:
        out.append("auto")
    return out


def missing_engines(repo: str | Path, stage: str, opts) -> list[str]:
    """Components of an exported stage that lack an engine ``opts`` ask for (so an up-to-date
    stage exported without ``--cpu-aot`` is rebuilt when it is asked for, not skipped)."""
    from serving.engines import engine_info  # noqa: PLC0415

    comps = repository.exported_field(repo, stage, "components") or {}
    gpu_wanted = want_gpu(opts.gpu_engines)
    out = []
    for name, comp in comps.items():
        devices = {engine_info(comp, b)["device"] for b in comp.get("engines", {})}
        if (opts.cpu_aot and "cpu" not in devices) or (gpu_wanted and "cuda" not in devices):
            out.append(name)
    return out
