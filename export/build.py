"""Export a whole cascade into a Triton model repository, verify it, and render the configs.

``export_cascade(cascade, repo)`` does, per stage (discriminator, light, heavy): load the
weights, export ONNX into ``<artifacts>.tmp``, write tokenizers and ``stage.json``, build GPU
engines ahead of time when a GPU is present (:mod:`export.gpu`), verify (:mod:`export.verify`),
and only then replace ``<repo>/<stage>/1/artifacts`` (so a failed export never leaves a
half-written stage behind). Finally ``config.pbtxt`` files are rendered from the config.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export import repository
from export import verify
from serving.config import CascadeConfig, ConfigError

STAGES = ("discriminator", "light", "heavy")


class VerificationFailed(RuntimeError):
    """The exported stage does not reproduce the PyTorch/diffusers reference closely enough."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """``verify``: run the checks (fail on PSNR below threshold); ``force``: re-export up-to-date stages;
    ``gpu_engines``: "auto" (build when CUDA is present), "off", or "on" (fail without a GPU)."""

    verify: bool = True
    force: bool = False
    gpu_engines: str = "auto"
    stages: tuple[str, ...] = STAGES


def _want_gpu(option: str) -> bool:
    from export import gpu  # noqa: PLC0415

    if option == "off":
        return False
    available = gpu.cuda_available()
    if option == "on" and not available:
        raise RuntimeError("--gpu-engines on, but no CUDA device is visible to torch")
    return available


def export_generator_stage(name: str, cascade: CascadeConfig, repo: Path, opts: ExportOptions) -> dict[str, Any]:
    """Export the ``light`` or ``heavy`` stage; returns its verification dict."""
    from export import exporter  # noqa: PLC0415 - torch/diffusers only at export time
    from serving.engines import OrtEngine  # noqa: PLC0415
    from serving.pipeline import load_stage  # noqa: PLC0415

    stage = cascade.stage(name)
    final = repository.artifact_dir(repo, name)
    tmp = repository.fresh_tmp(final)
    t0 = time.perf_counter()
    pipe = exporter.load_pipeline(stage)
    geo = exporter.geometry(pipe, stage)
    comps = exporter.components(pipe, geo)
    entries = {}
    for comp in tqdm(comps, desc=f"{name}: ONNX export", unit="graph"):
        exporter.export_onnx(comp, tmp)
        entries[comp.name] = {"onnx": comp.onnx_file, "inputs": list(comp.inputs), "outputs": list(comp.outputs),
                              "engines": {}}
    toks = [("tokenizer", pipe.tokenizer)] + ([("tokenizer_2", pipe.tokenizer_2)] if geo.kind == "sdxl" else [])
    for sub, tok in toks:
        tok.save_pretrained(tmp / sub)
        if not (tmp / sub / "tokenizer.json").exists():
            raise RuntimeError(f"{stage.model}: {sub} did not save a tokenizer.json (a fast tokenizer is needed)")
    cfg_free = pipe.unet.config.get("time_cond_proj_dim") is None and stage.guidance_scale > 1.0
    uncond = "none" if not cfg_free else ("zeros" if geo.kind == "sdxl" and pipe.config.get(
        "force_zeros_for_empty_prompt", False) else "empty_prompt")
    vae = pipe.vae.config
    spec = {
        "stage": name, "cascade": cascade.name, "config_hash": cascade.config_hash, "kind": geo.kind,
        "weights_fingerprint": weights_location(cascade, name)[1],
        "pipeline_class": type(pipe).__name__, "source_model": stage.model, "steps": stage.steps,
        "guidance_scale": stage.guidance_scale, "scheduler": exporter.scheduler_config(pipe), "height_px": geo.height_px,
        "width_px": geo.width_px, "latent_shape": list(geo.latent_shape),
        "vae": {"scaling_factor": vae.scaling_factor, "shift_factor": 0.0,  # SD/SDXL pipelines do not shift
                "latents_mean": vae.get("latents_mean"), "latents_std": vae.get("latents_std")},
        "tokenizers": [{"dir": sub, "max_length_tokens": int(tok.model_max_length), "pad_id": int(tok.pad_token_id)}
                       for sub, tok in toks],
        "uncond": uncond, "components": entries, "onnx_opset": exporter.OPSET,
    }
    if _want_gpu(opts.gpu_engines):  # pragma: no cover - GPU machines only
        from export import gpu  # noqa: PLC0415

        for comp in tqdm(comps, desc=f"{name}: GPU engines", unit="graph"):
            entries[comp.name]["engines"] = gpu.build_engines(comp, tmp, geo)
    repository.write_stage_json(tmp, spec)
    result: dict[str, Any] = {"stage": name, "model": stage.model, "pipeline_class": type(pipe).__name__,
                              "config_hash": cascade.config_hash}
    if opts.verify:
        result["onnx"] = [verify.check_onnx(tmp / c.onnx_file) for c in comps]
        result["components"] = [verify.verify_component(c, OrtEngine(tmp / c.onnx_file))
                                for c in tqdm(comps, desc=f"{name}: verify components", unit="graph")]
        runtime = load_stage(tmp, backend="onnxruntime")
        result["tokenizers"] = verify.verify_tokenizers(pipe, runtime, verify.TOKENIZER_PROMPTS)
        with tqdm(total=1, desc=f"{name}: verify end to end", unit="run") as bar:
            result["end_to_end"] = verify.verify_end_to_end(pipe, runtime)
            bar.update()
        gpu_built = [c for c in comps if entries[c.name]["engines"]]
        if gpu_built:  # pragma: no cover - GPU machines only: fp16 engines vs the fp32 PyTorch reference
            from serving.engines import open_engine  # noqa: PLC0415

            result["gpu_components"] = [
                verify.verify_component(c, open_engine({"name": c.name, **entries[c.name]}, tmp, backend))
                for c in gpu_built for backend in entries[c.name]["engines"]]
    result["export_s"] = time.perf_counter() - t0
    (tmp / "verification.json").write_text(json.dumps(result, indent=2))
    _check(result)
    repository.swap_in(tmp, final)
    return result


def _check(result: dict[str, Any]) -> None:
    bad = [c["file"] for c in result.get("onnx", []) if c["onnx_checker"] != "ok"]
    if bad:
        raise VerificationFailed(f"{result['stage']}: onnx.checker failed for {bad}")
    e2e = result.get("end_to_end")
    if e2e and not e2e["passed"]:
        raise VerificationFailed(f"{result['stage']}: end-to-end PSNR {e2e['min_psnr_db']:.1f} dB < "
                                 f"{e2e['threshold_db']} dB (runtime vs diffusers)")
    toks = result.get("tokenizers")
    if toks and toks["mismatched_prompts"]:
        raise VerificationFailed(f"{result['stage']}: runtime tokenizer ids differ for {toks['mismatched_prompts']} prompts")


def load_discriminator_module(cascade: CascadeConfig):
    """Call the configured ``discriminator.loader`` on the configured path (relative to the project root)."""
    from serving.config import PROJECT_ROOT  # noqa: PLC0415

    d = cascade.discriminator
    path = Path(d.path) if Path(d.path).is_absolute() else PROJECT_ROOT / d.path
    if not path.exists():
        hint = " (the tiny cascade's weights are committed; `make zoo` rebuilds them)" if "zoo" in d.path else ""
        raise ConfigError(f"discriminator.path {d.path!r}: no such folder ({path}){hint}")
    mod_name, fn = d.loader.split(":")
    try:
        loader = getattr(importlib.import_module(mod_name), fn)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"discriminator.loader {d.loader!r} cannot be imported: {exc}") from exc
    return loader(path)


def export_discriminator_stage(cascade: CascadeConfig, repo: Path, opts: ExportOptions) -> dict[str, Any]:
    """Export the discriminator; returns its verification dict."""
    from export import exporter  # noqa: PLC0415
    from serving.discriminator import load_discriminator  # noqa: PLC0415

    final = repository.artifact_dir(repo, "discriminator")
    tmp = repository.fresh_tmp(final)
    t0 = time.perf_counter()
    module = load_discriminator_module(cascade)
    with tqdm(total=1, desc="discriminator: ONNX export", unit="graph") as bar:
        path, inputs, ref = exporter.export_discriminator_onnx(module, cascade.discriminator.image_size_px, tmp)
        bar.update()
    entry = {"onnx": path.name, "inputs": ["images"], "outputs": ["logits"], "engines": {}}
    repository.write_stage_json(tmp, {"stage": "discriminator", "kind": "discriminator", "cascade": cascade.name,
                             "config_hash": cascade.config_hash, "source_model": cascade.discriminator.path,
                             "weights_fingerprint": weights_location(cascade, "discriminator")[1],
                             "image_size_px": cascade.discriminator.image_size_px,
                             "components": {"discriminator": entry}, "onnx_opset": exporter.OPSET})
    result: dict[str, Any] = {"stage": "discriminator", "model": cascade.discriminator.path,
                              "config_hash": cascade.config_hash}
    if opts.verify:
        disc = load_discriminator(tmp, backend="onnxruntime")
        errs = {f"batch{b}": verify.compare_outputs({"logits": ref[:b]}, {"logits": disc.engine.run(
            {"images": inputs["images"][:b]})["logits"]}) for b in (2, 1)}
        worst = [e["logits"] for e in errs.values()]
        result["onnx"] = [verify.check_onnx(path)]
        result["components"] = [{"component": "discriminator", "backend": disc.engine.backend, **errs,
                                 "max_abs_err": max(w["max_abs_err"] for w in worst),
                                 "max_rel_err": max(w["max_rel_err"] for w in worst)}]
    result["export_s"] = time.perf_counter() - t0
    (tmp / "verification.json").write_text(json.dumps(result, indent=2))
    _check(result)
    repository.swap_in(tmp, final)
    return result


def weights_location(cascade: CascadeConfig, stage: str) -> tuple[Path | None, str | None]:
    """(local weights folder or None for a hub id, its fingerprint or None)."""
    from serving.config import PROJECT_ROOT, resolve_model  # noqa: PLC0415

    if stage == "discriminator":
        p = Path(cascade.discriminator.path)
        folder = p if p.is_absolute() else PROJECT_ROOT / p
    else:
        try:
            kind, where = resolve_model(cascade.stage(stage).model)
        except ConfigError:
            return None, None
        folder = Path(where) if kind == "local" else None
    return folder, (repository.weights_fingerprint(folder) if folder is not None else None)


def repository_status(cascade: CascadeConfig, repo: str | Path) -> dict[str, str]:
    """Per stage: ``up-to-date``, ``missing``, ``stale (exported from <hash>)`` or
    ``stale (weights changed since export)`` (local weights folders are fingerprinted)."""
    out = {}
    for s in STAGES:
        h = repository.exported_hash(repo, s)
        ok = (Path(repo) / s / "config.pbtxt").exists()
        if h is None:
            out[s] = "missing"
        elif h != cascade.config_hash or not ok:
            out[s] = f"stale (exported from {h})"
        else:
            now = weights_location(cascade, s)[1]
            then = repository.exported_field(repo, s, "weights_fingerprint")
            out[s] = "stale (weights changed since export)" if now is not None and now != then else "up-to-date"
    return out


def export_cascade(cascade: CascadeConfig, repo: str | Path, opts: ExportOptions = ExportOptions(),
                   log=print) -> dict[str, dict[str, Any]]:
    """Export every stage of ``cascade`` into ``repo`` and render the configs; returns verification per stage.

    Stages already exported from this exact config are skipped unless ``opts.force``; stages
    exported from another config are replaced (with a warning naming the old hash).
    """
    repo = Path(repo)
    status = repository_status(cascade, repo)
    kind_gpu = _want_gpu(opts.gpu_engines)
    results: dict[str, dict[str, Any]] = {}
    for s in opts.stages:
        if status[s] == "up-to-date" and not opts.force:
            log(f"{s}: up to date (config hash {cascade.config_hash}); use --force to re-export")
            vpath = repository.artifact_dir(repo, s) / "verification.json"
            if vpath.exists():
                results[s] = json.loads(vpath.read_text())
            continue
        if status[s].startswith("stale"):
            log(f"WARNING {s}: replacing artifacts {status[s]} with config {cascade.source} (hash {cascade.config_hash})")
        results[s] = (export_discriminator_stage(cascade, repo, opts) if s == "discriminator"
                      else export_generator_stage(s, cascade, repo, opts))
        repository.write_config(repo, s, cascade, kind_gpu=kind_gpu)
    if cascade.router is not None:
        from export.router import export_router_stage  # noqa: PLC0415

        results["router"] = export_router_stage(cascade, repo, force=opts.force, log=log)
    return results
