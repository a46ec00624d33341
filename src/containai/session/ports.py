"""The effects a session has, behind small interfaces, so that the session core runs without them.

    Ports ─┬─ runtime   the container engine (ContainerRuntime)
           ├─ git       host git on the user's repository (HostRepository)
           ├─ broker    the session's secret broker, a host process (BrokerLauncher)
           ├─ host      the session's host state folder, and this launcher process (HostState)
           ├─ clock     what time it is
           └─ reporter  what the user is told as it happens

``Ports.local`` wires the real ones; unit tests hand in fakes (``containai.session.testing``) and
script their answers. Nothing in ``session.manager`` or a part reaches the host any other way.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from containai.broker.session import BrokerPaths
from containai.errors import SessionError
from containai.gateway.login import ClaudeLogin
from containai.hostgit import HostGit
from containai.runtime.base import ContainerRuntime
from containai.session.repo import BranchChoice, RepoInfo, choose_branch
from containai.workspace.gate import GatePolicy, ImportResult, import_bundle
from containai.workspace.hide import hidden_paths, whiteout


class Reporter(Protocol):
    def note(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class HostRepository(Protocol):
    """Host git on the user's repository: the only changes a session makes there go through here."""

    def identity(self, root: Path | None) -> tuple[str, str]: ...

    def owner(self, root: Path) -> tuple[int, int]: ...

    def choose_branch(
        self,
        info: RepoInfo,
        agent: str,
        *,
        requested: str | None,
        use_current: bool,
        force: bool,
        now: Callable[[], datetime],
    ) -> BranchChoice: ...

    def branch_sha(self, root: Path, branch: str) -> str | None: ...

    def hidden_paths(self, root: Path, exposed: Sequence[str]) -> list[str]:
        """What an overlay of ``root`` hides: ignored files not ``exposed``, sockets, FIFOs (hide.py)."""
        ...

    def checked_out(self, root: Path, branch: str) -> bool: ...

    def delete_branch_if_at(self, root: Path, branch: str, sha: str) -> bool: ...

    def import_bundle(
        self,
        root: Path,
        bundle: Path,
        *,
        branch: str,
        base: str,
        policy: GatePolicy,
        move_worktree: bool,
        keep_refused: Path | None = None,
    ) -> ImportResult: ...


class BrokerLauncher(Protocol):
    """The session's broker: a host process that outlives the launcher of a persistent session."""

    def start(
        self,
        paths: BrokerPaths,
        *,
        session: str,
        container: str,
        engine_url: str,
        gateway: str | None,
        login: ClaudeLogin | None,
        servers: Mapping[str, int] | None = None,
    ) -> None: ...

    def admin(self, socket: Path, request: Mapping[str, object]) -> dict[str, Any]: ...

    def running(self, paths: BrokerPaths) -> bool: ...

    def stop(self, state_dir: Path) -> None: ...


class SessionWatchdog(Protocol):
    """The session's disk watchdog: a host process that stops the session when it is over its disk cap
    (``containai.session.watchdog``), and says why."""

    def start(self, state_dir: Path, *, container: str, engine_url: str) -> None: ...

    def running(self, state_dir: Path) -> bool:
        """Whether the session's watchdog runs (it ends with its container's stop, or a reboot)."""
        ...

    def stopped(self, state_dir: Path, name: str) -> str | None:
        """Why the watchdog stopped the session ``name``, for the user; None when it did not."""
        ...

    def stop(self, state_dir: Path) -> None: ...

    def unreadable(self, roots: Sequence[Path]) -> list[Path]:
        """Those of a session's places on the host that the watchdog cannot read, so cannot count."""
        ...


class HostState(Protocol):
    """Sessions' folders on the host (``<state>/sessions/<id>``), and this launcher process."""

    root: Path

    def prepare_layers(self, state_dir: Path, uid: int, gid: int) -> None: ...

    def seed_upper(self, state_dir: Path, relative: Path, text: str, uid: int, gid: int) -> None:
        """Put a file into an overlay's upper layer (it hides the lower's), owned by the agent."""
        ...

    def hide(self, state_dir: Path, lower: Path, paths: Sequence[str], uid: int, gid: int) -> None:
        """Whiteouts for ``paths`` in the overlay's upper layer: the agent sees them as absent."""
        ...

    def write_text(self, path: Path, text: str, mode: int = 0o600) -> None: ...

    def read_text(self, path: Path) -> str | None: ...

    def recorded(self, name: str) -> list[tuple[Path, str]]:
        """Each session folder holding a file ``name``, with that file's text."""
        ...

    def mark_ready(self, state_dir: Path) -> None: ...

    def is_ready(self, state_dir: Path) -> bool: ...

    def remove(self, state_dir: Path) -> None: ...

    def launcher_id(self) -> str: ...

    def launcher_alive(self, launcher: str) -> bool: ...


@dataclass(frozen=True)
class Ports:
    runtime: ContainerRuntime
    git: HostRepository
    broker: BrokerLauncher
    host: HostState
    reporter: Reporter
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    watchdog: SessionWatchdog = field(default_factory=lambda: ProcessWatchdog())

    @classmethod
    def local(cls, runtime: ContainerRuntime, *, state_root: Path, reporter: Reporter | None = None) -> Ports:
        return cls(
            runtime=runtime,
            git=HostGitRepository(),
            broker=ProcessBroker(),
            host=LocalHostState(state_root),
            reporter=reporter or SilentReporter(),
        )


class SilentReporter:
    def note(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


class HostGitRepository:
    """HostRepository over the host's hardened git (``containai.hostgit``) and the gate."""

    def identity(self, root: Path | None) -> tuple[str, str]:
        """The host user's name and e-mail for the agent's commits (values only; no config file goes in)."""
        if root is None:
            return "ContainAI agent", "agent@containai.invalid"
        git = HostGit(root)
        return (
            git.user_config("user.name") or "ContainAI agent",
            git.user_config("user.email") or "agent@containai.invalid",
        )

    def owner(self, root: Path) -> tuple[int, int]:
        info = root.stat()
        return info.st_uid, info.st_gid

    def choose_branch(
        self,
        info: RepoInfo,
        agent: str,
        *,
        requested: str | None,
        use_current: bool,
        force: bool,
        now: Callable[[], datetime],
    ) -> BranchChoice:
        return choose_branch(info, agent, requested=requested, use_current=use_current, force=force, now=now)

    def branch_sha(self, root: Path, branch: str) -> str | None:
        return HostGit(root).branch_sha(branch)

    def hidden_paths(self, root: Path, exposed: Sequence[str]) -> list[str]:
        listed = HostGit(root).run(
            "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"
        )
        ignored = [p for p in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if p]
        return hidden_paths(root, ignored, exposed)

    def checked_out(self, root: Path, branch: str) -> bool:
        return bool(HostGit(root).worktrees_with(f"refs/heads/{branch}"))

    def delete_branch_if_at(self, root: Path, branch: str, sha: str) -> bool:
        return HostGit(root).delete_branch_if_at(branch, sha)

    def import_bundle(
        self,
        root: Path,
        bundle: Path,
        *,
        branch: str,
        base: str,
        policy: GatePolicy,
        move_worktree: bool,
        keep_refused: Path | None = None,
    ) -> ImportResult:
        return import_bundle(
            root,
            bundle,
            branch=branch,
            base=base,
            policy=policy,
            move_worktree=move_worktree,
            keep_refused=keep_refused,
        )


FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def host_writes(path: Path) -> Iterator[None]:
    """A full file system (or quota) on the host, while ContainAI writes ``path``, is a SessionError
    that says so: before the session exists, it is undone whole; at its end, the work is kept."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL:
            raise
        raise SessionError(
            f"no space left on the host for {exc.filename or path}: its file system is full",
            hint=f"free space on the file system that holds {path.parent} (`containai gc` removes what dead "
            "sessions left there), then try again; nothing of the session's work was lost",
        ) from exc


class ProcessBroker:
    """BrokerLauncher over ``python -m containai.broker.session`` processes."""

    def start(
        self,
        paths: BrokerPaths,
        *,
        session: str,
        container: str,
        engine_url: str,
        gateway: str | None,
        login: ClaudeLogin | None,
        servers: Mapping[str, int] | None = None,
    ) -> None:
        from containai.broker import session as session_broker

        with host_writes(paths.state_dir):
            session_broker.start(
                paths,
                session=session,
                container=container,
                engine_url=engine_url,
                gateway=gateway,
                login=login,
                servers=servers,
            )

    def admin(self, socket: Path, request: Mapping[str, object]) -> dict[str, Any]:
        from containai.broker import session as session_broker

        return session_broker.admin(socket, request)

    def running(self, paths: BrokerPaths) -> bool:
        """Whether the session's broker answers on its admin socket."""
        from containai.broker import session as session_broker
        from containai.errors import ContainAIError

        try:
            session_broker.admin(paths.admin_socket, {"op": "ping"}, timeout=2.0)
        except (OSError, ValueError, ContainAIError):
            return False
        return True

    def stop(self, state_dir: Path) -> None:
        from containai.broker import session as session_broker

        session_broker.stop(state_dir)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


class ProcessWatchdog:
    """SessionWatchdog over ``python -m containai.session.watchdog`` processes."""

    def start(self, state_dir: Path, *, container: str, engine_url: str) -> None:
        from containai.session import watchdog

        watchdog.start(state_dir, container=container, engine_url=engine_url)

    def running(self, state_dir: Path) -> bool:
        from containai.session import watchdog

        return watchdog.running_pid(state_dir) is not None

    def stopped(self, state_dir: Path, name: str) -> str | None:
        from containai.session.disk import stop_reason

        return stop_reason(state_dir, name)

    def stop(self, state_dir: Path) -> None:
        from containai.session import watchdog

        watchdog.stop(state_dir)

    def unreadable(self, roots: Sequence[Path]) -> list[Path]:
        from containai.session.disk import unreadable_roots

        return unreadable_roots(roots)


class LocalHostState:
    """HostState on this machine's file system and process table."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare_layers(self, state_dir: Path, uid: int, gid: int) -> None:
        for part in ("upper", "work"):
            layer = state_dir / part
            with host_writes(layer):
                layer.mkdir(parents=True, exist_ok=True)
            # The overlay's root takes the upper layer's owner: it must be the agent's.
            if os.geteuid() == 0:
                os.chown(layer, uid, gid)

    def seed_upper(self, state_dir: Path, relative: Path, text: str, uid: int, gid: int) -> None:
        upper = state_dir / "upper"
        target = upper / relative
        with host_writes(target):
            folder = upper
            for part in relative.parent.parts:
                folder = folder / part
                folder.mkdir(mode=0o755, exist_ok=True)
                if os.geteuid() == 0:
                    os.chown(folder, uid, gid)
            target.write_text(text, encoding="utf-8")
        target.chmod(0o644)
        if os.geteuid() == 0:
            os.chown(target, uid, gid)

    def hide(self, state_dir: Path, lower: Path, paths: Sequence[str], uid: int, gid: int) -> None:
        upper = state_dir / "upper"
        with host_writes(upper):
            for path in paths:
                whiteout(upper, lower, path, uid, gid)

    def write_text(self, path: Path, text: str, mode: int = 0o600) -> None:
        with host_writes(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        path.chmod(mode)

    def read_text(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def recorded(self, name: str) -> list[tuple[Path, str]]:
        found = []
        for record in sorted(self.root.glob(f"*/{name}")):
            text = self.read_text(record)
            if text is not None:
                found.append((record.parent, text))
        return found

    def mark_ready(self, state_dir: Path) -> None:
        with host_writes(state_dir):
            state_dir.mkdir(parents=True, exist_ok=True)
            (state_dir / READY).touch()

    def is_ready(self, state_dir: Path) -> bool:
        return (state_dir / READY).exists()

    def remove(self, state_dir: Path) -> None:
        if not state_dir.exists():
            return
        # Overlay upper layers hold files the agent created, under its uid: remove as a tree, and never
        # cross into another file system (a mount left behind by a crash).
        rm = shutil.which("rm") or "rm"
        subprocess.run([rm, "-rf", "--one-file-system", str(state_dir)], check=False)

    def launcher_id(self) -> str:
        return f"{boot_id()}:{os.getpid()}"

    def launcher_alive(self, launcher: str) -> bool:
        """Whether the process named by a ``launcher`` label (``<boot id>:<pid>``) still runs here."""
        boot, _, pid = launcher.rpartition(":")
        if boot != boot_id() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


READY = "ready"  # in the session's host state folder once the workspace is set up: the agent may have worked
