"""The local ports' own behaviour that the faults rely on: a full host file system is a SessionError
that says so, session records are found by gc, a broker that does not answer is not running."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from containai.broker.session import BrokerPaths
from containai.errors import SessionError
from containai.session.ports import LocalHostState, ProcessBroker, host_writes


def test_a_full_file_system_is_a_session_error_with_the_fix(tmp_path: Path) -> None:
    target = tmp_path / "sessions" / "s1" / "squid.conf"
    with pytest.raises(SessionError) as caught, host_writes(target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))
    assert f"no space left on the host for {target}" in caught.value.message
    assert caught.value.hint is not None and str(target.parent) in caught.value.hint


def test_other_host_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), host_writes(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_local_state_writes_reads_and_finds_records(tmp_path: Path) -> None:
    host = LocalHostState(tmp_path / "sessions")
    host.write_text(host.root / "s1" / "session.json", '{"a": 1}')
    host.write_text(host.root / "s2" / "other.txt", "x")
    assert host.read_text(host.root / "s1" / "session.json") == '{"a": 1}'
    assert host.read_text(host.root / "s3" / "session.json") is None
    assert host.recorded("session.json") == [(host.root / "s1", '{"a": 1}')]
    host.mark_ready(host.root / "s1")
    assert host.is_ready(host.root / "s1")
    host.remove(host.root / "s1")
    assert host.recorded("session.json") == []


def test_a_broker_with_no_socket_is_not_running(tmp_path: Path) -> None:
    paths = BrokerPaths(tmp_path / "state", tmp_path / "audit.jsonl", tmp_path / "sockets")
    assert ProcessBroker().running(paths) is False
