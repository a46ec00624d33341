"""A session's MCP servers: the host broker, one stub per server under that server's uid, and the
agent's MCP config.

    agent CLI ──stdio──> mcp-stub connect NAME (agent uid)
        ──/run/containai/mcp/NAME/front.sock──> mcp-stub serve (NAME's uid, 65500 + i, not dumpable)
            ──/run/containai/broker/broker.sock──> session broker (host) : redeem / refresh NAME's only
            ──> the real server (NAME's uid, secrets in its environment), or the URL server via the proxy

The agent's CLI is configured with one entry per server, each running ``mcp-stub connect NAME``; no
entry carries a secret. Each server's state (its config, its capability, its home) is on a tmpfs of
its own uid (``/run/containai/mcp/NAME``, mode 0711: the agent and the other servers can reach its
front socket, and list or read nothing), so a server that runs what it is asked to cannot read
another's secrets, nor redeem another's capability at the broker, which binds each uid to its server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from containai.broker import session as session_broker
from containai.broker.session import BrokerPaths
from containai.errors import SessionError, UsageError
from containai.inside import protocol
from containai.inside.protocol import MCP_SERVER_UID_COUNT, STUB_UID
from containai.mcp.config import McpServer
from containai.mcp.render import render_mcp_files
from containai.runtime.base import ContainerRuntime, ExecSpec, Mount
from containai.session.parts import (
    BasePart,
    FinishOptions,
    PartPlan,
    PlanContext,
    ResumeContext,
    SessionRecord,
)
from containai.text import OutputTail, last_line

if TYPE_CHECKING:
    from containai.gateway.login import ClaudeLogin
    from containai.session.plan import SessionPlan
    from containai.session.ports import Ports

STUB = protocol.STUB_PROGRAM
STUB_STATE = protocol.STUB_STATE
SERVER_TMPFS = "rw,noexec,nosuid,nodev,size=512m,uid={uid},gid={uid},mode=0711"
CAPABILITY_TTL = 300
READY_TIMEOUT = 20.0


def server_state(name: str) -> str:
    """Server ``name``'s stub state directory in the container (a tmpfs of the server's uid)."""
    return f"{STUB_STATE}/{name}"


@dataclass(frozen=True)
class McpPlan:
    servers: tuple[McpServer, ...]
    broker: BrokerPaths
    uids: Mapping[str, int]  # each server's own uid, for its stub, its process and its files


def allocate_uids(names: Sequence[str]) -> dict[str, int]:
    """One uid per server, in the order given, from the range the images reserve for them."""
    if len(names) > MCP_SERVER_UID_COUNT:
        raise UsageError(
            f"{len(names)} MCP servers are configured; a session runs at most {MCP_SERVER_UID_COUNT}, "
            "each under a uid of its own",
            hint="remove servers from ~/.config/containai/config.toml (`containai mcp ls` lists them)",
        )
    return {name: protocol.mcp_server_uid(index) for index, name in enumerate(names)}


def plan_mcp(servers: Sequence[McpServer], *, broker: BrokerPaths, agent_uid: int) -> McpPlan | None:
    if not servers:
        return None
    if agent_uid == STUB_UID or protocol.is_mcp_server_uid(agent_uid):
        raise UsageError(
            f"the repository's owner has uid {agent_uid}, which ContainAI reserves for MCP servers",
            hint="run the session on a clone owned by another user, or without MCP servers",
        )
    return McpPlan(tuple(servers), broker, allocate_uids([server.name for server in servers]))


def mcp_hosts(servers: Sequence[McpServer]) -> tuple[str, ...]:
    """The hosts of URL servers: the stub reaches them through the session's egress proxy."""
    return tuple(sorted({host for s in servers if s.url and (host := urlsplit(s.url).hostname)}))


def mounts(mcp: McpPlan) -> list[Mount]:
    # Read-only is no obstacle to connect(): the socket is the only thing in there that matters.
    return [Mount(protocol.BROKER_DIR, str(mcp.broker.socket_dir), "bind", read_only=True)]


def tmpfs(mcp: McpPlan | None) -> dict[str, str]:
    if mcp is None:
        return {}
    return {server_state(name): SERVER_TMPFS.format(uid=uid) for name, uid in mcp.uids.items()}


def agent_files(mcp: McpPlan | None, mcp_config: str | None, existing: Mapping[str, str]) -> dict[str, str]:
    """The agent CLI's MCP configuration (merged into the other home files), every entry the stub."""
    if mcp is None or not mcp_config:
        return dict(existing)
    return render_mcp_files(mcp_config, [s.name for s in mcp.servers], existing)


def start_stub(
    runtime: ContainerRuntime,
    mcp: McpPlan,
    *,
    session: str,
    container: str,
    agent_user: str,
    environment: Mapping[str, str],
    admin: Callable[[Path, Mapping[str, object]], dict[str, Any]] = session_broker.admin,
) -> StubState:
    """Issue each server's first capability, hand them to the stub on stdin, and start it.

    What it returns (no secret in it) is what a resume needs to do this again."""
    state = StubState(
        session=session,
        container=container,
        admin_socket=str(mcp.broker.admin_socket),
        secrets={server.name: server.secret_names() for server in mcp.servers},
        servers={server.name: server.stub_spec() for server in mcp.servers},
        uids=dict(mcp.uids),
        proxy={
            k: v for k, v in environment.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")
        },
    )
    install_stub(runtime, state, caps=issue_capabilities(state, admin), config=True)
    serve_stub(runtime, state, agent_user=agent_user)
    return state


@dataclass(frozen=True)
class StubState:
    """The stub's configuration as the launcher gave it: its servers and the secrets each is issued."""

    session: str
    container: str
    admin_socket: str
    secrets: Mapping[str, Sequence[str]]
    servers: Mapping[str, Mapping[str, Any]]
    proxy: Mapping[str, str]
    uids: Mapping[str, int]

    def to_json(self) -> str:
        return json.dumps(
            {
                "session": self.session,
                "container": self.container,
                "admin_socket": self.admin_socket,
                "secrets": {name: list(names) for name, names in self.secrets.items()},
                "servers": self.servers,
                "proxy": self.proxy,
                "uids": dict(self.uids),
            },
            indent=2,
        )

    @classmethod
    def parse(cls, text: str) -> StubState:
        data = json.loads(text)
        return cls(
            session=data["session"],
            container=data["container"],
            admin_socket=data["admin_socket"],
            secrets={name: tuple(names) for name, names in data["secrets"].items()},
            servers=data["servers"],
            proxy=data["proxy"],
            # A session started before servers had uids of their own: all on the stub's, as then.
            uids=data.get("uids") or dict.fromkeys(data["servers"], STUB_UID),
        )


def issue_capabilities(
    state: StubState, admin: Callable[[Path, Mapping[str, object]], dict[str, Any]]
) -> dict[str, dict[str, str]]:
    """One fresh capability per server that has secrets, from the session's broker."""
    caps: dict[str, dict[str, str]] = {}
    for name, secrets in state.secrets.items():
        if not secrets:
            continue
        answer = admin(
            Path(state.admin_socket),
            {
                "op": "issue",
                "session": state.session,
                "container": state.container,
                "consumer": name,
                "secrets": list(secrets),
                "ttl": CAPABILITY_TTL,
            },
        )
        caps[name] = {"token": answer["token"], "bundle": answer["bundle"]}
    return caps


def install_stub(
    runtime: ContainerRuntime, state: StubState, *, caps: Mapping[str, object], config: bool
) -> None:
    """Hand each server's stub its own capability (and, with ``config``, its own configuration) on
    stdin, as that server's uid: no stub ever sees another server's capability or definition."""
    for name, uid in state.uids.items():
        document: dict[str, object] = {"caps": {name: caps[name]} if name in caps else {}}
        if config:
            document["config"] = {
                "session": state.session,
                "container": state.container,
                "broker": protocol.BROKER_SOCKET,
                # Never the workspace: the agent writes there, and a server that resolves code from its
                # working directory (npx's node_modules/.bin, Python's sys.path) would run the agent's.
                "cwd": f"{server_state(name)}/home",
                "servers": {name: state.servers[name]},
            }
        elif name not in caps:
            continue
        installed = OutputTail()
        code = runtime.exec(
            state.container,
            ExecSpec(
                (STUB, "install", "--state", server_state(name)),
                user=protocol.user(uid),
                stdin=json.dumps(document).encode(),
            ),
            on_output=installed,
        )
        if code != 0:
            raise SessionError(
                f"setting up the MCP stub of {name} failed: {last_line(installed.data)}",
                hint="is the image older than this ContainAI? rebuild it with `containai images build`",
            )


def serve_stub(runtime: ContainerRuntime, state: StubState, *, agent_user: str) -> None:
    """Start one stub per server, each under its server's uid, and wait until every front door opens."""
    container = state.container
    for name, uid in state.uids.items():
        runtime.exec(
            container,
            ExecSpec(
                (STUB, "serve", "--state", server_state(name)),
                user=protocol.user(uid),
                environment=dict(state.proxy),
                detach=True,
            ),
        )
    waiting = list(state.uids)
    deadline = time.monotonic() + READY_TIMEOUT
    while waiting and time.monotonic() < deadline:
        # Asked as the agent: the front door must be reachable by the uid that will use it.
        front = f"{server_state(waiting[0])}/{protocol.FRONT_SOCKET_NAME}"
        if runtime.exec(container, ExecSpec(("test", "-S", front), user=agent_user)) == 0:
            waiting.pop(0)
        else:
            time.sleep(0.1)
    if not waiting:
        return
    # The stub's log is its own (0600): read its last line as the server's uid, for the reason it gave.
    name = waiting[0]
    log = f"{server_state(name)}/{protocol.STUB_LOG_NAME}"
    said = OutputTail()
    runtime.exec(
        container,
        ExecSpec(("tail", "-n", "1", log), user=protocol.user(state.uids[name])),
        on_output=said,
    )
    reason = last_line(said.data).partition(protocol.STUB_NOT_SERVING)[2]
    raise SessionError(
        f"the MCP stub of {name} did not start{f': {reason}' if reason else ''}",
        hint=f"its log is {log} in the container",
    )


STUB_STATE_FILE = "mcp-stub.json"  # in the session's host folder: what a resume hands the stub again
BROKER_FILE = "broker.json"  # in the session's host folder: how to start the session's broker again


class McpPart(BasePart[McpPlan]):
    """The session's MCP servers: the stub in the agent's container, each CLI's config pointing at it."""

    role = "mcp"

    def plan(self, ctx: PlanContext) -> PartPlan[McpPlan] | None:
        mcp = plan_mcp(ctx.mcp_servers, broker=ctx.broker, agent_uid=ctx.workspace.uid)
        if mcp is None:
            return None
        earlier: dict[str, str] = {}
        for planned in ctx.earlier.values():
            earlier.update(planned.home_files)
        return PartPlan(
            self.role,
            mcp,
            mounts=tuple(mounts(mcp)),
            tmpfs=tmpfs(mcp),
            # Merged into the files earlier parts write (Codex's config.toml holds the gateway's provider).
            home_files=agent_files(mcp, ctx.request.agent.mcp_config, earlier),
            needs_broker=True,
        )

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[McpPlan]) -> None:
        state = start_stub(
            ports.runtime,
            planned.detail,
            session=session.session_id,
            container=session.name,
            agent_user=session.user,
            environment=session.environment,
            admin=ports.broker.admin,
        )
        if session.labels.mode == "persistent":
            ports.host.write_text(session.state_dir / STUB_STATE_FILE, state.to_json(), 0o600)

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        """After a restart the stub is gone with its tmpfs: installed and served again. After the
        broker came back, the capabilities the stub holds are unknown to it: fresh ones replace them."""
        if not (ctx.restarted or "broker" in ctx.restored):
            return
        text = ports.host.read_text(ctx.record.state_dir / STUB_STATE_FILE)
        if text is None:
            return
        state = StubState.parse(text)
        install_stub(
            ports.runtime, state, caps=issue_capabilities(state, ports.broker.admin), config=ctx.restarted
        )
        if ctx.restarted:
            user = (ctx.record.container.user if ctx.record.container is not None else "") or "1000:1000"
            serve_stub(ports.runtime, state, agent_user=user)


@dataclass(frozen=True)
class BrokerPlan:
    paths: BrokerPaths
    gateway: str | None  # the gateway container the broker starts and feeds a host login's tokens
    login: ClaudeLogin | None
    servers: Mapping[str, int] = field(default_factory=dict)  # MCP server -> its uid, bound at the broker


def render_broker_file(plan: BrokerPlan) -> str:
    login = plan.login
    return json.dumps(
        {
            "audit": str(plan.paths.audit),
            "sockets": str(plan.paths.sockets),
            "gateway": plan.gateway,
            "servers": dict(plan.servers),
            "login": None
            if login is None
            else {
                "path": str(login.path),
                "token_url": login.token_url,
                "check_seconds": login.check_seconds,
            },
        },
        indent=2,
    )


def parse_broker_file(text: str, state_dir: Path) -> BrokerPlan:
    from containai.gateway.login import ClaudeLogin

    data = json.loads(text)
    login = data.get("login")
    return BrokerPlan(
        BrokerPaths(state_dir, Path(data["audit"]), Path(data["sockets"])),
        data.get("gateway"),
        None
        if login is None
        else ClaudeLogin(
            Path(login["path"]), token_url=login["token_url"], check_seconds=login["check_seconds"]
        ),
        data.get("servers") or {},
    )


class BrokerPart(BasePart[BrokerPlan]):
    """The session's broker on the host, for MCP servers' secrets and a host login fed to the gateway."""

    role = "broker"

    def plan(self, ctx: PlanContext) -> PartPlan[BrokerPlan] | None:
        if not any(planned.needs_broker for planned in ctx.earlier.values()):
            return None
        gateway = ctx.earlier.get("gateway")
        login = getattr(gateway.detail, "login", None) if gateway is not None else None
        name = (
            getattr(gateway.detail.spec, "name", None) if gateway is not None and login is not None else None
        )
        mcp = ctx.earlier.get("mcp")
        servers = dict(mcp.detail.uids) if mcp is not None and isinstance(mcp.detail, McpPlan) else {}
        return PartPlan(self.role, BrokerPlan(ctx.broker, name, login, servers))

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[BrokerPlan]) -> None:
        plan = planned.detail
        if session.labels.mode == "persistent":
            ports.host.write_text(session.state_dir / BROKER_FILE, render_broker_file(plan), 0o600)
        ports.broker.start(
            plan.paths,
            session=session.session_id,
            container=session.name,
            engine_url=ports.runtime.choice.base_url,
            gateway=plan.gateway,
            login=plan.login,
            servers=plan.servers,
        )

    def restore(self, ports: Ports, ctx: ResumeContext) -> bool:
        """The broker stops with the agent's container (it revokes everything then), or was killed:
        started again, with no capability of its earlier run valid (the MCP part issues fresh ones)."""
        record = ctx.record
        text = ports.host.read_text(record.state_dir / BROKER_FILE)
        if text is None:
            return False
        plan = parse_broker_file(text, record.state_dir)
        alive = ports.broker.running(plan.paths)
        if ctx.restarted:
            # It ends by itself once it sees the container stopped: not there, it must not take the
            # new run's sockets. Its socket folder goes too, so the container binds the new one.
            if alive:
                ports.broker.stop(record.state_dir)
        elif alive:
            return False
        else:
            ports.reporter.warn(
                f"the secret broker of {record.name} had stopped, so its MCP servers could get no secrets: "
                "starting it again, with fresh capabilities"
            )
        ports.broker.start(
            plan.paths,
            session=record.labels.session,
            container=record.name,
            engine_url=ports.runtime.choice.base_url,
            gateway=plan.gateway,
            login=plan.login,
            servers=plan.servers,
        )
        return True

    def teardown(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> None:
        # The broker revokes every capability of the session as it stops; a no-op when none runs.
        ports.broker.stop(record.state_dir)
