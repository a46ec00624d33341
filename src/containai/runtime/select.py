"""Choosing the container engine: flag, then environment, then auto-detection.

The choice remembers where it came from, so `containai doctor` can say why it talks to the engine
it talks to. Nothing here connects to anything; ``exists`` is injectable for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from containai.errors import ConfigError, EngineUnavailable

EngineKind = Literal["docker", "podman"]
KINDS: tuple[EngineKind, ...] = ("docker", "podman")


@dataclass(frozen=True)
class EngineChoice:
    """Where to reach the engine (an Engine API URL), which dialect was asked for, and why."""

    base_url: str
    requested: EngineKind | None
    source: str

    def describe(self) -> str:
        return f"{self.base_url} ({self.source})"


def _docker_sockets(environ: Mapping[str, str], home: Path) -> list[Path]:
    found = [Path("/var/run/docker.sock")]
    if runtime_dir := environ.get("XDG_RUNTIME_DIR"):
        found.append(Path(runtime_dir) / "docker.sock")
    found.append(home / ".docker" / "run" / "docker.sock")
    return found


def _podman_sockets(environ: Mapping[str, str]) -> list[Path]:
    found = []
    if runtime_dir := environ.get("XDG_RUNTIME_DIR"):
        found.append(Path(runtime_dir) / "podman" / "podman.sock")
    found.append(Path("/run/podman/podman.sock"))
    return found


def _is_url(value: str) -> bool:
    return "://" in value


_PODMAN_START_HINT = (
    "start Podman's Docker-compatible service: `systemctl --user start podman.socket`, "
    "or `podman system service --time=0 unix:///run/podman/podman.sock &` as root"
)
_DOCKER_START_HINT = (
    "start Docker (`sudo systemctl start docker`, or `sudo dockerd &`), or point DOCKER_HOST at an engine"
)


def _first_socket(
    kind: EngineKind, environ: Mapping[str, str], home: Path, exists: Callable[[Path], bool], source: str
) -> EngineChoice:
    candidates = _podman_sockets(environ) if kind == "podman" else _docker_sockets(environ, home)
    for path in candidates:
        if exists(path):
            return EngineChoice(f"unix://{path}", kind, source)
    looked = ", ".join(str(p) for p in candidates)
    raise EngineUnavailable(
        f"no {kind} engine socket found (looked in {looked})",
        hint=_PODMAN_START_HINT if kind == "podman" else _DOCKER_START_HINT,
    )


def _parse_setting(value: str, name: str) -> EngineKind | str:
    value = value.strip()
    if _is_url(value):
        return value
    lowered = value.lower()
    if lowered in KINDS:
        return lowered
    raise ConfigError(
        f"{name}={value!r} is not an engine",
        hint="use docker, podman, or an Engine API URL such as unix:///run/podman/podman.sock",
    )


def resolve_engine(
    flag: str | None,
    environ: Mapping[str, str],
    *,
    home: Path | None = None,
    exists: Callable[[Path], bool] = Path.exists,
) -> EngineChoice:
    """Resolve the engine: ``--runtime`` flag, then CONTAINAI_RUNTIME, then DOCKER_HOST, then sockets."""
    home = home or Path(environ.get("HOME", "/root"))
    for value, name, source in (
        (flag, "--runtime", "flag --runtime"),
        (environ.get("CONTAINAI_RUNTIME"), "CONTAINAI_RUNTIME", "environment CONTAINAI_RUNTIME"),
    ):
        if not value:
            continue
        setting = _parse_setting(value, name)
        if setting in KINDS:
            kind: EngineKind = setting
            # DOCKER_HOST still says where a Docker engine lives when the user asked for docker.
            if kind == "docker" and environ.get("DOCKER_HOST"):
                return EngineChoice(environ["DOCKER_HOST"], "docker", f"{source}, at DOCKER_HOST")
            return _first_socket(kind, environ, home, exists, source)
        return EngineChoice(setting, None, source)
    if docker_host := environ.get("DOCKER_HOST"):
        return EngineChoice(docker_host, None, "environment DOCKER_HOST")
    for kind in KINDS:
        try:
            found = _first_socket(kind, environ, home, exists, "auto-detected")
        except EngineUnavailable:
            continue
        path = found.base_url.removeprefix("unix://")
        return EngineChoice(found.base_url, kind, f"auto-detected socket {path}")
    raise EngineUnavailable(
        "no container engine found: no Docker or Podman socket, and DOCKER_HOST is not set",
        hint=_DOCKER_START_HINT + "; or " + _PODMAN_START_HINT,
    )
