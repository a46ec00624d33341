"""The model-credential gateway: the real API key stays in a sidecar, never in the agent's container.

    agent (placeholder key) ─> 127.0.0.1:8787 ─> relay ─unix socket─> gateway (real key) ─> proxy ─> upstream

The gateway runs in its own container, as its own uid, with no network; it reaches the upstream only
through the session's egress proxy, so the egress policy and audit still apply. It has a socket to
the proxy of its own (not the agent's): squid lets only requests that come that way reach the
upstream, so an agent holding a key of its own cannot talk to the model API directly. The key is handed
to it on stdin when it starts: it is in no environment variable, argument, label or file, so
``docker inspect`` of any session container shows nothing of it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from containai.agents.definition import GatewayDef
from containai.egress.sidecar import GATEWAY_SOCKET as PROXY_SOCKET
from containai.egress.sidecar import GATEWAY_SOCKET_DIR as PROXY_SOCKET_DIR
from containai.egress.sidecar import RELAY_USER, listening, wait_ready
from containai.errors import SessionError
from containai.images.catalog import image_tag
from containai.inside import protocol
from containai.runtime.base import ContainerRuntime, ContainerSpec, ExecSpec, Mount
from containai.secrets.value import Secret

PORT = 8787
SOCKET_FOLDER = protocol.GATEWAY_DIR
GATEWAY_SOCKET = protocol.GATEWAY_SOCKET
USER = protocol.user(protocol.GATEWAY_UID)  # the gateway image's own user: not the agent's, not root
PLACEHOLDER = "containai-placeholder-not-a-real-key"


def plan_gateway(
    *,
    session_name: str,
    session_id: str,
    labels: Mapping[str, str],
    channel: str,
    gateway: GatewayDef,
    egress_volume: str,
    upstream: str | None = None,
    follow: bool = False,
) -> tuple[ContainerSpec, str]:
    """The gateway container, and the volume its socket lives on (shared read-only with the agent).

    ``egress_volume``: the proxy's volume with the gateway's own socket to squid."""
    volume = f"{session_name}-gateway-sock-{session_id}"
    command = (
        protocol.GATEWAY_PROGRAM,
        "--listen",
        GATEWAY_SOCKET,
        "--proxy",
        PROXY_SOCKET,
        "--upstream",
        upstream or gateway.upstream,
        "--header",
        gateway.header,
        "--scheme",
        gateway.scheme,
        *(word for rule in gateway.allow for word in ("--allow", rule)),
        *(("--follow",) if follow else ()),
    )
    spec = ContainerSpec(
        image=image_tag("gateway", channel),
        name=f"{session_name}-gateway",
        command=command,
        entrypoint=(),
        labels=dict(labels),
        user=USER,
        hostname="gateway",
        mounts=(
            Mount(SOCKET_FOLDER, volume, "volume"),
            Mount(PROXY_SOCKET_DIR, egress_volume, "volume", read_only=True),
        ),
        tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=16m"},  # noqa: S108  # the container's own tmpfs
        read_only=True,
        cap_drop=("ALL",),
        security_opt=("no-new-privileges:true",),
        network_mode="none",
        pids_limit=128,
        memory_bytes=256 * 2**20,
        nano_cpus=10**9,
        stdin_open=True,
    )
    return spec, volume


def agent_mounts(volume: str) -> list[Mount]:
    return [Mount(SOCKET_FOLDER, volume, "volume", read_only=True)]


def base_url(gateway: GatewayDef) -> str:
    """The gateway as the agent sees it, with the upstream's path (``/v1`` for OpenAI)."""
    path = urllib.parse.urlsplit(gateway.upstream).path.rstrip("/")
    return f"http://127.0.0.1:{PORT}{path}"


def agent_environment(gateway: GatewayDef) -> dict[str, str]:
    """Point the agent's CLI at the gateway, with a placeholder so it does not ask for a login."""
    return {**gateway.set_env, gateway.base_url_env: base_url(gateway), gateway.key_env: PLACEHOLDER}


def create_gateway(
    runtime: ContainerRuntime, spec: ContainerSpec, volume: str, labels: Mapping[str, str]
) -> None:
    runtime.create_volume(volume, labels=labels)
    runtime.create_container(spec)


def start_gateway(
    runtime: ContainerRuntime, spec: ContainerSpec, volume: str, labels: Mapping[str, str], credential: Secret
) -> None:
    create_gateway(runtime, spec, volume, labels)
    feed_gateway(runtime, spec.name, credential)


def feed_gateway(runtime: ContainerRuntime, name: str, credential: Secret) -> None:
    """Start the (created, or stopped) gateway with the key on its stdin; ready when its socket is."""
    feed = runtime.start_fed(name)
    try:
        feed.send((credential.reveal() + "\n").encode())
    finally:
        feed.close()

    def ready() -> bool:
        info = runtime.container(name)
        if info is None or not info.running:
            raise SessionError(
                "the credential gateway exited at start", hint=f"its log: `docker logs {name}`"
            )
        return runtime.exec(name, ExecSpec(("test", "-S", GATEWAY_SOCKET), user=USER)) == 0

    wait_ready(ready, 20, "the credential gateway")


def start_relay(runtime: ContainerRuntime, agent: str, agent_user: str) -> None:
    relay = ["socat", f"TCP-LISTEN:{PORT},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{GATEWAY_SOCKET}"]
    runtime.exec(agent, ExecSpec(tuple(relay), user=RELAY_USER, detach=True))
    wait_ready(lambda: listening(runtime, agent, agent_user, PORT), 15, "the gateway relay")
