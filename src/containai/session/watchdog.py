"""The disk watchdog: a small host process per session that holds it to its disk cap.

    launcher ── start() ──> python -m containai.session.watchdog --detach ... ──fork──> the watchdog
                                     (exits at once: nothing is left to reap)        │
    every few seconds: is the agent's container there? running? ── measure ── over? ─┴─> stop it,
    write stopped.json in the session's host state, exit

It runs on the host because nothing in the agent's container is trusted, and apart from the
launcher because a persistent session outlives it. It ends by itself when the session's container
is gone (or its host state); teardown ends it first (``stop``). Its log is ``watchdog.log`` in the
session's host state. The measuring and the deciding are ``containai.session.disk``'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from containai.errors import ContainAIError, SessionError
from containai.runtime.base import ContainerRuntime
from containai.session import naming
from containai.session.disk import (
    LIMIT_FILE,
    WALK_SECONDS,
    DiskLimit,
    DiskUsage,
    measure_all,
    over_limit,
    session_roots,
    size_text,
    write_stop,
)

log = logging.getLogger("containai.watchdog")

PID_FILE = "watchdog.pid"
LOG_FILE = "watchdog.log"
INTERVAL = 5.0  # seconds between measurements, at least
WORK_SHARE = 4  # and at least this many times a measurement's own duration: at most 1/5 of a CPU
START_GRACE = 120.0  # how long the container may take to appear before the watchdog gives up
MODULE = "containai.session.watchdog"


class Watchdog:
    """One session's watchdog: what to measure, and what to do when it is over its cap."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        *,
        container: str,
        state_dir: Path,
        limit: DiskLimit,
        interval: float = INTERVAL,
        budget: float = WALK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], bool] | None = None,
        done: threading.Event | None = None,
    ) -> None:
        self.runtime = runtime
        self.container = container
        self.state_dir = state_dir
        self.limit = limit
        self.interval = interval
        self.budget = budget
        self.clock = clock
        self.done = done or threading.Event()
        self.sleep = sleep or self.done.wait  # True: asked to end
        self._unmeasured: tuple[Path, ...] = ()

    def roots(self, session: str) -> list[Path]:
        return session_roots(self.runtime, session, self.state_dir)

    def check(self, session: str) -> tuple[DiskUsage, str | None]:
        """One measurement, and why the session must stop (None: it may go on)."""
        usage, unmeasured = measure_all(self.roots(session), self.limit, budget=self.budget, clock=self.clock)
        if unmeasured != self._unmeasured:
            for root in unmeasured:
                log.warning("cannot read %s: its disk use is not counted (run the launcher as root?)", root)
            self._unmeasured = unmeasured
        return usage, over_limit(usage, self.limit)

    def run(self) -> str:
        """Watch until the session is gone or stopped for its disk; why it ended."""
        seen = False
        started = self.clock()
        while True:
            if not self.state_dir.is_dir():
                return "the session's host state is gone"
            try:
                info = self.runtime.container(self.container)
            except ContainAIError as exc:
                # Not a reason to end once the container was seen: the engine may be restarting.
                log.warning("cannot reach the engine (%s); will retry", exc.message)
                if not seen and self.clock() - started > START_GRACE:
                    return "the engine never answered"
                if self.sleep(self.interval):
                    return "asked to end"
                continue
            if info is not None and info.labels.get(naming.SESSION) != self.state_dir.name:
                info = None  # a later session that took the name: this one's container is gone
            if info is None:
                if seen or self.clock() - started > START_GRACE:
                    return f"container {self.container} is gone"
            elif info.running:
                seen = True
                began = self.clock()
                usage, reason = self.check(self.state_dir.name)
                took = self.clock() - began
                log.debug(
                    "%s: %s in %d files (%.2fs)", self.container, size_text(usage.size), usage.files, took
                )
                if reason is not None:
                    write_stop(self.state_dir, usage, reason)
                    log.warning("stopping %s: %s", self.container, reason)
                    try:
                        self.runtime.stop(self.container)
                    except ContainAIError as exc:
                        log.warning("could not stop %s (%s); will retry", self.container, exc.message)
                        if self.sleep(self.interval):
                            return "asked to end"
                        continue
                    return f"stopped {self.container}: {reason}"
                if self.sleep(max(self.interval, WORK_SHARE * took)):
                    return "asked to end"
                continue
            else:
                seen = True  # stopped by the user or an engine restart: it may come back; nothing grows
            if self.sleep(self.interval):
                return "asked to end"


# -- the launcher's side ---------------------------------------------------------------------------


def start(state_dir: Path, *, container: str, engine_url: str, timeout: float = 10.0) -> int:
    """Start the session's watchdog, detached (it outlives the launcher); its pid."""
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        MODULE,
        "--detach",
        "--state-dir",
        str(state_dir),
        "--container",
        container,
        "--engine-url",
        engine_url,
    ]
    with (state_dir / LOG_FILE).open("ab") as log_file:
        # The first process forks the watchdog and exits: the watchdog is nobody's child to reap.
        first = subprocess.run(  # our own module, by absolute interpreter path
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            timeout=timeout,
            check=False,
        )
    pid = running_pid(state_dir)
    if first.returncode != 0 or pid is None:
        raise SessionError(
            f"the session's disk watchdog did not start (exit {first.returncode})",
            hint=f"see {state_dir / LOG_FILE}",
        )
    return pid


def running_pid(state_dir: Path) -> int | None:
    """The pid of this session's watchdog, when it runs (a reused pid is not taken for it)."""
    try:
        pid = int((state_dir / PID_FILE).read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    # The pid may have been reused since: only this session's own watchdog is taken for it.
    if MODULE.encode() not in cmdline or b"/" + state_dir.name.encode() + b"\0" not in cmdline:
        return None
    return pid


def stop(state_dir: Path, *, timeout: float = 5.0) -> None:
    """End the session's watchdog, if it still runs."""
    pid = running_pid(state_dir)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(state_dir) == pid:
        time.sleep(0.05)


# -- the process -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> tuple[bool, Path, str, str]:
    from containai.cli.app import ArgumentParser

    parser = ArgumentParser(prog="containai-watchdog", description=__doc__)
    parser.add_argument("--detach", action="store_true", help="fork, write the pid file, and return")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--engine-url", required=True)
    args = parser.parse_args(argv)
    return args.detach, args.state_dir, args.container, args.engine_url


def main(argv: Sequence[str] | None = None) -> int:
    from containai.cli.app import run_program

    return run_program(lambda: _serve(argv))


def _serve(argv: Sequence[str] | None) -> int:
    detach, state_dir, container, engine_url = _parse_args(argv)
    limit = DiskLimit.parse(json.loads((state_dir / LIMIT_FILE).read_text(encoding="utf-8")))
    if detach:
        child = os.fork()
        if child:
            (state_dir / PID_FILE).write_text(f"{child}\n", encoding="ascii")
            return 0
    done = threading.Event()  # asked to end: from here on, SIGTERM ends the watch, not the process

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog: %(message)s", stream=sys.stderr)
    with contextlib.suppress(OSError):
        os.nice(10)  # a background measurer: the agent's own work comes first
    from containai.runtime.engine import EngineRuntime
    from containai.runtime.select import EngineChoice

    runtime = EngineRuntime(EngineChoice(engine_url, None, "the session launcher"))
    watchdog = Watchdog(runtime, container=container, state_dir=state_dir, limit=limit, done=done)
    log.info("watching %s: cap %s, %d files", container, size_text(limit.max_bytes), limit.max_files)
    try:
        log.info("done: %s", watchdog.run())
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
