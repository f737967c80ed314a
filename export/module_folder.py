"""Small-module folders: ``config.json`` (with ``_class_name``) + fp16 ``model.safetensors``.

The format of the discriminator folders that export loads (and of the tiny zoo's judge).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


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
