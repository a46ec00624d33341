"""The host's Claude Code login, refreshed on the host against a local stand-in for the token endpoint."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.errors import ConfigError
from containai.gateway.login import CLAUDE_CLIENT_ID, CLAUDE_TOKEN_URL, ClaudeLogin, claude_login_file

from ..token_endpoint import TokenEndpoint

NOW = 1_900_000_000.0


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    server = TokenEndpoint()
    yield server
    server.server.shutdown()
    server.server.server_close()


def write_login(path: Path, *, access: str, refresh: str, expires_at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    oauth = {"accessToken": access, "refreshToken": refresh, "expiresAt": int(expires_at * 1000)}
    path.write_text(json.dumps({"claudeAiOauth": {**oauth, "scopes": ["user:inference"]}, "other": 1}))
    path.chmod(0o600)


def login(path: Path, endpoint: TokenEndpoint) -> ClaudeLogin:
    return ClaudeLogin(path, token_url=endpoint.url, clock=lambda: NOW)


def test_a_fresh_token_is_used_as_it_is(tmp_path: Path, endpoint: TokenEndpoint) -> None:
    path = tmp_path / ".credentials.json"
    write_login(path, access="a0", refresh="r0", expires_at=NOW + 3600)
    assert login(path, endpoint).current().access == "a0"
    assert endpoint.requests == []


def test_an_expiring_token_is_refreshed_on_the_host_and_written_back(
    tmp_path: Path, endpoint: TokenEndpoint
) -> None:
    path = tmp_path / ".credentials.json"
    write_login(path, access="a0", refresh="r0", expires_at=NOW + 60)  # inside the five-minute margin

    tokens = login(path, endpoint).current()

    assert (tokens.access, tokens.refresh, tokens.expires_at) == ("access-1", "refresh-1", NOW + 28800)
    assert endpoint.requests == [
        {"grant_type": "refresh_token", "refresh_token": "r0", "client_id": CLAUDE_CLIENT_ID}
    ]
    # The host's own CLI reads the same file: it has the new tokens, and everything else it held.
    data = json.loads(path.read_text())
    assert data["claudeAiOauth"] == {
        "accessToken": "access-1",
        "refreshToken": "refresh-1",
        "expiresAt": int((NOW + 28800) * 1000),
        "scopes": ["user:inference"],
    }
    assert data["other"] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_refused_refresh_uses_what_the_hosts_cli_refreshed_meanwhile(
    tmp_path: Path, endpoint: TokenEndpoint
) -> None:
    path = tmp_path / ".credentials.json"
    write_login(path, access="a0", refresh="r0", expires_at=NOW - 10)
    endpoint.status = 400
    host_cli = ClaudeLogin(path, token_url=endpoint.url, clock=lambda: NOW)
    original_post = host_cli._post

    def post_after_the_cli_refreshed(body: Any) -> dict[str, Any]:
        write_login(path, access="a-cli", refresh="r-cli", expires_at=NOW + 3600)
        return original_post(body)

    host_cli._post = post_after_the_cli_refreshed  # type: ignore[method-assign]
    assert host_cli.current().access == "a-cli"


def test_a_refused_refresh_says_to_log_in_again(tmp_path: Path, endpoint: TokenEndpoint) -> None:
    path = tmp_path / ".credentials.json"
    write_login(path, access="a0", refresh="r0", expires_at=NOW - 10)
    endpoint.status = 400
    with pytest.raises(ConfigError, match="refused") as caught:
        login(path, endpoint).current()
    assert "claude" in (caught.value.hint or "")
    assert "r0" not in caught.value.message


def test_a_login_file_others_can_read_is_refused(tmp_path: Path, endpoint: TokenEndpoint) -> None:
    path = tmp_path / ".credentials.json"
    write_login(path, access="a0", refresh="r0", expires_at=NOW + 3600)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="other users"):
        login(path, endpoint).current()


def test_where_the_login_is_found(tmp_path: Path) -> None:
    assert claude_login_file({"HOME": str(tmp_path)}) == tmp_path / ".claude" / ".credentials.json"
    assert (
        claude_login_file({"HOME": "/x", "CLAUDE_CONFIG_DIR": str(tmp_path)})
        == tmp_path / ".credentials.json"
    )
    assert ClaudeLogin.from_env({"HOME": str(tmp_path)}) is None  # no login: not offered
    write_login(tmp_path / ".claude" / ".credentials.json", access="a", refresh="r", expires_at=NOW)
    # The refresh endpoint is never taken from the environment; only the tests pass another one.
    env = {"HOME": str(tmp_path), "CONTAINAI_CLAUDE_TOKEN_URL": "http://127.0.0.1:9/t"}
    found = ClaudeLogin.from_env(env)
    assert found is not None and found.token_url == CLAUDE_TOKEN_URL
    found = ClaudeLogin.from_env(env, token_url="http://127.0.0.1:9/t", check_seconds=1)  # noqa: S106  # a URL
    assert found is not None and (found.token_url, found.check_seconds) == ("http://127.0.0.1:9/t", 1)
