"""The one host git runner: hardened, object-format aware, and the few things that stay the user's."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from containai.errors import HostToolError
from containai.hostgit import HARDENING, HostGit
from containai.session.repo import RepoInfo, choose_branch, discover_repo
from containai.workspace.gate import import_bundle, render_export_script

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    """The test's own git: no user or system config."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        **IDENTITY,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


def make_repo(path: Path, object_format: str = "sha1") -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main", f"--object-format={object_format}")
    git(path, "commit", "-q", "--allow-empty", "-m", "base")
    return path


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """What HostGit sees as the process environment: a user with a global config of their own."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Global User\n\temail = global@example.test\n")
    return {"PATH": os.environ["PATH"], "HOME": str(home)}


def info(repo: Path) -> RepoInfo:
    found = discover_repo(repo, repo)
    assert found is not None
    return found


# ---------------------------------------------------------------------------------------------------------
# Hardening


def test_every_call_is_hardened_and_bound_to_its_repository(tmp_path: Path, environ: dict[str, str]) -> None:
    hostile = {**environ, "GIT_DIR": "/elsewhere", "GIT_CONFIG_PARAMETERS": "'core.pager'='touch x'"}
    host = HostGit(tmp_path, environ=hostile)
    argv = host.argv("status")
    assert argv[1 : 1 + len(HARDENING)] == list(HARDENING)
    assert argv[-3:] == ["-C", str(tmp_path), "status"]
    assert host.argv("cat-file", "-e", "x", git_dir=tmp_path / "q.git")[-4:] == [
        f"--git-dir={tmp_path / 'q.git'}",
        "cat-file",
        "-e",
        "x",
    ]
    env = host.env()
    assert "GIT_DIR" not in env and "GIT_CONFIG_PARAMETERS" not in env
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_OPTIONAL_LOCKS"] == "0"  # status never rewrites the user's index
    assert env["HOME"] == environ["HOME"]


def test_the_callers_git_variables_hooks_and_global_config_never_reach_a_call(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    decoy = make_repo(tmp_path / "decoy")
    git(decoy, "commit", "-q", "--allow-empty", "-m", "decoy")
    canary = tmp_path / "canary"
    hooks = repo / ".git" / "hooks"
    (hooks / "reference-transaction").write_text(f"#!/bin/sh\ntouch {canary}\n")
    (hooks / "reference-transaction").chmod(0o755)
    (tmp_path / "global").write_text(f"[core]\n\tfsmonitor = touch {canary}\n")
    hostile = {**environ, "GIT_DIR": str(decoy / ".git"), "GIT_CONFIG_GLOBAL": str(tmp_path / "global")}
    host = HostGit(repo, environ=hostile)
    head = git(repo, "rev-parse", "HEAD")
    assert host.commit_of("HEAD") == head != git(decoy, "rev-parse", "HEAD")
    assert host.create_branch("shell/session-1", head, message="test")
    host.run("status", "--porcelain")
    assert git(repo, "rev-parse", "refs/heads/shell/session-1") == head
    assert not canary.exists()
    # Hardened calls read no global config; only the user's identity is read from it, on purpose.
    assert host.text("config", "user.name", check=False) == ""


def test_user_identity_is_read_from_the_users_config_and_only_that(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    host = HostGit(repo, environ=environ)
    assert host.user_config("user.name") == "Global User"
    assert host.user_config("user.email") == "global@example.test"
    git(repo, "config", "user.email", "repo@example.test")  # the repository's own identity wins, as in git
    assert host.user_config("user.email") == "repo@example.test"
    with pytest.raises(ValueError, match=r"core\.fsmonitor"):
        host.user_config("core.fsmonitor")
    assert HostGit(repo, environ={**environ, "HOME": str(tmp_path)}).user_config("user.name") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the repository to another user")
def test_safe_directory_is_honoured_from_the_users_global_config_only(
    tmp_path: Path, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "config", "safe.directory", "*")  # a repository cannot vouch for itself
    subprocess.run(["chown", "-R", "12345:12345", str(repo)], check=True)
    # As a user who does not own the repository (root would run git as the owner instead).
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    assert HostGit(repo, environ=environ).toplevel() is None
    with (Path(environ["HOME"]) / ".gitconfig").open("a") as config:
        config.write(f"[safe]\n\tdirectory = {repo}\n")
    host = HostGit(repo, environ=environ)
    assert host.trusted_directories == (str(repo),)
    assert f"safe.directory={repo}" in host.argv("status")
    assert host.toplevel() == repo


def test_failures_timeouts_and_a_missing_git_are_host_tool_errors(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(HostToolError, match=r"git rev-parse failed in .*repo: fatal: "):
        HostGit(repo, environ=environ).run("rev-parse", "--verify", "nothing-here")
    read, write = os.pipe()
    try:
        with (
            os.fdopen(read, "rb") as stdin,
            pytest.raises(HostToolError, match=r"did not finish within 0\.5 seconds"),
        ):
            HostGit(repo, environ=environ, timeout=0.5).run("hash-object", "--stdin", stdin=stdin)
    finally:
        os.close(write)
    with pytest.raises(HostToolError, match="git is not installed") as caught:
        HostGit(repo, environ={**environ, "PATH": str(tmp_path / "nowhere")}).run("status")
    assert caught.value.hint is not None and "apt-get install git" in caught.value.hint


def test_toplevel_of_a_folder_in_no_repository_is_none(tmp_path: Path) -> None:
    assert HostGit(tmp_path).toplevel() is None


def test_branch_names_are_checked_and_a_git_that_cannot_run_is_not_taken_for_a_bad_name(
    tmp_path: Path,
) -> None:
    host = HostGit(make_repo(tmp_path / "repo"))
    assert host.valid_branch_name("claude/fix-login")
    for bad in ("bad..name", "-x", "@", "HEAD", "a@{1}", "end.lock", "sp ace"):
        assert not host.valid_branch_name(bad), bad
    with pytest.raises(HostToolError, match="git check-ref-format could not run"):
        HostGit(tmp_path / "gone").valid_branch_name("claude/fix-login")


# ---------------------------------------------------------------------------------------------------------
# Object formats


@pytest.mark.parametrize(("object_format", "length"), [("sha1", 40), ("sha256", 64)])
def test_branches_are_reserved_in_either_object_format(
    tmp_path: Path, object_format: str, length: int
) -> None:
    repo = make_repo(tmp_path / "repo", object_format)
    host = HostGit(repo)
    assert host.object_format == object_format
    assert host.zero_id == "0" * length
    first = choose_branch(info(repo), "shell", requested=None, use_current=False, force=False)
    second = choose_branch(info(repo), "shell", requested=None, use_current=False, force=False)
    assert (first.name, second.name) == ("shell/session-1", "shell/session-2")
    assert len(first.base) == length
    head = git(repo, "rev-parse", "HEAD")
    assert git(repo, "rev-parse", "refs/heads/shell/session-1") == head
    assert not host.create_branch("shell/session-1", head, message="taken")  # atomic: only if absent
    # Only where we left it; git itself would take an empty or zero old value as "anywhere".
    assert not host.delete_branch_if_at("shell/session-1", host.zero_id)
    assert not host.delete_branch_if_at("shell/session-1", "")
    assert not host.delete_branch_if_at("shell/session-1", head[:12])
    assert git(repo, "rev-parse", "refs/heads/shell/session-1") == head
    assert host.delete_branch_if_at("shell/session-1", head)
    assert host.branch_sha("shell/session-1") is None
    current = choose_branch(info(repo), "shell", requested=None, use_current=True, force=False)
    assert (current.name, current.base, current.created) == ("main", head, False)


def test_a_scripted_host_git_stands_in_for_the_real_one(tmp_path: Path) -> None:
    """HostGit is the port: a subclass can script git's answers for a unit test."""

    class Scripted(HostGit):
        def __init__(self, taken: int) -> None:
            super().__init__(tmp_path, run_as={})
            self.taken = taken
            self.created: list[str] = []

        def text(self, *args: str, check: bool = True, **kwargs: Any) -> str:
            assert args[0] == "for-each-ref"
            return "main\nshell/session-1\n"

        def create_branch(self, branch: str, sha: str, *, message: str) -> bool:
            self.created.append(branch)
            return len(self.created) > self.taken  # concurrent launches took the first ones

    fake = Scripted(taken=2)
    repo = RepoInfo(root=tmp_path, name="r", head="a" * 64, current_branch="main", dirty=())
    choice = choose_branch(repo, "shell", requested=None, use_current=False, force=False, git=fake)
    assert choice.name == "shell/session-4"
    assert fake.created == ["shell/session-2", "shell/session-3", "shell/session-4"]


def _agent_work(container: Path, name: str, text: str) -> None:
    (container / name).write_text(text)
    git(container, "add", name)
    git(container, "commit", "-q", "-m", f"agent: {name}")


def _export(container: Path, branch: str, base: str, bundle: Path) -> None:
    script = render_export_script(branch, str(bundle), base=base)
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["bash", "-c", script], cwd=container, env=env, check=True, capture_output=True)


def test_a_sha256_session_comes_home_through_the_export_script_and_the_gate(tmp_path: Path) -> None:
    host = make_repo(tmp_path / "host", "sha256")
    branch = choose_branch(info(host), "shell", requested=None, use_current=False, force=False)
    container = tmp_path / "container"
    subprocess.run(["git", "clone", "-q", "--shared", str(host), str(container)], check=True)
    git(container, "checkout", "-q", "-B", branch.name, branch.base)
    _agent_work(container, "work.txt", "from the agent\n")
    (container / "left.txt").write_text("uncommitted\n")  # the export script commits it
    bundle = tmp_path / "session.bundle"
    _export(container, branch.name, branch.base, bundle)
    assert bundle.read_bytes().startswith(b"# v3 git bundle\n@object-format=sha256\n")

    now: Callable[[], datetime] = lambda: datetime(2026, 12, 1, tzinfo=UTC)  # noqa: E731
    result = import_bundle(host, bundle, branch=branch.name, base=branch.base, now=now)
    assert (result.branch, result.commits, result.diverged, result.created) == (branch.name, 2, False, False)
    assert git(host, "rev-parse", f"refs/heads/{branch.name}") == result.tip
    assert len(result.tip) == 64
    assert git(host, "show", f"{result.tip}:work.txt") == "from the agent"

    # A branch that does not exist (any more) is created with the sha256 zero id, and so is a diverged one.
    git(host, "update-ref", "-d", f"refs/heads/{branch.name}")
    again = import_bundle(host, bundle, branch=branch.name, base=branch.base, now=now)
    assert again.created and git(host, "rev-parse", f"refs/heads/{branch.name}") == result.tip
    git(host, "update-ref", f"refs/heads/{branch.name}", branch.base)
    git(host, "commit", "-q", "--allow-empty", "-m", "host moved on")
    git(host, "update-ref", f"refs/heads/{branch.name}", git(host, "rev-parse", "HEAD"))
    diverged = import_bundle(host, bundle, branch=branch.name, base=branch.base, now=now)
    assert diverged.diverged and diverged.branch == f"{branch.name}-diverged-20261201T000000Z"


def test_a_sha256_session_on_the_current_branch_moves_its_work_tree(tmp_path: Path) -> None:
    host = make_repo(tmp_path / "host", "sha256")
    choice = choose_branch(info(host), "shell", requested=None, use_current=True, force=False)
    container = tmp_path / "container"
    subprocess.run(["git", "clone", "-q", "--shared", str(host), str(container)], check=True)
    git(container, "checkout", "-q", "-B", choice.name, choice.base)
    _agent_work(container, "work.txt", "from the agent\n")
    bundle = tmp_path / "session.bundle"
    _export(container, choice.name, choice.base, bundle)

    result = import_bundle(host, bundle, branch="main", base=choice.base, move_worktree=True)
    assert result.worktree_updated and result.commits == 1
    assert (host / "work.txt").read_text() == "from the agent\n"
    assert git(host, "status", "--porcelain") == ""
