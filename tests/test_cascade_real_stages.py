"""The cascade over REAL exported stages (tiny random SD pipelines -> ONNX -> stage models).

The images and confidences that come back through Triton equal what ``serving`` gives
in-process for the same prompt and seed, on both branches.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from client import CascadeClient
from serving import load_discriminator, load_stage
from serving.control import write_control

pytestmark = [pytest.mark.triton, pytest.mark.slow]

PROMPTS = ["a red circle above a blue square", "two green triangles"]


@pytest.fixture(scope="module")
def in_process(real_cascade_stack):
    repo = real_cascade_stack[2]
    art = {m: repo / m / "1" / "artifacts" for m in ("light", "heavy", "discriminator")}
    return load_stage(art["light"]), load_stage(art["heavy"]), load_discriminator(art["discriminator"])


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """uint8 images equal up to float rounding differences (ORT thread counts may differ)."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.1, (diff.max(), diff.mean())


@pytest.mark.parametrize("threshold, branch", [(0.0, "light"), (1.0, "heavy")])
def test_both_branches_match_the_in_process_pipeline(real_cascade_stack, in_process, threshold, branch):
    server, control, _ = real_cascade_stack
    light, heavy, disc = in_process
    write_control(control, {"threshold": threshold})
    time.sleep(0.25)  # past the models' 100 ms control-file check interval
    try:
        with CascadeClient(server.grpc_url, timeout_s=120) as client:
            results = client.generate_batch(PROMPTS, seeds=[11, 12])
    finally:
        control.unlink()
    light_imgs = light.generate(PROMPTS, [11, 12])
    conf = disc.confidence(light_imgs)
    assert np.all(conf < 1.0)  # so threshold 1.0 defers every query
    expected = light_imgs if branch == "light" else heavy.generate(PROMPTS, [11, 12])
    for k, res in enumerate(results):
        assert res.served_by == branch
        assert res.threshold == threshold
        assert res.confidence == pytest.approx(float(conf[k]), abs=1e-3)
        _close(res.image, expected[k])
