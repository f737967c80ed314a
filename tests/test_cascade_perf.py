"""perf_analyzer runs against the cascade (stand-in stages) in both modes and leaves CSV + JSON."""
from __future__ import annotations

import json

import pytest

from benchmarks.perf.run import INPUT_DATA, load_levels, run_mode

pytestmark = pytest.mark.triton


def test_input_data_has_prompt_and_seed_per_request():
    data = json.loads(INPUT_DATA.read_text())["data"]
    assert len(data) >= 16
    assert all(isinstance(d["PROMPT"][0], str) and d["PROMPT"][0] and isinstance(d["SEED"][0], int) for d in data)


@pytest.mark.parametrize("mode, load", [("concurrency", "1:2:1"), ("request-rate", "10:20:10")])
def test_perf_analyzer_measures_the_cascade(cascade_stack, tmp_path, mode, load):
    res = run_mode(cascade_stack[0].grpc_url, mode, load, tmp_path, measurement_interval_ms=1000, max_trials=4,
                   timeout_s=120)
    assert len(res["rows"]) == 2
    assert all(float(r["Inferences/Second"]) > 0 for r in res["rows"])
    assert (tmp_path / f"{mode}.csv").exists()
    export = json.loads((tmp_path / f"{mode}.json").read_text())
    assert export["experiments"] and export["experiments"][0]["requests"]


def test_load_levels_expand_perf_analyzer_ranges():
    assert load_levels("1:3:1") == ["1", "2", "3"]
    assert load_levels("0.5:1.5:0.5") == ["0.5", "1", "1.5"]
    assert load_levels("2") == ["2"]
    with pytest.raises(ValueError):
        load_levels("3:1:1")


def test_fixed_request_count_runs_one_perf_analyzer_per_level(cascade_stack, tmp_path):
    res = run_mode(cascade_stack[0].grpc_url, "concurrency", "1:2:1", tmp_path, request_count=10, timeout_s=120)
    assert [r["Concurrency"] for r in res["rows"]] == ["1", "2"]
    assert (tmp_path / "concurrency-1.csv").exists() and (tmp_path / "concurrency-2.json").exists()
