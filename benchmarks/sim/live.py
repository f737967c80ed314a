"""Does the simulator predict the live system? The committed live run's workload and settings,
replayed through the simulator with the tiny cascade's own profiles, policy by policy.

Everything the simulation takes comes from the live run's own files: the workload is rebuilt with
:func:`benchmarks.live.workload.build_workload` from the run's trace, duration, rate range and seed
(and checked to have the run's request count); the cluster is the run's slots; the profile
latencies are multiplied by the run's measured slowdown (``profile_latency_factor``, which the live
planner used too); the SLO, the control window, the policies' parameters (static's from its logged
plan) and the model-load time (the mean logged load action) are the run's. The live prompts are
tiny-domain captions whose confidences were never recorded, so each query takes a calibration
prompt's confidence (trace prompt id wrapped onto the 256 calibration prompts: the same
distribution, not the same prompts). A run with a ``hybrid`` row (ours with the prompt router) is
simulated with the cascade's hybrid surface and router curve, each query taking the router score
of the same calibration prompt its confidence comes from; the simulator routes it with the live
decision functions (the plan's router share -> score threshold by
:func:`orchestrator.placement.control_state`, score >= threshold -> heavy by
:func:`serving.routing.choose_route`), and a routed query is served by heavy without light.

Writes ``live_vs_sim.json`` and ``live_vs_sim.md`` under the output folder: per policy the live
and simulated light share and violation ratio and whether they agree within 0.10 / 0.05, and the
routed share (served by heavy without a light image) live and simulated.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import report
from .experiment import REPO, Inputs, RunConfig, load_cascade, load_router, run_policy
from .trace import Trace, query_confidences

LIVE_RESULTS = REPO / "benchmarks" / "results" / "live"
LIVE_POLICIES = ("quality", "diffserve", "clipper-light", "clipper-heavy", "static")
OPTIONAL_POLICIES = ("hybrid",)  # simulated when the live run has a row for it (runs before the router had none)
LIGHT_SHARE_TOLERANCE, VIOLATION_TOLERANCE = 0.10, 0.05


def newest_live_run(results: Path = LIVE_RESULTS) -> Path:
    """The newest live run folder whose results.json has a row for every policy of :data:`LIVE_POLICIES`."""
    for d in sorted((p for p in results.glob("*") if (p / "results.json").is_file()), reverse=True):
        rows = json.loads((d / "results.json").read_text())["rows"]
        if set(LIVE_POLICIES) <= {r["policy"] for r in rows}:
            return d
    raise ValueError(f"{results}: no live run with every policy of {LIVE_POLICIES}; expected a bench-live results folder")


def run_policies(run: Path) -> tuple[str, ...]:
    """The policies of a live run the simulator replays: those of :data:`LIVE_POLICIES`, then of
    :data:`OPTIONAL_POLICIES`, that the run has a row for (a bench-live run has them all; a run of
    a few policies, e.g. ``--policies hybrid quality``, compares those)."""
    rows = {r["policy"] for r in json.loads((run / "results.json").read_text())["rows"]}
    found = tuple(p for p in LIVE_POLICIES + OPTIONAL_POLICIES if p in rows)
    if not found:
        raise ValueError(f"{run}: results.json has rows for {sorted(rows)}; expected some of "
                         f"{LIVE_POLICIES + OPTIONAL_POLICIES}")
    return found


def _shown(path: Path) -> str:
    """A path as results show it: relative to the repository when inside it."""
    return str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def _log(run: Path, policy: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / policy / "orchestrator.jsonl").read_text().splitlines()]


def _arg(command: str, flag: str, default: str) -> str:
    m = re.search(rf"{flag}[ =](\S+)", command)
    return m.group(1) if m else default


def live_setup(run: Path, base: RunConfig) -> tuple[RunConfig, Inputs, dict[str, Any]]:
    """The live run's workload as a trace, and the run config that mirrors its settings."""
    from benchmarks.live.workload import TRACE_DIR, build_workload  # noqa: PLC0415
    from serving.config import load_cascade as load_cascade_yaml  # noqa: PLC0415

    meta = json.loads((run / "results.json").read_text())["meta"]
    seed = int(_arg(meta["command"], "--seed", "0"))
    workload = build_workload(TRACE_DIR / meta["trace"], meta["duration_s"], meta["lo_qps"], meta["hi_qps"], seed=seed,
                              prompt=lambda pid, s, h: "")  # the prompt text does not move the arrivals' draws
    if len(workload.arrivals) != meta["requests"]:
        raise ValueError(f"{run}: rebuilt {len(workload.arrivals)} requests, the run had {meta['requests']}")
    name = load_cascade_yaml(REPO / _arg(meta["command"], "--cascade", "configs/tiny.yaml")).name
    policies = run_policies(run)
    loads = [a["wall_ms"] for p in policies for r in _log(run, p) for a in r.get("actions", [])
             if a.get("result") == "ok"]
    cfg = dataclasses.replace(
        base, cascade=str(REPO / "profiles" / name), device=meta["device"], slo_ms=meta["slo_ms"],
        num_workers=int(meta["slots"].split(":")[1]), window_s=meta["window_s"], model_load_s=float(np.mean(loads)) / 1000,
        latency_factor=meta["profile_latency_factor"], initial_demand_qps=workload.rate_qps[0], overprovision=1.2,
        ewma_alpha=0.5, trace_scale=1, load_factor=1.0, prompt_ids="wrap",
        static=_static_config(run) if "static" in policies else base.static)
    trace = Trace(np.array([a.t_s * 1000.0 for a in workload.arrivals]), np.array([a.seed for a in workload.arrivals]),
                  name=f"live {meta['trace']} x{meta['duration_s']} s")
    cascade = load_cascade(cfg)
    inputs = Inputs(cascade, trace, query_confidences(trace, cascade.confidences, "wrap"),
                    cascade.confidences.source + ", live prompt ids wrapped onto the calibration prompts",
                    router=load_router(cfg, cascade, trace) if "hybrid" in policies else None)
    return cfg, inputs, meta


def _static_config(run: Path) -> tuple[tuple[str, float], ...]:
    """The static policy's configuration: its first logged plan."""
    plan = next(r["plan"] for r in _log(run, "static") if r.get("event") == "window")
    return (("threshold", plan["threshold"]), ("light_workers", plan["workers"]["light"]),
            ("heavy_workers", plan["workers"]["heavy"]), ("light_batch", plan["batch_size"]["light"]),
            ("heavy_batch", plan["batch_size"]["heavy"]))


def _compare(live: dict[str, Any], sim: dict[str, Any]) -> dict[str, Any]:
    d_share = abs(sim["light_share"] - live["light_share"])
    d_vio = abs(sim["violation_ratio"] - live["violation_ratio"])
    live_routed = live.get("routed_share")  # None: a live run from before the column
    return {"light_share": {"live": live["light_share"], "sim": sim["light_share"], "abs_diff": d_share,
                            "within": d_share <= LIGHT_SHARE_TOLERANCE},
            "violation_ratio": {"live": live["violation_ratio"], "sim": sim["violation_ratio"], "abs_diff": d_vio,
                                "within": d_vio <= VIOLATION_TOLERANCE},
            # reported, not judged: the agreement is on light share and violation ratio
            "routed_share": {"live": live_routed, "sim": sim["routed_share"],
                             "abs_diff": None if live_routed is None else abs(sim["routed_share"] - live_routed)}}


def live_vs_sim(out: Path, run: Path | None, base: RunConfig, command: str) -> dict[str, Any]:
    """Every policy of the live run through the simulator; writes live_vs_sim.json / .md under ``out``."""
    import planner  # noqa: PLC0415

    run = run or newest_live_run()
    cfg, inputs, meta = live_setup(run, base)
    live_rows = {r["policy"]: r for r in json.loads((run / "results.json").read_text())["rows"]}
    variants = {"sim": cfg,
                # planning with the derated profile as live did, serving at the profile as measured
                "sim, serving at the profile": dataclasses.replace(cfg, service_latency_factor=1.0 / cfg.latency_factor)}
    per_policy: dict[str, Any] = {}
    for name in run_policies(run):
        per_policy[name] = {"live": {k: live_rows[name].get(k) for k in ("light_share", "violation_ratio", "dropped",
                                                                          "p50_ms", "p95_ms", "routed_share")}}
        for label, vcfg in variants.items():  # the live run's own policy parameters (none but static's)
            kw = {k: (float(v) if k == "threshold" else int(v)) for k, v in vcfg.static} if name == "static" else {}
            s = run_policy(vcfg, name, inputs, policy=planner.make_policy(name, **kw))["summary"]
            per_policy[name][label] = {**{k: s[k] for k in ("light_share", "violation_ratio", "drops", "timeouts",
                                                             "p50_latency_ms", "p95_latency_ms")},
                                       **_compare(live_rows[name], s)}
            print(f"  live vs {label}: {name:13s} light share {live_rows[name]['light_share']:.3f} / {s['light_share']:.3f}"
                  f"  violations {live_rows[name]['violation_ratio']:.4f} / {s['violation_ratio']:.4f}", file=sys.stderr)
    doc = report.provenance(command, {**dataclasses.asdict(cfg), "live_run": _shown(run),
                                      "live_meta": meta, "confidences": inputs.confidence_source})
    doc["tolerance"] = {"light_share": LIGHT_SHARE_TOLERANCE, "violation_ratio": VIOLATION_TOLERANCE}
    doc["policies"] = per_policy
    report.write_json(out / "live_vs_sim.json", doc)
    (out / "live_vs_sim.md").write_text(report.md_provenance(doc) + _markdown(doc, run, meta, list(variants)))
    return doc


def _markdown(doc: dict[str, Any], run: Path, meta: dict[str, Any], variants: list[str]) -> str:
    """One table per simulator variant: live vs simulated light share, violation ratio, latency."""
    parts = [f"Live run `{_shown(run)}` ({meta['requests']} requests, {meta['slots']}, SLO "
             f"{meta['slo_ms']:.0f} ms, planner profiles x {meta['profile_latency_factor']:.2f}) against the simulator "
             f"on the same workload. Agreement: light share within {LIGHT_SHARE_TOLERANCE}, violation ratio within "
             f"{VIOLATION_TOLERANCE} (absolute). Routed share: served by heavy without a light image (the prompt router's "
             f"or routing heavy's), reported, not judged. Latencies: p50 / p95 of served queries, ms.\n"]
    for label in variants:
        rows = []
        for name, p in doc["policies"].items():
            live, sim = p["live"], p[label]
            routed = sim["routed_share"]
            rows.append([name] + [f"{sim[k]['live']:.3f} / {sim[k]['sim']:.3f} ({'ok' if sim[k]['within'] else 'MISS'})"
                                  for k in ("light_share", "violation_ratio")]
                        + [("-" if routed["live"] is None else f"{routed['live']:.3f}") + f" / {routed['sim']:.3f}",
                           f"{live['p50_ms']:.0f} / {live['p95_ms']:.0f}",
                           f"{sim['p50_latency_ms']:.0f} / {sim['p95_latency_ms']:.0f}", str(sim["drops"])])
        parts.append(f"\n### {label}\n\n" + report.markdown_table(
            ["policy", "light share live / sim", "violation ratio live / sim", "routed share live / sim",
             "latency live", "latency sim", "sim drops"], rows))
    return "".join(parts)
