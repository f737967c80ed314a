"""Shared helpers of the tiny-cascade training code: device, seeding, tensors, optimizer step.

Small-module folders (``config.json`` + ``model.safetensors``) are :mod:`export.module_folder`'s.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``cuda`` when available (or requested), else ``cpu``; ``requested`` is auto/cpu/cuda."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(requested)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; returns a numpy Generator for the data stream."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def to_tensor01(images_uint8_nhwc: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 NCHW in [0, 1]; raises ValueError on another shape or dtype."""
    arr = np.asarray(images_uint8_nhwc)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (B, H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched=None) -> None:
    """One plain training step shared by the VAE, judge and discriminator trainers:
    clear grads, backpropagate ``loss``, step the optimizer, then the LR schedule (if any)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()


def training_args(description: str, config_cls, argv=None, extra=None) -> argparse.Namespace:
    """The trainers' common command line: ``--out`` (required), ``--steps`` and ``--seed`` (defaults from
    ``config_cls``), ``--device`` and ``--threads`` (applied to torch here). ``extra(parser)`` adds more."""
    import torch  # noqa: PLC0415

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=config_cls.steps)
    p.add_argument("--seed", type=int, default=config_cls.seed)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    if extra is not None:
        extra(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    return a
