"""The MCP stub's pieces in-process (containai.inside.stub): configuration, placeholders, capabilities,
install, the broker client and the wire formats. The stub as processes is in test_mcp_stub.py."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from containai.inside import protocol, stub
from containai.inside.stub import BrokerClient, BrokerRefused, Capability, StubError

BUNDLE = base64.b64encode(b"sealed").decode()


def config(**servers: dict[str, Any]) -> dict[str, Any]:
    return {"session": "s1", "container": "c1", "servers": servers}


# -- configuration -------------------------------------------------------------------------------


def test_parse_config_reads_command_and_url_servers_with_defaults() -> None:
    parsed = stub.parse_config(
        config(
            github={"command": "npx", "args": ["-y", "srv"], "env": {"GITHUB_TOKEN": "${GITHUB_TOKEN}"}},
            remote={"url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer ${REMOTE}"}},
        )
    )
    assert parsed.broker == protocol.BROKER_SOCKET and parsed.cwd == ""
    github, remote = parsed.servers["github"], parsed.servers["remote"]
    assert github.argv == ("npx", "-y", "srv") and github.secret_names() == {"GITHUB_TOKEN"}
    assert remote.url == "https://mcp.example/mcp" and remote.secret_names() == {"REMOTE"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a JSON object"),
        ({"session": "s1", "servers": {}}, '"container" string'),
        ({**config(), "broker": 1}, "paths (strings)"),
        ({"session": "s1", "container": "c1"}, '"servers" object'),
        (config(x={"command": "a", "url": "https://x"}), "not both or neither"),
        (config(x={}), "not both or neither"),
        (config(x={"command": ""}), "non-empty string"),
        (config(x={"command": "a", "args": "b"}), "list of strings"),
        (config(x={"command": "a", "env": {"1BAD": "v"}}), "map valid names"),
        (config(x={"url": "file:///etc/passwd"}), "http:// or https://"),
        (config(x={"url": "https://x", "headers": {"Bad Header": "v"}}), "map valid names"),
        (config(**{"Bad/Name": {"command": "a"}}), "bad server name"),
    ],
)
def test_parse_config_names_the_first_thing_wrong(data: object, message: str) -> None:
    with pytest.raises(StubError, match=re.escape(message)):
        stub.parse_config(data)


@pytest.mark.parametrize("name", ["github", "a", "x" * 41, "my_server-2"])
def test_server_names_of_the_protocol_grammar_pass(name: str) -> None:
    assert stub.check_server_name(name) == name


@pytest.mark.parametrize("name", ["", "_x", "-x", "X", "x" * 42, "a/b", "..", 3])
def test_other_server_names_are_refused(name: object) -> None:
    with pytest.raises(StubError, match="bad server name"):
        stub.check_server_name(name)


# -- placeholders --------------------------------------------------------------------------------


def test_render_fills_every_placeholder_and_leaves_other_text() -> None:
    spec = stub.ServerSpec(
        name="s",
        argv=("x",),
        env={"TOKEN": "${A}", "BOTH": "${A}:${B.c@d}", "LITERAL": "${not valid!} $A ${_x}"},
    )
    assert spec.secret_names() == {"A", "B.c@d"}
    assert stub.render(spec, {"A": "1", "B.c@d": "2", "unused": "3"}) == {
        "TOKEN": "1",
        "BOTH": "1:2",
        "LITERAL": "${not valid!} $A ${_x}",
    }


def test_render_refuses_a_secret_the_broker_did_not_return() -> None:
    spec = stub.ServerSpec(name="s", argv=("x",), env={"T": "${A}${B}"})
    with pytest.raises(StubError, match="needs A, B, which the secret broker did not return"):
        stub.render(spec, {})


@pytest.mark.parametrize(
    ("url", "value", "refused"),
    [(None, "a\nb", False), (None, "a\0b", True), ("https://x", "a\nb", True), ("https://x", "a\rb", True)],
)
def test_render_refuses_control_characters_where_they_would_split_or_truncate(
    url: str | None, value: str, refused: bool
) -> None:
    templates = {"H": "${A}"}
    spec = (
        stub.ServerSpec(name="s", url=url, headers=templates)
        if url
        else stub.ServerSpec("s", ("x",), templates)
    )
    if refused:
        with pytest.raises(StubError, match="control character") as caught:
            stub.render(spec, {"A": value})
        assert value not in str(caught.value)
    else:
        assert stub.render(spec, {"A": value}) == {"H": value}


# -- capabilities and install --------------------------------------------------------------------


def test_capabilities_round_trip_and_refuse_bad_shapes() -> None:
    cap = Capability.parse({"token": "cai1.x.y", "bundle": BUNDLE})
    assert Capability.parse(json.loads(cap.to_json())) == cap
    for bad in (
        {"token": "t"},
        {"token": "", "bundle": BUNDLE},
        {"token": "t", "bundle": "***"},
        "t",
        {"bundle": BUNDLE},
    ):
        with pytest.raises(StubError):
            Capability.parse(bad)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_install_writes_private_files(state: Path) -> None:
    document = {"config": config(gh={"command": "x"}), "caps": {"gh": {"token": "t", "bundle": BUNDLE}}}
    summary = stub.install(state, json.dumps(document).encode())
    assert summary == "installed 1 server(s) and capabilities for gh"
    assert stat.S_IMODE(state.stat().st_mode) == 0o711
    assert stat.S_IMODE((state / "caps").stat().st_mode) == 0o700
    for path in (state / "servers.json", state / "caps" / "gh.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads((state / "servers.json").read_text()) == document["config"]
    # Later, capabilities alone.
    assert stub.install(state, b'{"caps": {}}') == "installed no server(s) and capabilities for none"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"x" * (stub.MAX_INSTALL + 1), "at most"),
        (b"not json", "one JSON object"),
        (b"{}", "install reads"),
        (b'{"caps": []}', "must map server names"),
        (
            b'{"config": {"session": "s", "container": "c", "servers": {}}, "caps": {"gh": {"token": "t", "bundle": ""}}}',
            "not in the configuration",
        ),
    ],
)
def test_install_refuses_bad_documents(state: Path, document: bytes, message: str) -> None:
    with pytest.raises(StubError, match=message):
        stub.install(state, document)


def test_private_directory_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(StubError, match="not a directory of the stub's own"):
        stub.private_directory(tmp_path / "link")


# -- the broker client ---------------------------------------------------------------------------


@contextlib.contextmanager
def fake_broker(answers: list[bytes]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    folder = Path(tempfile.mkdtemp(prefix="cai-stub-"))
    path = folder / protocol.BROKER_SOCKET_NAME
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    seen: list[dict[str, Any]] = []

    def serve() -> None:
        for answer in answers:
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as lines:
                seen.append(json.loads(lines.readline()))
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield str(path), seen
    finally:
        thread.join(5)
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_redeem_and_refresh_speak_the_protocol() -> None:
    answers = [
        b'{"ok": true, "secrets": {"A": "1"}}\n',
        json.dumps({"ok": True, "token": "t2", "bundle": BUNDLE}).encode() + b"\n",
    ]
    with fake_broker(answers) as (path, seen):
        client = BrokerClient(path, session="s1", container="c1")
        assert client.redeem(Capability("t1", BUNDLE)) == {"A": "1"}
        assert client.refresh("gh") == Capability("t2", BUNDLE)
    assert seen == [
        {"op": protocol.OP_REDEEM, "token": "t1", "session": "s1", "container": "c1", "bundle": BUNDLE},
        {"op": protocol.OP_REFRESH, "session": "s1", "container": "c1", "consumer": "gh"},
    ]


@pytest.mark.parametrize(
    ("answer", "reason", "message"),
    [
        (
            b'{"ok": false, "error": "expired", "message": "too old"}\n',
            "expired",
            "the secret broker refused: too old",
        ),
        (b'{"ok": false}\n', protocol.REFUSED, "the secret broker refused: refused"),
        (b"[]\n", None, "not a JSON object"),
        (b"", None, "not JSON (or it closed the connection)"),
        (b'{"ok": true}\n', None, "answered a redeem without secrets"),
    ],
)
def test_broker_refusals_carry_the_reason(answer: bytes, reason: str | None, message: str) -> None:
    with fake_broker([answer]) as (path, _), pytest.raises(StubError, match=re.escape(message)) as caught:
        BrokerClient(path, session="s1", container="c1").redeem(Capability("t", BUNDLE))
    assert getattr(caught.value, "reason", None) == reason
    assert isinstance(caught.value, BrokerRefused) == (reason is not None)


def test_no_broker_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StubError, match=r"cannot reach the secret broker .* `connect-agent -n NAME` on the host starts it again"):
        BrokerClient(str(tmp_path / "absent.sock"), session="s", container="c").refresh("gh")


# -- servers' environment and folders ------------------------------------------------------------


def test_servers_get_the_image_path_and_pinned_package_manager_config(tmp_path: Path) -> None:
    environ = {
        "PATH": "/agent/bin",
        "HTTPS_PROXY": "http://p",
        "NODE_OPTIONS": "--require x",
        "npm_config_x": "1",
    }
    env = stub.server_environment(tmp_path, environ)
    assert env["PATH"] == stub.DEFAULT_PATH and env["HTTPS_PROXY"] == "http://p"
    assert "NODE_OPTIONS" not in env and "npm_config_x" not in env
    assert env["NPM_CONFIG_USERCONFIG"] == str(tmp_path / ".npmrc") and env["PIP_CONFIG_FILE"] == "/dev/null"


def test_writable_by_others_names_each_unsafe_ancestor(tmp_path: Path) -> None:
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    open_dir = safe / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    own = os.geteuid()
    found = stub.writable_by_others(open_dir / "missing", own_uid=own)
    assert any("missing" in item for item in found)
    assert f"{open_dir} (mode 0777)" in found
    assert not any(item.startswith(f"{safe} ") for item in found)


# -- the wire ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        (b'{"error": "no MCP server x"}', "no MCP server x"),
        (b'{"jsonrpc": "2.0", "id": 1, "error": {"code": 1}}', None),
        (b'{"error": 3}', None),
        (b"not json", None),
    ],
)
def test_only_the_stubs_own_error_line_is_a_refusal(line: bytes, refusal: str | None) -> None:
    assert stub._refusal(line) == refusal


def test_lines_split_the_clients_stream_and_keep_a_last_line_without_newline() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b'b"\n\n  \nc')
        right.shutdown(socket.SHUT_WR)
        assert list(stub._lines(left, b'{"a":1}\n{"')) == [b'{"a":1}', b'{"b"', b"c"]
