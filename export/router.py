"""Export the prompt router (``router:`` in the cascade config) into ``<repo>/router/``.

The router's artifact is its ``router.json`` (:mod:`serving.router`: numpy at serve time, no
ONNX needed). Export copies it next to a ``stage.json`` that ties it to the cascade config's
hash, checks that what will serve scores prompts exactly as the source does, swaps it in and
renders ``router/config.pbtxt``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from export import repository
from serving.config import PROJECT_ROOT, CascadeConfig, ConfigError

# Prompts of every length class the router may see at serve time (the check compares scores exactly).
CHECK_PROMPTS = ("a red circle", "two blue squares and a green triangle on a white background",
                 "a photo of an astronaut riding a horse, highly detailed, 4k", "x", "Ünïcode prompt, with punctuation!")


def router_folder(cascade: CascadeConfig) -> Path:
    if cascade.router is None:
        raise ConfigError(f"{cascade.source}: no router: in the cascade config")
    p = Path(cascade.router.path)
    folder = p if p.is_absolute() else PROJECT_ROOT / p
    if not (folder / "router.json").is_file():
        raise ConfigError(f"router.path {cascade.router.path!r}: no router.json in {folder} "
                          "(the tiny cascade's: `python -m zoo.train_router`)")
    return folder


def router_status(cascade: CascadeConfig, repo: str | Path) -> str:
    """``up-to-date``, ``missing`` or ``stale (...)`` for the exported router."""
    exported = repository.exported_hash(repo, "router")
    if exported is None or not (Path(repo) / "router" / "config.pbtxt").exists():
        return "missing"
    if exported != cascade.config_hash:
        return f"stale (exported from {exported})"
    now = repository.weights_fingerprint(router_folder(cascade))
    return "up-to-date" if now == repository.exported_field(repo, "router", "weights_fingerprint") else \
        "stale (weights changed since export)"


def export_router_stage(cascade: CascadeConfig, repo: str | Path, force: bool = False,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, verify and swap in the router; returns its verification dict."""
    from serving.router import load_router, load_router_stage  # noqa: PLC0415

    repo = Path(repo)
    final = repository.artifact_dir(repo, "router")
    status = router_status(cascade, repo)
    if status == "up-to-date" and not force:
        log(f"router: up to date (config hash {cascade.config_hash}); use --force to re-export")
        return json.loads((final / "verification.json").read_text())
    source = router_folder(cascade)
    tmp = repository.fresh_tmp(final)
    shutil.copy(source / "router.json", tmp / "router.json")
    repository.write_stage_json(tmp, {"stage": "router", "kind": "router", "cascade": cascade.name,
                                      "config_hash": cascade.config_hash, "source_model": cascade.router.path,
                                      "weights_fingerprint": repository.weights_fingerprint(source)})
    want = load_router(source).score(list(CHECK_PROMPTS))
    got = load_router_stage(tmp, expected_hash=cascade.config_hash).score(list(CHECK_PROMPTS))
    result = {"stage": "router", "model": cascade.router.path, "config_hash": cascade.config_hash,
              "prompts_checked": len(CHECK_PROMPTS), "max_abs_err": float(np.max(np.abs(got - want)))}
    (tmp / "verification.json").write_text(json.dumps(result, indent=2))
    if result["max_abs_err"] != 0.0:
        raise ValueError(f"router: the exported router scores differ from the source's by {result['max_abs_err']}")
    repository.swap_in(tmp, final)
    repository.write_config(repo, "router", cascade)
    log(f"router: exported {cascade.router.path} ({len(CHECK_PROMPTS)} prompts scored identically)")
    return result
