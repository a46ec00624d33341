"""Each agent CLI's MCP config file: every entry is the stub, merged into what the session already writes."""

from __future__ import annotations

import json
import tomllib

import pytest

from containai.agents.definition import AgentDef, load_agents
from containai.errors import ConfigError
from containai.mcp.render import FORMATS, STUB, mcp_config_path, render_mcp_files

CODEX_GATEWAY = """
# Written by ContainAI: the model API goes through the session's credential gateway.
model_provider = "containai"

[model_providers.containai]
name = "OpenAI, through ContainAI's credential gateway"
base_url = "http://127.0.0.1:8787/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
"""


def agent(name: str) -> AgentDef:
    return load_agents(None)[name]


def test_claude_code() -> None:
    files = render_mcp_files("~/.claude.json", ["github", "docs"], {})
    assert set(files) == {".claude.json"}
    assert json.loads(files[".claude.json"]) == {
        "mcpServers": {
            "docs": {"type": "stdio", "command": STUB, "args": ["connect", "docs"], "env": {}},
            "github": {"type": "stdio", "command": STUB, "args": ["connect", "github"], "env": {}},
        }
    }


def test_codex() -> None:
    files = render_mcp_files("~/.codex/config.toml", ["github"], {})
    assert tomllib.loads(files[".codex/config.toml"]) == {
        "mcp_servers": {"github": {"command": STUB, "args": ["connect", "github"], "startup_timeout_sec": 60}}
    }


def test_copilot_cli() -> None:
    files = render_mcp_files("~/.copilot/mcp-config.json", ["github"], {})
    assert json.loads(files[".copilot/mcp-config.json"]) == {
        "mcpServers": {
            "github": {"type": "local", "command": STUB, "args": ["connect", "github"], "tools": ["*"]}
        }
    }


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_no_entry_carries_anything_but_the_stub(fmt: str) -> None:
    text = render_mcp_files(fmt, ["a-b", "c_d", "0"], {})[mcp_config_path(fmt)]
    data = tomllib.loads(text) if fmt.endswith(".toml") else json.loads(text)
    entries = data["mcp_servers" if fmt.endswith(".toml") else "mcpServers"]
    assert sorted(entries) == ["0", "a-b", "c_d"]
    for name, entry in entries.items():
        assert entry["command"] == STUB and entry["args"] == ["connect", name]
        assert not entry.get("env") and "url" not in entry and "headers" not in entry


def test_codex_merges_into_the_gateways_config() -> None:
    existing = {".codex/config.toml": CODEX_GATEWAY, ".other": "kept"}
    files = render_mcp_files("~/.codex/config.toml", ["docs", "github"], existing)
    assert files[".other"] == "kept"
    assert files[".codex/config.toml"].startswith(CODEX_GATEWAY.rstrip("\n"))
    data = tomllib.loads(files[".codex/config.toml"])
    assert data["model_provider"] == "containai"
    assert data["model_providers"]["containai"]["base_url"] == "http://127.0.0.1:8787/v1"
    assert sorted(data["mcp_servers"]) == ["docs", "github"]
    assert existing[".codex/config.toml"] == CODEX_GATEWAY  # the input is not changed


def test_codex_merges_beside_other_servers_but_refuses_a_clash() -> None:
    existing = {".codex/config.toml": '[mcp_servers.other]\ncommand = "x"\n'}
    data = tomllib.loads(render_mcp_files("~/.codex/config.toml", ["github"], existing)[".codex/config.toml"])
    assert sorted(data["mcp_servers"]) == ["github", "other"]
    existing = {".codex/config.toml": '[mcp_servers.github]\ncommand = "npx"\n'}
    with pytest.raises(ConfigError, match="already defines MCP server github"):
        render_mcp_files("~/.codex/config.toml", ["github"], existing)


@pytest.mark.parametrize(
    "text",
    [
        'mcp_servers = { other = { command = "x" } }\n',  # an inline table cannot take more tables
        'mcp_servers = "no"\n',
        "not = toml = at all\n",
    ],
)
def test_codex_refuses_what_it_cannot_merge_into(text: str) -> None:
    with pytest.raises(ConfigError):
        render_mcp_files("~/.codex/config.toml", ["github"], {".codex/config.toml": text})


def test_codex_text_without_a_final_newline() -> None:
    files = render_mcp_files("~/.codex/config.toml", ["g"], {".codex/config.toml": 'model = "o3"'})
    data = tomllib.loads(files[".codex/config.toml"])
    assert data["model"] == "o3" and list(data["mcp_servers"]) == ["g"]


@pytest.mark.parametrize("fmt", ["~/.claude.json", "~/.copilot/mcp-config.json"])
def test_json_merges_the_mcp_servers_key(fmt: str) -> None:
    path = mcp_config_path(fmt)
    existing = {path: json.dumps({"theme": "dark", "mcpServers": {"other": {"command": "x"}}})}
    data = json.loads(render_mcp_files(fmt, ["github"], existing)[path])
    assert data["theme"] == "dark"
    assert sorted(data["mcpServers"]) == ["github", "other"]
    with pytest.raises(ConfigError, match="already defines MCP server other"):
        render_mcp_files(fmt, ["other"], existing)


@pytest.mark.parametrize("text", ["[]", '{"mcpServers": []}', "{not json"])
def test_json_refuses_what_it_cannot_merge_into(text: str) -> None:
    with pytest.raises(ConfigError):
        render_mcp_files("~/.claude.json", ["github"], {".claude.json": text})


def test_no_servers_changes_nothing() -> None:
    existing = {".codex/config.toml": CODEX_GATEWAY}
    assert render_mcp_files("~/.codex/config.toml", [], existing) == existing
    assert render_mcp_files("~/.aider/mcp.json", [], {}) == {}


def test_unknown_mcp_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"cannot write MCP servers to ~/\.aider/mcp\.json") as caught:
        render_mcp_files("~/.aider/mcp.json", ["github"], {})
    assert "~/.claude.json" in (caught.value.hint or "")


@pytest.mark.parametrize("name", ["Bad", "a.b", "", "a]\n[x"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not an MCP server name"):
        render_mcp_files("~/.codex/config.toml", [name], {})


def test_names_are_written_once_in_order() -> None:
    data = json.loads(render_mcp_files("~/.claude.json", ["b", "a", "b"], {})[".claude.json"])
    assert list(data["mcpServers"]) == ["a", "b"]


@pytest.mark.parametrize("name", ["claude", "codex", "copilot"])
def test_every_built_in_agents_mcp_config_is_a_known_format(name: str) -> None:
    mcp_config = agent(name).mcp_config
    assert mcp_config is not None
    assert render_mcp_files(mcp_config, ["s"], {})


def test_codex_gateway_file_and_mcp_file_are_the_same() -> None:
    codex = agent("codex")
    assert codex.gateway is not None and codex.mcp_config is not None
    assert codex.gateway.config_path == mcp_config_path(codex.mcp_config)
