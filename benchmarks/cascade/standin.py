"""Stand-in stage model of FIXED latency per batch, for ``make bench-cascade`` (not a test double
of the outputs' quality: only of the stages' timing and I/O contract).

Each ``execute`` gets the batch Triton's dynamic batcher gathered (several BLS requests); it
sleeps ``delay_ms`` once per chunk of the control file's batch size over ALL of the batch's
queries (like the real stage models, which run the concatenated queries in control-file-sized
chunks), then answers every request:

* light / heavy: PROMPT, SEED -> IMAGE UINT8 [8, 8, 3]: bright unless the prompt contains
  "hard" (dark), heavy's blue channel 255;
* discriminator: IMAGE -> CONFIDENCE = mean pixel / 255 (easy ~0.8: served by light; hard ~0.1:
  deferred at the threshold 0.5).
"""
import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.environ["PROJECT_ROOT"])
from serving.control import ControlFile, chunk_sizes  # noqa: E402

SIZE = 8


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.stage = params["stage"]
        self.delay_s = float(params["delay_ms"]) / 1000.0
        self.control = ControlFile(params["control_file"])

    def _image(self, prompt: str) -> np.ndarray:
        img = np.full((SIZE, SIZE, 3), 25 if "hard" in prompt else 200, np.uint8)
        if self.stage == "heavy":
            img[..., 2] = 255
        return img

    def execute(self, requests):
        if self.stage == "discriminator":
            inputs = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
        else:
            inputs = [[p.decode() for p in pb_utils.get_input_tensor_by_name(r, "PROMPT").as_numpy().reshape(-1)]
                      for r in requests]
        for _ in chunk_sizes(sum(len(x) for x in inputs), self.control.get().batch_size_for(self.stage)):
            time.sleep(self.delay_s)
        if self.stage == "discriminator":
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "CONFIDENCE", (x.reshape(len(x), -1).mean(axis=1) / 255.0).astype(np.float32).reshape(-1, 1))])
                for x in inputs]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("IMAGE", np.stack([self._image(p) for p in x]))])
                for x in inputs]
