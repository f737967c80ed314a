"""Reproduce the embedded tiny cascade from seeds (``make zoo``) and publish fp16 weights.

Order: VAE -> judge (rendered images only) -> heavy (a chain of runs, :data:`HEAVY_PHASES`) and
light -> VAE decoder fine-tune (encoder
frozen; the new decoder replaces the pipelines' one) -> discriminator (needs both models' samples
through the final decoder) -> publish -> router (labels from the published light model and judge). Training runs on CUDA when available, else on the CPU (hours on 2 cores, minutes on a
GPU). Intermediate fp32 checkpoints go to ``--work`` (default ``runs/tiny``); the published
weights (fp16 safetensors) go to ``zoo/weights/{heavy,light,discriminator,judge}``.

Publish only (from existing checkpoints): ``python -m zoo.build --publish-only``.
"""
from __future__ import annotations

import argparse
import dataclasses
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
# Steps of each stage as used for the committed weights (see zoo/README.md); heavy: all its phases.


@dataclasses.dataclass(frozen=True)
class Phase:
    """One run of the heavy model's training chain: ``steps`` of ``zoo.train_diffusion`` with the
    experiment ``options``; every phase after the first starts from the previous one's weights
    (``--init-from``, fresh optimizer and EMA, the same seeded prompt stream restarted)."""

    name: str
    steps: int
    options: tuple[str, ...] = ()


_V = ("--prediction-type", "v_prediction", "--zero-terminal-snr")
_V_BI = (*_V, "--bidirectional-text")
# The path the relation experiments took (docs/zoo.md, "Relations"): an epsilon model that draws
# the objects; v-prediction over a zero-terminal-SNR schedule (the layout prior is trained at all);
# a bidirectional text encoder (A's words can see the relation after them); more relation prompts;
# then pair prompts at the pure-noise end (t >= 960, where the noise holds no layout, so only the
# relation word can place the objects: what taught the direction); then the usual prompt mix with
# 40 % of the timesteps still there, which brings the objects back.
HEAVY_PHASES: tuple[Phase, ...] = (
    Phase("epsilon", 11000),
    Phase("v", 4000, _V),
    Phase("bidirectional", 2500, _V_BI),
    Phase("pairs", 5250, (*_V_BI, "--hard-share", "0.9", "--hard-kinds", "pair=0.8,triple=0.1,twin=0.1")),
    Phase("directions", 1500, (*_V_BI, "--hard-share", "1.0", "--hard-kinds", "pair=1,triple=0,twin=0",
                               "--high-noise-share", "0.9", "--high-noise-min-t", "960")),
    Phase("mix", 5000, (*_V_BI, "--high-noise-share", "0.4", "--high-noise-min-t", "960")),
)
STEPS = {"vae": 700, "judge": 4000, "heavy": sum(p.steps for p in HEAVY_PHASES), "light": 9750,
         "vae_decoder": 2000, "discriminator": 1500}


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


def heavy_commands(work: Path, device: str, threads: str, phases: tuple[Phase, ...] = HEAVY_PHASES) -> list[list[str]]:
    """``zoo.train_diffusion`` argument lists of the heavy chain, in order: each phase writes
    ``work/heavy_<name>`` (the last one ``work/heavy``) and starts from the previous one's state."""
    commands, previous = [], None
    for i, phase in enumerate(phases):
        out = work / ("heavy" if i == len(phases) - 1 else f"heavy_{phase.name}")
        args = ["zoo.train_diffusion", "--role", "heavy", "--vae", str(work / "vae"), "--out", str(out),
                "--judge", str(work / "judge"), "--steps", str(phase.steps), "--device", device,
                "--threads", threads, *phase.options]
        if previous is not None:
            args += ["--init-from", str(previous.parent / f"{previous.name}_state.pt")]
        commands.append(args)
        previous = out
    return commands


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
        heavy = heavy_commands(w, a.device, a.threads)
        first = heavy_commands(w, a.device, "1" if parallel else a.threads)[0]
        light = ["zoo.train_diffusion", "--role", "light", "--vae", str(w / "vae"), "--out", str(w / "light"),
                 "--judge", str(w / "judge"), "--steps", str(STEPS["light"]), "--device", a.device,
                 "--threads", "1" if parallel else a.threads]
        if parallel:  # the epsilon phase beside light, one core each; the later phases on every core
            _run_parallel(first, light)
        else:
            _run(*first)
            _run(*light)
        for args in heavy[1:]:
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
