"""A cluster on one machine (``make cluster``): N Triton nodes, one orchestrator planning over
all their slots, a control agent per node, HAProxy in front on one client port, Prometheus.

Each node is its own ``tritonserver`` (own ports, own model control, ``slots_per_node`` CPU
slots standing in for GPUs) over its own copy of the model repository whose ``control_file``
points at the node's own control file (no shared storage): the node's agent
(:mod:`deploy.agent`) pulls versioned states from the orchestrator's endpoint into it. The
orchestrator applies routing weights to HAProxy through its runtime socket. A supervisor
restarts any child that exits (a node after ``restart_delay_s``, at the same ports), like a
Kubernetes restart policy; the orchestrator adopts the node when it answers again.

    python -m deploy.cluster start --nodes 3      # detached; waits until every node serves
    python -m deploy.cluster status
    python -m deploy.cluster stop

Everything lives under ``run_dir`` (default ``runs/cluster/``): ``cluster.json`` (ports, pids),
``node-<i>/`` (repository copy, control file, logs), ``orchestrator/`` (its JSON-lines log and
weights), ``haproxy.cfg``, ``prometheus.yml`` and Prometheus' data.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deploy import haproxy, prometheus
from deploy.processes import Child
from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig, free_port
from serving.model_config import available_cores, cpu_slot_threads

STAGE_MODELS = ("light", "heavy", "discriminator", "cascade")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """What ``make cluster`` starts. Ports of 0 are picked free at start; times in seconds."""

    nodes: int = 3
    slots_per_node: int = 2
    model_repository: Path = PROJECT_ROOT / "model_repository"
    profiles: Path = PROJECT_ROOT / "profiles" / "tiny"
    device: str = "auto"
    policy: str = "diffserve"
    window_s: float = 5.0
    slo_ms: float = 5000.0
    run_dir: Path = PROJECT_ROOT / "runs" / "cluster"
    host: str = "127.0.0.1"
    grpc_port: int = 9001  # the balancer's client port
    orchestrator_port: int = 0
    prometheus_port: int = 9090
    scrape_interval_s: float = 1.0
    restart_delay_s: float = 2.0
    stale_after_s: float = 3.0
    admin_key: str = ""  # "header:value"; empty: a random one (written 0600 under run_dir)
    orchestrator_args: tuple[str, ...] = ()  # more `python -m orchestrator run` flags

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.slots_per_node < 1:
            raise ValueError(f"nodes={self.nodes}, slots_per_node={self.slots_per_node}; expected >= 1 each")
        if not self.window_s > 0 or self.restart_delay_s < 0:
            raise ValueError(f"window_s={self.window_s}, restart_delay_s={self.restart_delay_s}; "
                             "expected > 0 and >= 0 seconds")


def node_repository(src: Path, dest: Path, control_file: Path) -> Path:
    """``dest``: ``src`` with every model's ``control_file`` parameter pointed at this node's file.

    Config files are rewritten copies; everything else is a symlink to ``src`` (no copy of weights).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(Path(src).resolve().iterdir()):
        if entry.name == "__pycache__":
            continue
        target = dest / entry.name
        if entry.is_dir():
            target.mkdir(exist_ok=True)
            for child in entry.iterdir():
                link = target / child.name
                if child.name == "config.pbtxt":
                    text = re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control_file}"',
                                  child.read_text())
                    link.write_text(text)
                elif not link.is_symlink() and not link.exists():
                    link.symlink_to(child)
        elif not target.is_symlink() and not target.exists():
            target.symlink_to(entry)
    return dest


@dataclasses.dataclass
class Node:
    """One node: its server (restartable at the same ports) and its control agent."""

    index: int
    server: TritonServer
    agent: Child
    dir: Path
    restart_at: float | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return self.server.grpc_url


class Cluster:
    """Start, supervise and stop the whole cluster (a context manager)."""

    def __init__(self, config: ClusterConfig):
        self.config = c = config
        self.run_dir = Path(c.run_dir).resolve()
        self.admin_key = c.admin_key or _new_key(self.run_dir)
        self.orchestrator_port = c.orchestrator_port or free_port(c.host)
        self.prometheus_port = c.prometheus_port or free_port(c.host)
        self.grpc_port = c.grpc_port or free_port(c.host)
        self.haproxy_stats_port = free_port(c.host)
        self.runtime_socket = _socket_path(self.run_dir / "haproxy.sock")
        self.nodes = [self._make_node(i) for i in range(c.nodes)]
        self.events: list[dict[str, Any]] = []
        self.started_unix_s = float("inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.haproxy = Child("haproxy", haproxy.command(self.run_dir / "haproxy.cfg"), self.run_dir / "haproxy.log")
        self.prometheus = Child("prometheus", prometheus.command(self.run_dir / "prometheus.yml",
                                                                  self.run_dir / "prometheus-data",
                                                                  f"{c.host}:{self.prometheus_port}"),
                                self.run_dir / "prometheus.log")
        self.orchestrator = Child("orchestrator", self._orchestrator_argv(), self.run_dir / "orchestrator" / "orchestrator.out",
                                  env={"DIFFSERVE_ADMIN_KEY": self.admin_key}, cwd=PROJECT_ROOT)

    # -- addresses -------------------------------------------------------------------------
    @property
    def balancer_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def orchestrator_url(self) -> str:
        return f"http://{self.config.host}:{self.orchestrator_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.config.host}:{self.prometheus_port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "orchestrator" / "orchestrator.jsonl"

    def _make_node(self, i: int) -> Node:
        c = self.config
        node_dir = self.run_dir / f"node-{i}"
        control = node_dir / "control.json"
        repo = node_repository(Path(c.model_repository), node_dir / "repository", control)
        server = TritonServer(TritonServerConfig(model_repository=repo, host=c.host, restricted_key=self.admin_key,
                                                 log_path=node_dir / "tritonserver.log"))
        agent = Child(f"agent-{i}", [sys.executable, "-m", "deploy.agent", "--orchestrator",
                                     f"http://{c.host}:{self.orchestrator_port}", "--node", server.grpc_url,
                                     "--control-file", str(control)],
                      node_dir / "agent.log", env={"DIFFSERVE_ADMIN_KEY": self.admin_key}, cwd=PROJECT_ROOT)
        return Node(i, server, agent, node_dir)

    def _orchestrator_argv(self) -> list[str]:
        c = self.config
        return [sys.executable, "-m", "orchestrator", "run", "--nodes-file", str(self.run_dir / "nodes.json"),
                "--profiles", str(c.profiles), "--device", c.device, "--policy", c.policy,
                "--window-s", str(c.window_s), "--slo-ms", str(c.slo_ms),
                "--control-file", str(self.run_dir / "orchestrator" / "control.json"),
                "--log-dir", str(self.run_dir / "orchestrator"), "--http-host", c.host,
                "--http-port", str(self.orchestrator_port), "--haproxy-socket", self.runtime_socket,
                "--stale-after-s", str(c.stale_after_s), *c.orchestrator_args]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Cluster":
        """Write the configs, start nodes, HAProxy, Prometheus, the orchestrator and the agents,
        then supervise (restart what exits) in a background thread."""
        try:
            self.started_unix_s = time.time()
            self._write_configs()
            # One after the other, in this thread: a child's PR_SET_PDEATHSIG fires when the THREAD
            # that started it ends, so servers started in helper threads would be stopped at once.
            for node in self.nodes:
                node.server.start()
            for child in (self.haproxy, self.prometheus, self.orchestrator):
                child.start()
            for node in self.nodes:
                node.agent.start()
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="cluster-supervisor", daemon=True)
        self._supervisor.start()
        self._event("started", nodes=[n.url for n in self.nodes])
        return self

    def _write_configs(self) -> None:
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Every node runs on this machine: each CPU slot's share is of the cores all slots share.
        threads = cpu_slot_threads(available_cores(), c.nodes * c.slots_per_node)
        nodes = [{"url": n.url, "metrics_url": n.server.metrics_url, "slots": f"cpu:{c.slots_per_node}",
                  "cpu_threads": threads} for n in self.nodes]
        (self.run_dir / "nodes.json").write_text(json.dumps(nodes, indent=1))
        backends = [haproxy.Backend(n.url, n.server.http_port) for n in self.nodes]
        (self.run_dir / "haproxy.cfg").write_text(haproxy.render_config(
            backends, self.balancer_url, self.runtime_socket, f"{c.host}:{self.haproxy_stats_port}"))
        (self.run_dir / "prometheus.yml").write_text(prometheus.render_config(
            {n.url: f"{c.host}:{n.server.metrics_port}" for n in self.nodes},
            f"{c.host}:{self.orchestrator_port}", f"{c.host}:{self.haproxy_stats_port}", c.scrape_interval_s))

    def stop(self) -> None:
        """Orchestrator first (no more changes), then agents, balancer, Prometheus, nodes."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
        for child in [self.orchestrator] + [n.agent for n in self.nodes] + [self.haproxy, self.prometheus]:
            child.stop()
        for node in self.nodes:
            node.server.stop()

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- supervision -------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            for node in self.nodes:
                self._supervise_node(node, now)
            for child in [self.haproxy, self.prometheus, self.orchestrator] + [n.agent for n in self.nodes]:
                if child.process is not None and child.process.poll() is not None and not self._stop.is_set():
                    self._event("exited", child=child.name, returncode=child.process.returncode)
                    child.start()
                    self._event("restarted", child=child.name)

    def _supervise_node(self, node: Node, now: float) -> None:
        p = node.server.process
        if p is None or p.poll() is None or self._stop.is_set():
            return
        if node.restart_at is None:
            node.restart_at = now + self.config.restart_delay_s
            self._event("node_exited", node=node.url, returncode=p.returncode)
            _kill_group(p.pid)  # its Python-backend stubs outlive a SIGKILLed server (seen): same group
            node.server.stop()
            return
        if now < node.restart_at:
            return
        try:
            node.server.start()
            node.restarts += 1
            self._event("node_restarted", node=node.url)
        except Exception as exc:  # noqa: BLE001 - keep supervising; try again after the delay
            self._event("node_restart_failed", node=node.url, error=str(exc)[:300])
            node.restart_at = time.monotonic() + self.config.restart_delay_s
            return
        node.restart_at = None

    def _event(self, kind: str, **kw: Any) -> None:
        rec = {"event": kind, "t_unix_s": round(time.time(), 3), **kw}
        with self._lock:
            self.events.append(rec)
        with open(self.run_dir / "events.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    # -- reading what runs -------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Addresses and pids (``cluster.json``)."""
        return {"balancer": self.balancer_url, "orchestrator": self.orchestrator_url,
                "prometheus": self.prometheus_url, "haproxy_socket": self.runtime_socket,
                "haproxy_stats": f"http://{self.config.host}:{self.haproxy_stats_port}/stats",
                "admin_key_file": str(self.run_dir / "admin_key"),
                "nodes": [{"url": n.url, "http": n.server.http_url, "metrics": n.server.metrics_url,
                           "pid": n.server.process.pid if n.server.process else None, "agent_pid": n.agent.pid,
                           "control_file": str(n.dir / "control.json")} for n in self.nodes],
                "orchestrator_pid": self.orchestrator.pid, "haproxy_pid": self.haproxy.pid,
                "prometheus_pid": self.prometheus.pid}

    def node_ready(self, node: Node, model: str = "cascade") -> bool:
        try:
            client = node.server.grpc_client()
            try:
                return bool(client.is_model_ready(model))
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - a node that does not answer is not ready
            return False

    def weights(self) -> dict[str, int]:
        """The orchestrator's last published weights (``{}`` before its first in this cluster run:
        a file left by an earlier run in the same folder does not count)."""
        try:
            doc = json.loads((self.run_dir / "orchestrator" / "routing_weights.json").read_text())
        except (OSError, ValueError):
            return {}
        return dict(doc.get("cluster_weights", {})) if doc.get("updated_unix_s", 0) >= self.started_unix_s else {}

    def wait_serving(self, timeout_s: float) -> None:
        """Block until every node's cascade model is ready, the orchestrator has published
        weights for all of them, and a request through the balancer gets an image; raises
        TimeoutError with the orchestrator's log tail. (A node may have weight 0: a plan for
        low demand can leave a node without light, docs/deploy.md.)"""
        from client.cascade import CascadeClient  # noqa: PLC0415

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            w = self.weights()
            if len(w) == len(self.nodes) and sum(w.values()) > 0 and all(self.node_ready(n) for n in self.nodes):
                try:
                    with CascadeClient(self.balancer_url, timeout_s=30) as client:
                        client.generate("a red circle", seed=1)
                    return
                except Exception:  # noqa: BLE001 - not yet: keep waiting until the deadline
                    pass
            time.sleep(0.5)
        raise TimeoutError(f"cluster not serving on every node after {timeout_s:.0f} s; weights {self.weights()}; "
                           f"orchestrator log:\n{self.orchestrator.log_tail()}")


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group (the server was started in a session of its own)."""
    import signal  # noqa: PLC0415

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _new_key(run_dir: Path) -> str:
    """A random admin key in ``run_dir/admin_key`` (mode 0600), reused while the file exists."""
    path = run_dir / "admin_key"
    run_dir.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    key = f"x-diffserve-admin:{os.urandom(16).hex()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _socket_path(preferred: Path) -> str:
    """A unix socket path: ``preferred`` unless it is past the 107-byte limit, else one under /tmp."""
    if len(str(preferred)) < 100:
        return str(preferred)
    import hashlib  # noqa: PLC0415

    return f"/tmp/diffserve-haproxy-{hashlib.sha1(str(preferred).encode()).hexdigest()[:12]}.sock"
