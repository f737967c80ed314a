"""AOTInductor packages of exported components (torch.export + ``aoti_compile_and_package``).

One code path for both targets: ``device="cpu"`` compiles C++ kernels with the system compiler
(g++) in float32 (what CI builds and serves); ``device="cuda"`` compiles fp16 Triton kernels on
a GPU (``export.gpu`` calls it when TensorRT does not import). The package always takes and
returns float32 tensors: the casts to and from the compute precision are part of the compiled
graph, so :class:`serving.engines.AotEngine` needs no per-package dtype logic.

Batch range: 1..:data:`AOT_MAX_BATCH`. diffusers' ``Upsample2D`` / ``ResnetBlock2D`` branch on
``batch >= 64`` (a ``.contiguous()`` for a CUDA kernel limit); torch.export turns that branch into
a guard ``batch <= 63`` and refuses a dynamic ``Dim(max=64)`` with a UserError. Packages are
therefore built for at most 32 (Triton's ``max_batch_size``), and the engine runs the UNet's
classifier-free-guidance batch (up to 64) in two chunks.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

AOT_MAX_BATCH = 32
FP32_INPUTS = ("timestep",)  # diffusers keeps the timestep in float32 under fp16 (as its pipelines pass it)
DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CastBoundary(torch.nn.Module):
    """``module`` computing in ``dtype`` behind a float32 interface (inputs cast in, outputs cast out)."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype, input_names: tuple[str, ...]):
        super().__init__()
        self.module, self.dtype, self.input_names = module, dtype, input_names

    def forward(self, *args):
        args = [a.to(self.dtype) if a.is_floating_point() and n not in FP32_INPUTS else a
                for n, a in zip(self.input_names, args)]
        out = self.module(*args)
        if isinstance(out, (tuple, list)):
            return tuple(o.float() for o in out)
        return out.float()


@contextlib.contextmanager
def _compile_settings(device: str) -> Iterator[None]:
    """On CPU, compile in this process: AOTInductor puts every C++ kernel into one source file,
    so a pool of compile workers only adds its start-up (measured on 2 busy cores: the tiny SD
    stage's three packages in ~55 s with one thread vs ~90-120 s with the default pool)."""
    if device != "cpu":
        yield
        return
    import torch._inductor.config as inductor_config  # noqa: PLC0415

    with inductor_config.patch(compile_threads=1):
        yield


def build_aot_package(comp, out_path: Path, device: str = "cpu", dtype: str = "float32",
                      max_batch: int = AOT_MAX_BATCH) -> dict[str, Any]:
    """Export ``comp.module`` (an ``export.exporter.Component``) with a dynamic batch axis 1..``max_batch``
    and AOT-compile it for ``device`` in ``dtype``; write ``out_path`` (a ``.pt2`` package).

    Returns the ``engine_info`` entry for ``stage.json`` (``device``, ``dtype``, ``max_batch``).
    The component's own module is not modified (a copy is moved/cast: it stays the fp32 reference).
    """
    if dtype not in DTYPES:
        raise ValueError(f"AOT dtype {dtype!r}; expected one of {tuple(DTYPES)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"AOT device {device!r}; expected 'cpu' or 'cuda'")
    if not 1 < max_batch < 64:
        raise ValueError(f"AOT max_batch {max_batch}; expected 2..63 (diffusers guards batch >= 64)")
    names = tuple(comp.inputs)
    module = CastBoundary(copy.deepcopy(comp.module).to(device=device, dtype=DTYPES[dtype]).eval(),
                          DTYPES[dtype], names)
    # the example batch must lie inside the range and not be 1 (torch.export specializes 0/1)
    args = tuple(v[:2].to(device) for v in comp.inputs.values())
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad(), _compile_settings(device), warnings.catch_warnings():
        # torch's own deprecation notice from its pytree internals, once per graph: not actionable here
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
        # forward(*args): the one variadic parameter takes a tuple of per-input specs
        exported = torch.export.export(module, args, dynamic_shapes=(tuple({0: batch} for _ in names),))
        torch._inductor.aoti_compile_and_package(exported, package_path=str(out_path))
    return {"device": device, "dtype": dtype, "max_batch": max_batch}
