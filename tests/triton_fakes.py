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
        return {"config": copy.deepcopy(self.loaded[model])}

    def close(self):
        pass
