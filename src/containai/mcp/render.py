"""Each agent CLI's MCP configuration, with every server entry pointing at the session's stub.

The agent never sees a server's real command, URL or secrets: each entry runs
``/usr/local/bin/mcp-stub connect <name>`` and carries no environment. The format is chosen by the
agent definition's ``mcp_config`` path, which is where that CLI reads its user-level servers.

What each CLI expects (checked against their documentation and issue trackers):

- Claude Code, ``~/.claude.json``: user-scope servers are the top-level ``mcpServers`` object,
  ``{"type": "stdio", "command": ..., "args": [...], "env": {}}`` (code.claude.com/docs/en/mcp).
  Only project-scope servers (a repository's ``.mcp.json``) wait for an approval prompt, and "trust
  verification is disabled when running non-interactively with the -p flag"
  (code.claude.com/docs/en/security), so ``-p`` needs no other field. Interactive sessions show the
  folder-trust dialog for the workspace (``projects[<dir>].hasTrustDialogAccepted``); answering it is
  left to the user. The startup timeout comes from the ``MCP_TIMEOUT`` variable, not this file.
- Codex, ``~/.codex/config.toml``: ``[mcp_servers.<name>]`` with ``command`` and ``args``
  (developers.openai.com/codex/mcp). ``startup_timeout_sec`` is optional with a default of 10
  seconds, too short when the stub first has to start an ``npx`` server, so it is set. The file also
  holds the model provider that points Codex at the credential gateway, so the tables are appended.
- GitHub Copilot CLI, ``~/.copilot/mcp-config.json``: ``mcpServers`` entries of ``"type": "local"``
  (or ``"stdio"``) with ``command``, ``args`` and ``tools`` (docs.github.com, "Adding MCP servers for
  GitHub Copilot CLI"). ``tools`` is needed: without it the CLI registers the server but offers none
  of its tools; ``["*"]`` offers all. Local servers inherit only ``PATH`` from the CLI's environment,
  so the stub must not depend on any other variable.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from containai.errors import ConfigError
from containai.inside import protocol
from containai.mcp.config import SERVER_NAME

STUB = protocol.STUB_PROGRAM
CODEX_STARTUP_TIMEOUT = 60

# The agent definition's mcp_config -> (format, path relative to HOME).
FORMATS: dict[str, tuple[str, str]] = {
    "~/.claude.json": ("claude", ".claude.json"),
    "~/.codex/config.toml": ("codex", ".codex/config.toml"),
    "~/.copilot/mcp-config.json": ("copilot", ".copilot/mcp-config.json"),
}


def _stub_args(name: str) -> list[str]:
    return ["connect", name]


def _entry(fmt: str, name: str) -> dict[str, Any]:
    if fmt == "claude":
        return {"type": "stdio", "command": STUB, "args": _stub_args(name), "env": {}}
    return {"type": "local", "command": STUB, "args": _stub_args(name), "tools": ["*"]}


def _merge_json(path: str, existing: str | None, fmt: str, names: list[str]) -> str:
    try:
        data: object = json.loads(existing) if existing is not None else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"~/{path} as planned is not valid JSON: {exc}", hint="fix the agent's definition"
        ) from exc
    servers = data.get("mcpServers", {}) if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(servers, dict):
        raise ConfigError(
            f"~/{path} as planned is not a JSON object with an mcpServers object",
            hint="fix the agent's definition",
        )
    _refuse_clashes(path, servers, names)
    data["mcpServers"] = {**servers, **{name: _entry(fmt, name) for name in names}}
    return json.dumps(data, indent=2) + "\n"


def _merge_toml(path: str, existing: str | None, names: list[str]) -> str:
    text = existing or ""
    try:
        servers = tomllib.loads(text).get("mcp_servers", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"~/{path} as planned is not valid TOML: {exc}", hint="fix the agent's definition"
        ) from exc
    if not isinstance(servers, dict):
        raise ConfigError(f"~/{path} as planned has an mcp_servers that is not a table", hint="remove it")
    _refuse_clashes(path, servers, names)
    lines = [text.rstrip("\n"), ""] if text.strip() else []
    lines.append("# Written by ContainAI: every MCP server is reached through the session's stub.")
    for name in names:
        lines += [
            f"[mcp_servers.{name}]",
            f"command = {json.dumps(STUB)}",
            f"args = {json.dumps(_stub_args(name))}",
            f"startup_timeout_sec = {CODEX_STARTUP_TIMEOUT}",
            "",
        ]
    merged = "\n".join(lines)
    try:
        # An inline `mcp_servers = {...}` cannot take more tables; better to refuse than to write
        # a file that Codex would reject.
        got = tomllib.loads(merged).get("mcp_servers", {})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"cannot add MCP servers to ~/{path} as planned: {exc}",
            hint="declare mcp_servers there as [mcp_servers.NAME] tables, or not at all",
        ) from exc
    if any(got.get(name, {}).get("command") != STUB for name in names):
        raise ConfigError(f"cannot add MCP servers to ~/{path} as planned", hint="fix the agent's definition")
    return merged


def _refuse_clashes(path: str, servers: Mapping[str, object], names: list[str]) -> None:
    clashes = sorted(set(servers) & set(names))
    if clashes:
        # Its entry would run without the stub: refuse rather than pick one.
        raise ConfigError(
            f"~/{path} as planned already defines MCP server {', '.join(clashes)}",
            hint="rename the server in your config.toml, or remove it from the agent's definition",
        )


def mcp_config_path(mcp_config: str) -> str:
    """The file under HOME that ``mcp_config`` names, for a format ContainAI can write."""
    if mcp_config not in FORMATS:
        raise ConfigError(
            f"ContainAI cannot write MCP servers to {mcp_config}",
            hint=f"mcp_config is one of {', '.join(FORMATS)}; "
            "remove it from the agent's definition to run that agent without MCP servers",
        )
    return FORMATS[mcp_config][1]


def render_mcp_files(fmt: str, names: Iterable[str], existing: Mapping[str, str]) -> dict[str, str]:
    """``existing`` (HOME-relative path -> text) with the CLI's MCP configuration merged in.

    ``fmt`` is the agent definition's ``mcp_config``. Every entry runs the stub; an entry of the
    same name already planned is refused, since it would run without the stub.
    """
    wanted = sorted(set(names))
    for name in wanted:
        if not SERVER_NAME.match(name):
            raise ConfigError(f"{name!r} is not an MCP server name", hint="see `containai mcp ls`")
    files = dict(existing)
    if not wanted:
        return files
    path = mcp_config_path(fmt)
    kind = FORMATS[fmt][0]
    if kind == "codex":
        files[path] = _merge_toml(path, existing.get(path), wanted)
    else:
        files[path] = _merge_json(path, existing.get(path), kind, wanted)
    return files
