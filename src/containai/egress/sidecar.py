"""A session's egress: squid in a sidecar container, reached from the agent only through a Unix socket.

    agent container (--network none, only lo)          proxy container (<session>-proxy)
    agent ──> 127.0.0.1:3128 ──> relay (socat, uid 65533) ──unix socket──> socat ──> squid ──> egress network
                                        (shared session volume)          127.0.0.1:3128

The agent has no network interface but loopback, so direct connections, UDP, ICMP, DNS and IPv6 have
nowhere to go, whatever it does with its environment. squid alone decides, and logs every request.
If squid dies, its container stops and takes the socket's far end with it: the agent has no network.

In a session with a model gateway, the gateway reaches squid the same way, through a socket of its own
on a volume the agent never mounts, to a squid port of its own (``GATEWAY_RELAY_PORT``): squid tells the
two apart by that port, lets only the gateway reach the model API, and logs which one asked.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from containai.egress.policy import EgressPolicy
from containai.egress.squid import DEFAULT_PRIVATE_RANGES, AuditRecord, parse_audit_line, render_squid_conf
from containai.errors import SessionError
from containai.images.catalog import image_tag
from containai.inside import protocol
from containai.runtime.base import ContainerRuntime, ContainerSpec, ExecSpec, FileTail, Mount

SOCKET_DIR = protocol.EGRESS_DIR
SOCKET = protocol.PROXY_SOCKET
RELAY_PORT = 3128
GATEWAY_SOCKET_DIR = protocol.EGRESS_GATEWAY_DIR
GATEWAY_SOCKET = protocol.GATEWAY_PROXY_SOCKET
GATEWAY_RELAY_PORT = 3129  # squid's port for the gateway; containai-proxy-start bridges the socket to it
RELAY_USER = protocol.user(
    protocol.RELAY_UID
)  # not the agent's uid: the agent can neither kill nor trace the relay
PROXY_USER = "13:13"  # Debian's proxy user, who owns squid's folders in the image
AUDIT_LOG = "/var/log/containai/egress.jsonl"
AUDIT_ROTATED = f"{AUDIT_LOG}.0"  # the audit before the last rotation (squid's rotate=1)
AUDIT_DROPPED = f"{AUDIT_LOG}.dropped"  # how many bytes rotations have dropped, as a decimal number
SQUID_PID = "/var/run/squid/squid.pid"
# The proxy's entrypoint, with a rotation loop beside squid (which stays PID 1, so that the container
# and the agent's way out still end with it). Five times a second: past half the cap, squid is told to
# rotate (SIGUSR1: it renames the audit to .0, replacing the one before, and opens a new one), and the
# bytes the replaced .0 held are added to the count of what was dropped. So the volume holds about the
# cap at most (the audit and .0, each about half), and what squid writes in a fifth of a second.
PROXY_ENTRYPOINT = (
    "bash",
    "-c",
    f"""set -u
half=$1 log={AUDIT_LOG} dropped=0
rotate() {{
  while sleep 0.2; do
    size=$(stat -c %s "$log" 2>/dev/null) || continue
    [ "$size" -gt "$half" ] || continue
    old=$(stat -c %s "$log.0" 2>/dev/null) || old=0
    inode=$(stat -c %i "$log")
    kill -USR1 "$(cat {SQUID_PID})" || continue
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      sleep 0.1
      [ "$(stat -c %i "$log" 2>/dev/null)" = "$inode" ] || break
    done
    dropped=$((dropped + old))
    echo "$dropped" > "$log.dropped.new" && mv -f "$log.dropped.new" "$log.dropped"
  done
}}
rotate </dev/null >/dev/null 2>&1 &
exec /usr/local/bin/containai-proxy-start""",
    "containai-proxy",
)
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
    gateway_volume: str | None = None  # the gateway's own socket to squid, when the session has one


def plan_egress(
    *,
    session_name: str,
    session_id: str,
    labels: Mapping[str, str],
    channel: str,
    policy: EgressPolicy,
    state_dir: Path,
    lab: Lab | None,
    log_max: int,
) -> EgressPlan:
    """``log_max``: the cap on the audit's volume (see ``PROXY_ENTRYPOINT``)."""
    network = lab.network if lab else f"{session_name}-egress-{session_id}"
    private = carve(DEFAULT_PRIVATE_RANGES, lab.allow_ranges) if lab else DEFAULT_PRIVATE_RANGES
    conf = render_squid_conf(
        policy,
        gateway_listen=f"127.0.0.1:{GATEWAY_RELAY_PORT}",
        access_log=AUDIT_LOG,
        dns_nameservers=lab.dns if lab else (),
        private_ranges=private,
        access_log_rotate=1,
    )
    socket_volume = f"{session_name}-egress-sock-{session_id}"
    log_volume = f"{session_name}-egress-log-{session_id}"
    gateway_volume = f"{session_name}-egress-gateway-sock-{session_id}" if policy.gateway else None
    conf_file = state_dir / "squid.conf"
    proxy = ContainerSpec(
        image=image_tag("proxy", channel),
        name=f"{session_name}-proxy",
        command=(),
        entrypoint=(*PROXY_ENTRYPOINT, str(max(1, log_max // 2))),
        labels=dict(labels),
        user=PROXY_USER,
        environment={},
        hostname="proxy",
        mounts=(
            Mount(SQUID_CONF, str(conf_file), "bind", read_only=True),
            Mount(SOCKET_DIR, socket_volume, "volume"),
            Mount("/var/log/containai", log_volume, "volume"),
            *([Mount(GATEWAY_SOCKET_DIR, gateway_volume, "volume")] if gateway_volume else []),
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
    return EgressPlan(
        policy, proxy, network, lab is None, socket_volume, log_volume, conf, conf_file, gateway_volume
    )


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
    if plan.gateway_volume:
        runtime.create_volume(plan.gateway_volume, labels=labels)
    runtime.create_container(plan.proxy)
    runtime.start(plan.proxy.name)
    wait_for_proxy(runtime, plan.proxy.name, gateway=plan.gateway_volume is not None)


def restart_proxy(runtime: ContainerRuntime, name: str) -> None:
    """Start a session's stopped proxy again (its network, volumes and squid.conf are all still there).

    The agent's relay reconnects to the socket per connection, so it needs nothing: until the proxy
    answers again, the agent has no network at all, never another way out."""
    runtime.start(name)
    wait_for_proxy(runtime, name)


def wait_for_proxy(runtime: ContainerRuntime, name: str, *, gateway: bool = False) -> None:
    """Ready when the agent's socket (and, with ``gateway``, the gateway's) exists."""
    sockets = (SOCKET, GATEWAY_SOCKET) if gateway else (SOCKET,)

    def ready() -> bool:
        info = runtime.container(name)
        if info is None or not info.running:
            raise SessionError(
                "the egress proxy exited at start", hint=f"its log: `docker logs {name}`; then `containai gc`"
            )
        return all(
            runtime.exec(name, ExecSpec(("test", "-S", path), user=PROXY_USER)) == 0 for path in sockets
        )

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


TRUNCATED = "containai-truncated"  # the key of the first line of an audit copy that is not whole


@dataclass(frozen=True)
class AuditCopy:
    """The egress audit as the host keeps it: its last complete lines, at most a cap's worth, and how
    many bytes before them were dropped (by the proxy's rotation, or by the cap here)."""

    text: str
    dropped: int = 0
    limit: int = 0

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def render(self) -> str:
        """The host file: a first line that says what was dropped (not a record: readers skip it)."""
        if not self.truncated:
            return self.text
        note = {TRUNCATED: True, "dropped_bytes": self.dropped, "kept_bytes": len(self.text.encode())}
        return json.dumps({**note, "limit_bytes": self.limit}) + "\n" + self.text

    @classmethod
    def parse(cls, text: str) -> AuditCopy:
        """A host file back (or one written before copies were capped, which has no first line)."""
        first, _, rest = text.partition("\n")
        try:
            note = json.loads(first)
        except ValueError:
            return cls(text)
        if not (isinstance(note, dict) and note.get(TRUNCATED) is True):
            return cls(text)
        dropped, limit = note.get("dropped_bytes"), note.get("limit_bytes")
        return cls(
            rest,
            dropped if isinstance(dropped, int) and dropped > 0 else 1,
            limit if isinstance(limit, int) else 0,
        )

    def note(self) -> str | None:
        """What the user is told about a truncated copy."""
        if not self.truncated:
            return None
        return (
            f"the egress audit was truncated: {self.dropped} bytes of its earliest requests were dropped "
            f"and only its last {len(self.text.encode())} bytes are kept"
            + (f" (the cap is {self.limit} bytes)" if self.limit else "")
        )


def read_audit(runtime: ContainerRuntime, proxy: str, *, max_bytes: int) -> AuditCopy:
    """The proxy's audit, read from its volume (so also after squid died), streamed: at most
    ``max_bytes`` of it, the newest; the rotated part first, then the current one."""
    if runtime.container(proxy) is None:
        return AuditCopy("", limit=max_bytes)
    current = runtime.read_tail(proxy, AUDIT_LOG, max_bytes=max_bytes) or FileTail(b"", 0)
    room = max_bytes - len(current.data)
    rotated = runtime.read_tail(proxy, AUDIT_ROTATED, max_bytes=room) or FileTail(b"", 0)
    counted = runtime.read_tail(proxy, AUDIT_DROPPED, max_bytes=32)
    text = (counted.data if counted else b"").decode("ascii", "replace").strip()
    dropped = (int(text) if text.isdigit() else 0) + rotated.dropped + current.dropped
    data = rotated.data + current.data
    # Cut inside a file (not at its start): its first line is the end of one that was dropped.
    if rotated.dropped > 0 if rotated.data else current.dropped > 0:
        cut = data.find(b"\n") + 1
        dropped, data = dropped + cut, data[cut:]
    return AuditCopy(data.decode("utf-8", "replace"), dropped, max_bytes)


def parse_audit(text: str) -> list[AuditRecord]:
    """The audit's records; lines that are not records (a torn last line) are skipped."""
    return [r for r in (parse_audit_line(line) for line in text.splitlines()) if r is not None]
