"""A session's broker: its reachable, session-bound stub socket, and the daemon the launcher starts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from containai.broker import session as session_broker
from containai.broker.audit import verify
from containai.broker.broker import Broker
from containai.broker.server import SESSION_STUB_OPS, BrokerServer
from containai.broker.session import BrokerPaths
from containai.errors import BrokerError

from .test_broker import (  # noqa: F401  # fixtures used below
    AGENT_UID,
    STUB_UID,
    audit_path,
    broker,
    canary,
    client_as,
    clock,
    events,
    make_broker,
    needs_root,
    rand,
    redeem_request,
    serve,
    sockdir,
    store,
)


def session_socket(
    sockdir: Path,  # noqa: F811
    broker: Broker,  # noqa: F811
    serve: Callable[..., BrokerServer],  # noqa: F811
    allowed: list[int],
) -> Path:
    path = sockdir / "broker" / "broker.sock"
    serve(path, broker, allowed_uids=allowed, ops=SESSION_STUB_OPS, reachable=True, bound=("s1", "c1"))
    return path


def test_the_session_socket_is_reachable_by_anyone_so_every_attempt_is_checked(
    broker: Broker,  # noqa: F811
    sockdir: Path,  # noqa: F811
    serve: Callable[..., BrokerServer],  # noqa: F811
) -> None:
    path = session_socket(sockdir, broker, serve, [STUB_UID])
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o711


@needs_root
def test_the_agent_uid_reaches_the_session_socket_and_is_refused_and_audited(
    broker: Broker,  # noqa: F811
    sockdir: Path,  # noqa: F811
    serve: Callable[..., BrokerServer],  # noqa: F811
    audit_path: Path,  # noqa: F811
) -> None:
    path = session_socket(sockdir, broker, serve, [STUB_UID])
    issued = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    # No group, no ACL: only SO_PEERCRED stands between the agent's uid and the capability.
    for request in (
        redeem_request(issued),
        {"op": "refresh", "session": "s1", "container": "c1", "consumer": "github"},
    ):
        answer = client_as(AGENT_UID, path, request, groups=[])
        assert answer["ok"] is False and answer["error"] == "peer-refused"
    denied = events(audit_path, "connect", "deny")
    assert [d["peer"]["uid"] for d in denied] == [AGENT_UID, AGENT_UID]  # type: ignore[index]
    assert events(audit_path, "redeem", "allow") == []

    # With the protection off (the agent's uid allowed), the very same request succeeds: the peer
    # check is what refused it above.
    open_path = sockdir / "open" / "broker.sock"
    serve(
        open_path, broker, allowed_uids=[AGENT_UID], ops=SESSION_STUB_OPS, reachable=True, bound=("s1", "c1")
    )
    assert client_as(AGENT_UID, open_path, redeem_request(issued), groups=[])["ok"] is True


def test_the_session_socket_serves_its_own_session_only(
    broker: Broker,  # noqa: F811
    sockdir: Path,  # noqa: F811
    serve: Callable[..., BrokerServer],  # noqa: F811
    audit_path: Path,  # noqa: F811
) -> None:
    path = session_socket(sockdir, broker, serve, [os.getuid()])
    other = broker.issue("s2", "c2", "github", ["GITHUB_TOKEN"], ttl=60)
    mine = broker.issue("s1", "c1", "github", ["GITHUB_TOKEN"], ttl=60)

    request = redeem_request(other) | {"session": "s2", "container": "c2"}
    answer = client_as(os.getuid(), path, request, groups=[])
    assert answer["ok"] is False and answer["error"] == "wrong-session"
    refresh_other = {"op": "refresh", "session": "s2", "container": "c2", "consumer": "github"}
    assert client_as(os.getuid(), path, refresh_other, groups=[])["error"] == "wrong-session"
    assert len(events(audit_path, "redeem", "deny")) == 1
    assert len(events(audit_path, "refresh", "deny")) == 1

    # Its own session: a refresh gives a fresh capability, which supersedes the first one.
    fresh = client_as(
        os.getuid(),
        path,
        {"op": "refresh", "session": "s1", "container": "c1", "consumer": "github"},
        groups=[],
    )
    assert fresh["ok"] is True
    assert client_as(os.getuid(), path, redeem_request(mine), groups=[])["error"] == "not-live"
    renewed = (str(fresh["token"]), __import__("base64").b64decode(str(fresh["bundle"])))
    assert client_as(os.getuid(), path, redeem_request(renewed), groups=[])["ok"] is True


def test_the_daemon_issues_from_the_host_store_and_revokes_everything_when_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTAINAI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SESSION_BROKER_TEST_SECRET", "value-from-the-launchers-environment")
    # The state dir may be long (pytest's is): the sockets go to a short private place of their own.
    state = tmp_path / ("long-" * 12) / "s1"
    no_runtime_dir = {"XDG_RUNTIME_DIR": str(tmp_path / "none")}
    where = BrokerPaths.for_session(state, tmp_path / "s1.broker.jsonl", no_runtime_dir)
    try:
        # No engine at this address: the daemon keeps serving until it is told to stop.
        pid = session_broker.start(where, session="s1", container="c1", engine_url="unix:///nonexistent.sock")
        issued = session_broker.admin(
            where.admin_socket,
            {
                "op": "issue",
                "session": "s1",
                "container": "c1",
                "consumer": "canary",
                "secrets": ["SESSION_BROKER_TEST_SECRET"],
                "ttl": 60,
            },
        )
        assert issued["token"].startswith("cai1.")
        assert "value-from-the-launchers-environment" not in json.dumps(issued)
        with pytest.raises(BrokerError, match="ttl must be"):
            session_broker.admin(
                where.admin_socket,
                {
                    "op": "issue",
                    "session": "s1",
                    "container": "c1",
                    "consumer": "x",
                    "secrets": ["A"],
                    "ttl": 10**6,
                },
            )
        assert stat.S_IMODE(where.admin_socket.parent.stat().st_mode) == 0o700
        assert where.sockets.parent == Path(tempfile.gettempdir()) / f"containai-{os.geteuid()}"
        assert stat.S_IMODE(where.sockets.parent.stat().st_mode) == 0o700

        session_broker.stop(where.state_dir)

        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        audit = [json.loads(line) for line in where.audit.read_text().splitlines()]
        assert audit[-2]["event"] == "revoke" and audit[-2]["capabilities"]
        # A clean stop ends the audit with its close line, and the keyed chain verifies.
        assert audit[-1]["event"] == "close"
        assert verify(where.audit, finished=True).ok
        assert "value-from-the-launchers-environment" not in where.audit.read_text()
    finally:
        session_broker.stop(where.state_dir)
    assert not where.sockets.exists()
    assert "session s1 ended" in where.log.read_text()


def test_stop_leaves_an_unrelated_process_with_a_reused_pid_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / session_broker.PID_FILE).write_text(f"{sleeper.pid}\n")
        session_broker.stop(tmp_path, timeout=0.5)
        time.sleep(0.1)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@needs_root
def test_each_uid_redeems_and_refreshes_its_own_servers_capabilities_only(
    broker: Broker,  # noqa: F811
    sockdir: Path,  # noqa: F811
    serve: Callable[..., BrokerServer],  # noqa: F811
    audit_path: Path,  # noqa: F811
) -> None:
    # Two MCP servers of one session, each under its own uid: A (hostile, or running what it is told)
    # got hold of B's capability, or asks for a fresh one of B's.
    a_uid, b_uid = 65500, 65501
    path = sockdir / "broker" / "broker.sock"
    serve(
        path,
        broker,
        allowed_uids=[a_uid, b_uid],
        ops=SESSION_STUB_OPS,
        reachable=True,
        bound=("s1", "c1"),
        bindings={a_uid: "a", b_uid: "b"},
    )
    b_cap = broker.issue("s1", "c1", "b", ["GITHUB_TOKEN"], ttl=60)
    refresh_b = {"op": "refresh", "session": "s1", "container": "c1", "consumer": "b"}

    stolen = client_as(a_uid, path, redeem_request(b_cap), groups=[])
    asked = client_as(a_uid, path, refresh_b, groups=[])

    assert stolen["ok"] is False and stolen["error"] == "wrong-consumer"
    assert asked["ok"] is False and asked["error"] == "wrong-consumer"
    (redeem,) = events(audit_path, "redeem", "deny")
    assert (redeem["consumer"], redeem["presented_by"], redeem["peer"]["uid"]) == ("b", "a", a_uid)  # type: ignore[index]
    assert redeem["reason"] == "wrong-consumer"
    (refresh,) = events(audit_path, "refresh", "deny")
    assert (refresh["consumer"], refresh["presented_by"], refresh["peer"]["uid"]) == ("b", "a", a_uid)  # type: ignore[index]
    assert events(audit_path, "redeem", "allow") == []
    # A's attempt did not use B's capability up: B redeems it, and refreshes its own.
    assert client_as(b_uid, path, redeem_request(b_cap), groups=[])["ok"] is True
    assert client_as(b_uid, path, refresh_b, groups=[])["ok"] is True

    # With the protection off (both uids allowed, no binding), A's uid redeems B's capability.
    again = broker.issue("s1", "c1", "b", ["GITHUB_TOKEN"], ttl=60)
    open_path = sockdir / "open" / "broker.sock"
    serve(
        open_path,
        broker,
        allowed_uids=[a_uid, b_uid],
        ops=SESSION_STUB_OPS,
        reachable=True,
        bound=("s1", "c1"),
    )
    assert client_as(a_uid, open_path, redeem_request(again), groups=[])["ok"] is True


def test_a_bound_socket_needs_a_server_for_every_uid_and_a_uid_serves_one_server(
    broker: Broker,  # noqa: F811
    sockdir: Path,  # noqa: F811
) -> None:
    with pytest.raises(BrokerError, match="needs its MCP server"):
        BrokerServer(sockdir / "x.sock", broker, allowed_uids=[65500, 65501], bindings={65500: "a"})
    assert session_broker.bindings([("a", 65500), ("b", 65501)]) == {65500: "a", 65501: "b"}
    with pytest.raises(BrokerError, match="uid 65500 is given to two MCP servers, a and b"):
        session_broker.bindings([("a", 65500), ("b", 65500)])
