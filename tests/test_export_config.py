"""Cascade config files: the shipped ones parse; bad values are refused with a message naming them."""
from __future__ import annotations

import copy

import pytest
import yaml

from serving.config import PROJECT_ROOT, ConfigError, load_cascade, parse_cascade, resolve_model
from export.repository import render_config

GOOD = {
    "name": "t", "slo_ms": 5000,
    "light": {"model": "export", "steps": 1, "guidance_scale": 0.0, "scheduler": "euler", "height": 32, "width": 32},
    "heavy": {"model": "owner/heavy-model", "steps": 25, "guidance_scale": 7.5,
              "scheduler": {"name": "ddim", "timestep_spacing": "leading"}, "height": 64, "width": 48},
    "discriminator": {"path": "d", "image_size": 32},
}


@pytest.mark.parametrize("path", sorted((PROJECT_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    cfg = load_cascade(path)
    assert cfg.name == path.stem
    assert cfg.light.steps < cfg.heavy.steps


def test_hash_ignores_formatting_and_description_but_not_content(tmp_path):
    a = parse_cascade(GOOD)
    b = parse_cascade({**copy.deepcopy(GOOD), "description": "words"})
    changed = copy.deepcopy(GOOD)
    changed["heavy"]["steps"] = 30
    assert a.config_hash == b.config_hash
    assert parse_cascade(changed).config_hash != a.config_hash
    p = tmp_path / "c.yaml"
    p.write_text("# comment\n" + yaml.safe_dump(GOOD, sort_keys=True))
    assert load_cascade(p).config_hash == a.config_hash


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c["light"].update(steps=0), r"light.steps=0"),
    (lambda c: c["light"].update(height=30), r"multiples of 8"),
    (lambda c: c["heavy"].update(scheduler="pndm"), r"scheduler.name='pndm'"),
    (lambda c: c["heavy"].update(guidance=3), r"unknown keys \['guidance'\]"),
    (lambda c: c.pop("discriminator"), r"missing key 'discriminator'"),
    (lambda c: c.update(slo_ms=-1), r"slo_ms=-1"),
    (lambda c: c["discriminator"].update(loader="not a loader"), r"discriminator.loader"),
])
def test_bad_values_are_named_in_the_error(mutate, match):
    cfg = copy.deepcopy(GOOD)
    mutate(cfg)
    with pytest.raises(ConfigError, match=match):
        parse_cascade(cfg)


def test_model_is_a_local_folder_or_a_hub_id():
    assert resolve_model("export") == ("local", str((PROJECT_ROOT / "export").resolve()))
    assert resolve_model("stabilityai/sd-turbo") == ("hub", "stabilityai/sd-turbo")
    with pytest.raises(ConfigError, match="no such local folder"):
        resolve_model("weights/not/there")


def test_missing_config_file_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="tiny.yaml"):
        load_cascade("configs/nope.yaml")


def test_rendered_configs_follow_the_stage_contract():
    cfg = parse_cascade(GOOD, source=str(PROJECT_ROOT / "configs" / "t.yaml"))
    heavy = render_config("heavy", cfg)
    assert "max_batch_size: 32" in heavy and "dynamic_batching" in heavy
    assert "dims: [ 64, 48, 3 ]" in heavy and 'name: "SEED" data_type: TYPE_INT64' in heavy
    assert '{ key: "control_file" value: { string_value: "runs/control/t.json" } }' in heavy
    assert f'string_value: "{cfg.config_hash}"' in heavy and 'string_value: "configs/t.yaml"' in heavy
    disc = render_config("discriminator", cfg)
    assert 'name: "IMAGE" data_type: TYPE_UINT8 dims: [ 32, 32, 3 ]' in disc  # the light stage's images
    assert 'name: "CONFIDENCE" data_type: TYPE_FP32 dims: [ 1 ]' in disc
    with pytest.raises(ValueError, match="cascade"):
        render_config("cascade", cfg)
