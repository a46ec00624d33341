"""Servers for the tests' "fake internet": a canary, a tiny DNS server, an HTTP server, a model API mock.

Standard library only; it runs with python3 inside ``containai-base:dev`` as the unprivileged image
user (Docker sets ``net.ipv4.ip_unprivileged_port_start=0`` in containers, so ports below 1024 need
no capability). Every event is one JSON line, flushed at once, so a test reads what happened so far.
Once every socket listens, the program writes ``<log>.ready`` (a JSON list of the bound sockets):
the fixture waits for that file instead of probing, because a probe would itself be logged.

    canary --tcp 22,80 --udp 53,123 --log /log/canary.jsonl
    dns --zone allowed.test=198.18.0.20 --zone '*.rebind.test=127.0.0.1' --log /log/dns.jsonl
    http --port 80 --name allowed --log /log/allowed.jsonl [--tls-port 443 --tls-log /log/allowed-tls.jsonl]
         (GET /bytes/N answers N zero bytes, for the benchmark harness's throughput figure)
    modelapi --port 80 --log /log/modelapi.jsonl
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import http.server
import ipaddress
import json
import os
import re
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


def read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body, plain or chunked (at most MAX_BODY bytes are kept)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks, total = [], 0
        while (size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
            chunk = handler.rfile.read(size)
            total += len(chunk)
            if total <= MAX_BODY:
                chunks.append(chunk)
            handler.rfile.readline()
        while handler.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)
    length = min(int(handler.headers.get("Content-Length") or 0), MAX_BODY)
    return handler.rfile.read(length) if length > 0 else b""


BULK_CHUNK = 1 << 20
BULK_PATH = re.compile(r"(?:[a-z]+://[^/]*)?/bytes/(\d{1,10})(?:\?.*)?")


def bulk_size(path: str) -> int | None:
    """N for a request path ``/bytes/N`` (or an absolute ``http://host/bytes/N``), else None."""
    match = BULK_PATH.fullmatch(path)
    return int(match.group(1)) if match else None


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

        def send_bulk(self, size: int) -> None:
            """``GET /bytes/N``: N zero bytes, for throughput measurements (the benchmark harness)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            chunk = bytes(BULK_CHUNK)
            left = size
            while left > 0:
                self.wfile.write(chunk[: min(left, BULK_CHUNK)])
                left -= BULK_CHUNK

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            self.error = code
            super().send_error(code, message, explain)

        def __getattr__(self, attr: str) -> Any:
            if attr.startswith("do_"):  # any method, including made-up ones and CONNECT
                return self.respond
            raise AttributeError(attr)

        def respond(self) -> None:
            body_bytes = len(read_body(self))
            self.logged = True
            log.write(
                peer=self.client_address[0],
                peer_port=self.client_address[1],
                method=self.command,
                path=self.path,
                host_header=self.headers.get("Host"),
                body_bytes=body_bytes,
            )
            size = bulk_size(self.path)
            if size is not None:
                self.send_bulk(size)
                return
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


# --- modelapi -----------------------------------------------------------------------------------
# A stand-in for the model APIs the agent CLIs call: Anthropic Messages (/v1/messages), OpenAI
# Responses (/v1/responses) and OpenAI Chat Completions (/v1/chat/completions), each plain or streamed
# as server-sent events. It answers "X" to a prompt holding "Return the words: X", else "mock-ok",
# and logs every request with the credential headers it carried. Unknown paths get a JSON 404,
# logged too, so the log shows what a CLI asks for at startup.

MOCK_REPLY = "mock-ok"
RETURN_WORDS = re.compile(r"Return the words: ([^\n<>\"]+)")


def texts(value: Any) -> list[str]:
    """Every string inside a JSON value, depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in texts(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in texts(item)]
    return []


def reply_for(request: dict[str, Any]) -> str:
    """The words the last "Return the words: X" in the conversation (not the system prompt) asks for."""
    conversation = request.get("messages", request.get("input", []))
    found = [m.group(1).strip().rstrip(".") for t in texts(conversation) for m in RETURN_WORDS.finditer(t)]
    return found[-1] if found else MOCK_REPLY


def sse(events: list[tuple[str | None, dict[str, Any] | str]]) -> bytes:
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {payload}\n\n")
    return "".join(out).encode()


def anthropic_messages(request: dict[str, Any], text: str, stream: bool) -> tuple[str, bytes]:
    model = request.get("model") or "claude-mock"
    msg_id = f"msg_mock{int(time.time() * 1000)}"
    usage = {
        "input_tokens": 12,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if not stream:
        return "application/json", json.dumps(message).encode()
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    return "text/event-stream", sse(
        [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 3},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    )


def openai_responses(request: dict[str, Any], text: str, stream: bool) -> tuple[str, bytes]:
    now = int(time.time())
    resp_id, item_id = f"resp_mock{now}", f"msg_mock{now}"
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    usage = {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    response = {
        "id": resp_id,
        "object": "response",
        "created_at": now,
        "status": "completed",
        "model": request.get("model") or "gpt-mock",
        "output": [item],
        "usage": usage,
        "error": None,
        "incomplete_details": None,
    }
    if not stream:
        return "application/json", json.dumps(response).encode()
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        {"type": "response.output_text.delta", **where, "delta": text},
        {"type": "response.output_text.done", **where, "text": text},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    return "text/event-stream", sse([(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)])


def openai_chat(request: dict[str, Any], text: str, stream: bool) -> tuple[str, bytes]:
    now = int(time.time())
    base = {"id": f"chatcmpl-mock{now}", "created": now, "model": request.get("model") or "gpt-mock"}
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    if not stream:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return "application/json", json.dumps(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        ).encode()
    chunk = {**base, "object": "chat.completion.chunk"}
    return "text/event-stream", sse(
        [
            (
                None,
                {
                    **chunk,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
                    ],
                },
            ),
            (
                None,
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
            ),
            (None, "[DONE]"),
        ]
    )


MODEL_ROUTES: dict[str, Callable[[dict[str, Any], str, bool], tuple[str, bytes]]] = {
    "/v1/messages": anthropic_messages,
    "/v1/responses": openai_responses,
    "/v1/chat/completions": openai_chat,
}
MODELS = ["claude-mock", "gpt-mock"]
MCP_SESSION = "mock-mcp-session-1"


def mcp_http(request: dict[str, Any], authorization: str) -> tuple[int, str, bytes, dict[str, str]]:
    """A streamable-HTTP MCP server: one tool, "report", answering with the sha256 of the bearer token
    it was sent (so a test sees that the real credential arrived without the agent ever holding it).
    The tool call is answered as an event stream, everything else as JSON."""
    if "id" not in request:
        return 202, "application/json", b"", {}
    method, rid = request.get("method"), request["id"]
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": request.get("params", {}).get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mock-remote", "version": "1"},
        }
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()
        return 200, "application/json", body, {"Mcp-Session-Id": MCP_SESSION}
    if method == "tools/call":
        token = authorization.removeprefix("Bearer ")
        text = f"sha256={hashlib.sha256(token.encode()).hexdigest()}"
        message = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}}
        return 200, "text/event-stream", sse([("message", message)]), {}
    return 200, "application/json", json.dumps({"jsonrpc": "2.0", "id": rid, "result": {}}).encode(), {}


def make_model_handler(log: JsonLog) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "fakenet-modelapi"
        protocol_version = "HTTP/1.1"  # every answer has a length and closes the connection
        timeout = 30

        def __getattr__(self, attr: str) -> Any:
            if attr.startswith("do_"):  # any method: an unexpected one is logged (and gets a 404)
                return self.respond
            raise AttributeError(attr)

        def respond(self) -> None:
            raw = read_body(self)
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                with contextlib.suppress(OSError, EOFError):
                    raw = gzip.decompress(raw)
            try:
                request = json.loads(raw) if raw else {}
            except ValueError:
                request = {}
            if not isinstance(request, dict):
                request = {}
            path = self.path.split("?", 1)[0].rstrip("/")
            stream = request.get("stream") is True
            text = None
            status, content_type = 200, "application/json"
            extra_headers: dict[str, str] = {}
            if self.command == "POST" and path == "/mcp":
                status, content_type, body, extra_headers = mcp_http(
                    request, self.headers.get("Authorization") or ""
                )
            elif self.command == "POST" and path in MODEL_ROUTES:
                text = reply_for(request)
                content_type, body = MODEL_ROUTES[path](request, text, stream)
            elif self.command in ("GET", "HEAD") and path == "/v1/models":
                data = [{"id": m, "object": "model", "type": "model", "display_name": m} for m in MODELS]
                body = json.dumps({"object": "list", "data": data, "has_more": False}).encode()
            elif path == "/v1/messages/count_tokens":
                body = json.dumps({"input_tokens": 12}).encode()
            else:
                status = 404
                error = {"type": "not_found_error", "message": f"the mock has no {self.command} {path}"}
                body = json.dumps({"type": "error", "error": error}).encode()
            log.write(
                peer=self.client_address[0],
                method=self.command,
                path=self.path,
                host_header=self.headers.get("Host"),
                x_api_key=self.headers.get("x-api-key"),
                authorization=self.headers.get("Authorization"),
                user_agent=self.headers.get("User-Agent"),
                content_encoding=self.headers.get("Content-Encoding"),
                model=request.get("model"),
                stream=stream,
                body_bytes=len(raw),
                status=status,
                reply=text,
                mcp_session=self.headers.get("Mcp-Session-Id"),
                mcp_method=request.get("method") if path == "/mcp" else None,
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for name, value in extra_headers.items():
                self.send_header(name, value)
            if content_type == "text/event-stream":
                self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def cmd_modelapi(args: argparse.Namespace) -> list[socket.socket]:
    handler = make_model_handler(JsonLog(args.log))
    sockets = bind(socket.SOCK_STREAM, args.port)
    for sock in sockets:
        spawn(Server(sock, handler).serve_forever)
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
    model = sub.add_parser(
        "modelapi", help="mock Anthropic Messages and OpenAI Responses APIs, log every request"
    )
    model.add_argument("--port", type=int, default=80)
    model.add_argument("--log", required=True)
    model.set_defaults(run=cmd_modelapi)
    args = parser.parse_args(argv)

    threading.excepthook = die
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM unless handled
    sockets = args.run(args)
    mark_ready(args.log, sockets)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
