"""``router``: PROMPT BYTES [1] -> SCORE FP32 [1] = P(the light model fails on this prompt).

The cascade calls it before any image is made and sends prompts whose score >= the control
state's ``router_threshold`` straight to heavy. It validates requests exactly like every other
model (:mod:`serving.validation`) and takes no request parameters.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from serving.triton.stage_model import _Base
from serving.validation import BadRequest, decode_prompts


class RouterModel(_Base):
    """Triton Python-backend model of the prompt router (see the module docstring)."""

    def initialize(self, args: dict[str, str]) -> None:
        from serving.router import load_router_stage  # noqa: PLC0415

        cfg, _, art, expected = self._setup(args)
        self.stage = "router"
        outs = {o["name"]: o for o in cfg.get("output", [])}
        if outs.get("SCORE", {}).get("data_type") != "TYPE_FP32":
            raise ValueError(f"{self.name}: output SCORE TYPE_FP32 [1] missing; outputs are {sorted(outs)}")
        self.router = load_router_stage(art, expected_hash=expected)

    def _parse(self, request) -> list[str]:
        t = self.pb.get_input_tensor_by_name(request, "PROMPT")
        if t is None:
            raise BadRequest("input PROMPT is missing; expected BYTES [batch, 1]")
        return decode_prompts(t.as_numpy())

    def _run(self, chunk: Sequence[str]) -> np.ndarray:
        return self.router.score(list(chunk))

    def execute(self, requests):
        return self._serve(requests, self._parse, self._run, "SCORE", lambda x: x.reshape(-1, 1).astype(np.float32))
