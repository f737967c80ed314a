"""The simulator against the committed live run (benchmarks/sim/live.py)."""
from __future__ import annotations

from benchmarks.sim import live
from benchmarks.sim.experiment import RunConfig


def test_the_live_runs_workload_and_settings_are_rebuilt_from_its_own_files():
    run = live.newest_live_run()
    cfg, inputs, meta = live.live_setup(run, RunConfig())
    assert len(inputs.trace) == meta["requests"] == 759
    assert cfg.num_workers == 2 and cfg.window_s == meta["window_s"] and cfg.latency_factor == meta["profile_latency_factor"]
    assert dict(cfg.static)["threshold"] == 0.02 and dict(cfg.static)["light_batch"] == 16
    assert [m.name for m in inputs.cascade.models] == ["light", "heavy"]


def test_simulated_light_share_agrees_with_the_live_run_for_every_policy(tmp_path):
    doc = live.live_vs_sim(tmp_path, None, RunConfig(), "test")
    assert all(p["sim"]["light_share"]["within"] for p in doc["policies"].values())
    assert all(doc["policies"][n]["sim"]["violation_ratio"]["within"] for n in ("quality", "diffserve", "clipper-light"))
    # served at the profile's own latency, every policy agrees on violations too (docs/simulator.md)
    assert all(p["sim, serving at the profile"]["violation_ratio"]["within"] for p in doc["policies"].values())
