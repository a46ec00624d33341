"""The session's disk cap: how much of the host's disk a session may fill, and how it is held.

What an agent can fill on the host, and what holds it:

    the workspace ── overlay: its upper layer, a folder in the session's host state ─┐
                 └─ clone (or empty): a volume of the engine's local driver        ├─ the watchdog
    ~/.cache       a volume of the local driver                                    │  (one total)
    sidecar logs   volumes of the local driver                                     ┘
    ~/.vscode-server  a tmpfs volume with a size: the engine holds it (see WorkspacePart)

The engine can hold a volume to a size only on tmpfs (memory, lost when the container stops) or
with an XFS project quota (Docker's ``--storage-opt size``, Podman's ``size=``), which the host's
file system rarely has. The VS Code server can be downloaded again, so it lives on tmpfs; the
workspace (the work itself), the cache (often gigabytes: on tmpfs it would take the session's
memory) and the logs cannot, so a host process measures them: the watchdog
(``containai.session.watchdog``). When the session is over its cap, the watchdog stops the agent's
container (stop, never remove: the work is kept, and `remove-agent` brings it home), and says why
in a file of the session's host state, which list-agents, connect-agent and remove-agent show.

This module is the measuring and the deciding (no engine): ``measure``, ``over_limit``, the stop
record, and ``DiskPart``, which starts the watchdog with each session.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from containai.config import DEFAULT_DISK_FILES, DEFAULT_DISK_LIMIT_BYTES
from containai.errors import UsageError
from containai.session import naming
from containai.session.parts import (
    BasePart,
    FinishOptions,
    PartPlan,
    PartResult,
    PlanContext,
    ResumeContext,
    SessionRecord,
)
from containai.text import printable

if TYPE_CHECKING:
    from containai.runtime.base import ContainerRuntime
    from containai.session.plan import SessionPlan
    from containai.session.ports import Ports

LIMIT_FILE = "disk-limit.json"  # in the session's host state: the cap the watchdog holds it to
STOPPED_FILE = "stopped.json"  # in the session's host state: why the watchdog stopped the session
WALK_SECONDS = 30.0  # one measurement's time budget: past it, what was counted is a lower bound
STOP_WAIT_SECONDS = 60.0  # how long finish waits for the watchdog's stop (the engine's own is 10 s)


@dataclass(frozen=True)
class DiskLimit:
    """A session's cap: bytes allocated on the host, and files (each costs an inode and walking time)."""

    max_bytes: int = DEFAULT_DISK_LIMIT_BYTES
    max_files: int = DEFAULT_DISK_FILES

    def to_json(self) -> dict[str, int]:
        return {"max_bytes": self.max_bytes, "max_files": self.max_files}

    @classmethod
    def parse(cls, data: object) -> DiskLimit:
        if not isinstance(data, dict):
            raise ValueError("a disk limit is a JSON object")
        max_bytes, max_files = data.get("max_bytes"), data.get("max_files")
        if not (
            isinstance(max_bytes, int) and isinstance(max_files, int) and max_bytes > 0 and max_files > 0
        ):
            raise ValueError("a disk limit has positive max_bytes and max_files")
        return cls(max_bytes, max_files)


@dataclass(frozen=True)
class DiskUsage:
    """What one measurement found. ``complete`` is False when it stopped early (past the file cap or
    its time budget): the counts are then a lower bound. ``unreadable``: folders inside a measured
    place that could not be listed (an agent can make one to hide what it holds)."""

    size: int = 0  # bytes allocated
    files: int = 0
    complete: bool = True
    unreadable: tuple[str, ...] = ()

    def __add__(self, other: DiskUsage) -> DiskUsage:
        return DiskUsage(
            self.size + other.size,
            self.files + other.files,
            self.complete and other.complete,
            self.unreadable + other.unreadable,
        )


def size_text(value: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} bytes"


def measure(
    root: Path,
    *,
    max_files: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> DiskUsage:
    """Like ``du``: the blocks allocated under ``root`` (``st_blocks``, so sparse files count what they
    take), every entry counted as a file. Never follows a symlink, never leaves ``root``'s file system,
    counts a hard-linked inode once. Stops past ``max_files`` entries or at ``deadline`` (``clock``).

    ``root`` itself must be readable: OSError when it is not (the caller cannot measure there at all).
    """
    top = os.lstat(root)
    if not stat.S_ISDIR(top.st_mode):
        return DiskUsage(top.st_blocks * 512, 1)
    device = top.st_dev
    seen: set[int] = set()
    total, files = top.st_blocks * 512, 0
    unreadable: list[str] = []
    pending = [str(root)]
    first = True
    while pending:
        folder = pending.pop()
        try:
            entries = os.scandir(folder)
        except OSError as exc:
            if first:
                raise
            if isinstance(exc, PermissionError):
                unreadable.append(folder)
            continue  # otherwise gone since it was listed (a build's temporary folder): nothing there
        first = False
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone since it was listed
                files += 1
                folder_entry = stat.S_ISDIR(info.st_mode)
                if folder_entry or info.st_nlink == 1 or info.st_ino not in seen:
                    if not folder_entry and info.st_nlink > 1:
                        seen.add(info.st_ino)
                    total += info.st_blocks * 512
                if folder_entry and info.st_dev == device:
                    pending.append(entry.path)
                if files > max_files or (files % 1024 == 0 and clock() > deadline):
                    return DiskUsage(total, files, False, tuple(unreadable))
    return DiskUsage(total, files, True, tuple(unreadable))


def over_limit(usage: DiskUsage, limit: DiskLimit) -> str | None:
    """Why the session must stop, or None: over either cap, or holding what cannot be measured."""
    if usage.size > limit.max_bytes:
        at_least = "" if usage.complete else "at least "
        return (
            f"its disk use reached {at_least}{size_text(usage.size)}, over its cap of "
            f"{size_text(limit.max_bytes)}"
        )
    if usage.files > limit.max_files:
        return f"it made more than {limit.max_files} files, over its cap of {limit.max_files}"
    if usage.unreadable:
        return (
            f"it made {len(usage.unreadable)} folder(s) that the host cannot read (such as "
            f"{printable(usage.unreadable[0])}), so its disk use cannot be measured"
        )
    return None


@dataclass(frozen=True)
class StopRecord:
    """Why the watchdog stopped a session, kept in its host state (a running container's labels cannot
    change)."""

    reason: str
    at: str  # ISO 8601, UTC
    size: int
    files: int

    def render(self, name: str, limit_hint: str = "") -> str:
        return (
            f"{name} was stopped by ContainAI at {self.at}: {self.reason}. Its work is kept: "
            f"`remove-agent {name}` brings it home{limit_hint}"
        )


HINT = "; a later session can have more with --disk-limit SIZE (or disk_limit in config.toml)"


def write_stop(state_dir: Path, usage: DiskUsage, reason: str, now: datetime | None = None) -> StopRecord:
    record = StopRecord(
        reason, (now or datetime.now(UTC)).isoformat(timespec="seconds"), usage.size, usage.files
    )
    partial = state_dir / f".{STOPPED_FILE}.tmp"
    partial.write_text(json.dumps(vars(record)) + "\n", encoding="utf-8")
    partial.replace(state_dir / STOPPED_FILE)
    return record


def read_stop(state_dir: Path) -> StopRecord | None:
    """Why the session was stopped, when the watchdog stopped it (None otherwise, or unreadable)."""
    try:
        data = json.loads((state_dir / STOPPED_FILE).read_text(encoding="utf-8"))
        return StopRecord(str(data["reason"]), str(data["at"]), int(data["size"]), int(data["files"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_reason(state_dir: Path, name: str) -> str | None:
    """The line list-agents, connect-agent and remove-agent show for a session the watchdog stopped."""
    found = read_stop(state_dir)
    return found.render(name, HINT) if found is not None else None


def session_roots(runtime: ContainerRuntime, session: str, state_dir: Path) -> list[Path]:
    """Where a session's disk use is, on the host: the overlay's upper layer (its changes; the volume's
    own mount point would show the repository below them too) and each volume of the local driver.
    Tmpfs volumes are held by the engine and take memory, not disk: left out."""
    found = [state_dir / "upper"]
    for volume in runtime.volumes({naming.SESSION: session}):
        kind = volume.options.get("type", "")
        if kind in ("overlay", "tmpfs") or not volume.mountpoint:
            continue
        found.append(Path(volume.mountpoint))
    return found


def unreadable_roots(roots: Sequence[Path]) -> list[Path]:
    """Those of ``roots`` this process cannot list: a volume under a root-owned engine's storage, for a
    launcher that is not root. The watchdog cannot count them; the user is told at launch."""
    found = []
    for root in roots:
        try:
            with os.scandir(root):
                pass
        except FileNotFoundError:
            continue
        except OSError:
            found.append(root)
    return found


# -- the session part -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskPlan:
    limit: DiskLimit


class DiskPart(BasePart[DiskPlan]):
    """Starts the session's watchdog with the agent's container; says why it stopped one, at finish.

    First of the parts, so that its finish speaks before the workspace's (which may keep the session
    and end the finish there).
    """

    role = "disk"

    def plan(self, ctx: PlanContext) -> PartPlan[DiskPlan]:
        return PartPlan(self.role, DiskPlan(ctx.request.disk))

    def provision(self, ports: Ports, session: SessionPlan, planned: PartPlan[DiskPlan]) -> None:
        ports.host.write_text(
            session.state_dir / LIMIT_FILE, json.dumps(planned.detail.limit.to_json()) + "\n"
        )

    def start(self, ports: Ports, session: SessionPlan, planned: PartPlan[DiskPlan]) -> None:
        ports.watchdog.start(
            session.state_dir, container=session.name, engine_url=ports.runtime.choice.base_url
        )
        hidden = ports.watchdog.unreadable(
            session_roots(ports.runtime, session.session_id, session.state_dir)
        )
        if hidden:
            ports.reporter.warn(
                f"the disk cap cannot count {', '.join(str(h) for h in hidden)}: this user cannot read "
                "there (the engine's storage); run ContainAI as a user who can (root, or the user of a "
                "rootless engine) for the whole session to be bounded"
            )

    def restore(self, ports: Ports, ctx: ResumeContext) -> bool:
        # A session its watchdog stopped is over its cap: started again, it would only fill more.
        reason = ports.watchdog.stopped(ctx.record.state_dir, ctx.record.name)
        if reason is not None:
            raise UsageError(reason, hint=f"`remove-agent {ctx.record.name}` brings its work home")
        return False

    def resume(self, ports: Ports, ctx: ResumeContext) -> None:
        # After an engine restart or a host reboot, the session is watched again.
        if not ports.watchdog.running(ctx.record.state_dir):
            ports.watchdog.start(
                ctx.record.state_dir, container=ctx.record.name, engine_url=ports.runtime.choice.base_url
            )

    def finish(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> PartResult | None:
        reason = ports.watchdog.stopped(record.state_dir, record.name)
        if reason is None:
            return None
        if record.container is not None and record.container.running:
            # The watchdog's stop may still be under way: an ephemeral session's launcher is here as
            # soon as its agent is killed. Let the stop end, then start the container again, so that
            # the parts after this one (the workspace's export) find it running, as their record says.
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while time.monotonic() < deadline:
                found = ports.runtime.container(record.name)
                if found is None or not found.running:
                    break
                time.sleep(0.2)
            ports.runtime.start(record.name)
        return PartResult(self.role, warnings=(reason,))

    def teardown(self, ports: Ports, record: SessionRecord, options: FinishOptions) -> None:
        ports.watchdog.stop(record.state_dir)


def measure_all(
    roots: Sequence[Path],
    limit: DiskLimit,
    *,
    budget: float = WALK_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[DiskUsage, tuple[Path, ...]]:
    """All of ``roots`` as one total, within one time budget; and the roots this process cannot read
    at all (a volume under a root-owned engine's storage, measured by a launcher that is not root)."""
    total = DiskUsage()
    unmeasured: list[Path] = []
    deadline = clock() + budget
    for root in roots:
        try:
            total += measure(root, max_files=limit.max_files - total.files, deadline=deadline, clock=clock)
        except FileNotFoundError:
            continue
        except OSError:
            unmeasured.append(root)
            continue
        if total.files > limit.max_files or not total.complete:
            break
    return total, tuple(unmeasured)
