"""The session's disk cap without an engine: the measuring (like du), the deciding, the watchdog's
loop on a FakeRuntime, the session part on fake ports, the settings, and what the user is shown."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from containai.config import (
    DEFAULT_DISK_FILES,
    DEFAULT_DISK_LIMIT,
    Flags,
    Paths,
    parse_size,
    resolve_settings,
)
from containai.errors import ConfigError, EngineUnavailable, SessionError, UsageError
from containai.runtime.base import ContainerInfo, ContainerSpec
from containai.runtime.fake import FakeRuntime
from containai.session import commands, naming
from containai.session.disk import (
    LIMIT_FILE,
    DiskLimit,
    DiskUsage,
    measure,
    measure_all,
    over_limit,
    read_stop,
    stop_reason,
    unreadable_roots,
    write_stop,
)
from containai.session.manager import SessionManager
from containai.session.parts import FinishOptions
from containai.session.testing import FakePorts, fake_ports
from containai.session.watchdog import Watchdog, running_pid
from containai.session.watchdog import start as start_process  # the real one (conftest stubs the module's)
from containai.session.watchdog import stop as stop_process

from .test_session_manager import planned, request, with_bundle

MIB = 2**20
FAR = 1e18  # a deadline never reached


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


# -- measuring


def test_measure_counts_allocated_blocks_and_every_entry(tmp_path: Path) -> None:
    write(tmp_path / "a" / "one", MIB)
    write(tmp_path / "a" / "b" / "two", 2 * MIB)
    usage = measure(tmp_path, max_files=100, deadline=FAR)
    assert 3 * MIB <= usage.size < 3 * MIB + 64 * 1024  # the data, and the folders' own blocks
    assert usage.files == 4 and usage.complete and usage.unreadable == ()


def test_a_sparse_file_counts_what_it_takes_not_what_it_claims(tmp_path: Path) -> None:
    with (tmp_path / "sparse").open("wb") as handle:
        handle.truncate(10 * 2**30)
    assert measure(tmp_path, max_files=10, deadline=FAR).size < MIB


def test_symlinks_are_not_followed_and_hard_links_count_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "big", 4 * MIB)
    root = tmp_path / "root"
    write(root / "data", MIB)
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(outside / "big")
    os.link(root / "data", root / "again")
    usage = measure(root, max_files=100, deadline=FAR)
    assert MIB <= usage.size < 2 * MIB
    assert usage.files == 4


def test_the_walk_stops_past_the_file_cap_or_its_time(tmp_path: Path) -> None:
    for index in range(1100):
        (tmp_path / f"f{index}").touch()
    capped = measure(tmp_path, max_files=100, deadline=FAR)
    assert capped.files == 101 and not capped.complete
    timed = measure(tmp_path, max_files=10**6, deadline=-1, clock=lambda: 0)
    assert not timed.complete and timed.files == 1024  # the time is checked every 1024 entries
    links = tmp_path / "links"
    write(links / "one", 4096)
    for index in range(200):
        os.link(links / "one", links / f"again-{index}")
    linked = measure(links, max_files=100, deadline=FAR)  # links to one inode count as entries too
    assert linked.files == 101 and not linked.complete


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hidden = tmp_path / "hidden"
    write(hidden / "secret", MIB)
    real = os.scandir

    def scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if path == str(hidden):  # as mode 000 is to anyone but root
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert measure(tmp_path, max_files=10, deadline=FAR).unreadable == (str(hidden),)
    gone = tmp_path / "gone"
    gone.mkdir()

    def vanishing(path: str) -> Iterator[os.DirEntry[str]]:
        if path == str(gone):  # removed between its listing and its walk: not a reason to stop
            raise FileNotFoundError(2, "No such file or directory", path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", vanishing)
    assert measure(tmp_path, max_files=10, deadline=FAR).unreadable == (str(hidden),)
    with pytest.raises(PermissionError):
        measure(hidden, max_files=10, deadline=FAR)  # the root itself: the caller cannot measure there
    usage, unmeasured = measure_all([hidden, tmp_path / "missing"], DiskLimit(MIB, 10))
    assert unmeasured == (hidden,) and usage == DiskUsage()


def test_places_this_user_cannot_list_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed, open_, missing = tmp_path / "closed", tmp_path / "open", tmp_path / "missing"
    closed.mkdir()
    open_.mkdir()
    real = os.scandir

    def scandir(path: Path) -> Iterator[os.DirEntry[str]]:
        if Path(path) == closed:  # as /var/lib/docker/volumes is to a user who is not root
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert unreadable_roots([closed, open_, missing]) == [closed]


def test_measure_all_is_one_total_within_one_budget(tmp_path: Path) -> None:
    write(tmp_path / "one" / "a", MIB)
    write(tmp_path / "two" / "b", MIB)
    usage, unmeasured = measure_all([tmp_path / "one", tmp_path / "two"], DiskLimit(10 * MIB, 100))
    assert usage.files == 2 and usage.size >= 2 * MIB and unmeasured == ()
    usage, _ = measure_all([tmp_path / "one", tmp_path / "two"], DiskLimit(10 * MIB, 0))
    assert usage.files == 1 and not usage.complete  # over the file cap in the first: the rest is not walked


# -- deciding


def test_over_limit_says_which_cap_and_by_how_much() -> None:
    limit = DiskLimit(50 * MIB, 1000)
    assert over_limit(DiskUsage(50 * MIB, 1000), limit) is None
    assert (
        over_limit(DiskUsage(60 * MIB, 10), limit)
        == "its disk use reached 60.0 MiB, over its cap of 50.0 MiB"
    )
    partial = over_limit(DiskUsage(60 * MIB, 10, complete=False), limit)
    assert partial is not None and "at least 60.0 MiB" in partial
    assert over_limit(DiskUsage(1, 1001), limit) == "it made more than 1000 files, over its cap of 1000"
    hidden = over_limit(DiskUsage(1, 2, unreadable=("/x/upper/hide\x1b[2J",)), limit)
    assert hidden is not None and "cannot be measured" in hidden and "/x/upper/hide" in hidden
    assert "\x1b" not in hidden  # the agent names its folders: shown made printable


def test_the_stop_record_round_trips_and_tells_the_fix(tmp_path: Path) -> None:
    assert read_stop(tmp_path) is None and stop_reason(tmp_path, "s") is None
    write_stop(tmp_path, DiskUsage(60 * MIB, 7), "its disk use reached 60.0 MiB")
    found = read_stop(tmp_path)
    assert found is not None and found.size == 60 * MIB and found.files == 7
    shown = stop_reason(tmp_path, "agent-proj")
    assert shown is not None and shown.startswith("agent-proj was stopped by ContainAI at ")
    assert "`remove-agent agent-proj` brings it home" in shown and "--disk-limit" in shown
    (tmp_path / "stopped.json").write_text("{not json")
    assert read_stop(tmp_path) is None


def test_a_limit_file_is_parsed_strictly() -> None:
    assert DiskLimit.parse(DiskLimit(5, 6).to_json()) == DiskLimit(5, 6)
    for bad in ([], {"max_bytes": 0, "max_files": 1}, {"max_bytes": "5", "max_files": 1}):
        with pytest.raises(ValueError, match="disk limit"):
            DiskLimit.parse(bad)


# -- the watchdog's loop, on a FakeRuntime


SESSION = "abc123"


@pytest.fixture()
def engine(tmp_path: Path) -> FakeRuntime:
    """An agent container and its volumes, the way a session makes them, with real folders behind."""
    runtime = FakeRuntime()
    runtime.volume_root = tmp_path / "volumes"
    labels = {naming.SESSION: SESSION, naming.ROLE: "agent"}
    runtime.create_container(ContainerSpec(image="img", name="agent", command=("hold",), labels=labels))
    runtime.start("agent")
    runtime.create_volume("ws", labels=labels)  # a clone's workspace
    runtime.create_volume("cache", labels=labels)
    runtime.create_volume("code", labels=labels, driver_opts={"type": "tmpfs", "o": "nr_blocks=1"})
    runtime.create_volume("overlay", labels=labels, driver_opts={"type": "overlay", "o": "lowerdir=/r"})
    runtime.create_volume("other", labels={naming.SESSION: "another"})
    return runtime


def dog(engine: FakeRuntime, tmp_path: Path, limit: DiskLimit, ticks: int = 3) -> Watchdog:
    state = tmp_path / "sessions" / SESSION  # a session's host state is named by its id
    (state / "upper").mkdir(parents=True, exist_ok=True)
    left = iter(range(ticks))
    return Watchdog(
        engine, container="agent", state_dir=state, limit=limit, sleep=lambda _s: next(left, None) is None
    )


def test_the_watchdog_measures_the_upper_layer_and_disk_volumes_only(
    engine: FakeRuntime, tmp_path: Path
) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(100 * MIB, 1000))
    roots = watchdog.roots(SESSION)
    assert roots == [
        watchdog.state_dir / "upper",
        tmp_path / "volumes" / "ws",
        tmp_path / "volumes" / "cache",
    ]
    write(tmp_path / "volumes" / "code" / "server", 2 * MIB)  # tmpfs: memory, held by the engine
    write(tmp_path / "volumes" / "overlay" / "repo-file", 2 * MIB)  # the repository under the overlay
    write(tmp_path / "volumes" / "other" / "x", 2 * MIB)  # another session's
    write(watchdog.state_dir / "upper" / "changed", MIB)
    write(tmp_path / "volumes" / "cache" / "pip", MIB)
    usage, reason = watchdog.check(SESSION)
    assert 2 * MIB <= usage.size < 3 * MIB and usage.files == 2 and reason is None


def test_under_its_cap_the_session_goes_on(engine: FakeRuntime, tmp_path: Path) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(10 * MIB, 1000))
    write(tmp_path / "volumes" / "ws" / "small", MIB)
    assert watchdog.run() == "asked to end"
    assert engine.container("agent").running  # type: ignore[union-attr]
    assert read_stop(watchdog.state_dir) is None


@pytest.mark.parametrize("where", ["upper", "ws", "cache"])
def test_over_its_cap_the_session_is_stopped_not_removed_and_says_why(
    engine: FakeRuntime, tmp_path: Path, where: str
) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(2 * MIB, 1000))
    base = watchdog.state_dir if where == "upper" else tmp_path / "volumes"
    write(base / where / "big", 3 * MIB)
    assert watchdog.run().startswith("stopped agent: its disk use reached 3.0 MiB")
    found = engine.container("agent")
    assert found is not None and found.status == "exited"  # stopped: the work is still in it
    assert engine.volumes_by_name.keys() >= {"ws", "cache"}
    record = read_stop(watchdog.state_dir)
    assert record is not None and "over its cap of 2.0 MiB" in record.reason


def test_too_many_files_stop_it_too(engine: FakeRuntime, tmp_path: Path) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(100 * MIB, 50))
    for index in range(60):
        (watchdog.state_dir / "upper" / f"tiny-{index}").touch()
    assert "more than 50 files" in watchdog.run()


def test_a_stopped_session_is_not_measured_and_a_removed_one_ends_the_watch(
    engine: FakeRuntime, tmp_path: Path
) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(MIB, 1000))
    write(watchdog.state_dir / "upper" / "big", 3 * MIB)
    engine.stop("agent")  # by the user, or an engine restart: it may come back
    ticks = 0

    def sleep(_seconds: float) -> bool:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            engine.remove_container("agent")
        return ticks > 5

    watchdog.sleep = sleep
    assert watchdog.run() == "container agent is gone"
    assert read_stop(watchdog.state_dir) is None  # never measured while stopped


def test_a_later_session_with_the_same_name_is_not_watched(engine: FakeRuntime, tmp_path: Path) -> None:
    engine.remove_container("agent")
    later = {naming.SESSION: "later", naming.ROLE: "agent"}
    engine.create_container(ContainerSpec(image="img", name="agent", command=("hold",), labels=later))
    engine.start("agent")
    watchdog = dog(engine, tmp_path, DiskLimit(MIB, 1000))
    write(watchdog.state_dir / "upper" / "big", 3 * MIB)
    assert watchdog.run() == "asked to end"  # never its container: it waits out its grace
    assert engine.container("agent").running  # type: ignore[union-attr]
    assert read_stop(watchdog.state_dir) is None


def test_the_watch_ends_with_the_sessions_host_state(engine: FakeRuntime, tmp_path: Path) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(MIB, 1000))
    (watchdog.state_dir / "upper").rmdir()
    watchdog.state_dir.rmdir()
    assert watchdog.run() == "the session's host state is gone"


def test_an_engine_that_does_not_answer_is_waited_for(
    engine: FakeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watchdog = dog(engine, tmp_path, DiskLimit(MIB, 1000), ticks=5)
    write(watchdog.state_dir / "upper" / "big", 3 * MIB)
    original, calls = engine.container, []

    def flaky(ref: str) -> ContainerInfo | None:
        calls.append(ref)
        if len(calls) <= 2:
            raise EngineUnavailable("cannot reach the container engine")
        return original(ref)

    monkeypatch.setattr(engine, "container", flaky)
    assert watchdog.run().startswith("stopped agent") and len(calls) == 3


# -- the real process: detached, found by its pid file, ended by stop()


def test_the_watchdog_process_detaches_and_is_ended_by_stop(tmp_path: Path) -> None:
    state = tmp_path / "sessions" / "f00d"
    state.mkdir(parents=True)
    (state / LIMIT_FILE).write_text(json.dumps(DiskLimit(MIB, 10).to_json()))
    pid = start_process(state, container="ghost", engine_url="unix:///nonexistent/engine.sock")
    log = state / "watchdog.log"
    try:
        assert running_pid(state) == pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "watching ghost" not in log.read_text():
            time.sleep(0.05)
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"PPid:\t{os.getpid()}\n" not in status  # nobody's child to reap: not this process's
    finally:
        stop_process(state)
    assert running_pid(state) is None  # stop() waits for it to end
    assert "watching ghost" in log.read_text() and "done: asked to end" in log.read_text()


def test_a_watchdog_that_cannot_start_says_where_to_look(tmp_path: Path) -> None:
    state = tmp_path / "sessions" / "beef"
    state.mkdir(parents=True)  # and no limit file: the process refuses at once
    with pytest.raises(SessionError, match="disk watchdog did not start") as refused:
        start_process(state, container="ghost", engine_url="unix:///nonexistent/engine.sock")
    assert str(state / "watchdog.log") in (refused.value.hint or "")


# -- the session part, on fake ports


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePorts:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return fake_ports()


def test_a_session_starts_its_watchdog_with_its_cap(ports: FakePorts) -> None:
    plan = planned(ports, request(disk=DiskLimit(50 * MIB, 500)))
    SessionManager(ports).provision(plan)
    assert json.loads(ports.host.files[plan.state_dir / LIMIT_FILE]) == {
        "max_bytes": 50 * MIB,
        "max_files": 500,
    }
    assert ports.watchdog.started == [
        {"state_dir": plan.state_dir, "container": plan.name, "engine_url": ports.runtime.choice.base_url}
    ]
    vscode = next(v for v in ports.runtime.volumes_by_name.values() if "-vscode-" in v.name)
    assert vscode.options["type"] == "tmpfs" and "nr_blocks=262144" in vscode.options["o"]
    assert f"uid={plan.workspace.uid}" in vscode.options["o"]
    cache = next(v for v in ports.runtime.volumes_by_name.values() if "-cache-" in v.name)
    assert dict(cache.options) == {}  # on disk, under the watchdog


def test_the_user_is_told_what_the_cap_cannot_count(ports: FakePorts, tmp_path: Path) -> None:
    ports.runtime.volume_root = tmp_path / "volumes"
    plan = planned(ports)
    ports.watchdog.hidden = {tmp_path / "volumes" / v for v in plan.planned("workspace").detail.home_volumes}  # type: ignore[union-attr]
    SessionManager(ports).provision(plan)
    [warning] = [w for w in ports.reporter.warnings if "disk cap" in w]
    assert "-cache-" in warning and "-vscode-" not in warning  # the tmpfs is the engine's to hold
    assert "run ContainAI as a user who can" in warning


def test_a_session_whose_watchdog_does_not_start_is_undone(ports: FakePorts) -> None:
    plan = planned(ports)
    ports.watchdog.fail_start = SessionError("the session's disk watchdog did not start")
    with pytest.raises(SessionError):
        SessionManager(ports).provision(plan)
    assert ports.runtime.containers({}) == [] and plan.state_dir in ports.host.removed
    assert plan.state_dir in ports.watchdog.stopped_dirs


def test_finish_says_why_the_watchdog_stopped_the_session_and_brings_the_work_home(ports: FakePorts) -> None:
    plan = planned(ports)
    SessionManager(ports).provision(plan)
    ports.runtime.stop(plan.name)  # as the watchdog did
    ports.watchdog.reasons[plan.state_dir] = "it was stopped: over its cap"
    with_bundle(ports)
    result = SessionManager(ports).finish(plan.name, FinishOptions())
    assert not result.kept and result.imported is not None
    assert result.warnings == ("it was stopped: over its cap",)
    assert plan.state_dir in ports.watchdog.stopped_dirs  # teardown ends the watch


def test_an_ephemeral_finish_waits_for_the_watchdogs_stop_then_starts_it_again(ports: FakePorts) -> None:
    plan = planned(ports)
    SessionManager(ports).provision(plan)
    ports.watchdog.reasons[plan.state_dir] = "over its cap"
    record = SessionManager(ports).record(plan.name)  # taken while it still ran
    ports.runtime.stop(plan.name)
    part = plan.parts[0][0]
    result = part.finish(ports, record, FinishOptions())
    assert result is not None and result.warnings == ("over its cap",)
    assert ports.runtime.container(plan.name).running  # type: ignore[union-attr]  # for the export


def test_a_kept_session_still_says_why_it_was_stopped(ports: FakePorts) -> None:
    plan = planned(ports)
    SessionManager(ports).provision(plan)
    ports.runtime.stop(plan.name)
    ports.watchdog.reasons[plan.state_dir] = "over its cap"
    ports.runtime.script_exec("containai export", code=1, stdout=b"export failed\n")
    result = SessionManager(ports).finish(plan.name, FinishOptions())
    assert result.kept and result.warnings == ("over its cap",)


def test_list_and_connect_say_why_a_session_was_stopped(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    labels = {naming.SESSION: SESSION, naming.ROLE: "agent", naming.MODE: "persistent"}
    runtime.create_container(ContainerSpec(image="img", name="agent", command=("hold",), labels=labels))
    runtime.start("agent")
    runtime.stop("agent")
    state_root = tmp_path / "sessions"
    (state_root / SESSION).mkdir(parents=True)
    with pytest.raises(UsageError, match="agent is not running"):
        commands.connect(runtime, "agent", state_root=state_root)
    write_stop(state_root / SESSION, DiskUsage(60 * MIB, 3), "its disk use reached 60.0 MiB")
    from containai.session.manager import list_sessions

    [row] = list_sessions(runtime, state_root=state_root)
    assert row.stopped is not None and "its disk use reached 60.0 MiB" in row.stopped
    [unexplained] = list_sessions(runtime)
    assert unexplained.stopped is None
    with pytest.raises(UsageError, match=r"agent was stopped by ContainAI at .*: its disk use reached"):
        commands.connect(runtime, "agent", state_root=state_root)
    with pytest.raises(UsageError, match=r"agent was stopped by ContainAI"):  # connect-agent without -n
        commands.pick_session(runtime, None, state_root=state_root)


def test_the_session_list_shows_the_reason(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from containai.cli.render import render_sessions, sessions_json
    from containai.session.manager import SessionRow

    row = SessionRow(
        "agent", "shell", "/r", "b", "exited", "persistent", "", "s", stopped="agent was stopped"
    )
    out = StringIO()
    render_sessions(Console(file=out, width=200), [row], commands.now_utc())
    assert " stopped " in out.getvalue() and "agent was stopped" in out.getvalue()
    assert sessions_json([row], commands.now_utc())["sessions"][0]["stopped"] == "agent was stopped"


# -- settings


def test_the_cap_comes_from_the_flag_the_environment_or_the_users_file(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")
    default = resolve_settings(Flags(), {}, paths=paths)
    assert default.disk_limit.value == parse_size(DEFAULT_DISK_LIMIT, "x") == 20 * 2**30
    assert (default.disk_files.value, default.disk_limit.source) == (DEFAULT_DISK_FILES, "default")
    assert DiskLimit() == DiskLimit(default.disk_limit.value, default.disk_files.value)
    paths.config_dir.mkdir()
    paths.config_file.write_text('[settings]\ndisk_limit = "40g"\ndisk_files = 2000\n')
    from_file = resolve_settings(Flags(), {}, paths=paths)
    assert (from_file.disk_limit.value, from_file.disk_files.value) == (40 * 2**30, 2000)
    env = resolve_settings(Flags(), {"CONTAINAI_DISK_LIMIT": "30g"}, paths=paths)
    assert env.disk_limit.value == 30 * 2**30 and env.disk_limit.source == "environment CONTAINAI_DISK_LIMIT"
    flag = resolve_settings(Flags(disk_limit="50m"), {"CONTAINAI_DISK_LIMIT": "30g"}, paths=paths)
    assert flag.disk_limit.value == 50 * MIB and flag.disk_limit.source == "flag --disk-limit"
    assert ("disk_limit", "50m", "flag --disk-limit") in flag.rows()
    with pytest.raises(ConfigError, match="under 1m"):
        resolve_settings(Flags(disk_limit="10k"), {}, paths=paths)


def test_a_repository_cannot_raise_its_own_cap(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")
    repo = tmp_path / "repo"
    (repo / ".containai").mkdir(parents=True)
    (repo / ".containai" / "config.toml").write_text('[settings]\ndisk_limit = "1t"\n')
    with pytest.raises(ConfigError, match="disk_limit is not a setting a repository may set"):
        resolve_settings(Flags(), {}, paths=paths, repo=repo)
