"""The session commands (run, launch, connect, list) on a FakeRuntime, with the host's real git and a
temporary state folder: the whole flow of a session with no engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from containai.agents.definition import get_agent
from containai.config import Paths
from containai.egress.sidecar import AuditCopy
from containai.errors import EXIT_WORK_KEPT, UsageError
from containai.images.catalog import PARTS, image_tag
from containai.runtime.base import ContainerSpec
from containai.runtime.fake import FakeRuntime
from containai.session import commands, manager
from containai.session.manager import SessionRequest
from containai.session.ports import LocalHostState
from containai.session.testing import RecordingReporter


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    path = tmp_path / "proj"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "base")
    return path


@pytest.fixture()
def runtime() -> FakeRuntime:
    engine = FakeRuntime()
    for part in PARTS:
        engine.add_image(image_tag(part, "dev"))
    return engine


@pytest.fixture()
def paths(tmp_path: Path) -> Paths:
    return Paths.from_env({"CONTAINAI_HOME": str(tmp_path / "containai")})


def request(repo: Path, **overrides: object) -> SessionRequest:
    fields: dict[str, object] = {
        "agent": get_agent("shell", None),
        "repo_path": repo,
        "cwd": repo,
        "channel": "dev",
        "mode": "ephemeral",
        "network_proxy": "restricted",
    }
    fields.update(overrides)
    return SessionRequest(**fields)  # type: ignore[arg-type]


def run(
    runtime: FakeRuntime, repo: Path, paths: Paths, reporter: RecordingReporter, **kw: object
) -> tuple[int, commands.PromptResult, list[bytes]]:
    written: list[bytes] = []
    code, result = commands.run_ephemeral(
        runtime,
        request(repo),
        paths=paths,
        reporter=reporter,
        prompt=kw.get("prompt", "make test"),  # type: ignore[arg-type]
        command=(),
        interactive=bool(kw.get("interactive", False)),
        write=lambda _stream, data: written.append(data),
    )
    return code, result, written


def test_a_prompt_session_passes_the_agents_exit_code_and_leaves_nothing(
    runtime: FakeRuntime, repo: Path, paths: Paths
) -> None:
    reporter = RecordingReporter()
    runtime.script_exec("make test", code=7, stdout=b"tests failed\n")
    runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    code, result, written = run(runtime, repo, paths, reporter)
    assert code == 7 and result.exit_status == 7
    assert written == [b"tests failed\n"]
    assert (result.branch, result.commits, result.kept) == (None, 0, False)
    assert result.message == "no new commits on shell/session-1"
    assert runtime.containers({}) == [] and runtime.volumes({}) == []
    assert git(repo, "branch", "--list").split() == ["*", "main"]  # the empty branch is gone
    assert not (paths.sessions_dir / result.session_id).exists()
    # The VS Code attach configuration was written for it.
    storage = Path.home() / ".config/Code/User/globalStorage/ms-vscode-remote.remote-containers"
    attach = json.loads(next((storage / "nameConfigs").iterdir()).read_text())
    assert attach["workspaceFolder"] == "/workspace"


def test_work_that_cannot_come_home_turns_success_into_75_and_keeps_the_session(
    runtime: FakeRuntime, repo: Path, paths: Paths
) -> None:
    reporter = RecordingReporter()
    runtime.script_exec("containai export", code=4, stdout=b"uncommitted work on another branch\n")
    code, result, _ = run(runtime, repo, paths, reporter)
    assert code == EXIT_WORK_KEPT and result.kept  # 75, not 125: ContainAI ran the agent
    assert result.kept_reason is not None and "uncommitted work on another branch" in result.kept_reason
    assert any("NOT brought back" in w for w in reporter.warnings)
    assert runtime.container(result.session) is not None


def test_without_a_terminal_an_interactive_agent_is_refused_and_cleaned_up(
    runtime: FakeRuntime, repo: Path, paths: Paths
) -> None:
    runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    with pytest.raises(UsageError, match="needs a terminal"):
        run(runtime, repo, paths, RecordingReporter(), prompt=None)
    assert runtime.containers({}) == []


def test_a_hangup_still_brings_the_work_home(runtime: FakeRuntime, repo: Path, paths: Paths) -> None:
    reporter = RecordingReporter()
    runtime.script_exec("make test", error=commands.Hangup(15))
    runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    code, _, _ = run(runtime, repo, paths, reporter)
    assert code == 125
    assert "stopping: bringing the session's work home first" in reporter.warnings
    assert runtime.containers({}) == []


def test_a_persistent_session_starts_the_agent_in_tmux(
    runtime: FakeRuntime, repo: Path, paths: Paths
) -> None:
    plan = commands.launch_persistent(
        runtime, request(repo, mode="persistent"), paths=paths, reporter=RecordingReporter(), command=()
    )
    tmux = [e for e in runtime.execs if e.argv[:2] == ("tmux", "new-session")]
    assert tmux and tmux[0].argv[-2:] == ("bash", "-l") and tmux[0].user == plan.user
    assert commands.pick_session(runtime, None) == plan.name
    assert commands.pick_session(runtime, plan.name) == plan.name


def test_a_persistent_session_whose_agent_does_not_start_is_undone(
    runtime: FakeRuntime, repo: Path, paths: Paths
) -> None:
    runtime.script_exec("tmux new-session", code=1, stdout=b"no server\n")
    with pytest.raises(UsageError, match="could not start shell in tmux: no server"):
        commands.launch_persistent(
            runtime, request(repo, mode="persistent"), paths=paths, reporter=RecordingReporter(), command=()
        )
    assert runtime.containers({}) == []
    assert git(repo, "branch", "--list").split() == ["*", "main"]


def test_picking_a_session(runtime: FakeRuntime, repo: Path, paths: Paths) -> None:
    with pytest.raises(UsageError, match="no persistent session is running"):
        commands.pick_session(runtime, None)
    with pytest.raises(UsageError, match="no session named ghost"):
        commands.pick_session(runtime, "ghost")
    for _ in range(2):
        commands.launch_persistent(
            runtime, request(repo, mode="persistent"), paths=paths, reporter=RecordingReporter(), command=()
        )
    with pytest.raises(UsageError, match="2 persistent sessions"):
        commands.pick_session(runtime, None)
    rows = manager.list_sessions(runtime)
    assert {r.branch for r in rows} == {"shell/session-1", "shell/session-2"}
    assert all(r.age(commands.now_utc()).endswith("s") for r in rows)


def test_connect_checks_the_session_and_its_agent(runtime: FakeRuntime, repo: Path, paths: Paths) -> None:
    plan = commands.launch_persistent(
        runtime, request(repo, mode="persistent"), paths=paths, reporter=RecordingReporter(), command=()
    )
    runtime.script_exec("tmux has-session", code=1, times=1)
    with pytest.raises(UsageError, match="has exited"):
        commands.connect(runtime, plan.name)
    assert commands.connect(runtime, plan.name) == 0
    attach = runtime.execs[-1]
    assert attach.tty and attach.argv[:2] == ("tmux", "attach-session") and attach.user == plan.user
    runtime.stop(plan.name)
    with pytest.raises(UsageError, match="is not running"):
        commands.connect(runtime, plan.name)


def test_the_egress_audit_comes_from_the_proxy_or_the_kept_copy(runtime: FakeRuntime, paths: Paths) -> None:
    def audit() -> AuditCopy:
        return commands.egress_audit(runtime, "s1", state_root=paths.sessions_dir, max_bytes=2**20)

    with pytest.raises(UsageError, match="no egress log for s1"):
        audit()
    kept = paths.sessions_dir.parent / "session-logs" / "s1-abc.egress.jsonl"
    kept.parent.mkdir(parents=True)
    kept.write_text("kept\n")
    assert audit() == AuditCopy("kept\n")
    kept.write_text(AuditCopy("kept\n", dropped=900, limit=1000).render())
    assert audit() == AuditCopy("kept\n", dropped=900, limit=1000)
    runtime.add_image("proxy")
    runtime.create_container(ContainerSpec(image="proxy", name="s1-proxy", command=(), labels={}))
    runtime.files[("s1-proxy", "/var/log/containai/egress.jsonl")] = b"live\n"
    assert audit() == AuditCopy("live\n", limit=2**20)


def test_the_local_host_state(tmp_path: Path) -> None:
    host = LocalHostState(tmp_path / "sessions")
    state = host.root / "abc"
    host.write_text(state / "squid.conf", "conf", 0o644)
    assert (state / "squid.conf").stat().st_mode & 0o777 == 0o644
    assert not host.is_ready(state)
    host.mark_ready(state)
    assert host.is_ready(state)
    host.prepare_layers(state, 1000, 1000)
    assert (state / "upper").is_dir() and (state / "work").is_dir()
    host.remove(state)
    assert not state.exists()
    host.remove(state)  # twice is fine
    me = host.launcher_id()
    assert host.launcher_alive(me)
    assert not host.launcher_alive(me.rpartition(":")[0] + ":999999999")
    assert not host.launcher_alive("another-boot:1")
