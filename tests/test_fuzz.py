"""Seeded fuzz suite: hostile requests over gRPC and HTTP to the cascade and the REAL stage models.

Cases come from :mod:`tests.fuzz_cases` (seed ``DIFFSERVE_FUZZ_SEED``, default 15; count
``DIFFSERVE_FUZZ_REQUESTS``, default 1200), sent raw by :mod:`tests.fuzz_wire`, 8 at a time so that
Triton's dynamic batcher mixes good and bad requests in one ``execute``. The few cases with a
truncated BYTES element go one at a time afterwards: in Triton 2.51 such a request fails every
request batched with it, which no model code can prevent (pinned by the xfail test below). Every answer must be an
error with a message, or a valid result (images [n, H, W, 3] UINT8; confidences [n, 1] in [0, 1]);
a request the rules of :mod:`serving.validation` accept must be served (the cascade may shed it),
one they refuse must get INVALID_ARGUMENT (HTTP 400). Afterwards the server is ready, every
Python stub is the same process as before (Triton 2.51 does not restart a dead stub; a reload
would replace it: a new pid shows either), the log has no unhealthy stub, and normal requests work.
"""
from __future__ import annotations

import collections
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2_grpc

from client import CascadeClient
from client.errors import DROP_MARKER, TRITON_SHED_MESSAGES
from tests.conftest import ASSETS, CASCADE_MODELS
from tests.fuzz_cases import Case, WireInput, bytes_payload, generate, poisons_batch
from tests.fuzz_wire import Answer, send_grpc, send_http
from tests.triton_procs import running_stub_pids

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SEED = int(os.environ.get("DIFFSERVE_FUZZ_SEED", "15"))
REQUESTS = int(os.environ.get("DIFFSERVE_FUZZ_REQUESTS", "1200"))
ANSWER_TIMEOUT_S = 120.0
REFUSED = ("INVALID_ARGUMENT", "400")
SHED = ("UNAVAILABLE", "503")


def is_shed(answer: Answer) -> bool:
    return answer.status in SHED and (DROP_MARKER in answer.message or
                                      any(m in answer.message.lower() for m in TRITON_SHED_MESSAGES))


def problem(case: Case, answer: Answer, size_px: int) -> str | None:
    """What is wrong with ``answer`` to ``case`` (None: nothing)."""
    if not answer.answered:
        return f"no answer: {answer.message}"
    if not answer.ok:
        if not answer.message.strip():
            return f"error {answer.status} without a message"
        if answer.status in SHED and not (case.model == "cascade" and is_shed(answer)):
            return f"UNAVAILABLE that is not the cascade shedding (a dead stub or server?): {answer.message}"
        if case.oracle == "ok" and not is_shed(answer):
            return f"refused a request the validation rules accept: {answer.status} {answer.message}"
        if case.oracle == "refused" and answer.status not in REFUSED:
            return f"refused with {answer.status}, expected INVALID_ARGUMENT: {answer.message}"
        return None
    if case.oracle == "refused":
        return "served a request the validation rules refuse"
    if case.model == "discriminator":
        conf = answer.outputs.get("CONFIDENCE")
        if conf is None or conf.dtype != np.float32 or conf.shape != (case.batch, 1):
            return f"CONFIDENCE is {None if conf is None else (conf.dtype, conf.shape)}; expected FP32 [{case.batch}, 1]"
        if not np.all(np.isfinite(conf) & (conf >= 0) & (conf <= 1)):
            return f"CONFIDENCE outside [0, 1]: {conf.ravel()[:8]}"
        return None
    image = answer.outputs.get("IMAGE")
    want = (case.batch, size_px, size_px, 3)
    if image is None or image.dtype != np.uint8 or image.shape != want:
        return f"IMAGE is {None if image is None else (image.dtype, image.shape)}; expected UINT8 {list(want)}"
    return None


def outcome(case: Case, answer: Answer) -> str:
    if answer.ok:
        return "served"
    if is_shed(answer):
        return "shed"
    # The project's models prefix their refusals with their name; Triton's own checks do not.
    return "refused by model" if answer.message.startswith(f"{case.model}: ") else "refused by Triton"


@pytest.fixture(scope="module")
def fuzz_target(real_cascade_stack):
    server, _, _ = real_cascade_stack
    client = server.grpc_client()
    configs = {m: client.get_model_config(m, as_json=True)["config"] for m in CASCADE_MODELS}
    client.close()
    max_batch = {m: int(c["max_batch_size"]) for m, c in configs.items()}
    size_px = int(next(o for o in configs["light"]["output"] if o["name"] == "IMAGE")["dims"][0])
    return server, max_batch, size_px


def test_hostile_requests_get_an_error_or_a_valid_result_and_the_server_survives(fuzz_target):
    server, max_batch, size_px = fuzz_target
    cases = generate(SEED, REQUESTS, max_batch, size_px)
    stubs_before = running_stub_pids(server.process.pid)
    assert len(stubs_before) >= len(CASCADE_MODELS)
    channel = grpc.insecure_channel(server.grpc_url, options=[("grpc.max_send_message_length", -1),
                                                               ("grpc.max_receive_message_length", -1)])
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def send(case: Case) -> Answer:
        if case.protocol == "grpc":
            return send_grpc(stub, case, ANSWER_TIMEOUT_S)
        return send_http(server.http_url, case, ANSWER_TIMEOUT_S)

    t0 = time.perf_counter()
    batchable = [c for c in cases if not poisons_batch(c)]
    alone = [c for c in cases if poisons_batch(c)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answer_of = dict(zip((c.index for c in batchable), pool.map(send, batchable)))
    answer_of.update((c.index, send(c)) for c in alone)  # one at a time: see the module docstring
    answers = [answer_of[c.index] for c in cases]
    wall_s = time.perf_counter() - t0
    channel.close()

    problems = [f"{c.describe()}: {p}" for c, a in zip(cases, answers) if (p := problem(c, a, size_px))]
    tally = collections.Counter((c.model, c.protocol, outcome(c, a)) for c, a in zip(cases, answers))
    print(f"\nfuzz seed {SEED}: {len(cases)} requests ({len(alone)} sent alone) in {wall_s:.1f} s")
    for key in sorted(tally):
        print(f"  {key[0]:<14} {key[1]:<5} {key[2]:<17} {tally[key]}")
    assert not problems, f"{len(problems)} bad answers, first ones:\n" + "\n".join(problems[:10])

    # The suite reaches every model's own code over both protocols, and some requests succeed.
    for model in CASCADE_MODELS:
        for protocol in ("grpc", "http"):
            assert tally[(model, protocol, "refused by model")] >= 3, (model, protocol, tally)
        assert sum(tally[(model, p, "served")] for p in ("grpc", "http")) >= 3, (model, tally)

    # The server survived: ready, the same stub processes, no unhealthy stub, normal requests work.
    assert server.process.poll() is None
    client = server.grpc_client()
    try:
        assert client.is_server_ready() and all(client.is_model_ready(m) for m in CASCADE_MODELS)
    finally:
        client.close()
    assert running_stub_pids(server.process.pid) == stubs_before
    assert "is not healthy" not in server.log_path.read_text(errors="replace")
    with CascadeClient(server.grpc_url, timeout_s=120) as cascade:
        result = cascade.generate("a red circle above a blue square", seed=3)
    assert result.image.shape == (size_px, size_px, 3) and result.served_by in ("light", "heavy")


@pytest.mark.xfail(strict=True, reason="Triton 2.51: the Python backend fails every request of a batch when one "
                   "request has a truncated BYTES element (its core checks only the 4-byte lengths)")
def test_a_truncated_bytes_request_fails_only_itself(triton_server_factory, tmp_path):
    # A stand-in light stage that gathers for 1 s, so the 8 requests below are one batch for sure.
    repo = tmp_path / "repo"
    shutil.copytree(ASSETS / "cascade_repository" / "light", repo / "light")
    shutil.copy(ASSETS / "cascade_repository" / "standin.py", repo / "standin.py")
    cfg = repo / "light" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_queue_delay_microseconds: 1000", "max_queue_delay_microseconds: 1000000"))
    server = triton_server_factory(repo, load_models=("light",))
    good = bytes_payload([b"a red circle"])
    seed = WireInput("SEED", "INT64", (1, 1), np.zeros((1, 1), np.int64).tobytes())  # the stand-in needs one
    cases = [Case(k, "wire", "light", "grpc", (WireInput("PROMPT", "BYTES", (1, 1), good[:6] if k == 0 else good), seed),
                  (), 1, None) for k in range(8)]
    assert poisons_batch(cases[0]) and not poisons_batch(cases[1])
    channel = grpc.insecure_channel(server.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda c: send_grpc(stub, c, 60.0), cases))
    channel.close()
    assert not answers[0].ok and "incomplete string data" in answers[0].message
    assert [a.ok for a in answers[1:]] == [True] * 7, [a.message for a in answers[1:]]
