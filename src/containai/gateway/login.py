"""A CLI's own subscription login on the host, kept fresh on the host, for the session's gateway.

Claude Code keeps an interactive login (Pro/Max) in ``~/.claude/.credentials.json`` (or under
``$CLAUDE_CONFIG_DIR``): a short-lived access token, a refresh token and the access token's expiry.
ContainAI never copies that file into a session. The session's broker reads it on the host, refreshes
the access token there when it is about to expire (the same OAuth refresh the CLI does itself), writes
the new tokens back to the file, so that the host's own CLI keeps working, and hands only the access
token to the gateway, on its standard input. The refresh token never leaves the host.

If the refresh is refused because another program (the host's CLI) refreshed first, the file is read
again and its newer token used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from containai.errors import ConfigError, SecretUnavailable
from containai.secrets.store import read_private_file, write_private_file

log = logging.getLogger(__name__)

CLAUDE_TOKEN_URL = "https://console.anthropic.com/v1/oauth/token"  # noqa: S105  # an endpoint, not a secret
CLAUDE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"  # Claude Code's public OAuth client
REFRESH_MARGIN = 300.0  # refresh when the access token has less than this many seconds left
CHECK_SECONDS = 60.0  # how often the session's broker looks at the login during a session
TIMEOUT = 30.0


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    expires_at: float  # epoch seconds

    def fresh(self, now: float, margin: float = REFRESH_MARGIN) -> bool:
        return self.expires_at - now > margin


def claude_login_file(environ: Mapping[str, str]) -> Path:
    config = environ.get("CLAUDE_CONFIG_DIR")
    base = Path(config) if config else Path(environ.get("HOME", "~")).expanduser() / ".claude"
    return base / ".credentials.json"


class ClaudeLogin:
    """The host's Claude Code login file, refreshed in place."""

    def __init__(
        self,
        path: Path,
        *,
        token_url: str = CLAUDE_TOKEN_URL,
        clock: Callable[[], float] = time.time,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        # token_url and check_seconds are the engine tests' to change (a stand-in endpoint, a
        # quicker check); ContainAI reads neither from the environment.
        self.path = path
        self.token_url = token_url
        self.clock = clock
        self.check_seconds = check_seconds

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        token_url: str = CLAUDE_TOKEN_URL,
        check_seconds: float = CHECK_SECONDS,
    ) -> ClaudeLogin | None:
        """The login in HOME (or CLAUDE_CONFIG_DIR), when it has a refresh token; None otherwise."""
        login = cls(claude_login_file(environ), token_url=token_url, check_seconds=check_seconds)
        try:
            login.read()
        except (SecretUnavailable, ConfigError):
            return None
        return login

    def read(self) -> Tokens:
        text = read_private_file(self.path)  # refuses a file that is not ours alone
        if text is None:
            raise SecretUnavailable([str(self.path)])
        try:
            oauth = json.loads(text)["claudeAiOauth"]
            tokens = Tokens(str(oauth["accessToken"]), str(oauth["refreshToken"]), oauth["expiresAt"] / 1000)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.path} is not a Claude Code login: {type(exc).__name__}",
                hint="log in again with `claude` on the host, or store a token: `claude setup-token`",
            ) from None
        if not tokens.access or not tokens.refresh:
            raise ConfigError(f"{self.path} has no tokens", hint="log in again with `claude` on the host")
        return tokens

    def current(self) -> Tokens:
        """Tokens whose access token has a while left: the file's, or refreshed ones (written back)."""
        tokens = self.read()
        if tokens.fresh(self.clock()):
            return tokens
        try:
            answer = self._post(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": tokens.refresh,
                    "client_id": CLAUDE_CLIENT_ID,
                }
            )
        except ConfigError:
            # Perhaps the host's CLI refreshed meanwhile (refresh tokens are single-use): read again.
            again = self.read()
            if again.refresh != tokens.refresh and again.fresh(self.clock(), margin=0):
                return again
            raise
        renewed = Tokens(
            access=str(answer["access_token"]),
            refresh=str(answer.get("refresh_token") or tokens.refresh),
            expires_at=self.clock() + float(answer.get("expires_in", 3600)),
        )
        self._write(renewed)
        log.info("refreshed the Claude login in %s; it now expires at %d", self.path, renewed.expires_at)
        return renewed

    def _post(self, body: Mapping[str, str]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310  # an https URL of ours, or the tests' override
            self.token_url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response, and so the connection
            raise ConfigError(
                f"refreshing the Claude login was refused (HTTP {exc.code})",
                hint="log in again with `claude` on the host",
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot refresh the Claude login: {exc}", hint="check the host's network, then retry"
            ) from None
        if not isinstance(answer, dict) or not answer.get("access_token"):
            raise ConfigError("the Claude login refresh answered without a token", hint="retry later")
        return answer

    def _write(self, tokens: Tokens) -> None:
        """The new tokens into the file, keeping everything else in it (the host's CLI reads it too)."""
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
        oauth = dict(data.get("claudeAiOauth") or {})
        oauth.update(
            accessToken=tokens.access, refreshToken=tokens.refresh, expiresAt=int(tokens.expires_at * 1000)
        )
        data["claudeAiOauth"] = oauth
        write_private_file(self.path, json.dumps(data) + "\n")
