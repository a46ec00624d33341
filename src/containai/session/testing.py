"""Fakes of the session's ports, for tests: the session core with no engine, no git and no host.

    ports = fake_ports()                     # a FakeRuntime with every image, and the fakes below
    ports.git.imports.append(result)         # what the next import returns (or raises)
    ports.broker.fail_start = SessionError(...)
    ports.host.ready, ports.host.removed     # what the session did to its host folders
    ports.watchdog.reasons[state_dir] = "..."  # a session its disk watchdog stopped

Each fake records what it was asked, so tests check calls as well as results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from containai.broker.session import BrokerPaths
from containai.gateway.login import ClaudeLogin
from containai.images.catalog import PARTS, image_tag
from containai.runtime.fake import FakeRuntime
from containai.session.ports import Ports
from containai.session.repo import BranchChoice, RepoInfo
from containai.workspace.gate import GatePolicy, ImportResult
from containai.workspace.hide import exposed as exposed_path

FIXED_NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class RecordingReporter:
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


@dataclass
class FakeRepository:
    """Host git in memory: branches by name, a queue of import answers."""

    branches: dict[str, str] = field(default_factory=dict)
    checked_out_branches: set[str] = field(default_factory=set)
    imports: list[ImportResult | BaseException] = field(default_factory=list)
    imported: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    name: tuple[str, str] = ("Host User", "host@example.test")
    owned_by: tuple[int, int] = (1000, 1000)  # the repository's owner: 0 means the shared-clone path
    hidden: list[str] = field(default_factory=list)  # what an overlay would hide (ignored, sockets)

    def identity(self, root: Path | None) -> tuple[str, str]:
        return self.name if root is not None else ("ContainAI agent", "agent@containai.invalid")

    def owner(self, root: Path) -> tuple[int, int]:
        return self.owned_by

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
        if use_current and info.current_branch:
            return BranchChoice(info.current_branch, info.head, created=False)
        name = requested or next(
            f"{agent}/session-{n}" for n in range(1, 1000) if f"{agent}/session-{n}" not in self.branches
        )
        self.branches[name] = info.head
        return BranchChoice(name, info.head, created=True)

    def branch_sha(self, root: Path, branch: str) -> str | None:
        return self.branches.get(branch)

    def hidden_paths(self, root: Path, exposed: Sequence[str]) -> list[str]:
        return [path for path in self.hidden if not exposed_path(path, exposed)]

    def checked_out(self, root: Path, branch: str) -> bool:
        return branch in self.checked_out_branches

    def delete_branch_if_at(self, root: Path, branch: str, sha: str) -> bool:
        if self.branches.get(branch) != sha:
            return False
        del self.branches[branch]
        self.deleted.append(branch)
        return True

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
        self.imported.append(
            {
                "branch": branch,
                "base": base,
                "bundle": bundle.read_bytes(),
                "move_worktree": move_worktree,
                "keep_refused": keep_refused,
            }
        )
        answer = self.imports.pop(0) if self.imports else ImportResult(branch, "f" * 40, 1, False, False)
        if isinstance(answer, BaseException):
            raise answer
        self.branches[answer.branch] = answer.tip
        return answer


@dataclass
class FakeBroker:
    started: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[Path] = field(default_factory=list)
    requests: list[Mapping[str, object]] = field(default_factory=list)
    fail_start: Exception | None = None
    alive: set[Path] = field(default_factory=set)  # the state folders of brokers that run

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
        if self.fail_start is not None:
            raise self.fail_start
        self.started.append(
            {
                "session": session,
                "container": container,
                "gateway": gateway,
                "login": login,
                "servers": dict(servers or {}),
            }
        )
        self.alive.add(paths.state_dir)

    def admin(self, socket: Path, request: Mapping[str, object]) -> dict[str, Any]:
        self.requests.append(request)
        return {"ok": True, "token": f"token-{len(self.requests)}", "bundle": "YnVuZGxl"}

    def running(self, paths: BrokerPaths) -> bool:
        return paths.state_dir in self.alive

    def stop(self, state_dir: Path) -> None:
        self.stopped.append(state_dir)
        self.alive.discard(state_dir)


@dataclass
class FakeWatchdog:
    """Records the watchdogs started and stopped; ``reasons``: what ``stopped`` says, by state folder."""

    started: list[dict[str, Any]] = field(default_factory=list)
    stopped_dirs: list[Path] = field(default_factory=list)
    reasons: dict[Path, str] = field(default_factory=dict)
    hidden: set[Path] = field(default_factory=set)  # places ``unreadable`` names
    fail_start: Exception | None = None

    def start(self, state_dir: Path, *, container: str, engine_url: str) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started.append({"state_dir": state_dir, "container": container, "engine_url": engine_url})

    def running(self, state_dir: Path) -> bool:
        return any(s["state_dir"] == state_dir for s in self.started) and state_dir not in self.stopped_dirs

    def stopped(self, state_dir: Path, name: str) -> str | None:
        return self.reasons.get(state_dir)

    def stop(self, state_dir: Path) -> None:
        self.stopped_dirs.append(state_dir)

    def unreadable(self, roots: Sequence[Path]) -> list[Path]:
        return [root for root in roots if root in self.hidden]


@dataclass
class FakeHostState:
    root: Path = Path("/state/sessions")
    files: dict[Path, str] = field(default_factory=dict)
    layers: list[Path] = field(default_factory=list)
    hidden: dict[Path, list[str]] = field(default_factory=dict)  # whiteouts, by session folder
    ready: set[Path] = field(default_factory=set)
    removed: list[Path] = field(default_factory=list)
    alive: set[str] = field(default_factory=set)
    pid: int = 4242

    def prepare_layers(self, state_dir: Path, uid: int, gid: int) -> None:
        self.layers.append(state_dir)

    def seed_upper(self, state_dir: Path, relative: Path, text: str, uid: int, gid: int) -> None:
        self.files[state_dir / "upper" / relative] = text

    def hide(self, state_dir: Path, lower: Path, paths: Sequence[str], uid: int, gid: int) -> None:
        self.hidden[state_dir] = list(paths)

    def write_text(self, path: Path, text: str, mode: int = 0o600) -> None:
        self.files[path] = text

    def read_text(self, path: Path) -> str | None:
        return self.files.get(path)

    def recorded(self, name: str) -> list[tuple[Path, str]]:
        return sorted(
            (path.parent, text)
            for path, text in self.files.items()
            if path.name == name and path.parent.parent == self.root
        )

    def mark_ready(self, state_dir: Path) -> None:
        self.ready.add(state_dir)

    def is_ready(self, state_dir: Path) -> bool:
        return state_dir in self.ready

    def remove(self, state_dir: Path) -> None:
        self.removed.append(state_dir)
        self.ready.discard(state_dir)
        for path in [p for p in self.files if state_dir in p.parents]:
            del self.files[path]

    def launcher_id(self) -> str:
        return f"boot:{self.pid}"

    def launcher_alive(self, launcher: str) -> bool:
        return launcher in self.alive


@dataclass(frozen=True)
class FakePorts(Ports):
    """Ports whose every member is a fake; the attributes are typed as the fakes, for tests."""

    runtime: FakeRuntime
    git: FakeRepository
    broker: FakeBroker
    host: FakeHostState
    reporter: RecordingReporter
    watchdog: FakeWatchdog = field(default_factory=FakeWatchdog)


def fake_ports(*, channel: str = "dev", runtime: FakeRuntime | None = None) -> FakePorts:
    engine = runtime or FakeRuntime()
    for part in PARTS:
        engine.add_image(image_tag(part, channel))
    return FakePorts(
        runtime=engine,
        git=FakeRepository(),
        broker=FakeBroker(),
        host=FakeHostState(),
        reporter=RecordingReporter(),
        clock=lambda: FIXED_NOW,
    )
