"""Test doubles of the stage models (light, heavy, discriminator) for the cascade BLS tests.

Deterministic and fast, with the stage models' I/O contract (docs/interfaces.md 2b):
* light / heavy: PROMPT BYTES [1], SEED INT64 [1] -> IMAGE UINT8 [16, 16, 3]. The image is a
  function of (stage, prompt, seed): light draws bright pixels unless the prompt contains
  "hard" (dark), heavy draws mid-grey with a blue channel of 255 (so tests can tell them apart).
  A prompt containing "[fail:<stage>]" makes that stage answer the whole call with an error,
  one containing "[hang:<stage>]" makes it sleep ``hang_ms`` (config parameter, default 3000) first.
  They execute in chunks of the control file's batch_size (like the real stages) and append
  each executed chunk size to ``chunks_file`` so tests can check the batch size in force.
* discriminator: IMAGE -> CONFIDENCE FP32 [1] = mean pixel / 255 (easy ~0.8, hard ~0.2).
``delay_ms`` (config parameter) sleeps per chunk to make stage latencies observable.
"""
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.environ["PROJECT_ROOT"])
from serving.control import ControlFile, chunk_sizes  # noqa: E402

SIZE = 16


def draw(stage: str, prompt: str, seed: int) -> np.ndarray:
    """The deterministic image of (stage, prompt, seed), uint8 (16, 16, 3)."""
    rng = np.random.default_rng([zlib.crc32(prompt.encode()), seed, 1 if stage == "heavy" else 0])
    noise = rng.integers(0, 16, size=(SIZE, SIZE, 3))
    if stage == "heavy":
        img = 120 + noise
        img[..., 2] = 255
    else:
        img = (30 if "hard" in prompt else 200) + noise
    return img.astype(np.uint8)


class StandIn:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.stage = params["stage"]
        self.delay_s = float(params.get("delay_ms", "0")) / 1000.0
        self.hang_s = float(params.get("hang_ms", "3000")) / 1000.0
        self.control = ControlFile(params["control_file"]) if params.get("control_file") else None
        self.chunks_file = Path(params["chunks_file"]) if params.get("chunks_file") else None

    def _chunks(self, n):
        size = self.control.get().batch_size_for(self.stage) if self.control else n
        sizes = chunk_sizes(n, size)
        if self.chunks_file:
            with open(self.chunks_file, "a") as f:
                f.write(json.dumps({"stage": self.stage, "chunks": sizes}) + "\n")
        return sizes

    def execute(self, requests):
        responses = []
        for request in requests:
            if self.stage == "discriminator":
                images = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                for _ in self._chunks(len(images)):
                    time.sleep(self.delay_s)
                conf = images.reshape(len(images), -1).mean(axis=1, dtype=np.float64) / 255.0
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("CONFIDENCE", conf.astype(np.float32).reshape(-1, 1))]))
                continue
            prompts = [p.decode() for p in pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy().reshape(-1)]
            seeds = pb_utils.get_input_tensor_by_name(request, "SEED").as_numpy().reshape(-1)
            if any(f"[fail:{self.stage}]" in p for p in prompts):
                responses.append(pb_utils.InferenceResponse([], error=pb_utils.TritonError(f"{self.stage} stand-in: injected failure")))
                continue
            if any(f"[hang:{self.stage}]" in p for p in prompts):
                time.sleep(self.hang_s)
            for _ in self._chunks(len(prompts)):
                time.sleep(self.delay_s)
            images = np.stack([draw(self.stage, p, int(s)) for p, s in zip(prompts, seeds)])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("IMAGE", images)]))
        return responses
