"""Bad input to a session is refused before the engine is touched, with one line that says the fix.

Each case runs the real CLI (`containai run shell REPO`) with a runtime that fails the test if
anything asks it for anything: the refusal must come first. docs/reliability.md ("Bad input") lists
these cases; the ones that work, or need the engine to refuse, are in tests/engine/test_bad_input.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.cli.app import AppContext, run_cli
from containai.cli.main import cli
from containai.config import REPO_CONFIG_MAX_BYTES, load_repo_config
from containai.errors import ConfigError, UsageError
from containai.session.plan import choose_workspace
from containai.session.repo import RepoInfo, discover_repo, protected_directories


@pytest.fixture(autouse=True)
def _close_log_file() -> Iterator[None]:
    yield
    logger = logging.getLogger("containai")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


class Untouchable:
    """A container runtime that must not be used: every question to it fails the test."""

    closed = False

    def close(self) -> None:
        self.closed = True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the engine was asked for {name} before the input was checked")


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


def make_repo(path: Path, *, commit: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    if commit:
        git(path, "commit", "-q", "--allow-empty", "-m", "base")
    return path


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref") if (repo / ".git").exists() else ""


def run_session(
    tmp_path: Path,
    *args: str,
    home: Path | None = None,
    containai_home: Path | None = None,
    cwd: Path | None = None,
) -> int:
    """`containai run ARGS --prompt x` as a user with HOME ``home``, from ``cwd``; its exit code."""
    runtime = Untouchable()

    def untouchable(app: AppContext) -> None:
        app._runtime = runtime  # it must never be used

    environ = {
        "PATH": os.environ["PATH"],
        "HOME": str(home or tmp_path / "home"),
        "CONTAINAI_HOME": str(containai_home or tmp_path / "containai"),
    }
    before = Path.cwd()
    os.chdir(cwd or before)
    try:
        return run_cli(cli, args=["run", *args, "--prompt", "x"], environ=environ, extra=untouchable)
    finally:
        os.chdir(before)


Case = Callable[[Path], tuple[list[str], dict[str, Path]]]


def _file(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    repo = make_repo(tmp / "repo")
    (repo / "notes.txt").write_text("x")
    return ["shell", str(repo / "notes.txt")], {}


def _missing(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    return ["shell", str(tmp / "nowhere")], {}


def _not_a_repo(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    (tmp / "plain").mkdir()
    return ["shell", str(tmp / "plain")], {}


def _bare(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    bare = tmp / "bare.git"
    bare.mkdir()
    git(bare, "init", "-q", "--bare")
    return ["shell", str(bare)], {}


def _git_folder(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    return ["shell", str(make_repo(tmp / "repo") / ".git")], {}


def _unborn(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    return ["shell", str(make_repo(tmp / "repo", commit=False))], {}


def _bad_branch(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    return ["shell", str(make_repo(tmp / "repo")), "--branch", "bad..name"], {}


def _home(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    home = make_repo(tmp / "home")
    return ["shell", str(home)], {"home": home}


def _home_from_inside(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    # No path given, from a folder in a home that is itself a repository (a dotfiles repo).
    home = make_repo(tmp / "home")
    (home / "scratch").mkdir()
    return ["shell"], {"home": home, "cwd": home / "scratch"}


def _parent_of_home(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    root = make_repo(tmp / "users")
    (root / "me").mkdir()
    return ["shell", str(root)], {"home": root / "me"}


def _holds_containai(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    repo = make_repo(tmp / "repo")
    return ["shell", str(repo)], {"containai_home": repo / "containai"}


def _unknown_agent(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    return ["nosuchagent", str(make_repo(tmp / "repo"))], {}


def _config(text: str | bytes) -> Case:
    def case(tmp: Path) -> tuple[list[str], dict[str, Path]]:
        repo = make_repo(tmp / "repo")
        (repo / ".containai").mkdir()
        data = text.encode() if isinstance(text, str) else text
        (repo / ".containai" / "config.toml").write_bytes(data)
        return ["shell", str(repo)], {}

    return case


def _config_link(target: str) -> Case:
    def case(tmp: Path) -> tuple[list[str], dict[str, Path]]:
        repo = make_repo(tmp / "repo")
        (repo / ".containai").mkdir()
        (repo / ".containai" / "config.toml").symlink_to(target)
        return ["shell", str(repo)], {}

    return case


def _config_folder_link(tmp: Path) -> tuple[list[str], dict[str, Path]]:
    repo = make_repo(tmp / "repo")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "config.toml").write_text("[settings]\nmemory = '1g'\n")
    (repo / ".containai").symlink_to(outside)
    return ["shell", str(repo)], {}


REFUSALS: list[tuple[str, Case, str, str]] = [
    # (id, the input, what the error line says, what its hint says)
    ("a-file", _file, "is a file, not a folder", "pass the repository's folder"),
    ("missing", _missing, "does not exist", "pass the path of a git repository"),
    ("not-a-repository", _not_a_repo, "is not inside a git repository", "git init"),
    ("bare", _bare, "is a bare repository", "git clone"),
    ("inside-.git", _git_folder, "inside a repository's .git folder", "top folder"),
    ("unborn-branch", _unborn, "has no commits yet (its branch main has none)", "git commit --allow-empty"),
    ("bad-branch-name", _bad_branch, "'bad..name' is not a valid branch name", "e.g. claude/fix-login"),
    ("home", _home, "home is your home folder: a session on it would put ~/.ssh", "not on your home"),
    ("home-from-inside", _home_from_inside, "home is your home folder", "not on your home"),
    ("parent-of-home", _parent_of_home, "users holds", "not on your home"),
    (
        "holds-containai-state",
        _holds_containai,
        "ContainAI's own folder: a session",
        "not on your home",
    ),
    ("unknown-agent", _unknown_agent, "unknown agent 'nosuchagent'", "choose one of"),
    ("config-huge", _config("# " + "x" * REPO_CONFIG_MAX_BYTES), "is larger than 256 KiB", "shorten it"),
    ("config-invalid", _config("[settings\n"), "is not valid TOML", "fix the file"),
    ("config-not-utf8", _config(b"\xff\xfe[settings]\n"), "is not UTF-8 text", "fix the file"),
    ("config-nested", _config("a = " + "[" * 5000), "config.toml", "fix the file"),
    (
        "config-unknown-table",
        _config("[hooks]\nrun = 'x'\n"),
        "'hooks' is not something",
        "the tables there are",
    ),
    (
        "config-unknown-setting",
        _config("[settings]\nimage = 'x'\n"),
        "image is not a setting",
        "the settings there",
    ),
    ("config-unknown-network-key", _config("[network]\nproxy = 'x'\n"), "unknown key proxy", "allow, deny"),
    ("config-bad-domain", _config("[network]\nallow = ['*']\n"), "config.toml", ""),
    ("config-bad-server", _config("[mcp_servers.x]\nrun = 'c'\n"), "mcp_servers", ""),
    ("config-device", _config_link("/dev/zero"), "symbolic link", "plain file"),
    ("config-link-out", _config_link("/etc/passwd"), "symbolic link", "plain file"),
    ("config-folder-link", _config_folder_link, "outside the repository", "plain folder"),
]


@pytest.mark.parametrize(("case", "message", "hint"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_input_is_refused_before_the_engine_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Case, message: str, hint: str
) -> None:
    args, where = case(tmp_path)
    repos = [p for p in tmp_path.rglob(".git") if p.is_dir()]
    before = {p: refs(p.parent) for p in repos}
    code = run_session(tmp_path, *args, **where)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 125, err
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert lines[1].startswith("hint: ") and hint in lines[1], err
    assert "Traceback" not in err
    # Nothing of the user's changed: no branch was reserved, no ref moved.
    assert {p: refs(p.parent) for p in repos} == before


def test_the_repository_config_is_read_within_its_bound(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / ".containai").mkdir()
    fifo = repo / ".containai" / "config.toml"
    os.mkfifo(fifo)  # a read would block forever
    with pytest.raises(ConfigError, match="is not a plain file"):
        load_repo_config(repo)
    fifo.unlink()
    fifo.write_text("[settings]\nmemory = '2g'\n[network]\nallow = ['example.com']\n")
    assert load_repo_config(repo) == {"settings": {"memory": "2g"}, "network": {"allow": ["example.com"]}}


def test_home_folders_are_protected(tmp_path: Path) -> None:
    found = protected_directories({"HOME": str(tmp_path / "me")}, extra=(tmp_path / "state",), owners=(0,))
    assert found[tmp_path / "me"] == "your home folder"
    assert found[tmp_path / "state"] == "ContainAI's own folder"
    assert found[Path("/root")] == "the home folder of uid 0"
    repo = make_repo(tmp_path / "me" / "project")
    assert discover_repo(repo, repo, protected=found) is not None
    with pytest.raises(UsageError, match=r"holds .*inner, your home folder"):
        discover_repo(repo, repo, protected={repo / "inner": "your home folder"})


def test_worktrees_and_submodules_get_a_clone_of_their_git_directory(tmp_path: Path) -> None:
    main = make_repo(tmp_path / "main")
    git(main, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "side")
    tree = discover_repo(tmp_path / "wt", tmp_path)
    assert tree is not None and tree.linked and tree.common_dir == main / ".git"
    assert tree.current_branch == "side"
    choice = choose_workspace(tree, owner=(1000, 1000), local_engine=True, rootless=False)
    assert choice.mode == "clone" and "worktree" in choice.reason
    own = discover_repo(main, tmp_path)
    assert own is not None and not own.linked


def test_a_git_directory_only_its_owner_can_read_is_refused_for_a_clone(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    repo.chmod(0o700)  # the repository's own folder private: fine, the clone reads only .git
    assert (found := discover_repo(repo, repo)) is not None and found.readable_by_others
    assert choose_workspace(found, owner=(0, 0), local_engine=True, rootless=False).mode == "clone"
    (repo / ".git").chmod(0o700)
    private = discover_repo(repo, repo)
    assert private is not None and not private.readable_by_others
    with pytest.raises(UsageError, match="the agent cannot read") as refused:
        choose_workspace(private, owner=(0, 0), local_engine=True, rootless=False)
    assert refused.value.hint is not None and "chmod -R o+rX" in refused.value.hint
    # Its owner's agent, in an overlay, reads it as the owner; so does a clone's agent of the same uid.
    assert choose_workspace(private, owner=(1000, 1000), local_engine=True, rootless=False).mode == "overlay"
    assert choose_workspace(private, owner=(1000, 1000), local_engine=False, rootless=False).mode == "clone"
    with pytest.raises(UsageError, match="the agent cannot read"):
        choose_workspace(private, owner=(1234, 1234), local_engine=False, rootless=False)


def test_a_detached_head_gets_a_session_branch_from_its_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "--detach")
    found = discover_repo(repo, repo)
    assert (
        found is not None
        and found.current_branch is None
        and found.head == git(repo, "rev-parse", "HEAD").strip()
    )


def test_plain_repo_info_is_still_a_plain_repository() -> None:
    info = RepoInfo(Path("/src/app"), "app", "0" * 40, "main", ())
    assert info.common_dir == Path("/src/app/.git") and not info.linked
