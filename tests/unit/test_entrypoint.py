"""The session entrypoint (containai.inside.entrypoint): the allow-list in-process, exec and hold as
processes through its launcher."""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from containai.inside import entrypoint
from containai.inside.entrypoint import allowed_names, clean_environment

from .image_layout import lay_out

ENV_ALLOW = resources.files("containai.images").joinpath("context", "base", "env-allow")


NOBODY = 65534


@pytest.fixture(scope="module")
def launcher() -> Iterator[Path]:
    # Readable by every uid: as root, the processes below run as nobody, like the agent (not root).
    root = Path(tempfile.mkdtemp(prefix="cai-entry-"))
    root.chmod(0o755)
    yield lay_out(root, "base")["containai-entrypoint"]
    shutil.rmtree(root, ignore_errors=True)


def as_non_root() -> dict[str, Any]:
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.getuid() == 0 else {}


@functools.cache
def python() -> str:
    """An interpreter the processes' uid may run: the image's /usr/bin/python3, if there is one."""
    for candidate in ("/usr/bin/python3", sys.executable):
        probe = subprocess.run([candidate, "-c", "pass"], cwd="/", capture_output=True, **as_non_root())
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter that uid {NOBODY} may run")


def real_allow_list(tmp_path: Path) -> str:
    path = tmp_path / "env-allow"
    path.write_bytes(ENV_ALLOW.read_bytes())
    return str(path)


def test_the_shipped_allow_list_passes_the_session_and_drops_secrets(tmp_path: Path) -> None:
    patterns = allowed_names(real_allow_list(tmp_path))
    assert "PATH" in patterns and "LC_*" in patterns and not any(p.startswith("#") for p in patterns)
    given = {
        "PATH": "/bin",
        "TERM": "xterm",
        "LC_ALL": "C",
        "CONTAINAI_SESSION": "s1",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "ANTHROPIC_API_KEY": "sk-canary",
        "GITHUB_TOKEN": "ghp-canary",
        "LD_PRELOAD": "/tmp/x.so",
        "NODE_OPTIONS": "--require /tmp/x.js",
        "path": "lower case is another name",
    }
    assert clean_environment(given, patterns) == {
        "PATH": "/bin",
        "TERM": "xterm",
        "LC_ALL": "C",
        "CONTAINAI_SESSION": "s1",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
    }


def test_without_an_allow_list_only_a_shell_minimum_passes(tmp_path: Path) -> None:
    assert allowed_names(str(tmp_path / "absent")) == list(entrypoint.FALLBACK_ALLOW)


def run(launcher: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python(), "-I", str(launcher), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        **as_non_root(),
    )


def test_the_command_runs_with_the_clean_environment_only(launcher: Path) -> None:
    result = run(launcher, ["env"], {"PATH": "/usr/bin:/bin", "TERM": "dumb", "SECRET_TOKEN": "canary"})
    assert result.returncode == 0, result.stderr
    assert "TERM=dumb" in result.stdout.splitlines() and "canary" not in result.stdout
    assert "PYTHON" not in result.stdout  # nothing of the launcher's own lingers


def test_without_a_command_it_runs_a_login_shell(launcher: Path) -> None:
    result = run(launcher, [], {"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr  # bash -l with stdin closed: nothing to do


@pytest.mark.parametrize(
    ("name", "mode", "code", "message"),
    [
        ("absent", None, 127, "command not found"),
        ("data", 0o644, 126, "permission denied"),
        ("garbage", 0o755, 126, "Exec format error"),
    ],
)
def test_a_command_that_cannot_run_gets_the_shells_exit_code(
    launcher: Path, name: str, mode: int | None, code: int, message: str
) -> None:
    path = launcher.parent.parent / name
    if mode is not None:
        path.write_bytes(b"\x00\x01not a program")
        path.chmod(mode)
    result = run(launcher, [str(path)], {"PATH": "/usr/bin:/bin"})
    assert (result.returncode, result.stderr) == (code, f"containai-entrypoint: {path}: {message}\n")


def test_as_root_it_becomes_the_agent_for_good(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, object]] = []
    ids = {"uid": 0}
    agent = pwd.struct_passwd(("agent", "x", 1000, 1000, "", str(tmp_path), "/bin/bash"))
    monkeypatch.setattr(entrypoint.pwd, "getpwnam", lambda name: agent)
    monkeypatch.setattr(entrypoint.os, "setgroups", lambda groups: calls.append(("setgroups", groups)))
    monkeypatch.setattr(entrypoint.os, "setgid", lambda gid: calls.append(("setgid", gid)))

    def setuid(uid: int) -> None:
        calls.append(("setuid", uid))
        ids["uid"] = uid

    monkeypatch.setattr(entrypoint.os, "setuid", setuid)
    monkeypatch.setattr(entrypoint.os, "getuid", lambda: ids["uid"])
    monkeypatch.setattr(entrypoint.os, "geteuid", lambda: ids["uid"])
    monkeypatch.setattr(entrypoint.os, "chdir", lambda path: calls.append(("chdir", path)))
    environ = {"HOME": "/root", "USER": "root"}
    entrypoint.become_agent(environ)
    assert calls[:3] == [("setgroups", []), ("setgid", 1000), ("setuid", 1000)]
    assert environ == {"HOME": str(tmp_path), "USER": "agent", "LOGNAME": "agent", "SHELL": "/bin/bash"}
    # A uid change that did not take: never run the command as root.
    monkeypatch.setattr(entrypoint.os, "setuid", lambda uid: None)
    ids["uid"] = 0
    with pytest.raises(SystemExit, match="could not drop root"):
        entrypoint.become_agent({})


def test_main_in_process_reports_a_missing_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entrypoint.os, "getuid", lambda: NOBODY)  # never drop privileges in pytest itself
    assert entrypoint.main(["no-such-command-containai"], environ={"PATH": "/nonexistent"}) == 127
    assert capsys.readouterr().err == "containai-entrypoint: no-such-command-containai: command not found\n"


def test_hold_reaps_orphans_and_ends_cleanly_on_sigterm(launcher: Path) -> None:
    process = subprocess.Popen(
        [python(), "-I", str(launcher), "--hold"], stderr=subprocess.PIPE, cwd="/", **as_non_root()
    )
    try:
        time.sleep(0.3)  # its signal handlers are installed
        assert process.poll() is None, "hold returned by itself"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_reap_collects_exited_children() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    entrypoint.reap()
    assert not Path(f"/proc/{child.pid}").exists()
    child.returncode = 0  # reaped behind Popen's back; keep its __del__ quiet
