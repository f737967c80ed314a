"""Bad requests to the cascade get INVALID_ARGUMENT with a clear message; the server stays healthy."""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client import CascadeClient
from serving.validation import PROMPT_MAX_BYTES
from client.errors import InvalidRequest, triton_errors

pytestmark = pytest.mark.triton


@pytest.fixture
def grpc(cascade_stack):
    c = cascade_stack[0].grpc_client()
    yield c
    # every test ends with the server healthy and a good request served
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("cascade")
    with CascadeClient(cascade_stack[0].grpc_url, timeout_s=60) as client:
        assert client.generate("an easy red circle").served_by == "light"
    c.close()


def prompt_input(values, dtype="BYTES", shape=None) -> grpcclient.InferInput:
    arr = np.asarray(values, dtype=object if dtype == "BYTES" else None)
    arr = arr.reshape(shape if shape is not None else (-1, 1))
    inp = grpcclient.InferInput("PROMPT", list(arr.shape), dtype)
    inp.set_data_from_numpy(arr.astype(np.object_) if dtype == "BYTES" else arr)
    return inp


def seed_input(values, dtype="INT64") -> grpcclient.InferInput:
    arr = np.asarray(values).reshape(-1, 1).astype({"INT64": np.int64, "FP32": np.float32}[dtype])
    inp = grpcclient.InferInput("SEED", list(arr.shape), dtype)
    inp.set_data_from_numpy(arr)
    return inp


def rejected(client, inputs, parameters=None) -> str:
    """Send; assert gRPC INVALID_ARGUMENT (and the project's InvalidRequest); return the message."""
    with pytest.raises(InferenceServerException) as err:
        client.infer("cascade", inputs, parameters=parameters)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value
    with pytest.raises(InvalidRequest):
        with triton_errors("infer", model="cascade"):
            client.infer("cascade", inputs, parameters=parameters)
    return err.value.message()


@pytest.mark.parametrize("prompt", [b"", b"   "])
def test_empty_prompt_is_rejected(grpc, prompt):
    msg = rejected(grpc, [prompt_input([prompt])])
    assert "PROMPT[0] has no printable character" in msg and "printable non-space" in msg


@pytest.mark.parametrize("prompt", [b"\x00", b"\x00" * 16, b"\x01\x02\x03", b"a red circle\x00"])
def test_prompts_of_nul_or_control_characters_are_rejected(grpc, prompt):
    msg = rejected(grpc, [prompt_input([prompt])])
    assert "PROMPT[0] contains the control character U+" in msg


def test_prompt_over_the_byte_limit_is_rejected_naming_its_length(grpc):
    msg = rejected(grpc, [prompt_input([b"a" * (PROMPT_MAX_BYTES + 1)])])
    assert f"{PROMPT_MAX_BYTES + 1} bytes" in msg and f"at most {PROMPT_MAX_BYTES}" in msg


def test_long_prompt_within_the_byte_limit_is_accepted(grpc):
    # ~1900 bytes: far past the text encoder's 77-token context; the stage truncates it.
    long_prompt = ("an easy red circle above a blue square " * 48)[:PROMPT_MAX_BYTES - 10]
    out = grpc.infer("cascade", [prompt_input([long_prompt.encode()])])
    assert out.as_numpy("IMAGE").shape[0] == 1


def test_non_utf8_prompt_is_rejected_naming_the_byte(grpc):
    msg = rejected(grpc, [prompt_input([b"caf\xe9 au lait"])])
    assert "not valid UTF-8" in msg and "0xe9" in msg and "offset 3" in msg


def test_prompt_with_wrong_dtype_is_rejected(grpc):
    msg = rejected(grpc, [prompt_input(np.array([[1.0]], np.float32), dtype="FP32")])
    assert "PROMPT" in msg and ("FP32" in msg or "data-type" in msg or "datatype" in msg.lower())


def test_prompt_with_wrong_shape_is_rejected(grpc):
    msg = rejected(grpc, [prompt_input([b"a", b"b"], shape=(1, 2))])
    assert "PROMPT" in msg and "shape" in msg.lower()


def test_seed_with_wrong_dtype_is_rejected(grpc):
    msg = rejected(grpc, [prompt_input([b"a red circle"]), seed_input([1.5], "FP32")])
    assert "SEED" in msg


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_range_is_rejected(grpc, seed):
    msg = rejected(grpc, [prompt_input([b"a red circle"]), seed_input([seed])])
    assert f"SEED[0]={seed}" in msg and "[0, 4294967295]" in msg


def test_batch_above_the_maximum_is_rejected(grpc):
    msg = rejected(grpc, [prompt_input([b"a red circle"] * 33)])
    assert "batch-size must be <= 32" in msg  # Triton core checks max_batch_size before the model


def test_missing_prompt_is_rejected(grpc):
    msg = rejected(grpc, [seed_input([1])])
    assert "PROMPT" in msg


@pytest.mark.parametrize("params, words", [
    ({"temperature": 1}, ["unknown request parameters", "temperature", "routing", "slo_ms"]),
    ({"routing": "fastest"}, ["routing='fastest'", "cascade", "light", "heavy"]),
    ({"slo_ms": -3}, ["slo_ms=-3", "positive"]),
    ({"slo_ms": "soon"}, ["slo_ms='soon'", "positive"]),
])
def test_unknown_or_invalid_parameters_are_rejected(grpc, params, words):
    msg = rejected(grpc, [prompt_input([b"a red circle"])], parameters=params)
    for w in words:
        assert w in msg


def test_one_bad_request_in_a_batch_does_not_fail_the_others(cascade_stack, grpc):
    import queue  # noqa: PLC0415

    done: queue.Queue = queue.Queue()
    prompts = [b"an easy red circle", b"\xff\xfe", b"an easy blue square", b""]
    for k, p in enumerate(prompts):
        grpc.async_infer("cascade", [prompt_input([p])], callback=lambda result, error, k=k: done.put((k, result, error)))
    got = dict((k, (r, e)) for k, r, e in (done.get(timeout=60) for _ in prompts))
    assert got[0][1] is None and got[2][1] is None
    assert got[1][1].status() == "StatusCode.INVALID_ARGUMENT" and got[3][1].status() == "StatusCode.INVALID_ARGUMENT"
