"""One broker per session: the host side of a session's secrets, alive exactly as long as its container.

The launcher starts it (``python -m containai.broker.session``) before the session's container, as a
process of its own so that persistent sessions keep it after the launcher returns. It serves:

- the **stub socket**, in a directory bind-mounted into the container at ``/run/containai/broker``:
  ``redeem`` and ``refresh``, for this session's container only, from the MCP servers' uids only,
  each uid for its own server's capabilities only (``--server NAME=UID``, one per server). The
  socket is reachable by every uid in the container on purpose: the agent's attempts meet the
  SO_PEERCRED check and land in the audit, rather than failing silently on a file mode.
- the **admin socket**, in a private host directory that is mounted nowhere: ``issue`` and ``revoke``
  for the launcher.

Secret values are looked up in the host's stores (keyring, ContainAI's store, mcp-secrets.env, the
launcher's environment) when a capability is issued or refreshed, so a rotated secret reaches the
next MCP server start without a restart. The daemon watches the container through the engine: when it
stops or goes away, every capability of the session is revoked and the daemon exits. SIGTERM (the
launcher's teardown) does the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from containai.broker.broker import Broker
from containai.broker.server import ADMIN_OPS, SESSION_STUB_OPS, BrokerServer, harden_process
from containai.cli.app import ArgumentParser, run_program
from containai.config import Paths
from containai.errors import BrokerError, ContainAIError
from containai.gateway.login import CHECK_SECONDS, CLAUDE_TOKEN_URL, ClaudeLogin
from containai.inside import protocol
from containai.runtime.base import StdinFeed
from containai.runtime.engine import EngineRuntime
from containai.runtime.select import EngineChoice
from containai.secrets.store import host_lookup

log = logging.getLogger(__name__)

PID_FILE = "broker.pid"
SOCKETS_FILE = "broker.sockets"
WATCH_INTERVAL = 2.0
_started: dict[int, subprocess.Popen[bytes]] = {}  # brokers this process started, reaped by stop()
START_GRACE = 120.0
STOPPED = frozenset(
    {"exited", "dead", "removing"}
)  # how long the container may take to appear before the broker gives up


def socket_base(environ: Mapping[str, str]) -> Path:
    """A short, private place for sockets: AF_UNIX paths end at 107 bytes, state paths can be longer."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "containai"
    return Path(tempfile.gettempdir()) / f"containai-{os.geteuid()}"


@dataclass(frozen=True)
class BrokerPaths:
    """Where one session's broker keeps its pid (the session's state dir), sockets, audit and log."""

    state_dir: Path
    audit: Path
    sockets: Path

    @classmethod
    def for_session(cls, state_dir: Path, audit: Path, environ: Mapping[str, str]) -> BrokerPaths:
        return cls(state_dir, audit, socket_base(environ) / state_dir.name)

    @property
    def socket_dir(self) -> Path:
        return self.sockets / "broker"

    @property
    def admin_socket(self) -> Path:
        return self.sockets / "admin" / "admin.sock"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / PID_FILE

    @property
    def log(self) -> Path:
        """Beside the audit, so that it outlives the session's state."""
        return self.audit.with_name(self.audit.name.removesuffix(".jsonl") + ".log")


def _private_directory(path: Path) -> None:
    """Create ``path`` 0700, or accept it only if it is a real directory of ours (it may be in /tmp)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise BrokerError(
            f"{path} is not a private directory of this user",
            hint="remove it (someone else may have created it), or set XDG_RUNTIME_DIR",
        )


# -- the launcher's side ---------------------------------------------------------------------------


def start(
    where: BrokerPaths,
    *,
    session: str,
    container: str,
    engine_url: str,
    gateway: str | None = None,
    login: ClaudeLogin | None = None,
    servers: Mapping[str, int] | None = None,
    timeout: float = 60.0,
) -> int:
    """Start the session's broker and wait until its admin socket answers; its pid.

    With ``gateway`` and ``login``, the broker starts that (created) gateway container itself, with
    the login's access token on its stdin, and sends it each renewed token for the session's life."""
    where.state_dir.mkdir(parents=True, exist_ok=True)
    where.audit.parent.mkdir(parents=True, exist_ok=True)
    _private_directory(where.sockets.parent)
    _private_directory(where.sockets)
    (where.state_dir / SOCKETS_FILE).write_text(f"{where.sockets}\n", encoding="utf-8")
    log_path = where.log
    argv = [
        sys.executable,
        "-m",
        "containai.broker.session",
        "--session",
        session,
        "--container",
        container,
        "--socket-dir",
        str(where.socket_dir),
        "--admin-socket",
        str(where.admin_socket),
        "--audit",
        str(where.audit),
        "--engine-url",
        engine_url,
        *(_login_args(gateway, login) if gateway and login else ()),
        *(arg for name, uid in sorted((servers or {}).items()) for arg in ("--server", f"{name}={uid}")),
    ]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # our own module, by absolute interpreter path
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    _started[process.pid] = process
    where.pid_file.write_text(f"{process.pid}\n", encoding="ascii")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(
                f"the session's secret broker exited at start (code {process.returncode})",
                hint=f"see {log_path}",
            )
        with contextlib.suppress(OSError, BrokerError):
            admin(where.admin_socket, {"op": "ping"})
            return process.pid
        time.sleep(0.05)
    process.terminate()
    raise BrokerError("the session's secret broker did not start in time", hint=f"see {log_path}")


def _login_args(gateway: str, login: ClaudeLogin) -> tuple[str, ...]:
    return (
        *("--gateway", gateway, "--claude-login", str(login.path)),
        *("--token-url", login.token_url, "--login-check-seconds", str(login.check_seconds)),
    )


def admin(path: Path, request: Mapping[str, object], *, timeout: float = 10.0) -> dict[str, Any]:
    """One request on the admin socket; the answer, or BrokerError with the broker's message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        with sock.makefile("rb") as answers:
            line = answers.readline()
    if not line:
        raise BrokerError("the session's secret broker closed the connection")
    answer: dict[str, Any] = json.loads(line)
    if not answer.get("ok"):
        raise BrokerError(f"the secret broker refused: {answer.get('message', answer.get('error'))}")
    return answer


def stop(state_dir: Path, *, timeout: float = 5.0) -> None:
    """Stop a session's broker (it revokes the session's capabilities first), if it still runs."""
    try:
        _terminate(state_dir, timeout)
    finally:
        with contextlib.suppress(OSError):
            sockets = Path((state_dir / SOCKETS_FILE).read_text(encoding="utf-8").strip())
            if sockets.name == state_dir.name:  # only ever this session's own directory
                shutil.rmtree(sockets, ignore_errors=True)


def _terminate(state_dir: Path, timeout: float) -> None:
    try:
        pid = int((state_dir / PID_FILE).read_text(encoding="ascii").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    # The pid may have been reused since: only signal the broker of this very session.
    if b"containai.broker.session" not in cmdline or b"\0" + state_dir.name.encode() + b"\0" not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if (child := _started.pop(pid, None)) is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


# -- the daemon ------------------------------------------------------------------------------------


def _watch(broker: Broker, container: str, runtime: EngineRuntime, done: threading.Event) -> None:
    """Revoke everything and stop when the container stops or disappears."""
    seen = False
    started = time.monotonic()
    while not done.wait(WATCH_INTERVAL):
        try:
            info = runtime.container(container)
        except ContainAIError:
            log.warning("cannot reach the engine to watch %s; will retry", container)
            continue
        if info is not None and info.status == "created":
            continue  # not started yet
        if info is not None and info.status not in STOPPED:
            if not seen:
                log.info("watching container %s (%s)", container, info.status)
            seen = True
            continue
        # Stopped, or gone after it was seen (or never there, long after the launcher asked).
        if info is not None or seen or time.monotonic() - started > START_GRACE:
            revoked = broker.revoke_container(container)
            log.info("container %s is gone: %d capabilities revoked", container, revoked)
            done.set()


def _start_gateway(args: argparse.Namespace, runtime: EngineRuntime) -> tuple[ClaudeLogin, StdinFeed, str]:
    """Start the gateway with the login's current access token (refreshed here first if need be)."""
    login = ClaudeLogin(args.claude_login, token_url=args.token_url, check_seconds=args.login_check_seconds)
    tokens = login.current()
    feed = runtime.start_fed(args.gateway)
    feed.send(tokens.access.encode() + b"\n")
    log.info("gateway %s started with the host's Claude login", args.gateway)
    return login, feed, tokens.access


def _keep_fresh(login: ClaudeLogin, feed: StdinFeed, last: str, done: threading.Event) -> None:
    """Renew the access token on the host before it expires, and hand each new one to the gateway."""
    while not done.wait(login.check_seconds):
        try:
            access = login.current().access
        except ContainAIError as exc:
            log.warning("the host's Claude login: %s; will retry", exc.message)
            continue
        if access != last:
            try:
                feed.send(access.encode() + b"\n")
            except OSError:
                log.warning("the gateway no longer reads renewed tokens; stopping")
                return
            last = access
            log.info("the gateway has the renewed Claude login")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="containai-session-broker", description=__doc__)
    parser.add_argument("--session", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--socket-dir", type=Path, required=True)
    parser.add_argument("--admin-socket", type=Path, required=True)
    parser.add_argument("--audit", type=Path, required=True)
    parser.add_argument("--engine-url", required=True)
    parser.add_argument(
        "--server",
        type=_server_binding,
        action="append",
        default=[],
        metavar="NAME=UID",
        help="an MCP server and the uid of its stub: that uid may redeem and refresh NAME's capabilities only",
    )
    parser.add_argument("--max-ttl", type=int, default=300)
    parser.add_argument("--gateway", help="the gateway container to start, fed the login's access token")
    parser.add_argument("--claude-login", type=Path, help="the host's Claude Code login file")
    parser.add_argument("--token-url", default=CLAUDE_TOKEN_URL, help="where the login is refreshed")
    parser.add_argument("--login-check-seconds", type=float, default=CHECK_SECONDS)
    return parser.parse_args(argv)


def _server_binding(text: str) -> tuple[str, int]:
    name, _, uid = text.partition("=")
    if not name or not uid.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=UID")
    return name, int(uid)


def bindings(servers: Sequence[tuple[str, int]]) -> dict[int, str]:
    """uid -> MCP server, refusing a uid given to two servers (it could redeem both's capabilities)."""
    bound: dict[int, str] = {}
    for name, uid in servers:
        if bound.setdefault(uid, name) != name:
            raise BrokerError(f"uid {uid} is given to two MCP servers, {bound[uid]} and {name}")
    return bound


def main(argv: Sequence[str] | None = None) -> int:
    """The session broker, behind the same error boundary as every ContainAI program."""
    return run_program(lambda: _serve(argv))


def _serve(argv: Sequence[str] | None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s session-broker: %(message)s", stream=sys.stderr
    )
    args = _parse_args(argv)
    harden_process()
    broker = Broker(
        lookup=host_lookup(Paths.from_env(os.environ), os.environ),
        audit_path=args.audit,
        max_ttl=args.max_ttl,
    )
    bound = bindings(args.server)
    servers = [
        BrokerServer(
            args.socket_dir / protocol.BROKER_SOCKET_NAME,
            broker,
            # With no MCP server the socket still answers, and refuses (and audits) everyone.
            allowed_uids=bound.keys() or [protocol.STUB_UID],
            ops=SESSION_STUB_OPS,
            reachable=True,
            bound=(args.session, args.container),
            bindings=bound or None,
        ),
        BrokerServer(args.admin_socket, broker, allowed_uids=[os.getuid()], ops=ADMIN_OPS),
    ]
    runtime = EngineRuntime(EngineChoice(args.engine_url, None, "the session launcher"))
    feed = _start_gateway(args, runtime) if args.gateway and args.claude_login else None

    done = threading.Event()
    if feed is not None:
        threading.Thread(target=_keep_fresh, args=(*feed, done), daemon=True).start()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        threading.Thread(target=s.serve_forever, name=f"broker:{s.path}", daemon=True) for s in servers
    ]
    watcher = threading.Thread(target=_watch, args=(broker, args.container, runtime, done), daemon=True)
    threads.append(watcher)
    for thread in threads:
        thread.start()
    log.info("session %s: serving %s", args.session, ", ".join(str(s.path) for s in servers))
    done.wait()
    try:
        revoked = broker.revoke_session(args.session)
        log.info("session %s ended: %d capabilities revoked", args.session, revoked)
    except ContainAIError as exc:
        log.error("%s", exc.message)
    for server in servers:
        server.shutdown()
        server.server_close()
    watcher.join(timeout=10)  # a revocation it is writing goes before the close line
    try:
        broker.close()  # last, once nothing more can be refused: the audit's close line
    except ContainAIError as exc:
        log.error("%s", exc.message)
    if feed is not None:
        feed[1].close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
