"""MCP server declarations: parsing, digests, approval of a repository's servers, and `containai mcp`."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from containai.cli.app import run_cli
from containai.cli.main import cli
from containai.config import Paths
from containai.errors import ConfigError
from containai.mcp.config import (
    McpServer,
    load_servers,
    parse_server,
    render_definition,
    resolve_mcp_servers,
)
from containai.trust import (
    approve,
    approve_mcp,
    approved,
    approved_mcp,
    load_store,
    repo_requests,
    revoke_mcp,
)

GITHUB = {
    "command": "npx",
    "args": ["-y", "@modelcontextprotocol/server-github"],
    "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
}
DOCS = {
    "url": "https://mcp.example.com/mcp",
    "bearer_token": "${DOCS_TOKEN}",
    "headers": {"X-Team": "blue", "X-Key": "${DOCS_KEY}"},
}
USER_TOML = """
[mcp_servers.github]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-github"]
env = { GITHUB_PERSONAL_ACCESS_TOKEN = "${GITHUB_TOKEN}" }
"""
REPO_TOML = """
[network]
allow = ["docs.example.com"]

[mcp_servers.docs]
url = "https://mcp.example.com/mcp"
bearer_token = "${DOCS_TOKEN}"
headers = { "X-Team" = "blue", "X-Key" = "${DOCS_KEY}" }

[mcp_servers.lint]
command = "lint-mcp"
args = ["--stdio"]
"""


def server(name: str = "x", **table: Any) -> McpServer:
    return parse_server(name, table, "user", "config.toml")


def refused(table: Mapping[str, Any], *words: str, name: object = "x") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_server(name, table, "repo", "/r/.containai/config.toml")
    error = caught.value
    assert error.message.startswith("/r/.containai/config.toml: mcp_servers.")
    assert "\n" not in error.message
    assert error.hint
    for word in words:
        assert word in error.message or word in (error.hint or ""), (word, error.message, error.hint)
    return error


# Parsing ---------------------------------------------------------------------------------------------


def test_command_and_url_servers_parse() -> None:
    github = parse_server("github", GITHUB, "user", "config.toml")
    assert (github.kind, github.command, github.args) == ("command", "npx", tuple(GITHUB["args"]))
    assert dict(github.env) == GITHUB["env"]
    assert (github.url, github.bearer_token, dict(github.headers)) == (None, None, {})
    docs = parse_server("docs", DOCS, "repo", "r")
    assert (docs.kind, docs.url, docs.bearer_token, docs.source) == (
        "url",
        DOCS["url"],
        "${DOCS_TOKEN}",
        "repo",
    )
    assert (docs.command, docs.args, dict(docs.env)) == (None, (), {})


def test_servers_are_frozen() -> None:
    github = server(**GITHUB)
    with pytest.raises(AttributeError):
        github.command = "sh"  # type: ignore[misc]
    with pytest.raises(TypeError):
        github.env["X"] = "y"  # type: ignore[index]


def test_secret_names_are_sorted_and_unique() -> None:
    assert server(**GITHUB).secret_names() == ("GITHUB_TOKEN",)
    assert server(**DOCS).secret_names() == ("DOCS_KEY", "DOCS_TOKEN")
    both = server(command="c", env={"A": "${B}:${A}", "C": "${B}", "D": "plain"})
    assert both.secret_names() == ("A", "B")
    assert server(command="c").secret_names() == ()


def test_stub_spec_holds_templates_and_folds_the_bearer_token() -> None:
    assert server(**GITHUB).stub_spec() == {
        "command": "npx",
        "args": GITHUB["args"],
        "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
    }
    assert server(**DOCS).stub_spec() == {
        "url": "https://mcp.example.com/mcp",
        "headers": {"X-Team": "blue", "X-Key": "${DOCS_KEY}", "Authorization": "Bearer ${DOCS_TOKEN}"},
    }
    assert server(url="https://a.example/mcp").stub_spec() == {"url": "https://a.example/mcp", "headers": {}}
    json.dumps(server(**DOCS).stub_spec())


def test_load_servers_reads_the_table_in_file_order() -> None:
    data = tomllib.loads(REPO_TOML)
    servers = load_servers(data, "repo", "r")
    assert [s.name for s in servers] == ["docs", "lint"]
    assert all(s.source == "repo" for s in servers)
    assert load_servers({}, "user", "c") == []
    assert load_servers({"network": {}}, "user", "c") == []


def test_mcp_servers_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        load_servers({"mcp_servers": ["github"]}, "user", "c")
    with pytest.raises(ConfigError, match="must be a table"):
        load_servers({"mcp_servers": {"github": "npx"}}, "user", "c")


@pytest.mark.parametrize("name", ["a", "0x", "my-server_2", "a" * 41])
def test_good_names(name: str) -> None:
    assert server(name, command="c").name == name


@pytest.mark.parametrize("name", ["", "-x", "_x", "X", "my.server", "a b", "a" * 42, "a/b", "é", 7])
def test_bad_names(name: object) -> None:
    refused({"command": "c"}, "name is not allowed", name=name)


def test_a_hostile_name_is_shown_escaped() -> None:
    error = refused({"command": "c"}, name="\x1b[31mred[/]")
    assert "\x1b" not in error.message and "[" not in error.message.split("mcp_servers.", 1)[1]


def test_unknown_keys_are_refused() -> None:
    refused({"command": "c", "cwd": "/tmp"}, "unknown key", '"cwd"')
    refused({"url": "https://a.example", "type": "http"}, "unknown key", '"type"')


@pytest.mark.parametrize("table", [{}, {"args": ["x"]}, {"command": "c", "url": "https://a.example"}])
def test_exactly_one_of_command_and_url(table: dict[str, Any]) -> None:
    refused(table, "exactly one of `command` and `url`")


@pytest.mark.parametrize(
    ("table", "word"),
    [
        ({"command": "c", "headers": {"A": "b"}}, "headers"),
        ({"command": "c", "bearer_token": "${T}"}, "bearer_token"),
        ({"url": "https://a.example", "env": {"A": "b"}}, "env"),
        ({"url": "https://a.example", "args": ["x"]}, "args"),
    ],
)
def test_keys_of_the_other_kind_are_refused(table: dict[str, Any], word: str) -> None:
    refused(table, word, "servers")


@pytest.mark.parametrize(
    ("table", "word"),
    [
        ({"command": ""}, "`command` must be a non-empty string"),
        ({"command": ["npx"]}, "`command` must be a non-empty string"),
        ({"command": "c", "args": "-y"}, "`args` must be a list of strings"),
        ({"command": "c", "args": ["-y", 3]}, "`args` must be a list of strings"),
        ({"command": "c", "env": ["A=b"]}, "`env` must be a table of strings"),
        ({"command": "c", "env": {"A": 1}}, "`env` must be a table of strings"),
        ({"url": 7}, "`url` must be a non-empty string"),
        ({"url": "https://a.example", "headers": {"A": True}}, "`headers` must be a table of strings"),
        ({"url": "https://a.example", "headers": "A: b"}, "`headers` must be a table of strings"),
        ({"url": "https://a.example", "bearer_token": 5}, "`bearer_token` must be a non-empty string"),
    ],
)
def test_types_are_checked(table: dict[str, Any], word: str) -> None:
    refused(table, word)


@pytest.mark.parametrize(
    "url", ["ftp://a.example/mcp", "file:///etc/passwd", "a.example/mcp", "https://", "http:///x"]
)
def test_url_must_be_http(url: str) -> None:
    refused({"url": url}, "http(s) URL")


def test_url_may_not_carry_credentials_or_placeholders() -> None:
    refused({"url": "https://user:pw@a.example/mcp"}, "user name or password")
    refused({"url": "https://a.example/mcp?key=${KEY}"}, "`url` may not hold a ${...} placeholder")
    refused({"url": "https://a.example/\nx"}, "line break")


@pytest.mark.parametrize(
    "table",
    [
        {"command": "${TOOL}"},
        {"command": "c", "args": ["--token", "${GITHUB_TOKEN}"]},
        {"command": "c", "args": ["--token=${GITHUB_TOKEN}"]},
    ],
)
def test_placeholders_in_the_command_line_are_refused(table: dict[str, Any]) -> None:
    error = refused(table, "may not hold a ${...} placeholder")
    assert "process list" in (error.hint or "") and "env" in (error.hint or "")


@pytest.mark.parametrize(
    "table",
    [
        {"command": "c", "env": {"A": "${lower_ok}"}},
        {"command": "c", "env": {"A": "x${_B1}y"}},
        {"url": "https://a.example", "headers": {"X-A": "k=${K}"}},
        {"url": "https://a.example", "bearer_token": "${T}"},
    ],
)
def test_placeholders_where_they_are_allowed(table: dict[str, Any]) -> None:
    assert server(**table).secret_names()


@pytest.mark.parametrize(
    "value", ["${1ABC}", "${A-B}", "${}", "${A B}", "${" + "A" * 65 + "}", "${A[0]}", "${A}${"]
)
def test_bad_placeholder_names_are_refused(value: str) -> None:
    refused({"command": "c", "env": {"A": value}}, "env A")
    refused({"url": "https://a.example", "headers": {"X-A": value}}, "header X-A")


def test_an_unclosed_placeholder_is_refused() -> None:
    refused({"command": "c", "env": {"A": "${TOKEN"}}, "does not open a ${NAME} placeholder")


def test_a_placeholder_name_of_64_characters_is_allowed() -> None:
    assert server(command="c", env={"A": "${" + "A" * 64 + "}"}).secret_names() == ("A" * 64,)


def test_bearer_token_must_be_a_single_placeholder() -> None:
    for token in ("ghp_literal", "Bearer ${T}", "${A}${B}", "${T} "):
        refused({"url": "https://a.example", "bearer_token": token}, "single ${NAME} placeholder")


def test_env_and_header_names_are_checked() -> None:
    refused({"command": "c", "env": {"A-B": "x"}}, "not a variable name")
    refused({"command": "c", "env": {"A": "x\0y"}}, "NUL")
    refused({"command": "c", "args": ["a\0b"]}, "NUL")
    refused({"url": "https://a.example", "headers": {"X A": "b"}}, "not an HTTP header name")
    refused({"url": "https://a.example", "headers": {"X-A": "b\r\nX-Evil: 1"}}, "line break")
    refused({"url": "https://a.example", "headers": {"X-A": "1", "x-a": "2"}}, "given twice")
    refused(
        {"url": "https://a.example", "bearer_token": "${T}", "headers": {"authorization": "x"}},
        "both `bearer_token` and an Authorization header",
    )
    assert server(url="https://a.example", headers={"Authorization": "Token ${T}"}).secret_names() == ("T",)


# Digests ---------------------------------------------------------------------------------------------


def test_digest_is_stable_and_ignores_the_source() -> None:
    one = parse_server("github", GITHUB, "user", "a")
    two = parse_server("github", dict(reversed(list(GITHUB.items()))), "repo", "b")
    assert one.digest() == two.digest()
    assert one.digest().startswith("sha256:") and len(one.digest()) == len("sha256:") + 64


@pytest.mark.parametrize(
    ("base", "change"),
    [
        (GITHUB, {"command": "npm"}),
        (GITHUB, {"args": ["-y", "@modelcontextprotocol/server-github@evil"]}),
        (GITHUB, {"args": [*GITHUB["args"], "--extra"]}),
        (GITHUB, {"env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${OTHER_TOKEN}"}}),
        (GITHUB, {"env": {**GITHUB["env"], "NODE_OPTIONS": "--require=/x.js"}}),
        (DOCS, {"url": "https://mcp.evil.example/mcp"}),
        (DOCS, {"bearer_token": "${OTHER}"}),
        (DOCS, {"headers": {"X-Team": "red", "X-Key": "${DOCS_KEY}"}}),
        (DOCS, {"headers": {"X-Team": "blue"}}),
    ],
)
def test_any_change_changes_the_digest(base: dict[str, Any], change: dict[str, Any]) -> None:
    before = parse_server("s", base, "repo", "r").digest()
    assert parse_server("s", {**base, **change}, "repo", "r").digest() != before


def test_the_name_is_part_of_the_digest() -> None:
    assert server("a", **GITHUB).digest() != server("b", **GITHUB).digest()


def test_args_order_matters_but_table_order_does_not() -> None:
    base = server(command="c", args=["a", "b"], env={"A": "1", "B": "2"})
    assert server(command="c", args=["b", "a"], env={"A": "1", "B": "2"}).digest() != base.digest()
    assert server(command="c", args=["a", "b"], env={"B": "2", "A": "1"}).digest() == base.digest()


def test_render_definition_shows_everything_escaped() -> None:
    text = render_definition(parse_server("docs", DOCS, "repo", "r"))
    for part in (
        '"https://mcp.example.com/mcp"',
        'Authorization = "Bearer ${DOCS_TOKEN}"',
        "X-Team",
        "DOCS_KEY",
    ):
        assert part in text
    hostile = render_definition(server(command="c", args=["\x1b[2Jok"], env={"A": "\u0430"}))
    assert "\x1b" not in hostile and "\\u001b[2Jok" in hostile and "\\u0430" in hostile


# Approvals store -------------------------------------------------------------------------------------


def test_store_keeps_domains_and_mcp_pins_together(tmp_path: Path) -> None:
    store = tmp_path / "config" / "approvals.toml"
    repo, other = tmp_path / "repo", tmp_path / "other"
    docs, lint = parse_server("docs", DOCS, "repo", "r"), server("lint", command="lint-mcp")
    assert approved_mcp(store, repo) == {}
    approve(store, repo, ["docs.example.com"])
    assert approve_mcp(store, repo, [docs]) == {"docs": docs.digest()}
    assert approved(store, repo) == ("docs.example.com",)
    approve(store, repo, ["cdn.example.com"])  # domains again: the pin stays
    assert approved_mcp(store, repo) == {"docs": docs.digest()}
    approve_mcp(store, repo, [lint])  # a pin again: the domains stay
    assert approved(store, repo) == ("cdn.example.com", "docs.example.com")
    assert approved_mcp(store, repo) == {"docs": docs.digest(), "lint": lint.digest()}
    approve_mcp(store, other, [docs])
    assert approved(store, other) == () and approved_mcp(store, other) == {"docs": docs.digest()}
    assert store.stat().st_mode & 0o777 == 0o600
    assert not store.with_suffix(".tmp").exists()
    data = tomllib.loads(store.read_text())
    assert data["repos"][str(repo)]["mcp"]["lint"] == lint.digest()


def test_approving_a_changed_server_replaces_its_pin(tmp_path: Path) -> None:
    store = tmp_path / "approvals.toml"
    approve_mcp(store, tmp_path, [server("s", command="one")])
    approve_mcp(store, tmp_path, [server("s", command="two")])
    assert approved_mcp(store, tmp_path) == {"s": server("s", command="two").digest()}


def test_revoke_drops_pins_only(tmp_path: Path) -> None:
    store = tmp_path / "approvals.toml"
    approve(store, tmp_path, ["docs.example.com"])
    approve_mcp(store, tmp_path, [server("a", command="a"), server("b", command="b")])
    assert revoke_mcp(store, tmp_path, ["a", "zzz"]) == ("a",)
    assert set(approved_mcp(store, tmp_path)) == {"b"}
    assert revoke_mcp(store, tmp_path, []) == ("b",)
    assert approved_mcp(store, tmp_path) == {}
    assert approved(store, tmp_path) == ("docs.example.com",)
    assert revoke_mcp(store, tmp_path / "none", []) == ()


def test_store_paths_with_quotes_survive(tmp_path: Path) -> None:
    store = tmp_path / "approvals.toml"
    repo = tmp_path / 'we"ird\\repo]'
    approve_mcp(store, repo, [server("s", command="c")])
    assert approved_mcp(store, repo) == {"s": server("s", command="c").digest()}


def test_malformed_entries_in_the_store_pin_nothing(tmp_path: Path) -> None:
    store = tmp_path / "approvals.toml"
    store.write_text(
        '[repos."/a"]\ndomains = ["x.example.com"]\nmcp = { s = 3, t = "sha256:1" }\n[repos."/b"]\nmcp = "no"\n'
    )
    assert approved_mcp(store, Path("/a")) == {"t": "sha256:1"}
    assert approved_mcp(store, Path("/b")) == {}
    assert set(load_store(store)) == {"/a", "/b"}
    store.write_text("not toml [")
    with pytest.raises(ConfigError):
        approved_mcp(store, Path("/a"))


def test_network_requests_still_read_beside_mcp_servers(tmp_path: Path) -> None:
    (tmp_path / ".containai").mkdir()
    (tmp_path / ".containai" / "config.toml").write_text(REPO_TOML)
    assert repo_requests(tmp_path) == ("docs.example.com",)


# Resolution ------------------------------------------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    paths = Paths.from_env({"CONTAINAI_HOME": str(tmp_path / "home")})
    paths.config_dir.mkdir(parents=True)
    paths.config_file.write_text(USER_TOML)
    return paths


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".containai").mkdir(parents=True)
    (root / ".containai" / "config.toml").write_text(REPO_TOML)
    return root


def test_user_servers_always_run(paths: Paths) -> None:
    resolution = resolve_mcp_servers(paths, None)
    assert [(s.name, s.source) for s in resolution.servers] == [("github", "user")]
    assert resolution.pending == () and resolution.shadowed == ()


def test_repo_servers_wait_until_their_digest_is_pinned(paths: Paths, repo: Path) -> None:
    resolution = resolve_mcp_servers(paths, repo)
    assert [s.name for s in resolution.servers] == ["github"]
    assert [(p.server.name, p.reason) for p in resolution.pending] == [("docs", "new"), ("lint", "new")]

    docs = resolution.pending[0].server
    approve_mcp(paths.approvals_file, repo, [docs])
    resolution = resolve_mcp_servers(paths, repo)
    assert [(s.name, s.source) for s in resolution.servers] == [("github", "user"), ("docs", "repo")]
    assert [(p.server.name, p.reason) for p in resolution.pending] == [("lint", "new")]

    # The repository changes the approved server: it stops running until approved again.
    (repo / ".containai" / "config.toml").write_text(REPO_TOML.replace("mcp.example.com", "mcp.evil.example"))
    resolution = resolve_mcp_servers(paths, repo)
    assert [s.name for s in resolution.servers] == ["github"]
    assert [(p.server.name, p.reason) for p in resolution.pending] == [("docs", "changed"), ("lint", "new")]


def test_pins_are_per_repository(paths: Paths, repo: Path, tmp_path: Path) -> None:
    approve_mcp(
        paths.approvals_file, tmp_path / "elsewhere", load_servers(tomllib.loads(REPO_TOML), "repo", "r")
    )
    assert [p.reason for p in resolve_mcp_servers(paths, repo).pending] == ["new", "new"]


def test_a_repo_server_named_like_a_users_is_shadowed(paths: Paths, repo: Path) -> None:
    (repo / ".containai" / "config.toml").write_text('[mcp_servers.github]\ncommand = "evil"\n')
    # Even a pin for the repository's definition does not let it replace the user's.
    approve_mcp(paths.approvals_file, repo, [parse_server("github", {"command": "evil"}, "repo", "r")])
    resolution = resolve_mcp_servers(paths, repo)
    assert [(s.name, s.source, s.command) for s in resolution.servers] == [("github", "user", "npx")]
    assert resolution.pending == ()
    assert [(s.name, s.command) for s in resolution.shadowed] == [("github", "evil")]
    assert [(s.source, status) for s, status in resolution.statuses()] == [
        ("repo", "shadowed"),
        ("user", "active"),
    ]


def test_a_bad_repo_server_names_the_repo_file(paths: Paths, repo: Path) -> None:
    (repo / ".containai" / "config.toml").write_text('[mcp_servers.x]\ncommand = "c"\nargs = ["${T}"]\n')
    with pytest.raises(ConfigError, match=r"repo/\.containai/config\.toml: mcp_servers\.x"):
        resolve_mcp_servers(paths, repo)
    (repo / ".containai" / "config.toml").write_text("[mcp_servers.x\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve_mcp_servers(paths, repo)


def test_a_bad_user_server_names_the_user_file(paths: Paths) -> None:
    paths.config_file.write_text('[mcp_servers.x]\nurl = "gopher://a"\n')
    with pytest.raises(ConfigError, match=r"config\.toml: mcp_servers\.x: `url` must be an http"):
        resolve_mcp_servers(paths, None)


def test_no_config_files_no_servers(tmp_path: Path) -> None:
    paths = Paths.from_env({"CONTAINAI_HOME": str(tmp_path)})
    assert resolve_mcp_servers(paths, tmp_path) == resolve_mcp_servers(paths, None)
    assert resolve_mcp_servers(paths, None).servers == ()


# The CLI ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _close_log_file() -> Iterator[None]:
    # run_cli points the "containai" logger at a file under CONTAINAI_HOME; close it after each test.
    yield
    logger = logging.getLogger("containai")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    config = tmp_path / "cli-home" / "config"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(USER_TOML)
    return tmp_path / "cli-home"


@pytest.fixture
def git_repo(repo: Path) -> Path:
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    return repo.resolve()


def mcp(home: Path, *args: str) -> int:
    return run_cli(cli, args=["mcp", *args], environ={"CONTAINAI_HOME": str(home)})


def stdin(monkeypatch: pytest.MonkeyPatch, text: str, *, tty: bool) -> None:
    stream = io.StringIO(text)
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", stream)


def pins(home: Path, repo: Path) -> dict[str, str]:
    return approved_mcp(Paths.from_env({"CONTAINAI_HOME": str(home)}).approvals_file, repo)


def test_cli_ls_table(home: Path, git_repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    secrets = home / "config" / "secrets.env"
    secrets.write_text("DOCS_KEY=k\nGITHUB_TOKEN=t\n")
    secrets.chmod(0o600)
    assert mcp(home, "ls", str(git_repo)) == 0
    out, err = capfd.readouterr()
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["NAME", "SOURCE", "KIND", "STATUS", "SECRETS"]
    assert lines[1] == [
        "docs",
        "repo",
        "url",
        "pending:",
        "new",
        "DOCS_KEY,",
        "DOCS_TOKEN",
        "(not",
        "stored)",
    ]
    assert lines[2] == ["github", "user", "command", "active", "GITHUB_TOKEN"]
    assert lines[3] == ["lint", "repo", "command", "pending:", "new", "-"]
    assert "wait for approval" in err and f"containai mcp approve {git_repo}" in err
    assert "not stored on this host: DOCS_TOKEN" in err and "containai secrets set DOCS_TOKEN" in err


def test_cli_ls_defaults_to_the_working_directorys_repo(
    home: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (git_repo / "sub").mkdir()
    monkeypatch.chdir(git_repo / "sub")
    assert mcp(home, "ls", "--json") == 0
    data = json.loads(capfd.readouterr().out)
    assert data["schema"] == 1 and data["repo"] == str(git_repo)
    assert [(s["name"], s["status"], s["secrets"], s["missing"]) for s in data["servers"]] == [
        ("docs", "pending: new", ["DOCS_KEY", "DOCS_TOKEN"], ["DOCS_KEY", "DOCS_TOKEN"]),
        ("github", "active", ["GITHUB_TOKEN"], ["GITHUB_TOKEN"]),
        ("lint", "pending: new", [], []),
    ]


def test_cli_ls_outside_a_repo_lists_the_users(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert mcp(home, "ls", "--json") == 0
    data = json.loads(capfd.readouterr().out)
    assert data["repo"] is None and [s["name"] for s in data["servers"]] == ["github"]
    assert mcp(home, "ls", str(outside)) == 125
    assert "is not inside a git repository" in capfd.readouterr().err


def test_cli_ls_never_prints_secret_values(
    home: Path, git_repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (home / "config" / "secrets.env").write_text('GITHUB_TOKEN="ghp_canary_value"\n')
    (home / "config" / "secrets.env").chmod(0o600)
    assert mcp(home, "ls", str(git_repo)) == 0
    assert mcp(home, "ls", str(git_repo), "--json") == 0
    out, err = capfd.readouterr()
    assert "ghp_canary_value" not in out + err


def test_cli_approve_shows_asks_and_pins(
    home: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "y\n", tty=True)
    assert mcp(home, "approve", str(git_repo), "docs") == 0
    out, err = capfd.readouterr()
    assert '"https://mcp.example.com/mcp"' in out and 'X-Key = "${DOCS_KEY}"' in out
    assert "Authorization" in out and "lint-mcp" not in out
    assert "Let sessions on" in err
    assert f"approved for {git_repo}: docs" in out
    assert set(pins(home, git_repo)) == {"docs"}


def test_cli_approve_declined_pins_nothing(
    home: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "n\n", tty=True)
    assert mcp(home, "approve", str(git_repo)) == 1
    assert "nothing approved" in capfd.readouterr().err
    assert pins(home, git_repo) == {}


def test_cli_approve_without_a_terminal_needs_yes(
    home: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, "y\n", tty=False)
    assert mcp(home, "approve", str(git_repo)) == 125
    out, err = capfd.readouterr()
    assert "docs" in out and "lint-mcp" in out  # shown before refusing
    assert "error: no terminal" in err and "--yes" in err
    assert pins(home, git_repo) == {}
    assert mcp(home, "approve", str(git_repo), "--yes") == 0
    assert set(pins(home, git_repo)) == {"docs", "lint"}
    capfd.readouterr()
    assert mcp(home, "approve", str(git_repo), "--yes") == 0
    assert "nothing of" in capfd.readouterr().err


def test_cli_approve_defaults_to_the_working_directorys_repo(
    home: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(git_repo)
    assert mcp(home, "approve", "lint", "--yes") == 0
    assert set(pins(home, git_repo)) == {"lint"}
    assert mcp(home, "approve", ".", "--yes") == 0
    assert set(pins(home, git_repo)) == {"docs", "lint"}


def test_cli_approve_pins_what_it_showed(home: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin(monkeypatch, "y\n", tty=True)
    assert mcp(home, "approve", str(git_repo), "docs") == 0
    shown = parse_server("docs", DOCS, "repo", "r")
    assert pins(home, git_repo) == {"docs": shown.digest()}
    assert (
        resolve_mcp_servers(Paths.from_env({"CONTAINAI_HOME": str(home)}), git_repo).pending[0].server.name
        == "lint"
    )


def test_cli_approve_unknown_and_shadowed_names(
    home: Path, git_repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert mcp(home, "approve", str(git_repo), "nope", "--yes") == 125
    err = capfd.readouterr().err
    assert "declares no MCP server nope" in err and "docs, lint" in err
    (git_repo / ".containai" / "config.toml").write_text('[mcp_servers.github]\ncommand = "evil"\n')
    assert mcp(home, "approve", str(git_repo), "github", "--yes") == 125
    assert "never runs" in capfd.readouterr().err
    assert pins(home, git_repo) == {}


def test_cli_approve_a_repo_without_servers(
    home: Path, git_repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (git_repo / ".containai" / "config.toml").write_text('[network]\nallow = ["a.example.com"]\n')
    assert mcp(home, "approve", str(git_repo), "--yes") == 125
    assert "declares no MCP servers" in capfd.readouterr().err


def test_cli_changed_server_shows_as_changed(
    home: Path, git_repo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert mcp(home, "approve", str(git_repo), "--yes") == 0
    capfd.readouterr()
    (git_repo / ".containai" / "config.toml").write_text(
        REPO_TOML.replace('"--stdio"', '"--stdio", "--evil"')
    )
    assert mcp(home, "ls", str(git_repo), "--json") == 0
    statuses = {s["name"]: s["status"] for s in json.loads(capfd.readouterr().out)["servers"]}
    assert statuses == {"docs": "active", "github": "active", "lint": "pending: changed"}
    assert mcp(home, "approve", str(git_repo), "--yes") == 0
    assert "changed since you approved it" in capfd.readouterr().out


def test_cli_revoke(home: Path, git_repo: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert mcp(home, "approve", str(git_repo), "--yes") == 0
    assert mcp(home, "revoke", str(git_repo), "nope") == 125
    assert mcp(home, "revoke", str(git_repo), "docs") == 0
    assert set(pins(home, git_repo)) == {"lint"}
    assert mcp(home, "revoke", str(git_repo)) == 0
    assert pins(home, git_repo) == {}
    assert "revoked for" in capfd.readouterr().out
