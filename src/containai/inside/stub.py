"""ContainAI's MCP stub (``mcp-stub`` in the base image): the agent's MCP servers, started with secrets that the agent never holds.

One stub runs per MCP server, inside a session's container, under that server's own uid (65500 and
up), neither the agent's nor another server's: the agent and the other servers can read neither its
memory nor its files. The launcher installs each server's configuration and capability in that
server's state directory, then starts ``serve`` there; the agent's CLI runs ``connect NAME`` as the
command of each MCP server. On each connection the stub redeems the server's capability at the host's secret
broker, fills the ``${SECRET_NAME}`` placeholders of that server's env or headers, and relays the MCP
traffic: to a child process for a command server, or over streamable HTTP for a URL server.

    mcp-stub install --state DIR/NAME  reads {"config": {...}, "caps": {NAME: {"token", "bundle"}}} on stdin
    mcp-stub serve   --state DIR/NAME  the stub itself (as server NAME's uid)
    mcp-stub connect NAME [--state DIR]    the agent's end: stdio <-> DIR/NAME/front.sock

``servers.json`` (the ``config`` above)::

    {"session": S, "container": C,
     "broker": "/run/containai/broker/broker.sock",          (default)
     "cwd": "DIR/home",           (default; where command servers start: never the agent's workspace,
                                   from which npx or Python could load code the agent planted)
     "servers": {NAME: {"command": PROGRAM, "args": [ARG, ...], "env": {VAR: TEMPLATE}}
                 NAME: {"url": "https://...", "headers": {HEADER: TEMPLATE}}}}

A server's state directory, ``DIR/NAME`` (``DIR`` is /run/containai/mcp; a tmpfs owned by the server's
uid, mode 0711: the agent can reach ``front.sock`` by name but cannot list anything)::

    servers.json      the configuration above, 0600
    caps/NAME.json    the next capability of server NAME, 0600 (the directory 0700); taken when used
    front.sock        the agent's front door, 0666; it appears only once the stub listens
    ready             written once front.sock listens; holds the stub's pid
    stub.log          what the stub did: server names, outcomes, refusal reasons; never a value
    server-NAME.log   the stderr of command server NAME
    home/             HOME of command servers, 0700

Front-door protocol: the client's first line is ``{"server": NAME}`` (at most 1 KiB); from then on the
connection carries the server's newline-delimited JSON-RPC both ways. A failure before that is one
line ``{"error": TEXT}`` (no "jsonrpc" key) and the connection closes; ``connect`` prints that text on
stderr and exits 1 (so the agent's CLI shows why), exits 1 too when there is no stub to reach, and
exits 0 when the stub closes a connection that was served. ``install`` and ``serve`` exit 1 on errors.

Broker protocol: one JSON object per line each way, on the bind-mounted broker socket::

    {"op":"redeem","token":T,"session":S,"container":C,"bundle":B64} -> {"ok":true,"secrets":{NAME:VALUE}}
    {"op":"refresh","session":S,"container":C,"consumer":NAME}      -> {"ok":true,"token":T,"bundle":B64}
    any failure -> {"ok":false,"error":REASON,"message":TEXT}

Each capability is used once: its file is removed when it is taken, and after every successful
redemption the stub asks for a fresh one for the next start. Secret values go into the child's
environment or the HTTP headers and nowhere else: never argv, a log, a file or an error message.

Standard library only (and ``containai.inside.protocol``): this runs in the agent image, which has
python3 and nothing else of ours but this package.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import ctypes
import json
import logging
import os
import re
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any, NamedTuple

from containai.inside import protocol

log = logging.getLogger("mcp-stub")

DEFAULT_STATE = Path(protocol.STUB_STATE)
DEFAULT_BROKER = protocol.BROKER_SOCKET
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SERVER_NAME = re.compile(protocol.SERVER_NAME_PATTERN)
# The broker's secret-name alphabet; anything else in ${...} stays literal.
PLACEHOLDER = re.compile(rf"\$\{{({protocol.BROKER_NAME_PATTERN})\}}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
SESSION_ID = re.compile(r"[\x21-\x7e]{1,1024}")  # visible ASCII, as the MCP spec requires

# Not secret, and needed by servers behind the session's egress proxy (a TLS-intercepting one too).
PASSED_THROUGH = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)

MAX_HELLO = 1024
MAX_INSTALL = 1024 * 1024
MAX_CAP_FILE = 64 * 1024
MAX_BROKER_ANSWER = 1024 * 1024
MAX_MESSAGE = 16 * 1024 * 1024
CHUNK = 64 * 1024
HELLO_TIMEOUT = 10.0
BROKER_TIMEOUT = 15.0
STOP_GRACE = 2.0  # a command server exits by itself on stdin EOF; after this it gets SIGTERM
KILL_GRACE = 2.0  # and after this, SIGKILL
HTTP_TIMEOUT = 300.0  # idle time on one HTTP exchange; a tool call may legitimately take minutes
DRAIN_TIMEOUT = 10.0  # after the client's EOF, how long in-flight HTTP requests may still answer
DELETE_TIMEOUT = 5.0
JSONRPC_SERVER_ERROR = -32000
JSONRPC_PARSE_ERROR = -32700


class StubError(Exception):
    """A failure whose message is safe to show the agent and to log: never a secret, token or bundle."""


class BrokerRefused(StubError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server: a command (``argv``, ``env``) or a streamable-HTTP ``url`` (``headers``)."""

    name: str
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = None

    @property
    def templates(self) -> Mapping[str, str]:
        return (self.headers if self.url is not None else self.env) or {}

    def secret_names(self) -> frozenset[str]:
        return frozenset(name for value in self.templates.values() for name in PLACEHOLDER.findall(value))


@dataclass(frozen=True)
class Config:
    session: str
    container: str
    broker: str
    cwd: str
    servers: Mapping[str, ServerSpec]


def parse_config(data: object) -> Config:
    """servers.json as typed values; StubError naming the first thing wrong."""
    if not isinstance(data, dict):
        raise StubError("the configuration is not a JSON object")
    for key in ("session", "container"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise StubError(f'the configuration needs a "{key}" string')
    broker, cwd = data.get("broker", DEFAULT_BROKER), data.get("cwd", "")
    if not isinstance(broker, str) or not isinstance(cwd, str):
        raise StubError('"broker" and "cwd" are paths (strings)')
    servers = data.get("servers")
    if not isinstance(servers, dict):
        raise StubError('the configuration needs a "servers" object')
    return Config(
        session=data["session"],
        container=data["container"],
        broker=broker,
        cwd=cwd,
        servers={name: _parse_server(name, spec) for name, spec in servers.items()},
    )


def _parse_server(name: str, spec: object) -> ServerSpec:
    check_server_name(name)
    if not isinstance(spec, dict):
        raise StubError(f"server {name}: not a JSON object")
    if ("command" in spec) == ("url" in spec):
        raise StubError(f'server {name}: give either "command" (stdio) or "url" (HTTP), not both or neither')
    if "command" in spec:
        command, args = spec["command"], spec.get("args", [])
        if not isinstance(command, str) or not command:
            raise StubError(f'server {name}: "command" must be a non-empty string')
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise StubError(f'server {name}: "args" must be a list of strings')
        env = _string_map(name, "env", spec.get("env", {}), ENV_NAME)
        return ServerSpec(name=name, argv=(command, *args), env=env)
    url = spec["url"]
    if not isinstance(url, str) or not re.match(r"https?://[^/?#\s]+", url):
        raise StubError(f'server {name}: "url" must be an http:// or https:// URL')
    headers = _string_map(name, "headers", spec.get("headers", {}), HEADER_NAME)
    return ServerSpec(name=name, url=url, headers=headers)


def _string_map(server: str, field: str, value: object, key_pattern: re.Pattern[str]) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and key_pattern.fullmatch(k) and isinstance(v, str) for k, v in value.items()
    ):
        raise StubError(f'server {server}: "{field}" must map valid names to strings')
    return dict(value)


def check_server_name(name: object) -> str:
    if not isinstance(name, str) or not SERVER_NAME.fullmatch(name):
        shown = name[:60] if isinstance(name, str) else type(name).__name__
        raise StubError(
            f"bad server name {shown!r}: use 1 to 41 of a-z, 0-9, '_' and '-', not starting with '_' or '-'"
        )
    return name


def render(spec: ServerSpec, secrets: Mapping[str, str]) -> dict[str, str]:
    """The server's env or headers with every placeholder filled; all of them or StubError."""
    missing = sorted(spec.secret_names() - secrets.keys())
    if missing:
        raise StubError(
            f"MCP server {spec.name} needs {', '.join(missing)}, which the secret broker did not return; "
            "grant them to this server on the host"
        )
    rendered = {
        key: PLACEHOLDER.sub(lambda m: secrets[m.group(1)], value) for key, value in spec.templates.items()
    }
    # A value with a line break would split an HTTP header; a NUL cannot be in an environment.
    forbidden = "\r\n\0" if spec.url is not None else "\0"
    for key, value in rendered.items():
        if any(c in value for c in forbidden):
            raise StubError(f"MCP server {spec.name}: {key} would hold a control character (from a secret)")
    return rendered


# -- files ----------------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` 0600 all at once: a temp file in the same directory, then rename over."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def private_directory(path: Path) -> None:
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise StubError(f"{path} is not a directory of the stub's own")
    path.chmod(0o700)


class Capability(NamedTuple):
    """A single-use capability as the broker issued it; not secret alone, but kept out of logs too."""

    token: str
    bundle: str  # standard base64

    @classmethod
    def parse(cls, data: object) -> Capability:
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            raise StubError('a capability is {"token": ..., "bundle": ...}')
        token, bundle = data["token"], data.get("bundle")
        if not isinstance(bundle, str) or not 0 < len(token) <= 4096:
            raise StubError('a capability is {"token": ..., "bundle": ...}')
        try:
            base64.b64decode(bundle, validate=True)
        except binascii.Error:
            raise StubError("a capability's bundle must be base64") from None
        return cls(token, bundle)

    def to_json(self) -> bytes:
        return json.dumps({"token": self.token, "bundle": self.bundle}).encode("ascii")


# -- install --------------------------------------------------------------------------------------


def install(state: Path, document: bytes) -> str:
    """Write servers.json and caps/NAME.json from the launcher's document; a summary line."""
    if len(document) > MAX_INSTALL:
        raise StubError(f"install reads at most {MAX_INSTALL} bytes on stdin")
    try:
        data = json.loads(document)
    except ValueError:
        raise StubError("install reads one JSON object on stdin") from None
    if not isinstance(data, dict) or not ({"config", "caps"} & data.keys()):
        raise StubError('install reads {"config": {...}, "caps": {NAME: {"token": ..., "bundle": ...}}}')
    config = parse_config(data["config"]) if "config" in data else None
    caps = data.get("caps", {})
    if not isinstance(caps, dict):
        raise StubError('"caps" must map server names to capabilities')
    parsed = {check_server_name(name): Capability.parse(cap) for name, cap in caps.items()}
    if config is not None and (unknown := sorted(parsed.keys() - config.servers.keys())):
        raise StubError(f"capabilities for servers not in the configuration: {', '.join(unknown)}")
    with contextlib.suppress(FileExistsError):
        state.mkdir(mode=0o711)
        state.chmod(0o711)  # the agent reaches front.sock by name; umask took the x bits
    private_directory(state / "caps")
    for name, cap in parsed.items():
        write_private(state / "caps" / f"{name}.json", cap.to_json())
    if config is not None:
        write_private(state / "servers.json", json.dumps(data["config"], indent=2).encode("utf-8") + b"\n")
    return (
        f"installed {len(config.servers) if config else 'no'} server(s) "
        f"and capabilities for {', '.join(sorted(parsed)) or 'none'}"
    )


# -- the broker -----------------------------------------------------------------------------------


class BrokerClient:
    """The broker's stub socket, one connection per request (they are rare: one or two per start)."""

    def __init__(self, path: str, *, session: str, container: str) -> None:
        self.path = path
        self.session = session
        self.container = container

    def redeem(self, cap: Capability) -> dict[str, str]:
        answer = self._call(
            {
                "op": protocol.OP_REDEEM,
                "token": cap.token,
                "session": self.session,
                "container": self.container,
                "bundle": cap.bundle,
            }
        )
        secrets = answer.get("secrets")
        if not isinstance(secrets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
        ):
            raise StubError("the secret broker answered a redeem without secrets")
        return secrets

    def refresh(self, server: str) -> Capability:
        answer = self._call(
            {
                "op": protocol.OP_REFRESH,
                "session": self.session,
                "container": self.container,
                "consumer": server,
            }
        )
        return Capability.parse(answer)

    def _call(self, request: dict[str, str]) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(BROKER_TIMEOUT)
                sock.connect(self.path)
                sock.sendall(json.dumps(request, separators=(",", ":")).encode("utf-8") + b"\n")
                with sock.makefile("rb") as answers:
                    line = answers.readline(MAX_BROKER_ANSWER)
        except OSError as exc:
            raise StubError(
                f"cannot reach the secret broker at {self.path} ({exc.strerror or type(exc).__name__}); "
                "the session's broker may have stopped: `connect-agent -n NAME` on the host starts it again"
            ) from None
        try:
            answer = json.loads(line)
        except ValueError:
            raise StubError("the secret broker's answer is not JSON (or it closed the connection)") from None
        if not isinstance(answer, dict):
            raise StubError("the secret broker's answer is not a JSON object")
        if answer.get("ok") is not True:
            error, message = answer.get("error"), answer.get("message")
            reason = error if isinstance(error, str) else protocol.REFUSED
            message = message if isinstance(message, str) else reason
            # The broker's messages name reasons and secrets, never values or tokens.
            raise BrokerRefused(reason, f"the secret broker refused: {message}")
        return answer


# -- serve ----------------------------------------------------------------------------------------


def harden() -> bool:
    """No core dumps, nothing readable by default, and not dumpable: the agent's uid (and any other
    non-root one) cannot ptrace this process or read its /proc files. True if prctl took effect."""
    os.umask(0o077)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    pr_get_dumpable, pr_set_dumpable = 3, 4
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
        return int(libc.prctl(pr_get_dumpable, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


# Package managers read configuration from files they find by walking up from the working directory
# (npm's .npmrc beside the nearest package.json, uv's uv.toml and pyproject.toml) and from variables.
# A server starts in the stub's private home, with a guard package.json there to end npm's walk, and
# with each manager's configuration pinned to files the agent cannot write. PATH is the image's, never
# inherited, and nothing else of the stub's environment (NODE_OPTIONS, PYTHONPATH, npm_config_*) is.
GUARD_PACKAGE_JSON = b'{"name": "containai-mcp-home", "private": true}\n'
PINNED_ENV = {
    "NPM_CONFIG_GLOBALCONFIG": "/dev/null",
    "PIP_CONFIG_FILE": "/dev/null",
    "PYTHONNOUSERSITE": "1",
    "UV_NO_CONFIG": "1",
}


def server_environment(home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """What every command server starts with, before its own ``env``."""
    return {
        "PATH": DEFAULT_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        **{name: environ[name] for name in PASSED_THROUGH if name in environ},
        **PINNED_ENV,
        "NPM_CONFIG_USERCONFIG": str(home / ".npmrc"),
    }


def prepare_home(home: Path) -> None:
    """The servers' home and working directory: private, with npm's walk ended and its config empty."""
    private_directory(home)
    write_private(home / "package.json", GUARD_PACKAGE_JSON)
    write_private(home / ".npmrc", b"")


def writable_by_others(path: Path, *, own_uid: int) -> list[str]:
    """``path`` and each of its ancestors that a uid other than root's and ours could change.

    A writable ancestor lets the agent plant configuration that a package manager finds by walking up
    (or replace the directory itself); the stub refuses to start servers below one.
    """
    found = []
    for folder in (path, *path.parents):
        try:
            info = folder.lstat()
        except OSError as exc:
            found.append(f"{folder} ({exc.strerror})")
            continue
        if stat.S_ISLNK(info.st_mode):
            found.append(f"{folder} (a symbolic link)")
        elif info.st_uid not in (0, own_uid):
            found.append(f"{folder} (owned by uid {info.st_uid})")
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{folder} (mode {stat.S_IMODE(info.st_mode):04o})")
    return found


def _peer(sock: socket.socket) -> str:
    with contextlib.suppress(OSError):
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return f"uid {uid} pid {pid}"
    return "an unknown peer"


class Stub:
    """The front door: one thread per connection, each serving one MCP server for its lifetime."""

    def __init__(self, state: Path, config: Config, environ: Mapping[str, str]) -> None:
        self.state = state
        self.config = config
        self.broker = BrokerClient(config.broker, session=config.session, container=config.container)
        self.base_env = server_environment(state / "home", environ)
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in config.servers}
        self._children: set[subprocess.Popen[bytes]] = set()
        self._children_lock = threading.Lock()

    # -- secrets

    def secrets_for(self, spec: ServerSpec) -> dict[str, str]:
        """Redeem the server's capability (renewing a stale one), and keep a fresh one for next time."""
        if not spec.secret_names():
            return {}
        # One start at a time per server: two connections must not both take the same capability.
        with self._locks[spec.name]:
            secrets = None
            cap = self._take_capability(spec.name)
            if cap is not None:
                try:
                    secrets = self.broker.redeem(cap)
                except BrokerRefused as refusal:
                    if refusal.reason not in protocol.RENEWABLE:
                        raise
                    log.info(
                        "%s: stored capability refused (%s); asking for a fresh one",
                        spec.name,
                        refusal.reason,
                    )
            if secrets is None:
                secrets = self.broker.redeem(self.broker.refresh(spec.name))
            log.info("%s: redeemed a capability for %s", spec.name, ", ".join(sorted(secrets)) or "nothing")
            self._store_next_capability(spec.name)
            return secrets

    def _take_capability(self, name: str) -> Capability | None:
        path = self.state / "caps" / f"{name}.json"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                raw = handle.read(MAX_CAP_FILE)
        except FileNotFoundError:
            log.info("%s: no stored capability; asking for a fresh one", name)
            return None
        except OSError as exc:
            log.warning("%s: stored capability unreadable (%s); asking for a fresh one", name, exc.strerror)
            return None
        # Taken: whatever happens next, this token is never presented again.
        try:
            path.unlink()
        except OSError as exc:
            log.warning("%s: could not remove the used capability file (%s)", name, exc.strerror)
        try:
            return Capability.parse(json.loads(raw))
        except (ValueError, StubError):
            log.warning("%s: stored capability is damaged; asking for a fresh one", name)
            return None

    def _store_next_capability(self, name: str) -> None:
        try:
            cap = self.broker.refresh(name)
            private_directory(self.state / "caps")
            write_private(self.state / "caps" / f"{name}.json", cap.to_json())
        except (StubError, OSError) as exc:
            # The next start asks the broker for a fresh capability itself; nothing is lost here.
            log.warning("%s: could not store a capability for the next start: %s", name, exc)
            return
        log.info("%s: stored a fresh capability for the next start", name)

    # -- children

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        with self._children_lock:
            self._children.add(process)

    def release(self, process: subprocess.Popen[bytes]) -> None:
        with self._children_lock:
            self._children.discard(process)

    def stop_children(self) -> None:
        with self._children_lock:
            children = list(self._children)
        for process in children:
            _signal_group(process, signal.SIGTERM)
        for process in children:
            stop_process(process, grace=KILL_GRACE)

    # -- the front door

    def serve(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self._handle, args=(conn,), name="connection", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        name = "?"
        try:
            name, rest = self._hello(conn)
            spec = self.config.servers[name]
            log.info("%s: connection from %s", name, _peer(conn))
            if spec.url is not None:
                secrets = self.secrets_for(spec)
                headers = render(spec, secrets)
                secrets.clear()
                HttpRelay(spec, headers, conn).run(rest)
            else:
                self._run_command(spec, conn, rest)
        except StubError as exc:
            log.warning("%s: refused: %s", name, exc)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(exc)}).encode("utf-8") + b"\n")
        except Exception as exc:
            # The type only: an unexpected exception's text could quote a header or environment value.
            log.error("%s: internal error (%s)", name, type(exc).__name__)
            with contextlib.suppress(OSError):
                conn.sendall(b'{"error": "internal error in the MCP stub; see stub.log"}\n')
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _hello(self, conn: socket.socket) -> tuple[str, bytes]:
        conn.settimeout(HELLO_TIMEOUT)
        buffer = b""
        try:
            while b"\n" not in buffer and len(buffer) <= MAX_HELLO:
                chunk = conn.recv(CHUNK)
                if not chunk:
                    raise StubError("the connection closed before its first line")
                buffer += chunk
        except TimeoutError:
            raise StubError('no {"server": NAME} line in time') from None
        conn.settimeout(None)
        line, newline, rest = buffer.partition(b"\n")
        if not newline or len(line) > MAX_HELLO:
            raise StubError(f'the first line must be {{"server": NAME}} of at most {MAX_HELLO} bytes')
        try:
            hello = json.loads(line)
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or not isinstance(hello.get("server"), str):
            raise StubError('the first line must be {"server": NAME}')
        name = check_server_name(hello["server"])
        if name not in self.config.servers:
            known = ", ".join(sorted(self.config.servers)) or "none"
            raise StubError(f"no MCP server {name} in this session (configured: {known})")
        return name, rest

    # -- command servers

    def _run_command(self, spec: ServerSpec, conn: socket.socket, rest: bytes) -> None:
        log_path = self.state / f"server-{spec.name}.log"
        try:
            # Opened first: a failure here must not cost the server its capability.
            stderr = os.open(
                log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise StubError(f"cannot open {log_path} for MCP server {spec.name}: {exc.strerror}") from None
        try:
            secrets = self.secrets_for(spec)
            env = self.base_env | render(spec, secrets)
            secrets.clear()
        except BaseException:
            os.close(stderr)
            raise
        try:
            process = subprocess.Popen(  # an argv list from the launcher's config; no shell
                spec.argv,
                cwd=self.config.cwd or str(self.state / "home"),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,
                close_fds=True,
                start_new_session=True,  # its own process group, so that its children stop with it
            )
        except OSError as exc:
            raise StubError(
                f"could not start MCP server {spec.name}: {exc.strerror} ({exc.filename or spec.argv[0]})"
            ) from None
        finally:
            os.close(stderr)
            # Best effort: the values now live in the child's environment, not in this process.
            env.clear()
            del env, secrets
        self.adopt(process)
        log.info("%s: started pid %d", spec.name, process.pid)
        try:
            _relay_process(process, conn, rest)
        finally:
            stop_process(process, grace=KILL_GRACE)
            self.release(process)
        log.info("%s: pid %d exited with %s", spec.name, process.pid, process.returncode)


def _relay_process(process: subprocess.Popen[bytes], conn: socket.socket, rest: bytes) -> None:
    """Bytes both ways until the server's stdout closes; stop the server if the client leaves."""
    assert process.stdin is not None and process.stdout is not None  # noqa: S101  # PIPE above

    def client_to_server() -> None:
        assert process.stdin is not None  # noqa: S101
        try:
            _write_all(process.stdin.fileno(), rest)
            while chunk := conn.recv(CHUNK):
                _write_all(process.stdin.fileno(), chunk)
        except OSError:
            pass  # the server closed its stdin, or the connection went away
        with contextlib.suppress(OSError):
            process.stdin.close()
        # The client is done: an MCP server exits on stdin EOF; one that does not is stopped.
        stop_process(process, grace=STOP_GRACE)

    pump = threading.Thread(target=client_to_server, name="client-to-server", daemon=True)
    pump.start()
    try:
        while chunk := os.read(process.stdout.fileno(), CHUNK):
            conn.sendall(chunk)
    except OSError:
        _signal_group(process, signal.SIGTERM)  # the client is gone
    finally:
        process.stdout.close()
        # Wakes the pump's recv(), so it closes the server's stdin and waits for it.
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
    pump.join()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_process(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """Wait ``grace`` for the process to exit, then SIGTERM its group, then SIGKILL it."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            _signal_group(process, signum)
    else:
        process.wait()
    _signal_group(process, signal.SIGKILL)  # stragglers left in its group


# -- URL servers ----------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would carry the Authorization header to wherever a redirect points; refuse them instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpRelay:
    """MCP's streamable HTTP transport: each client line is POSTed; the answers come back as lines.

    Requests other than ``initialize`` run in threads of their own, so a long tool call does not hold
    up a cancellation; notifications and responses are sent in order, before anything that follows.
    """

    def __init__(self, spec: ServerSpec, headers: dict[str, str], conn: socket.socket) -> None:
        assert spec.url is not None  # noqa: S101  # parse_config made it so
        self.name = spec.name
        self.url = spec.url
        self.headers = headers
        self.conn = conn
        # ProxyHandler() reads HTTP(S)_PROXY and NO_PROXY (either case) from our environment: the
        # session's egress proxy, bypassed for the hosts NO_PROXY names.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler(), _NoRedirects())
        self.session_id: str | None = None
        self.protocol: str | None = None
        self._write_lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def run(self, rest: bytes) -> None:
        log.info("%s: relaying to %s", self.name, self.url)
        try:
            for line in _lines(self.conn, rest):
                self._dispatch(line)
            for worker in self._workers:
                worker.join(DRAIN_TIMEOUT)
        finally:
            self._end_session()
            self.headers.clear()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self._write(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": JSONRPC_PARSE_ERROR, "message": "parse error"},
                }
            )
            return
        messages = message if isinstance(message, list) else [message]
        requests = [m for m in messages if isinstance(m, dict) and "method" in m and m.get("id") is not None]
        initialize = next((m["id"] for m in requests if m["method"] == "initialize"), None)
        if requests and initialize is None:
            worker = threading.Thread(target=self._post, args=(line, requests, None), daemon=True)
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
            worker.start()
        else:
            self._post(line, requests, initialize)

    def _post(self, body: bytes, requests: list[dict[str, Any]], initialize: object) -> None:
        """POST one client line and relay what comes back; every request in it gets an answer or an error."""
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **self._session_headers(),
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310  # http(s) only, checked in parse_config
        answered: set[str] = set()
        problem = None
        try:
            with self.opener.open(request, timeout=HTTP_TIMEOUT) as response:
                session_id = response.headers.get("Mcp-Session-Id")
                if self.session_id is None and session_id and SESSION_ID.fullmatch(session_id):
                    self.session_id = session_id
                self._relay_answer(response, initialize, answered)
        except urllib.error.HTTPError as exc:
            exc.close()
            # Status and reason only: an error page may echo the request's headers.
            problem = f"answered HTTP {exc.code} {exc.reason}"
        except StubError as exc:
            problem = str(exc)
        except (urllib.error.URLError, OSError, HTTPException, ValueError) as exc:
            problem = f"did not answer: {getattr(exc, 'reason', None) or type(exc).__name__}"
        unanswered = [r for r in requests if _id_key(r["id"]) not in answered]
        if unanswered and problem is None:
            problem = "ended the exchange without answering"
        if problem is not None:
            log.warning("%s: %s", self.name, problem)
            self._fail(unanswered, f"the MCP server {self.name} {problem}")

    def _session_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol is not None:
            headers["MCP-Protocol-Version"] = self.protocol
        return headers

    def _relay_answer(self, response: HTTPResponse, initialize: object, answered: set[str]) -> None:
        if response.status in (202, 204):
            return
        kind = response.headers.get_content_type()
        messages: Iterable[bytes | str]
        if kind == "text/event-stream":
            messages = _events(response)
        elif kind == "application/json":
            body = response.read(MAX_MESSAGE + 1)
            if len(body) > MAX_MESSAGE:
                raise StubError(f"sent an answer over {MAX_MESSAGE} bytes")
            messages = [body] if body.strip() else []
        else:
            raise StubError(f"answered with {kind}, not JSON or an event stream")
        for data in messages:
            answered |= self._deliver(data, initialize)

    def _deliver(self, data: bytes | str, initialize: object) -> set[str]:
        """Write one message (or batch) to the client; the ids of the requests it answers."""
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("%s: dropped a message that is not JSON", self.name)
            return set()
        if initialize is not None and isinstance(message, dict) and message.get("id") == initialize:
            result = message.get("result")
            version = result.get("protocolVersion") if isinstance(result, dict) else None
            if isinstance(version, str) and SESSION_ID.fullmatch(version):
                self.protocol = version
        self._write(message)
        return {
            _id_key(m["id"])
            for m in (message if isinstance(message, list) else [message])
            if isinstance(m, dict) and "id" in m and "method" not in m
        }

    def _fail(self, requests: list[dict[str, Any]], text: str) -> None:
        for request in requests:
            self._write(
                {
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "error": {"code": JSONRPC_SERVER_ERROR, "message": text},
                }
            )

    def _write(self, message: object) -> None:
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"
        with self._write_lock, contextlib.suppress(OSError):
            self.conn.sendall(line)

    def _end_session(self) -> None:
        if self.session_id is None:
            return
        request = urllib.request.Request(self.url, headers=self._session_headers(), method="DELETE")  # noqa: S310
        try:
            with self.opener.open(request, timeout=DELETE_TIMEOUT):
                pass
        except urllib.error.HTTPError as exc:
            exc.close()  # 405: the server does not let clients end sessions; that is allowed
        except (urllib.error.URLError, OSError, HTTPException):
            return
        log.info("%s: ended the HTTP session", self.name)


def _id_key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _lines(conn: socket.socket, rest: bytes) -> Iterable[bytes]:
    """The client's lines (a last one without a newline too), until it closes its side."""
    pending = bytearray(rest)
    searched = 0  # no newline before this offset: a long message is scanned once, not once per chunk
    while True:
        newline = pending.find(b"\n", searched)
        if newline >= 0:
            line = bytes(pending[:newline])
            del pending[: newline + 1]
            searched = 0
            if line.strip():
                yield line
            continue
        searched = len(pending)
        if len(pending) > MAX_MESSAGE:
            raise StubError(f"a message over {MAX_MESSAGE} bytes")
        try:
            chunk = conn.recv(CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            if pending.strip():
                yield bytes(pending)
            return
        pending += chunk


def _events(response: HTTPResponse) -> Iterable[str]:
    """The data of each server-sent event (https://html.spec.whatwg.org/#parsing-an-event-stream)."""
    data: list[str] = []
    for raw in response:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
            data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    # An event cut off before its blank line is not dispatched, as the spec says.


def serve(state: Path, environ: Mapping[str, str]) -> int:
    hardened = harden()
    logging.basicConfig(
        filename=state / protocol.STUB_LOG_NAME,
        level=logging.INFO,
        format="%(asctime)s mcp-stub[%(process)d] %(levelname)s %(message)s",
    )
    if hardened:
        log.info("hardened: not dumpable, no core dumps, umask 077")
    else:
        log.warning("could not make the stub non-dumpable; its memory is as safe as its uid only")
    try:
        config = parse_config(json.loads((state / "servers.json").read_bytes()))
    except (OSError, ValueError) as exc:
        raise StubError(
            f"cannot read {state / 'servers.json'} ({getattr(exc, 'strerror', None) or 'not JSON'}): "
            "run `mcp-stub install` first"
        ) from None
    prepare_home(state / "home")
    for folder in {state / "home", Path(config.cwd or state / "home")}:
        if unsafe := writable_by_others(folder, own_uid=os.geteuid()):
            raise StubError(
                f"refusing to start MCP servers in {folder}: {', '.join(unsafe)} can be changed by another "
                "user, who could plant configuration that the servers' package managers would read"
            )
    stub = Stub(state, config, environ)
    front, ready = state / protocol.FRONT_SOCKET_NAME, state / "ready"
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(front.lstat().st_mode):
            raise StubError(f"{front} exists and is not a socket; refusing to replace it")
        if _answers(front):
            raise StubError(f"another MCP stub is already serving {front}")
    # Bound under another name and renamed into place: front.sock appears only once it is listening
    # and open to the agent, so "the socket exists" is a sufficient readiness check for the launcher.
    staging = state / "front.sock.new"
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(staging))
    staging.chmod(0o666)  # the agent's front door; what it may ask for is checked per connection
    listener.listen(16)
    staging.replace(front)  # over a stale socket left by a stub that did not stop cleanly

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_private(ready, f"{os.getpid()}\n".encode("ascii"))
    log.info("listening on %s for %s", front, ", ".join(sorted(config.servers)) or "no servers")
    try:
        stub.serve(listener)
    finally:
        listener.close()
        for path in (front, ready):
            with contextlib.suppress(OSError):
                path.unlink()
        stub.stop_children()
        log.info("stopped")
    return 0


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


# -- connect --------------------------------------------------------------------------------------


def connect(name: str, state: Path) -> int:
    """The agent's end: say which server, then stdin -> stub -> stdout until the stub closes."""
    try:
        check_server_name(name)
    except StubError as exc:
        print(f"mcp-stub: {exc}", file=sys.stderr)
        return 1
    path = state / name / protocol.FRONT_SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps({"server": name}).encode("utf-8") + b"\n")
    except OSError as exc:
        print(
            f"mcp-stub: cannot reach {path} ({exc.strerror}): no MCP stub serves {name} in this session; "
            "MCP servers run only in sessions that ContainAI launched with them configured",
            file=sys.stderr,
        )
        return 1

    def stdin_to_stub() -> None:
        # os.read, not sys.stdin: a buffered reader blocked in a daemon thread can hang the exit.
        try:
            while chunk := os.read(0, CHUNK):
                sock.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=stdin_to_stub, name="stdin", daemon=True).start()
    first: bytes | None = b""  # until the first line is seen: it may be the stub's refusal
    try:
        while True:
            chunk = sock.recv(CHUNK)
            if first is not None:
                first += chunk
                if chunk and b"\n" not in first and len(first) <= MAX_HELLO * 4:
                    continue
                refusal = _refusal(first.partition(b"\n")[0])
                if refusal is not None:
                    print(f"mcp-stub: MCP server {name}: {refusal}", file=sys.stderr)
                    return 1
                chunk, first = first, None
            if not chunk:
                return 0
            _write_all(1, chunk)
    except BrokenPipeError:
        return 0  # whoever reads our stdout has gone; so are we


def _refusal(line: bytes) -> str | None:
    """The stub's error line (``{"error": TEXT}``, which no JSON-RPC message is), or None."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if isinstance(message, dict) and set(message) == {"error"} and isinstance(message["error"], str):
        return message["error"]
    return None


# -- the command line -----------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mcp-stub", description="ContainAI's in-container MCP stub.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("install", "write servers.json and capabilities from the JSON document on stdin"),
        ("serve", "serve the agent's front door (as the stub's uid)"),
        ("connect", "the agent's MCP server command: relay stdio to server NAME through the stub"),
    ):
        sub = commands.add_parser(command, help=text, description=text)
        if command == "connect":
            sub.add_argument("name", help="the MCP server's name in this session")
        where = (
            f"the directory of the servers' ({DEFAULT_STATE})" if command == "connect" else "this server's"
        )
        default = DEFAULT_STATE if command == "connect" else None
        sub.add_argument(
            "--state", type=Path, default=default, required=default is None, help=f"{where} state directory"
        )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = _parse_args(argv)
    if args.command == "connect":
        return connect(args.name, args.state)
    os.umask(0o077)
    try:
        if args.command == "install":
            print(f"mcp-stub: {install(args.state, sys.stdin.buffer.read(MAX_INSTALL + 1))}")
            return 0
        return serve(args.state, environ)
    except (StubError, OSError) as exc:
        detail = str(exc) if isinstance(exc, StubError) else f"{exc.strerror}: {exc.filename}"
        print(f"mcp-stub: error: {detail}", file=sys.stderr)
        if logging.getLogger().handlers:  # serve had opened stub.log
            log.error("%s%s", protocol.STUB_NOT_SERVING, detail)
        return 1
