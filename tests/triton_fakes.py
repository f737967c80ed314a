"""Fakes of the tritonclient calls orchestrator.node.TritonNode makes (unit tests of pure logic)."""
from __future__ import annotations

import copy
import json

from orchestrator.node import repository_config


class FakeTriton:
    """The tritonclient calls TritonNode makes; records every load, and a load without a config reads the repository's."""

    def __init__(self, repo):
        self.repo, self.loaded, self.loads = repo, {}, []

    def load_model(self, model, config=None, headers=None):
        cfg = json.loads(config) if config else repository_config(self.repo, model)
        self.loads.append((model, copy.deepcopy(cfg)))
        self.loaded[model] = cfg

    def is_model_ready(self, model):
        return model in self.loaded

    def get_model_config(self, model, as_json=True, headers=None):
        if model not in self.loaded:
            raise RuntimeError(f"{model} is not loaded")
        return {"config": copy.deepcopy(self.loaded[model])}

    def close(self):
        pass


def stage_config(name: str, kind: str = "KIND_CPU", max_batch_size: int = 32, image_px: int = 8,
                 dynamic_batching: bool = False, parameters: dict[str, str] | None = None) -> str:
    """A Python-backend stage's ``config.pbtxt`` (PROMPT in, IMAGE out), for tests of how configs are
    loaded and rewritten; ``parameters`` default to ``{"stage": name}``."""
    params = parameters if parameters is not None else {"stage": name}
    entries = ",\n             ".join(f'{{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    batching = "dynamic_batching { max_queue_delay_microseconds: 2000 }\n" if dynamic_batching else ""
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
            'input [ { name: "PROMPT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
            f'output [ {{ name: "IMAGE" data_type: TYPE_UINT8 dims: [ {image_px}, {image_px}, 3 ] }} ]\n'
            f"{batching}instance_group [ {{ kind: {kind} count: 1 }} ]\nparameters [ {entries} ]\n")
