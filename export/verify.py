"""Checks run after every export: ONNX checker, per-component error vs PyTorch, tokenizer ids, end-to-end PSNR.

End to end, the serving runtime (:class:`serving.StagePipeline`) and the diffusers
pipeline start from the same initial noise (the runtime's per-seed noise handed to diffusers as
``latents``; ancestral step noise is injected the same way) and must agree to
``PSNR >= MIN_PSNR_DB`` on [0, 1] images. Results are plain dicts, written as
``verification.json`` next to the artifacts and printed as a table by :func:`format_table`.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

MIN_PSNR_DB = 40.0
FP32_REL_TOL = 1e-3  # table flag for ONNX Runtime fp32 graphs (measured: ~1e-6)
FP16_REL_TOL = 5e-2  # table flag for fp16 GPU engines (TensorRT / AOTInductor)
# Prompts for the end-to-end check: a short one, an empty one (the negative prompt's path) and
# one longer than any text encoder's context (the truncation policy).
VERIFY_PROMPTS = ("a red circle on the left", "", "two blue squares above a green triangle " * 12)
VERIFY_SEEDS = (0, 1, 2**32 - 1)
# Tokenizer parity also covers case, punctuation, whitespace runs and characters outside the vocabulary.
TOKENIZER_PROMPTS = VERIFY_PROMPTS + ("A RED Circle, on the LEFT.", "  two\tblue\n squares  ", "ünïcødé ⬛ 🐱",
                                      "a photo of a cat!!! 123", "three small green triangles above a big square")


def psnr_db(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two arrays on [0, peak] (inf when identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def check_onnx(path: Path) -> dict[str, Any]:
    """Run ``onnx.checker`` on a file (by path, so >2 GB models with external data work)."""
    import onnx  # noqa: PLC0415

    try:
        onnx.checker.check_model(str(path))
        return {"file": path.name, "onnx_checker": "ok"}
    except onnx.checker.ValidationError as exc:
        return {"file": path.name, "onnx_checker": f"FAILED: {exc}"}


def compare_outputs(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: max absolute error and max error relative to the reference's max magnitude."""
    out = {}
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            raise AssertionError(f"output {name}: exported shape {g.shape} != PyTorch shape {r.shape}")
        err = float(np.max(np.abs(g.astype(np.float64) - r)))
        out[name] = {"max_abs_err": err, "max_rel_err": err / max(float(np.max(np.abs(r))), 1e-12)}
    return out


def verify_component(comp, engine) -> dict[str, Any]:
    """Exported (``engine``) vs PyTorch (``comp.module``) at batch 2 and batch 1 (dynamic axis)."""
    from export.exporter import torch_outputs  # noqa: PLC0415

    result: dict[str, Any] = {"component": comp.name, "backend": engine.backend}
    for b in (2, 1):
        inputs = {k: v[:b] for k, v in comp.inputs.items()}
        ref = torch_outputs(comp, inputs)
        got = engine.run({k: v.numpy() for k, v in inputs.items()})
        result[f"batch{b}"] = compare_outputs(ref, got)
    errs = [o for b in (1, 2) for o in result[f"batch{b}"].values()]
    result["max_abs_err"] = max(e["max_abs_err"] for e in errs)
    result["max_rel_err"] = max(e["max_rel_err"] for e in errs)
    return result


def verify_tokenizers(pipe, runtime, prompts: Sequence[str]) -> dict[str, Any]:
    """Token ids from the runtime's ``tokenizers`` vs the pipeline's transformers tokenizer(s)."""
    toks = [pipe.tokenizer] + ([pipe.tokenizer_2] if runtime.spec.kind == "sdxl" else [])
    got = runtime.tokenize(prompts)
    mismatches = 0
    for tok, ids in zip(toks, got):
        ref = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        mismatches += int(sum(list(r) != list(g) for r, g in zip(ref, ids.tolist())))
    return {"prompts": len(prompts), "tokenizers": len(toks), "mismatched_prompts": mismatches}


@contextlib.contextmanager
def _diffusers_quiet() -> Iterator[None]:
    """Silence diffusers' truncation warning: the long verification prompt is truncated on purpose."""
    from diffusers.utils import logging as dlog  # noqa: PLC0415

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)


@contextlib.contextmanager
def _injected_step_noise(pipe, rngs: list[np.random.Generator], latent_shape) -> Iterator[None]:
    """Make an ancestral diffusers scheduler draw its step noise from the runtime's per-query streams."""
    import importlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    mod = importlib.import_module(type(pipe.scheduler).__module__)
    original = getattr(mod, "randn_tensor", None)

    def fake(shape, generator=None, device=None, dtype=None, layout=None):
        n = np.stack([r.standard_normal(tuple(latent_shape), dtype=np.float32) for r in rngs])
        assert tuple(shape) == n.shape, f"unexpected noise shape {shape}"
        return torch.from_numpy(n).to(dtype=dtype or torch.float32)

    if original is not None:
        mod.randn_tensor = fake
    try:
        yield
    finally:
        if original is not None:
            mod.randn_tensor = original


def verify_end_to_end(pipe, runtime, prompts: Sequence[str] = VERIFY_PROMPTS,
                      seeds: Sequence[int] = VERIFY_SEEDS) -> dict[str, Any]:
    """Runtime images vs diffusers images from the same noise: PSNR (float and uint8) per image."""
    import torch  # noqa: PLC0415

    from serving.pipeline import initial_noise, to_uint8  # noqa: PLC0415

    spec = runtime.spec
    ours = runtime.generate_float(list(prompts), list(seeds))
    noise, rngs = zip(*(initial_noise(s, spec.latent_shape) for s in seeds))
    kwargs = {"prompt": list(prompts), "num_inference_steps": spec.steps, "guidance_scale": spec.guidance_scale,
              "height": spec.height_px, "width": spec.width_px, "latents": torch.from_numpy(np.stack(noise)),
              "output_type": "np"}
    with _injected_step_noise(pipe, list(rngs), spec.latent_shape), _diffusers_quiet(), torch.no_grad():
        ref = pipe(**kwargs).images
    per_image = [psnr_db(a, b) for a, b in zip(ours, ref)]
    per_image_u8 = [psnr_db(a, b, 255.0) for a, b in zip(to_uint8(ours), to_uint8(ref))]
    finite = [p for p in per_image if math.isfinite(p)]
    return {"prompts": len(prompts), "seeds": list(seeds), "psnr_db_per_image": per_image,
            "psnr_uint8_db_per_image": per_image_u8, "min_psnr_db": min(per_image),
            "mean_psnr_db": float(np.mean(finite)) if finite else math.inf,
            "max_abs_pixel_err": float(np.max(np.abs(ours - ref))), "threshold_db": MIN_PSNR_DB,
            "passed": bool(min(per_image) >= MIN_PSNR_DB)}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of every stage's verification (one row per component, one per end-to-end check)."""
    rows = [("stage", "check", "backend", "max abs err", "max rel err", "result")]
    for stage, res in results.items():
        for c in res.get("onnx", []):
            rows.append((stage, f"onnx.checker {c['file']}", "", "", "", c["onnx_checker"]))
        for c in res.get("components", []) + res.get("gpu_components", []):
            ok = c["max_rel_err"] < (FP32_REL_TOL if c["backend"] == "onnxruntime" else FP16_REL_TOL)
            rows.append((stage, c["component"], c["backend"], f"{c['max_abs_err']:.2e}", f"{c['max_rel_err']:.2e}",
                         "ok" if ok else "LARGE"))
        if "tokenizers" in res:
            t = res["tokenizers"]
            rows.append((stage, "tokenizer ids", "tokenizers", "", "", f"{t['mismatched_prompts']} of {t['prompts']} differ"))
        if "end_to_end" in res:
            e = res["end_to_end"]
            rows.append((stage, f"end to end ({e['prompts']} images)", "runtime vs diffusers", f"{e['max_abs_pixel_err']:.2e}",
                         "", f"min PSNR {e['min_psnr_db']:.1f} dB ({'pass' if e['passed'] else 'FAIL'} >= {e['threshold_db']:.0f})"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
