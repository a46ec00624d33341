"""A persistent session comes back: after the engine restarted (every container stopped), after its
proxy or its broker died. Through fake ports: what is started again, in which order, and what is
never run again (the workspace's one-time set-up)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from containai.agents.definition import get_agent
from containai.cli.render import sessions_json
from containai.config import Paths
from containai.errors import SessionError, UsageError
from containai.gateway.login import ClaudeLogin
from containai.mcp.config import McpServer
from containai.secrets.value import Secret
from containai.session import commands
from containai.session.manager import SessionManager, SessionRequest
from containai.session.mcp import BROKER_FILE, STUB, STUB_STATE_FILE
from containai.session.plan import SessionPlan
from containai.session.repo import RepoInfo
from containai.session.testing import FakePorts, fake_ports
from containai.workspace.part import HOME_SCRIPT

BASE = "a" * 40
REPO = RepoInfo(root=Path("/home/user/proj"), name="proj", head=BASE, current_branch="main", dirty=())
CANARY = McpServer(name="canary", source="user", command="python3", env={"TOKEN": "${CANARY}"})


def request(agent: str = "shell", **overrides: Any) -> SessionRequest:
    fields: dict[str, Any] = {
        "agent": get_agent(agent, None),
        "repo_path": REPO.root,
        "cwd": REPO.root,
        "channel": "dev",
        "mode": "persistent",
        "network_proxy": "squid",
    }
    fields.update(overrides)
    return SessionRequest(**fields)


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePorts:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return fake_ports()


def launched(ports: FakePorts, req: SessionRequest | None = None, **kw: Any) -> SessionPlan:
    kw.setdefault("repo", REPO)
    kw.setdefault("environ", {"XDG_RUNTIME_DIR": "/run/user/1000"})
    ports.runtime.script_exec("test -S /run/containai/mcp/front.sock", code=0)
    plan = SessionManager(ports).plan(req or request(), **kw)
    SessionManager(ports).provision(plan)
    ports.runtime.execs.clear()
    ports.runtime.inputs.clear()
    return plan


def starts(ports: FakePorts) -> list[str]:
    """Record the names of the containers started from now on, in order."""
    started: list[str] = []
    real = ports.runtime.start

    def start(ref: str) -> None:
        started.append(ref)
        real(ref)

    ports.runtime.start = start  # type: ignore[method-assign]
    return started


def engine_restarted(ports: FakePorts, plan: SessionPlan) -> None:
    """As a dockerd restart without live-restore leaves a session: every container stopped."""
    for container in ports.runtime.containers({"ai.containai.session": plan.session_id}):
        ports.runtime.stop(container.name)


def argvs(ports: FakePorts, ref: str) -> list[str]:
    return [" ".join(e.argv) for e in ports.runtime.execs if e.ref == ref]


def test_after_an_engine_restart_the_sidecars_come_back_first_then_the_agent(ports: FakePorts) -> None:
    plan = launched(ports, request("claude"), mcp_servers=[CANARY])
    assert {STUB_STATE_FILE, BROKER_FILE, HOME_SCRIPT} <= {p.name for p in ports.host.files}
    engine_restarted(ports, plan)
    started = starts(ports)
    assert SessionManager(ports).resume(plan.name) is True
    assert started == [f"{plan.name}-proxy", plan.name]
    ran = argvs(ports, plan.name)
    # HOME again (its tmpfs is empty), never the one-time set-up that would reset the branch.
    assert not any("git checkout" in a or "git clone" in a for a in ran)
    home = next(i for i, a in enumerate(ran) if "safe.directory" in a)
    relay = next(i for i, a in enumerate(ran) if "TCP-LISTEN:3128" in a)
    install = next(i for i, a in enumerate(ran) if "mcp-stub install" in a)
    serve = next(i for i, a in enumerate(ran) if "mcp-stub serve" in a)
    assert home < relay < install < serve
    # The broker went with the container: started again, then fresh capabilities for the stub.
    assert len(ports.broker.started) == 2
    assert ports.broker.requests[-1]["op"] == "issue" and ports.broker.requests[-1]["secrets"] == ["CANARY"]
    document = ports.runtime.inputs[-1][1]
    assert b'"config"' in document and b'"caps"' in document
    assert any("had stopped" in note for note in ports.reporter.notes)


def test_a_session_where_everything_runs_is_left_alone(ports: FakePorts) -> None:
    plan = launched(ports, request("claude"), mcp_servers=[CANARY])
    started = starts(ports)
    assert SessionManager(ports).resume(plan.name) is False
    assert started == [] and ports.runtime.execs == [] and len(ports.broker.started) == 1


def test_a_killed_proxy_is_started_again_and_nothing_else(ports: FakePorts) -> None:
    plan = launched(ports)
    ports.runtime.exited(f"{plan.name}-proxy", 137)
    started = starts(ports)
    assert SessionManager(ports).resume(plan.name) is False
    assert started == [f"{plan.name}-proxy"]
    assert argvs(ports, plan.name) == []  # the relay reconnects per connection: nothing to redo inside
    assert any("the agent was offline" in w for w in ports.reporter.warnings)


def test_a_killed_broker_comes_back_and_the_stub_gets_fresh_capabilities(ports: FakePorts) -> None:
    plan = launched(ports, request("claude"), mcp_servers=[CANARY])
    ports.broker.alive.clear()
    assert SessionManager(ports).resume(plan.name) is False
    assert len(ports.broker.started) == 2 and ports.broker.stopped == []
    ran = argvs(ports, plan.name)
    assert [a for a in ran if "mcp-stub" in a] == [f"{STUB} install --state /run/containai/mcp/canary"]
    # The broker comes back with the server bound to its uid, as the first one was.
    assert [b["servers"] for b in ports.broker.started] == [{"canary": 65500}, {"canary": 65500}]
    document = ports.runtime.inputs[-1][1]
    assert b'"config"' not in document and b'"caps"' in document  # caps only: the stub still serves
    assert any("secret broker" in w and "fresh capabilities" in w for w in ports.reporter.warnings)


def test_a_broker_still_running_after_a_restart_is_stopped_before_the_new_one(ports: FakePorts) -> None:
    plan = launched(ports, request("claude"), mcp_servers=[CANARY])
    engine_restarted(ports, plan)
    SessionManager(ports).resume(plan.name)
    assert ports.broker.stopped == [plan.state_dir]
    assert len(ports.broker.started) == 2


def test_a_gateway_that_held_a_key_fails_closed_with_a_message(ports: FakePorts) -> None:
    plan = launched(ports, request("codex", credential=Secret("sk-test")))
    engine_restarted(ports, plan)
    SessionManager(ports).resume(plan.name)
    assert any("model gateway" in w and "no model access" in w for w in ports.reporter.warnings)
    assert "sk-test" not in "".join(ports.reporter.warnings)
    assert any("TCP-LISTEN:8787" in a for a in argvs(ports, plan.name))


def test_a_gateway_that_held_a_key_gets_it_again_from_the_host(ports: FakePorts) -> None:
    plan = launched(ports, request("codex", credential=Secret("sk-test")))
    engine_restarted(ports, plan)
    started = starts(ports)
    asked: list[str] = []

    def key() -> Secret:
        asked.append("key")
        return Secret("sk-again")

    SessionManager(ports).resume(plan.name, credential=key)
    gateway = f"{plan.name}-gateway"
    assert asked == ["key"] and ports.runtime.container(gateway).running  # type: ignore[union-attr]
    assert (gateway, b"sk-again\n") in ports.runtime.inputs  # on its stdin, as at launch
    assert started.index(f"{plan.name}-proxy") < started.index(plan.name)
    assert not any("model gateway" in w for w in ports.reporter.warnings)
    # Running: the key is not looked up again.
    SessionManager(ports).resume(plan.name, credential=key)
    assert asked == ["key"]


def test_an_ephemeral_session_is_not_resumed(ports: FakePorts) -> None:
    plan = launched(ports, request(mode="ephemeral"))
    with pytest.raises(UsageError, match="not a persistent session"):
        SessionManager(ports).resume(plan.name)


def test_without_its_home_script_a_session_is_not_resumed_half_way(ports: FakePorts) -> None:
    plan = launched(ports, request(network_proxy="restricted"))
    del ports.host.files[plan.state_dir / HOME_SCRIPT]
    engine_restarted(ports, plan)
    with pytest.raises(SessionError, match="HOME set-up"):
        SessionManager(ports).resume(plan.name)


def test_list_shows_a_stopped_persistent_session_as_resumable(ports: FakePorts) -> None:
    plan = launched(ports, request(network_proxy="restricted"))
    engine_restarted(ports, plan)
    rows = SessionManager(ports).sessions()
    assert [(r.status, r.resumable) for r in rows] == [("exited", True)]
    shown = sessions_json(rows, datetime.now(UTC))["sessions"][0]
    assert shown["resumable"] is True and shown["status"] == "exited"


# -- the command: connect-agent resumes, then starts the agent in tmux again


@pytest.fixture()
def paths(tmp_path: Path) -> Paths:
    return Paths.from_env({"CONTAINAI_HOME": str(tmp_path / "containai")})


def test_resume_starts_the_agent_again_in_tmux(ports: FakePorts, paths: Paths, monkeypatch: Any) -> None:
    plan = launched(ports, request(network_proxy="restricted"))
    engine_restarted(ports, plan)
    monkeypatch.setattr(commands.manager, "local", lambda runtime, root, reporter=None: SessionManager(ports))
    commands.resume(
        ports.runtime,
        plan.name,
        state_root=paths.sessions_dir,
        reporter=ports.reporter,
        agent_command=lambda agent: ("bash", "-l") if agent == "shell" else (),
    )
    tmux = [e for e in ports.runtime.execs if e.argv[:2] == ("tmux", "new-session")]
    assert len(tmux) == 1 and tmux[0].argv[-2:] == ("bash", "-l") and tmux[0].user == plan.user
    assert any("resumed" in note for note in ports.reporter.notes)
    ports.runtime.execs.clear()
    commands.resume(
        ports.runtime, plan.name, state_root=paths.sessions_dir, reporter=ports.reporter, agent_command=tuple
    )
    assert ports.runtime.execs == []  # running: nothing to do
    assert commands.pick_session(ports.runtime, None) == plan.name


def test_a_stopped_ephemeral_session_is_not_resumed_by_connect(
    ports: FakePorts, paths: Paths, monkeypatch: Any
) -> None:
    plan = launched(ports, request(mode="ephemeral", network_proxy="restricted"))
    monkeypatch.setattr(commands.manager, "local", lambda runtime, root, reporter=None: SessionManager(ports))

    def resume() -> None:
        commands.resume(
            ports.runtime,
            plan.name,
            state_root=paths.sessions_dir,
            reporter=ports.reporter,
            agent_command=tuple,
        )

    resume()  # running: fine
    engine_restarted(ports, plan)
    with pytest.raises(UsageError, match="is not running"):
        resume()


# -- gc of a session killed between reserving its branch and creating anything


def test_gc_releases_the_branch_of_a_launcher_killed_before_anything_existed(ports: FakePorts) -> None:
    plan = SessionManager(ports).plan(request(scope={"team": "web"}), repo=REPO, environ={})
    record = plan.state_dir / "session.json"
    assert '"engine"' in ports.host.files[record]
    assert ports.git.branches == {"shell/session-1": BASE}
    # Its launcher still runs (it is about to provision): left alone.
    ports.host.alive.add(plan.labels.launcher)
    assert SessionManager(ports).gc() == []
    ports.host.alive.clear()
    assert SessionManager(ports).gc(scope={"team": "other"}) == []  # not in scope
    assert SessionManager(ports).gc(scope={"team": "web"}) == [plan.session_id]
    assert ports.git.branches == {} and plan.state_dir in ports.host.removed
    assert record not in ports.host.files


def test_gc_leaves_another_engines_sessions_and_what_it_cannot_read(ports: FakePorts) -> None:
    plan = SessionManager(ports).plan(request(), repo=REPO, environ={})
    record = plan.state_dir / "session.json"
    ports.host.files[record] = ports.host.files[record].replace(
        ports.runtime.choice.base_url, "unix:///other"
    )
    damaged = ports.host.root / "damaged" / "session.json"
    ports.host.files[damaged] = "{not json"
    assert SessionManager(ports).gc() == []
    assert ports.git.branches == {"shell/session-1": BASE}


def test_a_plan_that_fails_leaves_no_record_behind(ports: FakePorts) -> None:
    with pytest.raises(UsageError):
        SessionManager(ports).plan(request(network_proxy="squid", allow_domains=("bad domain!",)), repo=REPO)
    assert not [p for p in ports.host.files if p.name == "session.json"]
    assert ports.git.branches == {}


class FreshLogin(ClaudeLogin):
    """A host login whose token needs no refresh (nothing is read or sent)."""

    def current(self) -> Any:
        return None


def test_a_gateway_fed_by_the_broker_is_the_brokers_to_start_again(ports: FakePorts) -> None:
    login = FreshLogin(
        Path("/home/u/.claude/.credentials.json"),
        token_url="http://token.test",  # noqa: S106  # a URL
        check_seconds=7,
    )
    plan = launched(ports, request("claude", login=login))
    gateway = f"{plan.name}-gateway"
    ports.runtime.start(gateway)  # the broker starts it, with the login's token on its stdin
    engine_restarted(ports, plan)
    asked: list[str] = []
    SessionManager(ports).resume(plan.name, credential=lambda: asked.append("key") or None)
    assert asked == []  # never a stored key for a login-fed gateway
    again = ports.broker.started[-1]
    assert again["gateway"] == gateway and again["login"].path == login.path
    assert (again["login"].token_url, again["login"].check_seconds) == ("http://token.test", 7)


def test_a_resumed_session_is_watched_again_by_its_disk_watchdog(ports: FakePorts) -> None:
    plan = launched(ports)
    ports.watchdog.stop(plan.state_dir)  # a reboot, or the watchdog ended with its container's stop
    engine_restarted(ports, plan)
    ports.watchdog.started.clear()
    assert SessionManager(ports).resume(plan.name)
    assert [s["state_dir"] for s in ports.watchdog.started] == [plan.state_dir]


def test_a_session_its_disk_watchdog_stopped_is_not_started_again(ports: FakePorts) -> None:
    plan = launched(ports)
    engine_restarted(ports, plan)
    ports.watchdog.reasons[plan.state_dir] = f"{plan.name} was stopped: over its disk cap of 50.0 MiB"
    started = starts(ports)
    with pytest.raises(UsageError, match="over its disk cap") as raised:
        SessionManager(ports).resume(plan.name)
    assert f"remove-agent {plan.name}" in (raised.value.hint or "")
    assert started == []  # neither a sidecar nor the agent's container
