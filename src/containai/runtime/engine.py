"""``EngineRuntime``: the Docker Engine API, through the Docker SDK, for Docker and Podman alike."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from containai.config import Paths
from containai.errors import BuildError, EngineAPIError, EngineError, EngineUnavailable, ExecTimedOut
from containai.runtime.base import (
    BuildEvent,
    BuildSpec,
    ContainerInfo,
    ContainerSpec,
    EngineInfo,
    ExecSpec,
    FileTail,
    ImageInfo,
    NetworkInfo,
    OutputSink,
    StdinFeed,
    VolumeInfo,
)
from containai.runtime.seccomp import SECCOMP_FOLDER, security_option, write_profile
from containai.runtime.select import EngineChoice, EngineKind

# Builds and imports stream for minutes; everything else should answer quickly.
_TIMEOUT_SECONDS = 600


def translate(exc: Exception, choice: EngineChoice, doing: str) -> EngineError:
    """Map the SDK's and requests' exceptions to ours, in one place."""
    if isinstance(exc, docker.errors.APIError):
        detail = exc.explanation or str(exc)
        return EngineAPIError(f"the engine refused to {doing}: {detail}", hint=None)
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException | OSError):
        return EngineUnavailable(
            f"cannot reach the container engine at {choice.base_url} ({choice.source})",
            hint="start the engine (`sudo dockerd &`, or `systemctl --user start podman.socket`) "
            "or choose another with --runtime / CONTAINAI_RUNTIME / DOCKER_HOST",
        )
    return EngineError(f"engine error while trying to {doing}: {exc}")


def _image_info(image: Any) -> ImageInfo:
    attrs = image.attrs
    config = attrs.get("Config") or {}
    return ImageInfo(
        id=image.id,
        tags=tuple(image.tags),
        labels=dict(config.get("Labels") or {}),
        created=attrs.get("Created", ""),
        size=int(attrs.get("Size") or 0),
    )


def engine_kind(version: Mapping[str, Any]) -> EngineKind:
    """Docker or Podman, from the engine's /version JSON (Podman names itself among the components)."""
    components = [str(c.get("Name", "")) for c in version.get("Components") or []]
    return "podman" if any("podman" in c.lower() for c in components) else "docker"


def parse_engine_info(version: Mapping[str, Any], info: Mapping[str, Any]) -> EngineInfo:
    """Build ``EngineInfo`` from the engine's /version and /info JSON (Docker's or Podman's)."""
    runc: Mapping[str, Any] = next(
        (
            c
            for c in version.get("Components") or []
            if str(c.get("Name", "")).lower() in ("runc", "oci runtime (runc)")
        ),
        {},
    )
    runc_version, runc_commit = (
        str(runc.get("Version", "")),
        str((runc.get("Details") or {}).get("GitCommit", "")),
    )
    if runc_version.startswith("runc version "):  # Podman: "runc version 1.1.5\ncommit: ...\nspec: ..."
        lines = runc_version.splitlines()
        runc_version = lines[0].removeprefix("runc version ").strip()
        runc_commit = next((x.removeprefix("commit:").strip() for x in lines if x.startswith("commit:")), "")
    kind = engine_kind(version)
    security = tuple(str(s) for s in info.get("SecurityOptions") or [])
    rootless = any("rootless" in s for s in security)
    return EngineInfo(
        kind=kind,
        version=str(version.get("Version", "")),
        api_version=str(version.get("ApiVersion", "")),
        os=str(version.get("Os", "")),
        arch=str(version.get("Arch", "")),
        rootless=rootless,
        security_options=security,
        storage_driver=str(info.get("Driver", "")),
        root_dir=str(info.get("DockerRootDir", "")),
        runc_version=runc_version,
        runc_commit=runc_commit,
    )


def _imported_id(answer: object) -> str | None:
    """The image id in the engine's answer to an import (JSON lines; the last id wins)."""
    found = None
    for line in str(answer).splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        for key in ("id", "status"):
            value = str(data.get(key, "")) if isinstance(data, dict) else ""
            if value.startswith("sha256:"):
                found = value
    return found


def parse_container_info(attrs: Mapping[str, Any]) -> ContainerInfo:
    """Build ``ContainerInfo`` from the engine's inspect JSON (Docker's or Podman's), once."""
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    status = str(state.get("Status", ""))
    code = state.get("ExitCode")
    exit_code = code if status in ("exited", "dead", "stopped") and isinstance(code, int) else None
    return ContainerInfo(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        image=str(config.get("Image", "")),
        # Podman says "stopped" where Docker says "exited"; the rest of ContainAI hears Docker's word.
        status="exited" if status == "stopped" else status,
        labels=dict(config.get("Labels") or {}),
        created=str(attrs.get("Created", "")),
        user=str(config.get("User") or ""),
        exit_code=exit_code,
        raw=attrs,
    )


def _container_info(container: Any) -> ContainerInfo:
    return parse_container_info(container.attrs)


def _volume_info(name: str, attrs: Mapping[str, Any]) -> VolumeInfo:
    return VolumeInfo(
        name,
        dict(attrs.get("Labels") or {}),
        attrs.get("Driver", ""),
        dict(attrs.get("Options") or {}),
        attrs.get("Mountpoint") or "",
    )


def _label_filter(labels: Mapping[str, str]) -> dict[str, list[str]]:
    return {"label": [f"{k}={v}" if v else k for k, v in labels.items()]}


def has_labels(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    """Docker's label filter: every ``key=value`` (or just ``key`` when the value is empty) holds.

    Checked again on what the engine lists: Podman 4.3 matches *any* of several label filters, and a
    scope (``--label``) that matched any label would let gc remove another's session.
    """
    return all(key in have and (not value or have[key] == value) for key, value in want.items())


# Podman (4.3) refuses tmpfs options it does not know, uid= and gid= among them, sets no nproc limit
# of its own, and mounts writable tmpfs (exec allowed) on /run, /tmp and /var/tmp of a read-only
# container, where Docker leaves the image's read-only folders. The Podman dialect says the same as
# the spec in words Podman accepts, and closes those folders again.
TMPFS_OF = "ai.containai.tmpfs-of"  # on a tmpfs volume: the container it belongs to
PODMAN_ULIMITS = (("nofile", 4096, 8192), ("nproc", 4096, 4096))
PODMAN_READ_ONLY_TMPFS = {
    # Root's and 0755, as the image's /run: no session user can write it; the runtime can still
    # make the mount points of the spec's own tmpfs inside it (/run/containai, /var/run/squid).
    "/run": "rw,noexec,nosuid,nodev,size=1m,mode=0755",
    "/tmp": "ro,noexec,nosuid,nodev,size=1m",  # noqa: S108  # paths in the container, closed
    "/var/tmp": "ro,noexec,nosuid,nodev,size=1m",  # noqa: S108  # paths in the container, closed
}
_PAGE = 4096  # tmpfs's nr_blocks counts pages
PODMAN_NO_IPV6 = ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6")
# Podman's exec can lose all the output of a command that ends before the client has attached
# (measured: about 1 in 150 short cats on 4.3). Through this gate the command starts only once the
# client, attached, sends a newline on its stdin (then EOF, as Docker gives an exec without stdin).
PODMAN_EXEC_GATE = ("sh", "-c", 'read -r _ || :; exec "$@"', "sh")
# An exec with a timeout runs under coreutils' timeout, which kills its whole process group when the
# time is up. The host waits this much longer, then stops waiting whatever the container does (the
# agent, under the same uid, could kill that timeout process).
EXEC_GRACE_SECONDS = 5.0


def timed_argv(command: ExecSpec) -> tuple[str, ...]:
    if command.timeout is None:
        return command.argv
    return ("timeout", "-s", "KILL", f"{command.timeout:g}", *command.argv)


class _Deadline(Exception):
    """The host's wait for an exec's output ran out."""


def read_frames(sock: Any, deadline: float | None) -> Iterator[tuple[int, bytes]]:
    """The Engine API's multiplexed exec stream (8-byte header: stream, 0, 0, 0, size), read from the
    attached socket until it closes or ``deadline`` (``time.monotonic()``) passes."""
    buffer = bytearray()
    while True:
        if deadline is None:
            sock.settimeout(None)  # an agent's prompt may be silent for a long time
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline
            sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError as exc:
            raise _Deadline from exc
        if not data:
            return
        buffer += data
        while len(buffer) >= 8:
            size = int.from_bytes(buffer[4:8], "big")
            if len(buffer) < 8 + size:
                break
            stream, chunk = buffer[0], bytes(buffer[8 : 8 + size])
            del buffer[: 8 + size]
            yield stream, chunk


@dataclass(frozen=True)
class TmpfsVolume:
    """A tmpfs owned by another uid than the container's user, as Podman can mount one: a volume
    of the local driver with ``type=tmpfs``, created with the container and removed with it."""

    name: str
    target: str
    driver_opts: Mapping[str, str]
    mode: str  # the bind's options, for HostConfig.Binds (``name:target:mode``)


@dataclass(frozen=True)
class CreateRequest:
    """What to ask the engine for one container: the SDK's arguments, and any volumes to make first."""

    kwargs: Mapping[str, Any]
    volumes: tuple[TmpfsVolume, ...] = ()


def _numeric_owner(user: str) -> tuple[str, str] | None:
    uid, _, gid = user.partition(":")
    return (uid, gid) if uid.isdigit() and gid.isdigit() else None


def _size_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)", text.strip().lower())
    if match is None:
        raise EngineError(f"tmpfs size {text!r} is not a size like 512m")
    return int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]


def _tmpfs_volume(spec: ContainerSpec, target: str, options: list[str]) -> TmpfsVolume:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", target).strip("-")
    name = f"{spec.name}-tmpfs-{slug}"
    mount: list[str] = []
    for option in options:
        key, _, value = option.partition("=")
        if key in ("ro", "rw"):
            continue
        # Podman reads size= in a volume's options as an XFS quota; nr_blocks is the tmpfs's own limit.
        mount.append(f"nr_blocks={-(-_size_bytes(value) // _PAGE)}" if key == "size" else option)
    # The flags again on the bind into the container: a remount there would otherwise drop them.
    flags = [o for o in options if o in ("ro", "rw", "noexec", "nosuid", "nodev")]
    return TmpfsVolume(
        name=name,
        target=target,
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": ",".join(mount)},
        mode=",".join(flags or ["rw"]),
    )


def _podman_tmpfs(spec: ContainerSpec) -> tuple[dict[str, str], tuple[TmpfsVolume, ...]]:
    """Each tmpfs in words Podman accepts; those owned by another uid become tmpfs volumes.

    Owned by the container's own user: Podman's ``U`` option mounts it with that uid and gid.
    ``notmpcopyup``: like Docker's, the tmpfs starts empty (Podman would copy the image's files in).
    """
    wanted = dict(spec.tmpfs)
    if spec.read_only:
        for target, closed in PODMAN_READ_ONLY_TMPFS.items():
            wanted.setdefault(target, closed)
    tmpfs: dict[str, str] = {}
    volumes: list[TmpfsVolume] = []
    for target, text in wanted.items():
        options = [o for o in text.split(",") if o]
        values = dict(o.split("=", 1) for o in options if "=" in o)
        if "uid" not in values and "gid" not in values:
            tmpfs[target] = ",".join([*options, "notmpcopyup"])
        elif (values.get("uid"), values.get("gid")) == _numeric_owner(spec.user):
            plain = [o for o in options if o.partition("=")[0] not in ("uid", "gid")]
            tmpfs[target] = ",".join([*plain, "U", "notmpcopyup"])
        else:
            volumes.append(_tmpfs_volume(spec, target, options))
    return tmpfs, tuple(volumes)


def _podman_ulimits(spec: ContainerSpec) -> tuple[tuple[str, int, int], ...]:
    named = {name for name, _, _ in spec.ulimits}
    return (*spec.ulimits, *(limit for limit in PODMAN_ULIMITS if limit[0] not in named))


def create_request(
    spec: ContainerSpec, kind: EngineKind = "docker", *, seccomp_folder: Path | None = None
) -> CreateRequest:
    """What to ask the engine (Docker's or Podman's dialect) for a spec (pure; shown in tests).

    Podman's compatible API reads a seccomp profile from a file: ``seccomp_folder`` holds it.
    """
    kwargs = create_kwargs(spec)
    if kind != "podman":
        if spec.seccomp is not None:
            kwargs["security_opt"].append(security_option(spec.seccomp, inline=True))
        return CreateRequest(kwargs)
    if spec.seccomp is not None:
        kwargs["security_opt"].append(security_option(spec.seccomp, inline=False, folder=seccomp_folder))
    tmpfs, volumes = _podman_tmpfs(spec)
    kwargs["tmpfs"] = tmpfs
    kwargs["ulimits"] = [docker.types.Ulimit(name=n, soft=s, hard=h) for n, s, h in _podman_ulimits(spec)]
    if volumes:
        kwargs["volumes"] = {v.name: {"bind": v.target, "mode": v.mode} for v in volumes}
    if spec.entrypoint == () and spec.command:
        # Podman reads an empty entrypoint as "the image's own": the command's first word takes its place.
        kwargs["entrypoint"] = [spec.command[0]]
        kwargs["command"] = list(spec.command[1:])
    # No IPv6 in the container, not even on lo: what Docker gives a container on a network without it.
    kwargs["sysctls"] = dict.fromkeys(PODMAN_NO_IPV6, "1")
    return CreateRequest(kwargs, volumes)


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The SDK's ``containers.create`` arguments for a spec, in Docker's dialect (pure)."""
    mounts = [
        docker.types.Mount(
            target=m.target,
            source=m.source,
            type=m.kind,  # type: ignore[arg-type]  # "bind" or "volume", as ContainerSpec documents
            read_only=m.read_only,
            propagation="rprivate" if m.kind == "bind" else None,
        )
        for m in spec.mounts
    ]
    return {
        "image": spec.image,
        "name": spec.name,
        "command": list(spec.command),
        "labels": dict(spec.labels),
        "user": spec.user or None,
        "environment": dict(spec.environment),
        "working_dir": spec.working_dir or None,
        "hostname": spec.hostname or None,
        "mounts": mounts,
        "tmpfs": dict(spec.tmpfs),
        "read_only": spec.read_only,
        "cap_drop": list(spec.cap_drop),
        "cap_add": list(spec.cap_add) or None,
        "security_opt": list(spec.security_opt),
        "network_mode": spec.network_mode,
        "pids_limit": spec.pids_limit,
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,  # equal to the memory limit: no swap on top
        "nano_cpus": spec.nano_cpus,
        "ulimits": [docker.types.Ulimit(name=n, soft=s, hard=h) for n, s, h in spec.ulimits],
        "log_config": docker.types.LogConfig(
            type="json-file", config={"max-size": spec.log_max_size, "max-file": "3"}
        ),
        "privileged": False,
        # Not detached when stdin is open: that is how the SDK sets StdinOnce, so closing our attach
        # closes the container's stdin.
        "detach": not spec.stdin_open,
        "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
        "stdin_open": spec.stdin_open,
        "tty": False,
    }


class _EngineContainers:
    """Container, volume and network operations; mixed into ``EngineRuntime``."""

    choice: EngineChoice

    @property
    def client(self) -> Any:
        raise NotImplementedError

    @property
    def kind(self) -> EngineKind:
        raise NotImplementedError

    @property
    def seccomp_folder(self) -> Path:
        raise NotImplementedError

    def create_container(self, spec: ContainerSpec) -> ContainerInfo:
        request = create_request(spec, self.kind, seccomp_folder=self.seccomp_folder)
        made: list[str] = []
        try:
            if spec.seccomp is not None and self.kind == "podman":
                write_profile(spec.seccomp, self.seccomp_folder)
            for volume in request.volumes:
                self.create_volume(
                    volume.name, labels={**spec.labels, TMPFS_OF: spec.name}, driver_opts=volume.driver_opts
                )
                made.append(volume.name)
            return _container_info(self.client.containers.create(**request.kwargs))
        except Exception as exc:
            for name in made:
                with contextlib.suppress(EngineError):
                    self.remove_volume(name)
            if isinstance(exc, EngineError):
                raise
            error = translate(exc, self.choice, f"create container {spec.name}")
            if self.kind == "podman" and "seccomp profile" in error.message:
                error.hint = (
                    f"Podman reads ContainAI's syscall filter from {self.seccomp_folder}; "
                    "use a Podman service on this machine, which sees that folder"
                )
            raise error from exc

    def start(self, ref: str) -> None:
        try:
            self.client.api.start(ref)
        except Exception as exc:
            raise translate(exc, self.choice, f"start {ref}") from exc

    def stop(self, ref: str, *, timeout: int = 10) -> None:
        try:
            self.client.api.stop(ref, timeout=timeout)
        except docker.errors.NotFound:
            return
        except Exception as exc:
            raise translate(exc, self.choice, f"stop {ref}") from exc

    def container(self, ref: str) -> ContainerInfo | None:
        try:
            return _container_info(self.client.containers.get(ref))
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise translate(exc, self.choice, f"inspect {ref}") from exc

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        try:
            found = self.client.containers.list(all=True, filters=_label_filter(labels))
            listed = [_container_info(c) for c in found]
        except Exception as exc:
            raise translate(exc, self.choice, "list containers") from exc
        return [c for c in listed if has_labels(c.labels, labels)]

    def remove_container(self, ref: str) -> None:
        found = self.container(ref) if self.kind == "podman" else None
        try:
            self.client.api.remove_container(ref, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            raise translate(exc, self.choice, f"remove {ref}") from exc
        if found is not None:  # its tmpfs volumes (see TmpfsVolume) go with it
            for volume in self.volumes({TMPFS_OF: found.name}):
                self.remove_volume(volume.name)

    def exec(self, ref: str, command: ExecSpec, on_output: OutputSink | None = None) -> int:
        """Run ``command`` in the container (see ``ExecSpec``); its exit code (0 for a detached one)."""
        verb = "attach to" if command.tty else "start" if command.detach else "run"
        try:
            if command.tty:
                return self._exec_tty(ref, command)
            started = time.monotonic()
            exec_id = self._exec_create(ref, command)
            if command.detach:
                self.client.api.exec_start(exec_id, detach=True)
                return 0
            self._exec_stream(exec_id, command, on_output)
            code = int(self.client.api.exec_inspect(exec_id).get("ExitCode") or 0)
            if command.timeout is not None and code != 0 and time.monotonic() - started >= command.timeout:
                raise _Deadline  # killed by its timeout (137), or failed only once its time was up
            return code
        except _Deadline:
            raise ExecTimedOut(ref, command.argv[0], command.timeout or 0) from None
        except EngineError:
            raise
        except Exception as exc:
            raise translate(exc, self.choice, f"{verb} {command.argv[0]} in {ref}") from exc

    def _gated(self, command: ExecSpec) -> bool:
        # Podman's exec can lose a short process's output when the process ends before the output is
        # attached: the command waits for one line on stdin, sent once attached.
        return self.kind == "podman" and command.stdin is None and not command.tty and not command.detach

    def _exec_create(self, ref: str, command: ExecSpec) -> str:
        gated = self._gated(command)
        created = self.client.api.exec_create(
            ref,
            [*PODMAN_EXEC_GATE, *timed_argv(command)] if gated else list(timed_argv(command)),
            user=command.user,
            environment=dict(command.environment),
            workdir=command.workdir or None,
            tty=command.tty,
            stdin=command.tty or gated or command.stdin is not None,
        )
        return str(created["Id"])

    def _exec_stream(self, exec_id: str, command: ExecSpec, on_output: OutputSink | None) -> None:
        """Hand over stdin (data, or the gate's line), then EOF; stream stdout and stderr as they come."""
        # The attached socket, read and closed here: the SDK's stream closes the socket's file wrapper
        # but not the socket, which kept the descriptor (and on Podman the exec) open.
        attached = self.client.api.exec_start(exec_id, socket=True)
        raw = getattr(attached, "_sock", attached)
        timeout = command.timeout
        deadline = None if timeout is None else time.monotonic() + timeout + EXEC_GRACE_SECONDS
        try:
            data = command.stdin if command.stdin is not None else b"\n" if self._gated(command) else None
            if data is not None:
                with contextlib.suppress(BrokenPipeError):  # a command that reads no input is no error
                    raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)
            for stream, chunk in read_frames(raw, deadline):
                if on_output is not None and chunk:
                    on_output("stderr" if stream == 2 else "stdout", chunk)
        finally:
            attached.close()
            raw.close()

    def _exec_tty(self, ref: str, command: ExecSpec) -> int:
        from containai.runtime.tty import attach_tty

        api = self.client.api
        exec_id = self._exec_create(ref, command)
        sock = api.exec_start(exec_id, tty=True, socket=True)
        attach_tty(sock, resize=lambda rows, cols: api.exec_resize(exec_id, height=rows, width=cols))
        return int(api.exec_inspect(exec_id).get("ExitCode") or 0)

    def create_volume(
        self, name: str, *, labels: Mapping[str, str], driver_opts: Mapping[str, str] | None = None
    ) -> VolumeInfo:
        try:
            volume = self.client.volumes.create(
                name=name, driver="local", driver_opts=dict(driver_opts or {}), labels=dict(labels)
            )
        except Exception as exc:
            raise translate(exc, self.choice, f"create volume {name}") from exc
        attrs = volume.attrs
        return _volume_info(volume.name, attrs)

    def volumes(self, labels: Mapping[str, str]) -> list[VolumeInfo]:
        try:
            found = self.client.volumes.list(filters=_label_filter(labels))
        except Exception as exc:
            raise translate(exc, self.choice, "list volumes") from exc
        return [
            _volume_info(v.name, v.attrs) for v in found if has_labels(v.attrs.get("Labels") or {}, labels)
        ]

    def remove_volume(self, name: str) -> None:
        try:
            self.client.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            return
        except Exception as exc:
            raise translate(exc, self.choice, f"remove volume {name}") from exc

    def networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        try:
            found = self.client.networks.list(filters=_label_filter(labels))
            listed = [NetworkInfo(n.name, dict(n.attrs.get("Labels") or {})) for n in found]
        except Exception as exc:
            raise translate(exc, self.choice, "list networks") from exc
        return [n for n in listed if has_labels(n.labels, labels)]

    def create_network(self, name: str, *, labels: Mapping[str, str], internal: bool = False) -> NetworkInfo:
        try:
            # No IPv6: a session network never gets a v6 route the policy would have to cover.
            network = self.client.networks.create(
                name,
                driver="bridge",
                internal=internal,
                labels=dict(labels),
                enable_ipv6=False,
                check_duplicate=True,
            )
        except Exception as exc:
            raise translate(exc, self.choice, f"create network {name}") from exc
        return NetworkInfo(network.name, dict(labels))

    def read_tail(self, ref: str, path: str, *, max_bytes: int) -> FileTail | None:
        """The end of one regular file in a container (running or not), streamed through the archive
        API: however large the file, no more than ``max_bytes`` (and one chunk) is held."""
        try:
            stream, _ = self.client.api.get_archive(ref, path)
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise translate(exc, self.choice, f"read {path} in {ref}") from exc
        reader = _ChunkReader(stream)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                member = archive.next()
                handle = archive.extractfile(member) if member is not None and member.isfile() else None
                if member is None or handle is None:
                    return None
                tail = bytearray()
                while chunk := handle.read(2**20):
                    tail += chunk
                    if len(tail) > max_bytes:
                        del tail[: len(tail) - max_bytes]
                return FileTail(bytes(tail), member.size)
        except (tarfile.TarError, OSError, requests.exceptions.RequestException) as exc:
            raise EngineAPIError(f"reading {path} in {ref} failed: {exc}") from exc
        finally:
            reader.drain()  # the archive's end, so the connection ends cleanly

    def start_fed(self, ref: str) -> StdinFeed:
        """Start a container with its stdin attached and held: what is sent reaches it, until closed.
        The one way to hand a container a value (a key) that must be in no config, label or file."""
        api = self.client.api
        try:
            attached = api.attach_socket(ref, params={"stdin": 1, "stream": 1})
            api.start(ref)
        except Exception as exc:
            raise translate(exc, self.choice, f"start {ref}") from exc
        return _SocketFeed(attached)

    def remove_network(self, name: str) -> None:
        try:
            self.client.api.remove_network(name)
        except docker.errors.NotFound:
            return
        except Exception as exc:
            raise translate(exc, self.choice, f"remove network {name}") from exc


class _ChunkReader(io.RawIOBase):
    """An iterator of byte chunks (an archive as the engine streams it) as a readable file."""

    def __init__(self, chunks: Any) -> None:
        self._chunks = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self._chunks:
                pass

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


class _SocketFeed:
    def __init__(self, attached: Any) -> None:
        self._attached = attached
        self._raw = getattr(attached, "_sock", attached)

    def send(self, data: bytes) -> None:
        self._raw.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._attached.close()
            self._raw.close()


class EngineRuntime(_EngineContainers):
    """A ``ContainerRuntime`` over the Engine API. Connects lazily, on first use.

    ``state_dir``: ContainAI's state folder (default: as ``Paths.from_env`` finds it), where the
    syscall filter's file is kept for Podman, which reads it by path.
    """

    def __init__(self, choice: EngineChoice, *, state_dir: Path | None = None) -> None:
        self.choice = choice
        self._client: Any = None
        self._kind: EngineKind | None = None
        self._state_dir = state_dir

    @property
    def seccomp_folder(self) -> Path:
        if self._state_dir is None:
            self._state_dir = Paths.from_env(os.environ).state_dir
        return self._state_dir / SECCOMP_FOLDER

    @property
    def kind(self) -> EngineKind:
        """Which dialect the engine speaks, as it says itself (a URL may point at either)."""
        if self._kind is None:
            try:
                self._kind = engine_kind(self.client.version())
            except EngineError:
                raise
            except Exception as exc:
                raise translate(exc, self.choice, "report its version") from exc
        return self._kind

    @property
    def client(self) -> Any:
        """The Docker SDK client (for tests and the few places that need the raw API)."""
        if self._client is None:
            try:
                self._client = docker.DockerClient(
                    base_url=self.choice.base_url, version="auto", timeout=_TIMEOUT_SECONDS
                )
            except Exception as exc:
                raise translate(exc, self.choice, "connect") from exc
        return self._client

    def info(self) -> EngineInfo:
        try:
            return parse_engine_info(self.client.version(), self.client.info())
        except EngineError:
            raise
        except Exception as exc:
            raise translate(exc, self.choice, "report its version") from exc

    def image(self, ref: str) -> ImageInfo | None:
        try:
            return _image_info(self.client.images.get(ref))
        except docker.errors.ImageNotFound:
            return None
        except Exception as exc:
            raise translate(exc, self.choice, f"inspect image {ref}") from exc

    def pull(self, ref: str) -> ImageInfo:
        # The tag follows the last colon after the last slash: a registry's port is no tag.
        repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
        try:
            return _image_info(self.client.images.pull(repository, tag=tag or "latest"))
        except Exception as exc:
            raise translate(exc, self.choice, f"pull {ref}") from exc

    def build(self, spec: BuildSpec, on_event: Callable[[BuildEvent], None]) -> ImageInfo:
        context, tag, buildargs, labels = spec.context, spec.tag, spec.buildargs, spec.labels
        try:
            stream = self.client.api.build(
                path=str(context),
                tag=tag,
                buildargs=dict(buildargs),
                labels=dict(labels),
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                    raise BuildError(tag, str(detail).strip())
                text = str(chunk.get("stream", "")).rstrip("\n")
                if not text.strip():
                    continue
                on_event(
                    BuildEvent(
                        text=text,
                        step=text.startswith("Step ") or text.startswith("STEP "),
                        cached="Using cache" in text,
                    )
                )
        except BuildError:
            raise
        except Exception as exc:
            raise translate(exc, self.choice, f"build {tag}") from exc
        built = self.image(tag)
        if built is None:
            raise BuildError(tag, "the engine reported success but the image is not there")
        return built

    def import_rootfs(
        self, tarball: Path, *, tag: str, labels: Mapping[str, str], changes: Sequence[str] = ()
    ) -> ImageInfo:
        repository, _, version = tag.partition(":")
        all_changes = [*changes, *(f'LABEL {k}="{v}"' for k, v in sorted(labels.items()))]
        version = version or "latest"
        stray = (
            f"{repository}:latest"
            if version != "latest" and self.image(f"{repository}:latest") is None
            else None
        )
        try:
            answer = self.client.api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=all_changes
            )
            # Podman ignores the tag on import (it says :latest), so tag the image by its id ourselves
            # and take back a :latest tag that nobody asked for.
            image_id = _imported_id(answer)
            if image_id is not None:
                self.client.images.get(image_id).tag(repository, version)
                if stray is not None and self.image(stray) is not None:
                    self.client.images.remove(stray)
        except Exception as exc:
            raise translate(exc, self.choice, f"import {tag}") from exc
        imported = self.image(tag)
        if imported is None:
            raise EngineAPIError(f"the engine accepted {tag} but does not list it")
        return imported

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
