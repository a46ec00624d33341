"""The host repository: finding it, reading its state, and reserving the session's branch.

Only the host's own git runs here, on the host's own repository, and it never touches the work tree,
the index or HEAD: branches are created and moved with ``update-ref`` and an expected old value.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from containai.errors import HostToolError, UsageError
from containai.hostgit import HostGit

SESSION_BRANCH = re.compile(r"^(?P<agent>[a-z0-9-]+)/session-(?P<n>\d+)$")
BRANCH_MESSAGE = "containai: session branch"


@dataclass(frozen=True)
class RepoInfo:
    root: Path
    name: str
    head: str  # commit sha of HEAD
    current_branch: str | None  # None on a detached HEAD
    dirty: tuple[str, ...]
    # The repository's git directory (the common one, for a linked worktree); None: ``root/.git``.
    git_dir: Path | None = None
    # Whether others than its owner can read the git directory and its objects (a shared clone's
    # agent runs as its own uid and reads them through the read-only mount).
    readable_by_others: bool = True

    @property
    def common_dir(self) -> Path:
        return self.git_dir if self.git_dir is not None else self.root / ".git"

    @property
    def linked(self) -> bool:
        """A linked worktree or a submodule (or ``--separate-git-dir``): its git directory is elsewhere."""
        return self.common_dir != self.root / ".git"


def protected_directories(
    environ: Mapping[str, str], *, extra: Sequence[Path] = (), owners: Sequence[int] = ()
) -> dict[Path, str]:
    """Folders a session's repository must never be, nor hold, each with what it is: the homes
    (``~/.ssh``, the secret stores) of the user, of this process's uid and of the repository's owner,
    and ``extra`` (ContainAI's own folders)."""
    found: dict[Path, str] = {}

    def add(path: Path, what: str) -> None:
        if path.is_absolute():
            found.setdefault(path.resolve(), what)

    if home := environ.get("HOME"):
        add(Path(home), "your home folder")
    for uid in (os.geteuid(), *owners):
        try:
            add(Path(pwd.getpwuid(uid).pw_dir), f"the home folder of uid {uid}")
        except KeyError:
            continue
    for path in extra:
        add(path, "ContainAI's own folder")
    return found


def _refuse_protected(top: Path, protected: Mapping[Path, str]) -> None:
    for place, what in protected.items():
        if place == top or place.is_relative_to(top):
            where = "is" if place == top else f"holds {place},"
            raise UsageError(
                f"{top} {where} {what}: a session on it would put ~/.ssh and the secret stores in the "
                "agent's reach",
                hint="launch on the project's own repository (a folder inside your home), not on your home",
            )


def _readable_by_others(git_dir: Path) -> bool:
    try:
        return all((where.stat().st_mode & 0o005) == 0o005 for where in (git_dir, git_dir / "objects"))
    except OSError:
        return False


def discover_repo(
    path: Path | None,
    cwd: Path,
    *,
    host_git: Callable[[Path], HostGit] = HostGit,
    protected: Mapping[Path, str] | None = None,
) -> RepoInfo | None:
    """The repo containing ``path`` (or the working directory). None when there is none and no path was given.

    Refuses, each with the fix, what no session can work on: a path that is no folder, a bare
    repository, one with no commits, and a repository that is (or holds) one of ``protected``.
    """
    start = (path or cwd).resolve()
    if path is not None and not start.exists():
        raise UsageError(f"{path} does not exist", hint="pass the path of a git repository, or omit it")
    if path is not None and not start.is_dir():
        raise UsageError(
            f"{path} is a file, not a folder",
            hint=f"pass the repository's folder ({start.parent}), or omit REPO",
        )
    try:
        top = host_git(start).toplevel()
    except HostToolError:
        top = None
    if top is None:
        if path is not None:
            _refuse_git_dir(host_git(start), path)
            raise UsageError(
                f"{path} is not inside a git repository",
                hint="pass a repository's path, run `git init` there first, or omit REPO for an empty workspace",
            ) from None
        return None
    top = top.resolve()
    _refuse_protected(top, protected or {})
    git = host_git(top)
    head = git.commit_of("HEAD")
    branch = git.text("symbolic-ref", "--quiet", "--short", "HEAD", check=False) or None
    if not head:
        unborn = f" (its branch {branch} has none)" if branch else ""
        raise UsageError(
            f"{top} has no commits yet{unborn}",
            hint="make a first commit (`git commit --allow-empty -m init`), then launch",
        )
    found = git.text("rev-parse", "--path-format=absolute", "--git-common-dir", check=False)
    git_dir = Path(found).resolve() if found else top / ".git"
    status = git.run("status", "--porcelain=v1", "-z", "--untracked-files=normal").stdout
    dirty = tuple(
        entry[3:].decode("utf-8", "surrogateescape") for entry in status.split(b"\0") if len(entry) > 3
    )
    return RepoInfo(
        root=top,
        name=top.name,
        head=head,
        current_branch=branch,
        dirty=dirty,
        git_dir=git_dir,
        readable_by_others=_readable_by_others(git_dir),
    )


def _refuse_git_dir(git: HostGit, path: Path) -> None:
    """A bare repository, or a folder inside a git directory: there is no work tree to give the agent."""
    try:
        bare = git.text("rev-parse", "--is-bare-repository", check=False) == "true"
        inside = git.text("rev-parse", "--is-inside-git-dir", check=False) == "true"
    except HostToolError:
        return
    if bare:
        raise UsageError(
            f"{path} is a bare repository: it has no work tree for the agent to work in",
            hint=f"clone it (`git clone {path} WORK`) and launch on the clone",
        )
    if inside:
        raise UsageError(
            f"{path} is inside a repository's .git folder",
            hint="pass the repository's top folder (the one that holds .git)",
        )


def validate_branch(git: HostGit, name: str) -> str:
    if not git.valid_branch_name(name):
        raise UsageError(
            f"{name!r} is not a valid branch name",
            hint="use letters, digits, '/', '-', '_' and '.', e.g. claude/fix-login",
        )
    return name


@dataclass(frozen=True)
class BranchChoice:
    name: str
    base: str
    created: bool  # ContainAI created (reserved) the ref for this session
    archived: str | None = None  # where --force moved an existing branch's unmerged work


def _timestamp(now: Callable[[], datetime]) -> str:
    return now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def choose_branch(
    info: RepoInfo,
    agent: str,
    *,
    requested: str | None,
    use_current: bool,
    force: bool,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    existing: Sequence[str] | None = None,
    git: HostGit | None = None,
) -> BranchChoice:
    """Pick and reserve the session branch on the host.

    Default: ``<agent>/session-N`` with N the first free number, reserved atomically so concurrent
    launches on one repo get distinct branches. ``--branch B``: B must not exist unless ``--force``,
    which archives B to ``B-archived-<timestamp>`` when B holds commits not merged into the current
    branch. ``--use-current-branch``: the host's current branch.
    """
    git = git or HostGit(info.root)
    if use_current:
        if requested:
            raise UsageError("--branch and --use-current-branch do not go together", hint="pick one")
        if info.current_branch is None:
            raise UsageError(
                "the repository is on a detached HEAD",
                hint="check out a branch, or drop --use-current-branch",
            )
        return BranchChoice(info.current_branch, info.head, created=False)
    if requested:
        name = validate_branch(git, requested)
        if name == info.current_branch:
            raise UsageError(
                f"{name} is the branch checked out on the host",
                hint="use --use-current-branch to work on it, or choose another --branch",
            )
        current = git.branch_sha(name)
        archived = None
        if current is not None:
            if not force:
                raise UsageError(
                    f"branch {name} already exists",
                    hint="choose another --branch, or add --force to archive it and start fresh",
                )
            unmerged = not git.is_ancestor(current, info.head)
            if unmerged:
                archived = f"{name}-archived-{_timestamp(now)}"
                if not git.create_branch(archived, current, message=BRANCH_MESSAGE):
                    raise UsageError(f"could not archive {name} to {archived}", hint="try again in a second")
            if not git.delete_branch_if_at(name, current):
                raise UsageError(f"branch {name} moved while launching", hint="launch again")
        if not git.create_branch(name, info.head, message=BRANCH_MESSAGE):
            raise UsageError(
                f"branch {name} was created by someone else while launching", hint="launch again"
            )
        return BranchChoice(name, info.head, created=True, archived=archived)
    names = (
        existing
        if existing is not None
        else git.text("for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    )
    used = {int(m["n"]) for n in names if (m := SESSION_BRANCH.match(n)) and m["agent"] == agent}
    number = 1
    for _ in range(1000):
        while number in used:
            number += 1
        name = f"{agent}/session-{number}"
        if git.create_branch(name, info.head, message=BRANCH_MESSAGE):
            return BranchChoice(name, info.head, created=True)
        used.add(number)  # taken by a concurrent launch since we listed
    raise UsageError("no free session branch number", hint="remove old session branches (`git branch -D`)")
