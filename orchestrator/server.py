"""Start, wait for and stop a real ``tritonserver`` process from the project venv.

The Triton binary comes from the ``nvidia-pytriton`` wheel. Three environment traps are handled
here, in one place (see DEVELOPERS.md): the Python backend stub uses the first ``python3`` on
PATH (so the venv's ``bin/`` goes first), it links the interpreter's libpython (so its LIBDIR
goes on LD_LIBRARY_PATH), and it ignores PYTHONPATH (so the project root is put on ``sys.path``
by each model through the ``PROJECT_ROOT`` environment variable instead).

Usage::

    with TritonServer(TritonServerConfig(model_repository="model_repository")) as server:
        client = server.grpc_client()

CLI (used by ``make serve`` / ``make stop``)::

    python -m orchestrator.server start --model-repository model_repository --load-model cascade
    python -m orchestrator.server stop
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable

from orchestrator.processes import stop_process_group
from orchestrator.server_state import read_state, server_running, server_state, shm_record_file, state_file, write_state

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / "runs" / "server"


# Triton protocols that need the admin key (docs/deploy.md, "Threat model", says why each one):
# - model-repository: load/unload/index -- any client could unload the cascade or load a model;
# - shared-memory (system AND CUDA: one Triton category): registering a region makes the server
#   open any /dev/shm name or CUDA IPC handle and read inputs from / write outputs into it; a
#   Python-backend stub's own region as an output buffer kills tritonserver
#   (tests/test_security.py reproduces it);
# - model-config: the loaded configs name host paths (artifacts, control file, cascade YAML);
#   only the orchestrator and perf_analyzer read them, and both hold the key;
# - statistics, trace, logging: load and timing data, and server-wide settings (trace files,
#   log verbosity) a client could change.
# Open: inference (the service), health (probes and load balancers), metadata (the public I/O
# contract of docs/interfaces.md, which any Triton client library needs to build a request).
RESTRICTED_APIS = ("model-repository", "shared-memory", "model-config", "statistics", "trace", "logging")
ADMIN_KEY_ENV = "DIFFSERVE_ADMIN_KEY"
DEFAULT_ADMIN_KEY_FILE = DEFAULT_STATE_DIR / "admin_key"


class TritonNotInstalled(RuntimeError):
    """The tritonserver binary or its Python backend stub is missing (run ``make setup``)."""


class TritonStartError(RuntimeError):
    """tritonserver exited or did not become ready in time; the message holds its log tail."""


@dataclasses.dataclass(frozen=True)
class TritonServerConfig:
    """How to launch one tritonserver process.

    Ports of 0 mean "pick a free port". ``restricted_key`` (``header:value``), when set,
    restricts the protocols in :data:`RESTRICTED_APIS` to clients sending that header.
    ``die_with_parent`` (Linux): the server gets SIGTERM when the process that started it dies,
    even by SIGKILL, so a killed test run or benchmark leaves no tritonserver behind; the
    detached ``make serve`` server turns it off.
    """

    model_repository: str | Path = "model_repository"
    host: str = "127.0.0.1"
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    load_models: tuple[str, ...] = ()
    explicit_model_control: bool = True
    restricted_key: str | None = None
    startup_timeout_s: float = 180.0
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    log_path: str | Path | None = None
    die_with_parent: bool = True


def admin_headers(restricted_key: str | None, protocol: str = "grpc") -> dict[str, str]:
    """Request headers that unlock the restricted protocols for ``restricted_key`` ("header:value").

    Triton 2.51 checks gRPC metadata under the key ``triton-grpc-protocol-<header>`` (verified:
    its refusal says "expecting header 'triton-grpc-protocol-<header>'") and plain ``<header>``
    over HTTP. Returns ``{}`` when ``restricted_key`` is empty (an unrestricted server).
    """
    if not restricted_key:
        return {}
    header, _, value = restricted_key.partition(":")
    if not header or not value:
        raise ValueError(f"restricted_key must look like 'header:value', got {restricted_key!r}")
    if protocol == "grpc":
        return {f"triton-grpc-protocol-{header.lower()}": value}
    if protocol == "http":
        return {header: value}
    raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")


def read_admin_key(env: dict[str, str] | None = None, key_file: str | Path | None = None) -> str | None:
    """The admin key (``header:value``) of a running server: ``$DIFFSERVE_ADMIN_KEY`` when set, else
    the first line of ``key_file`` (default ``runs/server/admin_key``, written by ``make serve``),
    else None (an unrestricted server). Raises ValueError for a key not shaped ``header:value``."""
    key = (os.environ if env is None else env).get(ADMIN_KEY_ENV, "").strip()
    path = Path(key_file) if key_file is not None else DEFAULT_ADMIN_KEY_FILE
    if not key and path.is_file():
        key = (path.read_text().strip().splitlines() or [""])[0].strip()
    if not key:
        return None
    admin_headers(key)  # validates the shape
    return key


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def triton_root() -> Path:
    """Folder of the Triton distribution shipped in the nvidia-pytriton wheel."""
    try:
        import pytriton  # noqa: PLC0415 - optional until setup ran
    except ImportError as exc:  # pragma: no cover - setup problem
        raise TritonNotInstalled("nvidia-pytriton is not installed; run `make setup`") from exc
    root = Path(pytriton.__file__).parent / "tritonserver"
    stub = root / "backends" / "python" / "triton_python_backend_stub"
    if not (root / "bin" / "tritonserver").exists() or not stub.exists():
        raise TritonNotInstalled(f"tritonserver or its Python stub missing under {root}; run `make setup`")
    return root


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver so that its Python stub runs in this venv.

    Returns a copy of ``base`` (default ``os.environ``) with PATH, LD_LIBRARY_PATH and
    PROJECT_ROOT set and PYTHONPATH removed (the stub ignores it; models read PROJECT_ROOT).
    """
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libdirs = [sysconfig.get_config_var("LIBDIR") or ""]
    try:  # perf_analyzer and the CUDA-aware client libs want libcudart.so.12 even on CPU
        import nvidia.cuda_runtime  # noqa: PLC0415

        libdirs.append(str(Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"))
    except ImportError:
        pass
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = os.pathsep.join([d for d in libdirs if d] + ([old] if old else []))
    env["PROJECT_ROOT"] = str(PROJECT_ROOT)
    env.pop("PYTHONPATH", None)
    return env


def precompile_models(model_repository: str | Path) -> None:
    """Write ``__pycache__`` for every ``<model>/<version>/*.py`` before Triton loads them.

    Otherwise the Python stub (which ignores PYTHONDONTWRITEBYTECODE) writes it right after
    the first load; that changes the model folder, and Triton then turns the next
    ``load_model`` -- even an instance_group-only change, which should update instances in
    place -- into a full reload (verified on 2.51). Same interpreter version as the stub, so
    the stub finds the cache valid and writes nothing. A read-only repository is left alone.
    """
    import compileall  # noqa: PLC0415

    root = Path(model_repository)
    for version_dir in sorted(p for p in root.glob("*/*") if p.is_dir() and p.name.isdigit()):
        try:
            compileall.compile_dir(str(version_dir), maxlevels=0, quiet=2)
        except OSError:
            pass


class TritonServer:
    """One tritonserver process; a context manager that always stops it."""

    def __init__(self, config: TritonServerConfig):
        self.config = config
        self.http_port = config.http_port or free_port(config.host)
        self.grpc_port = config.grpc_port or free_port(config.host)
        self.metrics_port = config.metrics_port or free_port(config.host)
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self.log_path: Path | None = Path(config.log_path) if config.log_path else None

    # -- addresses ---------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        """The tritonserver command line for this config."""
        root = triton_root()
        c = self.config
        cmd = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={Path(c.model_repository).resolve()}",
            f"--backend-directory={root / 'backends'}",
            f"--http-address={c.host}", f"--http-port={self.http_port}",
            f"--grpc-address={c.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={c.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            f"--log-verbose={c.log_verbose}",
            "--exit-timeout-secs=10",
        ]
        if c.explicit_model_control:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in c.load_models]
        if c.restricted_key:
            header, _, value = c.restricted_key.partition(":")
            if not header or not value:
                raise ValueError(f"restricted_key must look like 'header:value', got {c.restricted_key!r}")
            # Triton 2.51 spells the two flags differently (verified against `tritonserver --help`:
            # `--grpc-restricted-api` is rejected at start-up); both take `<apis>:<header>=<value>`.
            apis = ",".join(RESTRICTED_APIS)
            cmd.append(f"--grpc-restricted-protocol={apis}:{header}={value}")
            cmd.append(f"--http-restricted-api={apis}:{header}={value}")
        return cmd + list(c.extra_args)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, on_spawn: "Callable[[TritonServer], None] | None" = None) -> "TritonServer":
        """Launch the process and block until the server reports ready (or raise).
        ``on_spawn`` is called right after the process exists (a supervisor records its pid
        before waiting: a launcher killed while it waits leaves no unknown server behind)."""
        precompile_models(self.config.model_repository)
        if self.log_path is None:
            DEFAULT_STATE_DIR.mkdir(parents=True, exist_ok=True)
            self.log_path = DEFAULT_STATE_DIR / f"tritonserver-{self.grpc_port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(), stdout=self._log_file, stderr=subprocess.STDOUT, env=server_env(),
            start_new_session=True,  # so stop() can signal the stubs too
            preexec_fn=_die_with_parent if self.config.die_with_parent and sys.platform == "linux" else None,
        )
        try:
            if on_spawn is not None:
                on_spawn(self)
            self.wait_ready(self.config.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll the HTTP readiness endpoint until ready; raise TritonStartError on exit/timeout."""
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TritonStartError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - local URL
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise TritonStartError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last ``n_chars`` characters of the server log."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_bytes()[-n_chars:].decode(errors="replace")
        return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server (and its stubs), then SIGKILL after ``timeout_s``."""
        stop_process_group(self.process, timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------------
    def grpc_client(self, **kwargs):
        """A ``tritonclient.grpc.InferenceServerClient`` for this server."""
        import tritonclient.grpc as grpcclient  # noqa: PLC0415

        return grpcclient.InferenceServerClient(self.grpc_url, **kwargs)


def _die_with_parent() -> None:
    """In the forked child: ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    import ctypes  # noqa: PLC0415

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


# ---------------------------------------------------------------------------------------
# CLI: a detached server for `make serve` / `make stop`, with its pid and ports in a state file
# ---------------------------------------------------------------------------------------
def launch_detached(server: TritonServer, state_dir: Path) -> TritonServer:
    """Start ``server`` (which must outlive its launcher: ``die_with_parent`` off) and record its
    state as soon as it exists, and again once ready. Raises TritonStartError like ``start``."""
    if server.config.die_with_parent:
        raise ValueError("launch_detached: expected a config with die_with_parent=False (the server outlives us)")
    server.start(on_spawn=lambda s: write_state(state_dir, server_state(s)))
    write_state(state_dir, server_state(server))
    return server


def _cli_start(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    st = read_state(state_dir)
    if st is not None and server_running(st):
        print(f"tritonserver already running (pid {st['pid']}, grpc {st['grpc']}); `make stop` first")
        return 1
    cfg = TritonServerConfig(
        model_repository=args.model_repository, host=args.host, http_port=args.http_port,
        grpc_port=args.grpc_port, metrics_port=args.metrics_port, load_models=tuple(args.load_model),
        restricted_key=args.restricted_key or None, log_path=state_dir / "tritonserver.log",
        startup_timeout_s=args.timeout_s, die_with_parent=False,  # outlives this CLI
    )
    server = TritonServer(cfg)
    print(f"starting tritonserver: grpc {server.grpc_url}, http {server.http_url}, metrics {server.metrics_url}")
    launch_detached(server, state_dir)
    # Detach: the server runs on after this CLI exits; `stop` signals its process group.
    server.process = None
    print(f"tritonserver ready (log: {server.log_path}); state in {state_file(state_dir)}")
    return 0


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def terminate(pid: int, timeout_s: float, process_group: bool = False) -> None:
    """SIGTERM ``pid`` (or its process group), then SIGKILL if it is still alive after ``timeout_s``."""
    kill = os.killpg if process_group else os.kill
    if not pid_alive(pid):
        return
    kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        kill(pid, signal.SIGKILL)


def _cli_stop(args: argparse.Namespace) -> int:
    """Stop the detached server: exit 0 when it was running and is stopped; exit 1 when it had
    already exited (its state and its leftover /dev/shm regions are removed, and it says so)."""
    from orchestrator.shm import cleanup_dead_server, load_record  # noqa: PLC0415

    state_dir = Path(args.state_dir)
    st = read_state(state_dir)
    if st is None:
        print("no tritonserver state file; nothing to stop")
        return 0
    pid = int(st["pid"])
    record = shm_record_file(state_dir)
    if not server_running(st):
        cleaned = cleanup_dead_server(pid, load_record(record, pid))
        state_file(state_dir).unlink()
        record.unlink(missing_ok=True)
        print(f"tritonserver (pid {pid}) was NOT running: it had exited (log: {st.get('log')}); removed its state "
              f"and {len(cleaned['regions_removed'])} leftover /dev/shm regions")
        return 1
    terminate(pid, timeout_s=20, process_group=True)
    state_file(state_dir).unlink()
    record.unlink(missing_ok=True)
    print(f"tritonserver (pid {pid}) stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.server", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a detached tritonserver and wait until ready")
    s.add_argument("--model-repository", default=str(PROJECT_ROOT / "model_repository"))
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: localhost only)")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--load-model", action="append", default=[], help="model to load at start (repeatable)")
    s.add_argument("--restricted-key", default=os.environ.get("DIFFSERVE_ADMIN_KEY", ""),
                   help="'header:value' required for the restricted APIs: " + ", ".join(RESTRICTED_APIS))
    s.add_argument("--timeout-s", type=float, default=300.0)
    s.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    t = sub.add_parser("stop", help="stop the server started by `start`")
    t.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR))
    args = ap.parse_args(argv)
    return _cli_start(args) if args.cmd == "start" else _cli_stop(args)


if __name__ == "__main__":
    sys.exit(main())
