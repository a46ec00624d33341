"""Host secret sources: the Secret type, env files, the 0600 store, the keyring, precedence, the CLI."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import pickle
import stat
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from containai.cli.app import run_cli
from containai.cli.main import cli
from containai.config import Paths
from containai.errors import ConfigError, UsageError
from containai.secrets import store as store_module
from containai.secrets.envfile import NAME_PATTERN, parse_env_file, quote_value, render_env_file
from containai.secrets.store import (
    EnvFileSource,
    EnvironmentSource,
    FileStore,
    KeyringStore,
    SecretSource,
    default_sources,
    keyring_wanted,
    list_secrets,
    resolve_secret,
    secret_from_input,
    system_keyring,
    write_private_file,
)
from containai.secrets.value import Secret

CANARY = "CANARY-7f3a9c-s3cr3t"
TRICKY_VALUES = [
    "plain",
    "with space",
    "  leading and trailing  ",
    "hash # inside",
    "#starts-with-hash",
    "a #b",
    'quote " double',
    "quote ' single",
    "'single-wrapped'",
    '"double-wrapped"',
    "back\\slash",
    "trailing backslash\\",
    "\\n literal backslash-n",
    "line1\nline2",
    "crlf\r\nend",
    "lone\rcr",
    "tab\there",
    "$HOME ${X} `cmd` $(cmd)",
    "=equals=",
    "export X=1",
    "unicode ✓ ß \u2028 \x85 \x0b",
    "-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n",
    "",
]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _close_log_file() -> Iterator[None]:
    # run_cli points the "containai" logger at a file under CONTAINAI_HOME; close it after each test.
    yield
    logger = logging.getLogger("containai")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


class FakeKeyring:
    """A `keyring` backend held in a dict; `fail_with` makes every call raise."""

    priority = 5.0

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], str] = {}
        self.fail_with: Exception | None = None

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def get_password(self, service: str, username: str) -> str | None:
        self._check()
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self._check()
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self._check()
        del self.entries[(service, username)]


# Secret ------------------------------------------------------------------------------------------------


def test_secret_never_shows_itself(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(CANARY)
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "%s %r" % (secret, secret),  # noqa: UP031 - %-formatting is what logging does
        "{}".format(secret),  # noqa: UP032
        repr([secret]),
        repr({"k": secret}),
        str(ConfigError(f"bad {secret}")),
        repr(ValueError(secret)),
    ]
    console = Console(file=io.StringIO(), width=200)
    console.print(secret, {"token": secret})
    console.log(secret)
    shown.append(console.file.getvalue())  # type: ignore[attr-defined]
    with caplog.at_level(logging.DEBUG, logger="containai"):
        logging.getLogger("containai.test").warning("value %s %r", secret, secret)
        logging.getLogger("containai.test").error("%s", {"k": secret})
    shown.append(caplog.text)
    assert all(CANARY not in text for text in shown)
    assert repr(secret) == str(secret) == "Secret('***')"
    assert secret.reveal() == CANARY


def test_secret_in_a_traceback_shows_the_mask() -> None:
    try:
        raise RuntimeError(Secret(CANARY))
    except RuntimeError as exc:
        import traceback

        text = "".join(traceback.format_exception(exc))
    assert CANARY not in text
    assert "Secret('***')" in text


def test_secret_equality_hashing_pickling_copying() -> None:
    secret = Secret(CANARY)
    assert secret == Secret(CANARY)
    assert secret != Secret(CANARY + "x")
    assert secret != CANARY  # a Secret is not its str
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        {secret}  # noqa: B018
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(secret, protocol=protocol)
    with pytest.raises(TypeError):
        json.dumps(secret)
    assert copy.copy(secret) is secret
    assert copy.deepcopy([secret])[0] is secret
    with pytest.raises(AttributeError):
        secret._value = "other"
    with pytest.raises(AttributeError):
        secret.extra = 1
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_fingerprint_is_keyed() -> None:
    key_a, key_b = b"a" * 32, b"b" * 32
    secret = Secret(CANARY)
    assert secret.fingerprint(key_a) == Secret(CANARY).fingerprint(key_a)
    assert secret.fingerprint(key_a) != secret.fingerprint(key_b)
    assert secret.fingerprint(key_a) != Secret("other").fingerprint(key_a)
    assert len(secret.fingerprint(key_a)) == 16
    assert not hashlib.sha256(CANARY.encode()).hexdigest().startswith(secret.fingerprint(key_a))
    with pytest.raises(ValueError, match="16 bytes"):
        secret.fingerprint(b"")


# Env files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("\n\n  \n", {}),
        ("# only a comment\n   # indented comment", {}),
        ("A=1", {"A": "1"}),
        ("A=1\nB=2\n", {"A": "1", "B": "2"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("\ufeffA=1", {"A": "1"}),
        ("export A=1", {"A": "1"}),
        ("export\tA=1", {"A": "1"}),
        ("  export   A = 1  ", {"A": "1"}),
        ("export=1", {"export": "1"}),
        ("exportA=1", {"exportA": "1"}),
        ("_a_B9=x", {"_a_B9": "x"}),
        ("A=", {"A": ""}),
        ("A=  ", {"A": ""}),
        ("A=a=b=c", {"A": "a=b=c"}),
        ("A=value # comment", {"A": "value"}),
        ("A=value\t# comment", {"A": "value"}),
        ("A=va#lue", {"A": "va#lue"}),
        ("A=#value", {"A": "#value"}),
        ("A= # only a comment", {"A": ""}),
        ("A=it's", {"A": "it's"}),
        ('A=say "hi"', {"A": 'say "hi"'}),
        ("A='single # not a comment'", {"A": "single # not a comment"}),
        ("A='lit\\n $X \\\\ \"'", {"A": 'lit\\n $X \\\\ "'}),
        ('A="double # not a comment"', {"A": "double # not a comment"}),
        ('A="a\\nb"', {"A": "a\nb"}),
        ('A="q\\"q"', {"A": 'q"q'}),
        ('A="back\\\\slash"', {"A": "back\\slash"}),
        ('A="cr\\rtab\\t"', {"A": "cr\rtab\t"}),
        ('A="unknown \\x escape"', {"A": "unknown \\x escape"}),
        ('A="it\'s"', {"A": "it's"}),
        ('A="  padded  "', {"A": "  padded  "}),
        ('A="x" # comment', {"A": "x"}),
        ("A='x'   ", {"A": "x"}),
        ('A=""', {"A": ""}),
        ("A=''", {"A": ""}),
        ('A="multi\nline"\nB=2', {"A": "multi\nline", "B": "2"}),
        ("A='multi\r\nline'\r\nB=2", {"A": "multi\nline", "B": "2"}),
        ("A=1\nA=2", {"A": "2"}),
        ('A="uni ✓"', {"A": "uni ✓"}),
    ],
)
def test_parse_env_file(text: str, expected: dict[str, str]) -> None:
    parsed = parse_env_file(text, "test.env")
    assert {k: v.reveal() for k, v in parsed.items()} == expected
    assert all(isinstance(v, Secret) for v in parsed.values())


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"{CANARY}", 1),
        (f"A=1\n\n{CANARY}\n", 3),
        (f"export {CANARY}", 1),
        (f"1A={CANARY}", 1),
        (f"A-B={CANARY}", 1),
        (f"={CANARY}", 1),
        (f"A B={CANARY}", 1),
        (f"{CANARY}-x={CANARY}", 1),
        (f'A="{CANARY}', 1),
        (f"# c\nA='{CANARY}\nB=2", 2),
        (f'A="{CANARY}" {CANARY}', 1),
        (f'A="x\ny" {CANARY}', 2),
        (f"A='x'{CANARY}", 1),
        (f'A="{CANARY}\\"', 1),
    ],
)
def test_bad_env_lines_name_the_line_never_the_value(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_env_file(text, "/home/u/mcp-secrets.env")
    err = caught.value
    assert err.message.startswith(f"/home/u/mcp-secrets.env, line {line}: ")
    assert CANARY not in err.message
    assert CANARY not in (err.hint or "")
    assert CANARY not in repr(err)


@given(st.text())
def test_parse_env_file_fails_only_with_config_error(text: str) -> None:
    try:
        parse_env_file(text, "fuzz.env")
    except ConfigError as exc:
        assert exc.message.startswith("fuzz.env, line ")


@given(st.text())
def test_quote_value_round_trips(value: str) -> None:
    assert parse_env_file(f"A={quote_value(value)}", "x")["A"].reveal() == value


@given(st.dictionaries(st.from_regex(NAME_PATTERN, fullmatch=True), st.text(), max_size=6))
def test_render_env_file_round_trips(values: dict[str, str]) -> None:
    text = render_env_file({k: Secret(v) for k, v in values.items()})
    assert {k: v.reveal() for k, v in parse_env_file(text, "x").items()} == values


# The file store ----------------------------------------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths.from_env({"CONTAINAI_HOME": str(tmp_path / "home")})


def test_file_store_round_trips_every_tricky_value(paths: Paths) -> None:
    store = FileStore(paths.secrets_file)
    for index, value in enumerate(TRICKY_VALUES):
        store.set(f"V{index}", Secret(value))
    fresh = FileStore(paths.secrets_file)
    assert fresh.names() == sorted(f"V{i}" for i in range(len(TRICKY_VALUES)))
    for index, value in enumerate(TRICKY_VALUES):
        got = fresh.get(f"V{index}")
        assert got is not None and got.reveal() == value, index
    assert fresh.get("MISSING") is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text())
def test_file_store_round_trips_any_text(paths: Paths, value: str) -> None:
    store = FileStore(paths.secrets_file)
    store.set("TOKEN", Secret(value))
    store.set("OTHER", Secret("unchanged"))
    got = FileStore(paths.secrets_file).get("TOKEN")
    assert got is not None and got.reveal() == value


def test_file_store_is_private_from_creation(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kw)

    def no_chmod(*args: Any, **kw: Any) -> None:
        raise AssertionError("the store must be created private, not chmod-ed afterwards")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(os, "fchmod", no_chmod)
    old_umask = os.umask(0o000)  # even with a permissive umask
    try:
        FileStore(paths.secrets_file).set("A", Secret(CANARY))
    finally:
        os.umask(old_umask)
    assert _mode(paths.secrets_file) == 0o600
    assert _mode(paths.config_dir) == 0o700
    temp = [(p, f, m) for p, f, m in opened if p.endswith(".tmp")]
    assert temp and all(f & os.O_CREAT and f & os.O_EXCL and m == 0o600 for _, f, m in temp)
    assert paths.secrets_file.read_text().startswith("# ContainAI secret store")


def test_failed_write_leaves_the_old_store(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(paths.secrets_file)
    store.set("A", Secret("old"))
    before = paths.secrets_file.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ConfigError, match="cannot write") as caught:
        store.set("A", Secret(CANARY))
    assert "unchanged" in (caught.value.hint or "")
    assert CANARY not in caught.value.message
    monkeypatch.undo()
    assert paths.secrets_file.read_bytes() == before
    leftovers = [p.name for p in paths.config_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    got = store.get("A")
    assert got is not None and got.reveal() == "old"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_store_others_can_reach_is_refused(paths: Paths, mode: int) -> None:
    store = FileStore(paths.secrets_file)
    store.set("A", Secret(CANARY))
    paths.secrets_file.chmod(mode)
    with pytest.raises(ConfigError, match="other users") as caught:
        store.get("A")
    assert f"chmod 600 {paths.secrets_file}" in (caught.value.hint or "")
    assert CANARY not in caught.value.message


def test_a_store_owned_by_someone_else_is_refused(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    FileStore(paths.secrets_file).set("A", Secret("x"))
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    with pytest.raises(ConfigError, match="not to you") as caught:
        FileStore(paths.secrets_file).names()
    assert "chown" in (caught.value.hint or "")


def test_a_store_that_is_not_a_file_is_refused(paths: Paths) -> None:
    paths.config_dir.mkdir(parents=True)
    os.mkfifo(paths.secrets_file, 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):
        FileStore(paths.secrets_file).names()


def test_missing_store_is_empty_and_delete(paths: Paths) -> None:
    store = FileStore(paths.secrets_file)
    assert store.names() == [] and store.get("A") is None
    assert store.delete("A") is False
    store.set("A", Secret("1"))
    store.set("B", Secret("2"))
    assert store.delete("A") is True
    assert store.names() == ["B"]


def test_store_refuses_bad_names(paths: Paths) -> None:
    with pytest.raises(UsageError) as caught:
        FileStore(paths.secrets_file).set(CANARY, Secret("x"))
    assert CANARY not in caught.value.message


def test_mcp_secrets_file_is_read_only_and_checked(paths: Paths) -> None:
    path = paths.config_dir / "mcp-secrets.env"
    write_private_file(path, f"# hand-kept\nexport GITHUB_TOKEN='{CANARY}'\nOTHER=\"two\" # c\n")
    source = EnvFileSource(path)
    assert source.names() == ["GITHUB_TOKEN", "OTHER"]
    got = source.get("GITHUB_TOKEN")
    assert got is not None and got.reveal() == CANARY
    assert not hasattr(source, "set") and not hasattr(source, "delete")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="other users"):
        source.names()


def test_environment_source_answers_only_when_asked() -> None:
    source = EnvironmentSource({"GITHUB_TOKEN": CANARY, "HOME": "/home/u"})
    assert source.names() == []
    got = source.get("GITHUB_TOKEN")
    assert got is not None and got.reveal() == CANARY
    assert source.get("NOPE") is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"v", "v"),
        (b"v\n", "v"),
        (b"v\r\n", "v"),
        (b"v\n\n", "v\n"),
        (b" v ", " v "),
        ("✓\n".encode(), "✓"),
    ],
)
def test_secret_from_input(data: bytes, expected: str) -> None:
    assert secret_from_input(data, "stdin").reveal() == expected


@pytest.mark.parametrize(
    ("data", "why"), [(b"", "empty"), (b"\n", "empty"), (b"a\x00b", "NUL"), (b"\xff", "UTF-8")]
)
def test_secret_from_input_refuses(data: bytes, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        secret_from_input(data, "stdin")


# The keyring -------------------------------------------------------------------------------------------


def test_keyring_store_with_a_backend() -> None:
    backend = FakeKeyring()
    store = KeyringStore(backend)
    assert store.available()
    store.set("B", Secret("two"))
    store.set("A", Secret(CANARY))
    assert store.names() == ["A", "B"]
    got = store.get("A")
    assert got is not None and got.reveal() == CANARY
    assert backend.entries[("containai", "A")] == CANARY
    assert store.delete("A") is True
    assert store.delete("A") is False
    assert store.names() == ["B"] and store.get("A") is None


def test_keyring_failures_do_not_echo_the_value() -> None:
    backend = FakeKeyring()
    backend.fail_with = RuntimeError(f"backend said {CANARY}")
    with pytest.raises(ConfigError, match="RuntimeError") as caught:
        KeyringStore(backend).set("A", Secret(CANARY))
    assert CANARY not in str(caught.value) and caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_keyring_store_without_a_backend() -> None:
    store = KeyringStore(None)
    assert not store.available()
    assert store.get("A") is None and store.names() == []
    with pytest.raises(ConfigError, match="no usable OS keyring") as caught:
        store.set("A", Secret("x"))
    assert "containai[keyring]" in (caught.value.hint or "")


def _fake_keyring_module(backend: object) -> types.ModuleType:
    module = types.ModuleType("keyring")
    module.get_keyring = lambda: backend  # type: ignore[attr-defined]
    return module


def test_system_keyring_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    modules: dict[str, types.ModuleType] = {}

    def fake_import(name: str) -> types.ModuleType:
        if name not in modules:
            raise ModuleNotFoundError(name)
        return modules[name]

    monkeypatch.setattr(store_module, "importlib", types.SimpleNamespace(import_module=fake_import))
    assert system_keyring() is None  # not installed

    fail_cls = type("Keyring", (), {"priority": 0, "__module__": "keyring.backends.fail"})
    modules["keyring"] = _fake_keyring_module(fail_cls())
    assert system_keyring() is None

    plain_cls = type("PlaintextKeyring", (), {"priority": 0.5, "__module__": "keyrings.alt.file"})
    modules["keyring"] = _fake_keyring_module(plain_cls())
    assert system_keyring() is None

    real = FakeKeyring()
    modules["keyring"] = _fake_keyring_module(real)
    assert system_keyring() is real


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, True),
        ({"CONTAINAI_HOME": "/x"}, False),
        ({"CONTAINAI_HOME": "/x", "CONTAINAI_KEYRING": "1"}, True),
        ({"CONTAINAI_KEYRING": "off"}, False),
        ({"CONTAINAI_KEYRING": "0"}, False),
    ],
)
def test_keyring_wanted(environ: dict[str, str], wanted: bool) -> None:
    assert keyring_wanted(environ) is wanted


# Precedence --------------------------------------------------------------------------------------------


def test_resolve_precedence(paths: Paths) -> None:
    keyring = KeyringStore(FakeKeyring())
    file_store = FileStore(paths.secrets_file)
    mcp = paths.config_dir / "mcp-secrets.env"
    sources: list[SecretSource] = [
        keyring,
        file_store,
        EnvFileSource(mcp),
        EnvironmentSource({"T": "from-env"}),
    ]

    def resolved() -> tuple[str, str] | None:
        found = resolve_secret("T", sources)
        return None if found is None else (found[0].reveal(), found[1])

    assert resolve_secret("NOPE", sources) is None
    assert resolved() == ("from-env", "environment")
    write_private_file(mcp, "T=from-mcp\n")
    assert resolved() == ("from-mcp", str(mcp))
    file_store.set("T", Secret("from-store"))
    assert resolved() == ("from-store", str(paths.secrets_file))
    keyring.set("T", Secret("from-keyring"))
    assert resolved() == ("from-keyring", keyring.label)

    [listing] = list_secrets(sources)
    assert (listing.name, listing.kind) == ("T", "keyring")
    assert listing.shadowed == (str(paths.secrets_file), str(mcp), "environment")


def test_default_sources_order_and_isolation(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "system_keyring", FakeKeyring)
    kinds = [s.kind for s in default_sources(paths, {"CONTAINAI_HOME": "/x"})]
    assert kinds == ["store", "env-file", "environment"]  # CONTAINAI_HOME keeps the real keyring out
    kinds = [s.kind for s in default_sources(paths, {})]
    assert kinds == ["keyring", "store", "env-file", "environment"]


# The CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "cli-home"


def _run(home: Path, *args: str, environ: Mapping[str, str] | None = None) -> int:
    return run_cli(cli, args=["secrets", *args], environ={"CONTAINAI_HOME": str(home), **(environ or {})})


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str, *, tty: bool = False) -> None:
    stream = io.StringIO(text)
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", stream)


def _stored(home: Path, name: str) -> str | None:
    got = FileStore(Paths.from_env({"CONTAINAI_HOME": str(home)}).secrets_file).get(name)
    return None if got is None else got.reveal()


def test_cli_set_from_stdin_ls_rm(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, CANARY + "\n")
    assert _run(home, "set", "GITHUB_TOKEN", "--stdin") == 0
    assert _stored(home, "GITHUB_TOKEN") == CANARY
    out, err = capfd.readouterr()
    assert "stored GITHUB_TOKEN in" in err and out == ""

    assert _run(home, "ls") == 0
    out, _ = capfd.readouterr()
    assert out.startswith("GITHUB_TOKEN\t") and "secrets.env" in out

    assert _run(home, "ls", "--json") == 0
    out, _ = capfd.readouterr()
    data = json.loads(out)
    assert data["schema"] == 1
    assert data["secrets"] == [
        {
            "name": "GITHUB_TOKEN",
            "source": str(home / "config" / "secrets.env"),
            "kind": "store",
            "shadowed": [],
        }
    ]

    assert _run(home, "rm", "GITHUB_TOKEN") == 0
    assert _stored(home, "GITHUB_TOKEN") is None
    assert _run(home, "rm", "GITHUB_TOKEN") == 125
    _, err = capfd.readouterr()
    assert "no secret GITHUB_TOKEN" in err and "hint:" in err


def test_cli_set_from_file(home: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    value_file = tmp_path / "token.txt"
    value_file.write_text('multi\nline "value" # not a comment\n')
    assert _run(home, "set", "PEM", "--from-file", str(value_file)) == 0
    assert _stored(home, "PEM") == 'multi\nline "value" # not a comment'
    assert _run(home, "set", "PEM", "--from-file", str(tmp_path / "missing")) == 125
    _, err = capfd.readouterr()
    assert "cannot read" in err


def test_cli_prompts_with_hidden_input_on_a_terminal(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    asked: dict[str, Any] = {}

    def fake_prompt(text: str, **kw: Any) -> str:
        asked.update(kw, text=text)
        return CANARY

    _stdin(monkeypatch, "", tty=True)
    monkeypatch.setattr(click, "prompt", fake_prompt)
    assert _run(home, "set", "API_KEY") == 0
    assert asked["hide_input"] is True and asked["confirmation_prompt"] is True
    assert _stored(home, "API_KEY") == CANARY


def test_cli_refuses_to_prompt_without_a_terminal(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, CANARY)
    assert _run(home, "set", "API_KEY") == 125
    _, err = capfd.readouterr()
    assert "no terminal" in err and "--stdin" in err
    assert _stored(home, "API_KEY") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "A", "--stdin", "--from-file", "x"], "do not go together"),
        (["set", "A", "--stdin"], "empty"),
        (["set", CANARY.replace("-", "_") + "-", "--stdin"], "not a valid secret name"),
        (["set", "A", CANARY], "never taken from the command line"),
        (["set", "A", f"--value={CANARY}"], "never taken from the command line"),
        (["rm", "1BAD"], "not a valid secret name"),
    ],
)
def test_cli_usage_errors(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    _stdin(monkeypatch, "")
    assert _run(home, *args) == 125
    _, err = capfd.readouterr()
    assert message in err
    assert CANARY.replace("-", "_") not in err and CANARY not in err


def test_cli_set_has_no_value_option() -> None:
    set_command = cli.commands["secrets"].commands["set"]  # type: ignore[attr-defined]
    assert [p.name for p in set_command.params if isinstance(p, click.Argument)] == ["name"]
    assert {p.name for p in set_command.params} == {"name", "from_file", "from_stdin", "use_keyring"}


def test_cli_rm_warns_when_a_lower_source_still_has_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    paths = Paths.from_env({"CONTAINAI_HOME": str(home)})
    write_private_file(paths.config_dir / "mcp-secrets.env", "T=from-mcp\n")
    _stdin(monkeypatch, "from-store")
    assert _run(home, "set", "T", "--stdin") == 0
    assert _run(home, "ls") == 0
    out, _ = capfd.readouterr()
    assert "(hides " in out and "mcp-secrets.env" in out
    assert _run(home, "rm", "T") == 0
    _, err = capfd.readouterr()
    assert "still set in" in err and "mcp-secrets.env" in err
    assert _run(home, "rm", "T") == 125
    _, err = capfd.readouterr()
    assert "remove it there" in err


def test_cli_refuses_a_world_readable_store(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, CANARY)
    assert _run(home, "set", "T", "--stdin") == 0
    (home / "config" / "secrets.env").chmod(0o644)
    assert _run(home, "ls") == 125
    _, err = capfd.readouterr()
    assert "chmod 600" in err and CANARY not in err


def test_cli_keyring_flag_without_a_keyring(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(store_module, "system_keyring", lambda: None)
    _stdin(monkeypatch, CANARY)
    assert _run(home, "set", "T", "--stdin", "--keyring") == 125
    _, err = capfd.readouterr()
    assert "no usable OS keyring" in err and CANARY not in err


def test_cli_set_moves_a_secret_between_stores(
    home: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    backend = FakeKeyring()
    monkeypatch.setattr(store_module, "system_keyring", lambda: backend)
    on = {"CONTAINAI_KEYRING": "1"}
    _stdin(monkeypatch, "in-file")
    assert _run(home, "set", "T", "--stdin", environ=on) == 0
    _stdin(monkeypatch, "in-keyring")
    assert _run(home, "set", "T", "--stdin", "--keyring", environ=on) == 0
    assert backend.entries[("containai", "T")] == "in-keyring"
    assert _stored(home, "T") is None  # the older file value no longer lurks behind the keyring one
    _, err = capfd.readouterr()
    assert "removed the previous value of T" in err
    assert _run(home, "rm", "T", environ=on) == 0
    assert ("containai", "T") not in backend.entries


def test_canary_never_in_output_or_logs(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    value_file = tmp_path / "v"
    value_file.write_text(CANARY)
    debug = {"CONTAINAI_DEBUG": "1"}
    _stdin(monkeypatch, CANARY)
    codes = [
        _run(home, "set", "A", "--stdin", environ=debug),
        _run(home, "set", "B", "--from-file", str(value_file), environ=debug),
        _run(home, "ls", environ=debug),
        _run(home, "ls", "--json", environ=debug),
        _run(home, "rm", "A", environ=debug),
    ]
    assert codes == [0, 0, 0, 0, 0]
    (home / "config" / "secrets.env").chmod(0o644)
    assert _run(home, "ls", environ=debug) == 125  # an error path, with tracebacks on
    (home / "config" / "secrets.env").chmod(0o600)
    out, err = capfd.readouterr()
    assert CANARY not in out and CANARY not in err
    logs = home / "logs" / "containai.log"
    assert logs.is_file() and "secrets" in logs.read_text()
    for path in home.rglob("*"):
        if path.is_file() and path != home / "config" / "secrets.env":
            assert CANARY not in path.read_text(errors="replace"), path
    assert _stored(home, "B") == CANARY


def test_a_value_typed_on_the_command_line_never_reaches_the_log(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from containai.cli.app import run_cli
    from containai.cli.main import cli

    canary = "canary-argv-5f0e9a"
    code = run_cli(cli, args=["secrets", "set", "TOKEN", canary], environ={"CONTAINAI_HOME": str(tmp_path)})
    assert code == 125
    out, err = capfd.readouterr()
    assert canary not in out + err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(errors="replace"), path
