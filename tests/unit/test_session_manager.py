"""The session core without an engine: every part's plan, provision, start, finish and teardown, a
failure at each step, and gc, through fake ports (``containai.session.testing``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from containai.agents.definition import get_agent
from containai.errors import ConfigError, EngineAPIError, GateRefused, ImageMissing, SessionError, UsageError
from containai.mcp.config import McpServer
from containai.secrets.value import Secret
from containai.session import naming
from containai.session.manager import NetworkSettings, SessionManager, SessionRequest
from containai.session.parts import FinishOptions
from containai.session.plan import REPO_MOUNT, WORKSPACE, SessionPlan
from containai.session.repo import RepoInfo
from containai.session.testing import FakePorts, fake_ports
from containai.workspace.gate import ImportResult, Refusal
from containai.workspace.part import render_refusal, unexported_work

BASE = "a" * 40
REPO = RepoInfo(root=Path("/home/user/proj"), name="proj", head=BASE, current_branch="main", dirty=())
CANARY = McpServer(name="canary", source="user", command="python3", env={"TOKEN": "${CANARY}"})


def request(agent: str = "shell", **overrides: Any) -> SessionRequest:
    fields: dict[str, Any] = {
        "agent": get_agent(agent, None),
        "repo_path": REPO.root,
        "cwd": REPO.root,
        "channel": "dev",
        "mode": "ephemeral",
        "network_proxy": "restricted",
    }
    fields.update(overrides)
    return SessionRequest(**fields)


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePorts:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return fake_ports()


def manager(ports: FakePorts) -> SessionManager:
    return SessionManager(ports)


def planned(ports: FakePorts, req: SessionRequest | None = None, **kw: Any) -> SessionPlan:
    kw.setdefault("repo", REPO)
    kw.setdefault("environ", {"XDG_RUNTIME_DIR": "/run/user/1000"})
    return manager(ports).plan(req or request(), **kw)


def owned_by(ports: FakePorts, session: str) -> list[str]:
    selector = {naming.SESSION: session}
    runtime = ports.runtime
    return sorted(
        [c.name for c in runtime.containers(selector)]
        + [v.name for v in runtime.volumes(selector)]
        + [n.name for n in runtime.networks(selector)]
    )


def roles(plan: SessionPlan) -> list[str]:
    return [p.role for _, p in plan.parts]


# -- plan


def test_a_restricted_session_has_a_workspace_and_nothing_else(ports: FakePorts) -> None:
    plan = planned(ports)
    assert roles(plan) == ["disk", "workspace"]
    assert plan.branch is not None and plan.branch.name == "shell/session-1" and plan.branch.created
    assert ports.git.branches == {"shell/session-1": BASE}  # reserved on the host at plan time
    targets = {m.target: m for m in plan.container.mounts}
    assert targets[REPO_MOUNT].read_only and targets[REPO_MOUNT].kind == "bind"
    assert targets[WORKSPACE].source == plan.planned("workspace").detail.volume  # type: ignore[union-attr]
    assert plan.container.network_mode == "none"
    assert "HTTP_PROXY" not in plan.container.environment
    assert plan.labels.launcher == "boot:4242" and plan.labels.branch_created
    assert "git checkout --quiet -B shell/session-1" in plan.setup_script
    assert "Host User" in plan.setup_script
    assert ports.runtime.containers({}) == []  # planning creates nothing


def test_a_squid_session_adds_the_proxy_and_its_environment(ports: FakePorts) -> None:
    plan = planned(ports, request(network_proxy="squid", allow_domains=("pypi.org",)))
    assert roles(plan) == ["disk", "workspace", "egress"]
    egress = plan.planned("egress")
    assert egress is not None and "pypi.org" in egress.detail.policy.allow
    assert plan.container.environment["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert any(m.source == egress.detail.socket_volume for m in plan.container.mounts)


def test_the_gateway_plans_only_with_a_credential_and_the_proxy(ports: FakePorts) -> None:
    key = Secret("sk-test")
    assert "gateway" not in roles(planned(ports, request("codex", network_proxy="squid")))
    assert "gateway" not in roles(planned(ports, request("codex", credential=key)))  # restricted
    plan = planned(ports, request("codex", network_proxy="squid", credential=key))
    assert roles(plan) == ["disk", "workspace", "egress", "gateway"]
    assert plan.container.environment["OPENAI_API_KEY"] == "containai-placeholder-not-a-real-key"
    assert "sk-test" not in repr(plan)
    assert ".codex/config.toml" in plan.setup_script or "codex" in plan.setup_script


def test_the_model_api_is_the_gateways_alone(ports: FakePorts) -> None:
    """The upstream leaves the agent's list; the gateway, not the agent, gets the proxy's second socket."""
    key = Secret("sk-test")
    allow = ("api.openai.com", ".mock.test")
    plan = planned(
        ports,
        request("codex", network_proxy="squid", credential=key, allow_domains=allow),
        environ={"XDG_RUNTIME_DIR": "/run/user/1000"},
    )
    egress = plan.planned("egress")
    gateway = plan.planned("gateway")
    assert egress is not None and gateway is not None
    policy = egress.detail.policy
    assert policy.gateway == ("api.openai.com",)
    assert "api.openai.com" not in policy.allow and ".mock.test" in policy.allow
    assert "taken off the agent's list" in policy.sources["api.openai.com"]
    own = egress.detail.gateway_volume
    assert own is not None and own != egress.detail.socket_volume
    assert "http_port 127.0.0.1:3129 name=gateway" in egress.detail.squid_conf
    assert any(m.source == own for m in egress.detail.proxy.mounts)
    spec = gateway.detail.spec
    assert [m.source for m in spec.mounts if m.source == own] == [own]
    assert egress.detail.socket_volume not in [m.source for m in spec.mounts]
    assert spec.command[spec.command.index("--proxy") + 1] == "/run/containai-egress-gateway/proxy.sock"
    assert own not in [m.source for m in plan.container.mounts]  # never the agent's
    # Another upstream (CONTAINAI_GATEWAY_UPSTREAM) is the one taken off.
    other = planned(
        ports,
        request("codex", network_proxy="squid", credential=key, gateway_upstream="http://api.mock.test/v1"),
    ).planned("egress")
    assert other is not None and other.detail.policy.gateway == ("api.mock.test",)
    assert "api.openai.com" in other.detail.policy.allow
    # Without a gateway, the agent keeps its endpoint, and the proxy has one port and two volumes.
    alone = planned(ports, request("codex", network_proxy="squid")).planned("egress")
    assert alone is not None and alone.detail.gateway_volume is None and not alone.detail.policy.gateway
    assert "api.openai.com" in alone.detail.policy.allow
    assert "name=gateway" not in alone.detail.squid_conf


def test_a_gateway_upstream_that_is_no_url_is_refused(ports: FakePorts) -> None:
    key = Secret("sk-test")
    with pytest.raises(ConfigError, match="not an http"):
        planned(
            ports, request("codex", network_proxy="squid", credential=key, gateway_upstream="api.mock.test")
        )


def test_mcp_servers_bring_the_stub_and_the_broker(ports: FakePorts) -> None:
    plan = planned(ports, request("claude"), mcp_servers=[CANARY])
    assert roles(plan) == ["disk", "workspace", "mcp", "broker"]
    # The server's own tmpfs, of its own uid; the broker is told that uid is that server's.
    assert "uid=65500,gid=65500" in plan.container.tmpfs[f"/run/containai/mcp/{CANARY.name}"]
    broker = plan.planned("broker")
    assert broker is not None and dict(broker.detail.servers) == {CANARY.name: 65500}
    assert any(m.target == "/run/containai/broker" for m in plan.container.mounts)


def test_a_part_that_refuses_releases_the_reserved_branch(ports: FakePorts) -> None:
    with pytest.raises(UsageError, match="not a domain name"):
        planned(ports, request(network_proxy="squid", allow_domains=("bad domain!",)))
    assert ports.git.branches == {}
    assert ports.git.deleted == ["shell/session-1"]


def test_a_dirty_repository_is_refused_before_anything(ports: FakePorts) -> None:
    dirty = RepoInfo(REPO.root, "proj", BASE, "main", ("notes.txt",))
    with pytest.raises(UsageError, match=r"notes\.txt"):
        planned(ports, repo=dirty)
    assert ports.git.branches == {}
    assert planned(ports, request(force=True), repo=dirty).branch is not None


def test_a_missing_image_says_how_to_build_it(ports: FakePorts) -> None:
    ports.runtime.images.clear()
    with pytest.raises(ImageMissing) as refused:
        planned(ports)
    assert "containai images build --channel dev --agents base" in (refused.value.hint or "")


def test_user_labels_scope_every_resource(ports: FakePorts) -> None:
    plan = planned(ports, request(network_proxy="squid", scope={"team": "web"}))
    manager(ports).provision(plan)
    for item in [*ports.runtime.containers({}), *ports.runtime.volumes({})]:
        assert item.labels["team"] == "web"
    assert [row.name for row in manager(ports).sessions({"team": "web"})] == [plan.name]
    assert manager(ports).sessions({"team": "other"}) == []


# -- provision


def test_provision_runs_each_part_then_marks_the_session_ready(ports: FakePorts) -> None:
    plan = planned(ports, request("claude", network_proxy="squid"), mcp_servers=[CANARY])
    ports.runtime.script_exec("test -S /run/containai/mcp/front.sock", code=0)
    manager(ports).provision(plan)
    runtime = ports.runtime
    names = {c.name for c in runtime.containers({naming.SESSION: plan.session_id})}
    assert names == {plan.name, f"{plan.name}-proxy"}
    assert runtime.container(plan.name).running  # type: ignore[union-attr]
    argvs = [" ".join(e.argv) for e in runtime.execs if e.ref == plan.name]
    setup = next(i for i, a in enumerate(argvs) if "git checkout" in a)
    relay = next(i for i, a in enumerate(argvs) if "TCP-LISTEN:3128" in a)
    stub = next(i for i, a in enumerate(argvs) if "mcp-stub install" in a)
    assert setup < relay < stub  # parts start in order
    assert ports.broker.started[0]["container"] == plan.name
    assert ports.broker.requests[0]["secrets"] == ["CANARY"]
    assert plan.state_dir in ports.host.ready
    assert ports.host.files[plan.state_dir / "squid.conf"].startswith("#")
    assert any("egress only through" in note for note in ports.reporter.notes)


@pytest.mark.parametrize(
    "step",
    ["create_volume", "create_network", "create_container", "start", "setup", "relay", "broker", "stub"],
)
def test_a_failure_at_any_step_undoes_the_whole_session(ports: FakePorts, step: str) -> None:
    plan = planned(ports, request("claude", network_proxy="squid"), mcp_servers=[CANARY])
    runtime = ports.runtime
    if step in ("create_volume", "create_network", "create_container", "start"):
        runtime.fail(step, EngineAPIError(f"the engine refused: {step}"))
    elif step == "setup":
        runtime.script_exec("git checkout", code=128, stdout=b"fatal: bad revision\n")
    elif step == "relay":
        runtime.script_exec("TCP-LISTEN:3128", error=EngineAPIError("exec refused"))
    elif step == "broker":
        ports.broker.fail_start = SessionError("the broker did not start")
    else:
        runtime.script_exec("mcp-stub install", code=1, stdout=b"mcp-stub: error: bad config\n")
    with pytest.raises((EngineAPIError, SessionError)):
        manager(ports).provision(plan)
    assert owned_by(ports, plan.session_id) == []
    assert ports.git.branches == {}  # the reserved branch went with it
    assert plan.state_dir in ports.host.removed
    assert plan.state_dir in ports.broker.stopped
    assert plan.state_dir not in ports.host.ready


def test_a_failed_setup_names_gits_own_error(ports: FakePorts) -> None:
    plan = planned(ports)
    ports.runtime.script_exec("git checkout", code=128, stdout=b"hint: x\nfatal: not a tree\n")
    with pytest.raises(SessionError, match="fatal: not a tree"):
        manager(ports).provision(plan)


# -- finish


def started(ports: FakePorts, req: SessionRequest | None = None) -> SessionPlan:
    plan = planned(ports, req)
    manager(ports).provision(plan)
    ports.runtime.execs.clear()
    return plan


def with_bundle(ports: FakePorts, data: bytes = b"# v2 git bundle\n") -> None:
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=0)
    ports.runtime.script_exec("stat -c %s /tmp/containai-session.bundle", stdout=f"{len(data)}\n".encode())
    ports.runtime.script_exec("cat /tmp/containai-session.bundle", stdout=data)


def test_finish_brings_the_work_home_then_removes_everything(ports: FakePorts) -> None:
    plan = started(ports)
    with_bundle(ports, b"bundle-bytes")
    ports.git.imports.append(ImportResult("shell/session-1", "b" * 40, 2, False, False))
    result = manager(ports).finish(plan.name, FinishOptions())
    assert not result.kept and result.imported is not None and result.imported.commits == 2
    assert result.message == "2 commit(s) brought back to shell/session-1"
    assert ports.git.imported == [
        {
            "branch": "shell/session-1",
            "base": BASE,
            "bundle": b"bundle-bytes",
            "move_worktree": False,
            "keep_refused": plan.state_dir / "refused" / "rest.bundle",
        }
    ]
    assert owned_by(ports, plan.session_id) == []
    assert ports.git.branches == {"shell/session-1": "b" * 40}  # a branch with work stays
    export = ports.runtime.execs[0]
    assert export.user == plan.user and "containai export" in export.argv[-1]


def test_finish_without_commits_removes_the_empty_branch_it_created(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.message == "no new commits on shell/session-1" and result.imported is None
    assert ports.git.branches == {}


def test_finish_never_deletes_the_users_own_branch(ports: FakePorts) -> None:
    ports.git.branches["main"] = BASE
    plan = started(ports, request(use_current_branch=True))
    assert not plan.labels.branch_created
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    manager(ports).finish(plan.name, FinishOptions())
    assert ports.git.branches == {"main": BASE}
    with_bundle(ports)
    plan = started(ports, request(use_current_branch=True))
    manager(ports).finish(plan.name, FinishOptions())
    assert ports.git.imported[-1]["move_worktree"] is True


def test_a_checked_out_empty_branch_is_kept(ports: FakePorts) -> None:
    plan = started(ports)
    ports.git.checked_out_branches.add("shell/session-1")
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    manager(ports).finish(plan.name, FinishOptions())
    assert "shell/session-1" in ports.git.branches


@pytest.mark.parametrize("failure", ["export", "copy", "gate"])
def test_when_the_work_cannot_come_home_the_session_is_kept(ports: FakePorts, failure: str) -> None:
    plan = started(ports)
    if failure == "export":
        ports.runtime.script_exec("containai export", code=4, stdout=b"HEAD is not on the branch\n")
    elif failure == "copy":
        ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=0)
        ports.runtime.script_exec("cat /tmp/containai-session.bundle", code=1)
    else:
        with_bundle(ports)
        refusal = GateRefused(
            ["leak: a symlink"], bundle=Path("/tmp/b"), branch="shell/session-1"
        )  # a name only
        ports.git.imports.append(refusal)
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.kept and "kept" in result.message and f"remove-agent {plan.name}" in result.message
    assert plan.name in owned_by(ports, plan.session_id)
    assert plan.state_dir not in ports.host.removed


def test_a_partial_import_lands_the_honest_commits_and_keeps_the_session(ports: FakePorts) -> None:
    plan = started(ports)
    with_bundle(ports)
    kept = plan.state_dir / "refused" / "rest.bundle"
    refusal = Refusal(
        "c" * 40, "steal", ("symlink 'leak' -> '/etc/passwd': absolute target",), 1, "d" * 40, kept
    )
    ports.git.imports.append(ImportResult("shell/session-1", "b" * 40, 2, False, True, refused=refusal))
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.kept
    assert result.message == (
        f"2 commit(s) brought back to shell/session-1; commit cccccccccccc (steal) was refused: "
        f"symlink 'leak' -> '/etc/passwd': absolute target. The 1 refused commit(s) are kept as a bundle in "
        f"{kept} and in {plan.name}, which is kept: `containai logs {plan.name} --refused` shows why; "
        f"`remove-agent {plan.name} --no-push` discards them"
    )
    assert (
        result.kept_reason
        == f"commit {'c' * 40} was refused: symlink 'leak' -> '/etc/passwd': absolute target"
    )
    assert plan.name in owned_by(ports, plan.session_id)
    assert ports.git.branches["shell/session-1"] == "b" * 40
    saved = json.loads(ports.host.files[plan.state_dir / "refused" / "refusal.json"])
    assert (
        saved["landed_commits"] == 2 and saved["refused_commit"] == "c" * 40 and saved["bundle"] == str(kept)
    )
    assert render_refusal(saved).splitlines() == [
        f"refused commit: {'c' * 40} steal",
        "landed: 2 commit(s) on shell/session-1 (up to bbbbbbbbbbbb); refused: 1 commit(s)",
        "reason: symlink 'leak' -> '/etc/passwd': absolute target",
        f"bundle: {kept}  (inspect: git bundle list-heads {kept}; it is in no ref)",
    ]


def test_a_whole_refusal_is_saved_for_logs_refused_too(ports: FakePorts) -> None:
    plan = started(ports)
    with_bundle(ports)
    kept = plan.state_dir / "refused" / "rest.bundle"
    ports.git.imports.append(GateRefused(["a", "b\x1b[31m"], bundle=kept, branch="shell/session-1"))
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.kept and f"`containai logs {plan.name} --refused` shows every reason" in result.message
    saved = json.loads(ports.host.files[plan.state_dir / "refused" / "refusal.json"])
    assert (saved["reasons"], saved["bundle"], saved["landed_commits"]) == (["a", "b\x1b[31m"], str(kept), 0)
    assert "\x1b" not in render_refusal(saved)
    assert render_refusal(saved).startswith("refused: the whole bundle for shell/session-1; nothing landed")


def test_no_push_discards_without_exporting(ports: FakePorts) -> None:
    plan = started(ports)
    result = manager(ports).finish(plan.name, FinishOptions(push=False))
    assert "not brought back" in result.message
    assert ports.runtime.execs == [] and owned_by(ports, plan.session_id) == []


def test_a_session_killed_before_its_workspace_was_ready_has_nothing_to_bring(ports: FakePorts) -> None:
    plan = started(ports)
    ports.host.ready.clear()
    ports.runtime.script_exec("containai export", code=3)
    result = manager(ports).finish(plan.name, FinishOptions())
    assert not result.kept and result.imported is None


def test_a_stopped_container_is_started_again_to_export(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.stop(plan.name)
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    manager(ports).finish(plan.name, FinishOptions())
    assert ports.runtime.execs[0].ref == plan.name


def test_finish_keeps_the_egress_audit_and_says_what_was_blocked(ports: FakePorts) -> None:
    plan = started(ports, request(network_proxy="squid"))
    proxy = f"{plan.name}-proxy"
    record = '{{"time":"1","session":"{s}","method":"CONNECT","host":"{h}","decision":"{d}","rule":"{r}"}}\n'
    audit = record.format(s=plan.session_id, h="evil.example", d="deny", r="default-deny") + record.format(
        s=plan.session_id, h="pypi.org", d="allow", r="allowlist"
    )
    ports.runtime.files[(proxy, "/var/log/containai/egress.jsonl")] = audit.encode()
    ports.runtime.stop(proxy)
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    result = manager(ports).finish(plan.name, FinishOptions())
    kept = ports.host.root.parent / "session-logs" / f"{plan.name}-{plan.session_id}.egress.jsonl"
    assert ports.host.files[kept] == audit
    assert any("stopped during the session" in w for w in result.warnings)
    assert result.egress is not None and "evil.example" in result.egress


def test_finish_of_an_unknown_session_says_so(ports: FakePorts) -> None:
    with pytest.raises(UsageError, match="no session named nope"):
        manager(ports).finish("nope", FinishOptions())


# -- teardown


def test_teardown_runs_every_step_even_when_one_fails(ports: FakePorts) -> None:
    plan = started(ports, request(network_proxy="squid"))
    ports.runtime.fail("remove_container", EngineAPIError("the engine refused to remove"))
    with pytest.raises(EngineAPIError):
        manager(ports).rollback(plan)
    left = owned_by(ports, plan.session_id)
    assert len(left) == 1  # only the container whose removal failed
    assert plan.state_dir in ports.host.removed and plan.state_dir in ports.broker.stopped


# -- gc


def test_gc_finishes_dead_ephemeral_sessions_and_leaves_live_and_persistent_ones(ports: FakePorts) -> None:
    dead = started(ports)
    alive = started(ports)
    ports.host.alive.add("boot:4242-alive")
    alive_labels = {**ports.runtime.container(alive.name).labels, naming.LAUNCHER: "boot:4242-alive"}  # type: ignore[union-attr]
    info = ports.runtime.container(alive.name)
    ports.runtime.containers_by_id[info.id] = type(info)(  # type: ignore[union-attr]
        info.id,  # type: ignore[union-attr]
        info.name,  # type: ignore[union-attr]
        info.image,  # type: ignore[union-attr]
        info.status,  # type: ignore[union-attr]
        alive_labels,
    )
    persistent = started(ports, request(mode="persistent"))
    ports.runtime.create_volume("orphan", labels={naming.SESSION: "0rphan"})
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    removed = manager(ports).gc()
    assert sorted(removed) == sorted([dead.session_id, "0rphan"])
    assert owned_by(ports, dead.session_id) == [] and owned_by(ports, "0rphan") == []
    assert owned_by(ports, alive.session_id) and owned_by(ports, persistent.session_id)
    assert any(dead.name in note for note in ports.reporter.notes)


def test_gc_with_a_scope_touches_nothing_outside_it(ports: FakePorts) -> None:
    ours = started(ports, request(scope={"run": "1"}))
    theirs = started(ports)
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    assert manager(ports).gc(scope={"run": "1"}) == [ours.session_id]
    assert owned_by(ports, theirs.session_id)


def test_gc_keeps_a_dead_session_whose_work_cannot_come_home(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec("containai export", code=4)
    assert manager(ports).gc() == []
    assert owned_by(ports, plan.session_id)
    assert any("NOT brought back" in w for w in ports.reporter.warnings)


def test_network_settings_reach_the_policy(ports: FakePorts) -> None:
    settings = NetworkSettings(allow=("example.org",), deny=("api.anthropic.com",), presets=("pypi",))
    plan = planned(ports, request("claude", network_proxy="squid", network=settings))
    policy = plan.planned("egress").detail.policy  # type: ignore[union-attr]
    assert "example.org" in policy.allow and "pypi.org" in policy.allow
    assert "api.anthropic.com" not in policy.allow


def test_text_from_the_session_reaches_the_terminal_without_control_sequences(ports: FakePorts) -> None:
    plan = started(ports)
    hostile = b"\x1b]52;c;cGF3bmVk\x07\x1b[2J\x1b[1;1HAll good, nothing to see\n"
    ports.runtime.script_exec("containai export", code=4, stdout=hostile)
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.kept
    assert "\x1b" not in result.message and "\x07" not in result.message
    assert "\\x1b[2J" in result.message


def test_a_part_that_fails_to_finish_does_not_wedge_the_end(ports: FakePorts) -> None:
    plan = started(ports, request(network_proxy="squid"))
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    proxy = f"{plan.name}-proxy"
    ports.runtime.files[(proxy, "/var/log/containai/egress.jsonl")] = b"x"
    ports.runtime.fail("read_tail", EngineAPIError("the audit is too large to read"))
    result = manager(ports).finish(plan.name, FinishOptions())
    assert not result.kept
    assert any("egress could not finish: the audit is too large" in w for w in result.warnings)
    assert owned_by(ports, plan.session_id) == []


def test_an_unexpected_failure_of_the_workspace_keeps_the_session(ports: FakePorts) -> None:
    plan = started(ports)
    with_bundle(ports)
    ports.git.imports.append(RuntimeError("disk full"))
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.kept and "RuntimeError: disk full" in result.message
    assert plan.name in owned_by(ports, plan.session_id)


def test_what_no_push_would_discard_is_read_from_the_workspace(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec("log --format=%h %s", stdout=b"abc1234 agent: add x\ndef5678 \x1b[2Jwip\n")
    ports.runtime.script_exec("status --porcelain=v1", stdout=b"?? new.txt\0 M README.md\0")
    found = unexported_work(ports, manager(ports).record(plan.name))
    assert found.commits == ("abc1234 agent: add x", "def5678 \\x1b[2Jwip")
    assert found.changed == ("new.txt", "README.md")
    log = next(e for e in ports.runtime.execs if "log" in e.argv)
    assert f"^{BASE}" in log.argv and "core.hooksPath=/dev/null" in log.argv and log.user == plan.user
    ports.runtime.script_exec("log --format=%h %s", stdout=b"")
    ports.runtime.script_exec("status --porcelain=v1", stdout=b"")
    assert not unexported_work(ports, manager(ports).record(plan.name))
    ports.runtime.script_exec("status --porcelain=v1", code=128)
    with pytest.raises(SessionError, match="could not read the workspace"):
        unexported_work(ports, manager(ports).record(plan.name))


class Killed(BaseException):
    """The launcher dying (SIGKILL): no rollback, no finally that matters, the process is gone."""


@pytest.mark.parametrize("dies_after", ["workspace", "egress", "agent-created", "agent-started", "started"])
def test_a_launcher_killed_at_any_step_of_set_up_leaves_what_gc_removes(
    ports: FakePorts, dies_after: str
) -> None:
    plan = planned(ports, request(network_proxy="squid"))
    steps = manager(ports)
    # What provision does, step by step, until the launcher dies (its rollback never runs).
    for part, each in plan.parts:
        part.provision(ports, plan, each)
        if part.role == dies_after:
            break
    else:
        ports.runtime.create_container(plan.container)
        if dies_after != "agent-created":
            ports.runtime.start(plan.name)
        if dies_after == "started":
            for part, each in plan.parts:
                part.start(ports, plan, each)
    assert owned_by(ports, plan.session_id)  # leftovers, labelled
    ports.host.alive.clear()  # the launcher is gone
    ports.runtime.script_exec("containai export", code=3)  # no branch yet: the set-up never ran
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    assert steps.gc() == [plan.session_id]
    assert owned_by(ports, plan.session_id) == []
    assert ports.git.branches == {}  # the reserved, empty branch is released too
    assert plan.state_dir in ports.host.removed


def test_a_launcher_killed_while_bringing_the_work_home_leaves_it_for_gc(ports: FakePorts) -> None:
    plan = started(ports)
    with_bundle(ports, b"bundle")
    ports.git.imports.append(Killed())  # dies inside the import
    with pytest.raises(Killed):
        manager(ports).finish(plan.name, FinishOptions())
    assert plan.name in owned_by(ports, plan.session_id)  # nothing was torn down
    ports.git.imports.append(ImportResult("shell/session-1", "c" * 40, 1, False, False))
    assert manager(ports).gc() == [plan.session_id]
    assert ports.git.branches == {"shell/session-1": "c" * 40}
    assert owned_by(ports, plan.session_id) == []
