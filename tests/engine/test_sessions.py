"""Agent sessions against the real engine: the launchers, the workspace, the git gate, the hardening.

The scripted "agent" is the built-in ``shell`` agent with ``--prompt``: a bash script that edits and
commits like an agent would. Sessions are found and removed by their labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from containai.errors import EXIT_WORK_KEPT

from .conftest import BIN, CHANNEL, SESSION_SCOPE, USER_REPOS, Engine

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


SESSION_LABEL = "ai.containai.session"


def git(repo: Path, *args: str) -> str:
    # GIT_OPTIONAL_LOCKS=0: the test's own `git status` must not rewrite the index it compares.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


def make_repo(root: Path, owner: int | None = None, object_format: str = "sha1") -> Path:
    if owner is not None:
        # The owner's git (which ContainAI uses for a repo that is not root's) must reach the repo:
        # not under pytest's base folder, which every pytest run (another developer's too) makes 0700.
        root = Path(tempfile.mkdtemp(prefix="repos-", dir=USER_REPOS))
        root.chmod(0o711)
    repo = root / f"repo-{uuid.uuid4().hex[:6]}"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main", f"--object-format={object_format}")
    git(repo, "config", "user.name", "Host User")
    git(repo, "config", "user.email", "host@example.test")
    (repo / "README.md").write_text("hello\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "base")
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner}:{owner}", str(repo)], check=True)
        # The host user (root here) keeps using its repo; git asks it to vouch for a repo it does not own.
        git(repo, "config", "--global", "--add", "safe.directory", str(repo))
    return repo


def snapshot(repo: Path) -> tuple[str, str, str, str]:
    """What a session must never change on the host: HEAD, the index, the work tree and its status."""
    tree = subprocess.run(
        ["bash", "-c", "find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    index = (repo / ".git" / "index").read_bytes().hex()
    return git(repo, "rev-parse", "HEAD"), index, tree, git(repo, "status", "--porcelain")


def program(env: dict[str, str], name: str) -> str:
    """ContainAI's program ``name`` as ``env`` finds it: on its PATH (the egress tests put wrappers that
    inject their lab first, see lab_cli.py), else the installed one."""
    return shutil.which(name, path=env.get("PATH", "")) or str(BIN / name)


def containai(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program(env, "containai"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def launcher(
    env: dict[str, str], name: str, *args: str, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program(env, name), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def session_resources(client: Any, session: str) -> list[str]:
    selector = {"label": f"{SESSION_LABEL}={session}"}
    found = [c.name for c in client.containers.list(all=True, filters=selector)]
    found += [v.name for v in client.volumes.list(filters=selector)]
    found += [n.name for n in client.networks.list(filters=selector)]
    return found


def prompt(
    env: dict[str, str], repo: Path | None, script: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    args = ["run", "shell", *([str(repo)] if repo else []), "--channel", CHANNEL, "--prompt", script, *extra]
    return containai(env, *args)


AGENT_WORK = "echo from-agent > work.txt && git add work.txt && git commit -q -m 'agent: add work.txt' && echo agent-done"


@pytest.mark.parametrize("owner", [None, 1000], ids=["root-owned-clone", "user-owned-overlay"])
def test_prompt_session_brings_commits_home_and_leaves_the_host_untouched(
    env: dict[str, str], tmp_path: Path, engine: Engine, owner: int | None
) -> None:
    repo = make_repo(tmp_path, owner)
    before = snapshot(repo)
    result = prompt(env, repo, AGENT_WORK, "--json")
    assert result.returncode == 0, result.stderr
    assert "agent-done" in result.stdout
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["exit_status"] == 0
    assert summary["branch"] == "shell/session-1"
    assert summary["commits"] == 1
    assert "1 file changed" in summary["diffstat"]
    assert summary["workspace"] == ("overlay" if owner else "clone")
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "agent: add work.txt"
    assert git(repo, "show", "shell/session-1:work.txt") == "from-agent\n"
    assert git(repo, "rev-parse", "shell/session-1~1") == git(repo, "rev-parse", "main")
    assert snapshot(repo) == before
    assert session_resources(engine.client, summary["session_id"]) == []
    second = prompt(env, repo, AGENT_WORK, "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout[second.stdout.index("{") :])["branch"] == "shell/session-2"


@pytest.mark.parametrize("owner", [None, 1000], ids=["root-owned-clone", "user-owned-overlay"])
def test_a_sha256_repository_works_end_to_end(env: dict[str, str], tmp_path: Path, owner: int | None) -> None:
    repo = make_repo(tmp_path, owner, object_format="sha256")
    before = snapshot(repo)
    result = prompt(env, repo, AGENT_WORK, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert (summary["branch"], summary["commits"]) == ("shell/session-1", 1)
    assert len(git(repo, "rev-parse", "shell/session-1").strip()) == 64
    assert git(repo, "show", "shell/session-1:work.txt") == "from-agent\n"
    assert git(repo, "rev-parse", "shell/session-1~1") == git(repo, "rev-parse", "main")
    assert snapshot(repo) == before

    # The user's own branch takes the work, and its work tree moves with it.
    work = "echo on-main > main.txt && git add main.txt && git commit -qm 'agent: on main'"
    current = prompt(env, repo, work, "--use-current-branch", "--json")
    assert current.returncode == 0, current.stderr
    summary = json.loads(current.stdout[current.stdout.index("{") :])
    assert (summary["branch"], summary["commits"]) == ("main", 1)
    assert git(repo, "log", "-1", "--format=%s", "main").strip() == "agent: on main"
    assert (repo / "main.txt").read_text() == "on-main\n"
    assert git(repo, "status", "--porcelain") == ""


def test_uncommitted_work_is_committed_at_session_end(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    result = prompt(env, repo, "echo draft > draft.txt && git rm -q README.md")
    assert result.returncode == 0, result.stderr
    files = git(repo, "ls-tree", "--name-only", "shell/session-1").split()
    assert files == ["draft.txt"]


def test_exit_code_passes_through_and_work_still_comes_home(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    result = prompt(env, repo, "echo partial > p.txt; exit 7")
    assert result.returncode == 7, result.stderr
    assert git(repo, "show", "shell/session-1:p.txt") == "partial\n"


def test_prompt_output_streams_while_the_agent_runs(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    args = [
        str(BIN / "containai"),
        "run",
        "shell",
        str(repo),
        "--no-push",
        "--prompt",
        "echo first; sleep 4; echo second",
    ]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "first"
        assert process.poll() is None, "the first line arrived only after the agent had finished"
        rest, _ = process.communicate(timeout=120)
        assert rest.strip() == "second"
        assert process.returncode == 0
    finally:
        process.kill()


def test_no_push_leaves_no_branch(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    result = prompt(env, repo, AGENT_WORK, "--no-push")
    assert result.returncode == 0, result.stderr
    assert git(repo, "branch", "--list", "shell/*").strip() == ""


def test_without_a_repo_the_workspace_is_empty_and_nothing_is_pushed(
    env: dict[str, str], tmp_path: Path
) -> None:
    empty = tmp_path / "not-a-repo"
    empty.mkdir()
    result = subprocess.run(
        [str(BIN / "containai"), "run", "shell", "--prompt", "ls -A /workspace | wc -l; pwd"],
        env=env,
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "/workspace"]
    assert "empty workspace" in result.stderr


def test_repo_is_found_from_a_subdirectory(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "sub" / "dir").mkdir(parents=True)
    result = subprocess.run(
        [str(BIN / "containai"), "run", "shell", "--no-push", "--prompt", "cat README.md"],
        env=env,
        cwd=repo / "sub" / "dir",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"


def test_repo_mount_is_read_only_and_host_git_is_untouched(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path, 1000)
    refs_before = git(repo, "for-each-ref")
    script = (
        "touch /repo/x 2>/dev/null && echo WROTE-REPO; "
        "touch /repo/.git/x 2>/dev/null && echo WROTE-GIT; "
        "echo changed > README.md && git commit -qam changed-in-workspace; echo ok"
    )
    result = prompt(env, repo, script, "--no-push")
    assert result.returncode == 0, result.stderr
    assert "WROTE" not in result.stdout
    assert (repo / "README.md").read_text() == "hello\n"
    assert not (repo / "x").exists() and not (repo / ".git" / "x").exists()
    assert git(repo, "for-each-ref") == refs_before


@pytest.mark.parametrize("owner", [None, 1000], ids=["root-owned-clone", "user-owned-overlay"])
def test_the_repositorys_git_credentials_are_not_shown_to_the_agent(
    env: dict[str, str], tmp_path: Path, owner: int | None
) -> None:
    canary = f"canary{uuid.uuid4().hex}"
    repo = make_repo(tmp_path, owner)
    git(repo, "remote", "add", "origin", f"https://x-access-token:{canary}@git.example.test/o/r.git")
    git(repo, "config", "http.https://git.example.test/.extraheader", f"AUTHORIZATION: basic {canary}")
    git(repo, "config", "credential.helper", f"!echo password={canary}")
    if owner is not None:
        subprocess.run(["chown", f"{owner}:{owner}", str(repo / ".git" / "config")], check=True)
    config_before = (repo / ".git" / "config").read_text()
    # Everything the agent can read of the repository, and what its own git says.
    script = (
        "cat /repo/config /repo/.git/config 2>/dev/null; cat .git/config; git config --list; "
        "grep -rl " + canary + " /repo /workspace 2>/dev/null | sed 's/^/FOUND-IN /'; "
        "echo REMOTE=$(git config --file /repo/config --get remote.origin.url 2>/dev/null)"
        "$(git config --file /repo/.git/config --get remote.origin.url 2>/dev/null); "
        + AGENT_WORK
    )
    result = prompt(env, repo, script, "--json")
    assert result.returncode == 0, result.stderr
    assert canary not in result.stdout, [line for line in result.stdout.splitlines() if canary in line]
    assert "FOUND-IN" not in result.stdout
    # The agent still sees where the remote is, and its git still works: the work came home.
    assert "REMOTE=https://git.example.test/o/r.git" in result.stdout
    assert git(repo, "show", "shell/session-1:work.txt") == "from-agent\n"
    # The host's own config is untouched.
    assert (repo / ".git" / "config").read_text() == config_before


@pytest.mark.parametrize("owner", [None, 1000], ids=["root-owned-clone", "user-owned-overlay"])
def test_ignored_files_sockets_and_fifos_are_out_of_the_agents_reach(
    env: dict[str, str], tmp_path: Path, owner: int | None
) -> None:
    import socket
    import threading

    canary = f"canary{uuid.uuid4().hex}"
    repo = make_repo(tmp_path, owner)
    (repo / ".gitignore").write_text(".env\nsecrets/\n*.local\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore")
    (repo / ".env").write_text(f"TOKEN={canary}\n")
    (repo / "secrets").mkdir()
    (repo / "secrets" / "key").write_text(canary)
    (repo / "app.local").write_text(f"shown {canary}\n")
    os.mkfifo(repo / "pipe")
    # A service of the host's listening on a socket in the tree (an SSH agent, a database).
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(repo / "host.sock"))
    listener.listen(4)
    accepted: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted.append(conn.recv(64))
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    if owner is not None:
        subprocess.run(["chown", "-R", f"{owner}:{owner}", str(repo)], check=True)
    probe = (
        "for f in .env secrets/key app.local pipe host.sock /repo/.env; do "
        "[ -e $f ] && echo SEEN $f; done; "
        "cat .env secrets/key app.local 2>/dev/null; "
        "python3 -c 'import socket,sys\n"
        "for p in (\"host.sock\", \"/workspace/host.sock\"):\n"
        " s=socket.socket(socket.AF_UNIX)\n"
        " try: s.connect(p); s.sendall(b\"agent-was-here\"); print(\"CONNECTED\", p)\n"
        " except OSError: pass' ; "
        + AGENT_WORK
    )
    try:
        result = prompt(env, repo, probe, "--expose-ignored", "*.local")
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert "CONNECTED" not in result.stdout and accepted == []
    for hidden in (".env", "secrets/key", "pipe", "host.sock", "/repo/.env"):
        assert f"SEEN {hidden}\n" not in result.stdout
    assert f"TOKEN={canary}" not in result.stdout and f"\n{canary}" not in result.stdout
    if owner is not None:
        # The overlay shows what the user exposed, and nothing else that git ignores.
        assert "SEEN app.local" in result.stdout and f"shown {canary}" in result.stdout
    else:
        # A shared clone holds only what is committed, and says that the flag does not apply.
        assert "SEEN app.local" not in result.stdout
        assert "no effect on a shared-clone workspace" in result.stderr
    assert git(repo, "show", "shell/session-1:work.txt") == "from-agent\n"
    # The host's files are all still there.
    assert (repo / ".env").read_text() == f"TOKEN={canary}\n" and (repo / "secrets" / "key").exists()


def test_branch_options(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    named = prompt(env, repo, AGENT_WORK, "--branch", "feature/agent-x")
    assert named.returncode == 0, named.stderr
    assert "feature/agent-x" in git(repo, "branch", "--list", "feature/*")
    refused = prompt(env, repo, AGENT_WORK, "--branch", "feature/agent-x")
    assert refused.returncode == 125
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    forced = prompt(env, repo, "echo again > again.txt", "--branch", "feature/agent-x", "--force")
    assert forced.returncode == 0, forced.stderr
    archived = [b.strip() for b in git(repo, "branch", "--list", "feature/agent-x-archived-*").splitlines()]
    assert len(archived) == 1
    assert git(repo, "show", f"{archived[0]}:work.txt") == "from-agent\n"
    assert git(repo, "ls-tree", "--name-only", "feature/agent-x").split() == ["README.md", "again.txt"]
    bad = prompt(env, repo, "true", "--branch", "bad..name")
    assert bad.returncode == 125 and "not a valid branch name" in bad.stderr


def test_bad_input_gets_one_line_errors(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "dirty.txt").write_text("uncommitted\n")
    dirty = prompt(env, repo, "true")
    assert dirty.returncode == 125
    assert "dirty.txt" in dirty.stderr and "--force" in dirty.stderr
    unknown = containai(env, "run", "nosuchagent", str(repo), "--prompt", "x")
    assert unknown.returncode == 125 and "unknown agent 'nosuchagent'" in unknown.stderr
    # An image no engine has (the channels' images may all be built on a developer's machine).
    agents = Path(env["CONTAINAI_HOME"]) / "config" / "agents"
    agents.mkdir(parents=True)
    ghost = f"containai-test-ghost:{uuid.uuid4().hex[:8]}"
    (agents / "ghost.toml").write_text(
        f'name = "ghost"\nimage = "{ghost}"\ncommand = ["sh"]\nprompt_command = ["sh", "-c", "{{prompt}}"]\n'
    )
    missing = containai(env, "run", "ghost", str(repo), "--force", "--prompt", "x")
    assert missing.returncode == 125
    assert f"{ghost} is not built" in missing.stderr
    assert f"pull or build {ghost}" in missing.stderr
    not_repo = containai(env, "run", "shell", str(tmp_path), "--prompt", "x")
    assert not_repo.returncode == 125 and "not inside a git repository" in not_repo.stderr
    for result in (dirty, unknown, missing, not_repo):
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-2].startswith("error: ")


def test_hostile_history_is_refused_and_the_work_is_kept(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    result = prompt(env, repo, "ln -s /etc/passwd leak && git add leak && git commit -qm leak", "--json")
    assert result.returncode == EXIT_WORK_KEPT  # 75: the agent succeeded, its work stayed behind
    assert "leak" in result.stderr and "kept" in result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["kept"] is True
    assert git(repo, "rev-parse", "shell/session-1") == git(repo, "rev-parse", "main")
    assert session_resources(engine.client, summary["session_id"]) != []
    removed = launcher(env, "remove-agent", summary["session"], "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert session_resources(engine.client, summary["session_id"]) == []


TESTS = Path(__file__).resolve().parents[1]

# The agent plants a pack (a 1 MiB blob and a delta on it that builds 4 GiB), commits both files
# through plumbing (nothing reads the 4 GiB), and leaves its work tree as it was.
DELTA_BOMB = """set -e
read base bomb < <(python3 tools/plant_delta_bomb.py "$(git rev-parse --git-dir)" 4294967296)
tree=$( (git ls-tree HEAD; printf '100644 blob %s\\tbase.bin\\n100644 blob %s\\tbig.bin\\n' "$base" "$bomb") | git mktree)
git reset -q --soft "$(git commit-tree "$tree" -p HEAD -m 'a delta bomb')"
"""


def test_a_delta_bomb_is_refused_before_host_git_sees_it_and_the_work_is_kept(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    (repo / "tools").mkdir()
    for source in (TESTS / "packs.py", TESTS / "engine" / "plant_delta_bomb.py"):
        shutil.copy(source, repo / "tools" / source.name)
    git(repo, "add", "tools")
    git(repo, "commit", "-q", "-m", "the agent's tools")
    # Every host git ContainAI runs goes through this shim, which notes its arguments.
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "git-calls"
    real_git = shutil.which("git")
    (shims / "git").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real_git} "$@"\n')
    (shims / "git").chmod(0o755)
    shimmed = {**env, "PATH": f"{shims}:{env['PATH']}"}
    result = prompt(shimmed, repo, DELTA_BOMB, "--json")
    assert result.returncode == EXIT_WORK_KEPT, result.stderr
    reason = "its delta would build an object of 4294967296 bytes, over the 52428800-byte blob limit"
    assert reason in result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["kept"] is True and reason in summary["kept_reason"]
    assert "(OFS_DELTA at byte " in summary["kept_reason"] and "\n" not in summary["kept_reason"]
    ran = calls.read_text().splitlines()
    assert any(" bundle" in line or "rev-parse" in line for line in ran)  # the shim saw host git
    assert not [line for line in ran if "index-pack" in line or " fetch " in line]
    assert git(repo, "rev-parse", "shell/session-1") == git(repo, "rev-parse", "main")
    assert session_resources(engine.client, summary["session_id"]) != []  # the session is kept
    shown = containai(env, "logs", summary["session"], "--refused")
    assert shown.returncode == 0, shown.stderr
    assert (
        "reason: the bundle's pack is over the blob limit (CONTAINAI_GATE_MAX_BLOB): pack object"
        in shown.stdout
    )
    assert reason in shown.stdout
    removed = launcher(env, "remove-agent", summary["session"], "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert session_resources(engine.client, summary["session_id"]) == []


def test_the_honest_commits_before_a_refused_one_come_home(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    script = (
        "echo 1 > a.txt && git add a.txt && git commit -qm 'honest one' && "
        "echo 2 > b.txt && git add b.txt && git commit -qm 'honest two' && "
        "ln -s /etc/passwd leak && git add leak && git commit -qm 'steal' && "
        "echo 3 > c.txt && git add c.txt && git commit -qm 'after'"
    )
    result = prompt(env, repo, script, "--json")
    assert result.returncode == EXIT_WORK_KEPT, result.stderr
    name = json.loads(result.stdout[result.stdout.index("{") :])["session"]
    assert "2 commit(s) brought back to shell/session-1; commit " in result.stderr
    assert "(steal) was refused: symlink 'leak' -> '/etc/passwd': absolute target" in result.stderr
    assert f"`containai logs {name} --refused`" in result.stderr
    assert git(repo, "log", "--format=%s", "main..shell/session-1").split("\n")[:2] == [
        "honest two",
        "honest one",
    ]
    assert git(repo, "rev-list", "--count", "main..shell/session-1").strip() == "2"
    refused = json.loads(containai(env, "logs", name, "--refused", "--json").stdout)
    hostile = refused["refused_commit"]
    assert (refused["landed_commits"], refused["refused_subject"], refused["refused_commits"]) == (
        2,
        "steal",
        2,
    )
    # The refused commits are in no ref, nor even among the host's objects: only in the kept bundle.
    gone = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "-e", hostile], capture_output=True, check=False
    )
    assert gone.returncode != 0
    bundle = Path(refused["bundle"])
    assert bundle.is_file()
    assert git(repo, "bundle", "list-heads", str(bundle)).endswith(" refs/heads/shell/session-1\n")
    shown = containai(env, "logs", name, "--refused")
    assert shown.returncode == 0, shown.stderr
    assert f"refused commit: {hostile} steal" in shown.stdout
    assert "reason: symlink 'leak' -> '/etc/passwd': absolute target" in shown.stdout
    assert f"bundle: {bundle}" in shown.stdout
    assert session_resources(
        engine.client, json.loads(result.stdout[result.stdout.index("{") :])["session_id"]
    )
    removed = launcher(env, "remove-agent", name, "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert git(repo, "rev-list", "--count", "main..shell/session-1").strip() == "2"  # what landed stays


def test_eight_concurrent_sessions_get_eight_branches(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    """Eight sessions started at once on one repository: eight distinct branches, every one's work
    home, the host's branch and work tree untouched, nothing left on the engine or the host."""
    repo = make_repo(tmp_path)
    before = snapshot(repo)

    def one(index: int) -> subprocess.CompletedProcess[str]:
        script = f"echo {index} > n.txt && git add n.txt && git commit -qm 'session {index}'"
        return prompt(env, repo, script, "--memory", "256m", "--cpu", "0.25")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    for result in results:
        assert result.returncode == 0, result.stderr
    branches = sorted(b.strip() for b in git(repo, "branch", "--list", "shell/session-*").splitlines())
    assert branches == sorted(f"shell/session-{n}" for n in range(1, 9))
    contents = sorted(git(repo, "show", f"{b}:n.txt").strip() for b in branches)
    assert contents == sorted(str(n) for n in range(8))
    for result in results:
        assert "1 commit(s) brought back to shell/session-" in result.stderr, result.stderr
    assert snapshot(repo) == before
    assert not engine.client.containers.list(all=True, filters={"label": f"ai.containai.repo={repo}"})
    assert not engine.client.volumes.list(filters={"label": f"ai.containai.repo={repo}"})
    sessions = Path(env["CONTAINAI_HOME"]) / "state" / "sessions"
    assert not sessions.exists() or list(sessions.iterdir()) == []


def test_sigkill_mid_launch_then_gc_leaves_nothing(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    args = [str(BIN / "containai"), "run", "shell", str(repo), "--prompt", "sleep 300"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    filters = {"label": [f"ai.containai.repo={repo}", "ai.containai.role=agent"]}
    session = None
    for _ in range(600):
        found = engine.client.containers.list(all=True, filters=filters)
        if found:
            session = found[0].labels[SESSION_LABEL]
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert session is not None, "the session container never appeared"
    result = containai(env, "gc", "--label", SESSION_SCOPE)
    assert result.returncode == 0, result.stderr
    assert session_resources(engine.client, session) == [], result.stderr
    assert git(repo, "branch", "--list", "shell/*").strip() == ""


def test_persistent_session_through_tmux(env: dict[str, str], tmp_path: Path, engine: Engine) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed on the host to drive connect-agent")
    repo = make_repo(tmp_path)
    launched = launcher(env, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    listed = json.loads(launcher(env, "list-agents", "--json").stdout)["sessions"]
    assert [(s["name"], s["agent"], s["branch"], s["status"]) for s in listed] == [
        (name, "shell", "shell/session-1", "running")
    ]
    socket = f"containai-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    tmux_env = {**env, "TERM": "xterm"}
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "150", "-y", "40", "-s", "host", f"{BIN}/connect-agent"],
        env=tmux_env,
        check=True,
    )
    try:

        def screen() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "host"], capture_output=True, text=True, check=False
            ).stdout

        def wait_for(text: str) -> str:
            for _ in range(150):
                shown = screen()
                if text in shown:
                    return shown
                time.sleep(0.2)
            raise AssertionError(f"{text!r} never appeared:\n{screen()}")

        wait_for("$")
        subprocess.run(
            [
                *tmux,
                "send-keys",
                "-t",
                "host",
                "echo tmux-work > t.txt && git add t.txt && git commit -qm from-tmux && echo COMMITTED",
                "Enter",
            ],
            check=True,
        )
        wait_for("COMMITTED")
        # Ctrl-B D detaches: connect-agent ends, the agent's tmux session in the container goes on.
        subprocess.run([*tmux, "send-keys", "-t", "host", "C-b", "d"], check=True)
        for _ in range(100):
            if (
                subprocess.run(
                    [*tmux, "has-session", "-t", "host"], capture_output=True, check=False
                ).returncode
                != 0
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"connect-agent did not end on detach:\n{screen()}")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
    container = engine.client.containers.get(name)
    assert container.exec_run(["tmux", "has-session", "-t", "agent"], user="1000:1000").exit_code == 0
    removed = launcher(env, "remove-agent", name)
    assert removed.returncode == 0, removed.stderr
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "from-tmux"
    assert launcher(env, "list-agents", "--json").stdout.count('"name"') == 0


def test_session_containers_are_hardened(env: dict[str, str], tmp_path: Path, engine: Engine) -> None:
    repo = make_repo(tmp_path)
    launched = launcher(
        env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--memory", "1g", "--cpu", "1"
    )
    assert launched.returncode == 0, launched.stderr
    container = engine.client.containers.get(launched.stdout.strip())
    session = container.labels[SESSION_LABEL]
    host = container.attrs["HostConfig"]
    config = container.attrs["Config"]
    # Docker says ALL; Podman names each capability it dropped. The probe below finds none left.
    assert (host["CapDrop"] == ["ALL"] or engine.kind == "podman") and not host["CapAdd"]
    assert {"no-new-privileges:true", "no-new-privileges"} & set(host["SecurityOpt"])  # Docker's, Podman's
    assert not any("unconfined" in opt for opt in host["SecurityOpt"])
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    for mount in ("/tmp", "/home/agent", "/run/containai"):
        options = host["Tmpfs"][mount].split(",")
        assert {"noexec", "nosuid", "nodev"} <= set(options) and any(o.startswith("size=") for o in options)
    assert host["PidsLimit"] == 1024
    assert host["Memory"] == 2**30 and host["MemorySwap"] == 2**30
    assert host["NanoCpus"] == 10**9
    # Podman names them RLIMIT_CORE and so on.
    ulimits = {u["Name"].lower().removeprefix("rlimit_"): (u["Soft"], u["Hard"]) for u in host["Ulimits"]}
    assert ulimits["core"] == (0, 0) and "nofile" in ulimits
    assert host["NetworkMode"] == "none"
    for namespace in ("PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        assert host.get(namespace, "") != "host"
    assert config["User"] and not config["User"].startswith("0")
    sources = [m.get("Source", "") for m in container.attrs["Mounts"]]
    assert not any(s.endswith(".sock") or s.startswith(("/var/run", "/run")) for s in sources)
    assert not any(part in s for s in sources for part in (".ssh", ".gitconfig", ".git-credentials"))
    assert {m["Destination"]: m["RW"] for m in container.attrs["Mounts"]}["/repo"] is False
    # Inside, as the agent: no capabilities in any set, no way to gain privileges, nothing writable in /usr.
    probe = container.exec_run(
        [
            "bash",
            "-c",
            "grep -E '^(CapEff|CapPrm|CapAmb|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
            "touch /usr/x 2>&1; echo status=$?; cp /bin/true /tmp/t && /tmp/t; echo exec=$?",
        ],
        user=config["User"],
    )
    status = dict(line.split(":\t") for line in probe.output.decode().splitlines() if ":\t" in line)
    assert status["CapEff"] == status["CapPrm"] == status["CapAmb"] == status["CapBnd"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    output = probe.output.decode()
    assert "Read-only file system" in output and "status=1" in output
    assert "exec=126" in output  # /tmp is noexec
    removed = launcher(env, "remove-agent", container.name, "--no-push", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert session_resources(engine.client, session) == []


# What the VS Code attach configuration must withhold from a session (see docs/security.md).
VSCODE_PROTECTIONS = {
    "dev.containers.copyGitConfig": False,
    "dev.containers.gitCredentialHelperConfigLocation": "none",
    "dev.containers.dockerCredentialHelper": False,
    "dev.containers.mountWaylandSocket": False,
    "git.terminalAuthentication": False,
    "git.useIntegratedAskPass": False,
    "github.gitAuthentication": False,
    "remote.autoForwardPorts": False,
}
VSCODE_BLANKED = ("SSH_AUTH_SOCK", "GIT_ASKPASS", "VSCODE_GIT_IPC_HANDLE", "REMOTE_CONTAINERS_IPC", "DISPLAY")


def test_vscode_attach_lands_in_the_workspace_and_gets_nothing_of_the_host(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    # The user's VS Code settings already hold one of the settings only the host honours.
    user_settings = Path(env["HOME"]) / ".config/Code/User/settings.json"
    user_settings.parent.mkdir(parents=True, exist_ok=True)
    user_settings.write_text('{"dev.containers.copyGitConfig": false}')
    launched = launcher(env, "launch-agent", "shell", str(repo), "--channel", CHANNEL)
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    storage = Path(env["HOME"]) / ".config/Code/User/globalStorage/ms-vscode-remote.remote-containers"
    for path in (
        storage / "nameConfigs" / f"{name}.json",
        storage / "imageConfigs" / f"containai-base%3a{CHANNEL}.json",
    ):
        config = json.loads(path.read_text())
        assert (config["workspaceFolder"], config["remoteUser"]) == ("/workspace", "agent")
        for key, value in VSCODE_PROTECTIONS.items():
            assert config["settings"].get(key) == value, (path.name, key)
        for variable in VSCODE_BLANKED:
            assert config["remoteEnv"].get(variable) == "", (path.name, variable)
    # The launch says what to add to the user settings (not what they hold) and what stays open.
    note = launched.stderr
    assert '"dev.containers.gitCredentialHelperConfigLocation": "none",' in note
    assert '"dev.containers.dockerCredentialHelper": false,' in note
    assert '"dev.containers.copyGitConfig"' not in note
    assert "VS Code does not let ContainAI turn off" in note
    for words in ("channel to your machine", "SSH agent", "ports you forward", "/workspace/.vscode"):
        assert words in note, words
    # VS Code installs and runs its server in ~/.vscode-server: writable and executable for the agent,
    # while the rest of HOME is noexec.
    probe = engine.client.containers.get(name).exec_run(
        [
            "bash",
            "-c",
            "cp /bin/true ~/.vscode-server/t && ~/.vscode-server/t && echo SERVER-OK; "
            "cp /bin/true ~/t && ~/t 2>/dev/null || echo HOME-NOEXEC; "
            # Dev Containers forwards the GPG agent only into a container that has gpgconf.
            "command -v gpgconf >/dev/null || echo NO-GPG",
        ],
        user="1000:1000",
    )
    assert probe.output.decode().split() == ["SERVER-OK", "HOME-NOEXEC", "NO-GPG"], probe.output
    assert launcher(env, "remove-agent", name, "--no-push", "--yes").returncode == 0


def test_extra_docker_args_cannot_weaken_a_session(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    for bad in (
        "--privileged",
        "--cap-add SYS_ADMIN",
        "-v /var/run/docker.sock:/s",
        "--pids-limit -1",
        "--security-opt seccomp=unconfined",
        "--network host",
        "-e TOKEN=x",
    ):
        result = prompt({**env, "CONTAINAI_EXTRA_DOCKER_ARGS": bad}, repo, "true", "--no-push")
        assert result.returncode == 125, bad
        assert "CONTAINAI_EXTRA_DOCKER_ARGS" in result.stderr
    ok = prompt(
        {**env, "CONTAINAI_EXTRA_DOCKER_ARGS": "--pids-limit 256"},
        repo,
        "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
        "--no-push",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "256"


def test_shell_agent_runs_a_command_after_dashes(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    result = containai(
        env,
        "run",
        "shell",
        str(repo),
        "--channel",
        CHANNEL,
        "--",
        "bash",
        "-c",
        "echo made > build.txt; exit 4",
    )
    assert result.returncode == 4, result.stderr
    assert git(repo, "show", "shell/session-1:build.txt") == "made\n"


def test_blob_limit_is_configurable(env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    limited = {**env, "CONTAINAI_GATE_MAX_BLOB": "1k"}
    big = "head -c 4096 /dev/zero > big.bin && git add big.bin && git commit -qm big"
    result = prompt(limited, repo, big, "--json")
    assert result.returncode == EXIT_WORK_KEPT
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    # The pack scan refuses it before git has named it: by its size, not its path.
    assert (
        summary["kept"] is True
        and "declares 4096 bytes, over the 1024-byte blob limit" in summary["kept_reason"]
    )
    assert launcher(limited, "remove-agent", summary["session"], "--no-push", "--yes").returncode == 0
    allowed = prompt(env, repo, big)
    assert allowed.returncode == 0, allowed.stderr


def test_a_bad_allow_domain_is_refused_before_anything_is_created(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    result = prompt(env, repo, "true", "--allow-domain", "10.0.0.1")
    assert result.returncode == 125
    assert "--allow-domain" in result.stderr and "Traceback" not in result.stderr
    assert git(repo, "branch", "--list", "shell/*").strip() == ""
    assert not engine.client.containers.list(all=True, filters={"label": f"ai.containai.repo={repo}"})


def test_sigterm_to_the_launcher_still_brings_the_work_home(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    script = "echo done > late.txt && git add late.txt && git commit -qm 'before the signal' && sleep 300"
    args = [str(BIN / "containai"), "run", "shell", str(repo), "--channel", CHANNEL, "--prompt", script]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        filters = {"label": [f"ai.containai.repo={repo}", "ai.containai.role=agent"]}
        committed = False
        for _ in range(300):
            found = engine.client.containers.list(filters=filters)
            if found and found[0].exec_run(
                ["git", "-C", "/workspace", "log", "-1", "--format=%s"]
            ).output.strip() == (b"before the signal"):
                committed = True
                break
            time.sleep(0.1)
        assert committed, "the agent's commit never appeared"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert "bringing the session's work home first" in stderr
    assert git(repo, "log", "-1", "--format=%s", "shell/session-1").strip() == "before the signal"
    assert not engine.client.containers.list(all=True, filters={"label": f"ai.containai.repo={repo}"})


def test_list_remove_all_and_gc_touch_only_the_sessions_with_their_labels(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    """A developer's own session (another label, or none) survives this run's --all and gc."""
    repo = make_repo(tmp_path)
    ours = launcher(
        env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--network-proxy", "restricted"
    )
    assert ours.returncode == 0, ours.stderr
    foreign_env = {k: v for k, v in env.items() if k != "CONTAINAI_LABELS"}
    marker = f"containai-test.foreign={uuid.uuid4().hex[:8]}"
    theirs = launcher(
        foreign_env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--network-proxy", "restricted",
        "--label", marker, "--name", "foreign",
    )  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr
    foreign = theirs.stdout.strip()
    try:
        container = engine.client.containers.get(foreign)
        assert container.labels["containai-test.foreign"] == marker.split("=")[1]
        assert "containai-test.run" not in container.labels
        user = container.attrs["Config"]["User"]
        work = "echo theirs > theirs.txt && git add theirs.txt && git commit -qm theirs"
        assert container.exec_run(["bash", "-c", work], user=user, workdir="/workspace").exit_code == 0

        listed = json.loads(launcher(env, "list-agents", "--json").stdout)["sessions"]
        assert [s["name"] for s in listed] == [ours.stdout.strip()]
        removed = launcher(env, "remove-agent", "--all", "--no-push", "--yes", "--label", SESSION_SCOPE)
        assert removed.returncode == 0, removed.stderr
        assert containai(env, "gc", "--label", SESSION_SCOPE).returncode == 0
        with pytest.raises(Exception, match=r"No such container|Not Found"):
            engine.client.containers.get(ours.stdout.strip())
        # The other session is untouched and still running, with its work.
        assert engine.client.containers.get(foreign).status == "running"
        assert (
            container.exec_run(
                ["git", "log", "-1", "--format=%s"], user=user, workdir="/workspace"
            ).output.strip()
            == b"theirs"
        )
        bad = launcher(env, "list-agents", "--label", "ai.containai.session=x")
        assert bad.returncode == 125 and "ContainAI's own namespace" in bad.stderr
    finally:
        done = launcher(foreign_env, "remove-agent", foreign)
        assert done.returncode == 0, done.stderr
    assert git(repo, "show", "shell/session-2:theirs.txt") == "theirs\n"


def test_no_push_lists_what_it_would_discard_and_asks(
    env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    repo = make_repo(tmp_path)
    launched = launcher(
        env, "launch-agent", "shell", str(repo), "--channel", CHANNEL, "--network-proxy", "restricted"
    )
    assert launched.returncode == 0, launched.stderr
    name = launched.stdout.strip()
    container = engine.client.containers.get(name)
    work = "echo kept > kept.txt && git add kept.txt && git commit -qm 'agent: precious' && echo draft > draft.txt"
    assert (
        container.exec_run(
            ["bash", "-c", work], user=container.attrs["Config"]["User"], workdir="/workspace"
        ).exit_code
        == 0
    )

    # Without a terminal and without --yes: refused, with what would be lost; nothing is removed.
    refused = launcher(env, "remove-agent", name, "--no-push")
    assert refused.returncode == 125, refused.stderr
    assert "agent: precious" in refused.stderr and "draft.txt" in refused.stderr and "--yes" in refused.stderr
    assert engine.client.containers.get(name).status == "running"

    # At a terminal: asked; "n" keeps it, "y" discards it.
    socket = f"containai-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    try:
        for answer, kept in (("n", True), ("y", False)):
            subprocess.run(
                [*tmux, "new-session", "-d", "-x", "150", "-y", "40", "-s", "rm",
                 f"{BIN}/remove-agent {name} --no-push; echo EXIT=$?; sleep 30"],
                env={**env, "TERM": "xterm"}, check=True,
            )  # fmt: skip
            screen = ""
            for _ in range(300):
                screen = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", "rm"], capture_output=True, text=True
                ).stdout
                if "Discard it and remove" in screen:
                    break
                time.sleep(0.1)
            assert "agent: precious" in screen and "draft.txt" in screen, screen
            subprocess.run([*tmux, "send-keys", "-t", "rm", answer, "Enter"], check=True)
            for _ in range(300):
                screen = subprocess.run(
                    [*tmux, "capture-pane", "-p", "-t", "rm"], capture_output=True, text=True
                ).stdout
                if "EXIT=" in screen:
                    break
                time.sleep(0.1)
            assert ("EXIT=75" if kept else "EXIT=0") in screen, screen
            subprocess.run([*tmux, "kill-session", "-t", "rm"], capture_output=True, check=False)
            present = [c.name for c in engine.client.containers.list(all=True, filters={"name": f"^{name}$"})]
            assert present == ([name] if kept else []), screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
    assert git(repo, "branch", "--list", "shell/*").strip() == ""  # discarded, as asked
