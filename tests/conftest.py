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
