"""The egress part of a session: a squid proxy sidecar, the agent's only way out (``egress.sidecar``).

Only in ``--network-proxy squid`` sessions; ``restricted`` ones have no network at all and no part here.
A proxy that stopped (killed, or the engine restarted) is started again by ``restore``; until then the
agent has no network at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from containai import trust
from containai.config import Bounds
from containai.egress.policy import resolve_policy
from containai.egress.sidecar import (
    EgressPlan,
    agent_environment,
    agent_mounts,
    parse_audit,
    plan_egress,
    read_audit,
    restart_proxy,
    start_proxy,
    start_relay,
)
from containai.egress.squid import summarize_denials
from containai.gateway.part import session_upstream, upstream_host
from containai.session import naming
from containai.session.mcp import mcp_hosts
from containai.session.parts import (
    BasePart,
    FinishOptions,
    PartPlan,
    PartResult,
    PlanContext,
    ResumeContext,
    SessionRecord,
)

if TYPE_CHECKING:
    from pathlib import Path

    from containai.session.plan import SessionPlan
    from containai.session.ports import Ports


def egress_log_file(state_root: Path, name: str, session: str) -> Path:
    """Where a finished session's egress audit is kept on the host (`containai logs NAME --egress`)."""
    return state_root.parent / "session-logs" / f"{name}-{session}.egress.jsonl"


class EgressPart(BasePart[EgressPlan]):
    role = "egress"

    def plan(self, ctx: PlanContext) -> PartPlan[EgressPlan] | None:
        request = ctx.request
        if request.network_proxy != "squid":
            return None
        repo = ctx.repo
        requested = trust.repo_requests(repo.root) if repo else ()
        ok = trust.approved(request.approvals_file, repo.root) if repo and request.approvals_file else ()
        waiting = [d for d in requested if d not in ok]
        warnings: tuple[str, ...] = ()
        if waiting and repo is not None:
            warnings = (
                f"{repo.root} asks to reach {', '.join(waiting)}; not allowed until you approve: "
                f"`containai network approve {repo.root} {' '.join(waiting)}`",
            )
        policy = resolve_policy(
            session=ctx.session_id,
            agent_endpoints={request.agent.name: request.agent.endpoints},
            presets=request.network.presets,
            # The user's MCP URL servers, and the repository's ones the user approved, are reachable.
            config_allow=request.network.allow + mcp_hosts(ctx.mcp_servers),
            config_deny=request.network.deny,
            cli_allow=request.allow_domains,
            repo_requested=requested,
            repo_approved=ok,
            # The model API is the gateway's alone: the agent could reach it with a key of its own.
            gateway=[upstream_host(url)] if (url := session_upstream(request)) else [],
        )
        egress = plan_egress(
            session_name=ctx.name,
            session_id=ctx.session_id,
            labels=ctx.labels.for_role("proxy"),
            channel=request.channel,
            policy=policy,
            state_dir=ctx.state_dir,
            lab=request.lab,
            log_max=request.bounds.egress_log_max,
        )
        return PartPlan(
            self.role,
            egress,
            mounts=tuple(agent_mounts(egress)),
            environment=agent_environment(),
            warnings=warnings,
        )

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[EgressPlan]) -> None:
        plan = planned.detail
        ports.host.write_text(plan.conf_file, plan.squid_conf, 0o644)
        start_proxy(ports.runtime, plan, session.labels.for_role("proxy"))

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[EgressPlan]) -> None:
        start_relay(ports.runtime, session.name, session.user)
        policy = planned.detail.policy
        allowed = ", ".join(policy.allow) or "nothing"
        gateway = f" (and {', '.join(policy.gateway)} to the model gateway only)" if policy.gateway else ""
        ports.reporter.note(
            f"egress only through {planned.detail.proxy.name}, which allows: {allowed}{gateway}"
        )

    def restore(self, ports: Ports, ctx: ResumeContext) -> bool:
        proxy = ports.runtime.container(f"{ctx.record.name}-proxy")
        if proxy is None or proxy.labels.get(naming.SESSION) != ctx.record.labels.session or proxy.running:
            return False
        ports.reporter.warn(
            f"the egress proxy {proxy.name} had stopped (exit {proxy.exit_code}): the agent was offline "
            "meanwhile; starting it again"
        )
        restart_proxy(ports.runtime, proxy.name)
        return True

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        if ctx.restarted and ctx.record.container is not None:
            start_relay(ports.runtime, ctx.record.name, ctx.record.container.user or "1000:1000")

    def finish(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> PartResult | None:
        """Keep the proxy's audit on the host, summarise what it blocked, and say if squid had died."""
        proxy = ports.runtime.container(f"{record.name}-proxy")
        if proxy is None or proxy.labels.get(naming.SESSION) != record.labels.session:
            return None
        warnings = []
        if not proxy.running:
            warnings.append(
                f"the egress proxy {proxy.name} stopped during the session (exit {proxy.exit_code}): "
                "from then on the agent had no network at all"
            )
        audit = read_audit(ports.runtime, proxy.name, max_bytes=options.bounds.egress_log_max)
        kept = egress_log_file(ports.host.root, record.name, record.labels.session)
        ports.host.write_text(kept, audit.render(), 0o600)
        summary = summarize_denials(parse_audit(audit.text))
        if summary:
            warnings.append(
                summary + (" (among the requests the truncated audit still holds)" if audit.truncated else "")
            )
        if note := audit.note():
            warnings.append(f"{note}; to keep more, {Bounds.how_to_change('egress_log_max')}")
        return PartResult(self.role, warnings=tuple(warnings), detail=summary)
