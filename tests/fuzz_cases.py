"""Seeded generator of hostile inference requests for the fuzz suite (tests/test_fuzz.py).

A :class:`Case` is one request as it goes on the wire: model, protocol, inputs (name, datatype,
shape, raw payload bytes), request parameters, and what the rules of :mod:`serving.validation`
say must happen to it (``oracle``: "ok", "refused", or None when the rules say nothing, e.g. a
datatype Triton itself refuses). Four kinds of request, drawn with fixed weights:

- ``prompt``: PROMPT BYTES [n, 1] (+ SEED INT64 sometimes, with a wrong count sometimes): clean
  text, or byte strings with invalid UTF-8, control characters, NULs, nothing printable, too
  many bytes; batch sizes 0 to 64; parameter maps with random keys and value types.
- ``image``: the discriminator's IMAGE UINT8 [n, H, W, 3] with random pixels, right or wrong H, W.
- ``typed``: the model's input names with random datatypes, ranks and shapes (payload sized to
  the shape, or not).
- ``wire``: broken structure: a missing, unknown or duplicated input, a truncated BYTES length
  prefix, no inputs at all, an unknown version.
"""
from __future__ import annotations

import dataclasses
import math
import random
import struct
from typing import Any

import numpy as np

from serving import validation

DTYPES = {  # Triton datatype -> numpy dtype of one element (BYTES: variable, BF16: 2 bytes)
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64, "BF16": np.uint16, "BYTES": None,
}
JUNK_DTYPES = ("", "STRING", "INT128", "fp32", "TYPE_STRING", "BYTES\x00")
# Parameter keys Triton interprets itself (scheduling, sequences, HTTP output format): the
# validation rules do not see them, so a case that sends one has no oracle.
TRITON_KEYS = ("priority", "timeout", "sequence_id", "sequence_start", "sequence_end", "binary_data_output",
               "headers", "triton_enable_empty_final_response")
WORDS = ("a", "red", "circle", "blue", "square", "two", "green", "triangles", "above", "the", "cat")
MAX_PAYLOAD_BYTES = 1 << 20  # typed cases: shapes whose payload would exceed this are sent empty


@dataclasses.dataclass(frozen=True)
class WireInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    payload: bytes  # raw little-endian elements; BYTES: 4-byte length + bytes per element
    values: Any = None  # the elements (HTTP JSON mode sends these instead of the payload)


@dataclasses.dataclass(frozen=True)
class Case:
    index: int
    kind: str
    model: str
    protocol: str  # "grpc" or "http"
    inputs: tuple[WireInput, ...]
    parameters: tuple[tuple[str, Any], ...]
    batch: int  # first dimension of the main input (the number of images a success must carry)
    oracle: str | None  # "ok", "refused", or None (no rule applies)
    version: str = ""
    http_json: bool = False  # HTTP: send the elements as JSON "data" instead of binary

    def describe(self) -> str:
        ins = ", ".join(f"{i.name}:{i.datatype}{list(i.shape)}" for i in self.inputs)
        return (f"case {self.index} [{self.kind}] {self.protocol} {self.model} v{self.version or '-'} ({ins}) "
                f"params={dict(self.parameters)!r} oracle={self.oracle}")


def bytes_payload(elements: list[bytes]) -> bytes:
    """Triton's BYTES wire format: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def truncated_bytes_element(payload: bytes) -> bool:
    """True when some element's 4-byte length is complete but claims more bytes than follow.

    Triton 2.51's core checks only that each length is complete; the Python backend finds the
    short element when it gathers the batch, and then fails EVERY request of that batch
    (tests/test_fuzz.py pins it). Such cases are sent alone (:func:`poisons_batch`).
    """
    offset = 0
    while len(payload) - offset >= 4:
        (length,) = struct.unpack_from("<I", payload, offset)
        offset += 4
        if length > len(payload) - offset:
            return True
        offset += length
    return False


def poisons_batch(case: Case) -> bool:
    """Would this request fail the other requests Triton batches with it (see above)?"""
    return any(i.datatype == "BYTES" and truncated_bytes_element(i.payload) for i in case.inputs)


# --- byte strings -----------------------------------------------------------------------------
def clean_prompt(rng: random.Random) -> bytes:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
    return rng.choice([text, text.upper(), f"  {text}\t", f"{text}\nline two", "ünïcödé " + text, "🙂 " + text]).encode()


def hostile_prompt(rng: random.Random) -> bytes:
    """A byte string chosen to break a prompt parser (most are invalid under the rules)."""
    text = clean_prompt(rng)
    pos = rng.randint(0, len(text))
    control = bytes([rng.choice([*range(9), 11, 12, *range(14, 32), 127])])
    makers = [
        lambda: b"", lambda: b" " * rng.randint(1, 8), lambda: b"\t\n\r ",
        lambda: b"\x00" * rng.randint(1, 32), lambda: text[:pos] + b"\x00" + text[pos:],
        lambda: text[:pos] + control + text[pos:], lambda: control * rng.randint(1, 5),
        lambda: "\u0085\u009f".encode() + text,  # C1 control characters, valid UTF-8
        lambda: "\u200b\u200e".encode(),  # zero-width format characters only: nothing printable
        lambda: text + b"\xff\xfe", lambda: b"\xc0\xaf" + text, lambda: text[:pos] + b"\x80" + text[pos:],
        lambda: b"\xed\xa0\x80", lambda: "é".encode()[:1] + text, lambda: text + "🙂".encode()[:3],
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
        lambda: (text + b" ") * (validation.PROMPT_MAX_BYTES // max(len(text), 1) + 1),
        lambda: b"a" * rng.choice([validation.PROMPT_MAX_BYTES, validation.PROMPT_MAX_BYTES + 1]),
        lambda: "日本語のプロンプト".encode(), lambda: "مرحبا بالعالم".encode(),
        lambda: text,
    ]
    return rng.choice(makers)()


def utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def prompt_ok(raw: bytes) -> bool:
    try:
        validation.decode_prompt(raw)
    except validation.BadRequest:
        return False
    return True


# --- parameters -------------------------------------------------------------------------------
def random_value(rng: random.Random, protocol: str) -> Any:
    values = [rng.choice([True, False]), rng.randint(-2**63, 2**63 - 1), rng.randint(-5, 100000),
              rng.uniform(-1e6, 1e6), rng.choice([math.inf, -math.inf, math.nan, 0.0, -0.0]),
              rng.choice(["", "cascade", "light", "heavy", "Cascade", "1e3", "5000", "-1", "nan", "∞", "\x00"]),
              "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 12)))]
    if protocol == "http":  # JSON can carry more shapes than gRPC's InferParameter
        values += [None, [1, 2], {"k": "v"}, 2**64 + 1]
    return rng.choice(values)


def random_parameters(rng: random.Random, protocol: str) -> tuple[dict[str, Any], bool]:
    """A parameter map and whether the rules of serving.validation apply to it (no Triton key,
    only values the Python backend receives as they were sent)."""
    roll = rng.random()
    if roll < 0.45:
        return {}, True
    if roll < 0.65:  # the cascade's own keys, right or wrong values
        params = {}
        if rng.random() < 0.7:
            params["routing"] = rng.choice(["cascade", "light", "heavy", "both", "", 1, True])
        if rng.random() < 0.7:
            params["slo_ms"] = rng.choice([500, 5000.0, "5000", 0, -3, "soon", math.inf, True, 10**6])
        return params, True
    keys = [rng.choice(["routing", "slo_ms", "x", "seed", "steps", "guidance", "ÿ", "a" * 300, "", "__class__",
                        "../etc/passwd", rng.choice(TRITON_KEYS)]) for _ in range(rng.randint(1, 4))]
    params = {k: random_value(rng, protocol) for k in keys}
    scalar = all(isinstance(v, (bool, int, float, str)) and not (isinstance(v, int) and abs(v) >= 2**63)
                 for v in params.values())
    return params, scalar and not (set(params) & set(TRITON_KEYS))


def parameters_ok(model: str, params: dict[str, Any]) -> bool:
    try:
        if model == "cascade":
            validation.parse_options(params)
        else:
            validation.request_parameters(params, ())
    except validation.BadRequest:
        return False
    return True


# --- cases --------------------------------------------------------------------------------------
def batch_size(rng: random.Random) -> int:
    return rng.choices([0, 1, rng.randint(2, 8), rng.randint(9, 32), rng.randint(33, 64)],
                       weights=[8, 25, 35, 20, 12])[0]


def prompt_case(rng: random.Random, index: int, model: str, protocol: str, max_batch: int) -> Case:
    n = batch_size(rng)
    clean = rng.random() < 0.45
    prompts = [clean_prompt(rng) if clean or rng.random() < 0.3 else hostile_prompt(rng) for _ in range(n)]
    inputs = [WireInput("PROMPT", "BYTES", (n, 1), bytes_payload(prompts), prompts)]
    seeds_ok = True
    if rng.random() < 0.6:
        m = n if rng.random() < 0.85 else rng.randint(0, 64)
        seeds = [rng.choice([rng.randint(0, validation.SEED_MAX), 0, validation.SEED_MAX, -1,
                             validation.SEED_MAX + 1, -2**63, 2**63 - 1]) if rng.random() < 0.3
                 else rng.randint(0, 1000) for _ in range(m)]
        inputs.append(WireInput("SEED", "INT64", (m, 1), np.array(seeds, dtype=np.int64).tobytes(), seeds))
        seeds_ok = m == n and all(0 <= s <= validation.SEED_MAX for s in seeds)
    params, rules_apply = random_parameters(rng, protocol)
    if not rules_apply:
        oracle = None
    else:
        ok = 1 <= n <= max_batch and all(prompt_ok(p) for p in prompts) and seeds_ok and parameters_ok(model, params)
        oracle = "ok" if ok else "refused"
    json_ok = all(utf8(p) for p in prompts)  # JSON strings must be text
    return Case(index, "prompt", model, protocol, tuple(inputs), tuple(params.items()), n, oracle,
                http_json=protocol == "http" and json_ok and rng.random() < 0.3)


def image_case(rng: random.Random, index: int, protocol: str, max_batch: int, size_px: int) -> Case:
    n = batch_size(rng)
    h, w = (size_px, size_px) if rng.random() < 0.8 else (rng.choice([1, size_px - 1, size_px * 2]), size_px)
    pixels = np.frombuffer(rng.randbytes(n * h * w * 3), dtype=np.uint8)
    params, rules_apply = random_parameters(rng, protocol)
    ok = 1 <= n <= max_batch and (h, w) == (size_px, size_px) and parameters_ok("discriminator", params)
    return Case(index, "image", "discriminator", protocol,
                (WireInput("IMAGE", "UINT8", (n, h, w, 3), pixels.tobytes()),),
                tuple(params.items()), n, ("ok" if ok else "refused") if rules_apply else None)


def random_shape(rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.choice([0, 1, 1, 2, 3, 32, 64, rng.randint(1, 100), -1, -rng.randint(2, 5), 2**31])
                 for _ in range(rng.randint(0, 5)))


def typed_input(rng: random.Random, name: str) -> WireInput:
    dtype = rng.choice(list(DTYPES) + list(JUNK_DTYPES))
    shape = random_shape(rng)
    count = math.prod(shape) if all(d >= 0 for d in shape) else 0
    np_dtype = DTYPES.get(dtype)
    if dtype == "BYTES":
        elems = [hostile_prompt(rng) for _ in range(min(count, 64))]
        payload = bytes_payload(elems)
    elif np_dtype is not None and count * np.dtype(np_dtype).itemsize <= MAX_PAYLOAD_BYTES:
        payload = rng.randbytes(count * np.dtype(np_dtype).itemsize)
    else:
        payload = b""
    if rng.random() < 0.2:  # a payload that does not match the shape
        payload = payload[: rng.randint(0, len(payload))] if payload and rng.random() < 0.5 else payload + rng.randbytes(7)
    return WireInput(name, dtype, shape, payload)


def typed_case(rng: random.Random, index: int, model: str, protocol: str) -> Case:
    names = ["IMAGE"] if model == "discriminator" else ["PROMPT"] + (["SEED"] if rng.random() < 0.5 else [])
    inputs = tuple(typed_input(rng, name) for name in names)
    params, _ = random_parameters(rng, protocol)
    return Case(index, "typed", model, protocol, inputs, tuple(params.items()),
                inputs[0].shape[0] if inputs[0].shape else 0, None)


def wire_case(rng: random.Random, index: int, model: str, protocol: str) -> Case:
    good = (WireInput("IMAGE", "UINT8", (1, 32, 32, 3), bytes(32 * 32 * 3)) if model == "discriminator"
            else WireInput("PROMPT", "BYTES", (1, 1), bytes_payload([b"a red circle"])))
    trick = rng.choice(["missing", "unknown", "duplicate", "extra", "truncated", "empty", "version", "lying_length"])
    version = ""
    if trick == "missing":
        inputs: tuple[WireInput, ...] = ()
    elif trick == "unknown":
        inputs = (dataclasses.replace(good, name=rng.choice(["prompt", "PROMPTS", "", "IMAGE ", "../PROMPT"])),)
    elif trick == "duplicate":
        inputs = (good, good)
    elif trick == "extra":
        inputs = (good, WireInput("EXTRA", "FP32", (1, 4), bytes(16)))
    elif trick == "truncated":
        inputs = (dataclasses.replace(good, payload=good.payload[: rng.randint(1, 6)]),)
    elif trick == "lying_length":  # a BYTES element claiming more bytes than the payload holds
        inputs = (dataclasses.replace(good, datatype="BYTES", payload=struct.pack("<I", 2**31) + b"abc"),)
    elif trick == "empty":
        inputs = (dataclasses.replace(good, shape=(0,) + good.shape[1:], payload=b""),)
    else:
        inputs, version = (good,), rng.choice(["2", "0", "-1", "latest", "1" * 30])
    return Case(index, "wire", model, protocol, inputs, (), 1, None, version=version)


def generate(seed: int, count: int, max_batch: dict[str, int], size_px: int) -> list[Case]:
    """``count`` cases, the same for the same seed: models and protocols in turn, kinds at random."""
    rng = random.Random(seed)
    models = ("cascade", "light", "heavy", "discriminator")
    cases = []
    for index in range(count):
        model, protocol = models[index % 4], ("grpc", "http")[(index // 4) % 2]
        kind = rng.choices(["main", "typed", "wire"], weights=[65, 22, 13])[0]
        if kind == "typed":
            cases.append(typed_case(rng, index, model, protocol))
        elif kind == "wire":
            cases.append(wire_case(rng, index, model, protocol))
        elif model == "discriminator":
            cases.append(image_case(rng, index, protocol, max_batch[model], size_px))
        else:
            cases.append(prompt_case(rng, index, model, protocol, max_batch[model]))
    return cases
