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
from export.engine_builds import (BuiltEngines, build_engines, check_engine_options, engine_sets, missing_engines,
                                  want_gpu)
from serving.config import CascadeConfig, ConfigError

STAGES = ("discriminator", "light", "heavy")


class VerificationFailed(RuntimeError):
    """The exported stage does not reproduce the PyTorch/diffusers reference closely enough."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """``verify``: run the checks (fail on PSNR below threshold); ``force``: re-export up-to-date stages;
    ``gpu_engines``: "auto" (build fp16 TensorRT engines or CUDA AOT packages when CUDA is present),
    "off", or "on" (fail without a GPU); ``cpu_aot``: also build float32 AOTInductor packages for
    the CPU (off by default: ONNX Runtime serves on CPU unless asked; with them, ``backend: auto``
    serves the packages on machines without a GPU)."""

    verify: bool = True
    force: bool = False
    gpu_engines: str = "auto"
    cpu_aot: bool = False
    stages: tuple[str, ...] = STAGES


def _stage_spec(name: str, cascade: CascadeConfig, stage, pipe, geo, entries, toks) -> dict[str, Any]:
    """The ``stage.json`` content of a light/heavy stage (docs/interfaces.md section 2)."""
    from export import exporter  # noqa: PLC0415

    cfg_free = pipe.unet.config.get("time_cond_proj_dim") is None and stage.guidance_scale > 1.0
    uncond = "none" if not cfg_free else ("zeros" if geo.kind == "sdxl" and pipe.config.get(
        "force_zeros_for_empty_prompt", False) else "empty_prompt")
    vae = pipe.vae.config
    return {
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


def export_generator_stage(name: str, cascade: CascadeConfig, repo: Path, opts: ExportOptions,
                           built: BuiltEngines | None = None) -> dict[str, Any]:
    """Export the ``light`` or ``heavy`` stage; returns its verification dict. ``built``: engines of
    earlier stages of this run, reused for identical components."""
    from export import exporter  # noqa: PLC0415 - torch/diffusers only at export time

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
    new = build_engines(comps, tmp, entries, opts, name, built)
    repository.write_stage_json(tmp, _stage_spec(name, cascade, stage, pipe, geo, entries, toks))
    result: dict[str, Any] = {"stage": name, "model": stage.model, "pipeline_class": type(pipe).__name__,
                              "config_hash": cascade.config_hash}
    if opts.verify:
        result.update(verify_generator(name, pipe, comps, tmp, entries))
    result["export_s"] = time.perf_counter() - t0
    (tmp / "verification.json").write_text(json.dumps(result, indent=2))
    _check(result)
    repository.swap_in(tmp, final)
    for key, files, info in new if built is not None else []:
        built.add(key, name, files, info)
    return result


def _dtype(entry: dict[str, Any], backend: str) -> str:
    from serving.engines import engine_info  # noqa: PLC0415

    return "float32" if backend == "onnxruntime" else engine_info(entry, backend)["dtype"]


def verify_generator(name: str, pipe, comps, tmp: Path, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ONNX checker, every component on every backend that can serve here vs fp32 PyTorch, tokenizer
    ids, and the whole stage end to end vs diffusers on each engine set :func:`engine_sets` names."""
    from serving.pipeline import load_stage  # noqa: PLC0415

    out: dict[str, Any] = {"onnx": [verify.check_onnx(tmp / c.onnx_file) for c in comps]}
    runtimes = {b: load_stage(tmp, backend=b) for b in engine_sets(entries, tmp)}
    pairs = [(b, c) for b in runtimes if b != "auto" for c in comps]
    refs: dict[str, dict] = {c.name: {} for c in comps}
    out["components"] = [verify.verify_component(c, runtimes[b].engines[c.name], _dtype(entries[c.name], b), refs[c.name])
                         for b, c in tqdm(pairs, desc=f"{name}: verify components", unit="graph")]
    base = runtimes["onnxruntime"]
    out["tokenizers"] = verify.verify_tokenizers(pipe, base, verify.TOKENIZER_PROMPTS)
    with tqdm(total=len(runtimes), desc=f"{name}: verify end to end", unit="engine set") as bar:
        ref = verify.diffusers_images(pipe, base.spec, verify.VERIFY_PROMPTS, verify.VERIFY_SEEDS)
        out["end_to_end"] = verify.verify_end_to_end(pipe, base, reference=ref)
        bar.update()
        out["end_to_end_engines"] = {}
        for label, runtime in runtimes.items():
            if label == "onnxruntime":
                continue
            dtypes = [_dtype(entries[n], e.backend) for n, e in runtime.engines.items()]
            e2e = verify.verify_end_to_end(pipe, runtime, reference=ref,
                                           threshold_db=verify.end_to_end_threshold_db(dtypes))
            if not e2e["passed"]:
                e2e["blame"] = _blame(pipe, base, runtime, ref, e2e["threshold_db"])
            out["end_to_end_engines"][label] = e2e
            bar.update()
    return out


def _blame(pipe, base, candidate, reference, threshold_db: float) -> list[str]:
    """The components whose engine alone (the others on ONNX Runtime) fails the end-to-end check."""
    from serving.pipeline import StagePipeline  # noqa: PLC0415

    swapped = [n for n, e in candidate.engines.items() if e.backend != "onnxruntime"]
    bad = [n for n in swapped if not verify.verify_end_to_end(
        pipe, StagePipeline(base.artifact_dir, base.spec, {**base.engines, n: candidate.engines[n]}, base.tokenizers),
        reference=reference, threshold_db=threshold_db)["passed"]]
    return bad or [f"no single component: {' + '.join(swapped)} together"]


def _component_failure(stage: str, c: dict[str, Any]) -> str:
    what = (f"{c['nonfinite']} NaN/inf output values" if c.get("nonfinite") else
            f"PSNR {c['min_psnr_db']:.1f} dB < {c['threshold_db']:.0f} dB against the fp32 PyTorch module")
    return f"{stage}: component {c['component']} on {c['backend']} ({c.get('dtype', 'float32')}): {what}"


def _e2e_failure(stage: str, backend: str, e: dict[str, Any]) -> str:
    nan = f"{e['nonfinite_images']} of {e['prompts']} images have NaN/inf pixels, " if e.get("nonfinite_images") else ""
    blame = f"; caused by {', '.join(e['blame'])}" if e.get("blame") else ""
    return (f"{stage}: end to end on {backend}: {nan}min PSNR {e['min_psnr_db']:.1f} dB < {e['threshold_db']:.0f} dB "
            f"against fp32 diffusers{blame}")


def _check(result: dict[str, Any]) -> None:
    """Raise :class:`VerificationFailed` listing every failed check of one stage (stage, component, backend named)."""
    stage = result["stage"]
    bad = [c["file"] for c in result.get("onnx", []) if c["onnx_checker"] != "ok"]
    problems = [f"{stage}: onnx.checker failed for {bad}"] if bad else []
    problems += [_component_failure(stage, c) for c in result.get("components", []) if not c.get("passed", True)]
    e2e = result.get("end_to_end")
    if e2e and not e2e["passed"]:
        problems.append(f"{stage}: end-to-end PSNR {e2e['min_psnr_db']:.1f} dB < {e2e['threshold_db']} dB "
                        f"(runtime vs diffusers)" + (f", {e2e['nonfinite_images']} images with NaN/inf pixels"
                                                     if e2e.get("nonfinite_images") else ""))
    problems += [_e2e_failure(stage, b, e) for b, e in result.get("end_to_end_engines", {}).items() if not e["passed"]]
    toks = result.get("tokenizers")
    if toks and toks["mismatched_prompts"]:
        problems.append(f"{stage}: runtime tokenizer ids differ for {toks['mismatched_prompts']} prompts")
    if problems:
        raise VerificationFailed("; ".join(problems))


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
    """Export the discriminator (ONNX, plus the engines ``opts`` ask for); returns its verification dict."""
    import torch  # noqa: PLC0415

    from export import exporter  # noqa: PLC0415
    from serving.discriminator import load_discriminator  # noqa: PLC0415

    final = repository.artifact_dir(repo, "discriminator")
    tmp = repository.fresh_tmp(final)
    t0 = time.perf_counter()
    module = load_discriminator_module(cascade)
    with tqdm(total=1, desc="discriminator: ONNX export", unit="graph") as bar:
        path, inputs, _ = exporter.export_discriminator_onnx(module, cascade.discriminator.image_size_px, tmp)
        bar.update()
    comp = exporter.Component("discriminator", module, {"images": torch.from_numpy(inputs["images"])}, ("logits",))
    entries = {"discriminator": {"onnx": path.name, "inputs": ["images"], "outputs": ["logits"], "engines": {}}}
    build_engines([comp], tmp, entries, opts, "discriminator")
    repository.write_stage_json(tmp, {"stage": "discriminator", "kind": "discriminator", "cascade": cascade.name,
                             "config_hash": cascade.config_hash, "source_model": cascade.discriminator.path,
                             "weights_fingerprint": weights_location(cascade, "discriminator")[1],
                             "image_size_px": cascade.discriminator.image_size_px,
                             "components": entries, "onnx_opset": exporter.OPSET})
    result: dict[str, Any] = {"stage": "discriminator", "model": cascade.discriminator.path,
                              "config_hash": cascade.config_hash}
    if opts.verify:
        result["onnx"] = [verify.check_onnx(path)]
        refs: dict = {}
        result["components"] = [
            verify.verify_component(comp, load_discriminator(tmp, backend=b).engine, _dtype(entries["discriminator"], b),
                                    refs)
            for b in engine_sets(entries, tmp) if b != "auto"]
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
    check_engine_options(opts)
    status = repository_status(cascade, repo)
    kind_gpu = want_gpu(opts.gpu_engines)
    built = BuiltEngines(repo)
    results: dict[str, dict[str, Any]] = {}
    for s in opts.stages:
        missing = missing_engines(repo, s, opts) if status[s] == "up-to-date" else []
        if missing:
            log(f"{s}: up to date but without the requested engines for {missing}; re-exporting")
        elif status[s] == "up-to-date" and not opts.force:
            log(f"{s}: up to date (config hash {cascade.config_hash}); use --force to re-export")
            vpath = repository.artifact_dir(repo, s) / "verification.json"
            if vpath.exists():
                results[s] = json.loads(vpath.read_text())
            continue
        if status[s].startswith("stale"):
            log(f"WARNING {s}: replacing artifacts {status[s]} with config {cascade.source} (hash {cascade.config_hash})")
        results[s] = (export_discriminator_stage(cascade, repo, opts) if s == "discriminator"
                      else export_generator_stage(s, cascade, repo, opts, built))
        repository.write_config(repo, s, cascade, kind_gpu=kind_gpu)
    if cascade.router is not None:
        from export.router import export_router_stage  # noqa: PLC0415

        results["router"] = export_router_stage(cascade, repo, force=opts.force, log=log)
    return results
