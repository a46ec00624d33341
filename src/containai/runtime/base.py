"""The seam between ContainAI's logic and a container engine.

``ContainerRuntime`` is what the rest of the package calls; ``EngineRuntime`` implements it over the
Docker Engine API (Docker, or Podman's compatible service) and ``FakeRuntime`` in
``containai.runtime.fake`` implements it in memory for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from containai.config import DEFAULT_MAX_CPUS, DEFAULT_MEMORY_BYTES, DEFAULT_PIDS
from containai.runtime.seccomp import SeccompProfile, containai_profile
from containai.runtime.select import EngineChoice, EngineKind


@dataclass(frozen=True)
class EngineInfo:
    """What the engine says about itself, parsed once at the boundary."""

    kind: EngineKind
    version: str
    api_version: str
    os: str
    arch: str
    rootless: bool
    security_options: tuple[str, ...] = ()
    storage_driver: str = ""
    root_dir: str = ""
    runc_version: str = ""  # as the engine reports it; empty when it does not (Podman often uses crun)
    runc_commit: str = ""


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    size: int = 0


@dataclass(frozen=True)
class BuildEvent:
    """One line of build progress: a step (``Step 3/9 : RUN ...``), its output, or its cache use."""

    text: str
    step: bool = False
    cached: bool = False


@dataclass(frozen=True)
class BuildSpec:
    context: Path
    tag: str
    buildargs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


OutputSink = Callable[[str, bytes], None]
"""Receives a command's output as it comes: ("stdout" or "stderr", a chunk)."""


@dataclass(frozen=True)
class ExecSpec:
    """A command to run in a running container.

    ``stdin``: bytes handed to it, then end of input (the one way to give an exec input). ``tty``: the
    user's terminal is attached (interactive). ``detach``: started, left running, not waited for.
    ``timeout``: seconds it may run; past them it is killed (in the container, by ``timeout`` from
    coreutils, which every ContainAI image has) and the host stops waiting for it whatever happens
    inside: ``exec`` raises ``ExecTimedOut``. Not for ``tty`` or ``detach``.
    """

    argv: tuple[str, ...]
    user: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    stdin: bytes | None = None
    tty: bool = False
    detach: bool = False
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and (self.tty or self.detach or not self.timeout > 0):
            raise ValueError("an exec's timeout is a positive number of seconds, for a waited-for command")


@dataclass(frozen=True)
class FileTail:
    """The end of a file in a container: at most the bytes asked for, and the whole file's size."""

    data: bytes
    size: int

    @property
    def dropped(self) -> int:
        """How many bytes at the start of the file are not in ``data``."""
        return self.size - len(self.data)


class StdinFeed(Protocol):
    """A container's standard input, held open by the host: what a gateway reads renewed credentials from."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class ContainerRuntime(Protocol):
    choice: EngineChoice

    def info(self) -> EngineInfo: ...

    def image(self, ref: str) -> ImageInfo | None: ...

    def pull(self, ref: str) -> ImageInfo: ...

    def build(self, spec: BuildSpec, on_event: Callable[[BuildEvent], None]) -> ImageInfo:
        """Build ``spec.context`` into ``spec.tag``; each step's progress goes to ``on_event``."""
        ...

    def import_rootfs(
        self, tarball: Path, *, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo: ...

    def close(self) -> None: ...

    # Containers, volumes and networks. Names or ids are accepted wherever ``ref`` is.
    def create_container(self, spec: ContainerSpec) -> ContainerInfo: ...

    def start(self, ref: str) -> None: ...

    def stop(self, ref: str, *, timeout: int = 10) -> None: ...

    def container(self, ref: str) -> ContainerInfo | None: ...

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]: ...

    def remove_container(self, ref: str) -> None: ...

    def exec(self, ref: str, command: ExecSpec, on_output: OutputSink | None = None) -> int:
        """Run ``command`` in a running container; its exit code (0 when detached)."""
        ...

    def create_volume(
        self, name: str, *, labels: Mapping[str, str], driver_opts: Mapping[str, str] | None = None
    ) -> VolumeInfo: ...

    def volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]: ...

    def remove_volume(self, name: str) -> None: ...

    def networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]: ...

    def remove_network(self, name: str) -> None: ...

    def create_network(
        self, name: str, *, labels: Mapping[str, str], internal: bool = False
    ) -> NetworkInfo: ...

    def read_tail(self, ref: str, path: str, *, max_bytes: int) -> FileTail | None:
        """The last ``max_bytes`` of a regular file in a container, running or not (also from its
        volumes); streamed, so the host holds no more than that. None when it is not there."""
        ...

    def start_fed(self, ref: str) -> StdinFeed:
        """Start a container with its stdin held open for the caller (the one way to hand it a value)."""
        ...


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path, or a named volume (``source`` is then the volume's name)."""

    target: str
    source: str
    kind: str = "volume"  # "bind" or "volume"
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create a container; the hardening lives in how sessions fill this in."""

    image: str
    name: str
    command: tuple[str, ...]
    labels: Mapping[str, str]
    user: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    working_dir: str = ""
    hostname: str = ""
    mounts: tuple[Mount, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    read_only: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ("no-new-privileges:true",)
    # ContainAI's syscall filter, on every container it creates. None (the engine's default filter)
    # only in tests that show what the filter refuses; no setting of a user's reaches it.
    seccomp: SeccompProfile | None = field(default_factory=containai_profile)
    network_mode: str = "none"
    # What a spec that sets no limits of its own gets: the same defaults as a session (containai.config).
    pids_limit: int = DEFAULT_PIDS
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    nano_cpus: int = DEFAULT_MAX_CPUS * 10**9
    ulimits: tuple[tuple[str, int, int], ...] = (("nofile", 4096, 8192), ("core", 0, 0))
    log_max_size: str = "10m"
    stdin_open: bool = False  # for start_fed: a value handed over on stdin, never in the config
    entrypoint: tuple[str, ...] | None = None  # None: the image's own


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    status: str  # created, running, exited, ...
    labels: Mapping[str, str]
    created: str = ""
    user: str = ""  # as the container was created with ("uid:gid"); empty: the image's own user
    exit_code: int | None = None  # once it has exited; None while it is created or running
    raw: Mapping[str, Any] = field(default_factory=dict)  # the engine's inspect JSON, for tests only

    @property
    def running(self) -> bool:
        return self.status == "running"


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    labels: Mapping[str, str]
    driver: str = "local"
    options: Mapping[str, str] = field(default_factory=dict)
    mountpoint: str = ""  # where its data is on the engine's host (the disk watchdog measures there)


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    labels: Mapping[str, str]
