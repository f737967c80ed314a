"""Adoption: read what a running Triton serves (repository index, model configs, the control
file's location) without changing it, so a restarted orchestrator keeps the running plan."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from client.errors import DiffServeError
from orchestrator.apply import Cluster
from orchestrator.node import TritonNode
from orchestrator.placement import Placement, slots_from_instance_group
from serving.control import default_control_path, resolve_control_path
from serving.model_config import config_parameters


def ensure_loaded(node: TritonNode, always_up: tuple[str | None, ...], index: dict[str, str] | None = None) -> None:
    """Load the models that must always be up (cascade, discriminator) from the repository if
    they are not (a name that is None or not in the repository is skipped)."""
    index = node.repository_index() if index is None else index
    for m in always_up:
        if m and index.get(m) != "READY" and m in index:
            node.load_default(m)


def adopt_node(cluster: Cluster, node: TritonNode, always_up: tuple[str | None, ...]) -> dict[str, Any]:
    """Take ``node``'s running stage instances as its placement; returns the index and placement."""
    index = node.repository_index()
    taken: set[int] = set()
    slots: dict[str, tuple[int, ...]] = {}
    for m in cluster.models:
        if index.get(m) == "READY":
            cfg = node.model_config(m)
            slots[m] = slots_from_instance_group(node.spec.kind, cfg.get("instance_group", []), taken, node.spec.slots)
            taken.update(slots[m])
    cluster.placement[node.url] = Placement(slots)
    ensure_loaded(node, always_up, index)
    return {"index": index, "placement": cluster.placement[node.url].as_json()}


def control_path_from_config(cluster: Cluster, cascade: str) -> Path:
    """Where the serving models read the control file, resolved like they do: the cascade's
    ``control_file`` parameter, else the light stage's, else ``runs/control/<its cascade>.json``."""
    light_model = cluster.models[0]
    for node in cluster.nodes:
        if node.url in cluster.down:
            continue
        try:
            params = config_parameters(node.model_config(cascade))
            if params.get("control_file"):
                return resolve_control_path(params["control_file"])
            if not node.is_ready(light_model):
                node.load_default(light_model)  # its config names the control file
            light = config_parameters(node.model_config(light_model))
        except DiffServeError:
            continue
        if light.get("control_file"):
            return resolve_control_path(light["control_file"])
        return default_control_path(light.get("cascade") or "tiny")
    raise ValueError(f"no node answered for model {cascade!r}; pass control_path")


def served_cascade_check(cluster: Cluster, planned_hash: str | None) -> dict[str, Any]:
    """Compare the cascade config the orchestrator plans for with the one the served light model
    was exported from (its ``config_hash`` parameter): planning an SDXL cascade with the tiny
    cascade's SLO and profiles would be wrong without any error. Returns log fields; empty when
    there is nothing to compare (no hash given, light not loaded, or a model without the parameter)."""
    if not planned_hash:
        return {}
    for node in cluster.nodes:
        if node.url in cluster.down:
            continue
        try:
            if not node.is_ready(cluster.models[0]):
                continue
            served = config_parameters(node.model_config(cluster.models[0])).get("config_hash")
        except DiffServeError:
            continue
        if not served:
            return {}
        if served != planned_hash:
            return {"warning": f"{cluster.models[0]} on {node.url} was exported from a cascade config with hash "
                               f"{served}; planning with hash {planned_hash}: pass the exported YAML as --cascade"}
        return {"served_config_hash": served}
    return {}
