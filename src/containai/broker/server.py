"""The broker's Unix-socket server and the ``secret-broker`` daemon.

No TCP, ever: the agent shares a network with nothing of the broker's. Two sockets, one protocol:

- the **stub socket** (``--socket``) is the one bind-mounted into a session's container; it accepts
  only ``redeem``, and only from the uids given with ``--allow-uid`` (the MCP stub's, never the
  agent's), checked with SO_PEERCRED on every connection before a byte is read; a session's socket
  also binds each uid to one MCP server (``bindings``), whose capabilities alone that uid may redeem
  or refresh;
- the optional **admin socket** (``--admin-socket``) is never mounted anywhere; it accepts ``issue``,
  ``refresh`` and ``revoke`` from the broker's own uid. They are apart because the agent's uid inside a
  container can equal the host user's uid, so uid alone cannot tell the launcher from the agent.

Protocol: one JSON object per line each way (requests up to 64 KiB)::

    {"op":"redeem","token":T,"session":S,"container":C,"bundle":B64}  -> {"ok":true,"secrets":{name:value}}
    {"op":"issue","session":S,"container":C,"consumer":N,"secrets":[...],"ttl":SECONDS}
                                                      -> {"ok":true,"token":T,"bundle":B64}
    {"op":"refresh","session":S,"container":C,"consumer":N[,"ttl":SECONDS]}  -> as issue
    {"op":"revoke","session":S} or {"op":"revoke","container":C}          -> {"ok":true,"revoked":N}
    {"op":"ping"}                                     -> {"ok":true}  (admin: is the broker up?)
    any failure                                       -> {"ok":false,"error":REASON,"message":TEXT}

``bundle`` is standard base64. The socket's directory is created 0700 (0710 with ``--socket-group``,
so that only that group, the stub's, can reach the socket) and the socket 0600 (0660 with the group).
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
import resource
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from containai.broker.broker import Broker, Peer
from containai.cli.app import ArgumentParser, run_program
from containai.config import Paths
from containai.errors import (
    AuditUnavailable,
    BrokerError,
    BundleRefused,
    CapabilityRefused,
    ContainAIError,
    PeerRefused,
    SecretUnavailable,
    WrongConsumer,
    WrongSession,
)
from containai.inside import protocol
from containai.secrets.store import host_lookup

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
CONNECTION_TIMEOUT = 30.0
DRAIN_TIMEOUT = 1.0
STUB_OPS = frozenset({protocol.OP_REDEEM})
SESSION_STUB_OPS = frozenset(
    {protocol.OP_REDEEM, protocol.OP_REFRESH}
)  # a session's stub renews its own capabilities
ADMIN_OPS = frozenset({"issue", "refresh", "revoke", "ping"})


class BadRequest(BrokerError):
    pass


def peer_credentials(sock: socket.socket) -> Peer:
    """The connecting process's pid, uid and gid as the kernel recorded them at connect()."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid=pid, uid=uid, gid=gid)


class BrokerServer(socketserver.ThreadingUnixStreamServer):
    """A threaded Unix-socket server answering ``ops`` for peers whose uid is in ``allowed_uids``."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        path: Path,
        broker: Broker,
        *,
        allowed_uids: Iterable[int],
        ops: frozenset[str] = STUB_OPS,
        group: int | None = None,
        reachable: bool = False,
        bound: tuple[str, str] | None = None,
        bindings: Mapping[int, str] | None = None,
    ) -> None:
        self.path = path
        self.broker = broker
        self.allowed_uids = frozenset(allowed_uids)
        self.ops = ops
        self.group = group
        # A session's own stub socket: everyone in its container can connect, so that every attempt
        # meets the SO_PEERCRED check and is audited, and only that session's capabilities are served.
        self.reachable = reachable
        self.bound = bound
        # uid -> the one MCP server (consumer) whose capabilities that uid may redeem and refresh.
        self.bindings = dict(bindings) if bindings is not None else None
        if self.bindings is not None and not self.allowed_uids <= self.bindings.keys():
            raise BrokerError("every allowed uid of a bound socket needs its MCP server")
        if not self.allowed_uids:
            raise BrokerError("a broker socket with no allowed uid would refuse everyone")
        super().__init__(str(path), _Handler)

    def server_bind(self) -> None:
        _prepare_directory(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise BrokerError(f"{self.path} exists and is not a socket; refusing to replace it")
            self.path.unlink()  # a stale socket from a broker that did not stop cleanly
        # The directory is 0700 while we bind, so nobody can connect before the modes are final.
        self.socket.bind(str(self.path))
        if self.reachable:
            self.path.chmod(0o666)
            self.path.parent.chmod(0o711)
        elif self.group is None:
            self.path.chmod(0o600)
        else:
            os.chown(self.path, -1, self.group)
            self.path.chmod(0o660)
            os.chown(self.path.parent, -1, self.group)
            # Search only (no read): the stub's group can reach the socket but not list the directory.
            self.path.parent.chmod(0o710)
        self.server_address = str(self.path)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _Handler(socketserver.StreamRequestHandler):
    server: BrokerServer
    request: socket.socket

    def handle(self) -> None:
        self.request.settimeout(CONNECTION_TIMEOUT)
        peer = peer_credentials(self.request)
        if peer.uid not in self.server.allowed_uids:
            # Refused before reading anything: a disallowed peer gets no parser to attack.
            self._reply(_failure(self._audit_peer(peer, op="connect")))
            self._drain()
            return
        while True:
            try:
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            except TimeoutError:
                return
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
                self._reply(
                    _failure(BadRequest(f"requests are single lines of at most {MAX_REQUEST_BYTES} bytes"))
                )
                return
            self._reply(self._answer(line, peer))

    def _drain(self) -> None:
        """Close a refused connection cleanly: unread bytes at close would reset it, and the peer could
        lose the refusal it was sent. What it sent is read (bounded) and thrown away, never parsed."""
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)
            self.request.settimeout(DRAIN_TIMEOUT)
            left = MAX_REQUEST_BYTES
            while left > 0 and (chunk := self.request.recv(min(left, 4096))):
                left -= len(chunk)

    def _audit_peer(self, peer: Peer, *, op: str) -> BrokerError:
        try:
            return self.server.broker.refuse_peer(peer, op=op)
        except AuditUnavailable as exc:
            return exc

    def _answer(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            request = _parse_request(line)
            op = request["op"]
            if op not in STUB_OPS | ADMIN_OPS:
                raise BadRequest(f"unknown op {op[:40]!r}")
            if op not in self.server.ops:
                raise self._audit_peer(peer, op=op)
            if self.server.bound is not None and op in ("redeem", "refresh"):
                claimed = (request.get("session"), request.get("container"))
                if claimed != self.server.bound:
                    raise self.server.broker.refuse(
                        op,
                        WrongSession("this socket serves one session's container only"),
                        peer=peer.as_audit(),
                    )
            consumer = None
            if self.server.bindings is not None and op in ("redeem", "refresh"):
                consumer = self.server.bindings[peer.uid]
                asked = request.get("consumer")
                if op == "refresh" and asked != consumer:
                    shown = asked[:60] if isinstance(asked, str) else type(asked).__name__
                    raise self.server.broker.refuse(
                        op,
                        WrongConsumer(f"uid {peer.uid} is MCP server {consumer}'s, not {shown}'s"),
                        peer=peer.as_audit(),
                        consumer=shown,
                        presented_by=consumer,
                    )
            return {"ok": True, **_dispatch(self.server.broker, op, request, peer, consumer)}
        except ContainAIError as exc:
            return _failure(exc)
        except Exception:
            # Never echo an unexpected error to the peer: it could carry request or secret data.
            log.exception("broker request failed")
            return {"ok": False, "error": "internal", "message": "internal broker error"}

    def _reply(self, response: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(response, separators=(",", ":")).encode("utf-8") + b"\n")
            self.wfile.flush()


def _parse_request(line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except ValueError:
        raise BadRequest("a request is one JSON object per line") from None
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        raise BadRequest('a request is a JSON object with an "op"')
    return request


def _field(request: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = request.get(name)
    if value is None and not required:
        return None
    # bool is an int subclass; a ttl of true is a bad request, not one second.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest(f'"{name}" must be a {kind.__name__}')
    return value


def _dispatch(
    broker: Broker, op: str, request: dict[str, Any], peer: Peer, consumer: str | None = None
) -> dict[str, Any]:
    if op == "redeem":
        try:
            bundle = base64.b64decode(_field(request, "bundle", str), validate=True)
        except binascii.Error:
            raise BadRequest('"bundle" must be base64') from None
        secrets = broker.redeem(
            _field(request, "token", str),
            session=_field(request, "session", str),
            container=_field(request, "container", str),
            bundle=bundle,
            peer=peer,
            consumer=consumer,
        )
        return {"secrets": {name: secret.reveal() for name, secret in secrets.items()}}
    if op in ("issue", "refresh"):
        session, container = _field(request, "session", str), _field(request, "container", str)
        consumer = _field(request, "consumer", str)
        if op == "issue":
            names = _field(request, "secrets", list)
            issued = broker.issue(session, container, consumer, names, _field(request, "ttl", int))
        else:
            issued = broker.refresh(session, container, consumer, _field(request, "ttl", int, required=False))
        return {"token": issued.token, "bundle": base64.b64encode(issued.bundle).decode("ascii")}
    if op == "ping":
        return {}
    if op == "revoke":
        session = _field(request, "session", str, required=False)
        container = _field(request, "container", str, required=False)
        if (session is None) == (container is None):
            raise BadRequest('revoke takes one of "session" or "container"')
        revoked = (
            broker.revoke_session(session) if session is not None else broker.revoke_container(container)
        )
        return {"revoked": revoked}
    raise BadRequest(f"unknown op {op!r}")


def _failure(exc: ContainAIError) -> dict[str, Any]:
    if isinstance(exc, CapabilityRefused):
        reason = exc.reason
    elif isinstance(exc, PeerRefused):
        reason = protocol.PEER_REFUSED
    elif isinstance(exc, AuditUnavailable):
        reason = protocol.AUDIT_UNAVAILABLE
    elif isinstance(exc, BundleRefused):
        reason = protocol.BUNDLE_REFUSED
    elif isinstance(exc, SecretUnavailable):
        reason = protocol.SECRET_UNAVAILABLE
    elif isinstance(exc, BadRequest):
        reason = protocol.BAD_REQUEST
    else:
        reason = protocol.REFUSED
    return {"ok": False, "error": reason, "message": exc.message}


def _prepare_directory(directory: Path) -> None:
    """Create the socket's directory 0700, or accept an existing one only if it is ours and private."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise BrokerError(f"{directory} is not a directory (a symlink is not accepted)") from None
        if info.st_uid != os.geteuid():
            raise BrokerError(
                f"{directory} belongs to uid {info.st_uid}, not to the broker",
                hint="give the broker a socket directory of its own; it creates a missing one itself",
            ) from None
    directory.chmod(0o700)


# -- the daemon ----------------------------------------------------------------------------------


def harden_process() -> None:
    # No core dumps and no ptrace/proc-mem reads by other processes of the same uid: this process holds
    # the keys that open every live bundle.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_dumpable = 4
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="secret-broker",
        description="ContainAI's host-side secret broker: capabilities and sealed bundles over Unix sockets.",
    )
    parser.add_argument("--socket", type=Path, required=True, help="the stub-facing socket (redeem only)")
    parser.add_argument(
        "--allow-uid", type=int, action="append", required=True, help="a uid that may redeem (the MCP stub's)"
    )
    parser.add_argument("--socket-group", type=int, help="gid that may reach the stub socket (the stub's)")
    parser.add_argument("--audit", type=Path, required=True, help="the append-only JSONL audit file")
    parser.add_argument("--admin-socket", type=Path, help="host-only socket for issue/refresh/revoke")
    parser.add_argument("--max-ttl", type=int, default=300, help="longest capability lifetime in seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`secret-broker`, behind the same error boundary as every ContainAI program."""
    return run_program(lambda: _serve(argv))


def _serve(argv: Sequence[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="secret-broker: %(message)s", stream=sys.stderr)
    args = _parse_args(argv)
    harden_process()
    # The host's secret stores, as `containai secrets` sees them (CONTAINAI_HOME, keyring, env).
    lookup = host_lookup(Paths.from_env(os.environ), os.environ)
    broker = Broker(lookup=lookup, audit_path=args.audit, max_ttl=args.max_ttl)
    servers = [BrokerServer(args.socket, broker, allowed_uids=args.allow_uid, group=args.socket_group)]
    if args.admin_socket is not None:
        servers.append(BrokerServer(args.admin_socket, broker, allowed_uids=[os.getuid()], ops=ADMIN_OPS))

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run in the thread serving.
        for server in servers:
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=s.serve_forever, name=f"broker:{s.path}") for s in servers[1:]]
    for thread in threads:
        thread.start()
    log.info("listening on %s", ", ".join(str(s.path) for s in servers))
    try:
        servers[0].serve_forever()
    finally:
        for server in servers[1:]:
            server.shutdown()
        for thread in threads:
            thread.join()
        for server in servers:
            server.server_close()
        broker.close()
    log.info("stopped; every capability of this run is now dead")
    return 0
