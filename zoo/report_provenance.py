"""What a ``report.json`` was made from (``zoo.report``): prompt sets, weight hashes, sampling,
code version; and the light-only image cache of the selection prompts."""
from __future__ import annotations

import dataclasses
import hashlib
import platform
import subprocess
import time
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from zoo.sampling import SAMPLING, generate, weights_key

ROLES = ("heavy", "light", "judge", "discriminator", "router")


def folder_sha256(folder: Path) -> str | None:
    """sha256 over the relative names and bytes of a weight folder's .safetensors and .json files
    (the files :func:`zoo.sampling.weights_key` hashes); None when the folder is missing."""
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def git_commit(repo: Path | None = None) -> dict:
    """HEAD's commit of ``repo`` (default: this checkout) and whether the work tree differs from it;
    None values outside a git checkout."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip() != ""
        return {"commit": head, "uncommitted_changes": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "uncommitted_changes": None}


def provenance(weights: Path, prompt_sets: dict, argv: Sequence[str], n_boot: int) -> dict:
    """Prompt sets, weight folder hashes, sampling configs, git commit, command and environment."""
    import torch  # noqa: PLC0415

    return {"prompt_sets": prompt_sets, "weights": str(weights),
            "weights_sha256": {role: folder_sha256(Path(weights) / role) for role in ROLES},
            "sampling": {k: dataclasses.asdict(v) for k, v in SAMPLING.items()}, "bootstrap_resamples": n_boot,
            "git": git_commit(), "command": " ".join(argv), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def cached_light_images(pipe, prompts: Sequence[str], seeds: Sequence[int], weights: Path,
                        cache: Path | None) -> np.ndarray:
    """Light images of ``prompts``, read from / written to the npz ``cache`` when it was made from the
    same weight files, prompts and seeds (the key of :func:`zoo.sampling.cached_images`)."""
    key = weights_key(Path(weights), prompts, seeds)
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return z["light"]
    light = generate(pipe, prompts, seeds, SAMPLING["light"], progress=True)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, light=light, key=key)
    return light
