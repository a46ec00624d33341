"""How a session plans its MCP servers: the stub's tmpfs, the broker's mount, the agent's config."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from containai.broker.session import BrokerPaths
from containai.errors import UsageError
from containai.mcp.config import McpServer
from containai.session import mcp
from containai.session.plan import Resources, hardened_spec

GITHUB = McpServer(
    name="github",
    source="user",
    command="npx",
    args=("-y", "server-github"),
    env={"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
)
DOCS = McpServer(name="docs", source="repo", url="https://mcp.docs.example/mcp", bearer_token="${DOCS_TOKEN}")  # noqa: S106  # a placeholder, not a token


def broker(state_dir: Path) -> BrokerPaths:
    return BrokerPaths.for_session(state_dir, state_dir / "audit.jsonl", os.environ)


def test_no_servers_no_broker(tmp_path: Path) -> None:
    assert mcp.plan_mcp([], broker=broker(tmp_path), agent_uid=1000) is None
    assert mcp.tmpfs(None) == {}
    assert mcp.agent_files(None, "~/.claude.json", {"x": "y"}) == {"x": "y"}


def test_the_agent_may_not_share_the_stubs_uid(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="reserves"):
        mcp.plan_mcp([GITHUB], broker=broker(tmp_path), agent_uid=mcp.STUB_UID)


def test_the_container_gets_the_stubs_tmpfs_and_the_brokers_socket_read_only(tmp_path: Path) -> None:
    plan = mcp.plan_mcp([GITHUB], broker=broker(tmp_path / "s1"), agent_uid=1000)
    assert plan is not None
    spec = hardened_spec(
        image="i",
        name="n",
        command=["x"],
        labels={},
        uid=1000,
        gid=1000,
        mounts=mcp.mounts(plan),
        resources=Resources(2**30, 10**9),
        environment={},
        extra_tmpfs=mcp.tmpfs(plan),
    )
    assert spec.tmpfs["/run/containai/mcp"].endswith("uid=65531,gid=65531,mode=0711")
    assert "noexec" in spec.tmpfs["/run/containai/mcp"]
    # Root's, so no ancestor of the stub's folders is the agent's to write (no uid= option: root owns it).
    assert spec.tmpfs["/run/containai"].endswith("mode=0755")
    assert "uid=" not in spec.tmpfs["/run/containai"]
    assert plan.broker.sockets.name == "s1"  # the session's own, in a short private directory
    assert len(str(plan.broker.admin_socket)) < 100
    (mount,) = spec.mounts
    assert (mount.target, mount.source, mount.read_only) == (
        "/run/containai/broker",
        str(plan.broker.sockets / "broker"),
        True,
    )


def test_every_cli_entry_runs_the_stub_and_carries_no_secret(tmp_path: Path) -> None:
    plan = mcp.plan_mcp([GITHUB, DOCS], broker=broker(tmp_path), agent_uid=1000)
    claude = mcp.agent_files(plan, "~/.claude.json", {})
    servers = json.loads(claude[".claude.json"])["mcpServers"]
    assert servers["github"]["command"] == "/usr/local/bin/mcp-stub"
    assert servers["github"]["args"] == ["connect", "github"]
    assert "GITHUB_TOKEN" not in claude[".claude.json"] and "npx" not in claude[".claude.json"]
    codex = mcp.agent_files(
        plan, "~/.codex/config.toml", {".codex/config.toml": 'model_provider = "containai"\n'}
    )
    parsed = tomllib.loads(codex[".codex/config.toml"])
    assert parsed["model_provider"] == "containai"  # the gateway's provider is kept
    assert parsed["mcp_servers"]["docs"]["args"] == ["connect", "docs"]


def test_url_servers_hosts_join_the_allowlist() -> None:
    assert mcp.mcp_hosts([GITHUB, DOCS]) == ("mcp.docs.example",)
