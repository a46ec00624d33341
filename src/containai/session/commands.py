"""The session commands behind the launchers: run, launch, connect, list, remove, gc.

Each takes its inputs as arguments and returns an exit code or a result; the CLI only parses flags
and renders.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from containai import trust
from containai.config import Paths
from containai.egress import sidecar
from containai.errors import EXIT_CONTAINAI, EXIT_WORK_KEPT, UsageError
from containai.hostgit import HostGit
from containai.mcp.config import McpServer, repo_servers, resolve_mcp_servers
from containai.runtime.base import ContainerRuntime, ExecSpec
from containai.secrets.store import default_sources, resolve_secret
from containai.secrets.value import Secret
from containai.session import manager, naming
from containai.session.disk import stop_reason
from containai.session.manager import Reporter, SessionRequest
from containai.session.plan import WORKSPACE, SessionPlan
from containai.session.repo import RepoInfo, discover_repo, protected_directories, validate_branch
from containai.session.vscode import user_home, write_attach_config
from containai.text import printable

TMUX_SESSION = "agent"


class Hangup(BaseException):
    """SIGTERM or SIGHUP reached the launcher: finish the session (bring the work home), then exit."""


@contextmanager
def finish_on_signals() -> Iterator[None]:
    def raise_hangup(signum: int, _frame: FrameType | None) -> None:
        raise Hangup(signum)

    previous = {sig: signal.signal(sig, raise_hangup) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class PromptResult:
    exit_status: int
    session: str
    session_id: str
    workspace: str
    branch: str | None
    commits: int
    diffstat: str
    duration_seconds: float
    kept: bool
    message: str
    egress: str | None
    kept_reason: str | None = None


def _diffstat(plan: SessionPlan, branch: str | None) -> str:
    if plan.repo is None or branch is None or plan.branch is None:
        return ""
    return HostGit(plan.repo.root).text(
        "diff",
        "--shortstat",
        "--no-ext-diff",
        "--no-textconv",
        plan.branch.base,
        f"refs/heads/{branch}",
        check=False,
    )


def report_finish(result: manager.FinishResult, reporter: Reporter, prefix: str = "") -> None:
    (reporter.warn if result.kept else reporter.note)(f"{prefix}{result.message}")
    for warning in result.warnings:
        reporter.warn(f"{prefix}{warning}")


def find_repo(
    repo_path: Path | None,
    cwd: Path,
    *,
    paths: Paths,
    environ: Mapping[str, str],
    branch: str | None = None,
) -> RepoInfo | None:
    """The session's repository, checked before the engine is touched or anything is created.

    Refuses, each with one line that says the fix: a path that is no repository's (a file, a bare
    repository, one with no commits), a repository that is or holds a home folder or ContainAI's own
    files, a ``--branch`` name git refuses, and a repository config that cannot be used.
    """
    owner = _owner(repo_path or cwd)
    protected = protected_directories(
        environ, extra=(paths.config_dir, paths.state_dir), owners=(owner,) if owner is not None else ()
    )
    repo = discover_repo(repo_path, cwd, protected=protected)
    if repo is None:
        return None
    if branch is not None:
        validate_branch(HostGit(repo.root), branch)
    # The repository's requests are parsed now, so a hostile file is refused before anything exists.
    trust.repo_requests(repo.root)
    repo_servers(repo.root)
    return repo


def _owner(path: Path) -> int | None:
    try:
        return path.resolve().stat().st_uid
    except OSError:
        return None


def start_session(
    runtime: ContainerRuntime, request: SessionRequest, *, paths: Paths, reporter: Reporter
) -> SessionPlan:
    repo = request.repo or find_repo(
        request.repo_path, request.cwd, paths=paths, environ=os.environ, branch=request.branch
    )
    if repo is None:
        reporter.note("no git repository here: the agent gets an empty workspace, and no work is pushed back")
    plan = manager.plan(
        runtime,
        request,
        repo=repo,
        state_root=paths.sessions_dir,
        reporter=reporter,
        mcp_servers=usable_mcp_servers(paths, repo, request, reporter),
    )
    manager.provision(runtime, plan, reporter)
    try:
        write_attach_config(plan, home=user_home(os.environ))
    except OSError as exc:  # a convenience: never a reason to fail the session
        reporter.warn(f"could not write the VS Code attach configuration: {exc}")
    return plan


def usable_mcp_servers(
    paths: Paths, repo: RepoInfo | None, request: SessionRequest, reporter: Reporter
) -> list[McpServer]:
    """The MCP servers this session starts; a warning, saying what to do, for each one it cannot."""
    resolution = resolve_mcp_servers(paths, repo.root if repo else None)
    for pending in resolution.pending:
        reporter.warn(
            f"MCP server {pending.server.name} from the repository is {pending.reason}: not started until "
            f"you approve it (`containai mcp approve {repo.root if repo else '.'}`)"
        )
    sources = default_sources(paths, os.environ)
    usable = []
    for server in resolution.servers:
        missing = [n for n in server.secret_names() if resolve_secret(n, sources) is None]
        if missing:
            reporter.warn(
                f"MCP server {server.name} needs {', '.join(missing)}, which the host does not have: not "
                f"started (store it with `containai secrets set {missing[0]}`)"
            )
        elif server.url and request.network_proxy != "squid":
            reporter.warn(f"MCP server {server.name} is a URL server: not started in an offline session")
        else:
            usable.append(server)
    return usable


def run_ephemeral(
    runtime: ContainerRuntime,
    request: SessionRequest,
    *,
    paths: Paths,
    reporter: Reporter,
    prompt: str | None,
    command: Sequence[str],
    interactive: bool,
    write: Callable[[str, bytes], None],
) -> tuple[int, PromptResult]:
    """An ephemeral session: run the agent (attached, or streamed), then bring the work home and clean up."""
    started = time.monotonic()
    plan = start_session(runtime, request, paths=paths, reporter=reporter)
    code = EXIT_CONTAINAI
    try:
        with finish_on_signals():
            if prompt is not None:
                code = manager.run_streamed(runtime, plan, plan.agent.prompt_argv(prompt), write)
            elif interactive:
                code = manager.run_interactive(runtime, plan, list(command) or list(plan.agent.command))
            elif command:
                code = manager.run_streamed(runtime, plan, list(command), write)
            else:
                raise UsageError(
                    f"{plan.agent.name} needs a terminal to run interactively",
                    hint='run it from a terminal, or give it work with --prompt "..."',
                )
    except Hangup:
        reporter.warn("stopping: bringing the session's work home first")
    finally:
        result = manager.finish(
            runtime,
            plan.name,
            push=request.push,
            keep_branch=False,
            state_root=paths.sessions_dir,
            policy=request.gate,
            bounds=request.bounds,
        )
        report_finish(result, reporter)
    imported = result.imported
    summary = PromptResult(
        exit_status=code,
        session=plan.name,
        session_id=plan.session_id,
        workspace=plan.workspace.mode,
        branch=imported.branch if imported else None,
        commits=imported.commits if imported else 0,
        diffstat=_diffstat(plan, imported.branch if imported else None),
        duration_seconds=round(time.monotonic() - started, 3),
        kept=result.kept,
        message=result.message,
        egress=result.egress,
        kept_reason=result.kept_reason,
    )
    if result.kept and code == 0:
        code = EXIT_WORK_KEPT
    return code, summary


def launch_persistent(
    runtime: ContainerRuntime,
    request: SessionRequest,
    *,
    paths: Paths,
    reporter: Reporter,
    command: Sequence[str],
) -> SessionPlan:
    """A persistent session: the agent runs in tmux inside the container and keeps working when detached."""
    plan = start_session(runtime, request, paths=paths, reporter=reporter)
    argv = list(command) or list(plan.agent.command)
    try:
        start_tmux(
            runtime,
            plan.name,
            plan.agent.name,
            argv,
            user=plan.user,
            environment=manager.agent_environment(plan),
        )
    except UsageError:
        manager.rollback(runtime, plan)
        raise
    return plan


def start_tmux(
    runtime: ContainerRuntime,
    name: str,
    agent: str,
    argv: Sequence[str],
    *,
    user: str,
    environment: Mapping[str, str],
) -> None:
    """The agent in a detached tmux session in its container, in the workspace."""
    tmux = ["tmux", "new-session", "-d", "-s", TMUX_SESSION, "-x", "200", "-y", "50", "-c", WORKSPACE, "--"]
    output: list[bytes] = []
    code = runtime.exec(
        name,
        ExecSpec((*tmux, *argv), user=user, environment=dict(environment), workdir=WORKSPACE),
        on_output=lambda _s, d: output.append(d),
    )
    if code != 0:
        raise UsageError(
            f"could not start {agent} in tmux: "
            f"{printable(b''.join(output).decode(errors='replace').strip())}",
            hint="check the agent's command in its definition",
        )


def pick_session(
    runtime: ContainerRuntime,
    name: str | None,
    scope: Mapping[str, str] | None = None,
    *,
    state_root: Path | None = None,
) -> str:
    rows = manager.list_sessions(runtime, scope, state_root=state_root)
    if name:
        if not any(row.name == name for row in rows):
            raise UsageError(f"no session named {name}", hint="see `list-agents`")
        return name
    # Persistent sessions run, or are stopped and resumable (connect resumes them); one its disk
    # watchdog stopped is not resumed.
    running = [row for row in rows if row.mode == "persistent" and not row.stopped]
    if len(running) == 1:
        return running[0].name
    if not running:
        stopped = [row for row in rows if row.stopped and row.mode == "persistent"]
        if len(stopped) == 1 and stopped[0].stopped:  # the one the user means: say why it is not running
            raise UsageError(
                stopped[0].stopped, hint=f"`remove-agent {stopped[0].name}` brings its work home"
            )
        raise UsageError("no persistent session is running", hint="start one with `launch-agent AGENT`")
    raise UsageError(
        f"{len(running)} persistent sessions: {', '.join(r.name for r in running)}",
        hint="pick one with -n NAME",
    )


def resume(
    runtime: ContainerRuntime,
    name: str,
    *,
    state_root: Path,
    reporter: Reporter,
    agent_command: Callable[[str], Sequence[str]],
    credential: Callable[[str], Secret | None] = lambda _agent: None,
) -> None:
    """Bring a persistent session back (its sidecars, its broker, its container, the agent in tmux);
    a no-op for one where everything runs. ``agent_command`` gives an agent's command by its name,
    ``credential`` its model key on the host (asked only when its gateway must start again)."""
    steps = manager.local(runtime, state_root, reporter)
    record = steps.record(name)
    if record.labels.mode != "persistent":
        if record.container is not None and record.container.running:
            return
        raise UsageError(f"session {name} is not running", hint=f"`remove-agent {name}` brings its work home")
    if not steps.resume(name, credential=lambda: credential(record.labels.agent)):
        return
    # Its container started again: the agent went with its processes. The workspace is as it left it.
    container = runtime.container(name)
    start_tmux(
        runtime,
        name,
        record.labels.agent,
        agent_command(record.labels.agent),
        user=(container.user if container is not None else "") or "1000:1000",
        environment={"TERM": os.environ.get("TERM", "xterm-256color")},
    )
    reporter.note(
        f"{name} resumed: {record.labels.agent} started again on {record.labels.branch or 'its workspace'}"
    )


def connect(runtime: ContainerRuntime, name: str, *, state_root: Path | None = None) -> int:
    container = runtime.container(name)
    if container is None or not container.running:
        session = container.labels.get(naming.SESSION, "") if container is not None else ""
        stopped = stop_reason(state_root / session, name) if session and state_root else None
        if stopped is not None:
            raise UsageError(stopped, hint=f"`remove-agent {name}` brings its work home")
        raise UsageError(f"session {name} is not running", hint=f"`remove-agent {name}` brings its work home")
    user = container.user
    alive = runtime.exec(name, ExecSpec(("tmux", "has-session", "-t", TMUX_SESSION), user=user))
    if alive != 0:
        raise UsageError(
            f"the agent in {name} has exited",
            hint=f"`remove-agent {name}` brings its work home and cleans up",
        )
    env = {"TERM": os.environ.get("TERM", "xterm-256color")}
    attach = ("tmux", "attach-session", "-t", TMUX_SESSION)
    return runtime.exec(name, ExecSpec(attach, user=user, environment=env, tty=True))


def now_utc() -> datetime:
    return datetime.now(UTC)


def refusal(runtime: ContainerRuntime, name: str, *, state_root: Path) -> dict[str, Any]:
    """What the git gate refused in session ``name`` (kept while the session is), as saved at finish."""
    from containai.workspace.part import REFUSED_RECORD

    container = runtime.container(name)
    session = container.labels.get(naming.SESSION, "") if container is not None else ""
    if container is None or container.labels.get(naming.ROLE) != "agent" or not session:
        raise UsageError(f"no session named {name}", hint="see `list-agents` for the sessions there are")
    path = state_root / session / REFUSED_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"the git gate refused nothing in {name}", hint=f"`remove-agent {name}` brings its work home"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a refusal record", hint="remove it and retry `remove-agent`")
    return data


def egress_audit(
    runtime: ContainerRuntime, name: str, *, state_root: Path, max_bytes: int
) -> sidecar.AuditCopy:
    """The egress audit of a session: from its proxy while it runs (at most ``max_bytes``, the newest),
    from the host copy afterwards (which finish capped when it wrote it)."""
    proxy = runtime.container(f"{name}-proxy")
    if proxy is not None:
        return sidecar.read_audit(runtime, proxy.name, max_bytes=max_bytes)
    kept = sorted((state_root.parent / "session-logs").glob(f"{name}-*.egress.jsonl"))
    if not kept:
        raise UsageError(f"no egress log for {name}", hint="see `list-agents` for running sessions")
    return read_kept_audit(kept[-1], max_bytes=max_bytes)


def read_kept_audit(path: Path, *, max_bytes: int) -> sidecar.AuditCopy:
    """The host's copy of an audit: capped when finish wrote it, but one kept by an older ContainAI
    may be larger, so no more than ``max_bytes`` of its end (whole lines) is read."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size <= max_bytes:
            handle.seek(0)
            return sidecar.AuditCopy.parse(handle.read().decode("utf-8", "replace"))
        handle.seek(size - max_bytes)
        tail = handle.read()
    cut = tail.find(b"\n") + 1  # the first line is the end of one left out
    return sidecar.AuditCopy(tail[cut:].decode("utf-8", "replace"), size - max_bytes + cut, max_bytes)


@dataclass(frozen=True)
class BrokerAudit:
    """Where a session's broker audit is, and whether its broker has stopped (so it must be closed)."""

    path: Path
    finished: bool


def broker_audit(runtime: ContainerRuntime, name: str, *, state_root: Path) -> BrokerAudit:
    """The broker audit of session ``name``: its container's while that exists, else the newest kept."""
    logs = state_root.parent / "session-logs"
    container = runtime.container(name)
    session = container.labels.get(naming.SESSION, "") if container is not None else ""
    if container is not None and container.labels.get(naming.ROLE) == "agent" and session:
        path = manager.broker_audit_file(state_root, name, session)
        if not path.exists():
            raise UsageError(
                f"session {name} has no broker audit",
                hint="a session has a secret broker only when it gives MCP servers host secrets",
            )
        # The broker stops with its container: a stopped one's log must end with the close line.
        return BrokerAudit(path, finished=not container.running)
    suffix = ".broker.jsonl"
    kept = [
        path
        for path in logs.glob(f"{name}-*{suffix}")
        # Only this name's sessions: "{name}-{id}", not another session whose name starts with it.
        if _is_session_id(path.name.removeprefix(f"{name}-").removesuffix(suffix))
    ]
    if not kept:
        raise UsageError(
            f"no broker audit for a session named {name}",
            hint="see `list-agents` for running sessions; finished ones keep theirs in "
            f"{logs} ({name}-SESSIONID{suffix})",
        )
    return BrokerAudit(max(kept, key=lambda path: path.stat().st_mtime), finished=True)


def _is_session_id(text: str) -> bool:
    return len(text) == 12 and all(c in "0123456789abcdef" for c in text)
