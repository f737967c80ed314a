"""Pure parts of the Triton stage models: chunking, config checks, stale detection."""
from __future__ import annotations

import numpy as np
import pytest

from serving.config import load_cascade
from serving.stage import StaleArtifacts
from serving.triton.stage_model import (ConfigInvalid, check_discriminator_config, check_generator_config,
                                        expected_config_hash, run_chunked)
from export.testing import GOOD_TINY_YAML

GEN_CONFIG = {"input": [{"name": "PROMPT", "data_type": "TYPE_STRING", "dims": ["1"]},
                        {"name": "SEED", "data_type": "TYPE_INT64", "dims": ["1"]}],
              "output": [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": ["32", "32", "3"]}]}


def test_work_runs_in_chunks_of_the_control_file_batch_size():
    seen = []
    out = run_chunked(lambda c: (seen.append(len(c)), np.array(c))[1], list(range(7)), 3)
    assert seen == [3, 3, 1] and np.concatenate(out).tolist() == list(range(7))


def test_generator_config_must_match_the_exported_image_size():
    check_generator_config(GEN_CONFIG, 32, 32)
    with pytest.raises(ConfigInvalid, match=r"expected TYPE_UINT8 dims \[64, 64, 3\]"):
        check_generator_config(GEN_CONFIG, 64, 64)
    with pytest.raises(ConfigInvalid, match="input PROMPT TYPE_STRING missing"):
        check_generator_config({**GEN_CONFIG, "input": []}, 32, 32)


def test_discriminator_config_needs_image_in_and_confidence_out():
    ok = {"input": [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": ["32", "32", "3"]}],
          "output": [{"name": "CONFIDENCE", "data_type": "TYPE_FP32", "dims": ["1"]}]}
    check_discriminator_config(ok)
    with pytest.raises(ConfigInvalid, match="output CONFIDENCE"):
        check_discriminator_config({**ok, "output": []})


def test_expected_hash_is_the_yaml_current_hash_and_an_edit_is_stale(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD_TINY_YAML)
    h = load_cascade(cfg).config_hash
    assert expected_config_hash({"cascade_config": str(cfg), "config_hash": h}, str(tmp_path)) == h
    assert expected_config_hash({"config_hash": "abc"}, str(tmp_path)) == "abc"  # YAML not named: rendered hash
    cfg.write_text(GOOD_TINY_YAML.replace("slo_ms: 5000", "slo_ms: 9000"))
    with pytest.raises(StaleArtifacts, match="the config changed since the export"):
        expected_config_hash({"cascade_config": str(cfg), "config_hash": h}, str(tmp_path))
