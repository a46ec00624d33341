"""The session's disk cap against the real engines, on both workspace paths (overlay and clone).

An agent with a small cap commits its work, then fills its workspace past the cap with build output
that git ignores. The watchdog stops the session (stopped, not removed), list-agents, connect-agent
and remove-agent say why, and remove-agent still brings home the commit made before.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import BIN, CHANNEL, Engine
from .test_sessions import git, launcher, make_repo, prompt

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

CAP = "50m"
# Committed work first; then up to 300 MB of ignored build output, 5 MB at a time, until stopped.
FILL = (
    "echo kept > kept.txt && git add kept.txt && git commit -qm 'agent: work before the cap' && "
    "echo build/ >> .git/info/exclude && mkdir -p build && "
    "for i in $(seq 1 60); do head -c 5M /dev/urandom > build/out-$i || break; sleep 0.5; done; echo filled"
)
WAIT_SECONDS = 90


def wait_until_stopped(engine: Engine, name: str) -> str:
    deadline = time.monotonic() + WAIT_SECONDS
    status = ""
    while time.monotonic() < deadline:
        container = engine.client.containers.get(name)
        status = container.status
        if status in ("exited", "stopped"):
            return status
        time.sleep(1)
    raise AssertionError(f"{name} was never stopped for its disk (still {status})")


@pytest.mark.parametrize("owner", [None, 1000], ids=["root-owned-clone", "user-owned-overlay"])
def test_a_session_over_its_disk_cap_is_stopped_and_its_work_kept(
    env: dict[str, str], tmp_path: Path, engine: Engine, owner: int | None
) -> None:
    repo = make_repo(tmp_path, owner)
    launched = launcher(env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--disk-limit", CAP)
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    container = engine.client.containers.get(name)
    workspace = container.labels["ai.containai.workspace"]
    assert workspace == ("overlay" if owner else "clone")
    user = container.attrs["Config"]["User"]
    container.exec_run(["bash", "-c", FILL], user=user, workdir="/workspace", detach=True)

    wait_until_stopped(engine, name)

    listed = json.loads(launcher(env, "list-agents", "--json").stdout)["sessions"]
    [row] = [s for s in listed if s["name"] == name]
    assert row["stopped"] is not None and "over its cap of 50.0 MiB" in row["stopped"], row
    table = launcher(env, "list-agents")
    assert " stopped " in table.stdout and "was stopped by ContainAI" in table.stdout, table.stdout
    # connect-agent wants a terminal: `script` gives it one.
    connected = subprocess.run(
        ["script", "-qec", f"{BIN}/connect-agent -n {name}", "/dev/null"],
        env={**env, "TERM": "xterm"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert connected.returncode != 0
    assert "was stopped by ContainAI" in connected.stdout and "over its cap" in connected.stdout

    removed = launcher(env, "remove-agent", name)
    assert removed.returncode == 0, removed.stderr
    assert "was stopped by ContainAI" in removed.stderr and "over its cap of 50.0 MiB" in removed.stderr
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "agent: work before the cap"
    assert "build/" not in git(repo, "ls-tree", "-r", "--name-only", "shell/session-1")
    assert launcher(env, "list-agents", "--json").stdout.count(f'"{name}"') == 0


def test_an_ephemeral_session_over_its_cap_ends_and_brings_its_work_home(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path, 1000)
    result = prompt(env, repo, FILL, "--disk-limit", CAP, "--json")
    assert "filled" not in result.stdout  # stopped before it could write all it meant to
    assert "was stopped by ContainAI" in result.stderr and "over its cap" in result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["commits"] == 1 and not summary["kept"], result.stderr
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "agent: work before the cap"
