"""The simulator against the committed live run (benchmarks/sim/live.py)."""
from __future__ import annotations

from benchmarks.sim import live
from benchmarks.sim.experiment import RunConfig, run_policy


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


def _synthetic_live_run(folder, policies, duration_s=20, lo_qps=3.0, hi_qps=9.0):
    """A live run folder as bench-live writes it (results.json, each policy's orchestrator log),
    with made-up live numbers: the simulator reads its settings, not its outcomes."""
    import json  # noqa: PLC0415

    from benchmarks.live.workload import TRACE_DIR, build_workload  # noqa: PLC0415

    requests = len(build_workload(TRACE_DIR / "maf_2to16qps.txt", duration_s, lo_qps, hi_qps, seed=0,
                                  prompt=lambda pid, s, h: "").arrivals)
    meta = {"trace": "maf_2to16qps.txt", "duration_s": duration_s, "requests": requests, "lo_qps": lo_qps,
            "hi_qps": hi_qps, "profile_latency_factor": 2.8, "slots": "cpu:2", "slo_ms": 5000.0, "window_s": 4.0,
            "device": "cpu-amd-epyc-2cores",
            "command": "python -m benchmarks.live.run --cascade configs/tiny.yaml --policies " + " ".join(policies)}
    rows = [{"policy": p, "light_share": 0.5, "violation_ratio": 0.0, "dropped": 0, "p50_ms": 100.0, "p95_ms": 900.0,
             "routed_share": 0.3 if p == "hybrid" else 0.0} for p in policies]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    for p in policies:
        (folder / p).mkdir()
        window = {"event": "window", "window": 0, "actions": [{"op": "set_instances", "result": "ok", "wall_ms": 1600.0}]}
        (folder / p / "orchestrator.jsonl").write_text(json.dumps(window) + "\n")
    return folder


def test_a_live_run_with_hybrid_is_simulated_with_the_prompt_router_routing_queries_straight_to_heavy(tmp_path):
    run = _synthetic_live_run(tmp_path / "live" / "20990101T000000Z", ["quality", "hybrid"])
    cfg, inputs, _ = live.live_setup(run, RunConfig())
    assert inputs.router is not None and inputs.router.score.shape == inputs.confidence.shape
    result = run_policy(cfg, "hybrid", inputs)
    assert result["router_share"]["max"] > 0  # the plan sends a share of the prompts to heavy...
    assert result["summary"]["routed_share"] > 0  # ...and the simulated router does
    cells = [f for row in inputs.router.surface.fid for f in row]
    assert min(cells) <= result["summary"]["mean_fid"] <= max(cells)  # FID read off the 2-D surface
    doc = live.live_vs_sim(tmp_path / "sim", run, RunConfig(), "test")
    assert list(doc["policies"]) == ["quality", "hybrid"]
    hybrid = doc["policies"]["hybrid"]["sim"]
    assert hybrid["routed_share"]["live"] == 0.3 and hybrid["routed_share"]["sim"] > 0
    assert {"light_share", "violation_ratio"} <= set(hybrid)
    assert doc["policies"]["quality"]["sim"]["routed_share"]["sim"] == 0.0  # only hybrid plans with the router
    assert "| hybrid |" in (tmp_path / "sim" / "live_vs_sim.md").read_text()


def test_a_live_run_from_before_the_router_is_compared_on_its_five_policies():
    assert live.run_policies(live.LIVE_RESULTS / "20261126T105350Z") == live.LIVE_POLICIES
