"""Servers for the tests' "fake internet": a catch-all canary, a tiny DNS server and an HTTP server.

Standard library only; it runs with python3 inside ``containai-base:dev`` as the unprivileged image
user (Docker sets ``net.ipv4.ip_unprivileged_port_start=0`` in containers, so ports below 1024 need
no capability). Every event is one JSON line, flushed at once, so a test reads what happened so far.
Once every socket listens, the program writes ``<log>.ready`` (a JSON list of the bound sockets):
the fixture waits for that file instead of probing, because a probe would itself be logged.

    canary --tcp 22,80 --udp 53,123 --log /log/canary.jsonl
    dns --zone allowed.test=198.18.0.20 --zone '*.rebind.test=127.0.0.1' --log /log/dns.jsonl
    http --port 80 --name allowed --log /log/allowed.jsonl [--tls-port 443 --tls-log /log/allowed-tls.jsonl]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIRST_BYTES = 256
MAX_BODY = 64 * 1024 * 1024


class JsonLog:
    def __init__(self, path: str) -> None:
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - open for the process lifetime
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps({"time": time.time(), **record}, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def spawn(target: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


def die(hook: threading.ExceptHookArgs) -> None:
    """A dead listener must not look like a quiet one: any thread that fails ends the process."""
    traceback.print_exception(hook.exc_type, hook.exc_value, hook.exc_traceback)
    os._exit(70)


def bind(kind: int, port: int) -> list[socket.socket]:
    """Sockets on every IPv4 address and, where the container has IPv6, every IPv6 address."""
    sockets = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):  # noqa: S104 - a test canary
        try:
            sock = socket.socket(family, kind)
        except OSError:
            continue  # no IPv6 in this kernel or container
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError:
            if family == socket.AF_INET:
                raise
            sock.close()
            continue  # IPv6 disabled in the container (Docker's default): IPv4 only
        if kind == socket.SOCK_STREAM:
            sock.listen(64)
        sockets.append(sock)
    return sockets


def describe(sock: socket.socket) -> dict[str, Any]:
    proto = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
    return {
        "proto": proto,
        "family": 6 if sock.family == socket.AF_INET6 else 4,
        "port": sock.getsockname()[1],
    }


def mark_ready(log_path: str, sockets: list[socket.socket]) -> None:
    Path(log_path + ".ready").write_text(json.dumps([describe(s) for s in sockets]) + "\n", encoding="utf-8")


def read_first_bytes(conn: socket.socket) -> bytes:
    """Up to FIRST_BYTES: wait a moment for the first chunk, then take what follows without delay."""
    data = b""
    conn.settimeout(1.0)
    with contextlib.suppress(OSError):
        while len(data) < FIRST_BYTES:
            chunk = conn.recv(FIRST_BYTES - len(data))
            if not chunk:
                break
            data += chunk
            conn.settimeout(0.2)
    return data


def tcp_canary(listener: socket.socket, log: JsonLog, extra: Callable[[bytes], dict[str, Any]]) -> None:
    port = listener.getsockname()[1]

    def handle(conn: socket.socket, peer: tuple[Any, ...]) -> None:
        with conn:
            data = read_first_bytes(conn)
            log.write(
                proto="tcp",
                port=port,
                peer=peer[0],
                peer_port=peer[1],
                first_bytes=base64.b64encode(data).decode(),
                **extra(data),
            )

    while True:
        conn, peer = listener.accept()
        spawn(handle, conn, peer)


def udp_canary(sock: socket.socket, log: JsonLog) -> None:
    port = sock.getsockname()[1]
    while True:
        data, peer = sock.recvfrom(65535)
        log.write(
            proto="udp",
            port=port,
            peer=peer[0],
            peer_port=peer[1],
            first_bytes=base64.b64encode(data[:FIRST_BYTES]).decode(),
            length=len(data),
        )


def tls_sni(data: bytes) -> str | None:
    """The server name in a TLS ClientHello, if the first bytes hold one."""
    try:
        if data[0] != 0x16 or data[5] != 0x01:  # handshake record, ClientHello
            return None
        pos = 9 + 2 + 32  # record header 5, handshake header 4, version 2, random 32
        pos += 1 + data[pos]  # session id
        pos += 2 + struct.unpack_from("!H", data, pos)[0]  # cipher suites
        pos += 1 + data[pos]  # compression methods
        end = pos + 2 + struct.unpack_from("!H", data, pos)[0]
        pos += 2
        while pos + 4 <= end:
            ext_type, ext_len = struct.unpack_from("!HH", data, pos)
            pos += 4
            if ext_type == 0:  # server_name: list length 2, type 1, name length 2, name
                name_len = struct.unpack_from("!H", data, pos + 3)[0]
                return data[pos + 5 : pos + 5 + name_len].decode("ascii", "backslashreplace")
            pos += ext_len
    except (IndexError, struct.error):
        pass
    return None


# --- canary -------------------------------------------------------------------------------------


def ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def cmd_canary(args: argparse.Namespace) -> list[socket.socket]:
    log = JsonLog(args.log)
    sockets = []
    for port in args.tcp:
        for sock in bind(socket.SOCK_STREAM, port):
            spawn(tcp_canary, sock, log, lambda _data: {})
            sockets.append(sock)
    for port in args.udp:
        for sock in bind(socket.SOCK_DGRAM, port):
            spawn(udp_canary, sock, log)
            sockets.append(sock)
    return sockets


# --- dns ----------------------------------------------------------------------------------------

QTYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    255: "ANY",
}


class Zone:
    def __init__(self, entries: list[str]) -> None:
        self.exact: dict[str, list[str]] = {}
        self.wild: dict[str, list[str]] = {}  # "*.rebind.test" is stored as "rebind.test"
        for entry in entries:
            name, _, addresses = entry.partition("=")
            name = name.strip().lower().rstrip(".")
            ips = [str(ipaddress.IPv4Address(a.strip())) for a in addresses.split(",") if a.strip()]
            if name.startswith("*."):
                self.wild.setdefault(name[2:], []).extend(ips)
            else:
                self.exact.setdefault(name, []).extend(ips)

    def lookup(self, qname: str) -> list[str] | None:
        """The A records for a name, or None if the name does not exist."""
        name = qname.lower().rstrip(".")
        if name in self.exact:
            return self.exact[name]
        labels = name.split(".")
        for i in range(1, len(labels)):
            if (suffix := ".".join(labels[i:])) in self.wild:
                return self.wild[suffix]
        if name.endswith(".in-addr.arpa"):
            return [] if self.reverse(name) else None
        return None

    def reverse(self, qname: str) -> str | None:
        """PTR: the first exact name mapped to this address (so IP literals can look allowlisted)."""
        octets = qname.lower().rstrip(".").removesuffix(".in-addr.arpa").split(".")
        address = ".".join(reversed(octets))
        return next((name for name, ips in self.exact.items() if address in ips), None)


def parse_question(packet: bytes) -> tuple[int, int, str, int, bytes]:
    """(id, flags, qname, qtype, raw question) of a DNS query; ValueError if malformed."""
    if len(packet) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack_from("!HHH", packet)
    if flags & 0x8000 or qdcount < 1:
        raise ValueError("not a query")
    labels, pos = [], 12
    while True:
        length = packet[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[pos + 1 : pos + 1 + length].decode("ascii", "backslashreplace"))
        pos += 1 + length
    qtype, _qclass = struct.unpack_from("!HH", packet, pos)
    return qid, flags, ".".join(labels), qtype, packet[12 : pos + 4]


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p) + b"\0"


def answer(zone: Zone, packet: bytes) -> tuple[bytes, dict[str, Any]]:
    qid, flags, qname, qtype, question = parse_question(packet)
    records = zone.lookup(qname)
    rcode = 3 if records is None else 0  # NXDOMAIN, or NOERROR (empty for AAAA and other types)
    answers = []
    if qtype == 1 and records:
        answers = [struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(ip) for ip in records]
    elif qtype == 12 and (target := zone.reverse(qname)):
        rdata = encode_name(target)
        answers = [struct.pack("!HHHIH", 0xC00C, 12, 1, 0, len(rdata)) + rdata]
    reply_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | rcode  # QR, opcode, AA, RD
    header = struct.pack("!HHHHHH", qid, reply_flags, 1, len(answers), 0, 0)
    return header + question + b"".join(answers), {"qname": qname, "qtype": QTYPES.get(qtype, str(qtype))}


def dns_udp(sock: socket.socket, zone: Zone, log: JsonLog) -> None:
    while True:
        packet, peer = sock.recvfrom(65535)
        try:
            reply, record = answer(zone, packet)
        except (ValueError, IndexError, struct.error):
            log.write(proto="udp", peer=peer[0], peer_port=peer[1], qname=None, qtype=None, malformed=True)
            continue
        log.write(proto="udp", peer=peer[0], peer_port=peer[1], **record)
        with contextlib.suppress(OSError):
            sock.sendto(reply, peer)


def dns_tcp(listener: socket.socket, zone: Zone, log: JsonLog) -> None:
    def handle(conn: socket.socket, peer: tuple[Any, ...]) -> None:
        with conn, contextlib.suppress(OSError, ValueError, IndexError, struct.error):
            conn.settimeout(3.0)
            stream = conn.makefile("rb")
            while len(prefix := stream.read(2)) == 2:
                packet = stream.read(struct.unpack("!H", prefix)[0])
                try:
                    reply, record = answer(zone, packet)
                except (ValueError, IndexError, struct.error):
                    log.write(
                        proto="tcp", peer=peer[0], peer_port=peer[1], qname=None, qtype=None, malformed=True
                    )
                    return
                log.write(proto="tcp", peer=peer[0], peer_port=peer[1], **record)
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    while True:
        conn, peer = listener.accept()
        spawn(handle, conn, peer)


def cmd_dns(args: argparse.Namespace) -> list[socket.socket]:
    zone, log = Zone(args.zone), JsonLog(args.log)
    sockets = []
    for sock in bind(socket.SOCK_DGRAM, args.port):
        spawn(dns_udp, sock, zone, log)
        sockets.append(sock)
    for sock in bind(socket.SOCK_STREAM, args.port):
        spawn(dns_tcp, sock, zone, log)
        sockets.append(sock)
    return sockets


# --- http ---------------------------------------------------------------------------------------


def make_handler(name: str, log: JsonLog) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = f"fakenet-{name}"
        timeout = 5
        logged = False
        error: int | str | None = None

        def handle(self) -> None:
            """Every connection leaves a record: one that never makes a valid request logs its error."""
            try:
                super().handle()
            finally:
                if not self.logged:
                    log.write(
                        peer=self.client_address[0],
                        peer_port=self.client_address[1],
                        method=getattr(self, "command", None),
                        path=getattr(self, "path", None),
                        host_header=None,
                        body_bytes=0,
                        error=self.error or "no request",
                    )

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            self.error = code
            super().send_error(code, message, explain)

        def __getattr__(self, attr: str) -> Any:
            if attr.startswith("do_"):  # any method, including made-up ones and CONNECT
                return self.respond
            raise AttributeError(attr)

        def read_body(self) -> int:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                total = 0
                while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                    total += len(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                return total
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            return len(self.rfile.read(length)) if length > 0 else 0

        def respond(self) -> None:
            body_bytes = self.read_body()
            self.logged = True
            log.write(
                peer=self.client_address[0],
                peer_port=self.client_address[1],
                method=self.command,
                path=self.path,
                host_header=self.headers.get("Host"),
                body_bytes=body_bytes,
            )
            payload = f"{name}-ok\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the JSON log is the record; keep stderr quiet

    return Handler


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family


def cmd_http(args: argparse.Namespace) -> list[socket.socket]:
    handler = make_handler(args.name, JsonLog(args.log))
    sockets = bind(socket.SOCK_STREAM, args.port)
    for sock in sockets:
        spawn(Server(sock, handler).serve_forever)
    if args.tls_port:
        tls_log = JsonLog(args.tls_log or args.log.removesuffix(".jsonl") + "-tls.jsonl")
        for sock in bind(socket.SOCK_STREAM, args.tls_port):
            spawn(tcp_canary, sock, tls_log, lambda data: {"sni": tls_sni(data)})
            sockets.append(sock)
    return sockets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    canary = sub.add_parser("canary", help="log every TCP accept and UDP datagram")
    canary.add_argument("--tcp", type=ports, default=[])
    canary.add_argument("--udp", type=ports, default=[])
    canary.add_argument("--log", required=True)
    canary.set_defaults(run=cmd_canary)
    dns = sub.add_parser("dns", help="answer A queries from a zone table, log every query")
    dns.add_argument("--zone", action="append", default=[], metavar="NAME=IP[,IP]")
    dns.add_argument("--port", type=int, default=53)
    dns.add_argument("--log", required=True)
    dns.set_defaults(run=cmd_dns)
    web = sub.add_parser("http", help="answer every request with 200 '<name>-ok', log it")
    web.add_argument("--port", type=int, default=80)
    web.add_argument("--name", required=True)
    web.add_argument("--log", required=True)
    web.add_argument("--tls-port", type=int, default=443, help="a TCP canary that also logs the SNI; 0: none")
    web.add_argument("--tls-log")
    web.set_defaults(run=cmd_http)
    args = parser.parse_args(argv)

    threading.excepthook = die
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM unless handled
    sockets = args.run(args)
    mark_ready(args.log, sockets)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
