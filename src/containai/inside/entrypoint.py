"""ContainAI's in-container entrypoint (``containai-entrypoint``, the base image's ENTRYPOINT).

``containai-entrypoint --hold`` keeps a session container alive (PID 1, reaping orphans) while the
agent runs through exec. Otherwise it runs the command it is given with an allow-listed environment
(``/etc/containai/env-allow``), using exec so that no wrapper process keeps the original environment.
Started as root, it becomes the agent user first; it never stays root for the command.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import signal
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from containai.inside import protocol

AGENT_USER = "agent"
FALLBACK_ALLOW = ("PATH", "HOME", "TERM", "LANG")
"""What passes when the allow-list file is missing: enough for a shell, nothing else."""
DEFAULT_PATH = "/opt/node/bin:/usr/local/bin:/usr/bin:/bin"


def allowed_names(path: str = protocol.ENV_ALLOW_FILE) -> list[str]:
    """The allow-list's patterns: one a line, ``#`` starts a comment line."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        lines = list(FALLBACK_ALLOW)
    return [line for line in lines if line and not line.startswith("#")]


def clean_environment(environ: Mapping[str, str], patterns: Sequence[str]) -> dict[str, str]:
    return {
        name: value
        for name, value in environ.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }


def become_agent(environ: MutableMapping[str, str]) -> None:
    """Drop root for good: no groups, the agent's gid and uid; its HOME and the workspace."""
    entry = pwd.getpwnam(AGENT_USER)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("containai-entrypoint: could not drop root")
    environ.update(HOME=entry.pw_dir, USER=AGENT_USER, LOGNAME=AGENT_USER, SHELL=entry.pw_shell)
    os.chdir(protocol.WORKSPACE if Path(protocol.WORKSPACE).is_dir() else entry.pw_dir)


def reap(signum: int = 0, frame: FrameType | None = None) -> None:
    """Collect every child that has exited (orphans re-parented to PID 1 included)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _exit(signum: int, frame: FrameType | None) -> NoReturn:
    sys.exit(0)


def hold() -> NoReturn:
    """Keep a session container alive as PID 1: reap orphans, end cleanly on SIGTERM or SIGINT."""
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    while True:
        signal.pause()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--hold"]:
        hold()
    command = args or ["bash", "-l"]
    clean = clean_environment(environ, allowed_names())
    if os.getuid() == 0:
        become_agent(clean)
    clean.setdefault("PATH", DEFAULT_PATH)
    try:
        os.execvpe(command[0], command, clean)  # noqa: S606  # the container's command, as the engine gave it
    except FileNotFoundError:
        sys.stderr.write(f"containai-entrypoint: {command[0]}: command not found\n")
        return 127
    except PermissionError:
        sys.stderr.write(f"containai-entrypoint: {command[0]}: permission denied\n")
        return 126
    except OSError as exc:  # not an executable format, among others: what a shell says 126 for too
        sys.stderr.write(f"containai-entrypoint: {command[0]}: {exc.strerror or 'cannot execute'}\n")
        return 126
