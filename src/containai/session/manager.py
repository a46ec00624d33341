"""Running sessions: provision, attach or prompt, bring the work home, tear down. Engine I/O lives here.

Work is never lost: if the export or the import fails, the container and its workspace stay, and the
user is told how to retry (`remove-agent NAME`). Everything a session creates carries its session
label, so a crashed launcher's leftovers are found by `containai gc`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from containai.agents.definition import AgentDef
from containai.broker import session as session_broker
from containai.broker.session import BrokerPaths
from containai.egress import approvals, sidecar
from containai.egress.policy import resolve_policy
from containai.egress.sidecar import Lab, plan_egress
from containai.egress.squid import summarize_denials
from containai.errors import ContainAIError, ImageMissing, SessionError, UsageError
from containai.gateway import sidecar as gateway_sidecar
from containai.gateway.login import ClaudeLogin
from containai.mcp.config import McpServer
from containai.runtime.base import ContainerInfo, ContainerRuntime, ContainerSpec, Mount
from containai.secrets.value import Secret
from containai.session import naming
from containai.session.mcp import agent_files, mcp_hosts, plan_mcp, start_stub
from containai.session.mcp import mounts as mcp_mounts
from containai.session.mcp import tmpfs as mcp_tmpfs
from containai.session.naming import SessionLabels, container_name, new_session_id
from containai.session.plan import (
    CACHE,
    EXPORT_BUNDLE,
    REPO_MOUNT,
    VSCODE_SERVER,
    WORKSPACE,
    Resources,
    SessionPlan,
    choose_workspace,
    hardened_spec,
    render_setup_script,
)
from containai.session.repo import BranchChoice, RepoInfo, branch_sha, choose_branch, delete_branch_if_at, git
from containai.workspace.gate import (
    GatePolicy,
    ImportResult,
    import_bundle,
    render_export_script,
    worktrees_with,
)

log = logging.getLogger("containai.session")

MAX_BUNDLE_BYTES = 2 * 2**30
DEFAULT_GATE = GatePolicy()


class Reporter(Protocol):
    def note(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


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
    resources: Resources = field(default_factory=lambda: Resources(8 * 2**30, 2 * 10**9))
    workspace_mode: str | None = None  # CONTAINAI_WORKSPACE
    allow_domains: tuple[str, ...] = ()  # --allow-domain
    network: NetworkSettings = field(default_factory=lambda: NetworkSettings())
    lab: Lab | None = None  # CONTAINAI_EGRESS_LAB (tests)
    approvals_file: Path | None = None  # domains the user approved for repositories
    credential: Secret | None = None  # the agent's model API key, for its gateway (never in its container)
    login: ClaudeLogin | None = None  # or the CLI's own login on the host, refreshed there by the broker
    gateway_upstream: str | None = None  # CONTAINAI_GATEWAY_UPSTREAM: another API endpoint
    gate: GatePolicy = DEFAULT_GATE  # CONTAINAI_GATE_MAX_BLOB
    scope: Mapping[str, str] = field(default_factory=dict)  # --label / CONTAINAI_LABELS


@dataclass(frozen=True)
class NetworkSettings:
    """The user's ``[network]`` settings (config.toml)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()


@dataclass(frozen=True)
class FinishResult:
    imported: ImportResult | None
    kept: bool  # the container and workspace were kept because bringing the work home failed
    message: str
    egress: str | None = None  # what the proxy blocked, and how to allow it
    proxy_failure: str | None = None  # the proxy stopped during the session


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def launcher_alive(label: str) -> bool:
    """Whether the process named by a ``launcher`` label (``<boot id>:<pid>``) still runs here."""
    boot, _, pid = label.rpartition(":")
    if boot != boot_id() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def git_identity(repo: RepoInfo | None) -> tuple[str, str]:
    """The host user's name and e-mail for the agent's commits (values only; no config file goes in)."""
    if repo is None:
        return "ContainAI agent", "agent@containai.invalid"
    name = git(repo.root, "config", "user.name", check=False).strip() or "ContainAI agent"
    email = git(repo.root, "config", "user.email", check=False).strip() or "agent@containai.invalid"
    return name, email


def _owner(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_uid, stat.st_gid


def plan(
    runtime: ContainerRuntime,
    request: SessionRequest,
    *,
    repo: RepoInfo | None,
    state_root: Path,
    reporter: Reporter,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    mcp_servers: Sequence[McpServer] = (),
) -> SessionPlan:
    """Decide everything, and reserve the branch on the host (the only host change before launch)."""
    info = runtime.info()
    image = request.agent.image_ref(request.channel)
    if runtime.image(image) is None:
        part = request.agent.image
        raise ImageMissing(
            image,
            build_hint=f"build it: `containai images build --channel {request.channel} --agents {part}`"
            if "/" not in part and ":" not in part
            else f"pull or build {image}",
        )
    push = request.push and repo is not None
    if repo is not None and repo.dirty and not request.force:
        shown = ", ".join(repo.dirty[:5]) + (
            f" and {len(repo.dirty) - 5} more" if len(repo.dirty) > 5 else ""
        )
        raise UsageError(
            f"{repo.root} has uncommitted changes: {shown}",
            hint="commit or stash them first, or pass --force to launch anyway",
        )
    local = runtime.choice.base_url.startswith("unix://")
    workspace = choose_workspace(
        repo,
        owner=_owner(repo.root) if repo else None,
        local_engine=local,
        rootless=info.rootless,
        forced=request.workspace_mode,
    )
    # Decided before the branch is reserved: a bad domain must not leave a branch behind.
    session_id = new_session_id()
    policy = None
    if request.network_proxy == "squid":
        requested = approvals.repo_requests(repo.root) if repo else ()
        ok = approvals.approved(request.approvals_file, repo.root) if repo and request.approvals_file else ()
        waiting = [d for d in requested if d not in ok]
        if waiting and repo is not None:
            reporter.warn(
                f"{repo.root} asks to reach {', '.join(waiting)}; not allowed until you approve: "
                f"`containai network approve {repo.root} {' '.join(waiting)}`"
            )
        policy = resolve_policy(
            session=session_id,
            agent_endpoints={request.agent.name: request.agent.endpoints},
            presets=request.network.presets,
            # The user's MCP URL servers, and the repository's ones the user approved, are reachable.
            config_allow=request.network.allow + mcp_hosts(mcp_servers),
            config_deny=request.network.deny,
            cli_allow=request.allow_domains,
            repo_requested=requested,
            repo_approved=ok,
        )
    branch: BranchChoice | None = None
    if repo is not None:
        branch = choose_branch(
            repo,
            request.agent.name,
            requested=request.branch,
            use_current=request.use_current_branch,
            force=request.force,
            now=now,
        )
        if branch.archived:
            reporter.note(f"archived the old {branch.name} to {branch.archived}")
    repo_name = repo.name if repo else "prompt"
    branch_name = branch.name if branch else "workspace"
    name = container_name(
        request.agent.name,
        request.name or repo_name,
        branch_name if not request.name else "",
        taken=lambda n: runtime.container(n) is not None,
    )
    labels = SessionLabels(
        session=session_id,
        agent=request.agent.name,
        repo=str(repo.root) if repo else "",
        branch=branch.name if branch else "",
        base=branch.base if branch else "",
        branch_created=branch.created if branch else False,
        scope=dict(request.scope),
        channel=request.channel,
        mode=request.mode,
        network_proxy=request.network_proxy,
        workspace=workspace.mode,
        push=push,
        launcher=f"{boot_id()}:{os.getpid()}",
        created=now().astimezone(UTC).isoformat(timespec="seconds"),
    )
    state_dir = state_root / session_id
    volume_name = f"{name}-workspace-{session_id}"
    volume_opts: dict[str, str] = {}
    if workspace.mode == "overlay" and repo is not None:
        volume_opts = {
            "type": "overlay",
            "device": "overlay",
            "o": f"lowerdir={repo.root},upperdir={state_dir / 'upper'},workdir={state_dir / 'work'}",
        }
    # VS Code's server runs from ~/.vscode-server, which must allow exec (HOME is a noexec tmpfs).
    # Programs that unpack and run code under HOME (VS Code's server, Copilot's native addon in
    # ~/.cache) need exec there, which the noexec HOME tmpfs refuses: each gets a session volume.
    mounts = [
        Mount(WORKSPACE, volume_name, "volume"),
        Mount(VSCODE_SERVER, f"{name}-vscode-{session_id}", "volume"),
        Mount(CACHE, f"{name}-cache-{session_id}", "volume"),
    ]
    if repo is not None:
        mounts.append(Mount(REPO_MOUNT, str(repo.root), "bind", read_only=True))
    environment = {
        "HOME": "/home/agent",
        "TERM": os.environ.get("TERM", "xterm-256color"),
        "CONTAINAI_SESSION": session_id,
        "CONTAINAI_AGENT": request.agent.name,
        "CONTAINAI_BRANCH": branch.name if branch else "",
        "CONTAINAI_NETWORK_PROXY": request.network_proxy,
        **request.agent.set_env,
    }
    egress = None
    if policy is not None:
        egress = plan_egress(
            session_name=name,
            session_id=session_id,
            labels=labels.for_role("proxy"),
            channel=request.channel,
            policy=policy,
            state_dir=state_dir,
            lab=request.lab,
        )
        mounts += sidecar.agent_mounts(egress)
        environment.update(sidecar.agent_environment())
    gateway_spec, gateway_volume = None, ""
    has_credential = request.credential is not None or request.login is not None
    if egress is not None and request.agent.gateway is not None and has_credential:
        gateway_spec, gateway_volume = gateway_sidecar.plan_gateway(
            session_name=name,
            session_id=session_id,
            labels=labels.for_role("gateway"),
            channel=request.channel,
            gateway=request.agent.gateway,
            egress_volume=egress.socket_volume,
            upstream=request.gateway_upstream,
            follow=request.login is not None,
        )
        mounts += gateway_sidecar.agent_mounts(gateway_volume)
        environment.update(gateway_sidecar.agent_environment(request.agent.gateway))
    # The session's broker on the host, for its MCP servers and for a host login fed to the gateway.
    broker_paths = BrokerPaths.for_session(
        state_dir, broker_audit_file(state_root, name, session_id), os.environ
    )
    mcp = plan_mcp(mcp_servers, broker=broker_paths, agent_uid=workspace.uid)
    if mcp is not None:
        mounts += mcp_mounts(mcp)
    needs_broker = mcp is not None or (request.login is not None and gateway_spec is not None)
    container = hardened_spec(
        image=image,
        name=name,
        command=["/usr/local/bin/containai-entrypoint", "--hold"],
        labels=labels.for_role("agent"),
        uid=workspace.uid,
        gid=workspace.gid,
        mounts=mounts,
        resources=request.resources,
        environment=environment,
        network_mode="none",
        extra_tmpfs=mcp_tmpfs(mcp),
    )
    git_name, git_email = git_identity(repo)
    return SessionPlan(
        session_id=session_id,
        name=name,
        agent=request.agent,
        image=image,
        repo=repo,
        branch=branch,
        workspace=workspace,
        labels=labels,
        container=container,
        volume_name=volume_name,
        volume_opts=volume_opts,
        state_dir=state_dir,
        setup_script=render_setup_script(
            workspace,
            branch,
            git_name=git_name,
            git_email=git_email,
            home_files=agent_files(mcp, request.agent.mcp_config, _gateway_files(request, gateway_spec)),
        ),
        environment=environment,
        egress=egress,
        gateway=gateway_spec,
        gateway_volume=gateway_volume,
        mcp=mcp,
        broker=broker_paths if needs_broker else None,
        login=request.login if gateway_spec is not None else None,
    )


def _gateway_files(request: SessionRequest, gateway: ContainerSpec | None) -> dict[str, str]:
    """The agent's own config file that points it at the gateway, where its CLI needs one (Codex)."""
    definition = request.agent.gateway
    if gateway is None or definition is None or not definition.config_path or not definition.config:
        return {}
    return {
        definition.config_path: definition.config.replace("{base_url}", gateway_sidecar.base_url(definition))
    }


def provision(
    runtime: ContainerRuntime, plan: SessionPlan, reporter: Reporter, credential: Secret | None = None
) -> None:
    """Create the workspace and container, start it, and set up the branch. Undone whole on failure."""
    try:
        if plan.workspace.mode == "overlay":
            for part in ("upper", "work"):
                layer = plan.state_dir / part
                layer.mkdir(parents=True, exist_ok=True)
                # The overlay's root takes the upper layer's owner: it must be the agent's.
                if os.geteuid() == 0:
                    os.chown(layer, plan.workspace.uid, plan.workspace.gid)
        runtime.create_volume(
            plan.volume_name, labels=plan.labels.for_role("workspace"), driver_opts=plan.volume_opts
        )
        for mount in plan.container.mounts:
            if mount.target in (VSCODE_SERVER, CACHE):
                runtime.create_volume(mount.source, labels=plan.labels.for_role("home"))
        if plan.egress is not None:
            sidecar.start_proxy(runtime, plan.egress, plan.labels.for_role("proxy"))
        if plan.gateway is not None and plan.login is not None:
            plan.login.current()  # a refused refresh stops the launch here, with its own message
            # Created here, started by the broker, which holds its stdin to feed it renewed tokens.
            gateway_sidecar.create_gateway(
                runtime, plan.gateway, plan.gateway_volume, plan.labels.for_role("gateway")
            )
        elif plan.gateway is not None and credential is not None:
            gateway_sidecar.start_gateway(
                runtime, plan.gateway, plan.gateway_volume, plan.labels.for_role("gateway"), credential
            )
        if plan.broker is not None:
            session_broker.start(
                plan.broker,
                session=plan.session_id,
                container=plan.name,
                engine_url=runtime.choice.base_url,
                gateway=plan.gateway.name if plan.gateway is not None and plan.login is not None else None,
                login=plan.login.path if plan.login is not None else None,
            )
        runtime.create_container(plan.container)
        runtime.start(plan.name)
        if plan.egress is not None:
            sidecar.start_relay(runtime, plan.name, plan.user)
        if plan.gateway is not None:
            gateway_sidecar.start_relay(runtime, plan.name, plan.user)
        output: list[bytes] = []
        code = runtime.exec(
            plan.name,
            ["bash", "-c", plan.setup_script],
            user=plan.user,
            workdir=WORKSPACE,
            on_output=lambda _stream, data: output.append(data),
        )
        if code != 0:
            detail = [
                line for line in b"".join(output).decode("utf-8", "replace").splitlines() if line.strip()
            ]
            log.warning("workspace set-up output:\n%s", "\n".join(detail))
            first_error = next((line for line in detail if line.startswith(("fatal:", "error:"))), None)
            raise SessionError(
                f"setting up the workspace failed: {first_error or (detail[-1] if detail else f'exit {code}')}",
                hint="see the log file for the full output; nothing was changed on the host",
            )
        if plan.mcp is not None:
            start_stub(
                runtime,
                plan.mcp,
                session=plan.session_id,
                container=plan.name,
                agent_user=plan.user,
                environment=plan.environment,
            )
    except BaseException:
        teardown(runtime, plan.session_id, state_root=plan.state_dir.parent)
        release_branch(plan)
        raise
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    (plan.state_dir / READY).touch()
    reporter.note(f"session {plan.name}: {plan.workspace.reason}; branch {plan.labels.branch or '(none)'}")
    if plan.egress is not None:
        allowed = ", ".join(plan.egress.policy.allow) or "nothing"
        reporter.note(f"egress only through {plan.egress.proxy.name}, which allows: {allowed}")
    else:
        reporter.note("restricted: this session is offline (no network at all)")


def release_branch(plan: SessionPlan) -> None:
    """Drop the branch we reserved, if it still points where we created it (no work on it)."""
    if plan.repo is not None and plan.branch is not None and plan.branch.created:
        delete_branch_if_at(plan.repo.root, plan.branch.name, plan.branch.base)


def agent_environment(plan: SessionPlan) -> dict[str, str]:
    return dict(plan.environment)


def run_interactive(runtime: ContainerRuntime, plan: SessionPlan, argv: Sequence[str]) -> int:
    return runtime.exec_tty(
        plan.name, argv, user=plan.user, environment=agent_environment(plan), workdir=WORKSPACE
    )


def run_streamed(
    runtime: ContainerRuntime, plan: SessionPlan, argv: Sequence[str], on_output: Callable[[str, bytes], None]
) -> int:
    return runtime.exec(
        plan.name,
        argv,
        user=plan.user,
        environment=agent_environment(plan),
        workdir=WORKSPACE,
        on_output=on_output,
    )


READY = "ready"  # in the session's host state folder once the workspace is set up: the agent may have worked


def export_and_import(
    runtime: ContainerRuntime,
    container: ContainerInfo,
    *,
    state_root: Path,
    policy: GatePolicy = DEFAULT_GATE,
) -> ImportResult | None:
    """Commit what is uncommitted, bundle the session branch in the container, import it on the host.

    None when there is nothing to bring back: no new commits, or a session killed before its
    workspace was ready (so no agent ever ran in it).
    """
    labels = SessionLabels.parse(container.labels)
    user = container.user or "1000:1000"
    output: list[bytes] = []
    script = render_export_script(labels.branch, EXPORT_BUNDLE, base=labels.base)
    code = runtime.exec(
        container.name,
        ["bash", "-c", script],
        user=user,
        workdir=WORKSPACE,
        on_output=lambda _s, data: output.append(data),
    )
    if code == 3 and not (state_root / labels.session / READY).exists():
        return None
    if code == 0 and runtime.exec(container.name, ["test", "-s", EXPORT_BUNDLE], user=user) != 0:
        return None  # no new commits: the export wrote no bundle
    if code != 0:
        detail = b"".join(output).decode("utf-8", "replace").strip().splitlines()
        raise SessionError(
            f"exporting the work failed in {container.name}: {detail[-1] if detail else f'exit {code}'}"
        )
    with tempfile.TemporaryDirectory(prefix="containai-import-") as work:
        bundle = Path(work) / "session.bundle"
        _copy_out(runtime, container.name, EXPORT_BUNDLE, user=user, target=bundle)
        return import_bundle(
            Path(labels.repo),
            bundle,
            branch=labels.branch,
            base=labels.base,
            policy=policy,
            # The user's own branch (--use-current-branch): its work tree may move with it, when safe.
            move_worktree=not labels.branch_created,
        )


def _copy_out(runtime: ContainerRuntime, container: str, path: str, *, user: str, target: Path) -> None:
    """Copy a file out of the container through ``cat`` (streamed to disk, as the agent's user), and
    check its size: Podman's exec can lose a short-lived process's output, so a short copy is retried."""
    code, size, expected, stat = 0, 0, b"", bytearray()
    for _ in range(3):
        stat.clear()
        runtime.exec(container, ["stat", "-c", "%s", path], user=user, on_output=lambda _s, d: stat.extend(d))
        expected = bytes(stat).strip()
        if not expected.isdigit():
            continue
        size = 0
        with target.open("wb") as handle:

            def save(stream: str, data: bytes) -> None:
                nonlocal size
                if stream == "stdout":
                    size += len(data)
                    if size <= MAX_BUNDLE_BYTES:
                        handle.write(data)

            code = runtime.exec(container, ["cat", path], user=user, on_output=save)
        if code == 0 and size == int(expected) <= MAX_BUNDLE_BYTES:
            return
        if code != 0 or size > MAX_BUNDLE_BYTES:
            break
    raise SessionError(
        f"copying the work out of {container} failed (exit {code}, {size} of {expected.decode() or '?'} bytes)"
    )


def finish(
    runtime: ContainerRuntime,
    name: str,
    *,
    push: bool,
    keep_branch: bool,
    state_root: Path,
    policy: GatePolicy = DEFAULT_GATE,
) -> FinishResult:
    """Bring the session's work home (unless told not to), then remove all it created."""
    container = runtime.container(name)
    if container is None:
        raise UsageError(f"no session named {name}", hint="see `list-agents`")
    labels = SessionLabels.parse(container.labels)
    imported: ImportResult | None = None
    message = (
        "the session's work was not brought back (--no-push)"
        if labels.repo
        else "no repository: nothing to bring back"
    )
    if push and labels.push and labels.repo and labels.branch:
        try:
            if not container.running:
                runtime.start(container.name)
            imported = export_and_import(runtime, container, state_root=state_root, policy=policy)
        except ContainAIError as exc:
            log.warning("export/import of %s failed: %s", name, exc, exc_info=True)
            return FinishResult(
                None,
                kept=True,
                message=f"the work was NOT brought back, so {name} and its workspace are kept: {exc.message}. "
                f"Fix the cause, then retry with `remove-agent {name}`; `remove-agent {name} --no-push` discards it",
            )
        message = describe_import(imported, labels.base) if imported else f"no new commits on {labels.branch}"
    egress, proxy_failure = _egress_record(runtime, name, labels, state_root)
    teardown(runtime, labels.session, state_root=state_root)
    if labels.repo and labels.branch and labels.branch_created and not keep_branch:
        repo = Path(labels.repo)
        if branch_sha(repo, labels.branch) == labels.base and not worktrees_with(
            repo, f"refs/heads/{labels.branch}"
        ):
            # Nothing was done on the branch we reserved: do not leave an empty branch behind. Only a
            # branch ContainAI created goes, and never one checked out in a work tree.
            delete_branch_if_at(repo, labels.branch, labels.base)
    return FinishResult(imported, kept=False, message=message, egress=egress, proxy_failure=proxy_failure)


def egress_log_file(state_root: Path, name: str, session: str) -> Path:
    """Where a finished session's egress audit is kept on the host (`containai logs NAME --egress`)."""
    return state_root.parent / "session-logs" / f"{name}-{session}.egress.jsonl"


def broker_audit_file(state_root: Path, name: str, session: str) -> Path:
    """Where a session's secret-broker audit is kept on the host (fingerprints, never values)."""
    return state_root.parent / "session-logs" / f"{name}-{session}.broker.jsonl"


def _egress_record(
    runtime: ContainerRuntime, name: str, labels: SessionLabels, state_root: Path
) -> tuple[str | None, str | None]:
    """Keep the proxy's audit on the host, summarise what it blocked, and say if squid had died."""
    proxy = runtime.container(f"{name}-proxy")
    if proxy is None or proxy.labels.get(naming.SESSION) != labels.session:
        return None, None
    failure = None
    if not proxy.running:
        code = proxy.exit_code
        failure = (
            f"the egress proxy {proxy.name} stopped during the session (exit {code}): "
            "from then on the agent had no network at all"
        )
    text = sidecar.audit_text(runtime, proxy.name)
    kept = egress_log_file(state_root, name, labels.session)
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(text, encoding="utf-8")
    return summarize_denials(sidecar.parse_audit(text)), failure


def describe_import(result: ImportResult, base: str) -> str:
    if result.diverged:
        return (
            f"{result.commits} commit(s) brought back to a new branch {result.branch}, because "
            f"{result.diverged_reason or 'the session branch could not take them'} "
            f"(merge it with `git merge {result.branch}`)"
        )
    if result.commits == 0:
        return f"no new commits on {result.branch}"
    if result.worktree_updated:
        return f"{result.commits} commit(s) brought back to {result.branch}, and its work tree moved forward with it"
    return f"{result.commits} commit(s) brought back to {result.branch}"


def teardown(runtime: ContainerRuntime, session_id: str, *, state_root: Path) -> None:
    """Remove every container, volume and network carrying the session's label, and its host state."""
    selector = {naming.SESSION: session_id}
    # First: the broker revokes every capability of the session as it stops.
    session_broker.stop(state_root / session_id)
    for container in runtime.containers(selector):
        runtime.remove_container(container.id)
    for network in runtime.networks(selector):
        runtime.remove_network(network.name)
    for volume in runtime.volumes(selector):
        runtime.remove_volume(volume.name)
    state = state_root / session_id
    if state.exists():
        # Overlay upper layers hold files the agent created, under its uid: remove as a tree.
        subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False)


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

    def age(self, now: datetime) -> str:
        try:
            seconds = int((now - datetime.fromisoformat(self.created)).total_seconds())
        except ValueError:
            return "?"
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


def list_sessions(runtime: ContainerRuntime, scope: Mapping[str, str] | None = None) -> list[SessionRow]:
    """Every session's agent container, or only those carrying all of ``scope``'s labels."""
    rows = []
    for container in runtime.containers({**(scope or {}), naming.ROLE: "agent"}):
        labels = SessionLabels.parse(container.labels)
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
            )
        )
    return sorted(rows, key=lambda r: r.created)


def gc(
    runtime: ContainerRuntime,
    *,
    state_root: Path,
    reporter: Reporter,
    policy: GatePolicy = DEFAULT_GATE,
    scope: Mapping[str, str] | None = None,
) -> list[str]:
    """Remove what dead sessions left behind; bring home the work of dead ephemeral sessions first.

    With ``scope``, only sessions whose resources carry all of its labels are looked at.
    """
    sessions: dict[str, list[Mapping[str, str]]] = {}
    agents: dict[str, ContainerInfo] = {}
    selector = {**(scope or {}), naming.SESSION: ""}
    for container in runtime.containers(selector):
        sid = container.labels.get(naming.SESSION, "")
        sessions.setdefault(sid, []).append(container.labels)
        if container.labels.get(naming.ROLE) == "agent":
            agents[sid] = container
    for volume in runtime.volumes(selector):
        sessions.setdefault(volume.labels.get(naming.SESSION, ""), []).append(volume.labels)
    for network in runtime.networks(selector):
        sessions.setdefault(network.labels.get(naming.SESSION, ""), []).append(network.labels)
    removed = []
    for sid in sorted(s for s in sessions if s):
        agent = agents.get(sid)
        if agent is not None:
            labels = SessionLabels.parse(agent.labels)
            if labels.mode == "persistent" or launcher_alive(labels.launcher):
                continue
            result = finish(
                runtime, agent.name, push=True, keep_branch=False, state_root=state_root, policy=policy
            )
            if result.kept:
                reporter.warn(result.message)
                continue
            reporter.note(f"{agent.name}: {result.message}")
        else:
            teardown(runtime, sid, state_root=state_root)
        removed.append(sid)
    return removed
