"""The real agent CLIs, in real sessions, against a mock model API on the fake internet.

Each test runs an agent's image with a command after ``--`` that points its CLI at the mock
(``api.mock.test``: fakenet_server.py ``modelapi``, which speaks the Anthropic Messages and OpenAI
Responses APIs) and asks it to "Return the words: X". The agent container has no network: the CLI
reaches the mock only through the session's proxy (HTTP_PROXY, HTTPS_PROXY), which sits on the fake
internet. So each test shows the CLI honours the proxy variables, the mock sees the credential the
CLI sent, the egress audit records the calls, and nothing reaches a canary.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHANNEL
from .test_egress import egress_log, lab_env, session_name  # noqa: F401  # lab_env: a fixture
from .test_sessions import containai, make_repo

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

MOCK_HOST = "api.mock.test"
KEY = "placeholder-key"
CLI_TIMEOUT = 150  # seconds for the CLI inside the session (coreutils `timeout`)
SESSION_TIMEOUT = 300  # seconds for the whole `containai run`

# Claude Code: without these it also opens CONNECT tunnels to api.anthropic.com (not to the base URL).
CLAUDE_QUIET = (
    "DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 DISABLE_AUTOUPDATER=1 "
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"
)
# Codex ignores a bare OPENAI_BASE_URL; a model provider in $CODEX_HOME/config.toml is what counts.
CODEX_CONFIG = [
    'model = "gpt-mock"',
    'model_provider = "mock"',
    "[model_providers.mock]",
    'name = "ContainAI test mock"',
    f'base_url = "http://{MOCK_HOST}/v1"',
    'env_key = "OPENAI_API_KEY"',
    'wire_api = "responses"',
]
COPILOT_BYOK = {
    "openai-responses": (
        f"COPILOT_PROVIDER_BASE_URL=http://{MOCK_HOST}/v1 COPILOT_PROVIDER_TYPE=openai "
        f"COPILOT_PROVIDER_WIRE_API=responses COPILOT_PROVIDER_API_KEY={KEY} COPILOT_MODEL=gpt-5.4",
        "/v1/responses",
        "authorization",
        f"Bearer {KEY}",
    ),
    "anthropic": (
        f"COPILOT_PROVIDER_BASE_URL=http://{MOCK_HOST} COPILOT_PROVIDER_TYPE=anthropic "
        f"COPILOT_PROVIDER_API_KEY={KEY} COPILOT_MODEL=claude-sonnet-4.5",
        "/v1/messages",
        "x_api_key",
        KEY,
    ),
}


def agent_session(
    env: dict[str, str], repo: Path, agent: str, script: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`containai run AGENT REPO ... -- bash -c SCRIPT`, the session's proxy on the fake internet."""
    return containai(
        env,
        "run",
        agent,
        str(repo),
        "--channel",
        CHANNEL,
        "--no-push",
        *extra,
        "--",
        "bash",
        "-c",
        script,
        timeout=SESSION_TIMEOUT,
    )


def describe(result: subprocess.CompletedProcess[str], net: Any, audit: list[dict[str, Any]]) -> str:
    """Everything worth seeing when an assertion fails: the output, the mock's log and the audit."""
    return "\n".join(
        [
            f"exit {result.returncode}",
            f"stdout:\n{result.stdout}",
            f"stderr:\n{result.stderr}",
            "model API requests:",
            *(json.dumps(r, sort_keys=True) for r in net.model_requests()),
            "egress audit:",
            *(json.dumps(r, sort_keys=True) for r in audit),
        ]
    )


def audit_of(result: subprocess.CompletedProcess[str], env: dict[str, str]) -> list[dict[str, Any]]:
    try:
        name = session_name(result)
    except StopIteration:
        return []  # the session never started; the assertions will show why
    return egress_log(env, name)


def assert_answered_by_the_mock(
    result: subprocess.CompletedProcess[str],
    net: Any,
    env: dict[str, str],
    *,
    words: str,
    route: str,
    header: str,
    credential: str,
    canary_hits_before: int,
) -> None:
    """The CLI printed the mock's answer; the mock, the audit and the canaries agree on how it got it."""
    audit = audit_of(result, env)
    why = describe(result, net, audit)
    assert result.returncode == 0, why
    assert words in result.stdout, why
    requests = net.model_requests()
    answered = [r for r in requests if r["path"].split("?")[0] == route and r["reply"] == words]
    assert answered, why
    assert all(r[header] == credential for r in answered), why
    assert all(r["stream"] and r["status"] == 200 for r in answered), why
    assert all(r["host_header"] == MOCK_HOST for r in requests), why
    # Every request the mock saw came through the proxy and is in the audit, allowed.
    to_mock = [r for r in audit if r["host"] == MOCK_HOST]
    assert len(to_mock) == len(requests), why
    assert all(r["decision"] == "allow" and r["port"] == 80 for r in to_mock), why
    assert [r["status"] for r in to_mock if r["method"] == "POST"].count(200) >= len(answered), why
    # Whatever else the CLI tried got nowhere: only the mock ever answered, no canary heard anything.
    assert not [r for r in audit if r["host"] != MOCK_HOST and r["status"] < 400], why
    assert len(net.canary_hits()) == canary_hits_before, why
    assert net.http_requests("allowed") == [] and net.http_requests("evil") == [], why


def test_claude_code_answers_from_the_mock_through_the_proxy(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    before = len(fake_internet.canary_hits())
    script = (
        f"ANTHROPIC_BASE_URL=http://{MOCK_HOST} ANTHROPIC_API_KEY={KEY} {CLAUDE_QUIET} "
        f'timeout {CLI_TIMEOUT} claude -p "Return the words: claude says hi"'
    )
    result = agent_session(lab_env, make_repo(tmp_path), "claude", script, "--allow-domain", MOCK_HOST)
    assert_answered_by_the_mock(
        result,
        fake_internet,
        lab_env,
        words="claude says hi",
        route="/v1/messages",
        header="x_api_key",
        credential=KEY,
        canary_hits_before=before,
    )
    # With non-essential traffic off, the model API is all Claude Code calls.
    audit = audit_of(result, lab_env)
    assert {r["host"] for r in audit} == {MOCK_HOST}, describe(result, fake_internet, audit)


def test_codex_answers_from_the_mock_through_the_proxy(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    before = len(fake_internet.canary_hits())
    lines = " ".join(shlex.quote(line) for line in CODEX_CONFIG)
    script = (
        'home="${CODEX_HOME:-$HOME/.codex}" && mkdir -p "$home" && '
        f"printf '%s\\n' {lines} > \"$home/config.toml\" && "
        f"OPENAI_API_KEY={KEY} timeout {CLI_TIMEOUT} "
        'codex exec --skip-git-repo-check "Return the words: codex says hi" </dev/null'
    )
    result = agent_session(lab_env, make_repo(tmp_path), "codex", script, "--allow-domain", MOCK_HOST)
    assert_answered_by_the_mock(
        result,
        fake_internet,
        lab_env,
        words="codex says hi",
        route="/v1/responses",
        header="authorization",
        credential=f"Bearer {KEY}",
        canary_hits_before=before,
    )
    assert all(r["model"] == "gpt-mock" for r in fake_internet.model_requests())


@pytest.mark.parametrize("provider", sorted(COPILOT_BYOK))
def test_copilot_answers_from_the_mock_through_the_proxy(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
    provider: str,
) -> None:
    before = len(fake_internet.canary_hits())
    variables, route, header, credential = COPILOT_BYOK[provider]
    # BYOK (`copilot help providers`); COPILOT_OFFLINE: no GitHub sign-in, telemetry or update check.
    script = (
        f"{variables} COPILOT_OFFLINE=true timeout {CLI_TIMEOUT} "
        'copilot -p "Return the words: copilot says hi" --allow-all-tools'
    )
    result = agent_session(lab_env, make_repo(tmp_path), "copilot", script, "--allow-domain", MOCK_HOST)
    assert_answered_by_the_mock(
        result,
        fake_internet,
        lab_env,
        words="copilot says hi",
        route=route,
        header=header,
        credential=credential,
        canary_hits_before=before,
    )
    audit = audit_of(result, lab_env)
    assert {r["host"] for r in audit} == {MOCK_HOST}, describe(result, fake_internet, audit)


def test_copilot_starts_with_its_default_cache(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    variables = COPILOT_BYOK["openai-responses"][0]
    script = (
        f"{variables} COPILOT_OFFLINE=true timeout {CLI_TIMEOUT} "
        'copilot -p "Return the words: copilot says hi" --allow-all-tools'
    )
    result = agent_session(lab_env, make_repo(tmp_path), "copilot", script, "--allow-domain", MOCK_HOST)
    assert "failed to map segment from shared object" not in result.stderr
    assert result.returncode == 0 and "copilot says hi" in result.stdout


def test_copilot_without_a_provider_fails_closed(
    lab_env: dict[str, str],  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    fake_internet: Any,
) -> None:
    """GitHub's own model routing: the token check at api.github.com finds no way out, so it stops."""
    before = len(fake_internet.canary_hits())
    script = (
        f"COPILOT_GITHUB_TOKEN={KEY} timeout {CLI_TIMEOUT} "
        'copilot -p "Return the words: copilot says hi" --allow-all-tools'
    )
    result = agent_session(lab_env, make_repo(tmp_path), "copilot", script, "--allow-domain", MOCK_HOST)
    audit = audit_of(result, lab_env)
    why = describe(result, fake_internet, audit)
    assert result.returncode != 0, why
    assert "copilot says hi" not in result.stdout, why
    assert fake_internet.model_requests() == [], why
    # It did try GitHub, through the proxy: allowed for the copilot agent, but no such name resolves
    # on the fake internet, so every attempt failed there and then.
    assert "api.github.com" in {r["host"] for r in audit}, why
    assert all(r["host"] != MOCK_HOST and r["status"] >= 400 for r in audit), why
    assert len(fake_internet.canary_hits()) == before, why
