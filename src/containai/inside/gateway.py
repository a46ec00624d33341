"""ContainAI's model-credential gateway (``containai-gateway`` in the gateway image, its own sidecar).

    containai-gateway --listen SOCK --proxy SOCK --upstream URL --header NAME --allow "POST /path" ...
                      [--scheme bearer] [--follow]

It reads the real credential from standard input (one line, then stdin is closed), so the value is
in no argument, no environment variable and no file. With --follow it keeps reading: each further
line replaces the credential (a login the host refreshes during the session). The agent's API client talks plain HTTP to it
(through the agent's relay) with a placeholder credential; the gateway drops every credential header
the client sent, adds the real one, and forwards the request to the one configured upstream, always
through the session's egress proxy. It never lets the client choose the destination.

It forwards only the requests its agent's definition allows (``--allow``, containai.inside.protocol's
rule grammar): anything else gets a 403 and a log line with its method and path, so the key cannot
list, read or delete the user's files and batches. Each connection carries one request, parsed by
h11 and held to stricter rules where h11 is lenient (bare LF, obs-fold, conflicting framing); its
body is framed anew for the upstream, and nothing the client sends after it is read, so a request
the upstream would parse differently, or a second request smuggled behind the first, never reaches it.
"""

from __future__ import annotations

import argparse
import re
import socket
import socketserver
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import h11

from containai.inside import protocol

MAX_HEAD = 64 * 1024
CHUNK = 65536
CLIENT_TIMEOUT = 120.0  # for the request only; the answer may stream for as long as the model writes
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "proxy-authorization", "api-key", "x-goog-api-key"}
)
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host"})
# The gateway frames the body itself and answers 100-continue itself.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "expect"})
SCHEMES = ("plain", "bearer")
REASONS = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}
_BLANK_LINE = re.compile(rb"\n\r?\n")  # the head's end, found leniently so that it can be refused strictly


class GatewayError(Exception):
    """A failure to report on stderr (and to the client as a 502): never the credential."""


class Refusal(Exception):
    """A request the gateway answers itself: ``status``, and a reason that quotes nothing the client sent
    but, for a 403, its method and path."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Framing:
    """How the request's body is delimited: chunked, a length, or (neither) no body."""

    chunked: bool
    length: int | None


def read_head(conn: socket.socket) -> tuple[str, bytes]:
    """An HTTP message head (without its blank line), and whatever arrived after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("client closed before the request head")
        data += chunk
        if len(data) > MAX_HEAD:
            raise ValueError("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def receive_request_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """The client's request head (with its blank line) and what came after it; a 400 if over MAX_HEAD."""
    data = b""
    while (end := _BLANK_LINE.search(data)) is None:
        if len(data) > MAX_HEAD:
            raise Refusal(400, "request head over 64 KiB")
        chunk = conn.recv(CHUNK)
        if not chunk:
            raise ConnectionError("client closed before the request head")
        data += chunk
    if end.end() > MAX_HEAD:
        raise Refusal(400, "request head over 64 KiB")
    return data[: end.end()], data[end.end() :]


def check_head(head: bytes) -> Framing:
    """The strict checks h11 leaves out, on the raw head; its framing. Reasons never quote the head."""
    if not head.endswith(b"\r\n\r\n") or not (head.count(b"\n") == head.count(b"\r\n") == head.count(b"\r")):
        raise Refusal(400, "a line of the request head does not end in CRLF")
    request_line, *lines = head[:-4].split(b"\r\n")
    if not request_line:
        raise Refusal(400, "an empty line before the request line")
    if any(line[:1] in (b" ", b"\t") for line in lines):
        raise Refusal(400, "a folded header line (obs-fold)")
    fields = [
        (name.strip().lower(), value.strip(b" \t"))
        for name, _, value in (line.partition(b":") for line in lines)
    ]
    lengths = [value for name, value in fields if name == b"content-length"]
    encodings = [value for name, value in fields if name == b"transfer-encoding"]
    if lengths and encodings:
        raise Refusal(400, "both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or len(encodings) > 1:
        raise Refusal(400, "a repeated Content-Length or Transfer-Encoding")
    if encodings and encodings[0] != b"chunked":
        raise Refusal(400, "a Transfer-Encoding other than chunked")
    if lengths and not re.fullmatch(rb"[0-9]{1,15}", lengths[0]):
        raise Refusal(400, "a Content-Length that is not one number")
    return Framing(chunked=bool(encodings), length=int(lengths[0]) if lengths else None)


def check_target(target: bytes) -> tuple[str, str]:
    """The request target as (path, query): origin-form, ASCII, no fragment, a clean query."""
    if not all(0x21 <= byte <= 0x7E for byte in target):
        raise Refusal(400, "a request target with a character outside printable ASCII")
    if b"#" in target:
        raise Refusal(400, "a request target with a fragment")
    if not target.startswith(b"/"):
        raise Refusal(400, "a request target that is not a path (absolute-form, authority-form or *)")
    path, mark, query = target.decode("ascii").partition("?")
    if mark and not re.fullmatch(protocol.GATEWAY_QUERY_PATTERN, query):
        raise Refusal(400, "a query string with characters outside a URL query")
    return path, query


def usable(credential: str) -> bool:
    return bool(credential) and not any(c in credential for c in "\r\n\0")


class Gateway:
    """Forwards each allowed request to the one upstream, through the egress proxy, with the real credential."""

    def __init__(
        self,
        upstream: str,
        proxy_socket: str,
        header: str,
        scheme: str,
        credential: str,
        *,
        allow: Iterable[str],
    ) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        if self.upstream.scheme not in ("http", "https") or not self.upstream.hostname:
            raise GatewayError(f"bad upstream {upstream!r}")
        try:
            self.allow = tuple(protocol.parse_gateway_rule(rule) for rule in allow)
        except ValueError as exc:
            raise GatewayError(f"bad --allow rule {exc}") from None
        if not self.allow:
            raise GatewayError("no --allow rule: the gateway would forward nothing")
        self.proxy_socket = proxy_socket
        self.header = header
        self.scheme = scheme
        self.credential = credential
        self.context = ssl.create_default_context()

    def authority(self) -> tuple[str, int]:
        host = self.upstream.hostname
        assert host is not None  # noqa: S101  # checked in __init__
        return host, self.upstream.port or (443 if self.upstream.scheme == "https" else 80)

    def host_header(self) -> str:
        host, port = self.authority()
        return host if port == (443 if self.upstream.scheme == "https" else 80) else f"{host}:{port}"

    def open_upstream(self) -> socket.socket:
        """A connection to the upstream, through the egress proxy: CONNECT for https, absolute URIs for http."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.proxy_socket)
            host, port = self.authority()
            if self.upstream.scheme == "http":
                return conn
            conn.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head, _ = read_head(conn)
            status = head.split(" ", 2)[1] if " " in head else "?"
            if status != "200":
                raise PermissionError(f"the egress proxy refused CONNECT {host}:{port} ({status})")
            return self.context.wrap_socket(conn, server_hostname=host)
        except BaseException:
            conn.close()
            raise

    def upstream_path(self, path: str) -> str:
        """The client's path on the upstream: under the upstream's own path (``/v1``) unless already there."""
        base = self.upstream.path.rstrip("/")
        return base + path if base and path != base and not path.startswith(base + "/") else path

    def upstream_head(self, request: h11.Request, path: str, query: str, framing: Framing) -> bytes:
        """The request head for the upstream: the client's credential, hop and framing headers dropped;
        ours added, with the body's framing as the gateway sends it."""
        target = path + (f"?{query}" if query else "")
        if self.upstream.scheme == "http":  # squid takes plain http in absolute form
            target = f"http://{self.host_header()}{target}"
        lines = [request.method + b" " + target.encode("ascii") + b" HTTP/1.1"]
        dropped = CREDENTIAL_HEADERS | HOP_HEADERS | FRAMING_HEADERS
        lines += [
            name + b": " + value
            for name, value in request.headers.raw_items()
            if name.lower().decode("latin-1") not in dropped
        ]
        value = f"Bearer {self.credential}" if self.scheme == "bearer" else self.credential
        lines += [
            f"Host: {self.host_header()}".encode(),
            f"{self.header}: {value}".encode("latin-1"),
            b"Connection: close",
        ]
        if framing.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif framing.length is not None:
            lines.append(b"Content-Length: %d" % framing.length)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def read_request(self, client: socket.socket) -> tuple[h11.Connection, h11.Request, str, str, Framing]:
        """One request's head from the client, checked; a Refusal says why not."""
        head, rest = receive_request_head(client)
        framing = check_head(head)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        conn.receive_data(head + rest)
        try:
            request = conn.next_event()
        except h11.RemoteProtocolError:
            raise Refusal(400, "a request h11 cannot parse") from None
        if not isinstance(request, h11.Request):
            raise Refusal(400, "a request h11 cannot parse")
        if request.http_version != b"1.1":
            raise Refusal(400, "a request that is not HTTP/1.1")
        path, query = check_target(request.target)
        method = request.method.decode("ascii")
        path = self.upstream_path(path)
        if not protocol.gateway_allows(self.allow, method, path):
            raise Refusal(403, f"refused {method} {path[:200]}: not in the agent's gateway allow list")
        return conn, request, path, query, framing

    def handle(self, client: socket.socket, log: IO[str]) -> None:
        client.settimeout(CLIENT_TIMEOUT)
        try:
            conn, request, path, query, framing = self.read_request(client)
        except Refusal as refusal:
            say(log, refusal.reason if refusal.status == 403 else f"refused a request: {refusal.reason}")
            answer(client, refusal.status, refusal.reason)
            return
        try:
            upstream = self.open_upstream()
        except OSError as exc:  # PermissionError, the proxy's refusal, is one
            answer(client, 502, str(exc))
            return
        with upstream:
            upstream.sendall(self.upstream_head(request, path, query, framing))
            try:
                forward_body(conn, client, upstream, framing)
            except Refusal as refusal:
                say(log, f"refused a request: {refusal.reason}")
                answer(client, refusal.status, refusal.reason)
                return
            client.settimeout(None)
            while data := upstream.recv(CHUNK):
                client.sendall(data)

    def follow(self, lines: Iterable[str], log: IO[str]) -> None:
        """Each further line is the credential from now on; the end of the lines changes nothing."""
        for line in lines:
            credential = line.rstrip("\n")
            if usable(credential):
                self.credential = credential  # one attribute store: a request sees the old or the new
                say(log, "credential renewed")
            del credential


def forward_body(
    conn: h11.Connection, client: socket.socket, upstream: socket.socket, framing: Framing
) -> None:
    """The request's body, as h11 reads it, framed anew for the upstream; nothing after its end."""
    if conn.they_are_waiting_for_100_continue:
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            raise Refusal(400, "a request body h11 cannot parse") from None
        if event is h11.NEED_DATA:
            data = client.recv(CHUNK)
            if not data:
                raise ConnectionError("client closed before the end of its request body")
            conn.receive_data(data)
        elif isinstance(event, h11.Data):
            data = bytes(event.data)
            if framing.chunked and data:
                upstream.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
            elif data:
                upstream.sendall(data)
        elif isinstance(event, h11.EndOfMessage):
            if framing.chunked:
                upstream.sendall(b"0\r\n\r\n")
            return
        else:
            raise Refusal(400, "a request body h11 cannot parse")


def answer(client: socket.socket, status: int, reason: str) -> None:
    """The gateway's own answer; the connection closes after it."""
    body = f"containai-gateway: {reason}\n".encode()
    client.sendall(
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: text/plain\r\nConnection: close\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    # What the client already sent and the gateway will not read: drained, so that closing with it
    # unread does not reset the connection before the client reads the answer.
    client.setblocking(False)
    try:
        while client.recv(CHUNK):
            pass
    except OSError:
        pass


def say(log: IO[str], line: str) -> None:
    log.write(f"containai-gateway: {line}\n")
    log.flush()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def make_server(gateway: Gateway, listen: str, log: IO[str]) -> Server:
    """The gateway's socket, open to every uid (the agent's relay), serving one thread per connection."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                gateway.handle(self.request, log)
            except (OSError, ValueError) as exc:  # ConnectionError is an OSError
                say(log, str(exc))

    path = Path(listen)
    path.unlink(missing_ok=True)
    server = Server(listen, Handler)
    path.chmod(0o666)  # the agent's relay connects as its own uid; the gateway's volume is shared with it
    return server


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="containai-gateway", description="ContainAI's model-credential gateway."
    )
    parser.add_argument(
        "--listen", default=protocol.GATEWAY_SOCKET, help=f"its socket ({protocol.GATEWAY_SOCKET})"
    )
    parser.add_argument(
        "--proxy", default=protocol.PROXY_SOCKET, help=f"the egress proxy ({protocol.PROXY_SOCKET})"
    )
    parser.add_argument("--upstream", required=True, help="the model API's base URL")
    parser.add_argument("--header", required=True, help="the header that carries the credential")
    parser.add_argument(
        "--allow",
        action="append",
        required=True,
        metavar="'METHOD /path'",
        help="a request it forwards (repeat); it refuses every other",
    )
    parser.add_argument("--scheme", choices=SCHEMES, default="plain")
    parser.add_argument("--follow", action="store_true", help="replace the credential with each new line")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None, stdin: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    args = _parse_args(argv)
    stdin = sys.stdin if stdin is None else stdin
    log = sys.stderr if stderr is None else stderr
    credential = stdin.readline().rstrip("\n")
    if not usable(credential):
        log.write("containai-gateway: no usable credential on stdin\n")
        return 1
    try:
        gateway = Gateway(args.upstream, args.proxy, args.header, args.scheme, credential, allow=args.allow)
    except GatewayError as exc:
        log.write(f"containai-gateway: {exc}\n")
        return 1
    del credential
    if args.follow:
        threading.Thread(target=gateway.follow, args=(stdin, log), name="follow", daemon=True).start()
    else:
        stdin.close()
    with make_server(gateway, args.listen, log) as server:
        server.serve_forever()
    return 0
