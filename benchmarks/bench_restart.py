"""SIGKILL tritonserver while a stream of requests runs, several times: the supervising
orchestrator restarts it and re-applies its plan. Per kill: how long until service is back,
how every request ended, and whether any /dev/shm region of the dead server is left.

    python -m benchmarks.bench_restart                  # 5 kills, the exported cascade (make export)
    -> benchmarks/results/restart/restart.json, restart.png, orchestrator.jsonl, metrics.prom

Deployed like ``make serve``: a detached server (``python -m orchestrator.server start``) and
``python -m orchestrator run --server-state-dir`` over it, on free ports and a copy of the
repository (its control file in a temporary run folder). "Back" is measured on the requests: the send
time, after the kill, of the first request from which every later request of that cycle got an
image (``back_s``), and when that request's image arrived (``back_answered_s``); a request
shed by the cascade (``RequestDropped``: overload, not unavailability) does not count as an
outage, and every failure is listed with its time and kind.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from benchmarks.live.replay import Outcome, constant_rate, replay
from orchestrator.server import PROJECT_ROOT, free_port
from orchestrator.server_state import read_state

ADMIN_KEY = "x-diffserve-admin:bench-restart"
PROMPTS = ("a red circle", "a hard scene of many things")
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "restart"
SHED = ("RequestDropped",)  # load shedding by the cascade, not unavailability


def stub_regions(server_pid: int) -> set[str]:
    """The /dev/shm regions named by the stubs of a live server (``ps``: a stub's argv[2]);
    measured independently of the supervisor's own bookkeeping (/proc/<pid>/maps)."""
    out = subprocess.run(["ps", "-ww", "-o", "args=", "--ppid", str(server_pid)], capture_output=True, text=True).stdout
    return {line.split()[2] for line in out.splitlines() if "triton_python_backend_stub" in line and len(line.split()) > 2}


class Stack:
    """A detached tritonserver and a supervising orchestrator over ``repository`` (a context
    manager that always stops both). ``run_dir`` holds the state, logs and control file."""

    def __init__(self, repository: Path, run_dir: Path, cascade: str, profiles: Path, device: str = "auto",
                 slots: str = "cpu:2", window_s: float = 5.0, load_models: Sequence[str] = ()):
        self.repository, self.run_dir, self.cascade, self.profiles = repository, run_dir, cascade, profiles
        self.device, self.slots, self.window_s, self.load_models = device, slots, window_s, tuple(load_models)
        self.state_dir, self.log_dir = run_dir / "server", run_dir / "orchestrator"
        self.ports = {k: free_port() for k in ("http", "grpc", "metrics")}
        self.grpc_url = f"127.0.0.1:{self.ports['grpc']}"
        self.orchestrator: subprocess.Popen | None = None
        self.env = {**os.environ, "DIFFSERVE_ADMIN_KEY": ADMIN_KEY}

    def __enter__(self) -> "Stack":
        server_cmd = [sys.executable, "-m", "orchestrator.server", "start", "--model-repository", str(self.repository),
                      "--http-port", str(self.ports["http"]), "--grpc-port", str(self.ports["grpc"]),
                      "--metrics-port", str(self.ports["metrics"]), "--state-dir", str(self.state_dir)]
        server_cmd += [a for m in self.load_models for a in ("--load-model", m)]
        subprocess.run(server_cmd, check=True, env=self.env, cwd=PROJECT_ROOT, capture_output=True)
        cmd = [sys.executable, "-m", "orchestrator", "run", "--node", self.grpc_url,
               "--metrics-url", f"http://127.0.0.1:{self.ports['metrics']}/metrics", "--slots", self.slots,
               "--cascade", self.cascade, "--profiles", str(self.profiles), "--device", self.device,
               "--window-s", str(self.window_s), "--log-dir", str(self.log_dir),
               "--server-state-dir", str(self.state_dir)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / "orchestrator.out", "ab")  # noqa: SIM115 - the child's stdout
        self.orchestrator = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=PROJECT_ROOT)
        return self

    def server_pid(self) -> int:
        return int(read_state(self.state_dir)["pid"])

    def stop_orchestrator(self) -> None:
        if self.orchestrator is not None and self.orchestrator.poll() is None:
            self.orchestrator.terminate()
            self.orchestrator.wait(30)

    def stop_server(self) -> subprocess.CompletedProcess:
        """``make stop``'s server half: exit 0 for a live server stopped, 1 for one that had exited."""
        return subprocess.run([sys.executable, "-m", "orchestrator.server", "stop", "--state-dir", str(self.state_dir)],
                              capture_output=True, text=True, cwd=PROJECT_ROOT)

    def __exit__(self, *exc) -> None:
        self.stop_orchestrator()
        if read_state(self.state_dir) is not None:
            self.stop_server()


def wait_serving(stack: Stack, timeout_s: float) -> float:
    """Block until a cascade request forced to each branch gets an image; returns the seconds
    waited. RuntimeError (with its log's tail) if the orchestrator exits meanwhile."""
    import numpy as np  # noqa: PLC0415
    import tritonclient.grpc as grpcclient  # noqa: PLC0415

    url = stack.grpc_url
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if stack.orchestrator is not None and stack.orchestrator.poll() is not None:
            tail = (stack.log_dir / "orchestrator.out").read_text()[-2000:]
            raise RuntimeError(f"the orchestrator exited ({stack.orchestrator.returncode}):\n{tail}")
        try:
            client = grpcclient.InferenceServerClient(url)
            for routing in ("light", "heavy"):
                prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
                prompt.set_data_from_numpy(np.array([[PROMPTS[0].encode()]], dtype=object))
                client.infer("cascade", [prompt], parameters={"routing": routing}, client_timeout=30)
            client.close()
            return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not serving yet
            time.sleep(0.5)
    raise TimeoutError(f"the cascade on {url} did not serve within {timeout_s:.0f} s")


@dataclasses.dataclass(frozen=True)
class KillCycle:
    """One kill: times in seconds after it (``None``: service never came back in the cycle)."""

    t_kill_s: float
    dead_pid: int
    requests: int
    failed: int
    back_s: float | None
    back_answered_s: float | None
    last_failure_s: float | None
    error_kinds: dict
    failures: list  # [seconds after the kill (send time), error kind] of each failed request
    dead_regions: tuple[str, ...]
    left_regions: tuple[str, ...]


class _ReplayClock:
    """time.monotonic that remembers the replay's t0 (its first call), so kills share its clock."""

    def __init__(self):
        self.t0: float | None = None

    def __call__(self) -> float:
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        return now

    def since_start(self) -> float:
        return time.monotonic() - (self.t0 if self.t0 is not None else time.monotonic())


def cycle_of(outcomes: Sequence[Outcome], t_kill: float, t_end: float) -> dict:
    """Measures of the requests sent in ``[t_kill, t_end)`` (pure), ``t_end`` being the next
    kill: a request still unanswered then, that failed, failed because of that kill and is
    left out of this cycle."""
    def belongs(o: Outcome) -> bool:
        return t_kill <= o.t_send_s < t_end and (o.ok or o.t_send_s + o.latency_ms / 1000.0 < t_end)

    sent = sorted((o for o in outcomes if belongs(o)), key=lambda o: o.t_send_s)
    fails = [i for i, o in enumerate(sent) if not o.ok]
    # Unavailability ends the outage; a load shed (RequestDropped) is the cascade working as
    # designed under overload, counted (error_kinds, failures) but not as "not back".
    outage = [i for i in fails if sent[i].error_kind not in SHED]
    first_ok = (outage[-1] + 1) if outage else 0
    back = sent[first_ok] if first_ok < len(sent) else None
    kinds: dict[str, int] = {}
    for o in sent:
        if not o.ok:
            kinds[o.error_kind] = kinds.get(o.error_kind, 0) + 1
    return {"requests": len(sent), "failed": len(fails), "error_kinds": kinds,
            "back_s": None if back is None else round(back.t_send_s - t_kill, 3),
            "back_answered_s": None if back is None else round(back.t_send_s + back.latency_ms / 1000 - t_kill, 3),
            "last_failure_s": round(sent[fails[-1]].t_send_s - t_kill, 3) if fails else None,
            "failures": [[round(sent[i].t_send_s - t_kill, 3), sent[i].error_kind] for i in fails]}


def kill_cycles(stack: Stack, kills: int, rate_qps: float, period_s: float, settle_s: float = 4.0,
                timeout_s: float = 30.0) -> tuple[list[KillCycle], list[Outcome]]:
    """Stream requests at ``rate_qps``; SIGKILL the server ``settle_s`` after the start and then
    every ``period_s``. Returns one :class:`KillCycle` per kill and every request's outcome."""
    clock = _ReplayClock()
    duration = settle_s + kills * period_s
    result: dict = {}
    load = threading.Thread(target=lambda: result.setdefault("out", replay(
        stack.grpc_url, constant_rate(rate_qps, duration, list(PROMPTS)), timeout_s=timeout_s, clock=clock)))
    load.start()
    killed = []
    for k in range(kills):
        while clock.since_start() < settle_s + k * period_s:
            time.sleep(0.05)
        pid = stack.server_pid()
        regions = stub_regions(pid)
        os.kill(pid, signal.SIGKILL)
        killed.append((clock.since_start(), pid, regions))
    load.join()
    outcomes = result["out"]
    cycles = []
    for k, (t_kill, pid, regions) in enumerate(killed):
        t_end = killed[k + 1][0] if k + 1 < len(killed) else float("inf")
        left = tuple(sorted(r for r in regions if (Path("/dev/shm") / r).exists()))
        cycles.append(KillCycle(t_kill_s=round(t_kill, 3), dead_pid=pid, dead_regions=tuple(sorted(regions)),
                                left_regions=left, **cycle_of(outcomes, t_kill, t_end)))
    return cycles, outcomes


def summary(cycles: Sequence[KillCycle], outcomes: Sequence[Outcome]) -> dict:
    backs = [c.back_s for c in cycles]
    return {"kills": len(cycles), "requests": len(outcomes), "ok": sum(o.ok for o in outcomes),
            "lost": sum(o.error_kind in ("", "Lost") and not o.ok for o in outcomes),
            "unexplained_errors": sum((not o.ok) and not o.error for o in outcomes),
            "worst_back_s": None if None in backs else max(backs),
            "worst_back_answered_s": None if None in backs else max(c.back_answered_s for c in cycles),
            "worst_last_failure_any_kind_s": max((c.last_failure_s or 0.0) for c in cycles) if cycles else None,
            "regions_left": sum(len(c.left_regions) for c in cycles),
            "cycles": [dataclasses.asdict(c) for c in cycles]}


def plot(cycles: Sequence[KillCycle], outcomes: Sequence[Outcome], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.scatter([o.t_send_s for o in outcomes if o.ok], [o.latency_ms / 1000 for o in outcomes if o.ok], s=6,
               label="image (latency, s)")
    ax.scatter([o.t_send_s for o in outcomes if not o.ok], [0.0] * sum(not o.ok for o in outcomes), s=10,
               marker="x", color="tab:red", label="explicit error")
    for c in cycles:
        ax.axvline(c.t_kill_s, color="k", lw=0.8)
        if c.back_s is not None:
            ax.axvspan(c.t_kill_s, c.t_kill_s + c.back_s, color="tab:red", alpha=0.12)
    ax.set(xlabel="time since the stream started (s); black: SIGKILL of tritonserver, red: until back",
           ylabel="latency (s)", title="tritonserver killed while serving: supervised restart")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    from serving.config import load_cascade  # noqa: PLC0415
    from benchmarks.live.run import copy_repository  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_restart", description=__doc__.split("\n")[0])
    ap.add_argument("--cascade", default="configs/tiny.yaml")
    ap.add_argument("--repository", default=str(PROJECT_ROOT / "model_repository"))
    ap.add_argument("--profiles", default="", help="default profiles/<cascade name>/")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--slots", default="cpu:2")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--rate-qps", type=float, default=4.0)
    ap.add_argument("--period-s", type=float, default=20.0, help="seconds between two kills")
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    cascade = load_cascade(args.cascade)
    out = Path(args.out)
    run_dir = Path(tempfile.mkdtemp(prefix="bench_restart."))  # state, logs, a repository copy
    repo = copy_repository(Path(args.repository), run_dir / "repo", run_dir / "control.json")
    profiles = Path(args.profiles or PROJECT_ROOT / "profiles" / cascade.name)
    with Stack(repo, run_dir, args.cascade, profiles, args.device, args.slots, args.window_s) as stack:
        print(f"serving after {wait_serving(stack, 300):.1f} s; {args.kills} kills, one every "
              f"{args.period_s:g} s, {args.rate_qps:g} requests/s", flush=True)
        cycles, outcomes = kill_cycles(stack, args.kills, args.rate_qps, args.period_s)
        stack.stop_orchestrator()
        restarts = [json.loads(x) for x in (stack.log_dir / "orchestrator.jsonl").read_text().splitlines()
                    if '"server_restart"' in x]
    res = summary(cycles, outcomes)
    res.update(cascade=args.cascade, slots=args.slots, rate_qps=args.rate_qps, period_s=args.period_s,
               load_avg_1m=os.getloadavg()[0], cpu_count=os.cpu_count(),
               restarts=[{k: r.get(k) for k in ("result", "exit", "restart_s", "reapply_s", "regions_removed",
                                                 "stubs_killed")} for r in restarts])
    out.mkdir(parents=True, exist_ok=True)
    (out / "restart.json").write_text(json.dumps(res, indent=1))
    plot(cycles, outcomes, out / "restart.png")
    for name in ("orchestrator.jsonl", "metrics.prom"):  # the restart records and counters, as evidence
        shutil.copy(stack.log_dir / name, out / name)
    shutil.rmtree(run_dir, ignore_errors=True)
    for c in cycles:
        print(f"kill at {c.t_kill_s:6.1f} s: back after {c.back_s} s (answered {c.back_answered_s} s; last failure "
              f"of any kind {c.last_failure_s} s), {c.failed}/{c.requests} failed {c.error_kinds}, "
              f"dead regions left {len(c.left_regions)}")
    print(f"worst of {len(cycles)}: back after {res['worst_back_s']} s; lost {res['lost']}; "
          f"regions left {res['regions_left']} -> {out / 'restart.json'}")
    return 0 if res["worst_back_s"] is not None and res["lost"] == 0 and res["regions_left"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
