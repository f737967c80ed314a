"""serving.validation: the one set of request rules shared by the cascade and every stage model."""
from __future__ import annotations

import numpy as np
import pytest

from serving import validation as v


def test_prompt_is_decoded_and_validated():
    assert v.decode_prompt("ünï".encode()) == "ünï"
    assert v.decode_prompt(b"two lines\nand a\ttab") == "two lines\nand a\ttab"
    with pytest.raises(v.BadRequest, match=r"PROMPT\[2\] has no printable character"):
        v.decode_prompt(b" \n", 2)
    with pytest.raises(v.BadRequest, match="0xc3 at offset 1"):
        v.decode_prompt(b"a\xc3(")
    v.decode_prompt(b"x" * v.PROMPT_MAX_BYTES)
    with pytest.raises(v.BadRequest, match=f"{v.PROMPT_MAX_BYTES + 1} bytes"):
        v.decode_prompt(b"x" * (v.PROMPT_MAX_BYTES + 1))
    with pytest.raises(v.BadRequest, match="expected UTF-8 bytes"):
        v.decode_prompt(3)


@pytest.mark.parametrize("raw", [b"\x00", b"\x00\x00\x00", b"a cat\x00", b"\x1b[31mred", b"\x7f", "\u0085x".encode(),
                                 b"", "\u200b".encode(), "\u3000".encode()])
def test_prompts_of_control_characters_or_without_printable_text_are_refused(raw):
    with pytest.raises(v.BadRequest, match=r"PROMPT\[0\] (contains the control character U\+|has no printable)"):
        v.decode_prompt(raw)


def test_a_prompt_batch_decodes_every_element_and_refuses_an_empty_batch():
    assert v.decode_prompts(np.array([[b"a red circle"], ["\u00fc".encode()]], dtype=object)) == ["a red circle", "\u00fc"]
    with pytest.raises(v.BadRequest, match=r"PROMPT\[1\] is not valid UTF-8"):
        v.decode_prompts(np.array([[b"ok"], [b"\xff"]], dtype=object))
    with pytest.raises(v.BadRequest, match="PROMPT has no elements"):
        v.decode_prompts(np.zeros((0, 1), dtype=object))


def test_seeds_are_checked_and_default_to_zero():
    assert v.check_seed(np.int64(0)) == 0 and v.check_seed(v.SEED_MAX) == v.SEED_MAX
    for bad in (-1, v.SEED_MAX + 1, True, 1.5):
        with pytest.raises(v.BadRequest, match="SEED"):
            v.check_seed(bad)
    assert v.check_seeds(np.array([[1], [2]], np.int64), 2) == [1, 2]
    assert v.check_seeds(None, 3) == [0, 0, 0]
    with pytest.raises(v.BadRequest, match=r"SEED\[0\]=-1"):
        v.check_seeds(np.array([[-1]], np.int64), 1)
    with pytest.raises(v.BadRequest, match="SEED has 1 values for 2 prompts"):
        v.check_seeds(np.array([[1]], np.int64), 2)
    with pytest.raises(v.BadRequest, match="SEED is float32; expected INT64"):
        v.check_seeds(np.array([[1.0]], np.float32), 1)


def test_images_must_be_uint8_nhwc_rgb():
    assert v.check_images(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 8, 8, 3)
    for bad in (np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8, 4), np.uint8),
                np.zeros((0, 8, 8, 3), np.uint8)):
        with pytest.raises(v.BadRequest, match="IMAGE is"):
            v.check_images(bad)
    with pytest.raises(v.BadRequest, match=r"expected UINT8 \[batch, 16, 16, 3\]"):
        v.check_images(np.zeros((1, 8, 8, 3), np.uint8), 16, 16)


def test_parameters_parse_from_json_and_reject_unknowns():
    assert v.parse_options(None) == v.RequestOptions()
    assert v.parse_options('{"routing": "heavy", "slo_ms": "250"}') == v.RequestOptions("heavy", 250.0)
    with pytest.raises(v.BadRequest, match="unknown request parameters"):
        v.parse_options({"x": 1})
    for bad in ({"slo_ms": 0}, {"slo_ms": True}, {"slo_ms": "nan"}, {"routing": "random"}, "not json", "[1]"):
        with pytest.raises(v.BadRequest):
            v.parse_options(bad)


def test_a_stage_takes_no_request_parameters():
    assert v.request_parameters("{}") == {}
    with pytest.raises(v.BadRequest, match=r"unknown request parameters \['routing'\]; expected only \[\]"):
        v.request_parameters('{"routing": "heavy"}')
