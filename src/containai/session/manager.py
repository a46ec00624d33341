"""Running sessions: plan, provision, finish, tear down, collect garbage. The parts do the work.

    plan ── reserve the branch ── each part plans ── the agent's container spec
    provision ── each part's provision ── agent container created, started ── each part's start
    finish ── each part's finish (the workspace brings the work home) ── teardown
    teardown ── each part's teardown, reversed ── every labelled container, network, volume ── host state

Work is never lost: when a part's finish says the session must be kept (the export or the import
failed), nothing is torn down, and the user is told how to retry (`remove-agent NAME`). A failure
while setting up undoes the whole session in one place (``SessionManager.rollback``). Everything a
session creates carries its session label, so a crashed launcher's leftovers are found by `gc`.

``SessionManager`` takes its effects as ``Ports``; the module-level functions wire the local ones.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from containai.agents.definition import AgentDef
from containai.broker.session import BrokerPaths
from containai.config import Bounds, NetworkSettings
from containai.egress.sidecar import Lab
from containai.errors import ContainAIError, ImageMissing, UsageError
from containai.gateway.login import ClaudeLogin
from containai.inside import protocol
from containai.mcp.config import McpServer
from containai.runtime.base import ContainerInfo, ContainerRuntime, ExecSpec, Mount, NetworkInfo, VolumeInfo
from containai.runtime.seccomp import require_seccomp
from containai.secrets.value import Secret
from containai.session import naming
from containai.session.disk import DiskLimit
from containai.session.naming import SessionLabels, container_name, new_session_id
from containai.session.parts import (
    FinishOptions,
    PartPlan,
    PartResult,
    PlanContext,
    ResumeContext,
    SessionPart,
    SessionRecord,
    default_parts,
)
from containai.session.plan import (
    WORKSPACE,
    Resources,
    SessionPlan,
    choose_workspace,
    default_resources,
    hardened_spec,
    render_home_script,
    render_setup_script,
)
from containai.session.ports import Ports, Reporter
from containai.session.repo import BranchChoice, RepoInfo
from containai.text import printable
from containai.workspace.gate import GatePolicy, ImportResult

log = logging.getLogger("containai.session")
SESSION_FILE = "session.json"  # in the session's host folder: its engine and labels, from plan on

DEFAULT_GATE = GatePolicy()

__all__ = ["FinishResult", "NetworkSettings", "Reporter", "SessionManager", "SessionRequest"]


@dataclass(frozen=True)
class SessionRequest:
    agent: AgentDef
    repo_path: Path | None
    cwd: Path
    channel: str
    mode: str  # "ephemeral" or "persistent"
    network_proxy: str = "squid"
    branch: str | None = None
    use_current_branch: bool = False
    push: bool = True
    force: bool = False
    name: str | None = None
    resources: Resources = field(default_factory=default_resources)
    workspace_mode: str | None = None  # CONTAINAI_WORKSPACE
    expose_ignored: tuple[str, ...] = ()  # --expose-ignored, CONTAINAI_EXPOSE_IGNORED: ignored files shown
    allow_domains: tuple[str, ...] = ()  # --allow-domain
    network: NetworkSettings = field(default_factory=lambda: NetworkSettings())
    lab: Lab | None = None  # tests only: a fake internet for the proxy (never from the environment)
    approvals_file: Path | None = None  # domains the user approved for repositories
    credential: Secret | None = None  # the agent's model API key, for its gateway (never in its container)
    login: ClaudeLogin | None = None  # or the CLI's own login on the host, refreshed there by the broker
    gateway_upstream: str | None = None  # CONTAINAI_GATEWAY_UPSTREAM: another API endpoint
    gate: GatePolicy = DEFAULT_GATE  # CONTAINAI_GATE_MAX_BLOB
    scope: Mapping[str, str] = field(default_factory=dict)  # --label / CONTAINAI_LABELS
    repo: RepoInfo | None = None  # found and checked already (commands.find_repo); else found at start
    disk: DiskLimit = field(default_factory=DiskLimit)  # --disk-limit / CONTAINAI_DISK_LIMIT, disk_files
    bounds: Bounds = field(default_factory=Bounds)  # export timeout and size, the egress audit's cap


@dataclass(frozen=True)
class FinishResult:
    kept: bool  # the container and workspace were kept because bringing the work home failed
    message: str
    warnings: tuple[str, ...] = ()  # what else the user must know: a proxy that died, what it blocked
    parts: Mapping[str, PartResult] = field(default_factory=dict)  # each part's own result, by role

    @property
    def imported(self) -> ImportResult | None:
        """What the git gate brought home (the workspace part's result)."""
        found = self.parts.get("workspace")
        return found.detail if found is not None and isinstance(found.detail, ImportResult) else None

    @property
    def kept_reason(self) -> str | None:
        """With ``kept``: the error that kept the work in the session (its message), when one did."""
        for found in self.parts.values():
            if found.keep and isinstance(found.detail, ContainAIError):
                return found.detail.message
            if found.keep and isinstance(found.detail, ImportResult) and found.detail.refused is not None:
                refused = found.detail.refused
                return f"commit {refused.commit} was refused: {'; '.join(refused.reasons)}"
        return None

    @property
    def egress(self) -> str | None:
        """What the proxy blocked, and how to allow it (the egress part's summary)."""
        found = self.parts.get("egress")
        return found.detail if found is not None and isinstance(found.detail, str) else None


def broker_audit_file(state_root: Path, name: str, session: str) -> Path:
    """Where a session's secret-broker audit is kept on the host (fingerprints, never values)."""
    return state_root.parent / "session-logs" / f"{name}-{session}.broker.jsonl"


class SessionManager:
    """Runs a session's parts in order; undoes them in one place; never names a particular part."""

    def __init__(self, ports: Ports, parts: Sequence[SessionPart[Any]] | None = None) -> None:
        self.ports = ports
        self.parts = tuple(parts) if parts is not None else default_parts()

    # -- plan

    def plan(
        self,
        request: SessionRequest,
        *,
        repo: RepoInfo | None,
        mcp_servers: Sequence[McpServer] = (),
        environ: Mapping[str, str] | None = None,
    ) -> SessionPlan:
        """Decide everything, and reserve the branch on the host (the only host change before launch)."""
        ports = self.ports
        runtime = ports.runtime
        info = runtime.info()
        require_seccomp(info.kind, info.version, info.security_options)
        image = request.agent.image_ref(request.channel)
        if runtime.image(image) is None:
            part = request.agent.image
            raise ImageMissing(
                image,
                build_hint=f"build it: `containai images build --channel {request.channel} --agents {part}`"
                if "/" not in part and ":" not in part
                else f"pull or build {image}",
            )
        if repo is not None and repo.dirty and not request.force:
            shown = ", ".join(repo.dirty[:5]) + (
                f" and {len(repo.dirty) - 5} more" if len(repo.dirty) > 5 else ""
            )
            raise UsageError(
                f"{repo.root} has uncommitted changes: {shown}",
                hint="commit or stash them first, or pass --force to launch anyway",
            )
        workspace = choose_workspace(
            repo,
            owner=ports.git.owner(repo.root) if repo else None,
            local_engine=runtime.choice.base_url.startswith("unix://"),
            rootless=info.rootless,
            forced=request.workspace_mode,
        )
        session_id = new_session_id()
        branch: BranchChoice | None = None
        if repo is not None:
            branch = ports.git.choose_branch(
                repo,
                request.agent.name,
                requested=request.branch,
                use_current=request.use_current_branch,
                force=request.force,
                now=ports.clock,
            )
            if branch.archived:
                ports.reporter.note(f"archived the old {branch.name} to {branch.archived}")
        name = container_name(
            request.agent.name,
            request.name or (repo.name if repo else "prompt"),
            (branch.name if branch else "workspace") if not request.name else "",
            taken=lambda n: runtime.container(n) is not None,
        )
        labels = SessionLabels(
            session=session_id,
            agent=request.agent.name,
            repo=str(repo.root) if repo else "",
            branch=branch.name if branch else "",
            base=branch.base if branch else "",
            branch_created=branch.created if branch else False,
            channel=request.channel,
            mode=request.mode,
            network_proxy=request.network_proxy,
            workspace=workspace.mode,
            push=request.push and repo is not None,
            launcher=ports.host.launcher_id(),
            created=ports.clock().astimezone(UTC).isoformat(timespec="seconds"),
            scope=dict(request.scope),
        )
        state_dir = ports.host.root / session_id
        try:
            # Recorded on the host before anything is created on the engine: a launcher killed before
            # the session's first labelled resource exists still leaves what `gc` needs to release
            # the reserved branch and remove this folder.
            ports.host.write_text(
                state_dir / SESSION_FILE,
                json.dumps({"engine": runtime.choice.base_url, "labels": labels.for_role("agent")}),
            )
            # Parts decide after the branch is reserved; a part that refuses (a bad domain) releases it.
            planned = self._plan_parts(
                PlanContext(
                    request=request,
                    session_id=session_id,
                    name=name,
                    labels=labels,
                    repo=repo,
                    branch=branch,
                    workspace=workspace,
                    state_dir=state_dir,
                    mcp_servers=tuple(mcp_servers),
                    broker=BrokerPaths.for_session(
                        state_dir,
                        broker_audit_file(ports.host.root, name, session_id),
                        os.environ if environ is None else environ,
                    ),
                )
            )
        except BaseException:
            self._teardown_parts(SessionRecord(name, labels, state_dir), FinishOptions())  # logs its failures
            ports.host.remove(state_dir)
            raise
        environment = {
            "HOME": "/home/agent",
            "TERM": (os.environ if environ is None else environ).get("TERM", "xterm-256color"),
            "CONTAINAI_SESSION": session_id,
            "CONTAINAI_AGENT": request.agent.name,
            "CONTAINAI_BRANCH": branch.name if branch else "",
            "CONTAINAI_NETWORK_PROXY": request.network_proxy,
            **request.agent.set_env,
        }
        home_files: dict[str, str] = {}
        tmpfs: dict[str, str] = {}
        mounts: list[Mount] = []
        for _, each in planned:
            mounts += each.mounts
            environment.update(each.environment)
            tmpfs.update(each.tmpfs)
            home_files.update(each.home_files)
            for warning in each.warnings:
                ports.reporter.warn(warning)
        git_name, git_email = ports.git.identity(repo.root if repo else None)
        return SessionPlan(
            session_id=session_id,
            name=name,
            agent=request.agent,
            image=image,
            repo=repo,
            branch=branch,
            workspace=workspace,
            labels=labels,
            container=hardened_spec(
                image=image,
                name=name,
                command=[protocol.ENTRYPOINT_PROGRAM, "--hold"],
                labels=labels.for_role("agent"),
                uid=workspace.uid,
                gid=workspace.gid,
                mounts=mounts,
                resources=request.resources,
                environment=environment,
                network_mode="none",
                extra_tmpfs=tmpfs,
            ),
            state_dir=state_dir,
            setup_script=render_setup_script(
                workspace, branch, git_name=git_name, git_email=git_email, home_files=home_files
            ),
            home_script=render_home_script(home_files),
            environment=environment,
            parts=planned,
        )

    def _plan_parts(self, ctx: PlanContext) -> tuple[tuple[SessionPart[Any], PartPlan[Any]], ...]:
        planned: list[tuple[SessionPart[Any], PartPlan[Any]]] = []
        for part in self.parts:
            found = part.plan(replace(ctx, earlier={p.role: p for _, p in planned}))
            if found is not None:
                planned.append((part, found))
        return tuple(planned)

    # -- provision

    def provision(self, plan: SessionPlan) -> None:
        """Each part's provision, the agent's container, each part's start. Undone whole on failure."""
        runtime = self.ports.runtime
        try:
            for part, planned in plan.parts:
                part.provision(self.ports, plan, planned)
            runtime.create_container(plan.container)
            runtime.start(plan.name)
            for part, planned in plan.parts:
                part.start(self.ports, plan, planned)
        except BaseException:
            self.rollback(plan)
            raise
        self.ports.host.mark_ready(plan.state_dir)
        self.ports.reporter.note(
            f"session {plan.name}: {plan.workspace.reason}; branch {plan.labels.branch or '(none)'}"
        )
        if plan.labels.network_proxy == "restricted":
            self.ports.reporter.note("restricted: this session is offline (no network at all)")

    def rollback(self, plan: SessionPlan) -> None:
        """Undo a session that did not come up: every part's teardown, then all it created."""
        record = SessionRecord(
            plan.name, plan.labels, plan.state_dir, self.ports.runtime.container(plan.name)
        )
        self.teardown(record, FinishOptions())

    # -- resume

    def resume(self, name: str, *, credential: Callable[[], Secret | None] = lambda: None) -> bool:
        """Bring a persistent session back: its sidecars, its agent's container, what ran inside it.

        After an engine restart (every container stopped) or a sidecar that died: each part's restore
        (sidecars, the broker), the agent's container started again, each part's resume. Nothing is
        created and the workspace's one-time set-up is not run again, so the branch and the work are
        as they were. True when the agent's container was started again (its processes are gone).
        """
        record = self.record(name)
        if record.labels.mode != "persistent":
            raise UsageError(
                f"{name} is not a persistent session, so it cannot be resumed",
                hint=f"`remove-agent {name}` brings its work home",
            )
        restarted = record.container is not None and not record.container.running
        if restarted:
            self.ports.reporter.note(f"{name} had stopped (was the engine restarted?): starting it again")
        ctx = ResumeContext(record, restarted, credential=credential)
        restored = frozenset(part.role for part in self.parts if part.restore(self.ports, ctx))
        if restarted:
            self.ports.runtime.start(name)
            record = self.record(name)
        ctx = ResumeContext(record, restarted, restored, credential)
        for part in self.parts:
            part.resume(self.ports, ctx)
        return restarted

    # -- finish

    def record(self, name: str) -> SessionRecord:
        container = self.ports.runtime.container(name)
        if container is None or container.labels.get(naming.ROLE) != "agent":
            raise UsageError(f"no session named {name}", hint="see `list-agents`")
        labels = SessionLabels.parse(container.labels)
        return SessionRecord(container.name, labels, self.ports.host.root / labels.session, container)

    def finish(self, name: str, options: FinishOptions) -> FinishResult:
        """Bring the session's work and records home (unless told not to), then remove all it created."""
        record = self.record(name)
        results: dict[str, PartResult] = {}
        for part in self.parts:
            try:
                result = part.finish(self.ports, record, options)
            except Exception as exc:
                # Never wedged by one part: a part that holds the work keeps the session; any other
                # failure is reported and the session still ends.
                log.warning("finish of %s (%s) failed", name, part.role, exc_info=True)
                why = _reason(exc)
                result = PartResult(
                    part.role,
                    keep=part.holds_work,
                    message=f"{name} is kept: its {part.role} could not finish: {why}. Retry with "
                    f"`remove-agent {name}`"
                    if part.holds_work
                    else None,
                    warnings=()
                    if part.holds_work
                    else (f"the session's {part.role} could not finish: {why}",),
                    detail=exc if isinstance(exc, ContainAIError) else None,
                )
            if result is None:
                continue
            results[part.role] = result
            if result.keep:
                log.warning("%s: kept: %s", name, result.message)
                said = tuple(w for r in results.values() for w in r.warnings)  # such as why it was stopped
                return FinishResult(kept=True, message=result.message or "kept", warnings=said, parts=results)
        # The work is home: what teardown cannot remove is reported, and the end still comes.
        left = self._teardown(record, options)
        messages = [r.message for r in results.values() if r.message]
        warnings = [w for r in results.values() for w in r.warnings]
        warnings += [f"removing {name} failed: {_reason(exc)}" for exc in left]
        if left:
            warnings.append(f"what is left goes with `remove-agent {name}` or `containai gc`")
        return FinishResult(False, "; ".join(messages) or "done", tuple(warnings), results)

    # -- teardown

    def teardown(self, record: SessionRecord, options: FinishOptions) -> None:
        """Every part's teardown, then every container, network and volume with the session's label,
        then its host state. Each step runs even when one before it failed; the first failure is raised
        at the end."""
        failures = self._teardown(record, options)
        if failures:
            raise failures[0]

    def _teardown(self, record: SessionRecord, options: FinishOptions) -> list[Exception]:
        """Teardown's steps, every one of them; what failed, in order."""
        failures = self._teardown_parts(record, options)
        runtime = self.ports.runtime
        selector = {naming.SESSION: record.labels.session}
        # Each listing and each removal on its own: one refusal stops no other step.
        listings: list[Callable[[], list[Callable[[], None]]]] = [
            lambda: [partial(runtime.remove_container, c.id) for c in runtime.containers(selector)],
            lambda: [partial(runtime.remove_network, n.name) for n in runtime.networks(selector)],
            lambda: [partial(runtime.remove_volume, v.name) for v in runtime.volumes(selector)],
            lambda: [partial(self.ports.host.remove, record.state_dir)],
        ]
        for listing in listings:
            for step in _attempt(record, listing, failures) or []:
                _attempt(record, step, failures)
        return failures

    def _teardown_parts(self, record: SessionRecord, options: FinishOptions) -> list[Exception]:
        failures: list[Exception] = []
        for part in reversed(self.parts):
            try:
                part.teardown(self.ports, record, options)
            except Exception as exc:
                log.warning("teardown of %s (%s): %s", record.name, part.role, exc, exc_info=True)
                failures.append(exc)
        return failures

    # -- sessions on the engine

    def sessions(self, scope: Mapping[str, str] | None = None, *, reasons: bool = True) -> list[SessionRow]:
        """Every session's agent container, or only those carrying all of ``scope``'s labels; with
        ``reasons``, each one that ContainAI stopped says why."""
        rows = []
        for container in self.ports.runtime.containers({**(scope or {}), naming.ROLE: "agent"}):
            labels = SessionLabels.parse(container.labels)
            stopped = (
                None
                if container.running or not labels.session or not reasons
                else self.ports.watchdog.stopped(self.ports.host.root / labels.session, container.name)
            )
            rows.append(
                SessionRow(
                    name=container.name,
                    agent=labels.agent,
                    repo=labels.repo,
                    branch=labels.branch,
                    status=container.status,
                    mode=labels.mode,
                    created=labels.created,
                    session=labels.session,
                    stopped=stopped,
                )
            )
        return sorted(rows, key=lambda r: r.created)

    def gc(
        self,
        *,
        policy: GatePolicy = DEFAULT_GATE,
        scope: Mapping[str, str] | None = None,
        bounds: Bounds | None = None,
    ) -> list[str]:
        """Remove what dead sessions left behind; bring home the work of dead ephemeral sessions first.

        With ``scope``, only sessions whose resources carry all of its labels are looked at.
        """
        runtime = self.ports.runtime
        # Every resource of a session carries all its labels: a session killed before its agent's
        # container existed is still known (its repository, its reserved branch) from a volume.
        sessions: dict[str, Mapping[str, str]] = {}
        agents: dict[str, ContainerInfo] = {}
        selector = {naming.SESSION: "", **(scope or {})}  # a scope may name one session
        found: list[ContainerInfo | VolumeInfo | NetworkInfo] = [
            *runtime.containers(selector),
            *runtime.volumes(selector),
            *runtime.networks(selector),
        ]
        for item in found:
            sid = item.labels.get(naming.SESSION, "")
            if len(item.labels) > len(sessions.get(sid, {})):
                sessions[sid] = item.labels
            if isinstance(item, ContainerInfo) and item.labels.get(naming.ROLE) == "agent":
                agents[sid] = item
        removed = []
        options = FinishOptions(push=True, keep_branch=False, policy=policy, bounds=bounds or Bounds())
        for sid in sorted(s for s in sessions if s):
            agent = agents.get(sid)
            # One session that cannot end stops no other: its failure is reported, and gc goes on.
            try:
                if agent is not None:
                    labels = SessionLabels.parse(agent.labels)
                    if labels.mode == "persistent" or self.ports.host.launcher_alive(labels.launcher):
                        continue
                    result = self.finish(agent.name, options)
                    if result.kept:
                        self.ports.reporter.warn(result.message)
                        continue
                    self.ports.reporter.note(f"{agent.name}: {result.message}")
                    for warning in result.warnings:
                        self.ports.reporter.warn(f"{agent.name}: {warning}")
                else:
                    labels = SessionLabels.parse(sessions[sid])
                    self.teardown(SessionRecord(sid, labels, self.ports.host.root / sid), FinishOptions())
            except Exception as exc:
                log.warning("gc of %s failed", sid, exc_info=True)
                self.ports.reporter.warn(f"session {sid} could not be removed: {_reason(exc)}")
                continue
            removed.append(sid)
        removed += self._gc_unborn(set(sessions), scope or {})
        return removed

    def _gc_unborn(self, known: set[str], scope: Mapping[str, str]) -> list[str]:
        """Sessions recorded on the host with nothing on the engine, whose launcher died: killed
        between reserving the branch and creating their first resource. Only this engine's."""
        removed = []
        for state_dir, text in self.ports.host.recorded(SESSION_FILE):
            try:
                data = json.loads(text)
                engine, found = data["engine"], dict(data["labels"])
            except (ValueError, KeyError, TypeError):
                log.warning("gc: %s is not a session record; left alone", state_dir / SESSION_FILE)
                continue
            sid = found.get(naming.SESSION, "")
            if sid != state_dir.name or sid in known or engine != self.ports.runtime.choice.base_url:
                continue
            if any(found.get(key) != value for key, value in scope.items()):
                continue
            labels = SessionLabels.parse(found)
            if self.ports.host.launcher_alive(labels.launcher):
                continue
            self.teardown(SessionRecord(sid, labels, state_dir), FinishOptions())
            removed.append(sid)
        return removed


T = TypeVar("T")


def _reason(exc: Exception) -> str:
    """An error as one line for the user; an engine's or a program's words made printable."""
    return printable(exc.message if isinstance(exc, ContainAIError) else f"{type(exc).__name__}: {exc}")


def _attempt(record: SessionRecord, step: Callable[[], T], failures: list[Exception]) -> T | None:
    """Run one step of a teardown; a failure is logged and added to ``failures``, not raised."""
    try:
        return step()
    except Exception as exc:
        log.warning("teardown of %s: %s", record.name, exc, exc_info=True)
        failures.append(exc)
        return None


@dataclass(frozen=True)
class SessionRow:
    name: str
    agent: str
    repo: str
    branch: str
    status: str
    mode: str
    created: str
    session: str
    stopped: str | None = None  # why ContainAI stopped it (its disk cap), for the user

    @property
    def resumable(self) -> bool:
        """A persistent session whose container stopped (the engine restarted): connect-agent resumes it."""
        return self.mode == "persistent" and self.status != "running"

    def age(self, now: datetime) -> str:
        try:
            seconds = int((now - datetime.fromisoformat(self.created)).total_seconds())
        except ValueError:
            return "?"
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


# -- the local wiring, for the commands --------------------------------------------------------------


def local(runtime: ContainerRuntime, state_root: Path, reporter: Reporter | None = None) -> SessionManager:
    return SessionManager(Ports.local(runtime, state_root=state_root, reporter=reporter))


def plan(
    runtime: ContainerRuntime,
    request: SessionRequest,
    *,
    repo: RepoInfo | None,
    state_root: Path,
    reporter: Reporter,
    mcp_servers: Sequence[McpServer] = (),
) -> SessionPlan:
    return local(runtime, state_root, reporter).plan(request, repo=repo, mcp_servers=mcp_servers)


def provision(runtime: ContainerRuntime, plan: SessionPlan, reporter: Reporter) -> None:
    local(runtime, plan.state_dir.parent, reporter).provision(plan)


def rollback(runtime: ContainerRuntime, plan: SessionPlan) -> None:
    local(runtime, plan.state_dir.parent).rollback(plan)


def finish(
    runtime: ContainerRuntime,
    name: str,
    *,
    push: bool,
    keep_branch: bool,
    state_root: Path,
    policy: GatePolicy = DEFAULT_GATE,
    bounds: Bounds | None = None,
) -> FinishResult:
    return local(runtime, state_root).finish(
        name, FinishOptions(push=push, keep_branch=keep_branch, policy=policy, bounds=bounds or Bounds())
    )


def list_sessions(
    runtime: ContainerRuntime, scope: Mapping[str, str] | None = None, *, state_root: Path | None = None
) -> list[SessionRow]:
    """The sessions; with ``state_root`` (where the reasons are), each one ContainAI stopped says why."""
    steps = SessionManager(Ports.local(runtime, state_root=state_root or Path()))
    return steps.sessions(scope, reasons=state_root is not None)


def gc(
    runtime: ContainerRuntime,
    *,
    state_root: Path,
    reporter: Reporter,
    policy: GatePolicy = DEFAULT_GATE,
    scope: Mapping[str, str] | None = None,
    bounds: Bounds | None = None,
) -> list[str]:
    return local(runtime, state_root, reporter).gc(policy=policy, scope=scope, bounds=bounds)


def agent_environment(plan: SessionPlan) -> dict[str, str]:
    return dict(plan.environment)


def run_interactive(runtime: ContainerRuntime, plan: SessionPlan, argv: Sequence[str]) -> int:
    return runtime.exec(plan.name, agent_exec(plan, argv, tty=True))


def run_streamed(
    runtime: ContainerRuntime, plan: SessionPlan, argv: Sequence[str], on_output: Callable[[str, bytes], None]
) -> int:
    return runtime.exec(plan.name, agent_exec(plan, argv), on_output)


def agent_exec(plan: SessionPlan, argv: Sequence[str], *, tty: bool = False) -> ExecSpec:
    """A command as the agent runs it: its user, its environment, in the workspace."""
    return ExecSpec(
        tuple(argv), user=plan.user, environment=agent_environment(plan), workdir=WORKSPACE, tty=tty
    )
