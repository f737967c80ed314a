"""Checks run after every export: ONNX checker, per-component error vs PyTorch, tokenizer ids, end-to-end PSNR.

End to end, the serving runtime (:class:`serving.StagePipeline`) and the diffusers
pipeline start from the same initial noise (the runtime's per-seed noise handed to diffusers as
``latents``; ancestral step noise is injected the same way) and must agree to
``PSNR >= MIN_PSNR_DB`` on [0, 1] images. Results are plain dicts, written as
``verification.json`` next to the artifacts and printed as a table by :func:`format_table`.

What will serve is what is checked: every engine built ahead of time (TensorRT, AOTInductor)
that can run on this machine is compared component by component with the fp32 PyTorch module
and end to end with diffusers, like the ONNX Runtime graphs. Any NaN/inf output, a component
under ``MIN_COMPONENT_PSNR_DB``, or an end-to-end PSNR under the threshold of the engine's
precision (:func:`end_to_end_threshold_db`) fails the export.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

MIN_PSNR_DB = 40.0  # end to end, float32 engines (ONNX Runtime, CPU AOT packages)
MIN_PSNR_FP16_DB = 30.0  # end to end, when any engine computes in fp16 (TensorRT / CUDA AOT)
MIN_COMPONENT_PSNR_DB = 30.0  # one component's output vs the fp32 PyTorch module, peak = the reference's range
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
    """Per output: max absolute error, max error relative to the reference's max magnitude, the
    count of non-finite values, and PSNR with the reference's value range as the peak."""
    out = {}
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            raise AssertionError(f"output {name}: exported shape {g.shape} != PyTorch shape {r.shape}")
        nonfinite = int(np.size(g) - np.count_nonzero(np.isfinite(g)))
        err = float(np.max(np.abs(g.astype(np.float64) - r))) if np.size(g) else 0.0
        span = max(float(np.max(r) - np.min(r)), float(np.max(np.abs(r))), 1e-12) if np.size(r) else 1.0
        out[name] = {"max_abs_err": err, "max_rel_err": err / max(float(np.max(np.abs(r))), 1e-12) if np.size(r) else 0.0,
                     "nonfinite": nonfinite, "psnr_db": -math.inf if nonfinite else psnr_db(g, r, span)}
    return out


def verify_component(comp, engine, dtype: str = "float32",
                     references: dict[int, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """Exported (``engine``, computing in ``dtype``) vs PyTorch (``comp.module``, fp32) at batch 2 and
    batch 1 (dynamic axis). ``passed``: no NaN/inf and PSNR >= ``MIN_COMPONENT_PSNR_DB`` for every output.
    ``references``: ``{batch: PyTorch outputs}``, filled on first use, so that checking several
    backends of one component runs the (real-size: seconds on CPU) fp32 module once per batch."""
    from export.exporter import torch_outputs  # noqa: PLC0415

    references = {} if references is None else references
    result: dict[str, Any] = {"component": comp.name, "backend": engine.backend, "dtype": dtype}
    for b in (2, 1):
        inputs = {k: v[:b] for k, v in comp.inputs.items()}
        if b not in references:
            references[b] = torch_outputs(comp, inputs)
        ref = references[b]
        got = engine.run({k: v.numpy() for k, v in inputs.items()})
        result[f"batch{b}"] = compare_outputs(ref, got)
    errs = [o for b in (1, 2) for o in result[f"batch{b}"].values()]
    result["max_abs_err"] = max(e["max_abs_err"] for e in errs)
    result["max_rel_err"] = max(e["max_rel_err"] for e in errs)
    result["nonfinite"] = sum(e["nonfinite"] for e in errs)
    result["min_psnr_db"] = min(e["psnr_db"] for e in errs)
    result["threshold_db"] = MIN_COMPONENT_PSNR_DB
    result["passed"] = bool(result["nonfinite"] == 0 and result["min_psnr_db"] >= MIN_COMPONENT_PSNR_DB)
    return result


def end_to_end_threshold_db(dtypes) -> float:
    """The end-to-end PSNR an engine set must reach: 40 dB when all compute in fp32, 30 dB with any fp16."""
    return MIN_PSNR_DB if all(d == "float32" for d in dtypes) else MIN_PSNR_FP16_DB


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
        return torch.from_numpy(n).to(device=device or "cpu", dtype=dtype or torch.float32)

    if original is not None:
        mod.randn_tensor = fake
    try:
        yield
    finally:
        if original is not None:
            mod.randn_tensor = original


def diffusers_images(pipe, spec, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """The diffusers pipeline's [0, 1] images from the runtime's per-seed noise (the reference)."""
    import torch  # noqa: PLC0415

    from serving.pipeline import initial_noise  # noqa: PLC0415

    noise, rngs = zip(*(initial_noise(s, spec.latent_shape) for s in seeds))
    kwargs = {"prompt": list(prompts), "num_inference_steps": spec.steps, "guidance_scale": spec.guidance_scale,
              "height": spec.height_px, "width": spec.width_px, "latents": torch.from_numpy(np.stack(noise)),
              "output_type": "np"}
    with _injected_step_noise(pipe, list(rngs), spec.latent_shape), _diffusers_quiet(), torch.no_grad(), \
            _reference_device(pipe):
        return pipe(**kwargs).images


@contextlib.contextmanager
def _reference_device(pipe) -> Iterator[None]:
    """Run the fp32 reference on a GPU when there is one (a real-size SD pipeline takes minutes on
    CPU), with TF32 off so that it stays an fp32 reference; the pipeline returns to the CPU after,
    where the component checks use its modules."""
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        yield
        return
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    pipe.to("cuda")
    try:
        yield
    finally:
        pipe.to("cpu")
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def compare_images(ours: np.ndarray, ref: np.ndarray, seeds: Sequence[int], threshold_db: float) -> dict[str, Any]:
    """PSNR (float and uint8) per image of ``ours`` vs ``ref``; an image with a NaN/inf pixel scores -inf."""
    from serving.pipeline import to_uint8  # noqa: PLC0415

    finite_img = [bool(np.all(np.isfinite(a))) for a in ours]
    per_image = [psnr_db(a, b) if ok else -math.inf for a, b, ok in zip(ours, ref, finite_img)]
    clean = np.nan_to_num(ours, nan=0.0, posinf=1.0, neginf=0.0)
    per_image_u8 = [psnr_db(a, b, 255.0) for a, b in zip(to_uint8(clean), to_uint8(ref))]
    finite = [p for p in per_image if math.isfinite(p)]
    return {"prompts": len(ours), "seeds": list(seeds), "psnr_db_per_image": per_image,
            "psnr_uint8_db_per_image": per_image_u8, "min_psnr_db": min(per_image),
            "mean_psnr_db": float(np.mean(finite)) if finite else math.inf,
            "nonfinite_images": finite_img.count(False),
            "max_abs_pixel_err": float(np.max(np.abs(clean - ref))), "threshold_db": threshold_db,
            "passed": bool(all(finite_img) and min(per_image) >= threshold_db)}


def verify_end_to_end(pipe, runtime, prompts: Sequence[str] = VERIFY_PROMPTS, seeds: Sequence[int] = VERIFY_SEEDS,
                      reference: np.ndarray | None = None, threshold_db: float = MIN_PSNR_DB) -> dict[str, Any]:
    """Runtime images vs diffusers images from the same noise (``reference``: those images, computed
    once per stage by :func:`diffusers_images` when several engine sets are checked)."""
    ours = runtime.generate_float(list(prompts), list(seeds))
    ref = diffusers_images(pipe, runtime.spec, prompts, seeds) if reference is None else reference
    return compare_images(ours, ref, seeds, threshold_db)


def _e2e_row(stage: str, backend: str, e: dict[str, Any]) -> tuple[str, ...]:
    verdict = f"min PSNR {e['min_psnr_db']:.1f} dB ({'pass' if e['passed'] else 'FAIL'} >= {e['threshold_db']:.0f})"
    if e.get("nonfinite_images"):
        verdict += f", {e['nonfinite_images']} images with NaN/inf"
    if e.get("blame"):
        verdict += f"; caused by {', '.join(e['blame'])}"
    return (stage, f"end to end ({e['prompts']} images)", f"{backend} vs diffusers", f"{e['max_abs_pixel_err']:.2e}",
            "", verdict)


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of every stage's verification (one row per component and backend, one per
    end-to-end check)."""
    rows = [("stage", "check", "backend", "max abs err", "max rel err", "result")]
    for stage, res in results.items():
        for c in res.get("onnx", []):
            rows.append((stage, f"onnx.checker {c['file']}", "", "", "", c["onnx_checker"]))
        for c in res.get("components", []):
            verdict = "ok" if c.get("passed", True) else "FAIL"
            if "min_psnr_db" in c:
                verdict = f"min PSNR {c['min_psnr_db']:.1f} dB ({verdict})"
            if c.get("nonfinite"):
                verdict += f", {c['nonfinite']} NaN/inf values"
            rows.append((stage, c["component"], f"{c['backend']} {c.get('dtype', '')}".rstrip(),
                         f"{c['max_abs_err']:.2e}", f"{c['max_rel_err']:.2e}", verdict))
        if "tokenizers" in res:
            t = res["tokenizers"]
            rows.append((stage, "tokenizer ids", "tokenizers", "", "", f"{t['mismatched_prompts']} of {t['prompts']} differ"))
        if "end_to_end" in res:
            rows.append(_e2e_row(stage, "onnxruntime", res["end_to_end"]))
        for backend, e in res.get("end_to_end_engines", {}).items():
            rows.append(_e2e_row(stage, backend, e))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
