"""Bounds on what the agent controls and the host handles, against the real engines (issue 10, item 3).

An agent floods its proxy with denied requests (to a name on no allow list, so squid answers 403
itself: the traffic goes no further than the session's own proxy on the test's fake internet), with
the audit's cap set small by configuration: the proxy's volume stays near the cap, finish and
remove-agent end the session and bring the work home, and `containai logs --egress` works and says
the audit was truncated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from containai.errors import EXIT_WORK_KEPT

from .conftest import CHANNEL, Engine
from .test_egress import lab_env  # noqa: F401  # the fixture, used by name
from .test_sessions import AGENT_WORK, containai, git, launcher, make_repo, session_resources

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

CAP = 256 * 2**10
FLOOD = 20_000
# Many denied requests, fast: curl keeps its proxy connections alive and runs 32 at a time.
FLOOD_SCRIPT = (
    f'curl -s --parallel --parallel-max 32 "http://forbidden.test/[1-{FLOOD}]" >/dev/null; echo "R flood $?"'
)


def capped(env: dict[str, str]) -> dict[str, str]:
    return {**env, "CONTAINAI_EGRESS_LOG_MAX": str(CAP)}


def kept_audit(env: dict[str, str], name: str) -> Path:
    found = sorted((Path(env["CONTAINAI_HOME"]) / "state" / "session-logs").glob(f"{name}-*.egress.jsonl"))
    assert found, f"no host copy of {name}'s audit"
    return found[-1]


def logs_say_truncated(env: dict[str, str], name: str) -> list[str]:
    shown = containai(env, "logs", name, "--egress")
    assert shown.returncode == 0, shown.stderr
    assert "the egress audit was truncated" in shown.stderr and "CONTAINAI_EGRESS_LOG_MAX" in shown.stderr
    lines = shown.stdout.splitlines()
    assert lines and all("forbidden.test:80" in line and "deny" in line for line in lines)
    assert len(lines) < FLOOD  # only what the cap kept
    return lines


def test_a_flood_of_denied_requests_is_capped_and_the_session_still_finishes(
    lab_env: dict[str, str],  # noqa: F811  # the fixture
    tmp_path: Path,
    engine: Engine,
) -> None:
    env = capped(lab_env)
    repo = make_repo(tmp_path)
    result = containai(
        env,
        "run",
        "shell",
        str(repo),
        "--channel",
        CHANNEL,
        "--json",
        "--prompt",
        f"{FLOOD_SCRIPT}; {AGENT_WORK}",
    )
    assert result.returncode == 0, result.stderr
    assert "R flood 0" in result.stdout and "agent-done" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["commits"] == 1 and not summary["kept"]
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "agent: add work.txt"
    assert "the egress audit was truncated" in result.stderr
    assert "blocked" in result.stderr and "forbidden.test" in result.stderr
    assert session_resources(engine.client, summary["session_id"]) == []
    assert kept_audit(env, summary["session"]).stat().st_size <= CAP + 200
    logs_say_truncated(env, summary["session"])


def test_a_flooded_persistent_session_is_removed_with_its_work(
    lab_env: dict[str, str],  # noqa: F811  # the fixture
    tmp_path: Path,
    engine: Engine,
) -> None:
    env = capped(lab_env)
    repo = make_repo(tmp_path)
    launched = launcher(env, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    agent: Any = engine.client.containers.get(name)
    flooded = agent.exec_run(
        ["bash", "-c", f"{FLOOD_SCRIPT}; {AGENT_WORK}"], user="1000:1000", workdir="/workspace"
    )
    assert flooded.exit_code == 0, flooded.output
    assert b"R flood 0" in flooded.output
    # The proxy's log volume stayed near its cap: the audit and one rotated copy, each about half,
    # and what squid wrote between two checks of the rotation loop.
    proxy: Any = engine.client.containers.get(f"{name}-proxy")
    used = proxy.exec_run(["du", "-sb", "/var/log/containai"], user="13:13")
    assert used.exit_code == 0, used.output
    assert FLOOD * 200 > 3 * 2**20  # each audit line is over 200 bytes: the flood wrote more than this
    assert int(used.output.split()[0]) < CAP + 2**20
    logs_say_truncated(env, name)  # from the running proxy
    removed = launcher(env, "remove-agent", name)
    assert removed.returncode == 0, removed.stderr
    assert "the egress audit was truncated" in removed.stderr
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "agent: add work.txt"
    assert engine.client.containers.list(all=True, filters={"name": name}) == []
    logs_say_truncated(env, name)  # from the host's copy
    assert kept_audit(env, name).stat().st_size <= CAP + 200


HOSTILE = r"\033]0;pwned\007\033[2J\033[1;1H"  # printf: set the title, clear the screen, go home
GPG = "/home/agent/.cache/gpg"  # an exec-able volume, outside the work that would be exported


def agent_sh(container: Any, script: str) -> str:
    done = container.exec_run(["bash", "-c", script], user="1000:1000", workdir="/workspace")
    assert done.exit_code == 0, done.output
    return str(done.output, "utf-8", "replace")


def test_the_agents_escape_sequences_never_reach_the_launchers_stderr_and_a_hung_export_is_stopped(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    """The agent commits with a hostile subject and makes the export fail with a hostile last line
    (its signing program writes to the export's stderr, then kills the export's processes, so that
    no one prints after it), then hang: every message is shown printable, the export is stopped at
    its timeout, and each time the work is kept."""
    repo = make_repo(tmp_path)
    timed = {**env, "CONTAINAI_EXPORT_TIMEOUT": "5"}
    launched = launcher(timed, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    agent: Any = engine.client.containers.get(name)
    agent_sh(
        agent,
        f"echo work > work.txt && git add work.txt && git commit -qm \"$(printf '{HOSTILE}subject')\" && "
        f"echo more > more.txt && "  # left uncommitted: the export commits it, and signs it
        f"printf '#!/bin/sh\\nprintf \"{HOSTILE}export broke\\\\n\" > /proc/$PPID/fd/2; kill -9 0\\n' > {GPG} && "
        f"chmod +x {GPG} && git config commit.gpgSign true && git config gpg.program {GPG}",
    )
    # The commit subject, in what --no-push would discard (refused here: no terminal, no --yes).
    listed = launcher(timed, "remove-agent", name, "--no-push")
    assert listed.returncode != 0 and "\x1b" not in listed.stderr
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1Hsubject" in listed.stderr
    # The export's failure, in its last line.
    failed = launcher(timed, "remove-agent", name)
    assert failed.returncode == EXIT_WORK_KEPT, failed.stderr
    assert "\x1b" not in failed.stderr
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1Hexport broke" in failed.stderr, failed.stderr
    # An export that hangs: stopped at export_timeout, the session kept, the setting named.
    agent_sh(agent, f"rm -f .git/index.lock && printf '#!/bin/sh\\nexec sleep 600\\n' > {GPG}")
    began = time.monotonic()
    hung = launcher(timed, "remove-agent", name)
    assert hung.returncode == EXIT_WORK_KEPT, hung.stderr
    assert time.monotonic() - began < 60
    assert "ran past the export_timeout of 5 s" in hung.stderr and "CONTAINAI_EXPORT_TIMEOUT" in hung.stderr
    agent.reload()
    assert agent.status == "running"  # kept, as it was
    # Fixed, the work comes home: the hostile subject too, as the agent wrote it.
    agent_sh(agent, "rm -f .git/index.lock && git config --unset commit.gpgSign")
    done = launcher(env, "remove-agent", name)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr
    subjects = git(repo, "log", "--format=%s", "main..shell/session-1").splitlines()
    assert subjects[-1] == "\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hsubject"
    assert git(repo, "show", "shell/session-1:more.txt") == "more\n"
