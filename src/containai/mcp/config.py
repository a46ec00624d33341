"""MCP servers the user declares, and which of a repository's own may run.

Servers are declared as ``[mcp_servers.<name>]`` tables, in the user's ``config.toml`` (trusted) and
in a repository's ``.containai/config.toml`` (untrusted)::

    [mcp_servers.github]                 # a command server
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-github"]
    env = { GITHUB_PERSONAL_ACCESS_TOKEN = "${GITHUB_TOKEN}" }

    [mcp_servers.docs]                   # a URL (streamable HTTP) server
    url = "https://mcp.example.com/mcp"
    bearer_token = "${DOCS_TOKEN}"       # sent as Authorization: Bearer <value>
    headers = { "X-Team" = "blue", "X-Key" = "${DOCS_KEY}" }

``${NAME}`` names a host secret (`containai secrets set NAME`). Placeholders are allowed only where
the value reaches the server without being seen: env values, ``bearer_token`` and header values.
Everything else in a definition, literal env and header values included, is handed to the session's
stub as written, so a secret belongs behind a placeholder.

The user's servers always run. A repository's run only once the user pinned the digest of exactly
that definition (`containai mcp approve`); a changed definition waits for approval again. When both
define a name, the user's wins and the repository's is *shadowed*: it never runs, and approving it
would change nothing, so it is reported apart from the pending ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from containai.config import Paths, load_repo_config, load_user_config
from containai.errors import ConfigError
from containai.trust import REPO_CONFIG, approved_mcp

Source = Literal["user", "repo"]

SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_COMMAND_KEYS = frozenset({"command", "args", "env"})
_URL_KEYS = frozenset({"url", "bearer_token", "headers"})
_EXAMPLE = 'e.g. [mcp_servers.github] command = "npx", or [mcp_servers.docs] url = "https://..."'


def _placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class McpServer:
    """One declared server: a command (run by the stub) or a URL (reached by the stub)."""

    name: str
    source: Source
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: _frozen({}))  # values may hold ${NAME}
    url: str | None = None
    bearer_token: str | None = None  # always a ${NAME} placeholder
    headers: Mapping[str, str] = field(default_factory=lambda: _frozen({}))  # values may hold ${NAME}

    @property
    def kind(self) -> Literal["command", "url"]:
        return "command" if self.command is not None else "url"

    def secret_names(self) -> tuple[str, ...]:
        """The host secrets its ``${NAME}`` placeholders refer to, sorted, each once."""
        texts = [*self.env.values(), *self.headers.values(), self.bearer_token or ""]
        return tuple(sorted({name for text in texts for name in _placeholders(text)}))

    def definition(self) -> dict[str, Any]:
        """Everything that decides what runs: all but ``source``, every key present."""
        return {
            "name": self.name,
            "command": self.command,
            "args": list(self.args),
            "env": dict(self.env),
            "url": self.url,
            "bearer_token": self.bearer_token,
            "headers": dict(self.headers),
        }

    def digest(self) -> str:
        """``sha256:<hex>`` of the definition as canonical JSON: what an approval pins."""
        canonical = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def stub_spec(self) -> dict[str, Any]:
        """The non-secret spec the in-container stub gets: placeholders stay unresolved templates."""
        if self.command is not None:
            return {"command": self.command, "args": list(self.args), "env": dict(self.env)}
        headers = dict(self.headers)
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        return {"url": self.url, "headers": headers}


@dataclass(frozen=True)
class PendingServer:
    server: McpServer
    reason: Literal["new", "changed"]  # never approved, or approved with another definition


@dataclass(frozen=True)
class McpResolution:
    servers: tuple[McpServer, ...]  # what sessions run: the user's, then the approved repo servers
    pending: tuple[PendingServer, ...] = ()  # repo servers waiting for `containai mcp approve`
    shadowed: tuple[McpServer, ...] = ()  # repo servers named like one of the user's: never run

    def statuses(self) -> list[tuple[McpServer, str]]:
        """Every server with a word for its state (active, pending: new|changed, shadowed), by name."""
        rows = [(server, "active") for server in self.servers]
        rows += [(entry.server, f"pending: {entry.reason}") for entry in self.pending]
        rows += [(server, "shadowed") for server in self.shadowed]
        return sorted(rows, key=lambda row: (row[0].name, row[0].source))


def _shown(text: object) -> str:
    """Untrusted text in a message: JSON-escaped, and no brackets for the console's markup to take."""
    return json.dumps(str(text)).replace("[", "\\u005b").replace("]", "\\u005d")


class _Where:
    """Builds errors that name the file and the server."""

    def __init__(self, origin: str, name: object) -> None:
        shown = name if isinstance(name, str) and SERVER_NAME.match(name) else _shown(name)
        self.prefix = f"{origin}: mcp_servers.{shown}"

    def error(self, problem: str, hint: str) -> ConfigError:
        return ConfigError(f"{self.prefix}: {problem}", hint=hint)


def _check_templates(text: str, what: str, where: _Where) -> None:
    """A value that may carry ``${NAME}``: every ``${`` must open a well-formed placeholder."""
    names = _placeholders(text)
    for name in names:
        if not SECRET_NAME.match(name):
            raise where.error(
                f"{what} refers to {_shown('${' + name + '}')}, which is not a secret name",
                hint="write ${NAME} with letters, digits and _ (not starting with a digit), e.g. ${GITHUB_TOKEN}",
            )
    if text.count("${") != len(names):
        raise where.error(
            f"{what} has a '${{' that does not open a ${{NAME}} placeholder",
            hint="a secret is written ${NAME}; there is no escape for a literal '${'",
        )


def _no_templates(text: str, what: str, where: _Where, hint: str) -> None:
    if "${" in text:
        raise where.error(f"{what} may not hold a ${{...}} placeholder", hint=hint)


def _one_line(text: str, what: str, where: _Where) -> None:
    if set(text) & {"\0", "\r", "\n"}:
        raise where.error(f"{what} has a line break or NUL", hint="keep it on one line")


def _string(data: Mapping[str, Any], key: str, where: _Where) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise where.error(f"`{key}` must be a non-empty string", hint=_EXAMPLE)
    return value


def _table(data: Mapping[str, Any], key: str, where: _Where, example: str) -> dict[str, str]:
    value = data.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise where.error(f"`{key}` must be a table of strings", hint=f"e.g. {key} = {example}")
    return dict(value)


_IN_ARGV_HINT = (
    "a secret in the command line would be visible in the process list; "
    'pass it through env instead, e.g. env = { TOKEN = "${TOKEN}" }'
)


def _parse_command(
    command: str, data: Mapping[str, Any], where: _Where
) -> tuple[tuple[str, ...], dict[str, str]]:
    args = data.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise where.error("`args` must be a list of strings", hint='e.g. args = ["-y", "some-mcp-server"]')
    _no_templates(command, "`command`", where, _IN_ARGV_HINT)
    for arg in args:
        _no_templates(arg, "`args`", where, _IN_ARGV_HINT)
        if "\0" in arg:
            raise where.error("`args` has a NUL character", hint="remove it")
    env = _table(data, "env", where, '{ API_KEY = "${API_KEY}" }')
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise where.error(f"env name {_shown(key)} is not a variable name", hint="use NAMES_LIKE_THIS")
        if "\0" in value:
            raise where.error(f"env {key} has a NUL character", hint="remove it")
        _check_templates(value, f"env {key}", where)
    return tuple(args), env


def _parse_url(url: str, data: Mapping[str, Any], where: _Where) -> tuple[str | None, dict[str, str]]:
    _no_templates(url, "`url`", where, "put a secret in bearer_token or a header value instead")
    _one_line(url, "`url`", where)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise where.error("`url` must be an http(s) URL", hint='e.g. url = "https://mcp.example.com/mcp"')
    if parts.username is not None or parts.password is not None:
        raise where.error(
            "`url` may not carry a user name or password",
            hint='use bearer_token = "${NAME}" or a header with a ${NAME} placeholder',
        )
    bearer = _string(data, "bearer_token", where)
    if bearer is not None:
        # A literal token would reach the container with the stub's spec; only a secret's name may.
        if _PLACEHOLDER.fullmatch(bearer) is None:
            raise where.error(
                "`bearer_token` must be a single ${NAME} placeholder",
                hint='store the token with `containai secrets set NAME` and write bearer_token = "${NAME}"',
            )
        _check_templates(bearer, "`bearer_token`", where)
    headers = _table(data, "headers", where, '{ "X-Api-Key" = "${API_KEY}" }')
    seen: set[str] = set()
    for key, value in headers.items():
        if not _HEADER_NAME.match(key):
            raise where.error(f"header name {_shown(key)} is not an HTTP header name", hint="e.g. X-Api-Key")
        if key.lower() in seen:
            raise where.error(f"header {key} is given twice", hint="header names ignore case; keep one")
        seen.add(key.lower())
        if key.lower() == "authorization" and bearer is not None:
            raise where.error(
                "both `bearer_token` and an Authorization header are given", hint="keep one of them"
            )
        _one_line(value, f"header {key}", where)
        _check_templates(value, f"header {key}", where)
    return bearer, headers


def parse_server(name: object, data: object, source: Source, origin: str) -> McpServer:
    """Validate one ``[mcp_servers.<name>]`` table from ``origin`` into an ``McpServer``."""
    where = _Where(origin, name)
    if not isinstance(name, str) or not SERVER_NAME.match(name):
        raise where.error(
            "the server name is not allowed",
            hint="use up to 41 lower-case letters, digits, '-' and '_', starting with a letter or digit",
        )
    if not isinstance(data, Mapping):
        raise where.error("must be a table", hint=_EXAMPLE)
    unknown = sorted(set(data) - _COMMAND_KEYS - _URL_KEYS)
    if unknown:
        raise where.error(
            f"unknown key {', '.join(_shown(key) for key in unknown)}",
            hint="the keys are command, args, env (command servers) and url, bearer_token, headers (URL servers)",
        )
    if ("command" in data) == ("url" in data):
        raise where.error("give exactly one of `command` and `url`", hint=_EXAMPLE)
    mixed = sorted(set(data) & (_URL_KEYS if "command" in data else _COMMAND_KEYS))
    if mixed:
        kind, other = ("command", "URL") if "command" in data else ("URL", "command")
        raise where.error(
            f"{', '.join(mixed)} is for {other} servers, and this is a {kind} server", hint=_EXAMPLE
        )
    if (command := _string(data, "command", where)) is not None:
        args, env = _parse_command(command, data, where)
        return McpServer(name, source, command=command, args=args, env=_frozen(env))
    url = _string(data, "url", where) or ""  # present: checked above
    bearer, headers = _parse_url(url, data, where)
    return McpServer(name, source, url=url, bearer_token=bearer, headers=_frozen(headers))


def load_servers(data: Mapping[str, Any], source: Source, origin: str) -> list[McpServer]:
    """The servers in the ``mcp_servers`` table of one parsed config file, in file order."""
    table = data.get("mcp_servers")
    if table is None:
        return []
    if not isinstance(table, Mapping):
        raise ConfigError(f"{origin}: `mcp_servers` must be a table", hint=_EXAMPLE)
    return [parse_server(name, entry, source, origin) for name, entry in table.items()]


def repo_servers(repo_root: Path) -> list[McpServer]:
    """The servers a repository's ``.containai/config.toml`` declares (untrusted)."""
    return load_servers(load_repo_config(repo_root), "repo", str(repo_root / REPO_CONFIG))


def resolve_mcp_servers(paths: Paths, repo_root: Path | None) -> McpResolution:
    """The servers a session on ``repo_root`` (the repository's top level, resolved) runs, and the rest.

    The user's servers always run; a repository's runs only when the approvals store pins exactly its
    digest for that repository, and never when the user has a server of the same name.
    """
    user = load_servers(load_user_config(paths), "user", str(paths.config_file))
    if repo_root is None:
        return McpResolution(tuple(user))
    mine = {server.name for server in user}
    pins = approved_mcp(paths.approvals_file, repo_root)
    active: list[McpServer] = []
    pending: list[PendingServer] = []
    shadowed: list[McpServer] = []
    for server in repo_servers(repo_root):
        if server.name in mine:
            shadowed.append(server)
        elif pins.get(server.name) == server.digest():
            active.append(server)
        else:
            pending.append(PendingServer(server, "changed" if server.name in pins else "new"))
    return McpResolution((*user, *active), tuple(pending), tuple(shadowed))


def render_definition(server: McpServer) -> str:
    """The whole definition for a person to review before approving it.

    Every value is printed as a JSON string, so control characters and look-alike letters in a
    repository's file show as escapes instead of acting on the terminal.
    """

    def text(value: str) -> str:
        return json.dumps(value)

    lines = [f"{server.name} ({server.source}, {server.kind} server, {server.digest()})"]
    if server.command is not None:
        lines.append(f"  command: {text(server.command)}")
        lines.append(f"  args:    [{', '.join(text(arg) for arg in server.args)}]")
        lines += [f"  env:     {key} = {text(value)}" for key, value in sorted(server.env.items())]
    else:
        lines.append(f"  url:     {text(server.url or '')}")
        if server.bearer_token is not None:
            lines.append(f"  header:  Authorization = {text('Bearer ' + server.bearer_token)}")
        lines += [f"  header:  {key} = {text(value)}" for key, value in sorted(server.headers.items())]
    names = server.secret_names()
    lines.append(f"  secrets: {', '.join(names) if names else 'none'}")
    return "\n".join(lines)
