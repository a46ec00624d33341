"""Bounds on what the agent controls and the host handles (issue 10, item 3), through fake ports: the
export and the copy-out under a timeout and a size cap, the egress audit copied as a bounded tail that
says it was truncated, and an end that no single failing step can wedge. Each bound holds and the
work is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from containai.config import Bounds, Flags, Paths, resolve_settings
from containai.egress.sidecar import (
    AUDIT_DROPPED,
    AUDIT_LOG,
    AUDIT_ROTATED,
    AuditCopy,
    parse_audit,
    read_audit,
)
from containai.egress.squid import render_squid_conf
from containai.errors import ConfigError, EngineAPIError, ExecTimedOut, SessionError
from containai.runtime.base import ContainerSpec
from containai.runtime.fake import FakeRuntime
from containai.session import commands, naming
from containai.session.manager import SessionManager
from containai.session.parts import FinishOptions
from containai.session.testing import FakePorts, fake_ports
from containai.text import OutputTail
from containai.workspace.gate import ImportResult
from containai.workspace.part import unexported_work

from .test_egress_policy import _policy
from .test_session_manager import REPO, owned_by, planned, request

BUNDLE = "/tmp/containai-session.bundle"  # a path in the container


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePorts:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return fake_ports()


def started(ports: FakePorts, **overrides: Any) -> Any:
    plan = planned(ports, request(**overrides), repo=REPO)
    SessionManager(ports).provision(plan)
    ports.runtime.execs.clear()
    return plan


def finish(ports: FakePorts, name: str, **bounds: Any) -> Any:
    return SessionManager(ports).finish(name, FinishOptions(bounds=Bounds(**bounds)))


def assert_kept(ports: FakePorts, plan: Any, result: Any) -> None:
    assert result.kept and f"remove-agent {plan.name}" in result.message
    assert plan.name in owned_by(ports, plan.session_id)
    assert plan.state_dir not in ports.host.removed


# -- export and copy-out


def test_every_export_command_runs_under_the_export_timeout(ports: FakePorts) -> None:
    plan = started(ports)
    data = b"# v2 git bundle\n"
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=0)
    ports.runtime.script_exec(f"stat -c %s {BUNDLE}", stdout=f"{len(data)}\n".encode())
    ports.runtime.script_exec(f"cat {BUNDLE}", stdout=data)
    ports.git.imports.append(ImportResult("shell/session-1", "b" * 40, 1, False, False))
    result = finish(ports, plan.name, export_timeout=42)
    assert not result.kept
    assert [call.timeout for call in ports.runtime.execs] == [42, 42, 42, 42]


def test_an_export_that_hangs_is_stopped_and_the_work_kept(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec("containai export", hangs=True, stdout=b"counting objects\n")
    result = finish(ports, plan.name, export_timeout=90)
    assert_kept(ports, plan, result)
    assert "ran past the export_timeout of 90 s" in result.message
    assert "CONTAINAI_EXPORT_TIMEOUT" in result.message and "export_timeout in [settings]" in result.message


def test_a_copy_out_that_hangs_is_stopped_and_the_work_kept(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=0)
    ports.runtime.script_exec(f"stat -c %s {BUNDLE}", stdout=b"1000\n")
    ports.runtime.script_exec(f"cat {BUNDLE}", hangs=True, stdout=b"x" * 10)
    result = finish(ports, plan.name, export_timeout=5)
    assert_kept(ports, plan, result)
    assert "copying the work out" in result.message and "export_timeout of 5 s" in result.message
    assert ports.git.imported == []


def test_a_bundle_over_the_cap_is_not_copied_and_the_work_kept(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=0)
    ports.runtime.script_exec(f"stat -c %s {BUNDLE}", stdout=b"5000\n")
    result = finish(ports, plan.name, export_max=4096)
    assert_kept(ports, plan, result)
    assert "5000 bytes, over the export_max cap of 4096 bytes" in result.message
    assert "CONTAINAI_EXPORT_MAX" in result.message
    assert not any(call.argv[0] == "cat" for call in ports.runtime.execs)  # refused unread


def test_a_bundle_that_grows_past_the_cap_while_copied_is_refused(ports: FakePorts) -> None:
    plan = started(ports)
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=0)
    ports.runtime.script_exec(f"stat -c %s {BUNDLE}", stdout=b"100\n")
    ports.runtime.script_exec(f"cat {BUNDLE}", stdout=b"x" * 5000)
    result = finish(ports, plan.name, export_max=4096)
    assert_kept(ports, plan, result)
    assert "over the export_max cap of 4096 bytes" in result.message


def test_the_exports_output_is_held_as_a_tail_and_shown_printable(ports: FakePorts) -> None:
    plan = started(ports)
    flood = b"\x1b[2J" + b"noise " * 2_000_000 + b"\n\x1b]0;owned\x07last words\n"  # 12 MB
    ports.runtime.script_exec("containai export", code=4, stdout=flood)
    result = finish(ports, plan.name)
    assert_kept(ports, plan, result)
    assert "exporting the work failed" in result.message and "\\x1b]0;owned\\x07last words" in result.message
    assert "\x1b" not in result.message and len(result.message) < 1000


def test_output_tail_keeps_only_its_limit() -> None:
    tail = OutputTail(10, streams=("stdout",))
    tail("stdout", b"0123456789")
    tail("stderr", b"ignored")
    tail("stdout", b"abc")
    assert (tail.data, tail.seen) == (b"3456789abc", 13)


# -- the egress audit


def record(session: str, host: str, decision: str = "deny", rule: str = "deny-not-allowed") -> bytes:
    fields = {"time": "t", "session": session, "method": "CONNECT", "host": host}
    return json.dumps({**fields, "decision": decision, "rule": rule}).encode() + b"\n"


def proxy_with(runtime: FakeRuntime, files: dict[str, bytes]) -> str:
    runtime.add_image("proxy")
    runtime.create_container(ContainerSpec(image="proxy", name="p", command=(), labels={}))
    for path, data in files.items():
        runtime.files[("p", path)] = data
    return "p"


def test_a_whole_audit_is_copied_as_it_is() -> None:
    runtime = FakeRuntime()
    audit = record("s", "a.example") + record("s", "b.example")
    copy = read_audit(runtime, proxy_with(runtime, {AUDIT_LOG: audit}), max_bytes=2**20)
    assert copy == AuditCopy(audit.decode(), 0, 2**20) and not copy.truncated
    assert copy.render() == audit.decode() and copy.note() is None


def test_an_audit_over_the_cap_keeps_its_newest_whole_lines_and_says_so() -> None:
    runtime = FakeRuntime()
    lines = [record("s", f"host{n}.example") for n in range(1000)]
    audit = b"".join(lines)
    copy = read_audit(runtime, proxy_with(runtime, {AUDIT_LOG: audit}), max_bytes=10_000)
    kept = copy.text.encode()
    assert len(kept) <= 10_000 and audit.endswith(kept) and kept.startswith(b'{"time"')
    assert copy.dropped == len(audit) - len(kept)
    assert len(parse_audit(copy.text)) == kept.count(b"\n")
    again = AuditCopy.parse(copy.render())
    assert again == copy and again.truncated
    note = copy.note() or ""
    assert f"{copy.dropped} bytes of its earliest requests were dropped" in note and "10000" in note


def test_the_rotated_audit_comes_first_and_what_rotation_dropped_is_counted() -> None:
    runtime = FakeRuntime()
    older, newer = record("s", "old.example"), record("s", "new.example")
    files = {AUDIT_ROTATED: older, AUDIT_LOG: newer, AUDIT_DROPPED: b"123456\n"}
    copy = read_audit(runtime, proxy_with(runtime, files), max_bytes=2**20)
    assert copy.text == (older + newer).decode() and copy.dropped == 123456
    cut = read_audit(runtime, "p", max_bytes=len(newer) + 10)  # only part of the rotated one fits
    assert cut.text == newer.decode() and cut.dropped == 123456 + len(older)


def test_an_old_host_copy_without_the_first_line_reads_as_whole() -> None:
    text = record("s", "a.example").decode()
    assert AuditCopy.parse(text) == AuditCopy(text)
    assert AuditCopy.parse('{"containai-truncated": "no"}\n') == AuditCopy('{"containai-truncated": "no"}\n')


def test_finish_keeps_a_capped_audit_says_it_was_truncated_and_still_summarises(ports: FakePorts) -> None:
    plan = started(ports, network_proxy="squid")
    proxy = f"{plan.name}-proxy"
    flood = b"".join(record(plan.session_id, "forbidden.example") for _ in range(20_000))  # ~2.6 MB
    ports.runtime.files[(proxy, AUDIT_LOG)] = flood
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=1)
    result = finish(ports, plan.name, egress_log_max=64 * 2**10)
    assert not result.kept and owned_by(ports, plan.session_id) == []
    kept = ports.host.root.parent / "session-logs" / f"{plan.name}-{plan.session_id}.egress.jsonl"
    copy = AuditCopy.parse(ports.host.files[kept])
    assert copy.truncated and len(copy.text) <= 64 * 2**10 and copy.limit == 64 * 2**10
    assert result.egress is not None and "forbidden.example" in result.egress
    assert any(
        "the egress audit was truncated" in w and "CONTAINAI_EGRESS_LOG_MAX" in w for w in result.warnings
    )


def test_the_proxy_rotates_its_audit_at_half_the_cap(ports: FakePorts) -> None:
    plan = planned(ports, request(network_proxy="squid", bounds=Bounds(egress_log_max=8 * 2**20)), repo=REPO)
    egress = plan.planned("egress").detail  # type: ignore[union-attr]
    entrypoint = egress.proxy.entrypoint
    assert entrypoint[:2] == ("bash", "-c") and entrypoint[-1] == str(4 * 2**20)
    assert "exec /usr/local/bin/containai-proxy-start" in entrypoint[2]  # squid stays PID 1
    assert f"access_log stdio:{AUDIT_LOG} logformat=containai_json rotate=1\n" in egress.squid_conf


def test_squid_conf_rotates_only_when_asked() -> None:
    assert " rotate=" not in render_squid_conf(_policy())
    assert "logformat=containai_json rotate=2\n" in render_squid_conf(_policy(), access_log_rotate=2)
    with pytest.raises(ConfigError):
        render_squid_conf(_policy(), access_log_rotate=-1)


# -- the end is never wedged


def test_an_unreadable_audit_neither_keeps_the_session_nor_stops_its_end(ports: FakePorts) -> None:
    plan = started(ports, network_proxy="squid")
    ports.runtime.fail("read_tail", EngineAPIError("the engine refused to read the audit"))
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=1)
    result = finish(ports, plan.name)
    assert not result.kept and owned_by(ports, plan.session_id) == []
    assert any("egress could not finish: the engine refused to read the audit" in w for w in result.warnings)


def test_every_teardown_step_runs_and_each_failure_is_reported(ports: FakePorts) -> None:
    plan = started(ports, network_proxy="squid")
    data = b"# v2 git bundle\n"
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=0)
    ports.runtime.script_exec(f"stat -c %s {BUNDLE}", stdout=f"{len(data)}\n".encode())
    ports.runtime.script_exec(f"cat {BUNDLE}", stdout=data)
    ports.git.imports.append(ImportResult("shell/session-1", "b" * 40, 1, False, False))
    ports.runtime.fail("remove_container", EngineAPIError("the engine refused to remove \x1b[2Jit"))
    ports.runtime.fail("remove_volume", EngineAPIError("the engine refused to remove a volume"))
    result = finish(ports, plan.name)
    assert not result.kept and result.imported is not None  # the work is home, and that is said
    assert result.message == "1 commit(s) brought back to shell/session-1"
    failed = [w for w in result.warnings if w.startswith(f"removing {plan.name} failed")]
    assert len(failed) == 2 and "\x1b" not in failed[0] and "\\x1b[2Jit" in failed[0]
    assert any("`containai gc`" in w for w in result.warnings)
    assert len(owned_by(ports, plan.session_id)) == 2  # one container and one volume; the rest went
    assert plan.state_dir in ports.host.removed and plan.state_dir in ports.broker.stopped


def test_gc_goes_on_past_a_session_it_cannot_end(ports: FakePorts, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = started(ports), started(ports)
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=1)
    ports.runtime.create_volume("orphan", labels={naming.SESSION: "0rphan"})
    asked: list[str] = []

    def launcher_alive(launcher: str) -> bool:
        asked.append(launcher)
        if len(asked) == 1:
            raise OSError("cannot read /proc")
        return False

    monkeypatch.setattr(ports.host, "launcher_alive", launcher_alive)
    removed = SessionManager(ports).gc()
    assert len(removed) == 2 and "0rphan" in removed  # the one after the failure, and the orphan
    assert any("could not be removed: OSError: cannot read /proc" in w for w in ports.reporter.warnings)
    assert len([p for p in (first, second) if owned_by(ports, p.session_id)]) == 1


def test_export_timeouts_from_the_fake_need_a_timeout() -> None:
    runtime = FakeRuntime()
    runtime.add_image("i")
    runtime.create_container(ContainerSpec(image="i", name="c", command=(), labels={}))
    runtime.start("c")
    runtime.script_exec("sleep", hangs=True)
    from containai.runtime.base import ExecSpec

    with pytest.raises(ExecTimedOut, match="sleep in c ran past its limit of 2 s"):
        runtime.exec("c", ExecSpec(("sleep", "9"), timeout=2))
    with pytest.raises(AssertionError, match="nothing would ever stop it"):
        runtime.exec("c", ExecSpec(("sleep", "9")))


# -- the settings


def test_the_bounds_come_from_the_settings_with_their_sources(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")
    default = resolve_settings(Flags(), {}, paths=paths)
    assert default.bounds == Bounds() and default.export_timeout.source == "default"
    environ = {
        "CONTAINAI_EXPORT_TIMEOUT": "90s",
        "CONTAINAI_EXPORT_MAX": "1g",
        "CONTAINAI_EGRESS_LOG_MAX": "1m",
    }
    given = resolve_settings(Flags(), environ, paths=paths)
    assert given.bounds == Bounds(export_timeout=90, export_max=2**30, egress_log_max=2**20)
    assert given.egress_log_max.source == "environment CONTAINAI_EGRESS_LOG_MAX"
    rows = {name: value for name, value, _ in given.rows()}
    assert (rows["export_timeout"], rows["export_max"], rows["egress_log_max"]) == ("90s", "1g", "1m")
    paths.config_dir.mkdir(parents=True)
    paths.config_file.write_text("[settings]\nexport_timeout = 30\negress_log_max = '2m'\n")
    filed = resolve_settings(Flags(), {}, paths=paths)
    assert filed.bounds == Bounds(export_timeout=30, egress_log_max=2 * 2**20)
    for name, bad in (("EXPORT_TIMEOUT", "0"), ("EXPORT_TIMEOUT", "soon"), ("EGRESS_LOG_MAX", "1k")):
        with pytest.raises(ConfigError, match=name.lower()):
            resolve_settings(Flags(), {f"CONTAINAI_{name}": bad}, paths=paths)


def test_a_large_host_copy_is_read_only_to_its_cap(tmp_path: Path) -> None:
    """A copy kept by an older ContainAI (read whole then, up to 64 MiB) is read from its end."""
    lines = [record("s", f"host{n}.example") for n in range(1000)]
    kept = tmp_path / "s1-abc.egress.jsonl"
    kept.write_bytes(b"".join(lines))
    copy = commands.read_kept_audit(kept, max_bytes=5000)
    assert copy.truncated and len(copy.text) <= 5000 and copy.text.startswith('{"time"')
    assert copy.dropped + len(copy.text) == kept.stat().st_size
    assert commands.read_kept_audit(kept, max_bytes=2**20) == AuditCopy(b"".join(lines).decode())


def test_gc_ends_a_dead_session_whose_audit_cannot_be_read(ports: FakePorts) -> None:
    plan = started(ports, network_proxy="squid")
    ports.runtime.script_exec(f"test -s {BUNDLE}", code=1)
    ports.runtime.fail("read_tail", EngineAPIError("the engine refused to read the audit"))
    assert SessionManager(ports).gc() == [plan.session_id]
    assert owned_by(ports, plan.session_id) == []
    assert any("egress could not finish" in w for w in ports.reporter.warnings)


def test_what_no_push_would_discard_is_read_under_the_timeout_and_to_a_cap(ports: FakePorts) -> None:
    plan = started(ports)
    many = b"".join(b"?? file-%07d.txt\0" % n for n in range(100_000))  # 1.8 MB of names
    ports.runtime.script_exec("status --porcelain=v1", stdout=many)
    ports.runtime.script_exec("log --format=%h %s", stdout=b"abc1234 work\n")
    found = unexported_work(ports, SessionManager(ports).record(plan.name), Bounds(export_timeout=7))
    assert found.commits == ("abc1234 work",)
    assert 50_000 < len(found.changed) < 100_000 and found.changed[0] == "file-0000000.txt"
    assert all(name.startswith("file-") and name.endswith(".txt") for name in found.changed)
    assert {call.timeout for call in ports.runtime.execs} == {7}
    ports.runtime.script_exec("status --porcelain=v1", hangs=True)
    with pytest.raises(SessionError, match=r"reading the workspace .* ran past the export_timeout of 7 s"):
        unexported_work(ports, SessionManager(ports).record(plan.name), Bounds(export_timeout=7))
