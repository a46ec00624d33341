"""The host repository: finding it, reading its state, and reserving the session's branch.

Only the host's own git runs here, on the host's own repository, and it never touches the work tree,
the index or HEAD: branches are created and moved with ``update-ref`` and an expected old value.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from containai.errors import HostToolError, UsageError
from containai.workspace.owner import owner_identity

ZERO = "0" * 40
SESSION_BRANCH = re.compile(r"^(?P<agent>[a-z0-9-]+)/session-(?P<n>\d+)$")


@dataclass(frozen=True)
class RepoInfo:
    root: Path
    name: str
    head: str  # commit sha of HEAD
    current_branch: str | None  # None on a detached HEAD
    dirty: tuple[str, ...]


def run_git(repo: Path, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("git")
    if exe is None:
        raise HostToolError("git is not installed", hint="install it: `sudo apt-get install git`")
    # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh (write) the user's index behind their back.
    return subprocess.run(
        [exe, "-C", str(repo), *args],
        capture_output=True,
        text=True,
        input=input_text,
        check=False,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        **owner_identity(repo),
    )


def git(repo: Path, *args: str, check: bool = True, input_text: str | None = None) -> str:
    """Run the host's git in ``repo``; raise HostToolError with git's own words on failure."""
    result = run_git(repo, *args, input_text=input_text)
    if check and result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise HostToolError(
            f"git {args[0]} failed in {repo}: {message[-1] if message else f'exit {result.returncode}'}"
        )
    return result.stdout


def discover_repo(path: Path | None, cwd: Path) -> RepoInfo | None:
    """The repo containing ``path`` (or the working directory). None when there is none and no path was given."""
    start = (path or cwd).resolve()
    if path is not None and not start.is_dir():
        raise UsageError(f"{path} is not a directory", hint="pass the path of a git repository, or omit it")
    try:
        top = git(start, "rev-parse", "--show-toplevel").strip()
    except HostToolError:
        if path is not None:
            raise UsageError(
                f"{path} is not inside a git repository",
                hint="pass a repository's path, run `git init` there first, or omit REPO for an empty workspace",
            ) from None
        return None
    root = Path(top)
    head = git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).strip()
    if not head:
        raise UsageError(
            f"{root} has no commits yet",
            hint="make a first commit (`git commit --allow-empty -m init`), then launch",
        )
    branch = git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).strip() or None
    status = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=normal")
    dirty = tuple(entry[3:] for entry in status.split("\0") if len(entry) > 3)
    return RepoInfo(root=root, name=root.name, head=head, current_branch=branch, dirty=dirty)


def validate_branch(repo: Path, name: str) -> str:
    # Checked as a full ref, not with --branch, which would expand "@" or "@{-1}" to other branches.
    result = run_git(repo, "check-ref-format", f"refs/heads/{name}")
    if result.returncode != 0 or name.startswith("-") or name in ("@", "HEAD") or "@{" in name:
        raise UsageError(
            f"{name!r} is not a valid branch name",
            hint="use letters, digits, '/', '-', '_' and '.', e.g. claude/fix-login",
        )
    return name


def branch_sha(repo: Path, branch: str) -> str | None:
    out = git(
        repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False
    ).strip()
    return out or None


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return run_git(repo, "merge-base", "--is-ancestor", older, newer).returncode == 0


def create_branch(repo: Path, branch: str, sha: str) -> bool:
    """Create ``refs/heads/branch`` at ``sha`` only if it does not exist (atomic); False if it did."""
    result = run_git(repo, "update-ref", "-m", "containai: session branch", f"refs/heads/{branch}", sha, ZERO)
    return result.returncode == 0


def delete_branch_if_at(repo: Path, branch: str, sha: str) -> bool:
    return run_git(repo, "update-ref", "-d", f"refs/heads/{branch}", sha).returncode == 0


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
) -> BranchChoice:
    """Pick and reserve the session branch on the host.

    Default: ``<agent>/session-N`` with N the first free number, reserved atomically so concurrent
    launches on one repo get distinct branches. ``--branch B``: B must not exist unless ``--force``,
    which archives B to ``B-archived-<timestamp>`` when B holds commits not merged into the current
    branch. ``--use-current-branch``: the host's current branch.
    """
    repo = info.root
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
        name = validate_branch(repo, requested)
        if name == info.current_branch:
            raise UsageError(
                f"{name} is the branch checked out on the host",
                hint="use --use-current-branch to work on it, or choose another --branch",
            )
        current = branch_sha(repo, name)
        archived = None
        if current is not None:
            if not force:
                raise UsageError(
                    f"branch {name} already exists",
                    hint="choose another --branch, or add --force to archive it and start fresh",
                )
            unmerged = not is_ancestor(repo, current, info.head)
            if unmerged:
                archived = f"{name}-archived-{_timestamp(now)}"
                if not create_branch(repo, archived, current):
                    raise UsageError(f"could not archive {name} to {archived}", hint="try again in a second")
            if not delete_branch_if_at(repo, name, current):
                raise UsageError(f"branch {name} moved while launching", hint="launch again")
        if not create_branch(repo, name, info.head):
            raise UsageError(
                f"branch {name} was created by someone else while launching", hint="launch again"
            )
        return BranchChoice(name, info.head, created=True, archived=archived)
    names = (
        existing
        if existing is not None
        else git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    )
    used = {int(m["n"]) for n in names if (m := SESSION_BRANCH.match(n)) and m["agent"] == agent}
    number = 1
    for _ in range(1000):
        while number in used:
            number += 1
        name = f"{agent}/session-{number}"
        if create_branch(repo, name, info.head):
            return BranchChoice(name, info.head, created=True)
        used.add(number)  # taken by a concurrent launch since we listed
    raise UsageError("no free session branch number", hint="remove old session branches (`git branch -D`)")
