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

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from containai.config import Bounds
from containai.errors import ContainAIError, ExecTimedOut, GateRefused, SessionError
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
from containai.text import OutputTail, last_line, printable
from containai.workspace.gate import ImportResult, Refusal, render_export_script
from containai.workspace.gitconfig import render_safe_git_config

if TYPE_CHECKING:
    from containai.session.plan import SessionPlan
    from containai.session.ports import Ports

# What the gate refused, kept in the session's host folder (gone with the session): the refused
# commits as a bundle, and why (`containai logs NAME --refused`).
REFUSED_BUNDLE = Path("refused") / "rest.bundle"
REFUSED_RECORD = Path("refused") / "refusal.json"
VSCODE_SERVER_BYTES = 2**30  # the VS Code server's tmpfs volume (a server and its extensions)
PAGE = 4096
HOME_SCRIPT = "home.sh"  # in the session's host folder: what resume runs again in the agent's HOME
# In the session's host folder: the repository's git config without its credentials (gitconfig.py),
# mounted over the real one at /repo.
SAFE_GIT_CONFIG = "repo-git-config"


@dataclass(frozen=True)
class WorkspacePlan:
    volume: str
    volume_opts: dict[str, str]
    home_volumes: tuple[str, ...]
    overlay: bool
    home_volume_opts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # by volume name
    # The repository's git config, and where an overlay's copy of it goes in the upper layer.
    git_config: Path | None = None
    upper_git_config: Path | None = None
    expose_ignored: tuple[str, ...] = ()  # ignored files the user chose to show (hide.py)


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
        # The VS Code server's is a tmpfs of a fixed size, so the engine holds it to its cap: VS Code
        # downloads its server again after a stop. The cache stays on disk, under the session's disk
        # watchdog (session/disk.py): it can be gigabytes, which on tmpfs would be the session's memory.
        # nr_blocks (pages), not size=: Podman reads a volume's size= as an XFS quota.
        home_opts = {
            home[0]: {
                "type": "tmpfs",
                "device": "tmpfs",
                "o": f"nr_blocks={VSCODE_SERVER_BYTES // PAGE},uid={ctx.workspace.uid},"
                f"gid={ctx.workspace.gid},mode=0700",
            }
        }
        mounts = [
            Mount(WORKSPACE, volume, "volume"),
            Mount(VSCODE_SERVER, home[0], "volume"),
            Mount(CACHE, home[1], "volume"),
        ]
        git_config: Path | None = None
        upper_git_config: Path | None = None
        if ctx.repo is not None:
            # Only the git directory: a shared clone reads it (see render_setup_script), and an
            # overlay's lower layer is the repository's folder itself, with what it hides (hide.py).
            # The work tree's ignored files and sockets are never mounted.
            mounts.append(Mount(REPO_MOUNT, str(ctx.repo.common_dir), "bind", read_only=True))
            # The session sees the git config without the credentials people leave in it: over the
            # real one at /repo, and in an overlay's upper layer (which hides the lower's copy).
            git_config = ctx.repo.common_dir / "config"
            mounts.append(
                Mount(f"{REPO_MOUNT}/config", str(ctx.state_dir / SAFE_GIT_CONFIG), "bind", read_only=True)
            )
            inside = _under(ctx.repo.common_dir, ctx.repo.root)
            if overlay and inside is not None:
                upper_git_config = inside / "config"
        return PartPlan(
            self.role,
            WorkspacePlan(
                volume,
                opts,
                home,
                overlay,
                home_opts,
                git_config,
                upper_git_config,
                tuple(ctx.request.expose_ignored),
            ),
            mounts=tuple(mounts),
        )

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[WorkspacePlan]) -> None:
        plan = planned.detail
        if plan.overlay:
            ports.host.prepare_layers(session.state_dir, session.workspace.uid, session.workspace.gid)
        if plan.git_config is not None:
            safe = render_safe_git_config(_read_config(ports, plan.git_config))
            ports.host.write_text(session.state_dir / SAFE_GIT_CONFIG, safe, 0o644)
            if plan.upper_git_config is not None:
                ports.host.seed_upper(
                    session.state_dir,
                    plan.upper_git_config,
                    safe,
                    session.workspace.uid,
                    session.workspace.gid,
                )
        repo = session.repo
        if plan.overlay and repo is not None:
            uid, gid = session.workspace.uid, session.workspace.gid
            hidden = ports.git.hidden_paths(repo.root, plan.expose_ignored)
            ports.host.hide(session.state_dir, repo.root, hidden, uid, gid)
        elif plan.expose_ignored and repo is not None:
            ports.reporter.warn(
                "--expose-ignored has no effect on a shared-clone workspace: it holds only what is committed"
            )
        ports.runtime.create_volume(
            plan.volume, labels=session.labels.for_role("workspace"), driver_opts=plan.volume_opts
        )
        for volume in plan.home_volumes:
            ports.runtime.create_volume(
                volume, labels=session.labels.for_role("home"), driver_opts=plan.home_volume_opts.get(volume)
            )
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
            see = ""
            if isinstance(exc, GateRefused):
                kept = exc.bundle if exc.bundle == record.state_dir / REFUSED_BUNDLE else None
                save_refusal(ports, record, reasons=exc.reasons, bundle=kept)
                see = f"; `containai logs {name} --refused` shows every reason"
            return PartResult(
                self.role,
                keep=True,
                message=f"the work was NOT brought back, so {name} and its workspace are kept: {exc.message}. "
                f"Fix the cause, then retry with `remove-agent {name}`; `remove-agent {name} --no-push` discards it"
                + see,
                detail=exc,  # the reason, for `--json`
            )
        if imported is not None and imported.refused is not None:
            save_refusal(
                ports,
                record,
                reasons=imported.refused.reasons,
                bundle=imported.refused.bundle,
                landed=imported,
            )
            return PartResult(
                self.role,
                keep=True,
                message=describe_partial(record.name, imported, imported.refused),
                detail=imported,
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


def _under(path: Path, root: Path) -> Path | None:
    """``path`` relative to ``root``, or None when it lies elsewhere (a linked worktree's git directory)."""
    try:
        return path.relative_to(root)
    except ValueError:
        return None


def _read_config(ports: Ports, path: Path) -> str:
    try:
        text = ports.host.read_text(path)
    except OSError as exc:
        raise SessionError(
            f"cannot read the repository's git config {path}: {exc.strerror or exc}",
            hint="make it readable by the user who runs ContainAI",
        ) from exc
    return text or ""


def run_setup(ports: Ports, container: str, script: str, *, user: str, what: str) -> None:
    output = OutputTail()  # the repository's content can make git say a lot: its tail is enough
    code = ports.runtime.exec(
        container,
        ExecSpec(("bash", "-c", script), user=user, workdir=WORKSPACE),
        on_output=output,
    )
    if code != 0:
        detail = [line for line in output.data.decode("utf-8", "replace").splitlines() if line.strip()]
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


UNEXPORTED_OUTPUT_BYTES = 2**20  # of git's listing: the first entries are shown, a million files are not


def unexported_work(ports: Ports, record: SessionRecord, bounds: Bounds | None = None) -> Unexported:
    """Ask the session's workspace (read only, hooks off) what has not been brought home; each git
    command under the export timeout, and no more than the first MiB of what it lists."""
    labels = record.labels
    if not labels.branch or record.container is None:
        return Unexported((), ())
    user = record.container.user or "1000:1000"
    git = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]
    timeout = (bounds or Bounds()).export_timeout

    def lines(argv: list[str]) -> tuple[str, ...]:
        output = bytearray()

        def keep(stream: str, data: bytes) -> None:
            if stream == "stdout":
                output.extend(data[: max(0, UNEXPORTED_OUTPUT_BYTES - len(output))])

        with timed_out_as_session_error(record.name, "reading the workspace", timeout):
            code = ports.runtime.exec(
                record.name, ExecSpec(tuple(argv), user=user, workdir=WORKSPACE, timeout=timeout), keep
            )
        if code != 0:
            raise SessionError(f"could not read the workspace of {record.name} (git exit {code})")
        text = output.decode("utf-8", "surrogateescape")
        entries = text.split("\0" if "-z" in argv else "\n")
        if len(output) >= UNEXPORTED_OUTPUT_BYTES:
            entries = entries[:-1]  # the last one was cut
        return tuple(printable(line) for line in entries if line.strip())

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
    bounds = options.bounds
    user = (record.container.user if record.container is not None else "") or "1000:1000"
    # The export's output is the agent's to shape (hooks are off, but git prints what it is given):
    # only its tail is held, and only its last line, made printable, is shown.
    output = OutputTail()
    script = render_export_script(labels.branch, EXPORT_BUNDLE, base=labels.base)
    timeout = bounds.export_timeout
    with timed_out_as_session_error(record.name, "exporting the work", timeout):
        code = runtime.exec(
            record.name,
            ExecSpec(("bash", "-c", script), user=user, workdir=WORKSPACE, timeout=timeout),
            on_output=output,
        )
        if code == 3 and not ports.host.is_ready(record.state_dir):
            return None
        exists = ExecSpec(("test", "-s", EXPORT_BUNDLE), user=user, timeout=timeout)
        if code == 0 and runtime.exec(record.name, exists) != 0:
            return None  # no new commits: the export wrote no bundle
    if code != 0:
        shown = last_line(output.data) or f"exit {code}"
        raise SessionError(f"exporting the work failed in {record.name}: {shown}")
    with tempfile.TemporaryDirectory(prefix="containai-import-") as work:
        bundle = Path(work) / "session.bundle"
        copy_out(ports, record.name, EXPORT_BUNDLE, user=user, target=bundle, bounds=bounds)
        return ports.git.import_bundle(
            Path(labels.repo),
            bundle,
            branch=labels.branch,
            base=labels.base,
            policy=options.policy,
            # The user's own branch (--use-current-branch): its work tree may move with it, when safe.
            move_worktree=not labels.branch_created,
            keep_refused=record.state_dir / REFUSED_BUNDLE,
        )


@contextlib.contextmanager
def timed_out_as_session_error(name: str, doing: str, seconds: float) -> Iterator[None]:
    """An exec past its time limit, as the reason the work is kept, with the setting that changes it."""
    try:
        yield
    except ExecTimedOut as exc:
        raise SessionError(
            f"{doing} in {name} ran past the export_timeout of {seconds:g} s ({printable(exc.program)} "
            f"was stopped); to allow longer, {Bounds.how_to_change('export_timeout')}"
        ) from exc


def copy_out(ports: Ports, container: str, path: str, *, user: str, target: Path, bounds: Bounds) -> None:
    """Copy a file out of the container through ``cat`` (streamed to disk, as the agent's user), and
    check its size: Podman's exec can lose a short-lived process's output, so a short copy is retried.
    Each command is under the export timeout; a file over the export size cap is refused unread."""
    runtime = ports.runtime
    limit, timeout = bounds.export_max, bounds.export_timeout
    code, size, expected = 0, 0, b""
    for _ in range(3):
        stat = OutputTail(64, streams=("stdout",))
        with timed_out_as_session_error(container, "copying the work out", timeout):
            runtime.exec(container, ExecSpec(("stat", "-c", "%s", path), user=user, timeout=timeout), stat)
        expected = stat.data.strip()
        if not expected.isdigit():
            continue
        if int(expected) > limit:
            size = int(expected)
            break
        size = 0
        with target.open("wb") as handle:

            def save(stream: str, data: bytes) -> None:
                nonlocal size
                if stream == "stdout":
                    size += len(data)
                    if size <= limit:
                        handle.write(data)

            with timed_out_as_session_error(container, "copying the work out", timeout):
                code = runtime.exec(container, ExecSpec(("cat", path), user=user, timeout=timeout), save)
        if code == 0 and size == int(expected) <= limit:
            return
        if code != 0 or size > limit:
            break
    if size > limit:
        raise SessionError(
            f"the work's bundle in {container} is {size} bytes, over the export_max cap of {limit} bytes; "
            f"to allow more, {Bounds.how_to_change('export_max')}"
        )
    raise SessionError(
        f"copying the work out of {container} failed (exit {code}, {size} of {printable(expected) or '?'} bytes)"
    )


def save_refusal(
    ports: Ports,
    record: SessionRecord,
    *,
    reasons: tuple[str, ...],
    bundle: Path | None,
    landed: ImportResult | None = None,
) -> None:
    """Keep why the gate refused (and what landed) beside the refused bundle, for `logs --refused`."""
    refusal = landed.refused if landed is not None else None
    data: dict[str, Any] = {
        "schema": 1,
        "session": record.name,
        "branch": record.labels.branch,
        "landed_branch": landed.branch if landed is not None else None,
        "landed_commits": landed.commits if landed is not None else 0,
        "landed_tip": landed.tip if landed is not None else None,
        "refused_commit": refusal.commit if refusal is not None else None,
        "refused_subject": refusal.subject if refusal is not None else None,
        "refused_commits": refusal.commits if refusal is not None else None,
        "reasons": list(reasons),
        "bundle": str(bundle) if bundle is not None else None,
    }
    ports.host.write_text(record.state_dir / REFUSED_RECORD, json.dumps(data, indent=2) + "\n")


def render_refusal(data: dict[str, Any]) -> str:
    """What `containai logs NAME --refused` prints for a saved refusal (text from the agent made printable)."""
    lines = []
    if data.get("refused_commit"):
        subject = printable(str(data.get("refused_subject") or ""))
        lines.append(f"refused commit: {data['refused_commit']} {subject}".rstrip())
        lines.append(
            f"landed: {data.get('landed_commits', 0)} commit(s) on {data.get('landed_branch')}"
            f" (up to {str(data.get('landed_tip'))[:12]}); refused: {data.get('refused_commits')} commit(s)"
        )
    else:
        lines.append(f"refused: the whole bundle for {data.get('branch')}; nothing landed")
    lines += [f"reason: {printable(str(reason))}" for reason in data.get("reasons", [])]
    bundle = data.get("bundle")
    if bundle:
        lines.append(f"bundle: {bundle}  (inspect: git bundle list-heads {bundle}; it is in no ref)")
    return "\n".join(lines)


def describe_partial(name: str, result: ImportResult, refusal: Refusal) -> str:
    more = f" (and {len(refusal.reasons) - 1} more)" if len(refusal.reasons) > 1 else ""
    first = refusal.reasons[0] if refusal.reasons else "no reason given"
    where = f"as a bundle in {refusal.bundle} and " if refusal.bundle is not None else ""
    return (
        f"{result.commits} commit(s) brought back to {result.branch}; commit {refusal.commit[:12]} "
        f"({refusal.subject}) was refused: {first}{more}. The {refusal.commits} refused commit(s) are kept "
        f"{where}in {name}, which is kept: `containai logs {name} --refused` shows why; "
        f"`remove-agent {name} --no-push` discards them"
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
