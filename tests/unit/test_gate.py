"""The git gate against real git: hostile bundles are built with plumbing and must leave no trace."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from containai.errors import GateRefused, HostToolError
from containai.hostgit import GitLimits, HostGit
from containai.workspace.gate import (
    GatePolicy,
    ImportResult,
    check_path,
    check_symlink,
    import_bundle,
    is_dotgit,
    parse_bundle_header,
    render_export_script,
)

from .. import packs

BRANCH = "claude/session-3"
REF = f"refs/heads/{BRANCH}"
LIB_SHA = "1" * 40  # a submodule commit the host never has: gitlinks point outside the repo
FIXED_NOW = datetime(2026, 11, 27, 2, 15, tzinfo=UTC)

Spec = dict[bytes, tuple[str, bytes]]

BASE_FILES: Spec = {
    b"README.md": ("100644", b"hello\n"),
    b"src/app.py": ("100644", b"print('hi')\n"),
    b"docs/guide.md": ("100644", b"# guide\n"),
    b".gitmodules": ("100644", b'[submodule "lib"]\n\tpath = lib\n\turl = https://example.invalid/lib.git\n'),
    b"lib": ("160000", LIB_SHA.encode()),
}

HOOKS = ("post-checkout", "pre-commit", "post-commit", "reference-transaction", "post-merge", "pre-auto-gc")


@pytest.fixture(autouse=True)
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own git calls see no user or system config, and a fixed identity."""
    for key in list(os.environ):
        if key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.invalid")


def git(repo: Path, *args: str, input_bytes: bytes | None = None) -> str:
    # The test's own git never runs the traps either, so only the gate could set the canary off.
    result = subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-C", str(repo), *args],
        input=input_bytes,
        capture_output=True,
        check=True,
    )
    return result.stdout.decode().strip()


def build_tree(repo: Path, spec: Spec) -> str:
    children: dict[bytes, Spec] = {}
    lines = []
    for path, (mode, data) in spec.items():
        head, sep, rest = path.partition(b"/")
        if sep:
            children.setdefault(head, {})[rest] = (mode, data)
        elif mode == "160000":
            lines.append(b"160000 commit " + data + b"\t" + head)
        else:
            sha = git(repo, "hash-object", "-w", "--stdin", input_bytes=data)
            lines.append(f"{mode} blob {sha}\t".encode() + head)
    for name, sub in children.items():
        lines.append(f"040000 tree {build_tree(repo, sub)}\t".encode() + name)
    return git(repo, "mktree", "-z", "--missing", input_bytes=b"".join(line + b"\0" for line in lines))


def commit(repo: Path, spec: Spec, *parents: str, message: str = "agent work") -> str:
    tree = build_tree(repo, spec)
    args = [arg for p in parents for arg in ("-p", p)]
    return git(repo, "commit-tree", tree, *args, "-m", message)


@dataclass(frozen=True)
class World:
    host: Path
    container: Path
    base: str
    canary: Path
    bundles: Path

    def bundle(self, *revs: str, name: str = "agent.bundle") -> Path:
        path = self.bundles / name
        git(self.container, "bundle", "create", "--quiet", str(path), *revs)
        return path

    def agent_commit(self, extra: Spec, *, parent: str | None = None, drop: tuple[bytes, ...] = ()) -> str:
        spec = {k: v for k, v in {**BASE_FILES, **extra}.items() if k not in drop}
        sha = commit(self.container, spec, parent or self.base)
        git(self.container, "update-ref", REF, sha)
        return sha

    def session_bundle(self, extra: Spec) -> Path:
        self.agent_commit(extra)
        return self.bundle(REF, f"^{self.base}")


def trap(canary: Path) -> str:
    return f"touch {canary}"


@pytest.fixture
def world(tmp_path: Path) -> World:
    canary = tmp_path / "canary"
    host = tmp_path / "host"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(host)], check=True)
    base = commit(host, BASE_FILES, message="base")
    git(host, "update-ref", "refs/heads/main", base)
    git(host, "reset", "--quiet", "--hard")
    # Host-side drivers an attribute in the agent's tree could name; the gate must never reach them.
    git(host, "config", "filter.canary.smudge", trap(canary))
    git(host, "config", "filter.canary.clean", trap(canary))
    git(host, "config", "diff.canary.textconv", trap(canary))
    for hook in HOOKS:
        (host / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\n{trap(canary)}\n")
        (host / ".git" / "hooks" / hook).chmod(0o755)

    container = tmp_path / "container"
    subprocess.run(["git", "clone", "--quiet", str(host), str(container)], check=True, capture_output=True)
    git(container, "switch", "--quiet", "-c", BRANCH)
    # What an agent can plant in its own repo: all of it would fire if the host ran git there.
    git(container, "config", "core.fsmonitor", trap(canary))
    git(container, "config", "filter.canary.smudge", trap(canary))
    for hook in HOOKS:
        (container / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\n{trap(canary)}\n")
        (container / ".git" / "hooks" / hook).chmod(0o755)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    return World(host=host, container=container, base=base, canary=canary, bundles=bundles)


@dataclass(frozen=True)
class Snapshot:
    refs: frozenset[str]
    objects: frozenset[str]
    head: str
    symbolic_head: str
    status: str
    index: str
    worktree: str


def snapshot(repo: Path) -> Snapshot:
    digest = hashlib.sha256()
    for path in sorted(repo.rglob("*")):
        if ".git" in path.relative_to(repo).parts:
            continue
        digest.update(str(path.relative_to(repo)).encode())
        if path.is_symlink():
            digest.update(str(path.readlink()).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return Snapshot(
        refs=frozenset(git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()),
        objects=frozenset(git(repo, "cat-file", "--batch-all-objects", "--batch-check").splitlines()),
        head=git(repo, "rev-parse", "HEAD"),
        symbolic_head=git(repo, "symbolic-ref", "HEAD"),
        status=git(repo, "status", "--porcelain", "--untracked-files=all"),
        index=hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        worktree=digest.hexdigest(),
    )


def do_import(world: World, bundle: Path, policy: GatePolicy | None = None) -> ImportResult:
    return import_bundle(
        world.host,
        bundle,
        branch=BRANCH,
        base=world.base,
        policy=policy or GatePolicy(),
        now=lambda: FIXED_NOW,
    )


def assert_work_tree_untouched(before: Snapshot, after: Snapshot) -> None:
    assert (after.head, after.symbolic_head, after.status, after.index, after.worktree) == (
        before.head,
        before.symbolic_head,
        before.status,
        before.index,
        before.worktree,
    )


# ---------------------------------------------------------------------------------------------------------
# Landing


def test_happy_path_creates_branch_and_leaves_the_work_tree_alone(world: World) -> None:
    first = world.agent_commit({b"src/new.py": ("100644", b"x = 1\n")})
    second = commit(
        world.container,
        {
            **BASE_FILES,
            b"src/new.py": ("100644", b"x = 2\n"),
            b".gitattributes": ("100644", b"* filter=canary diff=canary\n"),
            b"docs/readme-link": ("120000", b"../README.md"),
            b"docs/sibling": ("120000", b"guide.md"),
        },
        first,
    )
    git(world.container, "update-ref", REF, second)
    bundle = world.bundle(REF, f"^{world.base}")
    before = snapshot(world.host)

    result = import_bundle(world.host, bundle, branch=BRANCH, base=world.base)

    assert (result.branch, result.tip, result.commits, result.diverged, result.created) == (
        BRANCH,
        second,
        2,
        False,
        True,
    )
    after = snapshot(world.host)
    assert after.refs - before.refs == {f"{REF} {second}"}
    assert before.refs <= after.refs
    assert_work_tree_untouched(before, after)
    assert git(world.host, "show", f"{REF}:src/new.py") == "x = 2"
    assert not world.canary.exists()


def test_fast_forward_then_no_op(world: World) -> None:
    git(world.host, "update-ref", REF, world.base)  # what launching a session does
    first = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    result = do_import(world, world.bundle(REF, f"^{world.base}"))
    assert (result.branch, result.commits, result.created, result.diverged) == (BRANCH, 1, False, False)

    before = snapshot(world.host)
    second = world.agent_commit({b"a.txt": ("100644", b"1\n"), b"b.txt": ("100644", b"2\n")}, parent=first)
    third = world.agent_commit({b"a.txt": ("100644", b"3\n"), b"b.txt": ("100644", b"2\n")}, parent=second)
    result = do_import(world, world.bundle(REF, f"^{world.base}", name="again.bundle"))
    assert (result.branch, result.tip, result.commits, result.created) == (BRANCH, third, 2, False)
    assert_work_tree_untouched(before, snapshot(world.host))

    result = do_import(world, world.bundle(REF, f"^{world.base}", name="same.bundle"))
    assert (result.tip, result.commits, result.diverged) == (third, 0, False)
    assert git(world.host, "rev-parse", REF) == third


def test_host_branch_that_moved_gets_a_new_ref(world: World) -> None:
    host_work = commit(world.host, {**BASE_FILES, b"host.txt": ("100644", b"human\n")}, world.base)
    git(world.host, "update-ref", REF, host_work)
    tip = world.agent_commit({b"agent.txt": ("100644", b"agent\n")})
    bundle = world.bundle(REF, f"^{world.base}")
    before = snapshot(world.host)

    result = do_import(world, bundle)

    assert result.branch == f"{BRANCH}-diverged-20261127T021500Z"
    assert (result.diverged, result.created, result.commits, result.tip) == (True, True, 1, tip)
    assert "moved" in (result.diverged_reason or "")
    assert git(world.host, "rev-parse", REF) == host_work
    assert_work_tree_untouched(before, snapshot(world.host))

    again = do_import(world, bundle)
    assert again.branch == f"{BRANCH}-diverged-20261127T021500Z-2"


def test_checked_out_branch_is_never_moved(world: World) -> None:
    git(world.host, "update-ref", REF, world.base)
    git(world.host, "switch", "--quiet", BRANCH)
    (world.host / "README.md").write_text("uncommitted human edit\n")
    tip = world.agent_commit({b"agent.txt": ("100644", b"agent\n")})
    before = snapshot(world.host)

    result = do_import(world, world.bundle(REF, f"^{world.base}"))

    assert result.diverged and result.branch.startswith(f"{BRANCH}-diverged-")
    assert "checked out" in (result.diverged_reason or "")
    assert git(world.host, "rev-parse", REF) == world.base
    assert git(world.host, "rev-parse", f"refs/heads/{result.branch}") == tip
    assert_work_tree_untouched(before, snapshot(world.host))
    assert not world.canary.exists()


def import_current(world: World) -> ImportResult:
    """An import for a session launched with --use-current-branch: the work tree may move along."""
    return import_bundle(
        world.host,
        world.bundle(REF, f"^{world.base}"),
        branch=BRANCH,
        base=world.base,
        now=lambda: FIXED_NOW,
        move_worktree=True,
    )


def on_current_branch(world: World) -> None:
    git(world.host, "update-ref", REF, world.base)
    git(world.host, "switch", "--quiet", BRANCH)


def test_current_branch_moves_with_its_clean_work_tree_and_runs_nothing(world: World) -> None:
    on_current_branch(world)
    # The agent's tree names the host's filter driver for every file: checking it out must not run it.
    tip = world.agent_commit(
        {b"agent.txt": ("100644", b"agent\n"), b".gitattributes": ("100644", b"* filter=canary\n")}
    )

    result = import_current(world)

    assert not world.canary.exists()
    assert (result.branch, result.tip, result.commits, result.diverged) == (BRANCH, tip, 1, False)
    assert result.worktree_updated
    assert git(world.host, "rev-parse", "HEAD") == tip
    assert git(world.host, "symbolic-ref", "HEAD") == REF
    assert (world.host / "agent.txt").read_text() == "agent\n"
    status = git(
        world.host, "-c", "filter.canary.clean=", "-c", "filter.canary.smudge=", "status", "--porcelain"
    )
    assert status == ""


def test_current_branch_with_uncommitted_changes_keeps_them_and_diverts_the_work(world: World) -> None:
    on_current_branch(world)
    (world.host / "README.md").write_text("uncommitted human edit\n")
    tip = world.agent_commit({b"agent.txt": ("100644", b"agent\n")})
    before = snapshot(world.host)

    result = import_current(world)

    assert result.diverged and result.branch.startswith(f"{BRANCH}-diverged-")
    assert "uncommitted changes" in (result.diverged_reason or "") and "README.md" in (
        result.diverged_reason or ""
    )
    assert git(world.host, "rev-parse", REF) == world.base
    assert git(world.host, "rev-parse", f"refs/heads/{result.branch}") == tip
    assert_work_tree_untouched(before, snapshot(world.host))
    assert not world.canary.exists()


def test_current_branch_that_moved_on_is_left_where_the_user_put_it(world: World) -> None:
    on_current_branch(world)
    (world.host / "host.txt").write_text("human\n")
    git(world.host, "add", "host.txt")
    git(world.host, "commit", "--quiet", "-m", "human work")
    human = git(world.host, "rev-parse", "HEAD")
    world.agent_commit({b"agent.txt": ("100644", b"agent\n")})
    before = snapshot(world.host)

    result = import_current(world)

    assert result.diverged and "moved on the host" in (result.diverged_reason or "")
    assert git(world.host, "rev-parse", REF) == human
    assert_work_tree_untouched(before, snapshot(world.host))


def test_current_branch_with_an_untracked_file_in_the_way_is_left_alone(world: World) -> None:
    on_current_branch(world)
    (world.host / "agent.txt").write_text("the user's own untracked file\n")
    world.agent_commit({b"agent.txt": ("100644", b"agent\n")})
    before = snapshot(world.host)

    result = import_current(world)

    assert result.diverged and "work tree forward failed" in (result.diverged_reason or "")
    assert (world.host / "agent.txt").read_text() == "the user's own untracked file\n"
    assert git(world.host, "rev-parse", REF) == world.base
    assert_work_tree_untouched(before, snapshot(world.host))


def test_current_branch_checked_out_in_another_work_tree_is_never_moved(world: World, tmp_path: Path) -> None:
    git(world.host, "update-ref", REF, world.base)
    other = tmp_path / "other-worktree"
    git(world.host, "worktree", "add", "--quiet", str(other), BRANCH)
    world.agent_commit({b"agent.txt": ("100644", b"agent\n")})

    result = import_current(world)

    assert result.diverged and str(other) in (result.diverged_reason or "")
    assert git(world.host, "rev-parse", REF) == world.base
    assert not (other / "agent.txt").exists()


def test_worktrees_with_lists_every_checkout_of_a_branch(world: World, tmp_path: Path) -> None:
    git(world.host, "update-ref", REF, world.base)
    assert HostGit(world.host).worktrees_with("refs/heads/main") == [world.host]
    other = tmp_path / "other dir"
    git(world.host, "worktree", "add", "--quiet", str(other), BRANCH)
    assert HostGit(world.host).worktrees_with(REF) == [other]
    assert HostGit(world.host).worktrees_with("refs/heads/nowhere") == []


def test_updating_an_existing_submodule_pointer_is_allowed(world: World) -> None:
    result = do_import(world, world.session_bundle({b"lib": ("160000", b"2" * 40)}))
    assert result.commits == 1


def test_the_traps_are_live(world: World) -> None:
    """Otherwise an absent canary would prove nothing."""
    subprocess.run(["git", "-C", str(world.container), "status"], capture_output=True, check=True)
    assert world.canary.exists()
    world.canary.unlink()
    subprocess.run(["git", "-C", str(world.host), "update-ref", "refs/heads/x", world.base], check=True)
    assert world.canary.exists()


def test_the_callers_git_environment_is_ignored(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = world.session_bundle({b"a.txt": ("100644", b"1\n")})
    monkeypatch.setenv("GIT_DIR", str(world.container / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(world.container))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.fsmonitor'='{trap(world.canary)}'")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(world.container / ".git" / "config"))

    result = do_import(world, bundle)

    monkeypatch.undo()
    assert git(world.host, "rev-parse", REF) == result.tip
    assert not world.canary.exists()


# ---------------------------------------------------------------------------------------------------------
# Refusals

Builder = Callable[[World], Path]


def extra_head(world: World) -> Path:
    world.agent_commit({b"a.txt": ("100644", b"1\n")})
    other = commit(world.container, {**BASE_FILES, b"o.txt": ("100644", b"o\n")}, world.base)
    git(world.container, "update-ref", "refs/heads/other", other)
    return world.bundle(REF, "refs/heads/other", f"^{world.base}")


def tag(world: World) -> Path:
    tip = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    git(world.container, "update-ref", "refs/tags/v1.0", tip)
    return world.bundle(REF, "refs/tags/v1.0", f"^{world.base}")


def replace_ref(world: World) -> Path:
    world.agent_commit({b"a.txt": ("100644", b"1\n")})
    fake = commit(world.container, {b"x": ("100644", b"x\n")}, message="FAKE REPLACED HISTORY")
    git(world.container, "update-ref", f"refs/replace/{world.base}", fake)
    return world.bundle(REF, f"refs/replace/{world.base}", f"^{world.base}")


def head_elsewhere(world: World) -> Path:
    world.agent_commit({b"a.txt": ("100644", b"1\n")})
    other = commit(world.container, {**BASE_FILES, b"o.txt": ("100644", b"o\n")}, world.base)
    git(world.container, "update-ref", "--no-deref", "HEAD", other)
    return world.bundle("HEAD", REF, f"^{world.base}")


def branch_missing(world: World) -> Path:
    other = commit(world.container, {**BASE_FILES, b"o.txt": ("100644", b"o\n")}, world.base)
    git(world.container, "update-ref", "refs/heads/other", other)
    return world.bundle("refs/heads/other", f"^{world.base}")


def symlink(target: bytes, at: bytes = b"docs/escape") -> Builder:
    return lambda world: world.session_bundle({at: ("120000", target)})


def submodule_url_change(world: World) -> Path:
    gitmodules = b'[submodule "lib"]\n\tpath = lib\n\turl = ext::sh -c touch% /tmp/pwned\n'
    return world.session_bundle({b".gitmodules": ("100644", gitmodules)})


def submodule_added(world: World) -> Path:
    gitmodules = BASE_FILES[b".gitmodules"][1] + b'[submodule "evil"]\n\tpath = evil\n\turl = file:///etc\n'
    return world.session_bundle({b".gitmodules": ("100644", gitmodules), b"evil": ("160000", b"3" * 40)})


def orphan(world: World) -> Path:
    tip = commit(world.container, {b"README.md": ("100644", b"rewritten\n")}, message="orphan")
    git(world.container, "update-ref", REF, tip)
    return world.bundle(REF)


def rewritten_base(world: World) -> Path:
    # Descends from a sibling of base that the host already has, not from base.
    sibling = commit(world.host, {**BASE_FILES, b"s.txt": ("100644", b"s\n")}, message="sibling")
    git(world.host, "update-ref", "refs/heads/sibling", sibling)
    git(world.container, "fetch", "--quiet", str(world.host), "refs/heads/sibling:refs/heads/sibling")
    tip = commit(world.container, {**BASE_FILES, b"a.txt": ("100644", b"1\n")}, sibling)
    git(world.container, "update-ref", REF, tip)
    return world.bundle(REF, f"^{sibling}")


def missing_prerequisite(world: World) -> Path:
    hidden = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    world.agent_commit({b"a.txt": ("100644", b"2\n")}, parent=hidden)
    return world.bundle(REF, f"^{hidden}")


def garbage(world: World) -> Path:
    path = world.bundles / "garbage.bundle"
    path.write_bytes(b"\x7fELF this is not a bundle at all\n")
    return path


def truncated(world: World) -> Path:
    path = world.session_bundle({b"a.txt": ("100644", b"1\n")})
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n\n")])
    return path


def symlinked_bundle(world: World) -> Path:
    link = world.bundles / "link.bundle"
    link.symlink_to(world.session_bundle({b"a.txt": ("100644", b"1\n")}))
    return link


def fifo_bundle(world: World) -> Path:
    path = world.bundles / "fifo.bundle"
    os.mkfifo(path)
    return path


def corrupt_pack(world: World) -> Path:
    path = world.session_bundle({b"a.txt": ("100644", b"1\n")})
    data = path.read_bytes()
    path.write_bytes(data[:-30] + b"\0" * 30)
    return path


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(extra_head, ["'refs/heads/other': only refs/heads/claude/session-3"], id="extra-head"),
        pytest.param(tag, ["'refs/tags/v1.0': only"], id="tag"),
        pytest.param(replace_ref, ["'refs/replace/"], id="replace-ref"),
        pytest.param(head_elsewhere, ["'HEAD': only"], id="head-elsewhere"),
        pytest.param(
            branch_missing,
            ["refs/heads/claude/session-3: not in the bundle", "'refs/heads/other'"],
            id="no-branch",
        ),
        pytest.param(symlink(b"/etc/passwd"), ["-> '/etc/passwd': absolute target"], id="symlink-absolute"),
        pytest.param(symlink(b"../../outside"), ["outside the repository"], id="symlink-dotdot"),
        pytest.param(
            symlink(b"../" * 3 + b"etc", at=b"a/b/link"), ["outside the repository"], id="symlink-deep"
        ),
        pytest.param(symlink(b"sub/../../x"), ["'..' after a name"], id="symlink-dotdot-after-name"),
        pytest.param(symlink(b"../.git/hooks/pre-commit"), ["target is inside .git"], id="symlink-into-git"),
        pytest.param(
            submodule_url_change,
            ["submodule 'lib' url 'ext::sh -c touch% /tmp/pwned' changed from"],
            id="submodule-url",
        ),
        pytest.param(
            submodule_added,
            ["'evil': new submodule (gitlink)", "submodule 'evil' url 'file:///etc' added"],
            id="submodule-added",
        ),
        pytest.param(
            lambda w: w.session_bundle({b"vendor/x": ("160000", b"4" * 40)}),
            ["'vendor/x': new submodule"],
            id="new-gitlink",
        ),
        pytest.param(orphan, ["does not descend from the session's base"], id="orphan"),
        pytest.param(rewritten_base, ["does not descend from the session's base"], id="not-from-base"),
        pytest.param(
            missing_prerequisite, ["not a commit in the host repository"], id="missing-prerequisite"
        ),
        pytest.param(garbage, ["not a git bundle"], id="garbage"),
        pytest.param(truncated, ["truncated"], id="truncated-header"),
        pytest.param(symlinked_bundle, ["cannot open the bundle"], id="bundle-is-symlink"),
        pytest.param(fifo_bundle, ["not a regular file"], id="bundle-is-fifo"),
        pytest.param(corrupt_pack, ["the bundle's pack is unusable"], id="corrupt-pack"),
        pytest.param(
            lambda w: w.session_bundle({b"evil\rname": ("100644", b"x")}),
            ["control character"],
            id="cr-in-path",
        ),
    ],
)
def test_refused(world: World, build: Builder, expected: list[str]) -> None:
    bundle = build(world)
    before = snapshot(world.host)

    with pytest.raises(GateRefused) as caught:
        do_import(world, bundle)

    joined = "\n".join(caught.value.reasons)
    for text in expected:
        assert text in joined
    assert "\n" not in caught.value.message
    assert caught.value.hint is not None and "git bundle list-heads" in caught.value.hint
    after = snapshot(world.host)
    assert after.refs == before.refs
    assert after.objects == before.objects
    assert_work_tree_untouched(before, after)
    assert not world.canary.exists()


@pytest.mark.parametrize(
    "name",
    [
        b".git",
        b".GIT",
        b"git~1",
        b"GIT~2",
        b".git ",
        b".git.",
        b".git. . ",
        b".g\xe2\x80\x8cit",
        b".git::$INDEX_ALLOCATION",
    ],
)
def test_dotgit_in_any_spelling_is_refused(world: World, name: bytes) -> None:
    bundle = world.session_bundle(
        {b"sub/" + name + b"/hooks/post-checkout": ("100755", b"#!/bin/sh\ntouch /tmp/x\n")}
    )
    before = snapshot(world.host)

    with pytest.raises(GateRefused) as caught:
        do_import(world, bundle)

    assert any("would be read as .git" in reason for reason in caught.value.reasons)
    after = snapshot(world.host)
    assert (after.refs, after.objects) == (before.refs, before.objects)
    assert not world.canary.exists()


def test_dotgit_is_refused_by_fsck_and_by_the_gate_together(world: World) -> None:
    with pytest.raises(GateRefused) as caught:
        do_import(
            world, world.session_bundle({b".git/config": ("100644", b"[core]\n\tfsmonitor = touch /tmp/x\n")})
        )
    reasons = caught.value.reasons
    assert any(r.startswith("fsck:") and "hasDotgit" in r for r in reasons)
    assert any(r == "'.git/config': path component '.git' would be read as .git" for r in reasons)
    assert str(caught.value).endswith("more)")


def test_oversized_blob_is_refused_by_the_pack_scan_with_its_size(world: World) -> None:
    bundle = world.session_bundle({b"data/big.bin": ("100644", b"x" * 2000), b"small.txt": ("100644", b"ok")})
    with pytest.raises(GateRefused) as caught:
        do_import(world, bundle, GatePolicy(max_blob_bytes=1000))
    (reason,) = caught.value.reasons
    assert reason.startswith(
        "the bundle's pack is over the blob limit (CONTAINAI_GATE_MAX_BLOB): pack object "
    )
    assert reason.endswith("declares 2000 bytes, over the 1000-byte blob limit")


class RecordingGit(HostGit):
    """The host's git, noting each command it runs."""

    def __init__(self, repo: Path, **kwargs: Any) -> None:
        super().__init__(repo, **kwargs)
        self.commands: list[str] = []

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.commands.append(args[0])
        return super().run(*args, **kwargs)


def delta_bomb_bundle(world: World, result_size: int) -> Path:
    """A few KiB of bundle: a blob and a delta on it that builds ``result_size`` bytes."""
    path = world.bundles / "bomb.bundle"
    header = f"# v2 git bundle\n-{world.base} base\n{'a' * 40} {REF}\n\n".encode()
    path.write_bytes(header + packs.delta_bomb(result_size))
    return path


def test_a_delta_bomb_is_refused_by_the_scan_before_host_git_sees_it(world: World) -> None:
    bundle = delta_bomb_bundle(world, 4 * 2**30)
    assert bundle.stat().st_size < 64 * 1024
    before = snapshot(world.host)
    recording = RecordingGit(world.host)
    with pytest.raises(GateRefused) as caught:
        import_bundle(world.host, bundle, branch=BRANCH, base=world.base, git=recording)
    (reason,) = caught.value.reasons
    assert reason.startswith(
        "the bundle's pack is over the blob limit (CONTAINAI_GATE_MAX_BLOB): pack object 2"
    )
    assert reason.endswith(
        f"its delta would build an object of {4 * 2**30} bytes, over the {50 * 2**20}-byte blob limit"
    )
    assert "\n" not in str(caught.value.message)
    assert "index-pack" not in recording.commands
    assert "init" not in recording.commands  # no quarantine was even made
    assert_work_tree_untouched(before, snapshot(world.host))


def test_without_the_scan_the_memory_limit_still_stops_index_pack(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the scan protects from, with the scan switched off: index-pack asks for the whole result.
    monkeypatch.setattr("containai.workspace.gate.scan_pack", lambda *a, **k: None)
    bundle = delta_bomb_bundle(world, 4 * 2**30)
    recording = RecordingGit(world.host, limits=GitLimits(256 * 2**20))
    started = time.monotonic()
    with pytest.raises(GateRefused) as caught:
        import_bundle(world.host, bundle, branch=BRANCH, base=world.base, git=recording)
    assert "index-pack" in recording.commands
    assert caught.value.reasons[0].startswith("the bundle's pack is unusable: fatal: Out of memory")
    assert time.monotonic() - started < 60
    # No git process (this test's or any before it) grew past the limit.
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 < 1 * 2**30


def test_host_git_runs_with_its_limits(tmp_path: Path) -> None:
    limits = GitLimits(512 * 2**20)
    shown = subprocess.run(
        ["bash", "-c", "ulimit -v; ulimit -t"],
        preexec_fn=limits.preexec(30.2),  # what HostGit runs git with
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == [str(512 * 1024), "31"]
    argv = HostGit(tmp_path, limits=limits).argv("index-pack")
    assert "pack.threads=1" in argv
    assert f"core.packedGitLimit={128 * 2**20}" in argv
    assert GitLimits(None).preexec(30) is None


def test_a_git_that_outlives_its_timeout_is_ended_with_its_children(tmp_path: Path) -> None:
    git = HostGit(tmp_path, timeout=1)
    marker = tmp_path / "child-alive"
    # An alias runs a shell whose child would outlive a killed parent.
    script = f"!sleep 3 && touch {marker}"
    with pytest.raises(HostToolError, match="did not finish within 1 seconds"):
        git.run("-c", f"alias.slow={script}", "slow")
    time.sleep(3)
    assert not marker.exists()


def test_oversized_bundle_is_refused_before_reading_it(world: World) -> None:
    bundle = world.session_bundle({b"a.txt": ("100644", b"1\n")})
    with pytest.raises(GateRefused, match="over the 10-byte limit"):
        do_import(world, bundle, GatePolicy(max_bundle_bytes=10))


def test_every_reason_is_reported(world: World) -> None:
    world.agent_commit(
        {
            b"docs/escape": ("120000", b"/etc/passwd"),
            b"vendor/x": ("160000", b"4" * 40),
            b"docs/.GIT/x": ("100644", b"x"),
        }
    )
    git(world.container, "update-ref", "refs/tags/v1", world.base)
    with pytest.raises(GateRefused) as caught:
        do_import(world, world.bundle(REF, f"^{world.base}"))
    # the tag, the symlink, the gitlink, '.GIT' as a tree and in a path, and fsck's finding
    assert len(caught.value.reasons) == 5
    assert "(and 4 more)" in caught.value.message


# ---------------------------------------------------------------------------------------------------------
# The container side, end to end


def run_export(world: World, bundle: Path, *, base: str | None) -> subprocess.CompletedProcess[str]:
    script = render_export_script(BRANCH, str(bundle), base=base)
    return subprocess.run(
        ["bash", "-c", script], cwd=world.container, capture_output=True, text=True, check=True
    )


def test_export_script_commits_leftover_work_and_the_gate_imports_it(world: World) -> None:
    (world.container / "src" / "app.py").write_text("print('changed')\n")
    git(world.container, "commit", "--quiet", "-am", "agent commit")
    (world.container / "README.md").write_text("edited, not committed\n")
    (world.container / "notes with space.txt").write_text("untracked\n")
    bundle = world.bundles / "out dir" / "session 3.bundle"
    bundle.parent.mkdir()

    run_export(world, bundle, base=world.base)

    assert git(world.container, "status", "--porcelain") == ""
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(bundle)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert heads[1::2] == [REF]
    result = do_import(world, bundle)
    assert (result.branch, result.commits, result.created) == (BRANCH, 2, True)
    assert git(world.host, "show", f"{REF}:notes with space.txt") == "untracked"
    assert git(world.host, "log", "-1", "--format=%s", REF) == "containai: uncommitted work at session end"
    assert not world.canary.exists()


def test_export_script_writes_no_bundle_when_there_is_nothing_new(world: World) -> None:
    bundle = world.bundles / "empty.bundle"
    bundle.write_text("stale")
    result = run_export(world, bundle, base=world.base)
    assert not bundle.exists()
    assert "no new commits" in result.stderr


def test_export_script_without_base_bundles_full_history(world: World) -> None:
    (world.container / "new.txt").write_text("n\n")
    bundle = world.bundles / "full.bundle"
    run_export(world, bundle, base=None)
    result = do_import(world, bundle)
    assert result.commits == 1


# ---------------------------------------------------------------------------------------------------------
# Pure rules


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b".git", True),
        (b".Git", True),
        (b"git~1", True),
        (b".git .", True),
        (b".g\xe2\x80\x8dit", True),
        (b"\xef\xbb\xbf.git", True),
        (b".github", False),
        (b"git", False),
        (b".gitignore", False),
    ],
)
def test_is_dotgit(name: bytes, expected: bool) -> None:
    assert is_dotgit(name) is expected


def test_check_path_names_the_bad_component() -> None:
    assert check_path(b"ok/fine.txt") == []
    assert check_path(b"a\\.git\\config") == [
        "'a\\\\.git\\\\config': path component 'a\\\\.git\\\\config' would be read as .git"
    ]
    assert check_path(b"a/../b") == ["'a/../b': path component '..' is not allowed"]
    assert check_path(b"\x1b[31mred") == ["'\\x1b[31mred': control character in path"]


@pytest.mark.parametrize(
    ("path", "target", "ok"),
    [
        (b"link", b"README.md", True),
        (b"docs/link", b"../README.md", True),
        (b"a/b/link", b"../../c/./d", True),
        (b"link", b"../x", False),
        (b"link", b"/etc/passwd", False),
        (b"link", b"C:/Windows", False),
        (b"link", b"", False),
        (b"a/link", b"x/../../y", False),
    ],
)
def test_check_symlink(path: bytes, target: bytes, ok: bool) -> None:
    assert (check_symlink(path, target) is None) is ok


def test_parse_bundle_header_reads_v3_with_object_format() -> None:
    sha = "a" * 40
    data = f"# v3 git bundle\n@object-format=sha1\n-{sha} base\n{sha} refs/heads/x\n\nPACK".encode()
    header = parse_bundle_header(io.BytesIO(data))
    assert (header.version, header.prerequisites, header.refs) == (3, (sha,), ((sha, "refs/heads/x"),))
    with pytest.raises(ValueError, match="unsupported bundle capability"):
        parse_bundle_header(io.BytesIO(data.replace(b"@object-format=sha1", b"@filter=blob:none")))


# ---------------------------------------------------------------------------------------------------------
# Partial import: the commits before a refused one land; the rest is kept as a bundle, in no ref


def partial_import(world: World, keep: Path) -> ImportResult:
    bundle = world.bundle(REF, f"^{world.base}")
    return import_bundle(
        world.host, bundle, branch=BRANCH, base=world.base, now=lambda: FIXED_NOW, keep_refused=keep
    )


def test_the_honest_commits_before_a_refused_one_land(world: World, tmp_path: Path) -> None:
    first = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    second = world.agent_commit({b"a.txt": ("100644", b"2\n")}, parent=first)
    hostile = world.agent_commit(
        {b"a.txt": ("100644", b"2\n"), b"docs/escape": ("120000", b"/etc/passwd")}, parent=second
    )
    world.agent_commit({b"a.txt": ("100644", b"3\n")}, parent=hostile)
    keep = tmp_path / "state" / "refused" / "rest.bundle"
    before = snapshot(world.host)
    result = partial_import(world, keep)
    assert (result.branch, result.tip, result.commits, result.created) == (BRANCH, second, 2, True)
    assert git(world.host, "rev-parse", BRANCH) == second
    refusal = result.refused
    assert refusal is not None
    assert (refusal.commit, refusal.subject, refusal.commits, refusal.bundle) == (
        hostile,
        "agent work",
        2,
        keep,
    )
    assert refusal.reasons == ("symlink 'docs/escape' -> '/etc/passwd': absolute target",)
    # The refused commits are in no ref, not even in the host's objects: only in the kept bundle.
    assert (
        subprocess.run(["git", "-C", str(world.host), "cat-file", "-e", hostile], check=False).returncode != 0
    )
    heads = git(world.host, "bundle", "list-heads", str(keep))
    assert heads == f"{git(world.container, 'rev-parse', REF)} {REF}"
    assert f"-{second}" in keep.read_bytes().decode("utf-8", "replace")
    assert_work_tree_untouched(before, snapshot(world.host))
    assert not world.canary.exists()


def test_a_refused_first_commit_lands_nothing_and_keeps_the_bundle(world: World, tmp_path: Path) -> None:
    hostile = world.agent_commit({b"docs/escape": ("120000", b"../../x")})
    world.agent_commit({b"a.txt": ("100644", b"1\n")}, parent=hostile)
    keep = tmp_path / "state" / "refused" / "rest.bundle"
    with pytest.raises(GateRefused) as caught:
        partial_import(world, keep)
    assert caught.value.bundle == keep
    assert str(keep) in caught.value.message
    assert git(world.host, "bundle", "list-heads", str(keep)).endswith(REF)
    assert git(world.host, "branch", "--list", BRANCH) == ""


def test_a_merge_that_brings_a_refused_commit_stops_the_line_before_it(world: World, tmp_path: Path) -> None:
    first = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    side = world.agent_commit({b"a.txt": ("100644", b"1\n"), b"up": ("120000", b"..")}, parent=first)
    tree = git(world.container, "rev-parse", f"{first}^{{tree}}")
    merge = git(world.container, "commit-tree", tree, "-p", first, "-p", side, "-m", "merge")
    git(world.container, "update-ref", REF, merge)
    result = partial_import(world, tmp_path / "rest.bundle")
    assert (result.tip, result.commits) == (first, 1)
    assert result.refused is not None
    assert result.refused.commit == side
    assert result.refused.commits == 2  # the side commit and the merge


def test_fsck_findings_are_charged_to_the_commit_that_brings_them(world: World, tmp_path: Path) -> None:
    first = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    world.agent_commit({b"a.txt": ("100644", b"1\n"), b"sub/.git/config": ("100644", b"x")}, parent=first)
    result = partial_import(world, tmp_path / "rest.bundle")
    assert (result.tip, result.commits) == (first, 1)
    assert result.refused is not None
    assert any(r.startswith("fsck:") and "hasDotgit" in r for r in result.refused.reasons)


def test_without_a_place_to_keep_it_the_refused_rest_is_only_described(world: World) -> None:
    first = world.agent_commit({b"a.txt": ("100644", b"1\n")})
    world.agent_commit({b"x": ("120000", b"/etc")}, parent=first)
    result = import_bundle(world.host, world.bundle(REF, f"^{world.base}"), branch=BRANCH, base=world.base)
    assert result.tip == first
    assert result.refused is not None
    assert result.refused.bundle is None
