"""Reproduce the embedded tiny cascade from seeds (``make zoo``) and publish fp16 weights.

Order: VAE -> judge (rendered images only) -> heavy -> light -> VAE decoder fine-tune (encoder
frozen; the new decoder replaces the pipelines' one) -> discriminator (needs both models' samples
through the final decoder) -> publish -> router (labels from the published light model and judge). Training runs on CUDA when available, else on the CPU (hours on 2 cores, minutes on a
GPU). Intermediate fp32 checkpoints go to ``--work`` (default ``runs/tiny``); the published
weights (fp16 safetensors) go to ``zoo/weights/{heavy,light,discriminator,judge}``.

Publish only (from existing checkpoints): ``python -m zoo.build --publish-only``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from export.discriminators import load_discriminator, save_discriminator
from zoo.common import pick_device
from zoo.judge import load_judge, save_judge
from zoo.sampling import load_pipeline

WEIGHTS_DIR = Path(__file__).parent / "weights"
# Steps of each stage as used for the committed weights (see zoo/README.md).
STEPS = {"vae": 700, "judge": 4000, "heavy": 8000, "light": 9750, "vae_decoder": 2000, "discriminator": 1500}


def publish_pipeline(src: Path, dst: Path) -> None:
    """Re-save a fp32 pipeline folder as fp16 safetensors (loads back as fp32 by default)."""
    pipe = load_pipeline(src)
    pipe.to(torch.float16)
    if dst.exists():
        shutil.rmtree(dst)
    pipe.save_pretrained(dst, safe_serialization=True)


def swap_vae(pipeline: Path, vae: Path) -> None:
    """Replace the VAE of a saved pipeline folder with the (decoder-fine-tuned) one in ``vae``."""
    shutil.rmtree(pipeline / "vae")
    shutil.copytree(vae, pipeline / "vae")


def publish(work: Path, weights: Path = WEIGHTS_DIR) -> None:
    """Copy the checkpoints under ``work`` to ``weights`` in fp16."""
    weights.mkdir(parents=True, exist_ok=True)
    for role in ("heavy", "light"):
        publish_pipeline(work / role, weights / role)
    save_judge(load_judge(work / "judge"), weights / "judge")
    save_discriminator(load_discriminator(work / "discriminator"), weights / "discriminator")


def _run(*args: str) -> None:
    cmd = [sys.executable, "-m", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _run_parallel(*commands: list[str]) -> None:
    """Run trainers side by side (heavy and light on one CPU thread each: these small models use a
    second thread poorly, so two 1-thread runs finish sooner than two 2-thread runs in a row)."""
    procs = []
    for args in commands:
        cmd = [sys.executable, "-m", *args]
        print("+", " ".join(cmd), "&", flush=True)
        procs.append(subprocess.Popen(cmd))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise subprocess.CalledProcessError(max(codes), commands[codes.index(max(codes))])


def main() -> None:
    """CLI entry point: train every stage in order, then publish."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("runs/tiny"))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", default="2")
    p.add_argument("--publish-only", action="store_true")
    a = p.parse_args()
    w = a.work
    common = ["--device", a.device, "--threads", a.threads]
    if not a.publish_only:
        _run("zoo.train_vae", "--out", str(w / "vae"), "--steps", str(STEPS["vae"]), *common)
        _run("zoo.train_judge", "--out", str(w / "judge"), "--steps", str(STEPS["judge"]), *common)
        parallel = pick_device(a.device).type == "cpu" and int(a.threads) >= 2
        diffusion = [["zoo.train_diffusion", "--role", role, "--vae", str(w / "vae"), "--out", str(w / role),
                      "--judge", str(w / "judge"), "--steps", str(STEPS[role]), "--device", a.device,
                      "--threads", "1" if parallel else a.threads] for role in ("heavy", "light")]
        if parallel:
            _run_parallel(*diffusion)
        else:
            for args in diffusion:
                _run(*args)
        _run("zoo.train_vae_decoder", "--vae", str(w / "vae"), "--out", str(w / "vae_decoder"), "--judge",
             str(w / "judge"), "--steps", str(STEPS["vae_decoder"]), *common)
        for role in ("heavy", "light"):
            swap_vae(w / role, w / "vae_decoder")
        _run("zoo.train_discriminator", "--heavy", str(w / "heavy"), "--light", str(w / "light"),
             "--out", str(w / "discriminator"), "--steps", str(STEPS["discriminator"]), *common)
    publish(w)
    _run("zoo.train_router", "--out", str(WEIGHTS_DIR / "router"))


if __name__ == "__main__":
    main()
