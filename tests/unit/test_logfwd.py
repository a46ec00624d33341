"""The log forwarder (containai.inside.logfwd): in-process on real files, and once through its launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from containai.inside import logfwd
from containai.inside.logfwd import Follower, forward, parse_args

from .image_layout import lay_out


def clock() -> str:
    return "2030-01-01T00:00:00.000+00:00"


def shipped(dest: Path, name: str = "proxy") -> list[str]:
    path = dest / f"{name}.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(r["source"] == name and set(r) == {"time", "source", "line"} for r in records)
    return [r["line"] for r in records]


@pytest.fixture
def follower(tmp_path: Path) -> Follower:
    (tmp_path / "out").mkdir()
    return Follower("proxy", str(tmp_path / "access.log"), str(tmp_path / "out"), clock=clock)


def test_lines_are_shipped_as_json_and_a_partial_line_waits(tmp_path: Path, follower: Follower) -> None:
    log = tmp_path / "access.log"
    assert follower.pump() == 0  # not there yet: it waits for the file
    log.write_text('first\nsecond "quoted" ünïcode\nhalf', encoding="utf-8")
    assert follower.pump() == 2
    with log.open("a", encoding="utf-8") as handle:
        handle.write(" a line\n")
    assert follower.pump() == 1
    follower.close()
    assert shipped(tmp_path / "out") == ["first", 'second "quoted" ünïcode', "half a line"]
    record = json.loads((tmp_path / "out" / "proxy.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert record == {"time": clock(), "source": "proxy", "line": "first"}


def test_a_replaced_file_is_read_to_its_end_then_followed_anew(tmp_path: Path, follower: Follower) -> None:
    log = tmp_path / "access.log"
    log.write_text("one\n")
    assert follower.pump() == 1
    with log.open("a") as handle:
        handle.write("two\n")  # written to the old file just before it is rotated away
    log.rename(tmp_path / "access.log.1")
    log.write_text("three\n")
    follower.pump()
    follower.pump()
    follower.close()
    assert shipped(tmp_path / "out") == ["one", "two", "three"]


def test_a_truncated_file_is_read_from_its_start(tmp_path: Path, follower: Follower) -> None:
    log = tmp_path / "access.log"
    log.write_text("a long first line\n")
    follower.pump()
    log.write_text("b\n")  # truncated in place: same inode, smaller than what was read
    follower.pump()
    follower.close()
    assert shipped(tmp_path / "out") == ["a long first line", "b"]


def test_forward_ships_what_is_left_when_asked_to_stop(tmp_path: Path, follower: Follower) -> None:
    log = tmp_path / "access.log"
    log.write_text("x\n")
    checks = iter([False, True])
    forward([follower], lambda: next(checks))
    log.write_text("x\ny\n")
    forward([follower], lambda: True)  # stopping already: one last pump
    follower.close()
    assert shipped(tmp_path / "out") == ["x", "y"]


@pytest.mark.parametrize("source", ["noequals", "=path", "name=", "a/b=path"])
def test_sources_must_be_name_equals_path(source: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--dest", "/tmp/out", source])
    assert exited.value.code == 2
    assert "is not NAME=PATH" in capsys.readouterr().err


def test_parse_args_returns_each_source() -> None:
    assert parse_args(["--dest", "d", "proxy=/a", "broker=/b=c"]) == (
        "d",
        [("proxy", "/a"), ("broker", "/b=c")],
    )


def test_the_launched_forwarder_ships_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    launcher = lay_out(tmp_path / "image", "logfwd")["containai-logfwd"]
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "in.log"
    process = subprocess.Popen(
        [sys.executable, "-I", str(launcher), "--dest", str(out), f"proxy={log}"], stderr=subprocess.PIPE
    )
    try:
        log.write_text("first line\n")
        deadline = time.monotonic() + 10
        while shipped(out) != ["first line"]:
            assert time.monotonic() < deadline, "the forwarder shipped nothing"
            time.sleep(logfwd.POLL_SECONDS / 2)
        with log.open("a") as handle:
            handle.write("last line\n")
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    assert shipped(out) == ["first line", "last line"]
