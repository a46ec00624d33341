"""A session's egress: squid in a sidecar container, reached from the agent only through a Unix socket.

    agent container (--network none, only lo)          proxy container (<session>-proxy)
    agent ──> 127.0.0.1:3128 ──> relay (socat, uid 65533) ──unix socket──> socat ──> squid ──> egress network
                                        (shared session volume)          127.0.0.1:3128

The agent has no network interface but loopback, so direct connections, UDP, ICMP, DNS and IPv6 have
nowhere to go, whatever it does with its environment. squid alone decides, and logs every request.
If squid dies, its container stops and takes the socket's far end with it: the agent has no network.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from containai.egress.policy import EgressPolicy
from containai.egress.squid import DEFAULT_PRIVATE_RANGES, AuditRecord, parse_audit_line, render_squid_conf
from containai.errors import SessionError
from containai.images.catalog import image_tag
from containai.inside import protocol
from containai.runtime.base import ContainerRuntime, ContainerSpec, ExecSpec, Mount

SOCKET_DIR = protocol.EGRESS_DIR
SOCKET = protocol.PROXY_SOCKET
RELAY_PORT = 3128
RELAY_USER = protocol.user(
    protocol.RELAY_UID
)  # not the agent's uid: the agent can neither kill nor trace the relay
PROXY_USER = "13:13"  # Debian's proxy user, who owns squid's folders in the image
AUDIT_LOG = "/var/log/containai/egress.jsonl"
SQUID_CONF = "/etc/containai/squid.conf"
PROXY_URL = f"http://127.0.0.1:{RELAY_PORT}"


@dataclass(frozen=True)
class Lab:
    """For tests only: put the proxy on an existing (fake-internet) network.

    The proxy joins ``network`` instead of a fresh egress network, resolves names with the DNS
    servers ``dns``, and does not count ``allow_ranges`` as private. ContainAI never reads this from
    the environment or a file (it would let anyone lift the private-range deny list); the engine
    tests inject it into the settings (tests/engine/lab_cli.py).
    """

    network: str
    dns: tuple[str, ...] = ()
    allow_ranges: tuple[str, ...] = ()


@dataclass(frozen=True)
class EgressPlan:
    policy: EgressPolicy
    proxy: ContainerSpec
    network: str
    create_network: bool
    socket_volume: str
    log_volume: str
    squid_conf: str
    conf_file: Path  # on the host, bind-mounted read-only into the proxy


def plan_egress(
    *,
    session_name: str,
    session_id: str,
    labels: Mapping[str, str],
    channel: str,
    policy: EgressPolicy,
    state_dir: Path,
    lab: Lab | None,
) -> EgressPlan:
    network = lab.network if lab else f"{session_name}-egress-{session_id}"
    private = carve(DEFAULT_PRIVATE_RANGES, lab.allow_ranges) if lab else DEFAULT_PRIVATE_RANGES
    conf = render_squid_conf(
        policy,
        access_log=AUDIT_LOG,
        dns_nameservers=lab.dns if lab else (),
        private_ranges=private,
    )
    socket_volume = f"{session_name}-egress-sock-{session_id}"
    log_volume = f"{session_name}-egress-log-{session_id}"
    conf_file = state_dir / "squid.conf"
    proxy = ContainerSpec(
        image=image_tag("proxy", channel),
        name=f"{session_name}-proxy",
        command=(),
        labels=dict(labels),
        user=PROXY_USER,
        environment={},
        hostname="proxy",
        mounts=(
            Mount(SQUID_CONF, str(conf_file), "bind", read_only=True),
            Mount(SOCKET_DIR, socket_volume, "volume"),
            Mount("/var/log/containai", log_volume, "volume"),
        ),
        tmpfs={
            "/var/run/squid": "rw,noexec,nosuid,nodev,size=8m,uid=13,gid=13,mode=0755",
            "/var/spool/squid": "rw,noexec,nosuid,nodev,size=64m,uid=13,gid=13,mode=0755",
            "/tmp": "rw,noexec,nosuid,nodev,size=64m",  # noqa: S108  # the container's own tmpfs
        },
        read_only=True,
        cap_drop=("ALL",),
        security_opt=("no-new-privileges:true",),
        network_mode=network,
        pids_limit=256,
        memory_bytes=512 * 2**20,
        nano_cpus=10**9,
        ulimits=(("nofile", 4096, 8192), ("core", 0, 0), ("nproc", 4096, 4096)),
    )
    return EgressPlan(policy, proxy, network, lab is None, socket_volume, log_volume, conf, conf_file)


def carve(private: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """The private ranges less the lab's own network (the fake internet sits in 198.18.0.0/15)."""
    ranges = [ipaddress.ip_network(r) for r in private]
    for item in allowed:
        hole = ipaddress.ip_network(item)
        kept: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for net in ranges:
            if net.version == hole.version and hole.subnet_of(net):  # type: ignore[arg-type]  # same version
                kept += net.address_exclude(hole)  # type: ignore[arg-type]  # same version
            elif net.version == hole.version and net.subnet_of(hole):  # type: ignore[arg-type]  # same version
                continue
            else:
                kept.append(net)
        ranges = kept
    return tuple(str(net) for net in sorted(ranges, key=lambda n: (n.version, n)))


def agent_mounts(plan: EgressPlan) -> list[Mount]:
    return [Mount(SOCKET_DIR, plan.socket_volume, "volume", read_only=True)]


def agent_environment() -> dict[str, str]:
    """Where well-behaved tools find the proxy. Nothing depends on it: there is no other way out."""
    proxy = {name: PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return {
        **proxy,
        "NO_PROXY": "localhost,127.0.0.1",
        "no_proxy": "localhost,127.0.0.1",
        "NODE_USE_ENV_PROXY": "1",
    }


def wait_ready(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` until it holds; a session part that never comes up is a SessionError."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SessionError(
        f"{what} did not come up within {seconds:.0f} s", hint="see the log file; then `containai gc`"
    )


def start_proxy(runtime: ContainerRuntime, plan: EgressPlan, labels: Mapping[str, str]) -> None:
    """Network, volumes, then the proxy (its squid.conf already written); ready when its socket exists."""
    if plan.create_network:
        runtime.create_network(plan.network, labels=labels)
    runtime.create_volume(plan.socket_volume, labels=labels)
    runtime.create_volume(plan.log_volume, labels=labels)
    runtime.create_container(plan.proxy)
    runtime.start(plan.proxy.name)
    wait_for_proxy(runtime, plan.proxy.name)


def restart_proxy(runtime: ContainerRuntime, name: str) -> None:
    """Start a session's stopped proxy again (its network, volumes and squid.conf are all still there).

    The agent's relay reconnects to the socket per connection, so it needs nothing: until the proxy
    answers again, the agent has no network at all, never another way out."""
    runtime.start(name)
    wait_for_proxy(runtime, name)


def wait_for_proxy(runtime: ContainerRuntime, name: str) -> None:
    def ready() -> bool:
        info = runtime.container(name)
        if info is None or not info.running:
            raise SessionError(
                "the egress proxy exited at start", hint=f"its log: `docker logs {name}`; then `containai gc`"
            )
        return runtime.exec(name, ExecSpec(("test", "-S", SOCKET), user=PROXY_USER)) == 0

    wait_ready(ready, 30, "the egress proxy")


def start_relay(runtime: ContainerRuntime, agent: str, agent_user: str) -> None:
    """The relay in the agent container, under its own uid; ready when 127.0.0.1:3128 answers."""
    relay = [
        "socat",
        f"TCP-LISTEN:{RELAY_PORT},bind=127.0.0.1,fork,reuseaddr",
        f"UNIX-CONNECT:{SOCKET}",
    ]
    runtime.exec(agent, ExecSpec(tuple(relay), user=RELAY_USER, detach=True))
    wait_ready(lambda: listening(runtime, agent, agent_user, RELAY_PORT), 15, "the egress relay")


def listening(runtime: ContainerRuntime, agent: str, agent_user: str, port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` in the agent's container (a relay)."""
    # Read from /proc, not probed with a connection: that would reach squid and leave an empty
    # transaction in the audit.
    probe = ("grep", "-qi", f"0100007F:{port:04X} 00000000:0000 0A", "/proc/net/tcp")
    return runtime.exec(agent, ExecSpec(probe, user=agent_user)) == 0


def audit_text(runtime: ContainerRuntime, proxy: str) -> str:
    """The proxy's audit log, read from its volume (so also after squid died)."""
    if runtime.container(proxy) is None:
        return ""
    data = runtime.read_file(proxy, AUDIT_LOG)
    return (data or b"").decode("utf-8", "replace")


def parse_audit(text: str) -> list[AuditRecord]:
    """The audit's records; lines that are not records (a torn last line) are skipped."""
    return [r for r in (parse_audit_line(line) for line in text.splitlines()) if r is not None]
