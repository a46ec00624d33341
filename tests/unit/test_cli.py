from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import click
import pytest

from containai.cli.app import AppContext, run_cli
from containai.cli.launchers import run_launcher
from containai.cli.main import cli
from containai.images.build import HASH_LABEL, SLIM_IMAGE
from containai.images.catalog import PARTS
from containai.runtime.fake import FakeRuntime

PEM = b"-----BEGIN CERTIFICATE-----\nMIIBcli\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _close_log_file() -> Iterator[None]:
    # run_cli points the "containai" logger at a file under CONTAINAI_HOME; a process runs it once,
    # tests run it many times, so close the file after each test.
    yield
    logger = logging.getLogger("containai")
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _commands(sub)


@pytest.fixture(autouse=True)
def _fresh_help_options() -> Iterator[None]:
    # click (8.2+) caches each command's help option with the names of the first context that asked,
    # so a bare click.Context elsewhere in the run (docs/cli-reference.md's renderer) would take -h
    # away from these tests, and these tests would put -h into that rendering. Start and end clean.
    shared = list(_commands(cli))  # the launchers are these commands (or copies made per run)

    def reset() -> None:
        for command in shared:
            if hasattr(command, "_help_option"):
                command._help_option = None

    reset()
    yield
    reset()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def invoke(
    command: click.Command,
    *args: str,
    home: Path,
    prog: str = "containai",
    runtime: FakeRuntime | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    def use_fake(app: AppContext) -> None:
        app._runtime = runtime

    return run_cli(
        command,
        args=list(args),
        prog_name=prog,
        environ={"CONTAINAI_HOME": str(home), **(environ or {})},
        extra=use_fake if runtime is not None else None,
    )


def launch(
    prog: str,
    *args: str,
    home: Path,
    runtime: FakeRuntime | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    """Run a launcher (run-claude, remove-agent-dev, ...) as if started under that name."""

    def use_fake(app: AppContext) -> None:
        app._runtime = runtime

    return run_launcher(
        prog,
        list(args),
        environ={"CONTAINAI_HOME": str(home), **(environ or {})},
        extra=use_fake if runtime is not None else None,
    )


def assert_one_error(err: str, *message: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ")
    assert lines[1].startswith("hint: ")
    for text in message:
        assert text in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--help"], ["--runtime ENGINE", "--debug", "doctor", "images", "run", "gc"]),
        (["-h"], ["--runtime ENGINE"]),
        (["doctor", "--help"], ["--json", "--channel [dev|prod|nightly]"]),
        (["images", "build", "--help"], ["--agents LIST", "--ca-cert", "--no-pull"]),
        (["images", "list", "--help"], ["--json"]),
        (["run", "--help"], ["AGENT [REPO]", "--prompt TEXT", "--network-proxy"]),
    ],
)
def test_help(capsys: pytest.CaptureFixture[str], home: Path, args: Sequence[str], shown: list[str]) -> None:
    assert invoke(cli, *args, home=home) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage: containai ")
    for text in shown:
        assert text in out
    assert err == ""


@pytest.mark.parametrize(
    ("prog", "shown"),
    [
        ("run-claude", ["Run claude in an ephemeral", "--prompt TEXT", "--branch B"]),
        ("run-codex-dev", ["Run codex in an ephemeral", "[OPTIONS] [REPO]"]),
        ("launch-agent", ["AGENT [REPO]", "--use-current-branch", "--memory SIZE"]),
        ("connect-agent-nightly", ["-n, --name NAME"]),
        ("list-agents", ["--json"]),
        ("remove-agent", ["[NAME]", "--all", "--no-push", "--keep-branch"]),
    ],
)
def test_launcher_help(capsys: pytest.CaptureFixture[str], home: Path, prog: str, shown: list[str]) -> None:
    assert launch(prog, "--help", home=home) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: {prog} ")
    for text in shown:
        assert text in out


def test_an_unknown_launcher_name_is_an_error(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert launch("run-bogus", "--help", home=home) == 125
    assert_one_error(capsys.readouterr().err, "run-bogus is not a ContainAI launcher")


def test_version(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    from containai import __version__

    assert invoke(cli, "--version", home=home) == 0
    assert capsys.readouterr().out == f"containai, version {__version__}\n"


def test_unknown_command(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert invoke(cli, "bogus", home=home) == 125
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error(err, "No such command 'bogus'")
    assert err.splitlines()[1] == "hint: see `containai --help`"


def test_bad_option(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert invoke(cli, "doctor", "--bogus", home=home) == 125
    err = capsys.readouterr().err
    assert_one_error(err, "--bogus")
    assert err.splitlines()[1] == "hint: see `containai doctor --help`"


def test_bad_choice(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert invoke(cli, "doctor", "--channel", "beta", home=home) == 125
    assert_one_error(capsys.readouterr().err, "'beta'")


def test_unknown_image_part_fails_before_the_engine(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    runtime = FakeRuntime(unavailable=True)
    assert invoke(cli, "images", "build", "--agents", "claude,bogus", home=home, runtime=runtime) == 125
    err = capsys.readouterr().err
    assert_one_error(err, "unknown image part bogus")
    assert runtime.builds == []


def test_bad_runtime_is_an_error_with_a_hint(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert invoke(cli, "--runtime", "bogus", "doctor", home=home) == 125
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error(err, "--runtime='bogus' is not an engine")


def test_errors_are_logged_with_their_traceback(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    invoke(cli, "--runtime", "bogus", "doctor", home=home)
    log = (home / "logs" / "containai.log").read_text(encoding="utf-8")
    assert "argv: containai ['--runtime', 'bogus', 'doctor']" in log
    assert "Traceback" in log
    assert "ConfigError" in log


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], home: Path, how: str) -> None:
    args = ["--debug"] if how == "flag" else []
    environ = {"CONTAINAI_DEBUG": "1"} if how == "environment" else {}
    assert invoke(cli, *args, "--runtime", "bogus", "doctor", home=home, environ=environ) == 125
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "error: --runtime='bogus' is not an engine" in err


def test_doctor_json_with_the_engine_down(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert invoke(cli, "doctor", "--json", home=home, runtime=FakeRuntime(unavailable=True)) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == 1
    assert data["ok"] is False
    assert data["checks"][0]["name"] == "engine"
    assert data["checks"][0]["status"] == "fail"
    assert data["log_file"] == str(home / "logs" / "containai.log")


def test_doctor_text_report(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert invoke(cli, "doctor", home=home, runtime=FakeRuntime(unavailable=True)) == 1
    out = capsys.readouterr().out
    assert "✗ engine: cannot reach the container engine" in out
    assert "not ready" in out
    assert f"log: {home / 'logs' / 'containai.log'}" in out


def test_images_build_builds_on_the_fake_and_records_the_ca(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(PEM)
    runtime = FakeRuntime()
    runtime.add_image(SLIM_IMAGE)
    code = invoke(
        cli, "images", "build", "--agents", "codex", "--ca-cert", str(bundle), home=home, runtime=runtime
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [call.tag for call in runtime.builds] == ["containai-base:dev", "containai-codex:dev"]
    assert runtime.builds[0].files["extra-ca.crt"] == PEM
    # one "tag id" line per image on stdout (rich turns the tab into spaces)
    assert [line.split() for line in out.splitlines()] == [
        [tag, runtime.images[tag].id] for tag in ("containai-base:dev", "containai-codex:dev")
    ]
    assert "trusting the extra CA from flag --ca-cert" in err
    assert (home / "state" / "extra-ca.crt").read_bytes() == PEM


def test_images_list_json(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    runtime = FakeRuntime()
    proxy = runtime.add_image("containai-proxy:nightly", {HASH_LABEL: "x"})
    assert invoke(cli, "images", "list", "--channel", "nightly", "--json", home=home, runtime=runtime) == 0
    rows = {row["tag"]: row for row in json.loads(capsys.readouterr().out)["images"]}
    assert list(rows) == [f"containai-{part}:nightly" for part in PARTS]
    assert rows["containai-proxy:nightly"]["present"] is True
    assert rows["containai-proxy:nightly"]["id"] == proxy.id
    assert rows["containai-base:nightly"]["present"] is False


def test_run_json_needs_a_prompt(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    runtime = FakeRuntime()
    assert launch("run-claude", "--json", home=home, runtime=runtime) == 125
    assert_one_error(capsys.readouterr().err, "--json goes with --prompt")
    assert runtime.containers_by_id == {}


def test_run_prompt_and_command_do_not_mix(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    runtime = FakeRuntime()
    assert (
        invoke(cli, "run", "shell", "--prompt", "hi", "--", "make", "test", home=home, runtime=runtime) == 125
    )
    assert_one_error(capsys.readouterr().err, "--prompt and a command after -- do not go together")
    assert runtime.containers_by_id == {}


def test_connect_agent_needs_a_terminal(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    # pytest's captured stdin and stdout are not terminals
    assert launch("connect-agent", home=home, runtime=FakeRuntime()) == 125
    assert_one_error(capsys.readouterr().err, "connect-agent needs a terminal")


# Scoped to a label of the test's own, so that even a refusal that regressed would touch nothing else.
@pytest.mark.parametrize(
    "args", [["--label", "containai-test.unit=1"], ["s1", "--all", "--label", "containai-test.unit=1"]]
)
def test_remove_agent_needs_one_name_or_all(
    capsys: pytest.CaptureFixture[str], home: Path, args: list[str]
) -> None:
    assert launch("remove-agent", *args, home=home, runtime=FakeRuntime()) == 125
    assert_one_error(capsys.readouterr().err, "name one session, or pass --all")


def test_the_runtime_is_closed_after_the_command(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    runtime = FakeRuntime(unavailable=True)
    invoke(cli, "doctor", home=home, runtime=runtime)
    assert runtime.closed


def test_a_launcher_is_its_subcommand(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    # launch-agent is `containai launch`: the same options, word for word.
    assert launch("launch-agent", "--help", home=home) == 0
    alias = capsys.readouterr().out
    assert invoke(cli, "launch", "--help", home=home) == 0
    direct = capsys.readouterr().out
    assert alias.replace("Usage: launch-agent", "Usage: containai launch") == direct
    # run-claude is `containai run claude`: AGENT is fixed, every other option is the same.
    assert launch("run-claude", "--help", home=home) == 0
    bound = capsys.readouterr().out
    assert invoke(cli, "run", "--help", home=home) == 0
    run = capsys.readouterr().out
    assert bound.split("Options:")[1] == run.split("Options:")[1]
    assert "Usage: run-claude [OPTIONS] [REPO]" in bound


def test_list_json_is_values_only(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    from containai.runtime.base import ContainerSpec

    runtime = FakeRuntime()
    labels = {
        "ai.containai.session": "abc123",
        "ai.containai.role": "agent",
        "ai.containai.agent": "shell",
        "ai.containai.mode": "persistent",
        "ai.containai.created": "2026-01-01T00:00:00+00:00",
    }
    runtime.create_container(ContainerSpec(image="img", name="shell-s1", command=(), labels=labels))
    assert launch("list-agents", "--json", home=home, runtime=runtime) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == 2
    (row,) = data["sessions"]
    assert row["name"] == "shell-s1" and row["agent"] == "shell" and row["repo"] is None
    assert isinstance(row["age_seconds"], int) and row["age_seconds"] > 0
    assert "age" not in row


def test_the_run_result_is_values_only() -> None:
    from containai.cli.render import prompt_result_json
    from containai.session.commands import PromptResult

    result = PromptResult(
        exit_status=0,
        session="shell-s1",
        session_id="abc",
        workspace="overlay",
        branch=None,
        commits=0,
        diffstat=" 2 files changed, 3 insertions(+), 1 deletion(-)",
        duration_seconds=1.5,
        kept=True,
        message="the work was NOT brought back, so ... Fix the cause, then retry with `remove-agent`",
        egress="blocked 3 requests to evil.test: allow it with --allow-domain evil.test",
        kept_reason="refused to import: big.bin is larger than 1k",
    )
    data = prompt_result_json(result)
    assert data["schema"] == 2
    assert "message" not in data and "egress" not in data
    assert data["changes"] == {"files_changed": 2, "insertions": 3, "deletions": 1}
    assert data["kept"] is True and data["kept_reason"] == result.kept_reason


def test_exit_codes_are_distinct_and_clear_of_the_shells() -> None:
    from containai import errors

    codes = [errors.EXIT_OK, errors.EXIT_NOT_READY, errors.EXIT_WORK_KEPT, errors.EXIT_CONTAINAI]
    assert len(set(codes)) == len(codes)
    assert errors.EXIT_WORK_KEPT not in (1, 2, 126, 127) and errors.EXIT_WORK_KEPT < 128
    assert errors.EXIT_CONTAINAI == 125 and errors.EXIT_INTERRUPTED == 130
    documented = {code for code, _ in errors.EXIT_CODES}
    assert {str(code) for code in [*codes, errors.EXIT_INTERRUPTED]} <= documented


def test_audit_verify_finds_a_finished_sessions_audit_and_says_where_it_broke(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    from containai.broker.broker import Broker

    logs = home / "state" / "session-logs"
    logs.mkdir(parents=True)
    kept = logs / "s1-0123456789ab.broker.jsonl"
    broker = Broker(lookup=lambda name: "value", audit_path=kept)
    broker.issue("s1", "c1", "canary", ["A"], ttl=60)
    broker.revoke_session("s1")
    broker.close()
    # Another session whose name starts with "s1-" is not s1's.
    (logs / "s1-x-0123456789ab.broker.jsonl").write_text("not s1's\n")

    assert invoke(cli, "audit", "verify", "s1", home=home, runtime=FakeRuntime()) == 0
    assert capsys.readouterr().out.startswith("OK: 3 lines, chain intact, closed")

    lines = kept.read_bytes().splitlines(keepends=True)
    kept.write_bytes(lines[0] + lines[1].replace(b'"allow"', b'"deny"') + lines[2])
    assert invoke(cli, "audit", "verify", "s1", "--json", home=home, runtime=FakeRuntime()) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["ok"], verdict["broken"], verdict["line"]) == (False, "edited", 2)

    assert invoke(cli, "audit", "verify", "s2", home=home, runtime=FakeRuntime()) == 125
    assert_one_error(capsys.readouterr().err, "no broker audit for a session named s2")
