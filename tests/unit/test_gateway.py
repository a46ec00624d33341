"""The model-credential gateway (containai.inside.gateway): in-process against a fake egress proxy on a
Unix socket, and once as a process through its launcher for the ``--follow`` credential feed. Its allow
rules (containai.inside.protocol's grammar), and the request-smuggling attacks it refuses."""

from __future__ import annotations

import contextlib
import io
import re
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

from containai.agents.definition import load_agents
from containai.errors import ConfigError
from containai.inside import gateway as gw
from containai.inside import protocol
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
                fields = [line.lower().replace(" ", "") for line in head.split("\r\n")]
                length = next(
                    (int(line.split(":", 1)[1]) for line in fields if line.startswith("content-length:")),
                    0,
                )
                chunked = "transfer-encoding:chunked" in fields
                while (len(rest) < length or chunked) and not rest.endswith(b"0\r\n\r\n"):
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


ALLOW = ("POST /v1/messages", "POST /v1/messages/count_tokens", "POST /v1/responses")


def gateway(proxy: Path, upstream: str = "http://api.mock.test", **kwargs: str) -> Gateway:
    options = {"header": "x-api-key", "scheme": "plain", "credential": KEY, **kwargs}
    return Gateway(
        upstream, str(proxy), options["header"], options["scheme"], options["credential"], allow=ALLOW
    )


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
        ("https://api.anthropic.com", "/v1/messages?beta=true", "/v1/messages?beta=true"),
        ("http://api.mock.test:8080", "/v1/messages", "http://api.mock.test:8080/v1/messages"),
        ("http://api.mock.test", "/v1/messages", "http://api.mock.test/v1/messages"),
    ],
)
def test_the_upstream_head_targets_the_one_upstream(upstream: str, target: str, expected: str) -> None:
    gate = gateway(Path("/nonexistent"), upstream)
    head = f"POST {target} HTTP/1.1\r\nHost: evil.test\r\nX-Keep: 1\r\nContent-Length: 2\r\n\r\n".encode()
    first, *headers = forwarded_head(gate, head).split("\r\n")
    assert first == f"POST {expected} HTTP/1.1"
    host = upstream.split("//", 1)[1].split("/", 1)[0]
    assert headers.count(f"Host: {host}") == 1 and "Host: evil.test" not in headers
    assert "X-Keep: 1" in headers and "Content-Length: 2" in headers


def forwarded_head(gate: Gateway, head: bytes) -> str:
    """What the gateway would send the upstream for a request head it accepts."""
    client, server = socket.socketpair()
    with client, server:
        client.sendall(head)
        _, request, path, query, framing = gate.read_request(server)
    return gate.upstream_head(request, path, query, framing).decode("latin-1").rstrip("\r\n")


def test_bearer_scheme_sends_an_authorization_header() -> None:
    head = forwarded_head(
        gateway(Path("/nonexistent"), header="Authorization", scheme="bearer"),
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nauthorization: Bearer placeholder\r\n\r\n",
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
        (
            f"{KEY}\n",
            ["--allow", "POST /v1/../files"],
            "bad --allow rule 'POST /v1/../files': the path has an empty or dot segment",
        ),
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
        "--allow",
        "POST /v1/messages",
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
                *("--allow", "POST /v1/messages"),
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


# -- the allow rules: one grammar, for the host and the gateway -------------------------------------


@pytest.mark.parametrize(
    "rule",
    ["POST /v1/messages", "GET /v1/models/*", "POST /v1/*/compact", "DELETE /v1/files/file-*", "GET /a:b@c"],
)
def test_good_rules_parse(rule: str) -> None:
    method, path = protocol.parse_gateway_rule(rule)
    assert f"{method} {path}" == rule


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("POST", "is not METHOD /path"),
        ("post /v1/messages", "is not METHOD /path"),
        ("POST  /v1/messages", "must start with /"),
        ("POST v1/messages", "must start with /"),
        ("POST /v1//messages", "empty or dot segment"),
        ("POST /v1/messages/", "empty or dot segment"),
        ("POST /v1/./messages", "empty or dot segment"),
        ("POST /v1/../files", "empty or dot segment"),
        ("POST /v1/%2e%2e/files", "segment '%2e%2e'"),
        ("POST /v1/messages;x=1", "segment 'messages;x=1'"),
        ("POST /v1/messages?beta=true", "segment 'messages?beta=true'"),
        ("POST /v1/méssages", "segment 'méssages'"),
        ("POST /v1/mes sages", "segment 'mes sages'"),
    ],
)
def test_bad_rules_say_what_is_wrong(rule: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        protocol.parse_gateway_rule(rule)


RULES = [
    protocol.parse_gateway_rule(rule) for rule in ("POST /v1/messages", "GET /v1/models/*", "POST /v1/x-*")
]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/messages", True),
        ("GET", "/v1/messages", False),  # the method is part of the rule
        ("POST", "/v1/messages/count_tokens", False),  # whole-path match: no prefixes
        ("POST", "/v1/message", False),
        ("GET", "/v1/models/claude-x", True),
        ("GET", "/v1/models", False),
        ("GET", "/v1/models/a/b", False),  # `*` stays within one segment
        ("POST", "/v1/x-", True),
        ("POST", "/v1/x-batches", True),
        ("POST", "/v1/x-/batches", False),
        ("GET", "/v1/models/..", False),  # dot segments never match, even under `*`
        ("GET", "/v1/models/%2e%2e", False),  # nor encoded characters
        ("GET", "/v1/models/a;b", False),
        ("POST", "//v1/messages", False),
        ("POST", "/v1/messages/", False),
    ],
)
def test_a_request_must_match_a_rule_whole(method: str, path: str, allowed: bool) -> None:
    assert protocol.gateway_allows(RULES, method, path) is allowed


@pytest.mark.parametrize(
    ("query", "ok"),
    [("beta=true", True), ("a=1&b=%2F/x?y", True), ("a=%zz", False), ("a={}", False), ('a="b"', False)],
)
def test_a_query_passes_only_with_url_query_characters(query: str, ok: bool) -> None:
    assert bool(re.fullmatch(protocol.GATEWAY_QUERY_PATTERN, query)) is ok


def test_the_builtin_agents_allow_only_their_model_calls() -> None:
    allowed = {
        name: agent.gateway.allow for name, agent in load_agents(None).items() if agent.gateway is not None
    }
    assert allowed == {
        "claude": ("POST /v1/messages", "POST /v1/messages/count_tokens"),
        "codex": ("POST /v1/responses", "POST /v1/responses/compact"),
        "copilot": ("POST /v1/responses",),
    }
    claude = load_agents(None)["claude"].gateway
    assert claude is not None and claude.subscription is not None
    assert claude.subscription.allow == claude.allow  # a subscription token is held to the same rules


DEFINITION = (
    'name = "a"\nimage = "x"\ncommand = ["x"]\nprompt_command = ["{prompt}"]\n[gateway]\n'
    'secret = "K"\nupstream = "https://u.example"\nheader = "x"\nbase_url_env = "B"\nkey_env = "K"\n'
)


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        ("", "allow must list the requests it forwards"),
        ("allow = []\n", "allow must list the requests it forwards"),
        ('allow = "POST /v1/x"\n', "allow must list the requests it forwards"),
        ("allow = [1]\n", "allow must list the requests it forwards"),
        (
            'allow = ["POST /v1/../files"]\n',
            "allow: 'POST /v1/../files': the path has an empty or dot segment",
        ),
        ('allow = ["/v1/x"]\n', "allow: '/v1/x' is not METHOD /path"),
    ],
)
def test_a_definition_without_a_good_allow_list_is_refused(tmp_path: Path, allow: str, message: str) -> None:
    (tmp_path / "a.toml").write_text(DEFINITION + allow)
    with pytest.raises(ConfigError) as caught:
        load_agents(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert 'allow = ["POST /v1/messages"]' in (caught.value.hint or "")


def test_the_sidecar_passes_each_rule_as_an_allow_argument(tmp_path: Path) -> None:
    from containai.gateway.sidecar import plan_gateway

    (tmp_path / "a.toml").write_text(DEFINITION + 'allow = ["POST /v1/x", "GET /v1/y/*"]\n')
    definition = load_agents(tmp_path)["a"].gateway
    assert definition is not None
    spec, _ = plan_gateway(
        session_name="s", session_id="1", labels={}, channel="dev", gateway=definition, egress_volume="e"
    )
    words = list(spec.command)
    assert [words[i + 1] for i, word in enumerate(words) if word == "--allow"] == [
        "POST /v1/x",
        "GET /v1/y/*",
    ]


# -- what the gateway refuses -----------------------------------------------------------------------


def refused(short_dir: Path, request: bytes) -> tuple[bytes, str, FakeProxy]:
    """The gateway's answer to ``request``, its log, and the fake upstream (which should have seen nothing)."""
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, log):
        answer = exchange(listen, request)
    return answer, log.getvalue(), proxy


@pytest.mark.parametrize(
    ("request_line", "logged"),
    [
        ("GET /v1/files", "GET /v1/files"),
        ("GET /v1/files/file-abc/content", "GET /v1/files/file-abc/content"),
        ("DELETE /v1/batches/x", "DELETE /v1/batches/x"),
        ("POST /v1/batches", "POST /v1/batches"),
        ("GET /v1/messages", "GET /v1/messages"),
        ("POST /v1/messages/", "POST /v1/messages/"),
        ("POST /v1/messages/../files", "POST /v1/messages/../files"),
        ("POST /v1/%6dessages", "POST /v1/%6dessages"),
        ("POST /v1/messages;jsessionid=1", "POST /v1/messages;jsessionid=1"),
        ("POST //v1/messages", "POST //v1/messages"),
    ],
)
def test_a_request_outside_the_allow_list_is_refused_logged_and_never_forwarded(
    short_dir: Path, request_line: str, logged: str
) -> None:
    request = (
        f"{request_line} HTTP/1.1\r\nHost: x\r\nx-api-key: containai-placeholder\r\n"
        "Content-Length: 10\r\n\r\nsecret-ish"
    ).encode()
    answer, log, proxy = refused(short_dir, request)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert not proxy.requests
    assert log == f"containai-gateway: refused {logged}: not in the agent's gateway allow list\n"
    assert "placeholder" not in log and "secret" not in log  # method and path only, never headers or body


def test_an_allowed_path_with_a_query_is_forwarded(short_dir: Path) -> None:
    request = MESSAGES.replace(b"/v1/messages ", b"/v1/messages?beta=true ")
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, _):
        assert exchange(listen, request) == OK
    [(head, _)] = proxy.requests
    assert head.split("\r\n")[0] == "POST http://api.mock.test/v1/messages?beta=true HTTP/1.1"


GOOD_HEAD = "POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
BODY = '{"model":"m"}'

SMUGGLING = {
    "bare LF line endings": GOOD_HEAD.replace("\r\n", "\n") + f"Content-Length: 13\n\n{BODY}",
    "a bare LF in one header": GOOD_HEAD + f"X-A: 1\nContent-Length: 13\r\n\r\n{BODY}",
    "a bare CR in one header": GOOD_HEAD + f"X-A: 1\rContent-Length: 13\r\n\r\n{BODY}",
    "a bare LF ending the head": GOOD_HEAD + f"Content-Length: 13\r\n\n{BODY}",
    "obs-fold with a space": GOOD_HEAD
    + f"X-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 13\r\n\r\n{BODY}",
    "obs-fold with a tab": GOOD_HEAD + f"Content-Length:\r\n\t13\r\n\r\n{BODY}",
    "Content-Length and Transfer-Encoding": GOOD_HEAD
    + f"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "Transfer-Encoding and Content-Length": GOOD_HEAD
    + f"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "a repeated Content-Length": GOOD_HEAD + f"Content-Length: 13\r\nContent-Length: 13\r\n\r\n{BODY}",
    "two different Content-Lengths": GOOD_HEAD + f"Content-Length: 13\r\nContent-Length: 0\r\n\r\n{BODY}",
    "a Content-Length list": GOOD_HEAD + f"Content-Length: 13, 13\r\n\r\n{BODY}",
    "a signed Content-Length": GOOD_HEAD + f"Content-Length: +13\r\n\r\n{BODY}",
    "a hex Content-Length": GOOD_HEAD + f"Content-Length: 0xd\r\n\r\n{BODY}",
    "Transfer-Encoding: identity": GOOD_HEAD + f"Transfer-Encoding: identity\r\n\r\n{BODY}",
    "Transfer-Encoding: Chunked": GOOD_HEAD + f"Transfer-Encoding: Chunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "Transfer-Encoding: CHUNKED": GOOD_HEAD + f"Transfer-Encoding: CHUNKED\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "Transfer-Encoding: gzip, chunked": GOOD_HEAD
    + f"Transfer-Encoding: gzip, chunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "Transfer-Encoding: chunked, chunked": GOOD_HEAD
    + f"Transfer-Encoding: chunked, chunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "Transfer-Encoding: xchunked": GOOD_HEAD + f"Transfer-Encoding: xchunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "a space before the colon": GOOD_HEAD + f"Transfer-Encoding : chunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "a repeated Transfer-Encoding": GOOD_HEAD
    + f"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{BODY}\r\n0\r\n\r\n",
    "a bad chunk size": GOOD_HEAD + f"Transfer-Encoding: chunked\r\n\r\nzz\r\n{BODY}\r\n0\r\n\r\n",
    "a NUL in a header": GOOD_HEAD + f"X-A: a\0b\r\nContent-Length: 13\r\n\r\n{BODY}",
    "an empty line before the request line": "\r\n" + GOOD_HEAD + f"Content-Length: 13\r\n\r\n{BODY}",
    "HTTP/1.0": GOOD_HEAD.replace("HTTP/1.1", "HTTP/1.0") + f"Content-Length: 13\r\n\r\n{BODY}",
    "HTTP/2.0": GOOD_HEAD.replace("HTTP/1.1", "HTTP/2.0") + f"Content-Length: 13\r\n\r\n{BODY}",
    "no version (HTTP/0.9)": "GET /v1/messages\r\n\r\n",
    "absolute-form": GOOD_HEAD.replace("/v1/messages", "http://api.mock.test/v1/messages")
    + f"Content-Length: 13\r\n\r\n{BODY}",
    "absolute-form to elsewhere": GOOD_HEAD.replace("/v1/messages", "http://evil.test/v1/messages")
    + f"Content-Length: 13\r\n\r\n{BODY}",
    "authority-form": "CONNECT api.mock.test:443 HTTP/1.1\r\nHost: api.mock.test:443\r\n\r\n",
    "asterisk-form": "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "a fragment": GOOD_HEAD.replace("/v1/messages", "/v1/messages#x") + f"Content-Length: 13\r\n\r\n{BODY}",
    "a non-ASCII target": GOOD_HEAD.replace("/v1/messages", "/v1/messages\xe9")
    + f"Content-Length: 13\r\n\r\n{BODY}",
    "a query with non-query characters": GOOD_HEAD.replace("/v1/messages", "/v1/messages?a={}")
    + f"Content-Length: 13\r\n\r\n{BODY}",
    "a query with a bad escape": GOOD_HEAD.replace("/v1/messages", "/v1/messages?a=%zz")
    + f"Content-Length: 13\r\n\r\n{BODY}",
}


@pytest.mark.parametrize("attack", sorted(SMUGGLING))
def test_a_smuggling_attempt_is_a_400_and_never_reaches_the_upstream(short_dir: Path, attack: str) -> None:
    answer, log, proxy = refused(short_dir, SMUGGLING[attack].encode("latin-1"))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert b"Connection: close" in answer
    assert not proxy.requests
    assert log.startswith("containai-gateway: refused a request: "), log
    assert BODY not in log and "api.mock.test" not in log


def test_an_oversized_head_is_a_400_before_the_proxy_is_asked(short_dir: Path) -> None:
    request = b"POST /v1/messages HTTP/1.1\r\nX-Junk: " + b"a" * (gw.MAX_HEAD + 10)
    answer, log, proxy = refused(short_dir, request)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert not proxy.requests
    assert log == "containai-gateway: refused a request: request head over 64 KiB\n"


def test_a_head_just_under_the_limit_is_forwarded(short_dir: Path) -> None:
    padding = b"X-Pad: " + b"a" * (gw.MAX_HEAD - len(MESSAGES) - 100) + b"\r\n"
    request = MESSAGES.replace(b"Content-Type", padding + b"Content-Type")
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, _):
        assert exchange(listen, request) == OK
    assert len(proxy.requests) == 1


@pytest.mark.parametrize(
    "second",
    [
        b"DELETE /v1/batches/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/files HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n" + BODY.encode(),
    ],
)
def test_a_pipelined_second_request_is_never_forwarded(short_dir: Path, second: bytes) -> None:
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, log):
        assert exchange(listen, MESSAGES + second) == OK
    [(head, body)] = proxy.requests
    assert body == BODY.encode()
    assert b"HTTP/1.1" not in body and "batches" not in head and "files" not in head
    assert log.getvalue() == ""


def test_bytes_past_the_content_length_are_not_forwarded(short_dir: Path) -> None:
    smuggled = MESSAGES + b"GET /v1/files HTTP/1.1\r\nHost: x\r\n\r\n"
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, _):
        assert exchange(listen, smuggled) == OK
    [(head, body)] = proxy.requests
    assert body == BODY.encode() and "Content-Length: 13" in head.split("\r\n")


def test_a_chunked_body_is_framed_anew_and_ends_at_its_last_chunk(short_dir: Path) -> None:
    request = (
        GOOD_HEAD + "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\n"
        '{"mod\r\n8\r\nel":"m"}\r\n0\r\nX-Trailer: t\r\n\r\nGET /v1/files HTTP/1.1\r\nHost: x\r\n\r\n'
    ).encode()
    with fake_proxy(short_dir) as proxy, running(gateway(proxy.path), short_dir) as (listen, _):
        assert exchange(listen, request) == OK
    [(head, body)] = proxy.requests
    lines = head.split("\r\n")
    assert "Transfer-Encoding: chunked" in lines and not any(
        line.startswith("Content-Length") for line in lines
    )
    assert (
        body == b"5\r\n" + b'{"mod' + b"\r\n8\r\n" + b'el":"m"}' + b"\r\n0\r\n\r\n"
    )  # no extension, no trailer


def test_expect_100_continue_is_answered_by_the_gateway(short_dir: Path) -> None:
    head = GOOD_HEAD + "Expect: 100-continue\r\nContent-Length: 13\r\n\r\n"
    with (
        fake_proxy(short_dir) as proxy,
        running(gateway(proxy.path), short_dir) as (listen, _),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn,
    ):
        conn.settimeout(TIMEOUT)
        conn.connect(str(listen))
        conn.sendall(head.encode())
        assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(BODY.encode())
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received == OK
    [(head_sent, body)] = proxy.requests
    assert "expect" not in head_sent.lower() and body == BODY.encode()
