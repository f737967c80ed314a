"""Shared fixtures. ``triton_server_factory`` starts real tritonserver processes on free ports."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from orchestrator.server import TritonServer, TritonServerConfig

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture
def triton_server_factory(tmp_path):
    """Call with a model repository (and TritonServerConfig fields); returns a ready server.

    Every server started through the factory is stopped at teardown, also when the test fails.
    """
    servers: list[TritonServer] = []

    def start(model_repository, **kwargs) -> TritonServer:
        kwargs.setdefault("log_path", tmp_path / f"tritonserver-{len(servers)}.log")
        server = TritonServer(TritonServerConfig(model_repository=model_repository, **kwargs))
        servers.append(server)
        return server.start()

    yield start
    for s in servers:
        with contextlib.suppress(Exception):
            s.stop()


@pytest.fixture
def smoke_server(triton_server_factory):
    """A real tritonserver over the trivial smoke repository with the ``smoke`` model loaded."""
    return triton_server_factory(ASSETS / "smoke_repository", load_models=("smoke",))


@pytest.fixture
def smoke_client(smoke_server):
    """A gRPC client connected to ``smoke_server``."""
    client = smoke_server.grpc_client()
    yield client
    client.close()


# --- the cascade over stand-in stages (tests/assets/cascade_repository) -----------------------
CASCADE_MODELS = ("light", "heavy", "discriminator", "cascade")


def point_control_files(repo: Path, control_file: Path, chunks_file: Path | None = None) -> None:
    """Set the ``control_file`` (and stand-ins' ``chunks_file``) parameter of every model in ``repo``."""
    import re  # noqa: PLC0415

    for cfg in repo.glob("*/config.pbtxt"):
        text = re.sub(r'(key: "control_file" value: \{ string_value: )"[^"]*"', rf'\1"{control_file}"', cfg.read_text())
        if chunks_file is not None:
            text = re.sub(r'(key: "chunks_file" value: \{ string_value: )"[^"]*"', rf'\1"{chunks_file}"', text)
        cfg.write_text(text)


def add_cascade_model(repo: Path) -> Path:
    """Copy the real ``model_repository/cascade`` (config + thin model.py) into ``repo``."""
    import shutil  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "model_repository" / "cascade", repo / "cascade", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
    return repo


def build_cascade_repository(dest: Path, control_file: Path, chunks_file: Path | None = None) -> Path:
    """A model repository under ``dest``: the stand-in stages plus the REAL cascade model.

    The ``control_file`` (and stand-ins' ``chunks_file``) parameters are pointed at the given
    paths so that tests control threshold, routing and batch sizes at runtime.
    """
    import shutil  # noqa: PLC0415

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASSETS / "cascade_repository" / "standin.py", dest / "standin.py")
    for stage in ("light", "heavy", "discriminator"):
        shutil.copytree(ASSETS / "cascade_repository" / stage, dest / stage, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    add_cascade_model(dest)
    point_control_files(dest, control_file, chunks_file)
    return dest


@pytest.fixture(scope="session")
def cascade_stack(tmp_path_factory):
    """One real tritonserver for the session: stand-in stages + the cascade, all loaded.

    Yields ``(server, control_file, chunks_file)``. Tests that write the control file must
    restore it (``control_file.unlink()`` = defaults) before they return.
    """
    tmp = tmp_path_factory.mktemp("cascade")
    control, chunks = tmp / "control.json", tmp / "chunks.jsonl"
    repo = build_cascade_repository(tmp / "repo", control, chunks)
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=CASCADE_MODELS,
                                         log_path=tmp / "tritonserver.log")) as server:
        yield server, control, chunks


@pytest.fixture(scope="session")
def tiny_exported(tmp_path_factory):
    """Factory ``kind -> (cascade_config_path, model_repository)``: tiny random SD or SDXL pipelines
    exported (with verification) once per test session by ``export.build.export_cascade``."""
    from export.testing import export_tiny_cascade  # noqa: PLC0415 - imports torch/diffusers

    cache: dict[str, tuple[Path, Path]] = {}

    def get(kind: str = "sd") -> tuple[Path, Path]:
        if kind not in cache:
            cache[kind] = export_tiny_cascade(tmp_path_factory.mktemp(f"tiny-{kind}"), kind)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def real_cascade_stack(tiny_exported, tmp_path_factory):
    """The tiny RANDOM-weight SD cascade exported by ``export`` (ONNX stages served by the real
    stage models) plus the cascade model, on one real tritonserver for the session.

    Yields ``(server, control_file, repository)``; the repository is a copy (the shared
    ``tiny_exported`` one stays untouched).
    """
    import shutil  # noqa: PLC0415

    _, exported = tiny_exported("sd")
    tmp = tmp_path_factory.mktemp("real_cascade")
    repo = Path(shutil.copytree(exported, tmp / "repository"))
    control = tmp / "control.json"
    add_cascade_model(repo)
    point_control_files(repo, control)
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=CASCADE_MODELS,
                                         log_path=tmp / "tritonserver.log")) as server:
        yield server, control, repo


@pytest.fixture(scope="session")
def tiny_aot_exported(tmp_path_factory):
    """The embedded tiny cascade's ``light`` stage exported with float32 CPU AOTInductor packages
    (text encoder, UNet, VAE decoder; ``--cpu-aot``), once per test session: the g++ compile costs
    ~1 min of CPU. Returns ``(cascade, repository, verification results)``."""
    import shutil  # noqa: PLC0415

    from export.build import ExportOptions, export_cascade  # noqa: PLC0415 - imports torch/diffusers
    from serving.config import PROJECT_ROOT, load_cascade  # noqa: PLC0415

    cascade = load_cascade(PROJECT_ROOT / "configs" / "tiny.yaml")
    repo = tmp_path_factory.mktemp("tiny-aot") / "repository"
    results = export_cascade(cascade, repo, ExportOptions(cpu_aot=True, gpu_engines="off", stages=("light",)),
                             log=lambda _msg: None)
    shutil.copy(PROJECT_ROOT / "model_repository" / "light" / "1" / "model.py", repo / "light" / "1" / "model.py")
    return cascade, repo, results
