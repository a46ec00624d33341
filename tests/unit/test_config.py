from __future__ import annotations

from pathlib import Path

import pytest

from containai.config import Paths, record_ca, resolve_ca_cert
from containai.errors import UsageError

PEM = b"-----BEGIN CERTIFICATE-----\nMIIBflag\n-----END CERTIFICATE-----\n"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")


def pem(path: Path, name: str) -> Path:
    path.write_bytes(PEM.replace(b"flag", name.encode()))
    return path


def test_paths_under_containai_home(tmp_path: Path) -> None:
    paths = Paths.from_env({"CONTAINAI_HOME": str(tmp_path)})
    assert paths == Paths(tmp_path / "config", tmp_path / "state", tmp_path / "logs")
    assert paths.log_file == tmp_path / "logs" / "containai.log"
    assert paths.recorded_ca == tmp_path / "state" / "extra-ca.crt"
    assert paths.agents_dir == tmp_path / "config" / "agents"
    assert paths.sessions_dir == tmp_path / "state" / "sessions"


def test_paths_default_to_user_directories() -> None:
    paths = Paths.from_env({})
    assert paths.config_dir.name == "containai"
    assert paths.config_dir.is_absolute()


def test_flag_beats_environment_and_recorded(tmp_path: Path, paths: Paths) -> None:
    flag, env = pem(tmp_path / "flag.pem", "flag"), pem(tmp_path / "env.pem", "env")
    record_ca(PEM.replace(b"flag", b"rec"), paths)
    resolved = resolve_ca_cert(flag, {"CONTAINAI_EXTRA_CA_CERT": str(env)}, paths)
    assert resolved.value == flag.read_bytes()
    assert resolved.source == f"flag --ca-cert {flag}"


def test_environment_beats_recorded(tmp_path: Path, paths: Paths) -> None:
    env = pem(tmp_path / "env.pem", "env")
    record_ca(PEM.replace(b"flag", b"rec"), paths)
    resolved = resolve_ca_cert(None, {"CONTAINAI_EXTRA_CA_CERT": str(env)}, paths)
    assert resolved.value == env.read_bytes()
    assert resolved.source == f"environment CONTAINAI_EXTRA_CA_CERT={env}"


def test_recorded_when_nothing_else(paths: Paths) -> None:
    data = PEM.replace(b"flag", b"rec")
    record_ca(data, paths)
    resolved = resolve_ca_cert(None, {"CONTAINAI_EXTRA_CA_CERT": ""}, paths)
    assert resolved.value == data
    assert resolved.source == f"recorded at {paths.recorded_ca}"


def test_none_at_all(paths: Paths) -> None:
    resolved = resolve_ca_cert(None, {}, paths)
    assert resolved.value is None
    assert resolved.source == "none"


@pytest.mark.parametrize("use_flag", [True, False])
def test_non_pem_file_is_a_usage_error(tmp_path: Path, paths: Paths, use_flag: bool) -> None:
    bundle = tmp_path / "ca.der"
    bundle.write_bytes(b"\x30\x82\x01\x0a not pem")
    with pytest.raises(UsageError) as caught:
        if use_flag:
            resolve_ca_cert(bundle, {}, paths)
        else:
            resolve_ca_cert(None, {"CONTAINAI_EXTRA_CA_CERT": str(bundle)}, paths)
    assert str(bundle) in caught.value.message
    assert ("--ca-cert" if use_flag else "CONTAINAI_EXTRA_CA_CERT") in caught.value.message
    assert "PEM" in (caught.value.hint or "")


def test_missing_file_is_a_usage_error(tmp_path: Path, paths: Paths) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(UsageError, match="cannot read the CA bundle") as caught:
        resolve_ca_cert(missing, {}, paths)
    assert "No such file" in caught.value.message
    assert caught.value.hint


def test_directory_is_a_usage_error(tmp_path: Path, paths: Paths) -> None:
    with pytest.raises(UsageError, match="cannot read the CA bundle"):
        resolve_ca_cert(tmp_path, {}, paths)


def test_unreadable_file_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, paths: Paths
) -> None:
    bundle = pem(tmp_path / "secret.pem", "x")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # chmod 0 would not stop root, so refuse the read itself
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UsageError, match="Permission denied") as caught:
        resolve_ca_cert(bundle, {}, paths)
    assert str(bundle) in caught.value.message


def test_record_ca_writes_once(paths: Paths) -> None:
    record_ca(PEM, paths)
    assert paths.recorded_ca.read_bytes() == PEM
    first = paths.recorded_ca.stat()
    record_ca(PEM, paths)
    second = paths.recorded_ca.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not rewritten
    assert sorted(p.name for p in paths.state_dir.iterdir()) == ["extra-ca.crt"]


def test_record_ca_replaces_a_different_one(paths: Paths) -> None:
    record_ca(PEM, paths)
    other = PEM.replace(b"flag", b"new")
    record_ca(other, paths)
    assert paths.recorded_ca.read_bytes() == other
    assert sorted(p.name for p in paths.state_dir.iterdir()) == ["extra-ca.crt"]


def test_record_nothing_writes_nothing(paths: Paths) -> None:
    record_ca(None, paths)
    assert not paths.state_dir.exists()
