"""The in-container MCP stub (containai.inside.stub), run through its launcher against a real broker.

The stub is a standard-library module for the agent image, so it is tested the way it runs: through
the launcher the image build installs (``mcp-stub``, laid out as in the image by ``image_layout``),
as processes (``install``, ``serve``, ``connect``), talking over real Unix sockets to a real Broker and
BrokerServer in this process, and to real MCP servers (a stdio one in Python, an HTTP one on
127.0.0.1). Each test's secret is a unique canary that must reach the MCP server and nothing the
agent can see: not the client's output, the stub's files and log, argv, or the broker's audit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from containai.broker.broker import Broker, Issued
from containai.broker.server import BrokerServer
from containai.inside.protocol import STUB_UID, mcp_server_uid

from .image_layout import lay_out

SESSION, CONTAINER = "s1", "c1"
T0 = 1_800_000_000.0
TIMEOUT = 10.0

MCP_SERVER = r"""
import hashlib, json, os, sys, time
open(sys.argv[1], "w").close()  # proves that the stub started it
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    if message["method"] == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "fake"}}
    else:
        tool = message["params"]["name"]
        if tool == "hash":
            text = hashlib.sha256(os.environ.get("GITHUB_TOKEN", "").encode()).hexdigest()
        elif tool == "env":
            text = " ".join(sorted(os.environ))
        elif tool == "envpairs":
            text = "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k != "GITHUB_TOKEN")
        else:
            text = os.getcwd()
        result = {"content": [{"type": "text", "text": text}]}
    print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)
if "--linger" in sys.argv:
    time.sleep(60)  # a server that ignores stdin EOF: the stub must stop it
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Lines:
    """Lines read from a file descriptor with a deadline, so that a broken stub fails a test, not hangs it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.raw = b""  # everything read, for the canary checks

    def readline(self, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(f"no line within {timeout}s (have {self.buffer[:200]!r})")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += chunk
            self.raw += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def drain(self) -> bytes:
        while self.readline():
            pass
        return self.raw


class McpClient:
    """What the agent's CLI does: run ``mcp-stub connect NAME`` and speak JSON-RPC on its stdio."""

    def __init__(self, state: Path, name: str) -> None:
        # As /run/containai/mcp in a session: NAME is server NAME's state directory (here a link to it).
        servers = state.parent / f"{state.name}.servers"
        servers.mkdir(exist_ok=True)
        if not (servers / name).is_symlink():
            (servers / name).symlink_to(state)
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(STUB), "connect", name, "--state", str(servers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.lines = Lines(self.process.stdout.fileno())
        self.last_id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.last_id += 1
        self.send({"jsonrpc": "2.0", "id": self.last_id, "method": method, "params": params or {}})
        while True:
            line = self.lines.readline()
            assert line, "the connection closed before the answer"
            message: dict[str, Any] = json.loads(line)
            if message.get("id") == self.last_id:
                return message

    def initialize(self) -> dict[str, Any]:
        answer = self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def tool(self, name: str) -> str:
        text: str = self.call("tools/call", {"name": name, "arguments": {}})["result"]["content"][0]["text"]
        return text

    def close(self) -> tuple[int, str]:
        """Close stdin as the agent's CLI does at exit; the exit code and stderr of ``connect``."""
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        self.lines.drain()
        code = self.process.wait(TIMEOUT)
        stderr = self.process.stderr.read().decode()
        self.process.stdout.close()  # type: ignore[union-attr]
        self.process.stderr.close()
        return code, stderr

    @property
    def output(self) -> bytes:
        return self.lines.raw


@dataclass
class RunningStub:
    state: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return (self.state / "stub.log").read_text()


@dataclass
class Environment:
    """One test's world: a short /tmp directory, a broker on a socket, the stubs started."""

    root: Path
    canary: str
    clock: FakeClock
    broker: Broker
    broker_socket: Path
    stubs: list[RunningStub] = field(default_factory=list)

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    def audit_events(self, event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return [line for line in lines if line["event"] == event]

    def issue(self, server: str, names: list[str], ttl: int = 60) -> Issued:
        return self.broker.issue(SESSION, CONTAINER, server, names, ttl)

    def command_server(self, *, env: dict[str, str], linger: bool = False) -> dict[str, Any]:
        script = self.root / "server.py"
        script.write_text(MCP_SERVER)
        marker = self.root / f"started-{uuid.uuid4().hex}"
        return {
            "command": sys.executable,
            "args": [str(script), str(marker), *(["--linger"] if linger else [])],
            "env": env,
        }

    def config(self, servers: dict[str, dict[str, Any]], *, broker: Path | None = None) -> dict[str, Any]:
        return {
            "session": SESSION,
            "container": CONTAINER,
            "broker": str(broker or self.broker_socket),
            "servers": servers,
        }

    def start(
        self,
        servers: dict[str, dict[str, Any]],
        caps: dict[str, Issued],
        *,
        broker: Path | None = None,
        environ: dict[str, str] | None = None,
    ) -> RunningStub:
        state = self.root / f"mcp{len(self.stubs)}"
        install(state, {"config": self.config(servers, broker=broker), "caps": caps_document(caps)})
        process = subprocess.Popen(
            [sys.executable, "-I", str(STUB), "serve", "--state", str(state)],
            env=environ if environ is not None else stub_environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        stub = RunningStub(state, process)
        self.stubs.append(stub)
        wait_ready(stub)
        return stub

    def files_with_canary(self) -> list[Path]:
        found = []
        for path in [self.audit, *self.root.rglob("*")]:
            if path.is_file() and self.canary.encode() in path.read_bytes():
                found.append(path)
        return found


def stub_environ(**extra: str) -> dict[str, str]:
    # A proxy that does not exist: anything that bypasses NO_PROXY fails loudly instead of leaving.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HTTP_PROXY": "http://proxy.invalid:3128",
        "NO_PROXY": "127.0.0.1,localhost",
        "STUB_ONLY": "not-for-servers",
        **extra,
    }


def caps_document(caps: dict[str, Issued]) -> dict[str, dict[str, str]]:
    return {
        name: {"token": issued.token, "bundle": base64.b64encode(issued.bundle).decode()}
        for name, issued in caps.items()
    }


def install(state: Path, document: dict[str, Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(STUB), "install", "--state", str(state)],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=kwargs.pop("check", True),
        **kwargs,
    )


def wait_ready(stub: RunningStub) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not (stub.state / "ready").exists():
        if stub.process.poll() is not None:
            assert stub.process.stderr is not None
            raise AssertionError(f"the stub exited: {stub.process.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the stub did not become ready"
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


def raw_exchange(state: Path, first: bytes) -> list[bytes]:
    """Send ``first`` to the front door and return every line until the stub closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(state / "front.sock"))
        sock.sendall(first)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received.splitlines()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def wait_for_child(pid: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while not (children := children_of(pid)):
        assert time.monotonic() < deadline, f"pid {pid} started no child"
        time.sleep(0.02)
    return children[0]


def private_base() -> Path:
    """A short folder no other user can write, nor any of its ancestors: the runtime dir, or /run as root."""
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime)
    return Path("/run") if os.geteuid() == 0 else Path.home()


STUB = Path("/nonexistent/mcp-stub")  # the launcher, laid out once for this module by _stub_launcher


@pytest.fixture(scope="module", autouse=True)
def _stub_launcher(tmp_path_factory: pytest.TempPathFactory) -> None:
    global STUB  # one layout for the module; every helper here runs it
    STUB = lay_out(tmp_path_factory.mktemp("image"), "base")["mcp-stub"]


@pytest.fixture
def env() -> Iterator[Environment]:
    # AF_UNIX paths are limited to 107 bytes, too short for pytest's tmp_path; and the stub refuses to
    # start servers below a folder another user can write (/tmp is one), so not there either.
    root = Path(tempfile.mkdtemp(prefix="cai-mcp-", dir=private_base()))
    root.chmod(0o711)
    clock = FakeClock()
    canary = f"sk-canary-{uuid.uuid4().hex}"
    store = {"GITHUB_TOKEN": canary, "REMOTE_TOKEN": canary, "OTHER": f"other-{uuid.uuid4().hex}"}
    broker = Broker(lookup=store.get, audit_path=root / "audit.jsonl", clock=clock)
    server = BrokerServer(
        root / "broker" / "broker.sock",
        broker,
        allowed_uids=[os.getuid()],
        ops=frozenset({"redeem", "refresh"}),
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    world = Environment(root, canary, clock, broker, server.path)
    yield world
    for stub in world.stubs:
        stop(stub.process)
    server.shutdown()
    thread.join(TIMEOUT)
    server.server_close()
    shutil.rmtree(root, ignore_errors=True)


# -- command servers ---------------------------------------------------------------------------------


def test_a_command_server_gets_its_secret_and_the_agent_sees_only_its_hash(env: Environment) -> None:
    spec = env.command_server(env={"GITHUB_TOKEN": "${GITHUB_TOKEN}"})
    stub = env.start({"github": spec}, {"github": env.issue("github", ["GITHUB_TOKEN"])})
    client = McpClient(stub.state, "github")

    initialized = client.initialize()
    digest = client.tool("hash")
    names = set(client.tool("env").split())
    cwd = client.tool("cwd")
    server_pid = wait_for_child(stub.process.pid)
    argvs = [
        Path(f"/proc/{pid}/cmdline").read_bytes()
        for pid in (stub.process.pid, server_pid, client.process.pid)
    ]
    server_environ = Path(f"/proc/{server_pid}/environ").read_bytes()
    code, stderr = client.close()

    assert initialized["result"]["serverInfo"] == {"name": "fake"}
    assert digest == sha256(env.canary)
    # A minimal environment: the base, the proxy settings, the package managers' configuration pinned,
    # the rendered env; nothing else of the stub's.
    assert names == {
        *("PATH", "HOME", "LANG", "HTTP_PROXY", "NO_PROXY", "GITHUB_TOKEN"),
        *(
            "NPM_CONFIG_USERCONFIG",
            "NPM_CONFIG_GLOBALCONFIG",
            "PIP_CONFIG_FILE",
            "PYTHONNOUSERSITE",
            "UV_NO_CONFIG",
        ),
    }
    # By default a server starts in the stub's private home, never in the agent's workspace.
    assert cwd == str(stub.state / "home")
    assert env.canary.encode() in server_environ  # delivered where it belongs, and only there:
    assert env.canary.encode() not in client.output
    assert all(env.canary.encode() not in argv for argv in argvs)
    assert env.files_with_canary() == []
    assert (code, stderr) == (0, "")
    assert "github: redeemed a capability for GITHUB_TOKEN" in stub.log
    assert "github: stored a fresh capability for the next start" in stub.log


def test_servers_start_with_package_manager_configuration_pinned(env: Environment) -> None:
    spec = env.command_server(env={})
    stub = env.start(
        {"plain": spec}, {}, environ=stub_environ(NODE_OPTIONS="--require=/x.js", PYTHONPATH="/x")
    )
    client = McpClient(stub.state, "plain")
    client.initialize()
    pairs = dict(item.split("=", 1) for item in client.tool("envpairs").split("\n") if "=" in item)
    client.close()

    home = stub.state / "home"
    # npm's walk up for a package.json ends in the server's home, whose .npmrc is the stub's and empty.
    assert json.loads((home / "package.json").read_text())["private"] is True
    assert (home / ".npmrc").read_bytes() == b""
    assert pairs["NPM_CONFIG_USERCONFIG"] == str(home / ".npmrc")
    assert pairs["NPM_CONFIG_GLOBALCONFIG"] == pairs["PIP_CONFIG_FILE"] == "/dev/null"
    assert pairs["UV_NO_CONFIG"] == pairs["PYTHONNOUSERSITE"] == "1"
    # The stub's own environment is not inherited: not its PATH, nor NODE_OPTIONS or PYTHONPATH.
    assert "NODE_OPTIONS" not in pairs and "PYTHONPATH" not in pairs
    assert pairs["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_the_stub_refuses_to_start_servers_below_a_folder_others_can_write(env: Environment) -> None:
    shared = env.root / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # as a tmpfs the agent owned was: anyone could plant a package.json here
    state = shared / "state"
    state.mkdir()
    install(state, {"config": env.config({"plain": env.command_server(env={})}), "caps": {}})
    served = subprocess.run(
        [sys.executable, "-I", str(STUB), "serve", "--state", str(state)],
        env=stub_environ(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert served.returncode == 1
    assert f"refusing to start MCP servers in {state / 'home'}" in served.stderr
    assert f"{shared} (mode 0777)" in served.stderr
    assert not (state / "front.sock").exists()


def test_a_second_connection_redeems_the_refreshed_capability_never_one_twice(env: Environment) -> None:
    spec = env.command_server(env={"GITHUB_TOKEN": "${GITHUB_TOKEN}"})
    stub = env.start({"github": spec}, {"github": env.issue("github", ["GITHUB_TOKEN"])})

    digests = []
    for _ in range(2):
        client = McpClient(stub.state, "github")
        client.initialize()
        digests.append(client.tool("hash"))
        assert client.close() == (0, "")

    assert digests == [sha256(env.canary)] * 2
    redeems = env.audit_events("redeem")
    assert [e["outcome"] for e in redeems] == ["allow", "allow"]
    assert len({e["token"] for e in redeems}) == len({e["capability"] for e in redeems}) == 2
    assert [e["outcome"] for e in env.audit_events("refresh")] == ["allow", "allow"]
    assert env.files_with_canary() == []


def test_an_expired_capability_is_renewed_through_refresh(env: Environment) -> None:
    spec = env.command_server(env={"GITHUB_TOKEN": "${GITHUB_TOKEN}"})
    stub = env.start({"github": spec}, {"github": env.issue("github", ["GITHUB_TOKEN"], ttl=60)})
    env.clock.now += 61

    client = McpClient(stub.state, "github")
    client.initialize()
    digest = client.tool("hash")

    assert digest == sha256(env.canary)
    assert client.close() == (0, "")
    redeems = env.audit_events("redeem")
    assert [(e["outcome"], e.get("reason")) for e in redeems] == [("deny", "expired"), ("allow", None)]
    assert len({e["token"] for e in redeems}) == 2
    assert "stored capability refused (expired); asking for a fresh one" in stub.log


def test_a_refusing_broker_means_an_error_line_and_no_server(env: Environment) -> None:
    spec = env.command_server(env={"GITHUB_TOKEN": "${GITHUB_TOKEN}"})
    stub = env.start({"github": spec}, {"github": env.issue("github", ["GITHUB_TOKEN"])})
    env.broker.revoke_session(SESSION)

    lines = raw_exchange(stub.state, b'{"server": "github"}\n')
    client = McpClient(stub.state, "github")
    code, stderr = client.close()

    (line,) = lines
    error = json.loads(line)
    assert set(error) == {"error"}
    assert error["error"].startswith("the secret broker refused: nothing to refresh")
    assert code == 1
    assert stderr.startswith("mcp-stub: MCP server github: the secret broker refused")
    assert stderr.count("\n") == 1
    assert not Path(spec["args"][1]).exists()
    assert children_of(stub.process.pid) == []
    assert "github: stored capability refused (not-live)" in stub.log
    assert "github: refused: the secret broker refused: nothing to refresh" in stub.log


def test_a_placeholder_the_broker_did_not_return_is_an_error(env: Environment) -> None:
    spec = env.command_server(env={"GITHUB_TOKEN": "${GITHUB_TOKEN}", "MORE": "x-${OTHER}"})
    stub = env.start({"github": spec}, {"github": env.issue("github", ["GITHUB_TOKEN"])})

    (line,) = raw_exchange(stub.state, b'{"server": "github"}\n')

    assert "needs OTHER, which the secret broker did not return" in json.loads(line)["error"]
    assert not Path(spec["args"][1]).exists()
    assert env.files_with_canary() == []


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b'{"server": "nope"}\n', "no MCP server nope in this session (configured: plain)"),
        (b'{"server": "../caps/plain"}\n', "bad server name"),
        (b"not json\n", 'the first line must be {"server": NAME}'),
        (b'{"server": "' + b"a" * 2000 + b'"}\n', "of at most 1024 bytes"),
    ],
    ids=["unknown", "path", "not-json", "oversized"],
)
def test_bad_first_lines_get_an_error_line(env: Environment, first: bytes, expected: str) -> None:
    stub = env.start({"plain": env.command_server(env={})}, {})

    (line,) = raw_exchange(stub.state, first)

    assert expected in json.loads(line)["error"]


def test_a_server_without_placeholders_needs_no_broker(env: Environment) -> None:
    spec = env.command_server(env={"MODE": "plain"})
    stub = env.start({"plain": spec}, {}, broker=env.root / "no-broker-here.sock")

    client = McpClient(stub.state, "plain")
    client.initialize()
    names = set(client.tool("env").split())

    assert "MODE" in names
    assert client.close() == (0, "")
    assert env.audit_events("redeem") == []


def test_one_stub_serves_a_state_and_stops_cleanly(env: Environment) -> None:
    stub = env.start({"plain": env.command_server(env={})}, {})
    front = stub.state / "front.sock"
    front_mode = stat.S_IMODE(front.lstat().st_mode), stat.S_ISSOCK(front.lstat().st_mode)

    second = subprocess.run(
        [sys.executable, "-I", str(STUB), "serve", "--state", str(stub.state)],
        env=stub_environ(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    stop(stub.process)

    assert front_mode == (0o666, True)
    assert second.returncode == 1
    assert "another MCP stub is already serving" in second.stderr
    assert stub.process.returncode == 0
    assert not (stub.state / "front.sock").exists()
    assert not (stub.state / "ready").exists()
    assert stub.log.endswith("INFO stopped\n")


def test_a_server_that_outlives_its_client_is_stopped(env: Environment) -> None:
    stub = env.start({"plain": env.command_server(env={}, linger=True)}, {})
    client = McpClient(stub.state, "plain")
    client.initialize()
    server_pid = wait_for_child(stub.process.pid)

    code, _ = client.close()  # returns once the stub closed the connection: after the server ended

    assert code == 0
    deadline = time.monotonic() + TIMEOUT  # the stub reaps it as it closes; on a busy machine, soon after
    while Path(f"/proc/{server_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{server_pid}").exists()
    assert "exited with -15" in stub.log


# -- URL servers -------------------------------------------------------------------------------------

MCP_SESSION = "mcp-session-7f3a"


@dataclass
class HttpMock:
    server: http.server.ThreadingHTTPServer
    seen: list[tuple[str, str, Message[str, str], dict[str, Any] | None]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/mcp"


@pytest.fixture
def http_mock(env: Environment) -> Iterator[HttpMock]:
    """Streamable HTTP: initialize answers JSON with a session id, tools/call answers as SSE."""
    seen: list[tuple[str, str, Message[str, str], dict[str, Any] | None]] = []
    canary = env.canary

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, kind: str | None, body: bytes, **headers: str) -> None:
            self.send_response(status)
            if kind:
                self.send_header("Content-Type", kind)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_DELETE(self) -> None:
            seen.append(("DELETE", self.path, self.headers, None))
            self.reply(200, None, b"")

        def do_POST(self) -> None:
            message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(("POST", self.path, self.headers, message))
            if self.headers["Authorization"] != f"Bearer {canary}":
                # An error page that echoes the request: the stub must not pass it on.
                echo = json.dumps({"error": "unauthorized", "got": self.headers["Authorization"]})
                return self.reply(401, "application/json", echo.encode())
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id")}
            if message["method"] == "initialize":
                answer["result"] = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}}
                return self.reply(
                    200, "application/json", json.dumps(answer).encode(), Mcp_Session_Id=MCP_SESSION
                )
            if (
                self.headers["Mcp-Session-Id"] != MCP_SESSION
                or self.headers["MCP-Protocol-Version"] != "2025-06-18"
            ):
                return self.reply(400, "text/plain", b"no session")
            if "id" not in message:
                return self.reply(202, None, b"")
            if message["method"] == "tools/list":
                answer["result"] = {"tools": [{"name": "whoami"}]}
                return self.reply(200, "application/json; charset=utf-8", json.dumps(answer).encode())
            if message["params"]["name"] == "vanish":  # a stream that ends before its answer
                return self.reply(200, "text/event-stream", b": nothing to say\n\n")
            answer["result"] = {"content": [{"type": "text", "text": sha256(self.headers["Authorization"])}]}
            progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
            events = f": keep-alive\n\nevent: message\ndata: {json.dumps(progress)}\n\nid: 2\ndata: {json.dumps(answer)}\n\n"
            return self.reply(200, "text/event-stream", events.encode())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield HttpMock(server, seen)
    server.shutdown()
    thread.join(TIMEOUT)
    server.server_close()


@pytest.mark.parametrize("via_proxy", [False, True], ids=["direct-by-no-proxy", "through-the-proxy"])
def test_a_url_server_gets_its_header_and_the_agent_sees_only_results(
    env: Environment, http_mock: HttpMock, via_proxy: bool
) -> None:
    if via_proxy:
        # The mock doubles as the session's egress proxy: it sees absolute URLs in its request lines.
        url, environ = "http://mcp.invalid/mcp", stub_environ(HTTP_PROXY=http_mock.url, NO_PROXY="")
    else:
        url, environ = http_mock.url, stub_environ()
    spec = {"url": url, "headers": {"Authorization": "Bearer ${REMOTE_TOKEN}"}}
    stub = env.start({"remote": spec}, {"remote": env.issue("remote", ["REMOTE_TOKEN"])}, environ=environ)
    client = McpClient(stub.state, "remote")

    initialized = client.initialize()
    tools = client.call("tools/list")
    whoami = client.tool("whoami")
    vanished = client.call("tools/call", {"name": "vanish"})
    code, stderr = client.close()

    assert initialized["result"]["protocolVersion"] == "2025-06-18"
    assert tools["result"] == {"tools": [{"name": "whoami"}]}
    assert whoami == sha256(f"Bearer {env.canary}")
    assert b"notifications/progress" in client.output  # SSE events before the answer are relayed too
    assert vanished["error"]["message"] == "the MCP server remote ended the exchange without answering"
    assert (code, stderr) == (0, "")
    methods = [(verb, message and message.get("method")) for verb, _, _, message in http_mock.seen]
    assert methods == [
        ("POST", "initialize"),
        ("POST", "notifications/initialized"),
        ("POST", "tools/list"),
        ("POST", "tools/call"),
        ("POST", "tools/call"),
        ("DELETE", None),
    ]
    for verb, _, headers, _ in http_mock.seen:
        assert headers["Authorization"] == f"Bearer {env.canary}"
        assert verb == "DELETE" or headers["Accept"] == "application/json, text/event-stream"
    assert http_mock.seen[-1][2]["Mcp-Session-Id"] == MCP_SESSION
    assert all(path.startswith("http://mcp.invalid/") == via_proxy for _, path, _, _ in http_mock.seen)
    assert env.canary.encode() not in client.output
    assert env.files_with_canary() == []


def test_an_http_error_becomes_a_json_rpc_error_without_the_page(
    env: Environment, http_mock: HttpMock
) -> None:
    spec = {"url": http_mock.url, "headers": {"Authorization": "Token ${REMOTE_TOKEN}"}}
    stub = env.start({"remote": spec}, {"remote": env.issue("remote", ["REMOTE_TOKEN"])})
    client = McpClient(stub.state, "remote")

    answer = client.call("initialize", {"protocolVersion": "2025-06-18"})
    client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})  # no id: no error line
    code, _ = client.close()

    assert answer == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32000, "message": "the MCP server remote answered HTTP 401 Unauthorized"},
    }
    assert client.output.count(b"\n") == 1
    assert code == 0
    assert env.canary.encode() not in client.output
    assert env.files_with_canary() == []
    assert "remote: answered HTTP 401 Unauthorized" in stub.log


# -- install, connect, hardening ---------------------------------------------------------------------


def test_install_writes_private_files_and_refuses_bad_names(env: Environment) -> None:
    state = env.root / "state"
    issued = env.issue("github", ["GITHUB_TOKEN"])
    config = env.config({"github": env.command_server(env={"GITHUB_TOKEN": "${GITHUB_TOKEN}"})})

    install(state, {"config": config, "caps": caps_document({"github": issued})})
    again = env.issue("github", ["GITHUB_TOKEN"])
    install(state, {"caps": caps_document({"github": again})})  # later: only new capabilities
    bad = install(state, {"caps": caps_document({"Bad/Name": again})}, check=False)
    bad_config = install(env.root / "other", {"config": env.config({"-x": {"command": "true"}})}, check=False)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(state) == 0o711
    assert mode(state / "caps") == 0o700
    assert mode(state / "servers.json") == mode(state / "caps" / "github.json") == 0o600
    assert json.loads((state / "servers.json").read_text()) == config
    assert json.loads((state / "caps" / "github.json").read_text())["token"] == again.token
    assert sorted(p.name for p in (state / "caps").iterdir()) == ["github.json"]  # no temp files left
    for refused in (bad, bad_config):
        assert refused.returncode == 1
        assert refused.stderr.startswith("mcp-stub: error: bad server name")
    assert not (env.root / "other").exists()


def test_connect_without_a_stub_says_so_in_one_line(env: Environment) -> None:
    result = subprocess.run(
        [sys.executable, "-I", str(STUB), "connect", "github", "--state", str(env.root / "nothing")],
        input="",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no MCP stub serves github in this session" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the stub under its own uid")
def test_serve_makes_itself_non_dumpable(env: Environment) -> None:
    # Run as the stub's uid, as in a session: a non-dumpable process's /proc files belong to root,
    # so the agent (another non-root uid) cannot read its environment or memory.
    for interpreter in ("/usr/bin/python3", sys.executable):
        probe = subprocess.run([interpreter, "-c", "pass"], user=STUB_UID, cwd="/", capture_output=True)
        if probe.returncode == 0:
            break
    else:
        pytest.skip(f"no Python interpreter that uid {STUB_UID} may run")
    stub_copy = lay_out(env.root / "image", "base")["mcp-stub"]  # where the stub's uid may read it
    spec = env.command_server(env={})
    spec["command"] = interpreter
    state = env.root / "state"
    install(state, {"config": env.config({"plain": spec})})
    for path in (env.root, state, *state.rglob("*")):  # the stub's files, the server's cwd and start marker
        os.chown(path, STUB_UID, STUB_UID)
    as_stub: dict[str, Any] = {"user": STUB_UID, "group": STUB_UID, "extra_groups": [], "cwd": "/"}
    process = subprocess.Popen(
        [interpreter, "-I", str(stub_copy), "serve", "--state", str(state)],
        env=stub_environ(),
        stderr=subprocess.PIPE,
        **as_stub,
    )
    stub = RunningStub(state, process)
    env.stubs.append(stub)
    wait_ready(stub)
    client = McpClient(state, "plain")
    client.initialize()
    server_pid = wait_for_child(process.pid)

    stub_owner = Path(f"/proc/{process.pid}/environ").stat().st_uid
    server_owner = Path(f"/proc/{server_pid}/environ").stat().st_uid
    client.close()

    assert f"Uid:\t{STUB_UID}" in Path(f"/proc/{process.pid}/status").read_text()
    assert stub_owner == 0
    assert server_owner == STUB_UID  # the control: an ordinary process of that uid owns its files
    assert "hardened: not dumpable, no core dumps, umask 077" in stub.log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the stubs under their own uids")
def test_each_servers_state_is_its_own_uids_and_closed_to_the_other_servers(env: Environment) -> None:
    a_uid, b_uid = mcp_server_uid(0), mcp_server_uid(1)
    for interpreter in ("/usr/bin/python3", sys.executable):
        probe = subprocess.run([interpreter, "-c", "pass"], user=a_uid, cwd="/", capture_output=True)
        if probe.returncode == 0:
            break
    else:
        pytest.skip(f"no Python interpreter that uid {a_uid} may run")
    env.root.chmod(0o711)
    stub_copy = lay_out(env.root / "image", "base")["mcp-stub"]
    # As in a session: /run/containai/mcp is root's, and each server's folder a tmpfs of its uid, 0711.
    servers = env.root / "mcp"
    servers.mkdir(mode=0o755)
    for name, uid in (("a", a_uid), ("b", b_uid)):
        (servers / name).mkdir(mode=0o711)
        os.chown(servers / name, uid, uid)
        document = {
            "config": env.config({name: {"command": "true", "env": {"TOKEN": "${GITHUB_TOKEN}"}}}),
            "caps": caps_document({name: env.issue(name, ["GITHUB_TOKEN"])}),
        }
        subprocess.run(
            [interpreter, "-I", str(stub_copy), "install", "--state", str(servers / name)],
            input=json.dumps(document).encode(),
            user=uid,
            group=uid,
            extra_groups=[],
            cwd="/",
            check=True,
            capture_output=True,
        )

    b = servers / "b"
    assert (b.stat().st_uid, stat.S_IMODE(b.stat().st_mode)) == (b_uid, 0o711)
    assert ((b / "caps").stat().st_uid, stat.S_IMODE((b / "caps").stat().st_mode)) == (b_uid, 0o700)
    for path in (b / "servers.json", b / "caps" / "b.json"):
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (b_uid, 0o600)
    # Server a's uid, trying what a server that runs what it is told would try on b's folder.
    probe_b = (
        "import os, sys\n"
        "for try_ in (lambda: os.listdir(sys.argv[1]), lambda: open(sys.argv[1] + '/servers.json').read(),\n"
        "             lambda: open(sys.argv[1] + '/caps/b.json').read(), lambda: os.listdir(sys.argv[1] + '/caps')):\n"
        "    try:\n"
        "        try_(); print('READ')\n"
        "    except PermissionError:\n"
        "        print('DENIED')\n"
        "print('OWN', len(open(sys.argv[2] + '/caps/a.json').read()) > 0)\n"
    )
    tried = subprocess.run(
        [interpreter, "-I", "-c", probe_b, str(b), str(servers / "a")],
        user=a_uid,
        group=a_uid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    assert tried.stdout.split("\n")[:5] == ["DENIED", "DENIED", "DENIED", "DENIED", "OWN True"]
