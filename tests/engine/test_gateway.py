"""The model credential stays outside the agent's container: the gateway adds it on the way out."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import tarfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from containai.config import Hooks

from ..token_endpoint import TokenEndpoint
from .conftest import CHANNEL, Engine
from .lab_cli import install_lab_programs, lab_of
from .test_egress import lab_env, results  # noqa: F401  # lab_env is a fixture used below
from .test_sessions import SESSION_LABEL, make_repo, program

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def forms(value: str) -> list[str]:
    """A secret and the encodings it could leak in."""
    raw = value.encode()
    return [value, base64.b64encode(raw).decode(), raw.hex(), urllib.parse.quote(value, safe="")]


def store_secret(env: dict[str, str], name: str, value: str) -> None:
    result = subprocess.run(
        [program(env, "containai"), "secrets", "set", name, "--stdin"],
        input=value,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def egress_audit(env: dict[str, str], session: str) -> str:
    """The session's egress audit as kept on the host (`containai logs NAME --egress --json`)."""
    return subprocess.run(
        [program(env, "containai"), "logs", session, "--egress", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_the_real_key_reaches_the_upstream_and_nothing_the_agent_can_read(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
    engine: Engine,
) -> None:
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    env = {**lab_env, "CONTAINAI_GATEWAY_UPSTREAM": "http://api.mock.test"}
    store_secret(env, "ANTHROPIC_API_KEY", canary)
    repo = make_repo(tmp_path)
    # Everything the agent can read that the session could have written: every process's
    # environment and command line, and the writable places. Searched on the host, so the probe
    # itself never holds the canary.
    probe = (
        'echo "R reply $(curl -s --max-time 20 -H "x-api-key: $ANTHROPIC_API_KEY" -d {} "$ANTHROPIC_BASE_URL/v1/messages")"; '
        'echo "R placeholder $ANTHROPIC_API_KEY"; '
        "mkdir -p /tmp/seen && for p in /proc/[0-9]*; do cat $p/environ $p/cmdline 2>/dev/null; done > /tmp/seen/proc; "
        'echo "R dump $(tar -cz /tmp/seen /run /home /etc /workspace 2>/dev/null | base64 -w0)"'
    )
    args = [
        "run",
        "claude",
        str(repo),
        "--channel",
        CHANNEL,
        "--no-push",
        "--allow-domain",
        "api.mock.test",
        "--json",
    ]
    process = subprocess.Popen(
        [program(env, "containai"), *args, "--", "bash", "-c", probe],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    inspected: list[str] = []
    filters = {"label": [f"ai.containai.repo={repo}"]}
    for _ in range(200):
        found = engine.client.containers.list(filters=filters)
        if len(found) >= 3:  # agent, proxy, gateway
            inspected = [json.dumps(c.attrs) for c in found]
            inspected += [c.logs().decode(errors="replace") for c in found]
            break
        subprocess.run(["sleep", "0.1"], check=True)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    found_results = results(stdout)
    assert '"text": "mock-ok"' in found_results.get("reply", ""), stderr[-2000:]
    assert found_results.get("placeholder", "").startswith("containai-placeholder")
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(found_results["dump"])), mode="r:gz") as archive:
        seen = [archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()]  # type: ignore[union-attr]
    assert any(b"ANTHROPIC_API_KEY=containai-placeholder" in data for data in seen), (
        "the dump missed the environment"
    )
    for data in seen:
        for form in forms(canary):
            assert form.encode() not in data
    assert len(inspected) >= 6, "the session's containers were never seen running"
    for text in [*inspected, stdout, stderr]:
        for form in forms(canary):
            assert form not in text
    summary = json.loads(stdout[stdout.index("\n{\n") :])  # the result object ends the output
    assert not engine.client.containers.list(
        all=True, filters={"label": f"{SESSION_LABEL}={summary['session_id']}"}
    )
    # The upstream got the real key (the gateway swapped out the placeholder), exactly once.
    arrived = fake_internet.model_requests()
    assert [(r["path"], r["x_api_key"]) for r in arrived] == [("/v1/messages", canary)]
    # Nor is it in the proxy's audit kept on the host, or in the history of the images the session ran.
    audit = egress_audit(env, summary["session"])
    assert "api.mock.test" in audit
    histories = [
        json.dumps(engine.client.api.history(image))
        for image in (
            f"containai-claude:{CHANNEL}",
            f"containai-proxy:{CHANNEL}",
            f"containai-gateway:{CHANNEL}",
        )
    ]
    for text in [audit, *histories]:
        for form in forms(canary):
            assert form not in text


def test_the_model_api_is_the_gateways_alone_and_the_audit_names_who_asked(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    """Issue 11 item 4: an agent with a key of its own (prompt-injected) cannot reach the model API
    through the proxy, even though the user allowed that host and its domain; the gateway can; the
    audit tells the two apart."""
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    own = f"sk-ant-the-agents-own-{uuid.uuid4().hex}"
    env = {**lab_env, "CONTAINAI_GATEWAY_UPSTREAM": "http://api.mock.test"}
    store_secret(env, "ANTHROPIC_API_KEY", canary)
    proxy = "http://127.0.0.1:3128"
    probe = (
        f'echo "R direct $(curl -s -o /dev/null -w %{{http_code}} --max-time 10 -x {proxy} '
        f'-H "x-api-key: {own}" -d {{}} http://api.mock.test/v1/messages)"; '
        f'echo "R connect $(curl -s -o /dev/null -w %{{http_connect}} --max-time 10 -x {proxy} '
        f'https://api.mock.test/v1/messages)"; '
        'echo "R gwsock $(test -e /run/containai-egress-gateway && echo present || echo absent)"; '
        'echo "R reply $(curl -s --max-time 20 -H "x-api-key: $ANTHROPIC_API_KEY" -d {} '
        '"$ANTHROPIC_BASE_URL/v1/messages")"'
    )
    repo = str(make_repo(tmp_path))
    allow = ["--allow-domain", "api.mock.test", "--allow-domain", ".mock.test"]
    args = ["run", "claude", repo, "--channel", CHANNEL, "--no-push", *allow, "--json"]
    result = subprocess.run(
        [program(env, "containai"), *args, "--", "bash", "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = results(result.stdout)
    # (a) the agent's own request to the model API is refused, as a plain request and as a tunnel
    assert found.get("direct") == "403", result.stderr[-2000:]
    assert found.get("connect") == "403"
    assert found.get("gwsock") == "absent"  # the gateway's way to squid is not in the agent's container
    # (b) its model call through the gateway gets there, with the host's key
    assert '"text": "mock-ok"' in found.get("reply", ""), result.stderr[-2000:]
    arrived = fake_internet.model_requests()
    assert [(r["path"], r["x_api_key"]) for r in arrived] == [("/v1/messages", canary)]
    assert own not in json.dumps(arrived)
    # The user allowed api.mock.test, but the agent's list no longer has it (the wider name stays).
    assert (
        "which allows: .mock.test, api.anthropic.com, statsig.anthropic.com "
        "(and api.mock.test to the model gateway only)" in result.stderr
    )
    assert "api.mock.test only through the model gateway" in result.stderr
    # (c) the audit says who made each request
    summary = json.loads(result.stdout[result.stdout.index("\n{\n") :])
    audit = [json.loads(line) for line in egress_audit(env, summary["session"]).splitlines() if line]
    mock = [
        (r["client"], r["method"], r["decision"], r["rule"]) for r in audit if r["host"] == "api.mock.test"
    ]
    assert mock == [
        ("agent", "POST", "deny", "deny-gateway-only"),
        ("agent", "CONNECT", "deny", "deny-gateway-only"),
        ("gateway", "POST", "allow", "allow-gateway"),
    ], audit
    assert {r["client"] for r in audit} <= {"agent", "gateway"}
    table = subprocess.run(
        [program(env, "containai"), "logs", summary["session"], "--egress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split() for line in table.splitlines() if "api.mock.test" in line]
    assert [(row[3], row[-1]) for row in rows] == [
        ("agent", "(deny-gateway-only)"),
        ("agent", "(deny-gateway-only)"),
        ("gateway", "(allow-gateway)"),
    ], table


def prompt_with_stored_key(
    env: dict[str, str], tmp_path: Path, launcher: str, secret: str, canary: str, upstream: str, prompt: str
) -> subprocess.CompletedProcess[str]:
    """A one-shot session of a real agent CLI whose key is stored on the host, against the mock API."""
    env = {**env, "CONTAINAI_GATEWAY_UPSTREAM": upstream}
    store_secret(env, secret, canary)
    args = [program(env, launcher), str(make_repo(tmp_path)), "--channel", CHANNEL, "--no-push"]
    return subprocess.run(
        [*args, "--allow-domain", "api.mock.test", "--prompt", prompt],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_claude_answers_a_prompt_with_the_key_stored_on_the_host(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    """`run-claude --prompt` end to end: the real CLI, the gateway, the proxy, a mock Messages API."""
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    result = prompt_with_stored_key(
        lab_env,
        tmp_path,
        "run-claude",
        "ANTHROPIC_API_KEY",
        canary,
        "http://api.mock.test",
        "Return the words: host secrets OK.",
    )
    assert result.returncode == 0, result.stderr
    assert "host secrets OK" in result.stdout
    assert canary not in result.stdout + result.stderr
    messages = [r for r in fake_internet.model_requests() if r["path"].startswith("/v1/messages")]
    assert messages and all(r["x_api_key"] == canary for r in messages)
    assert all(r["stream"] for r in messages)


@pytest.mark.parametrize("agent", ["codex", "copilot"])
def test_openai_clis_answer_through_the_gateway(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
    agent: str,
) -> None:
    """Codex with the model provider ContainAI writes for it; Copilot in its bring-your-own-key mode."""
    canary = f"sk-proj-canary-{uuid.uuid4().hex}"
    result = prompt_with_stored_key(
        lab_env,
        tmp_path,
        f"run-{agent}",
        "OPENAI_API_KEY",
        canary,
        "http://api.mock.test/v1",
        f"Return the words: {agent} via gateway",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{agent} via gateway" in result.stdout
    assert canary not in result.stdout + result.stderr
    responses = [r for r in fake_internet.model_requests() if r["path"] == "/v1/responses"]
    assert responses and all(r["authorization"] == f"Bearer {canary}" for r in responses)


def test_claude_uses_a_subscription_token_from_the_host_when_there_is_no_api_key(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    """`claude setup-token`'s long-lived token, stored on the host, goes the gateway's way too."""
    canary = f"sk-ant-oat01-canary-{uuid.uuid4().hex}"
    result = prompt_with_stored_key(
        lab_env,
        tmp_path,
        "run-claude",
        "CLAUDE_CODE_OAUTH_TOKEN",
        canary,
        "http://api.mock.test",
        "Return the words: subscription OK.",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "subscription OK" in result.stdout
    assert canary not in result.stdout + result.stderr
    messages = [r for r in fake_internet.model_requests() if r["path"].startswith("/v1/messages")]
    assert messages and all(r["authorization"] == f"Bearer {canary}" for r in messages), messages
    assert all(not r["x_api_key"] for r in messages)


def test_claude_uses_the_hosts_own_login_refreshed_on_the_host_during_the_session(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    """No key stored: the host's ~/.claude/.credentials.json. Its access token has expired, so the
    session's broker refreshes it on the host before the gateway starts, writes the new tokens back
    for the host's own CLI, and renews it again while the session runs; the gateway gets each new
    access token and nothing of the login reaches the agent."""
    prefix = f"canary-{uuid.uuid4().hex[:12]}-"
    endpoint = TokenEndpoint(prefix)
    endpoint.expires_in = 301  # just past the refresh margin: stale again one check later
    login_file = Path(lab_env["HOME"]) / ".claude" / ".credentials.json"
    login_file.parent.mkdir(parents=True)
    oauth = {"accessToken": f"{prefix}expired", "refreshToken": f"{prefix}refresh-0", "expiresAt": 1000}
    login_file.write_text(json.dumps({"claudeAiOauth": oauth}))
    login_file.chmod(0o600)
    # The refresh endpoint and a quicker check are injected, like the lab (ContainAI reads neither
    # from the environment): programs that run with all three go first on PATH.
    hooks = Hooks(lab=lab_of(fake_internet), claude_token_url=endpoint.url, login_check_seconds=1.0)
    login_bin = install_lab_programs(tmp_path / "login-bin", hooks)
    env = {
        **lab_env,
        "CONTAINAI_GATEWAY_UPSTREAM": "http://api.mock.test",
        "PATH": f"{login_bin}:{lab_env['PATH']}",
    }
    script = (
        'claude -p "Return the words: first answer."; sleep 3; claude -p "Return the words: second answer."'
    )
    try:
        result = subprocess.run(
            [
                *(program(env, "containai"), "run", "claude", str(make_repo(tmp_path)), "--channel", CHANNEL),
                *("--no-push", "--allow-domain", "api.mock.test", "--", "bash", "-c", script),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        endpoint.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first answer" in result.stdout and "second answer" in result.stdout
    assert prefix not in result.stdout + result.stderr
    # Refreshed on the host, with the refresh token it held, then each following one in turn.
    assert endpoint.requests[0]["refresh_token"] == f"{prefix}refresh-0"
    assert len(endpoint.requests) >= 2, "no refresh during the session"
    for n, request in enumerate(endpoint.requests[1:], start=1):
        assert request["refresh_token"] == f"{prefix}refresh-{n}"
    # The host's CLI finds the latest tokens in its file.
    saved = json.loads(login_file.read_text())["claudeAiOauth"]
    assert (
        saved["refreshToken"].startswith(f"{prefix}refresh-")
        and saved["refreshToken"] != f"{prefix}refresh-0"
    )
    # The upstream got access tokens the host refreshed, and a renewed one later in the session.
    messages = [r for r in fake_internet.model_requests() if r["path"].startswith("/v1/messages")]
    bearers = [r["authorization"] for r in messages]
    issued = {f"Bearer {prefix}access-{n}" for n in range(1, len(endpoint.requests) + 1)}
    assert bearers and set(bearers) <= issued, bearers
    assert bearers[-1] != bearers[0], "the gateway never got a renewed token"


def test_the_gateway_forwards_only_the_agents_model_calls(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
    engine: Engine,
) -> None:
    """From inside a session: the allowed model call reaches the upstream with the real key; the key's
    other uses (the user's files and batches) get a 403, are logged, and never reach the upstream."""
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    env = {**lab_env, "CONTAINAI_GATEWAY_UPSTREAM": "http://api.mock.test"}
    store_secret(env, "ANTHROPIC_API_KEY", canary)
    repo = make_repo(tmp_path)
    curl = 'curl -s --max-time 20 -H "x-api-key: $ANTHROPIC_API_KEY"'
    status = f'{curl} -o /dev/null -w "%{{http_code}}"'
    end = "/v1/containai-test-end"  # refused too: its log line says the probe is done
    probe = (
        f'echo "R reply $({curl} -d {{}} "$ANTHROPIC_BASE_URL/v1/messages?beta=true")"; '
        f'echo "R files $({status} "$ANTHROPIC_BASE_URL/v1/files")"; '
        f'echo "R batch $({status} -X DELETE "$ANTHROPIC_BASE_URL/v1/batches/x")"; '
        f'echo "R tokens $({status} -d {{}} "$ANTHROPIC_BASE_URL/v1/messages/count_tokens")"; '
        f'echo "R end $({status} "$ANTHROPIC_BASE_URL{end}")"; '
        # Held open until the test has read the gateway's log, which goes with its container.
        "for _ in $(seq 600); do [ -e /tmp/containai-test-done ] && break; sleep 0.2; done"
    )
    process = subprocess.Popen(
        [
            *(program(env, "containai"), "run", "claude", str(repo), "--channel", CHANNEL, "--no-push"),
            *("--allow-domain", "api.mock.test", "--json", "--", "bash", "-c", probe),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log, name = "", ""
    try:
        filters = {"label": [f"ai.containai.repo={repo}"]}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and end not in log:
            gateways = [
                c for c in engine.client.containers.list(filters=filters) if c.name.endswith("-gateway")
            ]
            if gateways:
                name = gateways[0].name
                log = gateways[0].logs().decode(errors="replace")
            time.sleep(0.2)
    finally:
        if name:  # the probe ends; the session tears itself down
            with contextlib.suppress(docker.errors.APIError):
                agent = engine.client.containers.get(name.removesuffix("-gateway"))
                agent.exec_run(["touch", "/tmp/containai-test-done"], user="1000")
        stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    found = results(stdout)
    assert '"text": "mock-ok"' in found.get("reply", ""), stderr[-2000:]
    assert found.get("files") == "403" and found.get("batch") == "403"
    assert found.get("tokens") == "200"  # Claude Code's own count_tokens call is allowed; the mock answers it
    # The upstream saw the model calls, with the real key, and nothing of the refused ones.
    arrived = [(r["method"], r["path"], r["x_api_key"]) for r in fake_internet.model_requests()]
    assert arrived == [
        ("POST", "/v1/messages?beta=true", canary),
        ("POST", "/v1/messages/count_tokens", canary),
    ], arrived
    refusals = [line for line in log.splitlines() if "refused" in line]
    assert refusals == [
        "containai-gateway: refused GET /v1/files: not in the agent's gateway allow list",
        "containai-gateway: refused DELETE /v1/batches/x: not in the agent's gateway allow list",
        f"containai-gateway: refused GET {end}: not in the agent's gateway allow list",
    ], log
    assert "placeholder" not in log and canary not in log
