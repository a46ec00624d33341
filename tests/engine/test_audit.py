"""`containai audit verify NAME`: a real session's broker audit is a keyed chain, and tampering shows.

A persistent session with an MCP server that gets a host secret, so that its broker runs and audits.
The agent floods the broker's socket with connections it is refused; the audit keeps a bounded number
of lines and counts the rest. Verify passes while the session runs and after it finished; then one
line of the kept log is edited, deleted, or the log's tail cut, and verify fails, naming the line.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from containai.broker.refusals import DEFAULT_BURST

from .conftest import CHANNEL, Engine
from .test_egress import lab_env  # noqa: F401  # the fixture, used by name
from .test_mcp import TOOL_CALL, canary_server_with_a_host_secret
from .test_sessions import SESSION_LABEL, containai, launcher, make_repo

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

FLOOD = 500

# As the agent: connect to the broker's socket again and again; each time the broker refuses its uid.
FLOOD_CLIENT = textwrap.dedent(
    f"""
    import json, socket
    refused = 0
    for _ in range({FLOOD}):
        s = socket.socket(socket.AF_UNIX)
        s.connect("/run/containai/broker/broker.sock")
        answer = json.loads(s.makefile("rb").readline())
        refused += answer.get("error") == "peer-refused"
        s.close()
    print(refused)
    """
)


def verify(env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    return containai(env, "audit", "verify", name)


def test_audit_verify_passes_on_a_real_sessions_audit_and_names_the_line_that_was_tampered_with(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    engine: Engine,
) -> None:
    canary_server_with_a_host_secret(lab_env)
    repo = make_repo(tmp_path)
    launched = launcher(lab_env, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert launched.returncode == 0, launched.stderr
    (agent,) = engine.client.containers.list(
        filters={"label": [f"ai.containai.repo={repo}", "ai.containai.role=agent"]}
    )
    name, session_id = agent.name, agent.labels[SESSION_LABEL]
    user = agent.attrs["Config"]["User"]
    run: Any = agent.exec_run(["python3", "-c", TOOL_CALL], user=user)
    assert run.output.decode().strip().startswith("sha256="), run.output.decode()
    flood: Any = agent.exec_run(["python3", "-c", FLOOD_CLIENT], user=user)
    assert flood.output.decode().strip() == str(FLOOD), flood.output.decode()

    # While the session runs: intact, and not closed yet.
    running = verify(lab_env, name)
    assert running.returncode == 0, running.stdout + running.stderr
    assert running.stdout.startswith("OK: ") and "open" in running.stdout, running.stdout

    removed = launcher(lab_env, "remove-agent", name, "--no-push")
    assert removed.returncode == 0, removed.stderr
    logs = Path(lab_env["CONTAINAI_HOME"]) / "state" / "session-logs"
    audit = logs / f"{name}-{session_id}.broker.jsonl"
    finished = containai(lab_env, "audit", "verify", name, "--json")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    verdict = json.loads(finished.stdout)
    assert (verdict["ok"], verdict["closed"], verdict["path"]) == (True, True, str(audit)), verdict

    # The flood: a bounded number of lines, and the rest counted.
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    connects = [e for e in entries if e["event"] == "connect"]
    counted = sum(
        e["suppressed"] for e in entries if e["event"] == "suppressed" and e["refused"] == "connect"
    )
    assert len(connects) <= DEFAULT_BURST + 2, len(connects)
    assert len(connects) + counted == FLOOD
    assert len(entries) < 40, [e["event"] for e in entries]
    assert [e["event"] for e in entries if e["outcome"] == "allow"].count("redeem") >= 1
    assert entries[-1]["event"] == "close"
    # The chain key and the checkpoint stay on the host, private, in no container of the session.
    for kept in (
        logs / f"{name}-{session_id}.broker.chain-key",
        logs / f"{name}-{session_id}.broker.checkpoint",
    ):
        assert kept.stat().st_mode & 0o777 == 0o600, kept

    original = audit.read_bytes()
    lines = original.splitlines(keepends=True)
    tampered = {
        # One digit of its time: seq and prev still link, only the line's MAC can tell.
        "edited": [lines[0], lines[1].replace(b'"time":"2', b'"time":"1', 1), *lines[2:]],
        "deleted": [lines[0], *lines[2:]],
        "truncated": lines[:-2],
    }
    for kind, new_lines in tampered.items():
        audit.write_bytes(b"".join(new_lines))
        broken = verify(lab_env, name)
        line = len(lines) - 1 if kind == "truncated" else 2
        assert broken.returncode == 1, (kind, broken.stdout, broken.stderr)
        assert broken.stdout.startswith(f"BROKEN at line {line}: {kind}:"), (kind, broken.stdout)
    audit.write_bytes(original)
    assert verify(lab_env, name).returncode == 0

    # A name with no session and no kept audit: one error line and a hint.
    unknown = verify(lab_env, f"no-such-{session_id}")
    assert unknown.returncode == 125
    assert unknown.stderr.startswith("error: no broker audit for a session named"), unknown.stderr
    assert "hint: " in unknown.stderr
