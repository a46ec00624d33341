"""ContainAI's model-credential gateway (``containai-gateway`` in the gateway image, its own sidecar).

    containai-gateway --listen SOCK --proxy SOCK --upstream URL --header NAME [--scheme bearer] [--follow]

It reads the real credential from standard input (one line, then stdin is closed), so the value is
in no argument, no environment variable and no file. With --follow it keeps reading: each further
line replaces the credential (a login the host refreshes during the session). The agent's API client talks plain HTTP to it
(through the agent's relay) with a placeholder credential; the gateway drops every credential header
the client sent, adds the real one, and forwards the request to the one configured upstream, always
through the session's egress proxy. It never lets the client choose the destination.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from containai.inside import protocol

MAX_HEAD = 64 * 1024
CHUNK = 65536
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "x-api-key", "proxy-authorization", "api-key", "x-goog-api-key"}
)
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "host"})
SCHEMES = ("plain", "bearer")


class GatewayError(Exception):
    """A failure to report on stderr (and to the client as a 502): never the credential."""


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


def usable(credential: str) -> bool:
    return bool(credential) and not any(c in credential for c in "\r\n\0")


class Gateway:
    """Forwards each request to the one upstream, through the egress proxy, with the real credential."""

    def __init__(self, upstream: str, proxy_socket: str, header: str, scheme: str, credential: str) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        if self.upstream.scheme not in ("http", "https") or not self.upstream.hostname:
            raise GatewayError(f"bad upstream {upstream!r}")
        self.proxy_socket = proxy_socket
        self.header = header
        self.scheme = scheme
        self.credential = credential
        self.context = ssl.create_default_context()

    def authority(self) -> tuple[str, int]:
        host = self.upstream.hostname
        assert host is not None  # noqa: S101  # checked in __init__
        return host, self.upstream.port or (443 if self.upstream.scheme == "https" else 80)

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

    def rewrite(self, head: str) -> str:
        """The client's request head for the upstream: its credential headers dropped, ours added."""
        lines = head.split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        parsed = urllib.parse.urlsplit(target)
        path = parsed.path or "/"
        if parsed.query:
            path += "?" + parsed.query
        base = self.upstream.path.rstrip("/")
        if base and not path.startswith(base + "/"):
            path = base + path
        host, port = self.authority()
        default = 443 if self.upstream.scheme == "https" else 80
        host_header = host if port == default else f"{host}:{port}"
        target = f"http://{host_header}{path}" if self.upstream.scheme == "http" else path
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in CREDENTIAL_HEADERS | HOP_HEADERS:
                continue
            headers.append(f"{name.strip()}: {value.strip()}")
        value = f"Bearer {self.credential}" if self.scheme == "bearer" else self.credential
        headers += [f"Host: {host_header}", f"{self.header}: {value}", "Connection: close"]
        return f"{method} {target} {version}\r\n" + "\r\n".join(headers) + "\r\n\r\n"

    def handle(self, client: socket.socket) -> None:
        head, rest = read_head(client)
        try:
            upstream = self.open_upstream()
        except OSError as exc:  # PermissionError, the proxy's refusal, is one
            body = f"containai-gateway: {exc}\n".encode()
            client.sendall(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return
        with upstream:
            upstream.sendall(self.rewrite(head).encode("latin-1") + rest)
            pump(client, upstream)

    def follow(self, lines: Iterable[str], log: IO[str]) -> None:
        """Each further line is the credential from now on; the end of the lines changes nothing."""
        for line in lines:
            credential = line.rstrip("\n")
            if usable(credential):
                self.credential = credential  # one attribute store: a request sees the old or the new
                log.write("containai-gateway: credential renewed\n")
                log.flush()
            del credential


def pump(client: socket.socket, upstream: socket.socket) -> None:
    """Request body onwards while the response streams back, until the upstream closes."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        while True:
            for key, _ in selector.select():
                source: socket.socket = key.fileobj  # type: ignore[assignment]  # registered above
                target: socket.socket = key.data
                data = source.recv(CHUNK)
                if not data:
                    if source is upstream:
                        return
                    selector.unregister(client)
                    continue
                target.sendall(data)
                # TLS may hold decrypted bytes that select() will not announce.
                while isinstance(source, ssl.SSLSocket) and source.pending():
                    target.sendall(source.recv(CHUNK))


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def make_server(gateway: Gateway, listen: str, log: IO[str]) -> Server:
    """The gateway's socket, open to every uid (the agent's relay), serving one thread per connection."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                gateway.handle(self.request)
            except (OSError, ValueError) as exc:  # ConnectionError is an OSError
                log.write(f"containai-gateway: {exc}\n")
                log.flush()

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
        gateway = Gateway(args.upstream, args.proxy, args.header, args.scheme, credential)
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
