"""The control file reader/writer (docs/interfaces.md section 3)."""
from __future__ import annotations

import json
import os

import pytest

from serving.control import (
    ControlFile, ControlState, chunk_sizes, parse_control, read_control, resolve_control_path, write_control,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_full_example_from_interfaces_page_parses():
    s = parse_control({"version": 7, "threshold": 0.42, "routing": "cascade", "heavy_share": 0.0,
                       "slo_ms": 5000, "batch_size": {"light": 8, "heavy": 2, "discriminator": 8}})
    assert (s.version, s.threshold, s.routing, s.slo_ms) == (7, 0.42, "cascade", 5000.0)
    assert s.batch_size_for("heavy") == 2 and s.batch_size_for("light") == 8


def test_omitted_keys_keep_the_base_values():
    base = ControlState(threshold=0.3, slo_ms=1000.0)
    s = parse_control({"routing": "heavy"}, base)
    assert (s.threshold, s.slo_ms, s.routing) == (0.3, 1000.0, "heavy")
    assert s.batch_size_for("light", default=4) == 4


@pytest.mark.parametrize("obj, words", [
    ({"threshold": 1.5}, ["threshold", "1.5", "[0.0, 1.0]"]),
    ({"threshold": "0.4"}, ["threshold", "'0.4'"]),
    ({"routing": "fastest"}, ["routing", "'fastest'", "cascade"]),
    ({"batch_size": {"light": 0}}, ["batch_size['light']", "0", "[1, 32]"]),
    ({"batch_size": {"light": 33}}, ["33"]),
    ({"batch_size": {"vae": 2}}, ["'vae'"]),
    ({"treshold": 0.4}, ["unknown keys", "treshold"]),
    ({"slo_ms": -5}, ["slo_ms", "-5"]),
    ([1, 2], ["JSON object"]),
])
def test_bad_values_are_rejected_naming_value_and_expectation(obj, words):
    with pytest.raises(ValueError) as err:
        parse_control(obj)
    for w in words:
        assert w in str(err.value)


def test_write_then_read_round_trips(tmp_path):
    s = ControlState(version=3, threshold=0.7, routing="random", heavy_share=0.25, slo_ms=900.0,
                     batch_size={"light": 4})
    path = write_control(tmp_path / "c" / "tiny.json", s)
    assert read_control(path) == s
    assert not [p for p in path.parent.iterdir() if p.name != "tiny.json"]  # no temp files left


def test_reader_picks_up_a_new_file_after_the_check_interval_only(tmp_path):
    clock = FakeClock()
    path = tmp_path / "tiny.json"
    reader = ControlFile(path, ControlState(threshold=0.5), check_interval_s=0.1, clock=clock)
    assert reader.get().threshold == 0.5  # missing file: defaults
    write_control(path, {"threshold": 0.9})
    clock.t = 0.05
    assert reader.get().threshold == 0.5  # within 100 ms of the last check: cached
    clock.t = 0.2
    assert reader.get().threshold == 0.9
    write_control(path, {"threshold": 0.1, "version": 2})
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**6))  # coarse-mtime filesystems
    clock.t = 0.4
    assert reader.get().threshold == 0.1


def test_reader_tells_two_states_written_within_one_mtime_tick_apart(tmp_path):
    """Coarse-mtime filesystems: a second state replaced in within the same mtime tick (and of
    the same size) is still a new file (new inode), so the reader takes it."""
    clock = FakeClock()
    path = write_control(tmp_path / "tiny.json", {"version": 1, "threshold": 0.2})
    reader = ControlFile(path, clock=clock)
    assert reader.get().version == 1
    mtime_ns = path.stat().st_mtime_ns
    write_control(path, {"version": 2, "threshold": 0.3})
    os.utime(path, ns=(1, mtime_ns))  # the same tick as the first state
    clock.t = 1.0
    assert (reader.get().version, reader.get().threshold) == (2, 0.3)


def test_broken_file_keeps_last_good_state_and_reports(tmp_path):
    clock = FakeClock()
    path = write_control(tmp_path / "tiny.json", {"threshold": 0.8})
    reader = ControlFile(path, clock=clock)
    assert reader.get().threshold == 0.8
    path.write_text(json.dumps({"threshold": 7}))
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**6))
    clock.t = 1.0
    assert reader.get().threshold == 0.8
    assert "threshold=7" in reader.last_error
    path.write_text("{not json")
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 2 * 10**6))
    clock.t = 2.0
    assert reader.get().threshold == 0.8 and "not valid JSON" in reader.last_error


def test_chunk_sizes_cover_every_item_in_order():
    assert chunk_sizes(5, 2) == [2, 2, 1]
    assert chunk_sizes(4, 4) == [4]
    assert chunk_sizes(0, 3) == []
    with pytest.raises(ValueError):
        chunk_sizes(3, 0)


def test_relative_control_path_is_under_project_root(tmp_path):
    assert resolve_control_path("runs/control/x.json", tmp_path) == tmp_path / "runs/control/x.json"
    assert resolve_control_path("/abs/x.json", tmp_path).as_posix() == "/abs/x.json"
