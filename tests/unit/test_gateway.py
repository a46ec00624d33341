"""The model-credential gateway (containai.inside.gateway): in-process against a fake egress proxy on a
Unix socket, and once as a process through its launcher for the ``--follow`` credential feed."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from containai.inside import gateway as gw
from containai.inside.gateway import Gateway, GatewayError, make_server

from .image_layout import lay_out

TIMEOUT = 10.0
KEY = "sk-real-key-0123"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{"ok":true}'


@dataclass
class FakeProxy:
    """squid's socket, as far as the gateway can tell: records each request, answers with ``answer``."""

    path: Path
    answer: Callable[[str, bytes], bytes]
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head, rest = gw.read_head(conn)
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in head.split("\r\n")
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append((head, rest))
                self.arrived.set()
                conn.sendall(self.answer(head, rest))

    def heads(self) -> list[list[str]]:
        return [head.split("\r\n") for head, _ in self.requests]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths end at 107 bytes, which pytest's tmp_path can exceed.
    path = Path(tempfile.mkdtemp(prefix="cai-gw-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def fake_proxy(
    folder: Path, answer: Callable[[str, bytes], bytes] = lambda head, body: OK
) -> Iterator[FakeProxy]:
    proxy = FakeProxy(folder / "proxy.sock", answer)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(proxy.path))
    listener.listen(8)
    thread = threading.Thread(target=proxy.serve, args=(listener,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(TIMEOUT)


@contextlib.contextmanager
def running(gateway: Gateway, folder: Path) -> Iterator[tuple[Path, io.StringIO]]:
    log = io.StringIO()
    listen = folder / "gateway.sock"
    server = make_server(gateway, str(listen), log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield listen, log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def exchange(listen: Path, request: bytes, *, half_close: bool = False) -> bytes:
    """What the agent's relay does: one request on the gateway's socket, everything until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(str(listen))
        conn.sendall(request)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def gateway(proxy: Path, upstream: str = "http://api.mock.test", **kwargs: str) -> Gateway:
    options = {"header": "x-api-key", "scheme": "plain", "credential": KEY, **kwargs}
    return Gateway(upstream, str(proxy), options["header"], options["scheme"], options["credential"])


MESSAGES = (
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:8787\r\nx-api-key: containai-placeholder-not-a-real-key\r\n"
    b"Authorization: Bearer agent-chose-this\r\nProxy-Authorization: Basic eA==\r\nConnection: keep-alive\r\n"
    b'Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{"model":"m"}'
)


# -- forwarding ----------------------------------------------------------------------------------


def test_a_request_reaches_the_upstream_with_the_real_key_and_none_of_the_clients(short_dir: Path) -> None:
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, log):
        answer = exchange(listen, MESSAGES)
    assert answer == OK
    [(head, body)] = proxy.requests
    lines = head.split("\r\n")
    # Plain http goes to squid as an absolute URI; the client never chooses the destination.
    assert lines[0] == "POST http://api.mock.test/v1/messages HTTP/1.1"
    assert f"x-api-key: {KEY}" in lines
    assert "Host: api.mock.test" in lines and "Connection: close" in lines
    assert "Content-Type: application/json" in lines and "Content-Length: 13" in lines
    for dropped in ("placeholder", "agent-chose-this", "Proxy-Authorization", "keep-alive", "127.0.0.1:8787"):
        assert dropped not in head
    assert [line.split(":")[0].lower() for line in lines].count("x-api-key") == 1
    assert body == b'{"model":"m"}'
    assert log.getvalue() == ""


def test_a_streamed_answer_comes_back_whole(short_dir: Path) -> None:
    events = b"".join(b'event: delta\ndata: {"n": %d}\n\n' % n for n in range(2000))
    streamed = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + events
    with (
        fake_proxy(short_dir, lambda head, body: streamed) as proxy,
        running(gateway(proxy.path), short_dir) as (
            listen,
            _,
        ),
    ):
        assert exchange(listen, MESSAGES) == streamed


@pytest.mark.parametrize(
    ("upstream", "target", "expected"),
    [
        ("https://api.openai.com/v1", "/v1/responses", "/v1/responses"),
        ("https://api.openai.com/v1", "/responses?stream=1", "/v1/responses?stream=1"),
        ("https://api.anthropic.com", "http://127.0.0.1:8787/v1/messages", "/v1/messages"),
        ("http://api.mock.test:8080", "/v1/x", "http://api.mock.test:8080/v1/x"),
        ("http://api.mock.test", "", "http://api.mock.test/"),
    ],
)
def test_rewrite_targets_the_one_upstream(upstream: str, target: str, expected: str) -> None:
    head = gateway(Path("/nonexistent"), upstream).rewrite(f"GET {target} HTTP/1.1\r\nHost: evil.test")
    first, *headers = head.rstrip("\r\n").split("\r\n")
    assert first == f"GET {expected} HTTP/1.1"
    host = upstream.split("//", 1)[1].split("/", 1)[0]
    assert headers.count(f"Host: {host}") == 1 and "Host: evil.test" not in headers


def test_bearer_scheme_sends_an_authorization_header() -> None:
    head = gateway(Path("/nonexistent"), header="Authorization", scheme="bearer").rewrite(
        "GET / HTTP/1.1\r\nauthorization: Bearer placeholder"
    )
    assert head.split("\r\n").count(f"Authorization: Bearer {KEY}") == 1
    assert "placeholder" not in head


# -- refusals ------------------------------------------------------------------------------------


def test_a_proxy_refusing_connect_is_a_502_and_the_key_never_leaves(short_dir: Path) -> None:
    def refuse(head: str, body: bytes) -> bytes:
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"

    upstream = "https://api.anthropic.com"
    with (
        fake_proxy(short_dir, refuse) as proxy,
        running(gateway(proxy.path, upstream), short_dir) as (listen, _),
    ):
        answer = exchange(listen, MESSAGES)
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert answer.endswith(
        b"containai-gateway: the egress proxy refused CONNECT api.anthropic.com:443 (403)\n"
    )
    [(head, body)] = proxy.requests
    assert head.split("\r\n")[0] == "CONNECT api.anthropic.com:443 HTTP/1.1"
    assert KEY not in head and not body


def test_no_proxy_to_reach_is_a_502(short_dir: Path) -> None:
    with running(gateway(short_dir / "absent.sock"), short_dir) as (listen, _):
        answer = exchange(listen, MESSAGES)
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert KEY.encode() not in answer


def test_an_oversized_head_is_dropped_before_the_proxy_is_asked(short_dir: Path) -> None:
    request = b"GET / HTTP/1.1\r\nX-Junk: " + b"a" * (gw.MAX_HEAD + 10)
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, log):
        assert exchange(listen, request) == b""
    assert not proxy.requests
    assert "containai-gateway: request head too large" in log.getvalue()


def test_a_client_that_leaves_before_its_head_is_logged(short_dir: Path) -> None:
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, log):
        assert exchange(listen, b"GET / HTTP/1.1\r\n", half_close=True) == b""
    assert not proxy.requests
    assert log.getvalue() == "containai-gateway: client closed before the request head\n"


@pytest.mark.parametrize("upstream", ["ftp://api.mock.test", "https://", "api.mock.test"])
def test_a_bad_upstream_is_refused(upstream: str) -> None:
    with pytest.raises(GatewayError, match="bad upstream"):
        gateway(Path("/nonexistent"), upstream)


@pytest.mark.parametrize(
    ("stdin", "args", "expected"),
    [
        ("", [], "no usable credential on stdin"),
        ("\n", [], "no usable credential on stdin"),
        ("a\rb\n", [], "no usable credential on stdin"),
        (f"{KEY}\n", ["--upstream", "ftp://x"], "bad upstream 'ftp://x'"),
    ],
)
def test_main_refuses_to_start_without_a_usable_key_or_upstream(
    short_dir: Path, stdin: str, args: list[str], expected: str
) -> None:
    stderr = io.StringIO()
    argv = [
        "--listen",
        str(short_dir / "g.sock"),
        "--upstream",
        "http://api.mock.test",
        "--header",
        "x-api-key",
        *args,
    ]
    assert gw.main(argv, stdin=io.StringIO(stdin), stderr=stderr) == 1
    assert stderr.getvalue() == f"containai-gateway: {expected}\n"
    assert not (short_dir / "g.sock").exists()


# -- the credential feed -------------------------------------------------------------------------


def test_follow_takes_each_usable_line_and_ignores_the_rest() -> None:
    gate, log = gateway(Path("/nonexistent")), io.StringIO()
    gate.follow(iter(["key-2\n", "\n", "bad\rkey\n", "key-3\n", "bad\0key\n"]), log)
    assert gate.credential == "key-3"
    assert log.getvalue() == "containai-gateway: credential renewed\n" * 2
    assert "key" not in log.getvalue().replace("containai-gateway: credential renewed", "")


def test_the_launched_gateway_uses_each_credential_the_host_feeds_it(short_dir: Path) -> None:
    """``containai-gateway --follow`` as the image runs it: the first line at start, renewals later."""
    launcher = lay_out(short_dir / "image", "gateway")["containai-gateway"]
    listen = short_dir / "gateway.sock"
    with fake_proxy(short_dir) as proxy:
        process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                str(launcher),
                *("--listen", str(listen), "--proxy", str(proxy.path), "--upstream", "http://api.mock.test"),
                *("--header", "Authorization", "--scheme", "bearer", "--follow"),
            ],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None and process.stderr is not None
        try:
            process.stdin.write("token-1\n")
            process.stdin.flush()
            wait_for(listen.exists, "the gateway's socket")
            assert exchange(listen, MESSAGES) == OK
            process.stdin.write("token-2\n")
            process.stdin.flush()
            wait_for(lambda: renewed_by(listen, proxy, "token-2"), "a request with the renewed token")
            process.stdin.close()  # the host's feed ends: the gateway keeps the last credential and serves on
            assert exchange(listen, MESSAGES) == OK
            assert "Authorization: Bearer token-2" in proxy.heads()[-1]
            assert process.poll() is None
        finally:
            process.terminate()
            process.wait(TIMEOUT)
        stderr = process.stderr.read()
        process.stderr.close()
    assert "Authorization: Bearer token-1" in proxy.heads()[0]
    assert "credential renewed" in stderr and "token" not in stderr
    assert listen.stat().st_mode & 0o777 == 0o666  # the agent's relay runs as another uid


def renewed_by(listen: Path, proxy: FakeProxy, token: str) -> bool:
    exchange(listen, MESSAGES)
    return f"Authorization: Bearer {token}" in proxy.heads()[-1]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT}s"
        time.sleep(0.02)
