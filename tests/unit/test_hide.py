"""What an overlay workspace hides: ignored files unless exposed, sockets and FIFOs always."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from containai.errors import UsageError
from containai.workspace.hide import exposed, hidden_paths, parse_patterns, whiteout


def test_patterns_are_relative_and_split_on_commas() -> None:
    assert parse_patterns([".env, config/*.local", "build/", ".env"]) == (".env", "config/*.local", "build")


@pytest.mark.parametrize("bad", ["/etc/passwd", "../other/.env", "a/../../b", " , /"])
def test_a_pattern_outside_the_repository_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="inside the repository"):
        parse_patterns([bad])


def test_exposed_matches_the_whole_path_or_the_name() -> None:
    assert exposed(".env", [".env"]) and exposed("sub/.env", [".env"])
    assert exposed("config/app.local", ["config/*.local"]) and exposed("node_modules/", ["node_modules"])
    assert not exposed(".envrc", [".env"]) and not exposed("secrets/key", [".env"])


def test_sockets_and_fifos_are_hidden_even_when_exposed(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    os.mkfifo(tmp_path / "src" / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "agent.sock"))
    (tmp_path / "build").mkdir()
    os.mkfifo(tmp_path / "build" / "inside-a-hidden-folder")
    (tmp_path / ".git").mkdir()
    os.mkfifo(tmp_path / ".git" / "fsmonitor--daemon.ipc")
    try:
        found = hidden_paths(tmp_path, [".env", "build/"], [".env", "*.sock", "pipe"])
    finally:
        server.close()
    assert found == ["agent.sock", "build/", "src/pipe"]


def test_a_whiteout_is_a_char_device_0_0_under_folders_like_the_lowers(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "config").mkdir(parents=True)
    (lower / "config").chmod(0o750)
    (lower / "config" / "app.env").write_text("secret")
    upper.mkdir()
    whiteout(upper, lower, "config/app.env", os.getuid(), os.getgid())
    whiteout(upper, lower, "config/app.env", os.getuid(), os.getgid())  # again: nothing to do
    made = os.lstat(upper / "config" / "app.env")
    assert stat.S_ISCHR(made.st_mode) and made.st_rdev == os.makedev(0, 0)
    assert stat.S_IMODE((upper / "config").stat().st_mode) == 0o750
    whiteout(upper, lower, "secrets/", os.getuid(), os.getgid())
    assert stat.S_ISCHR(os.lstat(upper / "secrets").st_mode)
