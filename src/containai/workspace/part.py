"""The workspace part of a session: the copy-on-write workspace, the agent's branch, the git gate.

plan: the workspace volume (an overlay of the repository, or an empty volume for a shared clone), two
exec-able HOME volumes, the repository bind-mounted read-only. provision: the overlay's layers on the
host, the volumes, the HOME script kept in the session's host folder. start: the set-up script in the
container (branch, identity, HOME files). resume, after the container restarted: the HOME script
alone (its tmpfs HOME is empty again; the workspace and its branch are as the agent left them).
finish: commit what is uncommitted, bundle the branch, import it through the gate. teardown: the
session branch ContainAI created, when nothing landed on it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from containai.errors import ContainAIError, SessionError
from containai.runtime.base import ExecSpec, Mount
from containai.session.parts import (
    BasePart,
    FinishOptions,
    PartPlan,
    PartResult,
    PlanContext,
    ResumeContext,
    SessionRecord,
)
from containai.session.plan import CACHE, EXPORT_BUNDLE, REPO_MOUNT, VSCODE_SERVER, WORKSPACE
from containai.text import last_line, printable
from containai.workspace.gate import ImportResult, render_export_script

if TYPE_CHECKING:
    from containai.session.plan import SessionPlan
    from containai.session.ports import Ports

MAX_BUNDLE_BYTES = 2 * 2**30
HOME_SCRIPT = "home.sh"  # in the session's host folder: what resume runs again in the agent's HOME


@dataclass(frozen=True)
class WorkspacePlan:
    volume: str
    volume_opts: dict[str, str]
    home_volumes: tuple[str, ...]
    overlay: bool


class WorkspacePart(BasePart[WorkspacePlan]):
    role = "workspace"
    holds_work = True

    def plan(self, ctx: PlanContext) -> PartPlan[WorkspacePlan]:
        volume = f"{ctx.name}-workspace-{ctx.session_id}"
        overlay = ctx.workspace.mode == "overlay" and ctx.repo is not None
        opts: dict[str, str] = {}
        if overlay and ctx.repo is not None:
            opts = {
                "type": "overlay",
                "device": "overlay",
                "o": f"lowerdir={ctx.repo.root},upperdir={ctx.state_dir / 'upper'},workdir={ctx.state_dir / 'work'}",
            }
        # Programs that unpack and run code under HOME (VS Code's server, Copilot's native addon in
        # ~/.cache) need exec there, which the noexec HOME tmpfs refuses: each gets a session volume.
        home = (f"{ctx.name}-vscode-{ctx.session_id}", f"{ctx.name}-cache-{ctx.session_id}")
        mounts = [
            Mount(WORKSPACE, volume, "volume"),
            Mount(VSCODE_SERVER, home[0], "volume"),
            Mount(CACHE, home[1], "volume"),
        ]
        if ctx.repo is not None:
            mounts.append(Mount(REPO_MOUNT, str(ctx.repo.root), "bind", read_only=True))
        return PartPlan(self.role, WorkspacePlan(volume, opts, home, overlay), mounts=tuple(mounts))

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[WorkspacePlan]) -> None:
        plan = planned.detail
        if plan.overlay:
            ports.host.prepare_layers(session.state_dir, session.workspace.uid, session.workspace.gid)
        ports.runtime.create_volume(
            plan.volume, labels=session.labels.for_role("workspace"), driver_opts=plan.volume_opts
        )
        for volume in plan.home_volumes:
            ports.runtime.create_volume(volume, labels=session.labels.for_role("home"))
        if session.labels.mode == "persistent":
            ports.host.write_text(session.state_dir / HOME_SCRIPT, session.home_script, 0o600)

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[WorkspacePlan]) -> None:
        run_setup(
            ports, session.name, session.setup_script, user=session.user, what="setting up the workspace"
        )

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        if not ctx.restarted:
            return  # HOME is as the agent left it
        record = ctx.record
        script = ports.host.read_text(record.state_dir / HOME_SCRIPT)
        if script is None:
            raise SessionError(
                f"cannot resume {record.name}: its HOME set-up ({record.state_dir / HOME_SCRIPT}) is missing",
                hint=f"`remove-agent {record.name}` brings its work home",
            )
        user = (record.container.user if record.container is not None else "") or "1000:1000"
        run_setup(ports, record.name, script, user=user, what="setting up the agent's HOME again")

    def finish(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> PartResult:
        labels = record.labels
        if not labels.repo:
            return PartResult(self.role, message="no repository: nothing to bring back")
        if not (options.push and labels.push and labels.branch):
            return PartResult(self.role, message="the session's work was not brought back (--no-push)")
        try:
            if record.container is not None and not record.container.running:
                ports.runtime.start(record.name)
            imported = export_and_import(ports, record, options)
        except ContainAIError as exc:
            name = record.name
            return PartResult(
                self.role,
                keep=True,
                message=f"the work was NOT brought back, so {name} and its workspace are kept: {exc.message}. "
                f"Fix the cause, then retry with `remove-agent {name}`; `remove-agent {name} --no-push` discards it",
                detail=exc,  # the reason, for `--json`
            )
        message = describe_import(imported) if imported else f"no new commits on {labels.branch}"
        return PartResult(self.role, message=message, detail=imported)

    def teardown(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> None:
        labels = record.labels
        if not (labels.repo and labels.branch and labels.branch_created) or options.keep_branch:
            return
        repo = Path(labels.repo)
        # Nothing was done on the branch we reserved: do not leave an empty branch behind. Only a
        # branch ContainAI created goes, and never one checked out in a work tree.
        if ports.git.branch_sha(repo, labels.branch) == labels.base and not ports.git.checked_out(
            repo, labels.branch
        ):
            ports.git.delete_branch_if_at(repo, labels.branch, labels.base)


def run_setup(ports: Ports, container: str, script: str, *, user: str, what: str) -> None:
    output: list[bytes] = []
    code = ports.runtime.exec(
        container,
        ExecSpec(("bash", "-c", script), user=user, workdir=WORKSPACE),
        on_output=lambda _stream, data: output.append(data),
    )
    if code != 0:
        detail = [line for line in b"".join(output).decode("utf-8", "replace").splitlines() if line.strip()]
        first_error = next((line for line in detail if line.startswith(("fatal:", "error:"))), None)
        shown = printable(first_error or (detail[-1] if detail else f"exit {code}"))
        raise SessionError(
            f"{what} failed: {shown}",
            hint="see the log file for the full output; nothing was changed on the host",
        )


@dataclass(frozen=True)
class Unexported:
    """What `--no-push` would discard: commits on the session branch since its base, changed files."""

    commits: tuple[str, ...]  # "<short sha> <subject>", newest first, printable
    changed: tuple[str, ...]  # paths with uncommitted changes (untracked included), printable

    def __bool__(self) -> bool:
        return bool(self.commits or self.changed)


UNEXPORTED_LIMIT = 50


def unexported_work(ports: Ports, record: SessionRecord) -> Unexported:
    """Ask the session's workspace (read only, hooks off) what has not been brought home."""
    labels = record.labels
    if not labels.branch or record.container is None:
        return Unexported((), ())
    user = record.container.user or "1000:1000"
    git = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]

    def lines(argv: list[str]) -> tuple[str, ...]:
        output: list[bytes] = []
        code = ports.runtime.exec(
            record.name,
            ExecSpec(tuple(argv), user=user, workdir=WORKSPACE),
            on_output=lambda s, d: output.append(d) if s == "stdout" else None,
        )
        if code != 0:
            raise SessionError(f"could not read the workspace of {record.name} (git exit {code})")
        text = b"".join(output).decode("utf-8", "surrogateescape")
        return tuple(printable(line) for line in text.split("\0" if "-z" in argv else "\n") if line.strip())

    if not record.container.running:
        ports.runtime.start(record.name)
    since = (
        [f"refs/heads/{labels.branch}", f"^{labels.base}"] if labels.base else [f"refs/heads/{labels.branch}"]
    )
    commits = lines([*git, "log", "--format=%h %s", f"--max-count={UNEXPORTED_LIMIT}", *since, "--"])
    changed = lines([*git, "status", "--porcelain=v1", "-z", "--untracked-files=all"])
    return Unexported(commits, tuple(entry[3:] if len(entry) > 3 else entry for entry in changed))


def export_and_import(ports: Ports, record: SessionRecord, options: FinishOptions) -> ImportResult | None:
    """Commit what is uncommitted, bundle the session branch in the container, import it on the host.

    None when there is nothing to bring back: no new commits, or a session killed before its
    workspace was ready (so no agent ever ran in it).
    """
    labels = record.labels
    runtime = ports.runtime
    user = (record.container.user if record.container is not None else "") or "1000:1000"
    output: list[bytes] = []
    script = render_export_script(labels.branch, EXPORT_BUNDLE, base=labels.base)
    code = runtime.exec(
        record.name,
        ExecSpec(("bash", "-c", script), user=user, workdir=WORKSPACE),
        on_output=lambda _s, data: output.append(data),
    )
    if code == 3 and not ports.host.is_ready(record.state_dir):
        return None
    if code == 0 and runtime.exec(record.name, ExecSpec(("test", "-s", EXPORT_BUNDLE), user=user)) != 0:
        return None  # no new commits: the export wrote no bundle
    if code != 0:
        # The export's output is the agent's to shape: only its last line, made printable, is shown.
        shown = last_line(b"".join(output)) or f"exit {code}"
        raise SessionError(f"exporting the work failed in {record.name}: {shown}")
    with tempfile.TemporaryDirectory(prefix="containai-import-") as work:
        bundle = Path(work) / "session.bundle"
        copy_out(ports, record.name, EXPORT_BUNDLE, user=user, target=bundle)
        return ports.git.import_bundle(
            Path(labels.repo),
            bundle,
            branch=labels.branch,
            base=labels.base,
            policy=options.policy,
            # The user's own branch (--use-current-branch): its work tree may move with it, when safe.
            move_worktree=not labels.branch_created,
        )


def copy_out(ports: Ports, container: str, path: str, *, user: str, target: Path) -> None:
    """Copy a file out of the container through ``cat`` (streamed to disk, as the agent's user), and
    check its size: Podman's exec can lose a short-lived process's output, so a short copy is retried."""
    runtime = ports.runtime
    code, size, expected, stat = 0, 0, b"", bytearray()
    for _ in range(3):
        stat.clear()
        runtime.exec(container, ExecSpec(("stat", "-c", "%s", path), user=user), lambda _s, d: stat.extend(d))
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

            code = runtime.exec(container, ExecSpec(("cat", path), user=user), save)
        if code == 0 and size == int(expected) <= MAX_BUNDLE_BYTES:
            return
        if code != 0 or size > MAX_BUNDLE_BYTES:
            break
    raise SessionError(
        f"copying the work out of {container} failed (exit {code}, {size} of {printable(expected) or '?'} bytes)"
    )


def describe_import(result: ImportResult) -> str:
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
