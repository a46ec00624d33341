"""``FakeRuntime``: the ``ContainerRuntime`` protocol in memory, for unit tests.

It keeps images, containers, volumes and networks in dicts and records what it was asked to do, so
tests can check both the result and the calls. Nothing here imports docker or touches the host
beyond reading a build context.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from containai.errors import EngineAPIError, EngineUnavailable, ExecTimedOut
from containai.runtime.base import (
    BuildEvent,
    BuildSpec,
    ContainerInfo,
    ContainerRuntime,
    ContainerSpec,
    EngineInfo,
    ExecSpec,
    FileTail,
    ImageInfo,
    NetworkInfo,
    OutputSink,
    VolumeInfo,
)
from containai.runtime.select import EngineChoice

FAKE_CHOICE = EngineChoice("unix:///fake/engine.sock", "docker", "fake")
FAKE_ENGINE = EngineInfo(
    kind="docker",
    version="26.1.0",
    api_version="1.45",
    os="linux",
    arch="amd64",
    rootless=False,
    security_options=("name=seccomp,profile=builtin",),
)


@dataclass(frozen=True)
class BuildCall:
    """One ``build()``: its arguments and the files the context held while the build ran."""

    tag: str
    buildargs: Mapping[str, str]
    labels: Mapping[str, str]
    files: Mapping[str, bytes]
    executables: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ImportCall:
    tarball: Path
    tag: str
    labels: Mapping[str, str]
    changes: tuple[str, ...]


@dataclass(frozen=True)
class ExecCall:
    ref: str
    argv: tuple[str, ...]
    user: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    tty: bool = False
    detach: bool = False
    timeout: float | None = None

    @classmethod
    def of(cls, ref: str, command: ExecSpec) -> ExecCall:
        return cls(
            ref,
            command.argv,
            command.user,
            dict(command.environment),
            command.workdir,
            command.tty,
            command.detach,
            command.timeout,
        )


def _image_id(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def _matches(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    # As the engine's label filter: ``key=value``, or just ``key`` when the value is empty.
    return all(key in have and (not value or have[key] == value) for key, value in want.items())


class _FakeFeed:
    def __init__(self, ref: str, inputs: list[tuple[str, bytes]]) -> None:
        self.ref, self.inputs, self.closed = ref, inputs, False

    def send(self, data: bytes) -> None:
        self.inputs.append((self.ref, data))

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedExec:
    """An answer for the execs whose command line contains ``match``: output, exit code, or a failure."""

    match: str
    code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    error: Exception | None = None
    times: int | None = None  # None: every time
    hangs: bool = False  # never ends by itself: its timeout stops it (after its output), as an engine's would

    def applies(self, argv: Sequence[str]) -> bool:
        return (self.times is None or self.times > 0) and self.match in " ".join(argv)


class FakeRuntime:
    """An engine in memory. ``unavailable=True`` makes ``info()`` fail as a stopped engine would.

    A build whose tag already holds an image with the same labels reports every step as cached,
    as the engine's layer cache would; any other build reports its steps as run.

    Tests script it: ``script_exec(match, code=..., stdout=..., error=...)`` answers the execs whose
    command line contains ``match`` (the latest script first); ``fail(method, error)`` makes the next
    call of that method raise, as an engine that refuses would.
    """

    def __init__(
        self,
        *,
        engine_info: EngineInfo = FAKE_ENGINE,
        choice: EngineChoice = FAKE_CHOICE,
        images: Mapping[str, ImageInfo] | None = None,
        pullable: Iterable[str] = (),
        unavailable: bool = False,
        exec_exit_code: int = 0,
    ) -> None:
        self.choice = choice
        self.engine_info = engine_info
        self.images: dict[str, ImageInfo] = dict(images or {})
        self.pullable = set(pullable)
        self.unavailable = unavailable
        self.exec_exit_code = exec_exit_code
        self.scripts: list[ScriptedExec] = []
        self.failures: dict[str, list[Exception]] = {}
        self.builds: list[BuildCall] = []
        self.imports: list[ImportCall] = []
        self.pulls: list[str] = []
        self.execs: list[ExecCall] = []
        self.containers_by_id: dict[str, ContainerInfo] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.volumes_by_name: dict[str, VolumeInfo] = {}
        self.networks_by_name: dict[str, NetworkInfo] = {}
        self.files: dict[tuple[str, str], bytes] = {}  # (container, path) -> content, for read_tail
        # argv -> (exit code, stdout): what exec answers for that command (else exec_exit_code, nothing)
        self.inputs: list[tuple[str, bytes]] = []  # what a fed start or an exec with stdin handed over
        self.closed = False
        # When set, each volume gets a real folder here as its mount point (the disk watchdog's tests).
        self.volume_root: Path | None = None

    # Images and the engine.

    def add_image(self, ref: str, labels: Mapping[str, str] | None = None) -> ImageInfo:
        image = ImageInfo(
            id=_image_id(ref, sorted((labels or {}).items())), tags=(ref,), labels=dict(labels or {})
        )
        self.images[ref] = image
        return image

    def info(self) -> EngineInfo:
        if self.unavailable:
            raise EngineUnavailable(
                f"cannot reach the container engine at {self.choice.base_url} ({self.choice.source})",
                hint="start the engine (`sudo dockerd &`, or `systemctl --user start podman.socket`)",
            )
        return self.engine_info

    def image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)

    def pull(self, ref: str) -> ImageInfo:
        self.pulls.append(ref)
        if ref not in self.pullable:
            raise EngineAPIError(f"the engine refused to pull {ref}: no registry is reachable")
        return self.add_image(ref)

    def build(self, spec: BuildSpec, on_event: Callable[[BuildEvent], None]) -> ImageInfo:
        context, tag, buildargs, labels = spec.context, spec.tag, spec.buildargs, spec.labels
        paths = {path.relative_to(context).as_posix(): path for path in context.rglob("*") if path.is_file()}
        files = {name: paths[name].read_bytes() for name in sorted(paths)}
        executables = frozenset(name for name, path in paths.items() if path.stat().st_mode & 0o111)
        self.builds.append(BuildCall(tag, dict(buildargs), dict(labels), files, executables))
        previous = self.images.get(tag)
        cached = previous is not None and dict(previous.labels) == dict(labels)
        on_event(BuildEvent("Step 1/2 : FROM scratch", step=True))
        on_event(BuildEvent("Step 2/2 : COPY . /", step=True))
        if cached:
            on_event(BuildEvent(" ---> Using cache", cached=True))
        return self.add_image(tag, labels)

    def import_rootfs(
        self, tarball: Path, *, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo:
        self.imports.append(ImportCall(tarball, tag, dict(labels), tuple(changes)))
        return self.add_image(tag, labels)

    def close(self) -> None:
        self.closed = True

    def script_exec(self, match: str, **answer: object) -> ScriptedExec:
        scripted = ScriptedExec(match, **answer)  # type: ignore[arg-type]  # the dataclass checks the names
        self.scripts.insert(0, scripted)
        return scripted

    def fail(self, method: str, error: Exception) -> None:
        """The next call of ``method`` raises ``error``."""
        self.failures.setdefault(method, []).append(error)

    def _maybe_fail(self, method: str) -> None:
        if pending := self.failures.get(method):
            raise pending.pop(0)

    def _answer(self, ref: str, command: ExecSpec, on_output: Callable[[str, bytes], None] | None) -> int:
        argv = command.argv
        for scripted in self.scripts:
            if scripted.applies(argv):
                if scripted.times is not None:
                    scripted.times -= 1
                if scripted.error is not None:
                    raise scripted.error
                if on_output is not None:
                    if scripted.stdout:
                        on_output("stdout", scripted.stdout)
                    if scripted.stderr:
                        on_output("stderr", scripted.stderr)
                if scripted.hangs:
                    if command.timeout is None:
                        raise AssertionError(f"{' '.join(argv)} hangs, and nothing would ever stop it")
                    raise ExecTimedOut(ref, argv[0], command.timeout)
                return scripted.code
        return self.exec_exit_code

    # Containers, volumes and networks.

    def _find(self, ref: str) -> ContainerInfo | None:
        return self.containers_by_id.get(ref) or next(
            (c for c in self.containers_by_id.values() if c.name == ref), None
        )

    def _set_status(self, ref: str, status: str, exit_code: int | None = None) -> None:
        found = self._find(ref)
        if found is None:
            raise EngineAPIError(f"the engine refused to change {ref}: no such container")
        self.containers_by_id[found.id] = replace(found, status=status, exit_code=exit_code)

    def exited(self, ref: str, code: int) -> None:
        """The container's main process ended with ``code`` (as a crash or a finished agent would)."""
        self._set_status(ref, "exited", code)

    def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        self._maybe_fail("create_container")
        if self._find(spec.name) is not None:
            raise EngineAPIError(f"the engine refused to create container {spec.name}: the name is in use")
        info = ContainerInfo(
            _image_id("container", spec.name),
            spec.name,
            spec.image,
            "created",
            dict(spec.labels),
            user=spec.user,
        )
        self.containers_by_id[info.id] = info
        self.specs[info.id] = spec
        return info

    def start(self, ref: str) -> None:
        self._maybe_fail("start")
        self._set_status(ref, "running")

    def stop(self, ref: str, *, timeout: int = 10) -> None:
        found = self._find(ref)
        if found is not None and found.status == "running":
            self._set_status(ref, "exited", 137)  # killed, as a sleeping PID 1 is after the timeout

    def container(self, ref: str) -> ContainerInfo | None:
        return self._find(ref)

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [c for c in self.containers_by_id.values() if _matches(c.labels, labels)]

    def remove_container(self, ref: str) -> None:
        self._maybe_fail("remove_container")
        if (found := self._find(ref)) is not None:
            del self.containers_by_id[found.id]
            self.specs.pop(found.id, None)

    def exec(self, ref: str, command: ExecSpec, on_output: OutputSink | None = None) -> int:
        found = self._find(ref)
        if found is None or not found.running:
            raise EngineAPIError(f"the engine refused to run {command.argv[0]} in {ref}: it is not running")
        self.execs.append(ExecCall.of(ref, command))
        if command.stdin is not None:
            self.inputs.append((ref, command.stdin))
        self._maybe_fail("exec")
        if command.tty:
            return self.exec_exit_code
        code = self._answer(ref, command, on_output)
        return 0 if command.detach else code

    def create_volume(
        self, name: str, *, labels: Mapping[str, str], driver_opts: Mapping[str, str] | None = None
    ) -> VolumeInfo:
        self._maybe_fail("create_volume")
        mountpoint = ""
        if self.volume_root is not None:
            (self.volume_root / name).mkdir(parents=True, exist_ok=True)
            mountpoint = str(self.volume_root / name)
        volume = VolumeInfo(name, dict(labels), "local", dict(driver_opts or {}), mountpoint)
        self.volumes_by_name[name] = volume
        return volume

    def volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        return [v for v in self.volumes_by_name.values() if _matches(v.labels, labels)]

    def remove_volume(self, name: str) -> None:
        self._maybe_fail("remove_volume")
        self.volumes_by_name.pop(name, None)

    def add_network(self, name: str, labels: Mapping[str, str]) -> NetworkInfo:
        network = NetworkInfo(name, dict(labels))
        self.networks_by_name[name] = network
        return network

    def networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        return [n for n in self.networks_by_name.values() if _matches(n.labels, labels)]

    def remove_network(self, name: str) -> None:
        self.networks_by_name.pop(name, None)

    def create_network(self, name: str, *, labels: Mapping[str, str], internal: bool = False) -> NetworkInfo:
        self._maybe_fail("create_network")
        network = NetworkInfo(name, dict(labels))
        self.networks_by_name[name] = network
        return network

    def start_fed(self, ref: str) -> _FakeFeed:
        self.start(ref)
        return _FakeFeed(ref, self.inputs)

    def read_tail(self, ref: str, path: str, *, max_bytes: int) -> FileTail | None:
        self._maybe_fail("read_tail")
        data = self.files.get((ref, path))
        return None if data is None else FileTail(data[max(0, len(data) - max_bytes) :], len(data))


if TYPE_CHECKING:  # mypy checks here that the fake still satisfies the protocol
    _fake: ContainerRuntime = FakeRuntime()
