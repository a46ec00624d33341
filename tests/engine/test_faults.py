"""Faults a session survives, against the real engines (issue 10, item 5; docs/reliability.md).

Each test makes one fault happen to a real session and shows what the user gets: the session comes
back (`connect-agent` resumes it), or fails closed with a message, and the work is never lost:

- the engine restarted: on Docker, dockerd stopped and started again (``restart_dockerd``; run only
  when asked, it disrupts everyone on the engine); on Podman, whose service restart leaves containers
  running, the equivalent is the session's containers stopped under it (``podman stop``), which the
  same resume brings back, and which Docker's stop of them stands in for too;
- the proxy killed; the session's broker killed;
- the launcher SIGKILLed before each step of set-up and of finish (lab_cli.py ``--kill-at``);
- the host's state directory full (a small tmpfs mounted there);
- eight sessions at once on one repository (test_sessions.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.config import Hooks

from .conftest import BIN, CHANNEL, SESSION_SCOPE, Engine
from .lab_cli import FINISH_STEPS, SETUP_STEPS, install_lab_programs
from .test_egress import lab_env  # noqa: F401  # a fixture used below
from .test_gateway import store_secret
from .test_mcp import TOOL_CALL, canary_server_with_a_host_secret
from .test_sessions import (
    SESSION_LABEL,
    containai,
    git,
    launcher,
    make_repo,
    program,
    session_resources,
)

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

WORK = "echo {text} > {file} && git add {file} && git commit -qm '{text}' && echo {marker}"


def agent_of(engine: Engine, name: str) -> Any:
    return engine.client.containers.get(name)


def session_containers(engine: Engine, session: str) -> list[Any]:
    return engine.client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={session}"})


def in_agent(engine: Engine, name: str, script: str) -> tuple[int, str]:
    agent = agent_of(engine, name)
    run = agent.exec_run(["bash", "-c", script], user=agent.attrs["Config"]["User"], workdir="/workspace")
    return run.exit_code, run.output.decode("utf-8", "replace")


class HostTerminal:
    """A tmux server of the test's own on the host, to drive programs that need a terminal."""

    def __init__(self, env: dict[str, str]) -> None:
        self.tmux = ["tmux", "-L", f"containai-test-{uuid.uuid4().hex[:8]}"]
        self.env = {**env, "TERM": "xterm"}

    def run(self, command: str) -> None:
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-x", "160", "-y", "45", "-s", "host", command],
            env=self.env,
            check=True,
        )

    def screen(self) -> str:
        return subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-S", "-200", "-t", "host"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def wait_for(self, text: str, seconds: float = 90) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared:\n{self.screen()}")

    def type(self, keys: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "host", keys, "Enter"], check=True)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, check=False)


def connect_and_run(env: dict[str, str], name: str, script: str, marker: str) -> str:
    """connect-agent NAME at a terminal, run ``script`` in the agent's shell, detach; the screen."""
    terminal = HostTerminal(env)
    # `; sleep` keeps the pane (and what connect-agent said) after it ends.
    terminal.run(f"{program(env, 'connect-agent')} -n {name}; echo CONNECT-EXIT=$?; sleep 60")
    try:
        terminal.wait_for("/workspace$")
        # The marker is typed split in two, so that only its output matches, not the command line.
        terminal.type(f"{script}; echo {marker[:1]}''{marker[1:]}")
        shown = terminal.wait_for(f"\n{marker}")
        subprocess.run([*terminal.tmux, "send-keys", "-t", "host", "C-b", "d"], check=True)
        terminal.wait_for("CONNECT-EXIT=0")
        return shown
    finally:
        terminal.close()


def launch(env: dict[str, str], repo: Path, *extra: str) -> str:
    launched = launcher(env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, *extra)
    assert launched.returncode == 0, launched.stderr
    return launched.stdout.strip()


def listed(env: dict[str, str]) -> list[dict[str, Any]]:
    shown = launcher(env, "list-agents", "--json")
    assert shown.returncode == 0, shown.stderr
    sessions: list[dict[str, Any]] = json.loads(shown.stdout)["sessions"]
    return sessions


def resumes_with_its_work(
    env: dict[str, str], engine: Engine, repo: Path, name: str, session: str, *, stopped: bool = True
) -> None:
    """The session is listed as resumable, connect-agent brings it back with the workspace as the
    agent left it, the agent works on, and remove-agent brings all of it home."""
    if stopped:
        assert [(s["name"], s["status"] != "running", s["resumable"]) for s in listed(env)] == [
            (name, True, True)
        ]
    shown = connect_and_run(
        env,
        name,
        "git log -1 --format=LAST=%s; git branch --show-current; cat before.txt; "
        + WORK.format(text="after", file="after.txt", marker="committed"),
        "AFTER-DONE",
    )
    assert "LAST=before" in shown and "shell/session-1" in shown, shown
    assert all(c.status == "running" for c in session_containers(engine, session))
    assert [(s["status"], s["resumable"]) for s in listed(env)] == [("running", False)]
    removed = launcher(env, "remove-agent", name)
    assert removed.returncode == 0, removed.stderr
    log = git(repo, "log", "--format=%s", "shell/session-1").split("\n")
    assert log[:3] == ["after", "before", "base"], log
    assert session_resources(engine.client, session) == []


def start_working_session(env: dict[str, str], engine: Engine, repo: Path) -> tuple[str, str]:
    name = launch(env, repo)
    code, said = in_agent(engine, name, WORK.format(text="before", file="before.txt", marker="ok"))
    assert code == 0, said
    return name, agent_of(engine, name).labels[SESSION_LABEL]


# -- the engine restarted ---------------------------------------------------------------------------


def test_a_persistent_session_stopped_under_it_resumes_on_connect(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    """Podman's form of the engine-restart fault (its service restarts without stopping containers;
    a reboot or `podman stop` stops them), and Docker's stop of the same containers."""
    repo = make_repo(tmp_path)
    name, session = start_working_session(env, engine, repo)
    for container in session_containers(engine, session):
        container.stop(timeout=2)
    resumes_with_its_work(env, engine, repo, name, session)


DOCKERD_LOG = Path("/tmp/containai-dockerd.log")  # where scripts/ensure-engine.sh logs it
_DAEMONS: list[subprocess.Popen[bytes]] = []  # a restarted dockerd outlives the test: kept, never reaped here


def dockerd_pid() -> int:
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=False).stdout.split()
    assert len(found) == 1, f"expected one dockerd, found {found}"
    return int(found[0])


@pytest.fixture()
def restart_dockerd() -> Iterator[Any]:
    """Stop dockerd with SIGTERM and start it again as scripts/ensure-engine.sh does (same command,
    same log); it is left running even when the test fails."""

    def answers() -> bool:
        ping = [
            "curl",
            "-fsS",
            "--max-time",
            "3",
            "--unix-socket",
            "/var/run/docker.sock",
            "http://engine/_ping",
        ]
        return subprocess.run(ping, capture_output=True, check=False).returncode == 0

    def running() -> bool:
        return subprocess.run(["pidof", "dockerd"], capture_output=True, check=False).returncode == 0

    def restart() -> None:
        pid = dockerd_pid()
        os.kill(pid, signal.SIGTERM)
        # It stops every container first (up to its shutdown timeout each).
        for _ in range(1200):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        start()

    def start() -> None:
        # A dockerd still shutting down is waited for, never left to end with nothing started after it.
        for _ in range(1200):
            if not running():
                break
            if answers():
                return
            time.sleep(0.1)
        else:
            raise AssertionError("dockerd neither answers nor stops; see /tmp/containai-dockerd.log")
        # As ensure-engine.sh does: `nohup dockerd >>log 2>&1 &`, its pid recorded for --stop.
        environment = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
        with DOCKERD_LOG.open("ab") as log:
            started = subprocess.Popen(
                ["nohup", "dockerd"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=environment,
            )
        _DAEMONS.append(started)
        pids = Path(os.environ.get("CONTAINAI_ENGINE_STATE", "/tmp/containai-engines.pids"))
        if pids.exists():
            lines = [line for line in pids.read_text().splitlines() if not line.endswith(" dockerd")]
            pids.write_text("".join(f"{line}\n" for line in [*lines, f"{started.pid} dockerd"]))
        for _ in range(600):
            if answers():
                return
            time.sleep(0.1)
        raise AssertionError(f"dockerd did not answer within 60 s after its restart; see {DOCKERD_LOG}")

    try:
        yield restart
    finally:
        start()


@pytest.mark.skipif(
    os.environ.get("CONTAINAI_TEST_RESTART_DOCKERD") != "1",
    reason="restarts dockerd for everyone on it: set CONTAINAI_TEST_RESTART_DOCKERD=1 to run it",
)
def test_after_dockerd_restarts_a_persistent_session_resumes_with_its_work(
    env: dict[str, str], tmp_path: Path, engine: Engine, restart_dockerd: Any
) -> None:
    if engine.kind != "docker":
        pytest.skip("Podman's service restart leaves containers running: see the test above for its fault")
    repo = make_repo(tmp_path)
    name, session = start_working_session(env, engine, repo)
    restart_dockerd()
    assert all(c.status != "running" for c in session_containers(engine, session))  # live-restore is off
    resumes_with_its_work(env, engine, repo, name, session)


# A user agent that is Claude's, gateway and all, with a shell as its command: a terminal to drive.
CLAUDE_SHELL = """
name = "claude-shell"
description = "Claude's image and gateway, with a shell"
image = "claude"
command = ["bash", "-l"]
prompt_command = ["bash", "-lc", "{prompt}"]
env = ["ANTHROPIC_BASE_URL"]
endpoints = []

[gateway]
secret = "ANTHROPIC_API_KEY"
upstream = "https://api.anthropic.com"
header = "x-api-key"
base_url_env = "ANTHROPIC_BASE_URL"
key_env = "ANTHROPIC_API_KEY"
allow = ["POST /v1/messages"]
"""


def test_a_stopped_session_gets_its_gateway_back_with_the_key_from_the_host(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    env = {**lab_env, "CONTAINAI_GATEWAY_UPSTREAM": "http://api.mock.test"}
    agents = Path(env["CONTAINAI_HOME"]) / "config" / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    (agents / "claude-shell.toml").write_text(CLAUDE_SHELL)
    key = f"sk-ant-canary-{uuid.uuid4().hex}"
    store_secret(env, "ANTHROPIC_API_KEY", key)
    repo = make_repo(tmp_path)
    launched = launcher(
        env,
        "launch-agent",
        "claude-shell",
        str(repo),
        "--channel",
        CHANNEL,
        "--allow-domain",
        "api.mock.test",
    )
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    ask = 'curl -s --max-time 20 -H "x-api-key: $ANTHROPIC_API_KEY" -d {} "$ANTHROPIC_BASE_URL/v1/messages"'
    assert "mock-ok" in in_agent(engine, name, ask)[1]
    session = agent_of(engine, name).labels[SESSION_LABEL]
    for container in session_containers(engine, session):
        container.stop(timeout=2)
    shown = connect_and_run(env, name, f"{ask}; echo", "ASKED")
    assert "mock-ok" in shown, shown
    assert agent_of(engine, f"{name}-gateway").status == "running"
    assert key not in json.dumps(agent_of(engine, f"{name}-gateway").attrs)
    removed = launcher(env, "remove-agent", name, "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr


# -- the proxy killed -------------------------------------------------------------------------------


def test_a_killed_proxy_leaves_the_agent_offline_until_connect_restores_it(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
    fake_internet: Any,
) -> None:
    repo = make_repo(tmp_path)
    name = launch(lab_env, repo, "--allow-domain", "allowed.test")
    fetch = "curl -s --max-time 10 -x http://127.0.0.1:3128 http://allowed.test/"
    assert in_agent(engine, name, fetch) == (0, "allowed-ok\n")
    agent_of(engine, f"{name}-proxy").kill()
    # Offline, and no way around: not through the relay, not directly, not with the proxy unset.
    code, said = in_agent(engine, name, fetch)
    assert code != 0 and "allowed-ok" not in said
    ip = fake_internet.ip("allowed")
    assert in_agent(engine, name, f"exec 3<>/dev/tcp/{ip}/80")[0] != 0
    assert in_agent(engine, name, f"curl -s --max-time 5 --noproxy '*' http://{ip}/")[0] != 0
    assert len(fake_internet.http_requests("allowed")) == 1
    # connect-agent restores the proxy (and says so); the agent is online again, through it only.
    shown = connect_and_run(lab_env, name, f"{fetch}; echo", "FETCHED")
    assert "allowed-ok" in shown, shown
    assert agent_of(engine, f"{name}-proxy").status == "running"
    assert len(fake_internet.http_requests("allowed")) == 2
    removed = launcher(lab_env, "remove-agent", name, "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr


# -- the session broker killed ----------------------------------------------------------------------

# The tool call, showing what the agent gets whether or not the broker answers.
TOOL_CALL_SHOWN = TOOL_CALL.replace(
    'print(answer["result"]["content"][0]["text"])',
    'print(answer["result"]["content"][0]["text"] if "result" in answer else json.dumps(answer))',
)


def test_a_killed_broker_fails_closed_then_connect_brings_it_back_with_fresh_capabilities(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    canary = canary_server_with_a_host_secret(lab_env)
    digest = hashlib.sha256(canary.encode()).hexdigest()
    repo = make_repo(tmp_path)
    name = launch(lab_env, repo)
    agent = agent_of(engine, name)
    session = agent.labels[SESSION_LABEL]
    state = Path(lab_env["CONTAINAI_HOME"]) / "state" / "sessions" / session
    user = agent.attrs["Config"]["User"]

    def tool() -> str:
        run = agent.exec_run(["python3", "-c", TOOL_CALL_SHOWN], user=user)
        return str(run.output.decode("utf-8", "replace"))

    assert tool().strip() == f"sha256={digest} uid=65500"
    pid = int((state / "broker.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the broker this test's session started
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    # The session goes on; the MCP server gets no secret, and the agent is told why.
    failed = tool()
    assert digest not in failed and canary not in failed
    assert "broker" in failed, failed
    assert in_agent(engine, name, "echo still-here")[1] == "still-here\n"
    # connect-agent starts the broker again; the stub gets fresh capabilities, the server its secret.
    connect_and_run(lab_env, name, "true", "CONNECTED")
    assert int((state / "broker.pid").read_text()) != pid
    for _ in range(2):  # twice: the capability the stub stores for the next start works too
        assert tool().strip() == f"sha256={digest} uid=65500"
    removed = launcher(lab_env, "remove-agent", name, "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr


# -- the launcher SIGKILLed at each step ------------------------------------------------------------


@pytest.mark.parametrize("step", SETUP_STEPS + FINISH_STEPS)
def test_a_launcher_killed_at_any_step_then_gc_brings_the_work_home_and_leaves_nothing(
    env: dict[str, str], tmp_path: Path, engine: Engine, step: str
) -> None:
    repo = make_repo(tmp_path)
    killing = install_lab_programs(tmp_path / "kill-bin", Hooks(), kill_at=step)
    script = WORK.format(text="agent-work", file="work.txt", marker="agent-done")
    run = subprocess.run(
        [str(killing / "containai"), "run", "shell", str(repo), "--channel", CHANNEL, "--prompt", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert f"SIGKILL at {step}" in run.stderr
    found = engine.client.containers.list(all=True, filters={"label": f"ai.containai.repo={repo}"})
    found_volumes = engine.client.volumes.list(filters={"label": f"ai.containai.repo={repo}"})
    sessions = {item.attrs["Labels"][SESSION_LABEL] for item in found_volumes} | {
        c.labels[SESSION_LABEL] for c in found
    }
    collected = containai(env, "gc", "--label", SESSION_SCOPE)
    assert collected.returncode == 0, collected.stderr
    for session in sessions:
        assert session_resources(engine.client, session) == [], collected.stderr
    state = Path(env["CONTAINAI_HOME"]) / "state" / "sessions"
    assert not state.exists() or list(state.iterdir()) == [], collected.stderr
    branches = git(repo, "branch", "--list", "shell/*").split()
    if step in SETUP_STEPS:
        assert branches == [], collected.stderr  # the agent never ran: the reserved branch is released
    else:
        assert branches == ["shell/session-1"], collected.stderr
        assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "agent-work"
    assert git(repo, "status", "--porcelain") == ""


# -- the host's state directory full ----------------------------------------------------------------


@pytest.fixture()
def small_state(env: dict[str, str]) -> Iterator[Path]:
    """The state directory of this test's CONTAINAI_HOME on a 4 MiB tmpfs of its own."""
    state = Path(env["CONTAINAI_HOME"]) / "state"
    state.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(state)], check=True)
    try:
        yield state
    finally:
        remove_sessions(env)
        subprocess.run(["umount", "-l", str(state)], check=False)


def remove_sessions(env: dict[str, str]) -> None:
    subprocess.run(
        [str(BIN / "remove-agent"), "--all", "--no-push", "--yes", "--label", SESSION_SCOPE],
        env=env,
        capture_output=True,
        check=False,
    )


def fill(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last byte; the filler files' folder."""
    fillers = folder / "fillers"
    fillers.mkdir(exist_ok=True)
    for size in ("64k", "1k", "1"):
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={fillers / size}", f"bs={size}"], capture_output=True, check=False
        )
    return fillers


def test_a_full_state_directory_is_a_clear_error_and_loses_nothing(
    env: dict[str, str], tmp_path: Path, engine: Engine, small_state: Path
) -> None:
    repo = make_repo(tmp_path, owner=1000)  # an overlay workspace: its layers live in the state directory
    before = git(repo, "rev-parse", "HEAD")

    # Full before the launch: a one-line error with the fix; nothing created, no branch left.
    fillers = fill(small_state)
    refused = launcher(env, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert refused.returncode == 125, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "no space left" in refused.stderr.lower() and "hint:" in refused.stderr, refused.stderr
    assert not engine.client.containers.list(all=True, filters={"label": f"ai.containai.repo={repo}"})
    assert git(repo, "branch", "--list", "shell/*").strip() == ""
    shutil.rmtree(fillers)

    # Full during two sessions: committed work still comes home; uncommitted work, which cannot be
    # committed on a full disk, is kept in its session with the reason, and comes home once there is room.
    committed = launch(env, repo, "--network-proxy", "squid")
    drafted = launch(env, repo, "--network-proxy", "squid")
    sessions = [agent_of(engine, n).labels[SESSION_LABEL] for n in (committed, drafted)]
    code, said = in_agent(engine, committed, WORK.format(text="before-full", file="a.txt", marker="ok"))
    assert code == 0, said
    assert in_agent(engine, drafted, "echo draft > draft.txt")[0] == 0
    denied = "curl -s -o /dev/null -w %{http_code} --max-time 10 -x http://127.0.0.1:3128 http://denied.test/"
    # A line in the egress audit, which the end of the session keeps on the host.
    assert in_agent(engine, committed, denied)[1] == "403"
    fillers = fill(small_state)
    assert in_agent(engine, committed, "head -c 1048576 /dev/zero > big.bin")[0] != 0  # the agent sees it

    kept = launcher(env, "remove-agent", drafted)
    assert kept.returncode == 75, kept.stderr
    assert "Traceback" not in kept.stderr and "no space left" in kept.stderr.lower(), kept.stderr
    assert agent_of(engine, drafted).status == "running"

    removed = launcher(env, "remove-agent", committed)
    assert removed.returncode == 0, removed.stderr
    assert "Traceback" not in removed.stderr
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "before-full"
    # What could not be kept on the host (the egress audit) is named, with the reason.
    assert "egress could not finish: no space left on the host" in removed.stderr, removed.stderr
    shutil.rmtree(fillers)
    again = launcher(env, "remove-agent", drafted)
    assert again.returncode == 0, again.stderr
    assert git(repo, "show", "shell/session-2:draft.txt") == "draft\n"
    for session in sessions:
        assert session_resources(engine.client, session) == []
    assert git(repo, "rev-parse", "HEAD") == before
