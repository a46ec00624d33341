"""Unusual repositories work end to end, and bad input the engine must see is refused, losing nothing.

The "works" cases run one session each, as a user would (`containai run shell REPO --prompt`), on
both workspaces (a root-owned repository gets the shared clone, a user's own the overlay) and both
engines, and check that the agent's commit came home on its own branch and the host is untouched.
The refusals that need no engine are in tests/unit/test_bad_input.py; docs/reliability.md ("Bad
input") lists every case with its test.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import SESSION_SCOPE, USER_REPOS, Engine
from .test_sessions import AGENT_WORK, containai, git, make_repo, prompt, session_resources, snapshot

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def _folder(tmp_path: Path, owner: int | None, name: str) -> Path:
    """A new folder named ``name`` that the repository's owner can reach (see make_repo)."""
    root = Path(tempfile.mkdtemp(prefix="repos-", dir=USER_REPOS)) if owner is not None else tmp_path
    root.chmod(0o711)
    folder = root / name
    folder.mkdir()
    return folder


def _own(path: Path, owner: int | None) -> None:
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner}:{owner}", str(path)], check=True)
    git(path, "config", "--global", "--add", "safe.directory", str(path))


def _base(repo: Path) -> Path:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Host User")
    git(repo, "config", "user.email", "host@example.test")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def detached_head(tmp_path: Path, owner: int | None) -> Path:
    repo = make_repo(tmp_path, owner)
    git(repo, "checkout", "-q", "--detach")
    return repo


def spaces_and_non_ascii(tmp_path: Path, owner: int | None) -> Path:
    repo = _base(_folder(tmp_path, owner, f"my répo ü {uuid.uuid4().hex[:4]}"))
    _own(repo, owner)
    return repo


def non_ascii(tmp_path: Path, owner: int | None) -> Path:
    repo = _base(_folder(tmp_path, owner, f"répo-ü-{uuid.uuid4().hex[:4]}"))
    _own(repo, owner)
    return repo


def shallow_clone(tmp_path: Path, owner: int | None) -> Path:
    origin = make_repo(tmp_path)
    (origin / "second.txt").write_text("2\n")
    git(origin, "add", "second.txt")
    git(origin, "commit", "-q", "-m", "second")
    repo = _folder(tmp_path, owner, "shallow") / "repo"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(repo))
    git(repo, "config", "user.name", "Host User")
    git(repo, "config", "user.email", "host@example.test")
    _own(repo, owner)
    assert (repo / ".git" / "shallow").exists()
    return repo


def worktree(tmp_path: Path, owner: int | None) -> Path:
    main = make_repo(tmp_path, owner)
    tree = main.parent / f"{main.name}-tree"
    git(main, "worktree", "add", "-q", str(tree), "-b", "side")
    _own(tree, owner)
    _own(main, owner)
    return tree


def submodule(tmp_path: Path, owner: int | None) -> Path:
    inner = make_repo(tmp_path)
    outer = make_repo(tmp_path, owner)
    git(outer, "-c", "protocol.file.allow=always", "submodule", "-q", "add", str(inner), "lib")
    git(outer, "commit", "-q", "-m", "add lib")
    _own(outer, owner)
    sub = outer / "lib"
    git(sub, "config", "--global", "--add", "safe.directory", str(sub))
    git(sub, "config", "user.name", "Host User")
    git(sub, "config", "user.email", "host@example.test")
    return sub


def private_folder(tmp_path: Path, owner: int | None) -> Path:
    repo = make_repo(tmp_path, owner)
    repo.chmod(0o700)  # only its owner may enter: the agent of a shared clone reads only .git
    return repo


@dataclass(frozen=True)
class Works:
    id: str
    make: Callable[[Path, int | None], Path]
    overlay: bool  # whether a user's own repository of this kind gets the overlay (else a clone)


WORKS = [
    Works("detached-head", detached_head, overlay=True),
    Works("spaces-and-non-ascii", spaces_and_non_ascii, overlay=False),
    Works("non-ascii", non_ascii, overlay=True),
    Works("shallow-clone", shallow_clone, overlay=True),
    Works("worktree", worktree, overlay=False),
    Works("submodule", submodule, overlay=False),
    Works("0700-repository", private_folder, overlay=True),
]


@pytest.mark.parametrize("case", WORKS, ids=[case.id for case in WORKS])
# Root's repository gets the shared clone; a user's own the overlay, unless the case rules it out.
@pytest.mark.parametrize("owner", [None, 1000], ids=["root-owned", "user-owned"])
def test_unusual_repositories_work_end_to_end(
    env: dict[str, str], tmp_path: Path, engine: Engine, case: Works, owner: int | None
) -> None:
    repo = case.make(tmp_path, owner)
    head = git(repo, "rev-parse", "HEAD").strip()
    before = snapshot_of(repo)
    result = prompt(env, repo, AGENT_WORK, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["workspace"] == ("overlay" if owner and case.overlay else "clone")
    assert (summary["branch"], summary["commits"]) == ("shell/session-1", 1)
    assert git(repo, "show", "shell/session-1:work.txt") == "from-agent\n"
    assert git(repo, "rev-parse", "shell/session-1~1").strip() == head
    assert snapshot_of(repo) == before
    assert session_resources(engine.client, summary["session_id"]) == []


def snapshot_of(repo: Path) -> tuple[str, str, str]:
    """HEAD, the work tree's files and status (``snapshot`` for a repository whose .git is a file)."""
    if (repo / ".git").is_dir():
        head, _index, tree, status = snapshot(repo)
        return head, tree, status
    return git(repo, "rev-parse", "HEAD"), git(repo, "ls-files", "-s"), git(repo, "status", "--porcelain")


def test_bad_input_the_engine_sees_is_refused_and_nothing_is_lost(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    """Each refusal: exit 125, one error line and a hint, no branch, no container, no volume."""
    detached = make_repo(tmp_path)
    git(detached, "checkout", "-q", "--detach")
    private = make_repo(tmp_path)
    (private / ".git").chmod(0o700)
    cases = {
        "detached HEAD with --use-current-branch": (detached, ("--use-current-branch",), "detached HEAD"),
        "a .git only root may read, for a clone": (private, (), "the agent cannot read"),
        "a file": (detached / "README.md", (), "is a file, not a folder"),
        "an unknown agent": (detached, (), "unknown agent 'nosuchagent'"),
        "a --branch git refuses": (detached, ("--branch", "a..b"), "not a valid branch name"),
    }
    scope = {"label": SESSION_SCOPE}
    containers = {c.id for c in engine.client.containers.list(all=True, filters=scope)}
    for what, (path, extra, message) in cases.items():
        repo = path if path.is_dir() else path.parent
        refs = git(repo, "for-each-ref")
        agent = "nosuchagent" if "agent" in what else "shell"
        result = containai(env, "run", agent, str(path), "--prompt", "true", *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 125, (what, result.stderr)
        assert lines[-2].startswith("error: ") and message in lines[-2], (what, result.stderr)
        assert lines[-1].startswith("hint: "), (what, result.stderr)
        assert "Traceback" not in result.stderr
        assert git(repo, "for-each-ref") == refs, what
    assert {c.id for c in engine.client.containers.list(all=True, filters=scope)} == containers
