"""`containai selftest` without an engine: the probe's output parsed, the report rendered, and the
session always removed (the session core on fake ports)."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from containai.agents.definition import get_agent
from containai.cli.render import render_selftest
from containai.errors import EngineAPIError, SessionError
from containai.selftest.cases import CASES, Report, parse_probe_output
from containai.selftest.runner import probe_script, run_selftest
from containai.session import naming
from containai.session.manager import SessionManager, SessionRequest
from containai.session.testing import FakePorts, fake_ports

ALL_HELD = "".join(f"{case.id}\theld\tfine\n" for case in CASES)


def test_every_case_the_probe_reports_is_one_of_ours_and_every_one_of_ours_is_probed() -> None:
    script = probe_script().decode()
    said = set(re.findall(r"\bsay ([a-z0-9-]+) (?:held|broke)", script))
    said |= set(re.findall(r"^noexec ([a-z0-9-]+) ", script, re.MULTILINE))
    assert said == {case.id for case in CASES}
    assert len(CASES) >= 20
    assert all(case.title and case.fix for case in CASES)


def test_the_probe_sends_nothing_off_the_machine() -> None:
    script = probe_script().decode()
    addresses = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", script))
    assert addresses <= {"192.0.2.1", "127.0.0.1"}  # TEST-NET-1 (no route from the session) and loopback
    assert "selftest.invalid" in script and "2001:db8::1" in script


def test_all_held() -> None:
    results = parse_probe_output(ALL_HELD)
    assert [r.case for r in results] == list(CASES)
    assert all(r.held and r.detail == "fine" for r in results)
    assert Report(results).ok


def test_a_case_the_probe_did_not_report_broke() -> None:
    text = "".join(line + "\n" for line in ALL_HELD.splitlines() if not line.startswith("seccomp\t"))
    report = Report(parse_probe_output(text))
    assert [r.case.id for r in report.broke] == ["seccomp"]
    assert "did not report" in report.broke[0].detail


def test_an_empty_probe_breaks_every_case() -> None:
    assert len(Report(parse_probe_output("")).broke) == len(CASES)


def test_lines_not_of_the_shape_and_unknown_cases_are_ignored_and_the_first_word_stands() -> None:
    text = (
        "read-only-root\tbroke\t/ is mounted rw\n"
        "read-only-root\theld\ta later line cannot take it back\n"
        "no-such-case\tbroke\twhatever\n"
        "non-root\tmaybe\tnot a verdict\n"
        "garbage\n" + ALL_HELD
    )
    results = {r.case.id: r for r in parse_probe_output(text)}
    assert not results["read-only-root"].held and results["read-only-root"].detail == "/ is mounted rw"
    assert results["non-root"].held


def test_what_the_container_says_is_made_printable_and_short() -> None:
    text = "non-root\tbroke\t\x1b[31muid 0\x07" + "x" * 500 + "\n"
    detail = parse_probe_output(text)[0].detail
    assert "\x1b" not in detail and "\x07" not in detail
    assert len(detail) <= 210


def test_json_envelope() -> None:
    text = ALL_HELD.replace("no-dns\theld\tfine", "no-dns\tbroke\tselftest.invalid resolved")
    data = Report(parse_probe_output(text), seconds=7.25).to_json()
    assert data["version"] == 1 and data["held"] == len(CASES) - 1 and data["broke"] == 1
    assert data["seconds"] == 7.2 or data["seconds"] == 7.3
    broke = [c for c in data["cases"] if c["status"] == "broke"]
    assert broke == [
        {
            "id": "no-dns",
            "title": next(c.title for c in CASES if c.id == "no-dns"),
            "status": "broke",
            "detail": "selftest.invalid resolved",
            "fix": next(c.fix for c in CASES if c.id == "no-dns"),
        }
    ]
    assert all(c["fix"] is None for c in data["cases"] if c["status"] == "held")


def render(report: Report) -> str:
    out = io.StringIO()
    render_selftest(report, Console(file=out, width=300, color_system=None))
    return out.getvalue()


def test_the_table_says_held_or_broke_and_what_to_change() -> None:
    text = ALL_HELD.replace("tmp-noexec\theld\tfine", "tmp-noexec\tbroke\ta script written to /tmp ran")
    shown = render(Report(parse_probe_output(text), seconds=5))
    fix = next(c.fix for c in CASES if c.id == "tmp-noexec")
    assert "✗ broke" in shown and "a script written to /tmp ran" in shown and f"fix: {fix}" in shown
    assert f"{len(CASES) - 1} of {len(CASES)} held" in shown and "1 broke" in shown
    assert shown.count("fix:") == 1


def test_markup_from_the_container_is_shown_as_text() -> None:
    shown = render(Report(parse_probe_output("non-root\tbroke\t[bold red]uid 0[/]\n")))
    assert "[bold red]uid 0[/]" in shown


# -- the run, on fake ports


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePorts:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return fake_ports()


def request(**overrides: Any) -> SessionRequest:
    fields: dict[str, Any] = {
        "agent": get_agent("shell", None),
        "repo_path": None,
        "cwd": Path("/somewhere"),
        "channel": "dev",
        "mode": "ephemeral",
        "network_proxy": "restricted",
        "push": False,
        "name": "selftest",
        "scope": {"containai.selftest": "1"},
    }
    fields.update(overrides)
    return SessionRequest(**fields)


def everything(ports: FakePorts) -> list[str]:
    runtime = ports.runtime
    selector = {naming.SESSION: ""}
    return [
        *(c.name for c in runtime.containers(selector)),
        *(v.name for v in runtime.volumes(selector)),
        *(n.name for n in runtime.networks(selector)),
    ]


def test_the_probe_runs_as_the_agent_on_stdin_and_the_session_is_removed(ports: FakePorts) -> None:
    ports.runtime.script_exec("bash -s", stdout=ALL_HELD.encode())
    report = run_selftest(SessionManager(ports), request(), host_name="the-host")
    assert report.ok and len(report.results) == len(CASES)
    (call,) = [c for c in ports.runtime.execs if "bash -s" in " ".join(c.argv)]
    assert call.user and not call.user.startswith("0")
    assert ("shell-selftest", probe_script()) in ports.runtime.inputs
    assert everything(ports) == []


def test_the_probe_is_told_the_host_name_not_on_its_command_line(ports: FakePorts) -> None:
    ports.runtime.script_exec("bash -s", stdout=ALL_HELD.encode())
    run_selftest(SessionManager(ports), request(), host_name="the-host")
    (call,) = [c for c in ports.runtime.execs if "bash -s" in " ".join(c.argv)]
    assert "the-host" not in " ".join(call.argv)


def test_a_broken_case_is_reported(ports: FakePorts) -> None:
    broken = ALL_HELD.replace("loopback-only\theld\tfine", "loopback-only\tbroke\tinterfaces: eth0 lo")
    ports.runtime.script_exec("bash -s", stdout=broken.encode())
    report = run_selftest(SessionManager(ports), request(), host_name="h")
    assert [r.case.id for r in report.broke] == ["loopback-only"]
    assert everything(ports) == []


def test_the_session_is_removed_when_the_probe_fails(ports: FakePorts) -> None:
    ports.runtime.script_exec("bash -s", error=EngineAPIError("the engine went away"))
    with pytest.raises(EngineAPIError):
        run_selftest(SessionManager(ports), request(), host_name="h")
    assert everything(ports) == []


def test_the_session_is_removed_on_ctrl_c(ports: FakePorts) -> None:
    ports.runtime.script_exec("bash -s", error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_selftest(SessionManager(ports), request(), host_name="h")
    assert everything(ports) == []


def test_what_the_engine_left_is_collected_and_nothing_of_another_session(ports: FakePorts) -> None:
    ports.runtime.create_volume("someone-elses", labels={naming.SESSION: "other"})
    ports.runtime.script_exec("bash -s", stdout=ALL_HELD.encode())
    real = ports.runtime.remove_volume
    refused: list[str] = []

    def refuse_once(name: str) -> None:  # as Podman sometimes leaves a volume at teardown
        if name != "someone-elses" and not refused:
            refused.append(name)
            raise EngineAPIError("volume is in use")
        real(name)

    ports.runtime.remove_volume = refuse_once  # type: ignore[method-assign]
    run_selftest(SessionManager(ports), request(network_proxy="squid"), host_name="h")
    assert refused, "a volume was refused once"
    assert everything(ports) == ["someone-elses"]


def test_sigterm_ends_the_run_with_the_session_removed(ports: FakePorts) -> None:
    def terminated(*_args: object, **_kwargs: object) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises before this ends
        return 0

    ports.runtime.exec = terminated  # type: ignore[method-assign]
    with pytest.raises(SessionError, match="stopped before it finished"):
        run_selftest(SessionManager(ports), request(), host_name="h")
    assert everything(ports) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_what_cannot_be_removed_is_named_with_how_to_remove_it(ports: FakePorts) -> None:
    ports.runtime.script_exec("bash -s", stdout=ALL_HELD.encode())

    def refuse(name: str) -> None:
        raise EngineAPIError("volume is in use")

    ports.runtime.remove_volume = refuse  # type: ignore[method-assign]
    report = run_selftest(SessionManager(ports), request(network_proxy="squid"), host_name="h")
    assert report.ok
    (warning,) = [w for w in ports.reporter.warnings if "selftest's session left" in w]
    assert "`containai gc` removes them" in warning
