"""`connect-agent` until the agent's screen shows, on a terminal: a tmux server of the run's own on
the host runs the command, and its pane is read until the inner tmux's status line appears. Against
the same attach made with the engine's own CLI (`docker exec -it ... tmux attach`)."""

from __future__ import annotations

import shlex
import subprocess
import time

from containai.bench.context import CHANNEL, BenchError, BenchRun, run_checked
from containai.bench.figures import Figure, Rule, Target
from containai.bench.stats import Summary, alternate

SCREEN = "[agent] 0:"  # the session's tmux status line: the agent's screen is drawn
TIMEOUT = 30.0
POLL = 0.005


class HostTmux:
    """A tmux server on its own socket (-L), so that the user's tmux is never touched."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._count = 0
        # A session that lives as long as the server: without it the server exits with each measured
        # pane, and the next one can race its shutdown ("server exited unexpectedly").
        held = self.tmux("new-session", "-d", "-s", "hold", "sleep 86400")
        if held.returncode != 0:
            raise BenchError(f"tmux -L {name} could not start: {held.stderr}")

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True, check=False)

    def time_until_shown(self, command: list[str], marker: str) -> float:
        """Seconds from starting ``command`` in a new pane to ``marker`` being on its screen."""
        self._count += 1
        window = f"w{self._count}"
        start = time.perf_counter()
        started = self.tmux("new-session", "-d", "-s", window, "-x", "160", "-y", "40", shlex.join(command))
        if started.returncode != 0:
            raise BenchError(f"tmux could not start {command[0]}: {started.stderr}")
        try:
            while time.perf_counter() - start < TIMEOUT:
                screen = self.tmux("capture-pane", "-p", "-t", window).stdout
                if marker in screen:
                    return time.perf_counter() - start
                time.sleep(POLL)
            raise BenchError(f"{command[0]} showed no {marker!r} in {TIMEOUT} s; the screen:\n{screen}")
        finally:
            self.tmux("kill-session", "-t", window)

    def close(self) -> None:
        self.tmux("kill-server")


def connect(run: BenchRun) -> list[Figure]:
    repo = run.repo(10, "root")
    env = run.env
    result = run_checked(
        run.cli(
            "launch-agent", "shell", repo, "--channel", CHANNEL, "--no-push", "--network-proxy", "restricted"
        ),
        env=env,
        what="launch-agent",
    )
    name = result.stdout.strip().splitlines()[-1]
    host = HostTmux(f"containai-bench-{run.run_id}")
    try:
        user = run.client.containers.get(name).attrs["Config"]["User"] or "0"
        settings = [f"{key}={env[key]}" for key in ("HOME", "CONTAINAI_HOME", "CONTAINAI_LABELS", "PATH")]
        settings += [f"{key}={env[key]}" for key in ("CONTAINAI_RUNTIME", "DOCKER_HOST") if key in env]
        ours = ["env", "TERM=xterm-256color", *settings, *run.cli("connect-agent", "-n", name)]
        engine = run.engine_cli(
            "exec",
            "-it",
            "-u",
            user,
            "-e",
            "TERM=xterm-256color",
            name,
            "tmux",
            "attach-session",
            "-t",
            "agent",
        )
        floor, connect_times = alternate(
            [
                lambda: host.time_until_shown(["env", "TERM=xterm-256color", *engine], SCREEN),
                lambda: host.time_until_shown(ours, SCREEN),
            ],
            run.repeat if run.quick else max(run.repeat, 5),
        )
    finally:
        host.close()
        run.remove_sessions([name])
    return [
        Figure(
            "connect",
            "`connect-agent` to a running session, until the agent's screen shows (host tmux)",
            "s",
            Summary.of(connect_times),
            Summary.of(floor),
            "`docker exec -it ... tmux attach` until the same screen",
            Target(Rule.AT_MOST, 0.3, "< 0.3 s"),
        )
    ]
