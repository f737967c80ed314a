"""``make gpu-check``: the GPU serving path end to end on a real-size SD v1.5-architecture cascade.

    python -m benchmarks.gpu_check                      # a machine with an NVIDIA GPU (no model download)
    python -m benchmarks.gpu_check --device cpu --tiny  # dry run of the same code at tiny size, on CPU

Steps (each printed with its time):

1. weights: a random-weight ``StableDiffusionPipeline`` built from diffusers/transformers configs
   with SD v1.5's values (``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``; 512x512
   images); light and heavy share it (light: few DDIM steps without guidance, heavy: more steps
   with classifier-free guidance), so each engine is built once (``export.engine_builds.BuiltEngines``);
2. export: ``python -m export``'s code with fp16 GPU engines (TensorRT when it imports, else CUDA
   AOTInductor; ``--device cpu``: float32 CPU AOT packages), verified on every engine set that can
   serve (no NaN/inf, PSNR vs fp32): a failure stops the check with exit status 1;
3. serve: tritonserver with two instances per stage, each pinned to a named GPU
   (``gpus: [0]``, ``gpus: [1 % GPUs]``), the stage log lines prove the device each instance built on;
   served images vs the fp32 diffusers images (PSNR, uint8);
4. latency per batch size, same run: the UNet through the serving engine vs eager torch fp16, and
   the whole heavy and light pipelines through Triton vs the eager diffusers pipeline fp16.

Writes ``benchmarks/results/gpu/gpu_check.json`` (``--device cpu``: ``runs/gpu_check/``). Without
a GPU (and without ``--device cpu``) it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig

TARGET_S = 480
STAGES = ("light", "heavy", "discriminator")
PROMPTS = ("a photo of a cat", "two blue squares above a green triangle", "a red circle on the left", "a dog")
# SD v1.5's component configs (runwayml/stable-diffusion-v1-5: unet/, vae/, text_encoder/ config.json)
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, act_fn="silu")
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215, act_fn="silu")
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, clip_sample=False, set_alpha_to_one=False)


def random_sd15_pipeline(seed: int = 0):
    """A ``StableDiffusionPipeline`` with SD v1.5's architecture and random weights (no download).

    The tokenizer is the project's small offline CLIP tokenizer at SD's 77 tokens: its ids are a
    subset of the 49,408-entry embedding, which is all a random text encoder needs.
    """
    import torch  # noqa: PLC0415
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: PLC0415
    from transformers import CLIPTextConfig, CLIPTextModel  # noqa: PLC0415

    from export.testing import tiny_clip_tokenizer  # noqa: PLC0415

    tok = tiny_clip_tokenizer(max_length_tokens=77)
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id)).eval()
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    vae = AutoencoderKL(**SD15_VAE).eval()
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def write_cascade(work: Path, args) -> tuple[Path, Any]:
    """Save the pipeline (light and heavy share it) and a random discriminator; return (YAML, pipeline)."""
    import yaml  # noqa: PLC0415

    from export.testing import IMAGE_SIZE_PX, save_tiny_discriminator, tiny_sd_pipeline  # noqa: PLC0415

    pipe = tiny_sd_pipeline(seed=0) if args.tiny else random_sd15_pipeline(seed=0)
    # the scheduler both stages use, set on the pipeline itself: the fp32 reference and the eager
    # baseline made from this object then sample exactly what the exported stages sample
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing="trailing")
    size = IMAGE_SIZE_PX if args.tiny else 512
    pipe.save_pretrained(work / "weights" / "pipeline")
    save_tiny_discriminator(work / "weights" / "discriminator")
    stage = lambda steps, guidance: {"model": str(work / "weights" / "pipeline"), "steps": steps,  # noqa: E731
                                     "guidance_scale": guidance, "scheduler": "from_model",
                                     "height": size, "width": size}
    cfg = {"name": "gpu-check-tiny" if args.tiny else "gpu-check-sd15", "slo_ms": 5000,
           "light": stage(args.light_steps, 0.0), "heavy": stage(args.heavy_steps, args.heavy_guidance),
           "discriminator": {"path": str(work / "weights" / "discriminator"), "image_size": size,
                             "loader": "export.testing:load_tiny_discriminator"}}
    path = work / "cascade.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path, pipe


def instance_groups(device: str, gpus: int) -> str:
    """Two instances per stage, each on a GPU named explicitly (never Triton's one-per-visible-GPU default)."""
    if device == "cpu":
        return "instance_group [ { kind: KIND_CPU count: 2 } ]"
    return (f"instance_group [ {{ kind: KIND_GPU count: 1 gpus: [ 0 ] }}, "
            f"{{ kind: KIND_GPU count: 1 gpus: [ {1 % max(gpus, 1)} ] }} ]")


def prepare_repository(repo: Path, control: Path, device: str, gpus: int, max_batch: int) -> None:
    """Copy the thin model.py files in, pin two instances per stage, point the control file at ``control``."""
    from serving.control import write_control  # noqa: PLC0415

    write_control(control, {"batch_size": {s: max_batch for s in STAGES}})
    for stage in STAGES:
        shutil.copy(PROJECT_ROOT / "model_repository" / stage / "1" / "model.py", repo / stage / "1" / "model.py")
        cfg = repo / stage / "config.pbtxt"
        text = re.sub(r"instance_group \[.*\]", instance_groups(device, gpus), cfg.read_text())
        text = re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control}"', text)
        cfg.write_text(text)


def timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall-clock ms of ``fn`` over ``repeats`` runs after one warm-up (``sync`` after each, e.g. CUDA)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _generate(client, model: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    p = grpcclient.InferInput("PROMPT", [len(prompts), 1], "BYTES")
    p.set_data_from_numpy(np.array([[s.encode()] for s in prompts], dtype=object))
    s = grpcclient.InferInput("SEED", [len(seeds), 1], "INT64")
    s.set_data_from_numpy(np.array(seeds, dtype=np.int64).reshape(-1, 1))
    return client.infer(model, [p, s], client_timeout=600).as_numpy("IMAGE")


def warm_instances(server, stage: str, batch: int, instances: int = 2) -> None:
    """One concurrent request per instance (each on its own client), so that no timed request is an
    instance's first (lazy CUDA/kernel initialisation would be measured as latency)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def one(i: int) -> None:
        client = server.grpc_client()
        try:
            _generate(client, stage, [PROMPTS[0]] * batch, [i] * batch)
        finally:
            client.close()

    with ThreadPoolExecutor(instances) as pool:
        list(pool.map(one, range(instances)))


def served_quality(client, pipe, repo: Path) -> dict[str, Any]:
    """Images served by Triton vs the fp32 diffusers images of the same prompts and noise (uint8 PSNR)."""
    from export.verify import diffusers_images, psnr_db  # noqa: PLC0415
    from serving.pipeline import to_uint8  # noqa: PLC0415
    from serving.stage import read_stage_spec  # noqa: PLC0415

    out = {}
    prompts, seeds = list(PROMPTS[:3]), [0, 1, 2]
    for stage in ("light", "heavy"):
        spec = read_stage_spec(repo / stage / "1" / "artifacts")
        served = _generate(client, stage, prompts, seeds)
        ref = to_uint8(diffusers_images(pipe, spec, prompts, seeds))
        per_image = [psnr_db(a, b, 255.0) for a, b in zip(served, ref)]
        out[stage] = {"psnr_uint8_db_per_image": per_image, "min_psnr_uint8_db": min(per_image),
                      "passed": bool(min(per_image) >= 30.0)}
    return out


def pinned_instances(log_text: str) -> list[tuple[str, str]]:
    """The stage models' own log lines naming the device each instance built its engines on."""
    return re.findall(r"(\w+): [^\n]*? from \S+ \(backends \[[^\]]*\], ([^)]*)\)", log_text)


def pinning_ok(instances: list[dict[str, str]], device: str, gpus: int) -> bool:
    """Every stage has its two instances, on GPU 0 and GPU 1 % GPUs (CPU: no GPU)."""
    want = ["CPU/current device"] * 2 if device == "cpu" else [f"GPU {0}", f"GPU {1 % max(gpus, 1)}"]
    return all(sorted(i["device"] for i in instances if i["model"] == s) == sorted(want) for s in STAGES)


def eager_pipeline(pipe, device: str):
    """The diffusers pipeline as a user would run it eagerly: fp16 on the GPU, fp32 on CPU."""
    import copy  # noqa: PLC0415

    import torch  # noqa: PLC0415

    eager = copy.deepcopy(pipe)
    eager.set_progress_bar_config(disable=True)
    return eager.to(device, torch.float16 if device == "cuda" else torch.float32)


def unet_feeds(spec, batch: int, embed_dim: int) -> dict[str, np.ndarray]:
    """Inputs of the UNet at UNet batch ``batch`` (what one denoising step of ``batch`` latents feeds it)."""
    rng = np.random.default_rng(batch)
    tokens = spec.tokenizers[0].max_length_tokens
    return {"sample": rng.standard_normal((batch, *spec.latent_shape), dtype=np.float32),
            "timestep": np.full((batch,), 500.0, np.float32),
            "encoder_hidden_states": rng.standard_normal((batch, tokens, embed_dim), dtype=np.float32)}


def measure_unet(repo: Path, eager, device: str, batch_sizes, repeats: int) -> dict[str, dict[str, float]]:
    """UNet ms per batch: the engine ``backend: auto`` serves (numpy in/out as in serving) vs eager torch."""
    import torch  # noqa: PLC0415

    from serving.engines import open_engine  # noqa: PLC0415
    from serving.stage import read_stage_spec  # noqa: PLC0415

    art = repo / "heavy" / "1" / "artifacts"
    spec = read_stage_spec(art)
    engine = open_engine({"name": "unet", **spec.components["unet"]}, art, "auto",
                         device_id=0 if device == "cuda" else None)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for b in tqdm(batch_sizes, desc="UNet latency", unit="batch size"):
        feeds = unet_feeds(spec, b, eager.unet.config.cross_attention_dim)
        tensors = [torch.from_numpy(feeds[k]).to(device, eager.unet.dtype) for k in ("sample", "encoder_hidden_states")]
        t = torch.from_numpy(feeds["timestep"]).to(device)

        def run_eager():
            with torch.no_grad():
                eager.unet(tensors[0], t, tensors[1], return_dict=False)

        ms_engine, ms_eager = timed(lambda: engine.run(feeds), repeats, sync), timed(run_eager, repeats, sync)
        out[str(b)] = {"engine_ms": ms_engine, "eager_ms": ms_eager, "speedup": ms_eager / ms_engine,
                       "engine_backend": engine.backend}
    return out


def measure_pipelines(client, eager, spec_of, device: str, batch_sizes, repeats: int) -> dict[str, Any]:
    """Whole light/heavy pipeline ms per batch: one Triton request of ``batch`` prompts vs the eager pipeline."""
    import torch  # noqa: PLC0415

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict[str, Any] = {}
    for stage in ("light", "heavy"):
        spec, out[stage] = spec_of(stage), {}
        for b in tqdm(batch_sizes, desc=f"{stage} pipeline latency", unit="batch size"):
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(b)]

            def run_eager():
                with torch.no_grad():
                    eager(prompts, num_inference_steps=spec.steps, guidance_scale=spec.guidance_scale,
                          height=spec.height_px, width=spec.width_px, output_type="np")

            ms_triton = timed(lambda: _generate(client, stage, prompts, list(range(b))), repeats)
            ms_eager = timed(run_eager, repeats, sync)
            out[stage][str(b)] = {"triton_ms": ms_triton, "eager_ms": ms_eager, "speedup": ms_eager / ms_triton}
    return out


def gpu_summary() -> dict[str, Any]:
    """What this machine is: GPU names and count, torch/CUDA and TensorRT versions."""
    import torch  # noqa: PLC0415

    from export.gpu import tensorrt_available  # noqa: PLC0415

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                            if torch.cuda.is_available() else []}
    if tensorrt_available():
        import tensorrt  # noqa: PLC0415

        info["tensorrt"] = tensorrt.__version__
    return info


def export_cascade_for(cfg_path: Path, repo: Path, device: str) -> dict[str, Any]:
    """Export and verify the cascade: fp16 GPU engines on CUDA, float32 CPU AOT packages on CPU."""
    from export.build import ExportOptions, export_cascade  # noqa: PLC0415
    from serving.config import load_cascade  # noqa: PLC0415

    opts = ExportOptions(gpu_engines="on" if device == "cuda" else "off", cpu_aot=device == "cpu", force=True)
    return export_cascade(load_cascade(cfg_path), repo, opts, log=print)


def verification_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per stage: min PSNR of every end-to-end engine set and of every component check."""
    out = {}
    for stage, res in results.items():
        sets = {"onnxruntime": res.get("end_to_end"), **res.get("end_to_end_engines", {})}
        out[stage] = {"end_to_end_min_psnr_db": {k: v["min_psnr_db"] for k, v in sets.items() if v},
                      "components": [{k: c.get(k) for k in ("component", "backend", "dtype", "min_psnr_db", "nonfinite")}
                                     for c in res.get("components", [])]}
    return out


def run_check(args, work: Path, doc: dict[str, Any]) -> int:
    """Steps 1-4 (module docstring); fills ``doc``; returns the exit status."""
    from export.build import VerificationFailed  # noqa: PLC0415
    from serving.stage import read_stage_spec  # noqa: PLC0415

    t0 = time.perf_counter()
    cfg_path, pipe = write_cascade(work, args)
    doc["timings_s"] = {"weights": time.perf_counter() - t0}
    repo = work / "repository"
    t1 = time.perf_counter()
    try:
        results = export_cascade_for(cfg_path, repo, args.device)
    except VerificationFailed as exc:
        doc["verification_failed"] = str(exc)
        print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
        return 1
    doc["timings_s"]["export"] = time.perf_counter() - t1
    doc["verification"] = verification_summary(results)
    prepare_repository(repo, work / "control.json", args.device, len(doc["machine"]["gpus"]), max(args.batch_sizes))
    eager = eager_pipeline(pipe, args.device)
    t2 = time.perf_counter()
    log = work / "tritonserver.log"
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=STAGES, log_path=log,
                                         startup_timeout_s=900)) as server:
        doc["timings_s"]["triton_start"] = time.perf_counter() - t2
        doc["instances"] = [{"model": m, "device": d} for m, d in pinned_instances(log.read_text())]
        doc["pinning_ok"] = pinning_ok(doc["instances"], args.device, len(doc["machine"]["gpus"]))
        for stage in ("light", "heavy"):
            warm_instances(server, stage, max(args.batch_sizes))
        client = server.grpc_client()
        doc["served_quality"] = served_quality(client, pipe, repo)
        t3 = time.perf_counter()
        doc["pipeline_latency"] = measure_pipelines(client, eager, lambda s: read_stage_spec(repo / s / "1" / "artifacts"),
                                                    args.device, args.batch_sizes, args.repeats)
        client.close()
    doc["unet_latency"] = measure_unet(repo, eager, args.device, args.batch_sizes, args.repeats)
    doc["timings_s"]["latency"] = time.perf_counter() - t3
    return 0 if doc["pinning_ok"] and all(q["passed"] for q in doc["served_quality"].values()) else 1


def print_report(doc: dict[str, Any]) -> None:
    """The latency tables and the checks, as a person reads them."""
    print(f"\nmachine: {doc['machine']}")
    for inst in doc.get("instances", []):
        print(f"  instance of {inst['model']}: {inst['device']}")
    if "pinning_ok" in doc:
        print(f"pinning: {'ok' if doc['pinning_ok'] else 'FAIL: not two instances per stage on the named devices'}")
    for stage, q in doc.get("served_quality", {}).items():
        print(f"served {stage}: min PSNR vs fp32 diffusers {q['min_psnr_uint8_db']:.1f} dB "
              f"({'ok' if q['passed'] else 'FAIL'} >= 30)")
    print(f"\n{'batch':>5}  {'UNet engine ms':>14}  {'eager ms':>9}  {'speedup':>7}")
    for b, r in doc.get("unet_latency", {}).items():
        print(f"{b:>5}  {r['engine_ms']:>14.1f}  {r['eager_ms']:>9.1f}  {r['speedup']:>7.2f}  ({r['engine_backend']})")
    for stage, rows in doc.get("pipeline_latency", {}).items():
        print(f"\n{'batch':>5}  {stage + ' via Triton ms':>20}  {'eager ms':>9}  {'speedup':>7}")
        for b, r in rows.items():
            print(f"{b:>5}  {r['triton_ms']:>20.1f}  {r['eager_ms']:>9.1f}  {r['speedup']:>7.2f}")
    print(f"\nwall time {doc['wall_s']:.0f} s (target {TARGET_S} s: {'met' if doc['within_target'] else 'MISSED'})")


def _quiet_libraries() -> None:
    """diffusers/transformers chatter (truncated verification prompts, dtype casts of the eager copy) hides the report."""
    import diffusers  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda: the real check; cpu: a dry run of the same code path (use with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="export.testing's tiny random SD pipeline instead of SD v1.5 size")
    ap.add_argument("--batch-sizes", type=lambda v: tuple(int(b) for b in v.split(",")), default=(1, 4, 8))
    ap.add_argument("--light-steps", type=int, default=4)
    ap.add_argument("--heavy-steps", type=int, default=25)
    ap.add_argument("--heavy-guidance", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None, help="scratch folder (default: runs/gpu_check/work)")
    ap.add_argument("--out", default=None, help="JSON folder (default: benchmarks/results/gpu, cpu: runs/gpu_check)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    import torch  # noqa: PLC0415 - after argument errors, which should not wait for torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no NVIDIA GPU visible to torch (CUDA): nothing built, served or measured. "
              "Run it on a GPU machine with a CUDA build of torch (`pip install -e '.[gpu]'`), "
              "or dry-run the same code on CPU: python -m benchmarks.gpu_check --device cpu --tiny")
        return 0
    _quiet_libraries()
    work = Path(args.work) if args.work else PROJECT_ROOT / "runs" / "gpu_check" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    doc: dict[str, Any] = {"command": shlex.join([sys.executable, "-m", "benchmarks.gpu_check", *(argv or sys.argv[1:])]),
                           "device": args.device, "tiny": args.tiny, "machine": gpu_summary(),
                           "batch_sizes": list(args.batch_sizes), "repeats": args.repeats,
                           "steps": {"light": args.light_steps, "heavy": args.heavy_steps},
                           "heavy_guidance": args.heavy_guidance, "load_average_start": os.getloadavg()}
    status = run_check(args, work, doc)
    doc["wall_s"] = time.perf_counter() - started
    doc["load_average_end"] = os.getloadavg()
    doc["within_target"] = doc["wall_s"] <= TARGET_S
    doc["passed"] = status == 0
    default_out = PROJECT_ROOT / ("benchmarks/results/gpu" if args.device == "cuda" else "runs/gpu_check")
    out = Path(args.out) if args.out else default_out
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check.json" if args.device == "cuda" and not args.tiny else f"gpu_check_{args.device}{'_tiny' * args.tiny}.json"
    (out / name).write_text(json.dumps(doc, indent=2))
    print_report(doc)
    print(f"written {out / name}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
