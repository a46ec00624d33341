"""Text from a session reaches the user's terminal without its control sequences (issue 10, item 3).

One test per way in: the export's output, git's words in the gate and on the host, commit subjects,
the proxy's audit shown by `containai logs`, the MCP stub's messages, an engine's or an exec's error
text; and the two places everything is printed through (the error boundary and the reporter), which
guard whatever a message quotes.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from containai import hostgit
from containai.cli.app import print_error
from containai.cli.main import cli
from containai.cli.render import ConsoleReporter
from containai.egress.sidecar import AuditCopy
from containai.errors import EngineAPIError, SessionError
from containai.runtime.fake import FakeRuntime
from containai.session.parts import FinishOptions
from containai.session.testing import FakePorts, fake_ports
from containai.text import terminal_safe
from containai.workspace import gate
from containai.workspace.part import unexported_work

from .test_cli import invoke
from .test_session_manager import CANARY, REPO, manager, planned, request

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\u202eok"


def assert_clean(text: str) -> None:
    for bad in ("\x1b", "\x07", "\u202e"):
        assert bad not in text


@pytest.fixture(autouse=True)
def _close_log_file() -> Iterator[None]:
    yield
    logger = logging.getLogger("containai")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePorts:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return fake_ports()


def test_terminal_safe_escapes_controls_and_keeps_the_rest() -> None:
    assert terminal_safe("plain \\x1b and\ttabs\nand lines") == "plain \\x1b and\ttabs\nand lines"
    shown = terminal_safe(f"a{HOSTILE}b\x00\udc9b")
    assert_clean(shown)
    assert shown == "a\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1H\\u202eokb\\x00\\x9b"


def test_the_error_boundary_prints_no_control_sequence(capsys: pytest.CaptureFixture[str]) -> None:
    print_error(f"the engine refused: {HOSTILE}", f"hint {HOSTILE}")
    err = capsys.readouterr().err
    assert_clean(
        err.replace("\x1b[31m", "").replace("\x1b[1m", "").replace("\x1b[33m", "").replace("\x1b[0m", "")
    )
    assert "\\x1b]0;pwned\\x07" in err


def test_notes_and_warnings_are_printed_without_control_sequences() -> None:
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, force_terminal=False, width=200))
    reporter.note(f"note {HOSTILE}")
    reporter.warn(f"warn {HOSTILE} [bold]not markup[/bold]")
    shown = out.getvalue()
    assert_clean(shown)
    assert "\\x1b[2J" in shown and "[bold]not markup[/bold]" in shown


def test_an_exports_failure_shows_its_last_line_printable(ports: FakePorts) -> None:
    plan = planned(ports, repo=REPO)
    manager(ports).provision(plan)
    ports.runtime.script_exec("containai export", code=4, stdout=f"fatal: {HOSTILE}\n".encode())
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.kept
    assert_clean(result.message)
    assert "fatal: \\x1b]0;pwned\\x07" in result.message


def test_gits_words_in_the_gate_are_printable() -> None:
    shown = gate._last_line(f"error: bad ref refs/heads/{HOSTILE}\n".encode())
    assert_clean(shown)
    assert shown.startswith("error: bad ref refs/heads/\\x1b]0;pwned")


def test_gits_words_on_the_host_are_printable() -> None:
    # git's own messages already show a control character as "?"; what it passes on (a hook's, a
    # remote's) does not, and the host's git errors quote git's last line.
    shown = hostgit._last_line(f"remote: {HOSTILE}\n".encode())
    assert_clean(shown)
    assert shown.startswith("remote: \\x1b]0;pwned")


def test_commit_subjects_of_unexported_work_are_printable(ports: FakePorts) -> None:
    plan = planned(ports, repo=REPO)
    manager(ports).provision(plan)
    ports.runtime.script_exec("log --format=%h %s", stdout=f"abc1234 {HOSTILE}\n".encode())
    ports.runtime.script_exec("status --porcelain=v1", stdout=f"?? {HOSTILE}.txt\0".encode())
    found = unexported_work(ports, manager(ports).record(plan.name))
    for line in (*found.commits, *found.changed):
        assert_clean(line)


def test_the_mcp_stubs_failure_is_printable(ports: FakePorts) -> None:
    plan = planned(ports, request("claude", network_proxy="squid"), repo=REPO, mcp_servers=[CANARY])
    ports.runtime.script_exec("mcp-stub install", code=1, stdout=f"mcp-stub: error: {HOSTILE}\n".encode())
    with pytest.raises(SessionError) as caught:
        manager(ports).provision(plan)
    assert_clean(caught.value.message)
    assert "mcp-stub: error: \\x1b]0;pwned" in caught.value.message


def test_an_engines_error_text_in_a_finish_warning_is_printable(ports: FakePorts) -> None:
    plan = planned(ports, request(network_proxy="squid"), repo=REPO)
    manager(ports).provision(plan)
    ports.runtime.script_exec("test -s /tmp/containai-session.bundle", code=1)
    ports.runtime.fail("read_tail", EngineAPIError(f"the engine refused: {HOSTILE}"))
    result = manager(ports).finish(plan.name, FinishOptions())
    assert result.warnings and all("\x1b" not in w for w in result.warnings)
    assert any("the engine refused: \\x1b]0;pwned" in w for w in result.warnings)


def test_logs_show_the_audit_printable_and_never_as_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    kept = home / "state" / "session-logs" / "s1-abc.egress.jsonl"
    kept.parent.mkdir(parents=True)
    entry = {
        "time": "2026-12-03T08:00:00.000Z",
        "session": "abc",
        "method": f"GET{HOSTILE}",
        "host": f"[bold]evil[/bold]{HOSTILE}.test",
        "port": "80",
        "status": "403",
        "decision": "deny",
        "rule": "deny-not-allowed",
    }
    kept.write_text(AuditCopy(json.dumps(entry) + "\n", dropped=5000, limit=1000).render())
    assert invoke(cli, "logs", "s1", "--egress", home=home, runtime=FakeRuntime()) == 0
    captured = capsys.readouterr()
    assert_clean(captured.out)
    assert "[bold]evil[/bold]\\x1b]0;pwned" in captured.out
    assert "the egress audit was truncated: 5000 bytes" in captured.err
    assert "CONTAINAI_EGRESS_LOG_MAX" in captured.err
    assert invoke(cli, "logs", "s1", "--egress", "--json", home=home, runtime=FakeRuntime()) == 0
    as_json = capsys.readouterr().out
    assert_clean(as_json)
    assert json.loads(as_json)["host"] == entry["host"]  # JSON escapes it, and keeps it exact
