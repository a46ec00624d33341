"""The gateway part of a session: the model credential in a sidecar, never in the agent's container.

In a session with the egress proxy, for an agent whose definition has a gateway, when the host has
its credential (a stored key, a subscription token, or the CLI's own login, refreshed on the host).

On resume, a gateway fed by the session's broker (a host login) is started again by the broker; one
that holds a stored key is started again with the key looked up on the host again, on its stdin as
at launch. Without one, it stays down: the agent has no model access, and is told so.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from containai.egress.sidecar import EgressPlan
from containai.errors import ConfigError
from containai.gateway.login import ClaudeLogin
from containai.gateway.sidecar import (
    agent_environment,
    agent_mounts,
    base_url,
    create_gateway,
    feed_gateway,
    plan_gateway,
    start_gateway,
    start_relay,
)
from containai.runtime.base import ContainerSpec
from containai.secrets.value import Secret
from containai.session import naming
from containai.session.parts import BasePart, PartPlan, PlanContext, ResumeContext

if TYPE_CHECKING:
    from containai.agents.definition import GatewayDef
    from containai.session.manager import SessionRequest
    from containai.session.plan import SessionPlan
    from containai.session.ports import Ports


GATEWAY_FILE = "gateway.json"  # in the session's host folder: who feeds the gateway its credential


@dataclass(frozen=True)
class GatewayPlan:
    spec: ContainerSpec
    volume: str
    credential: Secret | None  # handed to the gateway on its stdin at start
    login: ClaudeLogin | None  # or the host login, fed to it by the session's broker


def session_upstream(request: SessionRequest) -> str | None:
    """The URL the session's gateway forwards to, or None when the session has no gateway.

    The egress part asks too: the upstream's host is the gateway's alone, off the agent's allow list.
    """
    definition = request.agent.gateway
    if request.network_proxy != "squid" or definition is None:
        return None
    if request.credential is None and request.login is None:
        return None
    return request.gateway_upstream or definition.upstream


def upstream_host(url: str) -> str:
    """The host name of a gateway's upstream URL."""
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:
        host = None
    if not host or not url.startswith(("https://", "http://")):
        raise ConfigError(
            f"the gateway's upstream {url!r} is not an http(s) URL with a host",
            hint="set CONTAINAI_GATEWAY_UPSTREAM to a URL such as https://api.anthropic.com, or unset it",
        )
    return host


def config_files(definition: GatewayDef) -> dict[str, str]:
    """The agent's own config file that points it at the gateway, where its CLI needs one (Codex)."""
    if not definition.config_path or not definition.config:
        return {}
    return {definition.config_path: definition.config.replace("{base_url}", base_url(definition))}


class GatewayPart(BasePart[GatewayPlan]):
    role = "gateway"

    def plan(self, ctx: PlanContext) -> PartPlan[GatewayPlan] | None:
        request = ctx.request
        egress = ctx.earlier.get("egress")
        definition = request.agent.gateway
        upstream = session_upstream(request)
        if egress is None or definition is None or upstream is None:
            return None
        assert isinstance(egress.detail, EgressPlan)  # noqa: S101  # the egress part's own plan type
        if egress.detail.gateway_volume is None:
            raise ConfigError(
                "the egress proxy was planned without the gateway's port", hint="this is a bug in ContainAI"
            )
        spec, volume = plan_gateway(
            session_name=ctx.name,
            session_id=ctx.session_id,
            labels=ctx.labels.for_role("gateway"),
            channel=request.channel,
            gateway=definition,
            egress_volume=egress.detail.gateway_volume,
            upstream=upstream,
            follow=request.login is not None,
        )
        return PartPlan(
            self.role,
            GatewayPlan(spec, volume, request.credential, request.login),
            mounts=tuple(agent_mounts(volume)),
            environment=agent_environment(definition),
            home_files=config_files(definition),
            # A host login is refreshed by the session's broker, which feeds each new token to the gateway.
            needs_broker=request.login is not None,
        )

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[GatewayPlan]) -> None:
        plan = planned.detail
        labels = session.labels.for_role("gateway")
        if session.labels.mode == "persistent":
            fed_by = "broker" if plan.login is not None else "launcher"
            ports.host.write_text(session.state_dir / GATEWAY_FILE, json.dumps({"fed_by": fed_by}), 0o600)
        if plan.login is not None:
            plan.login.current()  # a refused refresh stops the launch here, with its own message
            # Created here, started by the broker, which holds its stdin to feed it renewed tokens.
            create_gateway(ports.runtime, plan.spec, plan.volume, labels)
        elif plan.credential is not None:
            start_gateway(ports.runtime, plan.spec, plan.volume, labels, plan.credential)

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[GatewayPlan]) -> None:
        start_relay(ports.runtime, session.name, session.user)
        ports.reporter.note(
            f"the model credential stays in {planned.detail.spec.name}; the agent has a placeholder"
        )

    def restore(self, ports: Ports, ctx: ResumeContext) -> bool:
        record = ctx.record
        text = ports.host.read_text(record.state_dir / GATEWAY_FILE)
        if text is None or json.loads(text).get("fed_by") != "launcher":
            return False  # none, or the broker's to start (a host login)
        gateway = ports.runtime.container(f"{record.name}-gateway")
        if gateway is None or gateway.labels.get(naming.SESSION) != record.labels.session or gateway.running:
            return False
        key = ctx.credential()
        if key is None:
            return False  # resume says so
        feed_gateway(ports.runtime, gateway.name, key)
        return True

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        record = ctx.record
        gateway = ports.runtime.container(f"{record.name}-gateway")
        if gateway is None or gateway.labels.get(naming.SESSION) != record.labels.session:
            return
        if not gateway.running:
            # Fails closed: the agent's relay leads nowhere, and the key never goes anywhere else.
            ports.reporter.warn(
                f"the model gateway {gateway.name} is not running and the host has no model key for it: the "
                f"agent has no model access (store the key with `containai secrets set`, then connect again; "
                f"`remove-agent {record.name}` brings the work home)"
            )
        if ctx.restarted and record.container is not None:
            start_relay(ports.runtime, record.name, record.container.user or "1000:1000")
