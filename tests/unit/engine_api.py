"""A fake Engine API on a Unix socket, for testing ``EngineRuntime`` through the real Docker SDK.

It answers with the JSON that Docker 20.10 and Podman 4.3 really returned (recorded by
``tests/fixtures/engine/record.py``) and keeps a small world of images, containers, volumes, networks
and execs, so that a create is found by a later inspect or label query. Every request is kept, with
its body and what the client wrote on a hijacked connection, so tests can assert what ContainAI asked
for. Hijacked connections (exec start, attach) answer ``101 UPGRADED`` and then speak the raw stream,
as the engines do.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import hashlib
import http.server
import io
import json
import re
import socket
import socketserver
import struct
import tarfile
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "engine"
DIALECTS = ("docker", "podman")


def load_dialect(kind: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{kind}.json").read_text())
    return data


def frame(stream: int, data: bytes) -> bytes:
    """One frame of the raw stream: 1 stdout, 2 stderr; an 8-byte header (type, 3 zeros, length)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def tar_of(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _new_id(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass
class Request:
    method: str
    path: str  # without the /v1.NN prefix
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    stdin: bytes = b""  # what the client wrote after the upgrade

    def json(self) -> Any:
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def filters(self) -> dict[str, list[str]]:
        value: dict[str, list[str]] = json.loads(self.param("filters") or "{}")
        return value


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # a JSON value; bytes and str are sent as they are
    headers: Mapping[str, str] = field(default_factory=dict)
    lines: Sequence[str] | None = None  # sent chunked, one JSON document a line, as builds stream


@dataclass(frozen=True)
class Hijack:
    """``101 UPGRADED``, then ``stream``; with ``read_stdin``, only once the client's side is read.

    ``stdin_bytes`` stops the read after that many bytes instead of at EOF (a terminal never ends).
    """

    stream: bytes = b""
    read_stdin: bool = False
    stdin_bytes: int | None = None
    hold_seconds: float = 0  # a command that goes on: after ``stream``, the connection stays open this long


@dataclass(frozen=True)
class ExecResult:
    stream: bytes
    exit_code: int


Handler = Callable[[Request, "re.Match[str]"], Reply | Hijack]


def _matches(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _wait_read(sock: Any, timeout: float = 5.0) -> None:
    """Wait until the client has read all we sent (the kernel's unread count is zero).

    The SDK reads the upgrade's headers through a buffer and the stream from the bare socket, so
    frames that arrive with the headers would be lost; a real engine writes them later too.
    """
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
        if struct.unpack("i", buf)[0] == 0:
            return
        time.sleep(0.002)


class FakeEngineAPI:
    """The engine's side of the socket at ``path``. Use as a context manager; it joins its threads."""

    def __init__(self, dialect: str, path: Path) -> None:
        self.dialect = dialect
        self.fixtures = load_dialect(dialect)
        self.path = path
        self.requests: list[Request] = []
        self.images: dict[str, dict[str, Any]] = {}
        self.containers: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.execs: dict[str, dict[str, Any]] = {}
        self.exec_results: collections.deque[ExecResult] = collections.deque()
        self.files: dict[tuple[str, str], bytes] = {}
        self.hijacks_done = threading.Semaphore(0)
        self._scripted: list[tuple[str, re.Pattern[str], Handler]] = []
        self._routes = self._default_routes()
        self.connections: set[Any] = set()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"unix://{self.path}"

    # Scripting.

    def answer(self, method: str, pattern: str, reply: Reply | Hijack) -> None:
        """Answer requests whose path matches ``pattern`` (in full) with ``reply``, before any default."""
        self._scripted.insert(0, (method, re.compile(pattern), lambda _req, _m: reply))

    def fixture(self, name: str) -> Reply:
        recorded = self.fixtures[name]
        return Reply(recorded["status"], recorded["body"])

    def add_image(self, ref: str, labels: Mapping[str, str] | None = None) -> str:
        body = json.loads(json.dumps(self.fixtures["image_inspect"]["body"]))
        image_id = "sha256:" + _new_id("image", ref, sorted((labels or {}).items()))
        body.update(Id=image_id, RepoTags=[ref])
        body["Config"]["Labels"] = dict(labels or {})
        self.images[ref] = self.images[image_id] = body
        return image_id

    def add_container(self, name: str, labels: Mapping[str, str], status: str = "running") -> str:
        body = json.loads(json.dumps(self.fixtures["container_inspect"]["body"]))
        container_id = _new_id("container", name)
        body.update(Id=container_id, Name=f"/{name}")
        body["Config"]["Labels"] = dict(labels)
        body["State"]["Status"] = status
        self.containers[container_id] = body
        return container_id

    def requests_to(self, method: str, pattern: str) -> list[Request]:
        compiled = re.compile(pattern)
        return [r for r in self.requests if r.method == method and compiled.fullmatch(r.path)]

    def last(self, method: str, pattern: str) -> Request:
        found = self.requests_to(method, pattern)
        assert found, f"no {method} {pattern} among {[(r.method, r.path) for r in self.requests]}"
        return found[-1]

    # Serving.

    def __enter__(self) -> FakeEngineAPI:
        api = self

        class _Handler(_RequestHandler):
            engine = api

        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.005})
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        for connection in list(self.connections):  # a client that never hung up: hang up on it
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the request threads
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def handle(self, request: Request) -> Reply | Hijack:
        self.requests.append(request)
        for method, pattern, handler in [*self._scripted, *self._routes]:
            if method == request.method and (match := pattern.fullmatch(request.path)):
                return handler(request, match)
        return Reply(404, {"message": f"page not found: {request.method} {request.path}"})

    # The small world behind the default answers.

    def _find(self, table: Mapping[str, dict[str, Any]], ref: str) -> dict[str, Any] | None:
        return table.get(ref) or next(
            (v for v in table.values() if v.get("Name", "").lstrip("/") == ref), None
        )

    def _default_routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        fx = self.fixture
        routes: list[tuple[str, str, Handler]] = [
            ("GET", r"/_ping", lambda r, m: Reply(200, "OK")),
            ("GET", r"/version", lambda r, m: fx("version")),
            ("GET", r"/info", lambda r, m: fx("info")),
            ("GET", r"/images/(?P<ref>.+)/json", self._image_inspect),
            ("POST", r"/images/create", self._image_create),
            ("POST", r"/images/(?P<ref>.+)/tag", self._image_tag),
            ("DELETE", r"/images/(?P<ref>.+)", self._image_remove),
            ("POST", r"/build", self._build),
            ("POST", r"/containers/create", self._container_create),
            ("GET", r"/containers/json", self._container_list),
            ("GET", r"/containers/(?P<ref>[^/]+)/json", self._container_inspect),
            ("POST", r"/containers/(?P<ref>[^/]+)/start", self._container_state("running")),
            ("POST", r"/containers/(?P<ref>[^/]+)/stop", self._container_state("exited")),
            ("DELETE", r"/containers/(?P<ref>[^/]+)", self._container_remove),
            ("POST", r"/containers/(?P<ref>[^/]+)/attach", self._attach),
            ("GET", r"/containers/(?P<ref>[^/]+)/archive", self._archive),
            ("POST", r"/containers/(?P<ref>[^/]+)/exec", self._exec_create),
            ("POST", r"/exec/(?P<id>[^/]+)/start", self._exec_start),
            ("GET", r"/exec/(?P<id>[^/]+)/json", self._exec_inspect),
            ("POST", r"/exec/(?P<id>[^/]+)/resize", lambda r, m: Reply(201, b"")),
            ("POST", r"/volumes/create", self._volume_create),
            ("GET", r"/volumes", self._volume_list),
            ("DELETE", r"/volumes/(?P<name>[^/]+)", self._volume_remove),
            ("POST", r"/networks/create", self._network_create),
            ("GET", r"/networks", self._network_list),
            ("GET", r"/networks/(?P<ref>[^/]+)", self._network_inspect),
            ("DELETE", r"/networks/(?P<ref>[^/]+)", self._network_remove),
        ]
        return [(method, re.compile(pattern), handler) for method, pattern, handler in routes]

    def _image_inspect(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.images, match["ref"])
        return Reply(200, found) if found is not None else self.fixture("image_missing")

    def _image_create(self, request: Request, match: re.Match[str]) -> Reply:
        if request.param("fromSrc") != "-":
            return Reply(500, {"message": 'Get "https://registry-1.docker.io/v2/": dial tcp: no such host'})
        reply = self.fixture("image_import")
        repository, tag = request.param("repo") or "", request.param("tag") or "latest"
        labels = dict(
            re.findall(r'^LABEL (\S+)="(.*)"$', "\n".join(request.query.get("changes", [])), re.MULTILINE)
        )
        # Podman files an import under :latest whatever the tag; Docker under the tag asked for.
        image_id = self.add_image(f"{repository}:{'latest' if self.dialect == 'podman' else tag}", labels)
        body = json.loads(json.dumps(reply.body).replace(reply.body["status"], image_id))
        return Reply(reply.status, body)

    def _image_tag(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.images, match["ref"])
        if found is None:
            return self.fixture("image_missing")
        ref = f"{request.param('repo')}:{request.param('tag') or 'latest'}"
        found["RepoTags"] = [*found["RepoTags"], ref]
        self.images[ref] = found
        return Reply(201, b"")

    def _image_remove(self, request: Request, match: re.Match[str]) -> Reply:
        if self.images.pop(match["ref"], None) is None:
            return self.fixture("image_missing")
        return Reply(200, [{"Untagged": match["ref"]}])

    def _build(self, request: Request, match: re.Match[str]) -> Reply:
        with tarfile.open(fileobj=io.BytesIO(request.body)) as context:
            assert "Dockerfile" in context.getnames(), context.getnames()
        tag = request.param("t") or ""
        self.add_image(tag, json.loads(request.param("labels") or "{}"))
        return Reply(200, lines=self.fixtures["build"]["lines"])

    def _container_create(self, request: Request, match: re.Match[str]) -> Reply:
        name = request.param("name") or ""
        if self._find(self.containers, name) is not None:
            return self.fixture("container_conflict")
        body = request.json()
        container_id = self.add_container(name, body.get("Labels") or {}, status="created")
        self.containers[container_id]["Config"]["Image"] = body["Image"]
        return Reply(201, {**self.fixtures["container_create"]["body"], "Id": container_id})

    def _container_list(self, request: Request, match: re.Match[str]) -> Reply:
        template = self.fixtures["container_list"]["body"][0]
        wanted = request.filters.get("label", [])
        return Reply(
            200,
            [
                {
                    **template,
                    "Id": c["Id"],
                    "Names": [c["Name"]],
                    "Labels": c["Config"]["Labels"],
                    "State": c["State"]["Status"],
                }
                for c in self.containers.values()
                if _matches(c["Config"]["Labels"], wanted)
            ],
        )

    def _container_inspect(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.containers, match["ref"])
        return Reply(200, found) if found is not None else self.fixture("container_missing")

    def _container_state(self, status: str) -> Handler:
        def change(request: Request, match: re.Match[str]) -> Reply:
            found = self._find(self.containers, match["ref"])
            if found is None:
                return self.fixture("container_start_missing")
            found["State"]["Status"] = status
            return Reply(204, b"")

        return change

    def _container_remove(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.containers, match["ref"])
        if found is None:
            return self.fixture("container_remove_missing")
        del self.containers[found["Id"]]
        return Reply(204, b"")

    def _attach(self, request: Request, match: re.Match[str]) -> Reply | Hijack:
        if self._find(self.containers, match["ref"]) is None:
            return self.fixture("container_missing")
        return Hijack(read_stdin=True)

    def _archive(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.containers, match["ref"])
        path = request.param("path") or ""
        content = self.files.get((match["ref"], path))
        if found is None or content is None:
            return self.fixture("archive_missing")
        name = path.rsplit("/", 1)[-1]
        stat = {
            "name": name,
            "size": len(content),
            "mode": 420,
            "mtime": "2026-12-01T11:36:15Z",
            "linkTarget": "",
        }
        header = base64.b64encode(json.dumps(stat).encode()).decode()
        return Reply(200, tar_of({name: content}), headers={"X-Docker-Container-Path-Stat": header})

    def _exec_create(self, request: Request, match: re.Match[str]) -> Reply:
        if self._find(self.containers, match["ref"]) is None:
            return self.fixture("container_missing")
        exec_id = _new_id("exec", len(self.execs))
        result = (
            self.exec_results.popleft()
            if self.exec_results
            else ExecResult(
                bytes.fromhex(self.fixtures["exec_start"]["stream"]),
                self.fixtures["exec_inspect"]["body"]["ExitCode"],
            )
        )
        self.execs[exec_id] = {"config": request.json(), "result": result}
        return Reply(201, {**self.fixtures["exec_create"]["body"], "Id": exec_id})

    def _exec_start(self, request: Request, match: re.Match[str]) -> Reply | Hijack:
        found = self.execs.get(match["id"])
        if found is None:
            return self.fixture("exec_missing")
        if request.json().get("Detach"):
            return Reply(200, b"")
        config = found["config"]
        if config.get("Tty"):
            return Hijack(found["result"].stream, read_stdin=True, stdin_bytes=1)
        return Hijack(found["result"].stream, read_stdin=bool(config.get("AttachStdin")))

    def _exec_inspect(self, request: Request, match: re.Match[str]) -> Reply:
        found = self.execs.get(match["id"])
        if found is None:
            return self.fixture("exec_missing")
        body = {
            **self.fixtures["exec_inspect"]["body"],
            "ID": match["id"],
            "ExitCode": found["result"].exit_code,
        }
        return Reply(200, body)

    def _volume_create(self, request: Request, match: re.Match[str]) -> Reply:
        asked = request.json()
        body = {
            **self.fixtures["volume_create"]["body"],
            "Name": asked["Name"],
            "Driver": asked.get("Driver") or "local",
            "Labels": asked.get("Labels") or {},
            "Options": asked.get("DriverOpts") or {},
        }
        self.volumes[asked["Name"]] = body
        return Reply(201, body)

    def _volume_list(self, request: Request, match: re.Match[str]) -> Reply:
        wanted = request.filters.get("label", [])
        found = [v for v in self.volumes.values() if _matches(v["Labels"], wanted)]
        return Reply(200, {**self.fixtures["volume_list"]["body"], "Volumes": found})

    def _volume_remove(self, request: Request, match: re.Match[str]) -> Reply:
        if self.volumes.pop(match["name"], None) is None:
            return self.fixture("volume_missing")
        return Reply(204, b"")

    def _network_create(self, request: Request, match: re.Match[str]) -> Reply:
        asked = request.json()
        if self._find(self.networks, asked["Name"]) is not None:
            return self.fixture("network_conflict")
        network_id = _new_id("network", asked["Name"])
        self.networks[network_id] = {
            **self.fixtures["network_inspect"]["body"],
            "Id": network_id,
            "Name": asked["Name"],
            "Internal": asked.get("Internal", False),
            "Labels": asked.get("Labels") or {},
        }
        return Reply(201, {**self.fixtures["network_create"]["body"], "Id": network_id})

    def _network_list(self, request: Request, match: re.Match[str]) -> Reply:
        wanted = request.filters.get("label", [])
        return Reply(200, [n for n in self.networks.values() if _matches(n["Labels"], wanted)])

    def _network_inspect(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.networks, match["ref"])
        return Reply(200, found) if found is not None else self.fixture("network_missing")

    def _network_remove(self, request: Request, match: re.Match[str]) -> Reply:
        found = self._find(self.networks, match["ref"])
        if found is None:
            return self.fixture("network_missing")
        del self.networks[found["Id"]]
        return Reply(204, b"")


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    engine: FakeEngineAPI
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.engine.connections.add(self.connection)

    def finish(self) -> None:
        self.engine.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        url = urlsplit(self.path)
        path = re.sub(r"^/v1\.\d+", "", url.path)
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(length) if length else b""
        request = Request(self.command, path, parse_qs(url.query), dict(self.headers.items()), body)
        reply = self.engine.handle(request)
        if isinstance(reply, Hijack):
            self._hijack(request, reply)
        else:
            self._reply(reply)

    do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _serve

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                self.rfile.readline()
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def _reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.lines is not None:
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in reply.lines:
                data = (line + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")
            return
        if isinstance(reply.body, bytes):
            data, kind = reply.body, "application/x-tar" if reply.body else ""
        elif isinstance(reply.body, str) and reply.status < 300:
            data, kind = reply.body.encode(), "text/plain"
        else:
            data, kind = json.dumps(reply.body).encode() + b"\n", "application/json"
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _hijack(self, request: Request, reply: Hijack) -> None:
        self.send_response(101, "UPGRADED")
        self.send_header("Content-Type", "application/vnd.docker.raw-stream")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "tcp")
        self.end_headers()
        self.close_connection = True
        try:
            if reply.read_stdin:
                request.stdin = self.rfile.read(reply.stdin_bytes) if reply.stdin_bytes else self.rfile.read()
            else:
                _wait_read(self.connection)
            self.wfile.write(reply.stream)
            if reply.hold_seconds:
                self.wfile.flush()
                time.sleep(reply.hold_seconds)
        finally:
            self.engine.hijacks_done.release()
