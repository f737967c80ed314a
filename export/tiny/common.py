"""Shared helpers of the tiny-cascade training code: device, seeding, tensors, small-module folders."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


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


def save_module_folder(module: torch.nn.Module, config: dict, path: str | Path) -> None:
    """Write ``config.json`` (with ``_class_name``) and fp16 ``model.safetensors`` under ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"_class_name": type(module).__name__, **config}, indent=2) + "\n")


def read_module_folder(path: str | Path, class_name: str) -> tuple[dict, dict]:
    """(config without ``_class_name``, fp32 state dict) of a folder written by :func:`save_module_folder`.

    Raises FileNotFoundError / ValueError naming the path when the folder is missing or of another class.
    """
    path = Path(path)
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: expected a folder with config.json and model.safetensors")
    config = json.loads(cfg_file.read_text())
    found = config.pop("_class_name", None)
    if found != class_name:
        raise ValueError(f"{cfg_file} has _class_name {found!r}, expected {class_name!r}")
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    return config, state


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched=None) -> None:
    """One plain training step shared by the VAE, judge and discriminator trainers:
    clear grads, backpropagate ``loss``, step the optimizer, then the LR schedule (if any)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
