from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from containai.errors import ConfigError, EngineUnavailable
from containai.runtime.select import EngineChoice, resolve_engine

HOME = Path("/home/dev")
DOCKER_SOCK = Path("/var/run/docker.sock")
PODMAN_ROOT_SOCK = Path("/run/podman/podman.sock")


def only(*present: Path) -> Callable[[Path], bool]:
    """An ``exists`` that sees just these paths, so the host's real sockets never count."""
    return lambda path: path in present


def test_flag_beats_environment() -> None:
    environ = {"CONTAINAI_RUNTIME": "podman", "DOCKER_HOST": "tcp://10.0.0.1:2375"}
    choice = resolve_engine("docker", environ, home=HOME, exists=only(DOCKER_SOCK))
    # docker asked for by flag still goes where DOCKER_HOST says a Docker engine lives
    assert choice == EngineChoice("tcp://10.0.0.1:2375", "docker", "flag --runtime, at DOCKER_HOST")


def test_flag_podman_ignores_docker_host() -> None:
    environ = {"DOCKER_HOST": "tcp://10.0.0.1:2375"}
    choice = resolve_engine("podman", environ, home=HOME, exists=only(PODMAN_ROOT_SOCK, DOCKER_SOCK))
    assert choice == EngineChoice(f"unix://{PODMAN_ROOT_SOCK}", "podman", "flag --runtime")


def test_environment_runtime_beats_docker_host() -> None:
    environ = {"CONTAINAI_RUNTIME": "Podman", "DOCKER_HOST": "tcp://10.0.0.1:2375"}
    choice = resolve_engine(None, environ, home=HOME, exists=only(PODMAN_ROOT_SOCK, DOCKER_SOCK))
    assert choice.base_url == f"unix://{PODMAN_ROOT_SOCK}"
    assert choice.requested == "podman"
    assert choice.source == "environment CONTAINAI_RUNTIME"


def test_docker_host_beats_sockets() -> None:
    choice = resolve_engine(
        None, {"DOCKER_HOST": "unix:///srv/docker.sock"}, home=HOME, exists=only(DOCKER_SOCK)
    )
    assert choice == EngineChoice("unix:///srv/docker.sock", None, "environment DOCKER_HOST")
    assert choice.describe() == "unix:///srv/docker.sock (environment DOCKER_HOST)"


def test_empty_flag_and_environment_fall_through() -> None:
    choice = resolve_engine("", {"CONTAINAI_RUNTIME": ""}, home=HOME, exists=only(DOCKER_SOCK))
    assert choice.source == f"auto-detected socket {DOCKER_SOCK}"


@pytest.mark.parametrize(
    ("present", "environ", "url", "kind"),
    [
        (DOCKER_SOCK, {}, f"unix://{DOCKER_SOCK}", "docker"),
        (
            Path("/run/user/1000/docker.sock"),
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            "unix:///run/user/1000/docker.sock",
            "docker",
        ),
        (HOME / ".docker/run/docker.sock", {}, f"unix://{HOME}/.docker/run/docker.sock", "docker"),
        (
            Path("/run/user/1000/podman/podman.sock"),
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            "unix:///run/user/1000/podman/podman.sock",
            "podman",
        ),
        (PODMAN_ROOT_SOCK, {}, f"unix://{PODMAN_ROOT_SOCK}", "podman"),
    ],
)
def test_auto_detects_sockets(present: Path, environ: dict[str, str], url: str, kind: str) -> None:
    choice = resolve_engine(None, environ, home=HOME, exists=only(present))
    assert choice.base_url == url
    assert choice.requested == kind
    assert choice.source == f"auto-detected socket {present}"


def test_docker_socket_is_preferred_to_podman_when_both_exist() -> None:
    choice = resolve_engine(None, {}, home=HOME, exists=only(PODMAN_ROOT_SOCK, DOCKER_SOCK))
    assert choice.requested == "docker"


def test_home_defaults_to_environment_home() -> None:
    sock = Path("/home/other/.docker/run/docker.sock")
    choice = resolve_engine(None, {"HOME": "/home/other"}, exists=only(sock))
    assert choice.base_url == f"unix://{sock}"


def test_podman_socket_found_through_xdg_runtime_dir_first() -> None:
    user_sock = Path("/run/user/1000/podman/podman.sock")
    choice = resolve_engine(
        "podman", {"XDG_RUNTIME_DIR": "/run/user/1000"}, home=HOME, exists=only(user_sock, PODMAN_ROOT_SOCK)
    )
    assert choice.base_url == f"unix://{user_sock}"


@pytest.mark.parametrize("flag", ["unix:///tmp/x.sock", "tcp://127.0.0.1:2375", "ssh://me@host"])
def test_url_flag_is_used_as_given(flag: str) -> None:
    choice = resolve_engine(flag, {"DOCKER_HOST": "tcp://elsewhere:2375"}, home=HOME, exists=only())
    assert choice == EngineChoice(flag, None, "flag --runtime")


def test_url_in_environment_is_used_as_given() -> None:
    choice = resolve_engine(None, {"CONTAINAI_RUNTIME": " unix:///x.sock "}, home=HOME, exists=only())
    assert choice == EngineChoice("unix:///x.sock", None, "environment CONTAINAI_RUNTIME")


@pytest.mark.parametrize(
    ("flag", "environ", "name"),
    [("dockr", {}, "--runtime"), (None, {"CONTAINAI_RUNTIME": "containerd"}, "CONTAINAI_RUNTIME")],
)
def test_bad_values_are_config_errors(flag: str | None, environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_engine(flag, environ, home=HOME, exists=only(DOCKER_SOCK))
    assert name in caught.value.message
    assert caught.value.hint is not None
    assert "docker, podman" in caught.value.hint


def test_requested_kind_without_socket_says_where_it_looked() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        resolve_engine("podman", {"XDG_RUNTIME_DIR": "/run/user/7"}, home=HOME, exists=only(DOCKER_SOCK))
    assert "/run/user/7/podman/podman.sock" in caught.value.message
    assert str(PODMAN_ROOT_SOCK) in caught.value.message
    assert caught.value.hint is not None
    assert "podman.socket" in caught.value.hint


def test_nothing_found_raises_with_hint() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        resolve_engine(None, {}, home=HOME, exists=only())
    assert "no container engine found" in caught.value.message
    hint = caught.value.hint or ""
    assert "DOCKER_HOST" in hint
    assert "podman" in hint


def test_environment_docker_goes_where_docker_host_says() -> None:
    environ = {"CONTAINAI_RUNTIME": "docker", "DOCKER_HOST": "ssh://me@build-box"}
    choice = resolve_engine(None, environ, home=HOME, exists=only(DOCKER_SOCK))
    assert choice == EngineChoice(
        "ssh://me@build-box", "docker", "environment CONTAINAI_RUNTIME, at DOCKER_HOST"
    )
    assert choice.describe() == "ssh://me@build-box (environment CONTAINAI_RUNTIME, at DOCKER_HOST)"


def test_requested_docker_without_socket_says_how_to_start_docker() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        resolve_engine("docker", {}, home=HOME, exists=only(PODMAN_ROOT_SOCK))
    assert str(DOCKER_SOCK) in caught.value.message
    assert str(HOME / ".docker/run/docker.sock") in caught.value.message
    assert "DOCKER_HOST" in (caught.value.hint or "")


def test_podman_is_auto_detected_when_docker_is_absent_and_says_so() -> None:
    choice = resolve_engine(None, {}, home=HOME, exists=only(PODMAN_ROOT_SOCK))
    assert choice == EngineChoice(
        f"unix://{PODMAN_ROOT_SOCK}", "podman", f"auto-detected socket {PODMAN_ROOT_SOCK}"
    )
