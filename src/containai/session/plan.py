"""Planning a session: from what the user asked for to the exact containers and volumes. Pure.

The hardening is decided here, in one place, and every container a session creates is built from
``hardened_spec``; ``docs/security.md`` explains each setting.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from containai.agents.definition import AgentDef
from containai.config import DEFAULT_MAX_CPUS, DEFAULT_MEMORY, DEFAULT_PIDS
from containai.errors import UsageError
from containai.inside import protocol
from containai.runtime.base import ContainerSpec, Mount
from containai.session.naming import SessionLabels
from containai.session.parts import PartPlan, SessionPart
from containai.session.repo import BranchChoice, RepoInfo

WorkspaceMode = Literal["overlay", "clone", "empty"]
AGENT_UID = protocol.AGENT_UID
WORKSPACE = protocol.WORKSPACE
REPO_MOUNT = "/repo"
HOME = "/home/agent"
VSCODE_SERVER = f"{HOME}/.vscode-server"
CACHE = f"{HOME}/.cache"
EXPORT_BUNDLE = "/tmp/containai-session.bundle"  # noqa: S108  # a path inside the container's own tmpfs


@dataclass(frozen=True)
class WorkspaceChoice:
    mode: WorkspaceMode
    reason: str
    uid: int
    gid: int


def choose_workspace(
    repo: RepoInfo | None,
    *,
    owner: tuple[int, int] | None,
    local_engine: bool,
    rootless: bool,
    forced: str | None = None,
) -> WorkspaceChoice:
    """Overlay when the engine can mount one the agent can write; otherwise a shared clone.

    An overlay keeps the host files' owners, so the agent must run as the repo owner's uid, and
    never as root: a root-owned repo gets the clone.
    """
    if repo is None:
        return WorkspaceChoice("empty", "no repository: an empty workspace", AGENT_UID, AGENT_UID)
    if forced not in (None, "", "overlay", "clone"):
        raise UsageError(
            f"CONTAINAI_WORKSPACE={forced!r} is not a workspace mode", hint="use overlay or clone"
        )
    uid, gid = owner or (AGENT_UID, AGENT_UID)
    if forced == "clone":
        return _clone(repo, "shared clone (CONTAINAI_WORKSPACE=clone)", uid)
    reasons = []
    if not local_engine:
        reasons.append("the engine is not on this machine")
    if rootless:
        reasons.append("the engine is rootless")
    if re.search(r"[,:\s]", str(repo.root)):
        reasons.append(
            "the repository path holds a comma, colon or space, which overlay options cannot carry"
        )
    if uid == 0:
        reasons.append("the repository is owned by root and the agent never runs as root")
    if repo.linked:
        reasons.append("its git directory is outside it (a linked worktree or a submodule)")
    if reasons:
        if forced == "overlay":
            raise UsageError(
                f"cannot use an overlay workspace: {'; '.join(reasons)}", hint="unset CONTAINAI_WORKSPACE"
            )
        return _clone(repo, f"shared clone ({'; '.join(reasons)})", uid)
    return WorkspaceChoice("overlay", "copy-on-write overlay of the repository", uid, gid)


def _clone(repo: RepoInfo, reason: str, owner_uid: int) -> WorkspaceChoice:
    """A shared clone of the repository's git directory, which the agent reads as its own uid."""
    if not repo.readable_by_others and owner_uid != AGENT_UID:
        raise UsageError(
            f"the agent cannot read {repo.common_dir}: only its owner may, and in a shared clone the "
            f"agent runs as uid {AGENT_UID}",
            hint=f"let others read it (`chmod -R o+rX {shlex.quote(str(repo.common_dir))}`), or make the "
            "repository a user's own (not root's), so that the agent runs as its owner",
        )
    return WorkspaceChoice("clone", reason, AGENT_UID, AGENT_UID)


def parse_memory(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgt]?)b?", text.strip().lower())
    if not match:
        raise UsageError(f"--memory {text!r} is not a size", hint="use a size like 4g or 512m")
    number, unit = float(match.group(1)), match.group(2)
    value = int(number * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[unit])
    if value < 64 * 2**20:
        raise UsageError(f"--memory {text} is too small", hint="give the session at least 64m")
    return value


def parse_cpus(text: str | None, available: int) -> int:
    if text is None:
        return min(DEFAULT_MAX_CPUS, max(1, available)) * 10**9
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1024:
        raise UsageError(f"--cpu {text!r} is not a number of CPUs", hint="use a number like 2 or 0.5")
    return int(value * 10**9)


@dataclass(frozen=True)
class Resources:
    memory_bytes: int
    nano_cpus: int
    pids: int = DEFAULT_PIDS


def default_resources(available: int | None = None) -> Resources:
    """The defaults of containai/config.py; the CLI passes the resolved settings instead."""
    import os

    return Resources(parse_memory(DEFAULT_MEMORY), parse_cpus(None, available or os.cpu_count() or 1))


@dataclass(frozen=True)
class SessionPlan:
    """Everything a session will be, decided before anything is created (``session.manager.plan``)."""

    session_id: str
    name: str
    agent: AgentDef
    image: str
    repo: RepoInfo | None
    branch: BranchChoice | None
    workspace: WorkspaceChoice
    labels: SessionLabels
    container: ContainerSpec  # the agent's own container
    state_dir: Path
    setup_script: str
    home_script: str = ""  # the HOME part of the set-up alone, run again when the container restarts
    environment: Mapping[str, str] = field(default_factory=dict)
    # Each part of the session with its plan, in the order the parts run.
    parts: tuple[tuple[SessionPart[Any], PartPlan[Any]], ...] = ()

    @property
    def user(self) -> str:
        return f"{self.workspace.uid}:{self.workspace.gid}"

    def planned(self, role: str) -> PartPlan[Any] | None:
        return next((planned for _, planned in self.parts if planned.role == role), None)


def hardened_spec(
    *,
    image: str,
    name: str,
    command: Sequence[str],
    labels: Mapping[str, str],
    uid: int,
    gid: int,
    mounts: Sequence[Mount],
    resources: Resources,
    environment: Mapping[str, str],
    network_mode: str = "none",
    extra_tmpfs: Mapping[str, str] | None = None,
) -> ContainerSpec:
    """The one shape of a session container: nothing privileged, nothing writable but what it needs."""
    if uid == 0:
        raise UsageError(
            "session containers never run as root", hint="this is a bug in ContainAI; please report it"
        )
    return ContainerSpec(
        image=image,
        name=name,
        command=tuple(command),
        labels=dict(labels),
        user=f"{uid}:{gid}",
        environment=dict(environment),
        working_dir=WORKSPACE,
        hostname=name[:63],
        mounts=tuple(mounts),
        tmpfs={
            "/tmp": "rw,noexec,nosuid,nodev,size=1g",  # noqa: S108  # the container's own tmpfs
            HOME: f"rw,noexec,nosuid,nodev,size=512m,uid={uid},gid={gid},mode=0700",
            # Root's, 0755: the agent cannot write it. It holds the MCP stub's tmpfs and the broker's
            # socket, and an ancestor of the stub's folders that the agent could write would let it
            # plant configuration (an .npmrc beside a package.json) that the servers' npm would read.
            "/run/containai": "rw,noexec,nosuid,nodev,size=1m,mode=0755",
            **(extra_tmpfs or {}),
        },
        read_only=True,
        cap_drop=("ALL",),
        cap_add=(),
        security_opt=("no-new-privileges:true",),
        network_mode=network_mode,
        pids_limit=resources.pids,
        memory_bytes=resources.memory_bytes,
        nano_cpus=resources.nano_cpus,
        ulimits=(("nofile", 4096, 8192), ("core", 0, 0), ("nproc", 4096, 4096)),
    )


def render_setup_script(
    workspace: WorkspaceChoice,
    branch: BranchChoice | None,
    *,
    git_name: str,
    git_email: str,
    home_files: Mapping[str, str] | None = None,
) -> str:
    """What runs inside the container, as the agent, before the agent starts: the branch, and who commits."""
    lines = ["set -eu", f"cd {WORKSPACE}"]
    if workspace.mode == "clone":
        # --shared borrows the read-only repo's objects: nothing is copied, and nothing can be written back.
        # The mount is the repository's git directory, not its work tree: that works for a linked
        # worktree or a submodule, and for a repository whose own folder only its owner may enter.
        lines.append(f"git clone --quiet --shared --no-checkout {REPO_MOUNT} {WORKSPACE}")
    if branch is not None:
        lines += [
            f"git config user.name {shlex.quote(git_name)}",
            f"git config user.email {shlex.quote(git_email)}",
            f"git checkout --quiet -B {shlex.quote(branch.name)} {branch.base}",
        ]
        if workspace.mode == "clone":
            lines.append("git remote remove origin")
    # The HOME part first: safe.directory must be in place before the first git command.
    home = render_home_script(home_files).splitlines()[1:]
    return "\n".join(lines[:2] + home + lines[2:]) + "\n"


def render_home_script(home_files: Mapping[str, str] | None = None) -> str:
    """The part of the set-up that lives in the agent's tmpfs HOME, and so is lost when its container
    restarts: run again on resume (it never touches the workspace or its branch)."""
    # The repository's files may belong to another uid than the agent's (the host's); inside the
    # sandbox that is expected, so git is told to trust them (in the agent's own tmpfs HOME).
    lines = ["set -eu", "git config --global --add safe.directory '*'"]
    for relative, text in sorted((home_files or {}).items()):
        # Through base64, so no quoting of the content can go wrong; HOME is the agent's tmpfs.
        encoded = base64.b64encode(text.encode()).decode()
        target = shlex.quote(f"{HOME}/{relative}")
        lines.append(f'mkdir -p "$(dirname {target})" && echo {encoded} | base64 -d > {target}')
    return "\n".join(lines) + "\n"
