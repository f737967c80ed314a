"""``benchmarks.demo`` end to end over a real exported cascade: images, contact sheet, table, server stopped."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import demo

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_demo_serves_prompts_writes_images_and_sheet_and_stops_the_server(tiny_exported, tmp_path, capsys, monkeypatch):
    from conftest import add_cascade_model, point_control_files  # noqa: PLC0415

    cfg, exported = tiny_exported("sd")
    repo = Path(shutil.copytree(exported, tmp_path / "repository"))
    add_cascade_model(repo)
    control = tmp_path / "control.json"
    point_control_files(repo, control)
    started = []
    real_start = demo.TritonServer.start

    def spy_start(self):
        started.append(self)
        return real_start(self)

    monkeypatch.setattr(demo.TritonServer, "start", spy_start)
    rc = demo.main(["--cascade", str(cfg), "--model-repository", str(repo), "--out", str(tmp_path / "demo"),
                    "--per-difficulty", "2", "--threshold", "median"])
    assert rc == 0
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["difficulty"] for r in rows] == ["easy", "easy", "hard", "hard"]
    t = rows[0]["threshold"]
    assert t == pytest.approx(float(np.median([r["confidence"] for r in rows])), abs=1e-3)
    assert all((r["served_by"] == "heavy") == (r["confidence"] < t) for r in rows)
    assert all(Image.open(r["image"]).size == (32, 32) for r in rows)
    assert Image.open(tmp_path / "demo" / "contact_sheet.png").size[0] > 400
    table = capsys.readouterr().out
    assert "served_by" in table and "confidence" in table and "latency ms" in table
    assert json.loads(control.read_text())["threshold"] == pytest.approx(t)
    assert started and started[0].process.poll() is not None  # the server was stopped


def test_demo_stops_the_server_when_a_request_fails_midway(tiny_exported, tmp_path, monkeypatch):
    from client import CascadeClient  # noqa: PLC0415
    from conftest import add_cascade_model, point_control_files  # noqa: PLC0415

    cfg, exported = tiny_exported("sd")
    repo = Path(shutil.copytree(exported, tmp_path / "repository"))
    add_cascade_model(repo)
    point_control_files(repo, tmp_path / "control.json")
    started = []
    real_start = demo.TritonServer.start
    monkeypatch.setattr(demo.TritonServer, "start", lambda self: started.append(self) or real_start(self))
    calls = []

    def failing_generate(self, *a, **kw):
        calls.append(a)
        if len(calls) > 2:
            raise RuntimeError("simulated failure in the middle of the demo")
        return real_generate(self, *a, **kw)

    real_generate = CascadeClient.generate
    monkeypatch.setattr(CascadeClient, "generate", failing_generate)
    with pytest.raises(RuntimeError, match="simulated failure"):
        demo.main(["--cascade", str(cfg), "--model-repository", str(repo), "--out", str(tmp_path / "demo"),
                   "--per-difficulty", "2"])
    assert started and started[0].process.poll() is not None  # stopped although the demo failed


def test_demo_refuses_an_unexported_repository(tmp_path, capsys):
    (tmp_path / "cascade").mkdir()
    assert demo.main(["--model-repository", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "make export" in capsys.readouterr().err
