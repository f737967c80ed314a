"""The gRPC client CLI and API against the cascade on a real tritonserver."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from client import CascadeClient, main
from client.errors import InvalidRequest, RequestDropped, ServerUnavailable

pytestmark = pytest.mark.triton


def test_cli_writes_png_and_prints_served_by_confidence_latency(cascade_stack, tmp_path, capsys):
    out = tmp_path / "img" / "out.png"
    rc = main(["a hard red circle above a blue square", "-o", str(out), "--url", cascade_stack[0].grpc_url, "--seed", "4"])
    assert rc == 0
    line = capsys.readouterr().out
    assert "served_by=heavy" in line and "confidence=0." in line and "latency_ms=" in line
    img = np.asarray(Image.open(out))
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8


def test_cli_exit_codes_for_invalid_and_dropped_requests(cascade_stack, tmp_path, capsys):
    url = cascade_stack[0].grpc_url
    assert main(["   ", "-o", str(tmp_path / "x.png"), "--url", url]) == 2
    assert "PROMPT[0] has no printable character" in capsys.readouterr().err
    assert main(["an easy one", "-o", str(tmp_path / "y.png"), "--url", url]) == 0  # latencies observed
    assert main(["an easy one", "-o", str(tmp_path / "z.png"), "--url", url, "--slo-ms", "0.5"]) == 3
    assert "dropped" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "z.png").exists()


def test_api_maps_errors_to_project_exceptions(cascade_stack):
    with CascadeClient(cascade_stack[0].grpc_url) as client:
        with pytest.raises(InvalidRequest):
            client.generate(b"\xff")
        client.generate("an easy one")
        with pytest.raises(RequestDropped):
            client.generate("an easy one", slo_ms=0.5)
    with CascadeClient("127.0.0.1:1", timeout_s=5) as dead:
        with pytest.raises(ServerUnavailable):
            dead.generate("anything")


def test_triton_queue_refusals_classify_as_dropped():
    from client.errors import DROP_MARKER, classify  # noqa: PLC0415

    assert classify("StatusCode.UNAVAILABLE", "Exceeds maximum queue size") is RequestDropped
    assert classify("StatusCode.UNAVAILABLE", "Request timeout expired") is RequestDropped
    assert classify("StatusCode.UNAVAILABLE", f"{DROP_MARKER} request dropped: ...") is RequestDropped
    assert classify("StatusCode.UNAVAILABLE", "failed to connect to all addresses") is ServerUnavailable
