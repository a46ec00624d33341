"""How a session plans its MCP servers: the stub's tmpfs, the broker's mount, the agent's config."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from containai.broker.session import BrokerPaths
from containai.errors import UsageError
from containai.mcp.config import McpServer
from containai.runtime.fake import FakeRuntime
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
    # The server's own tmpfs, of its own uid; nothing at /run/containai/mcp itself (root's folder).
    assert spec.tmpfs["/run/containai/mcp/github"].endswith("uid=65500,gid=65500,mode=0711")
    assert "noexec" in spec.tmpfs["/run/containai/mcp/github"]
    assert "/run/containai/mcp" not in spec.tmpfs
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


def test_each_server_gets_a_uid_of_its_own_in_the_reserved_range(tmp_path: Path) -> None:
    plan = mcp.plan_mcp([GITHUB, DOCS], broker=broker(tmp_path), agent_uid=1000)
    assert plan is not None
    assert dict(plan.uids) == {"github": 65500, "docs": 65501}
    assert mcp.tmpfs(plan) == {
        "/run/containai/mcp/github": "rw,noexec,nosuid,nodev,size=512m,uid=65500,gid=65500,mode=0711",
        "/run/containai/mcp/docs": "rw,noexec,nosuid,nodev,size=512m,uid=65501,gid=65501,mode=0711",
    }
    # The last uid of the range, and no further.
    assert list(mcp.allocate_uids([f"s{i}" for i in range(30)]).values()) == list(range(65500, 65530))
    with pytest.raises(UsageError) as refused:
        mcp.allocate_uids([f"s{i}" for i in range(31)])
    assert str(refused.value.message) == (
        "31 MCP servers are configured; a session runs at most 30, each under a uid of its own"
    )
    assert refused.value.hint is not None and "containai mcp ls" in refused.value.hint


def test_an_agent_on_an_mcp_servers_uid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="uid 65501, which ContainAI reserves for MCP servers"):
        mcp.plan_mcp([GITHUB], broker=broker(tmp_path), agent_uid=65501)


def test_each_stub_is_installed_and_served_under_its_servers_uid_with_its_own_capability_only(
    tmp_path: Path,
) -> None:
    plan = mcp.plan_mcp([GITHUB, DOCS], broker=broker(tmp_path), agent_uid=1000)
    assert plan is not None
    runtime = FakeRuntime()
    runtime.create_container(
        hardened_spec(
            image="i",
            name="c1",
            command=["x"],
            labels={},
            uid=1000,
            gid=1000,
            mounts=[],
            resources=Resources(2**30, 10**9),
            environment={},
        )
    )
    runtime.start("c1")

    def admin(socket: Path, request: Mapping[str, object]) -> dict[str, Any]:
        return {"token": f"token-of-{request['consumer']}", "bundle": "YnVuZGxl"}

    state = mcp.start_stub(
        runtime, plan, session="s1", container="c1", agent_user="1000:1000", environment={}, admin=admin
    )

    assert dict(state.uids) == {"github": 65500, "docs": 65501}
    assert mcp.StubState.parse(state.to_json()) == state
    stubs = [(call.argv, call.user) for call in runtime.execs if call.argv[0] == mcp.STUB]
    assert stubs == [
        ((mcp.STUB, "install", "--state", "/run/containai/mcp/github"), "65500:65500"),
        ((mcp.STUB, "install", "--state", "/run/containai/mcp/docs"), "65501:65501"),
        ((mcp.STUB, "serve", "--state", "/run/containai/mcp/github"), "65500:65500"),
        ((mcp.STUB, "serve", "--state", "/run/containai/mcp/docs"), "65501:65501"),
    ]
    # Each front door is checked as the agent, which must reach it.
    checks = [(call.argv, call.user) for call in runtime.execs if call.argv[0] == "test"]
    assert checks == [
        (("test", "-S", "/run/containai/mcp/github/front.sock"), "1000:1000"),
        (("test", "-S", "/run/containai/mcp/docs/front.sock"), "1000:1000"),
    ]
    documents = [json.loads(data) for _, data in runtime.inputs]
    assert [list(d["config"]["servers"]) for d in documents] == [["github"], ["docs"]]
    assert [list(d["caps"]) for d in documents] == [["github"], ["docs"]]
    assert documents[0]["caps"]["github"]["token"] == "token-of-github"  # noqa: S105  # a fake's token
    assert documents[0]["config"]["cwd"] == "/run/containai/mcp/github/home"
    assert "token-of-github" not in json.dumps(documents[1])


def test_a_session_recorded_before_servers_had_uids_resumes_on_the_stubs(tmp_path: Path) -> None:
    old = json.dumps(
        {
            "session": "s",
            "container": "c",
            "admin_socket": "a",
            "secrets": {"gh": []},
            "servers": {"gh": {}},
            "proxy": {},
        }
    )
    assert dict(mcp.StubState.parse(old).uids) == {"gh": 65531}
