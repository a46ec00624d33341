"""ContainAI's log forwarder (``containai-logfwd``, the entrypoint of the logfwd image).

    containai-logfwd --dest DIR NAME=PATH [NAME=PATH ...]

Follows each PATH like ``tail -F`` (waits for it to appear, reopens it when it is replaced or
truncated) and appends every line to ``DIR/NAME.jsonl`` as ``{"time", "source", "line"}``. It stops
cleanly on SIGTERM, after shipping what it has read.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

POLL_SECONDS = 0.2


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Follower:
    """One followed log: ships its complete lines to ``dest/NAME.jsonl``; a partial line waits."""

    def __init__(self, name: str, path: str, dest: str, *, clock: Callable[[], str] = utc_now) -> None:
        self.name = name
        self.path = path
        self.clock = clock
        self.out = Path(dest, f"{name}.jsonl").open("a", encoding="utf-8")  # noqa: SIM115  # closed by close()
        self.handle: IO[str] | None = None
        self.inode: int | None = None
        self.partial = ""

    def _reopen_if_needed(self) -> None:
        try:
            info = os.stat(self.path)  # noqa: PTH116  # the path as given, followed like tail -F
        except FileNotFoundError:
            return
        if self.handle is not None and (info.st_ino != self.inode or info.st_size < self.handle.tell()):
            self._ship(self.handle)  # what is left of the old file first
            self.handle.close()
            self.handle = None
        if self.handle is None:
            self.handle = Path(self.path).open(encoding="utf-8", errors="replace")  # noqa: SIM115
            self.inode = info.st_ino

    def pump(self) -> int:
        """Ship the complete lines read so far; how many."""
        self._reopen_if_needed()
        return 0 if self.handle is None else self._ship(self.handle)

    def _ship(self, handle: IO[str]) -> int:
        shipped = 0
        for chunk in iter(handle.readline, ""):
            self.partial += chunk
            if not self.partial.endswith("\n"):
                continue
            line, self.partial = self.partial.rstrip("\n"), ""
            record = {"time": self.clock(), "source": self.name, "line": line}
            self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
            shipped += 1
        if shipped:
            self.out.flush()
        return shipped

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.out.close()


def parse_args(argv: Sequence[str] | None) -> tuple[str, list[tuple[str, str]]]:
    parser = argparse.ArgumentParser(
        prog="containai-logfwd", description="Follow logs and ship each line as JSON."
    )
    parser.add_argument("--dest", required=True, help="directory that receives NAME.jsonl files")
    parser.add_argument("sources", nargs="+", metavar="NAME=PATH", help="a log to follow")
    args = parser.parse_args(argv)
    sources = []
    for item in args.sources:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or "/" in name:
            parser.error(f"{item!r} is not NAME=PATH (NAME without slashes)")
        sources.append((name, path))
    return args.dest, sources


def forward(followers: Sequence[Follower], stopping: Callable[[], bool]) -> None:
    """Pump until ``stopping()``, sleeping only when nothing was shipped; then ship the rest."""
    while not stopping():
        if not sum(f.pump() for f in followers):
            time.sleep(POLL_SECONDS)
    for follower in followers:
        follower.pump()


def main(argv: Sequence[str] | None = None) -> int:
    dest, sources = parse_args(argv)
    followers = [Follower(name, path, dest) for name, path in sources]
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    try:
        forward(followers, lambda: bool(stopping))
    finally:
        for follower in followers:
            follower.close()
    return 0
