"""The simulator against the committed live run (benchmarks/sim/live.py)."""
from __future__ import annotations

import json

from benchmarks.sim import live
from benchmarks.sim.experiment import RunConfig, run_policy
from orchestrator.devices import resolve_device


def test_the_live_runs_workload_and_settings_are_rebuilt_from_its_own_files():
    run = live.newest_live_run()
    cfg, inputs, meta = live.live_setup(run, RunConfig())
    assert len(inputs.trace) == meta["requests"] > 0
    assert cfg.num_workers == int(meta["slots"].split(":")[1]) and cfg.window_s == meta["window_s"]
    assert cfg.latency_factor == meta["profile_latency_factor"]
    static_plan = next(r["plan"] for r in live._log(run, "static") if r.get("event") == "window")
    assert dict(cfg.static)["threshold"] == static_plan["threshold"]
    assert dict(cfg.static)["light_batch"] == static_plan["batch_size"]["light"]
    assert [m.name for m in inputs.cascade.models] == ["light", "heavy"]


def test_the_comparison_judges_every_policy_of_the_live_run_with_the_stated_tolerances(tmp_path):
    # Agreement itself is a measured result (live_vs_sim.md; docs/simulator.md explains each miss),
    # not something a test can promise for a future run; the verdicts must follow the tolerances.
    doc = live.live_vs_sim(tmp_path, None, RunConfig(), "test")
    rows = json.loads((live.newest_live_run() / "results.json").read_text())["rows"]
    assert set(doc["policies"]) == {r["policy"] for r in rows} & set(live.LIVE_POLICIES + live.OPTIONAL_POLICIES)
    for policy in doc["policies"].values():
        for sim in ("sim", "sim, serving at the profile"):
            for key, tol in (("light_share", live.LIGHT_SHARE_TOLERANCE), ("violation_ratio", live.VIOLATION_TOLERANCE)):
                v = policy[sim][key]
                assert v["within"] == (abs(v["live"] - v["sim"]) <= tol + 1e-12)


def _synthetic_live_run(folder, policies, duration_s=20, lo_qps=3.0, hi_qps=9.0):
    """A live run folder as bench-live writes it (results.json, each policy's orchestrator log),
    with made-up live numbers: the simulator reads its settings, not its outcomes."""
    import json  # noqa: PLC0415

    from benchmarks.live.workload import TRACE_DIR, build_workload  # noqa: PLC0415

    requests = len(build_workload(TRACE_DIR / "maf_2to16qps.txt", duration_s, lo_qps, hi_qps, seed=0,
                                  prompt=lambda pid, s, h: "").arrivals)
    meta = {"trace": "maf_2to16qps.txt", "duration_s": duration_s, "requests": requests, "lo_qps": lo_qps,
            "hi_qps": hi_qps, "profile_latency_factor": 2.8, "slots": "cpu:2", "slo_ms": 5000.0, "window_s": 4.0,
            "device": resolve_device(live.REPO / "profiles" / "tiny", "auto"),  # the committed tiny profile's device
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
    # (quality's routed share need not be 0: it may serve every query on heavy alone, skipping light)
    assert "| hybrid |" in (tmp_path / "sim" / "live_vs_sim.md").read_text()


def test_a_live_run_from_before_the_router_is_compared_on_its_five_policies():
    assert live.run_policies(live.LIVE_RESULTS / "20261126T105350Z") == live.LIVE_POLICIES
